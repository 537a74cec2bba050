//! The WebTransport side: one endpoint, one task per session. The only code with sockets.
//!
//! - [`serve`] accepts connections until shutdown and spawns [`session::run`] for each.
//! - [`session`] runs the handshake (admission before any per-client state), then moves client
//!   frames into the simulation's inbox and snapshots out of the session's [`outbox::Outbox`].
//! - [`identity`] makes or loads the TLS certificate.
//!
//! Network tasks never touch the ECS world; they talk to it only through the bounded inbox
//! and the bounded outboxes.

pub mod identity;
pub mod outbox;
pub mod session;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arena_shared::map::Map;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wtransport::Endpoint;
use wtransport::endpoint::endpoint_side::Server as ServerSide;

use crate::config::Config;
use crate::game::SimCommand;
use crate::stats::Stats;

/// Bidirectional streams a client may have open: the HTTP/3 CONNECT stream of the WebTransport
/// session and Arena's one reliable stream (with room for a reconnecting browser's spares).
pub const MAX_BIDI_STREAMS: u32 = 4;
/// Unidirectional streams a client may have open: HTTP/3 control and QPACK encoder/decoder.
pub const MAX_UNI_STREAMS: u32 = 4;
/// Client datagrams (acknowledgements, a few bytes each) QUIC buffers before the session reads
/// them; beyond this QUIC drops them, so a flooding client cannot grow the server's memory.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 16 * 1024;
/// Snapshot datagrams QUIC buffers for one client before it drops the oldest. Snapshots are
/// bounded by the outbox already; this only caps what sits below it.
pub const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;

/// QUIC transport settings for the game: quinn's defaults are sized for bulk transfer (100
/// streams each way, allocated up front; a 1.25 MB datagram queue) and cost ~100 KiB per
/// connection; Arena's traffic is one stream and small datagrams. Segmentation offload is off:
/// a session sends one datagram per tick, and the offload keeps a 10-packet send buffer alive
/// per connection for batches that never come.
pub fn transport_config() -> wtransport::config::QuicTransportConfig {
    let mut t = wtransport::config::QuicTransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        .enable_segmentation_offload(false);
    t
}

/// What every session task needs, shared.
pub struct NetContext {
    pub config: Arc<Config>,
    pub token_secret: Arc<[u8]>,
    /// The `server` claim a token must carry to be accepted here.
    pub token_audience: String,
    pub map: Arc<Map>,
    pub inbox: mpsc::Sender<SimCommand>,
    pub stats: Arc<Stats>,
    /// Client ids with a live session: a second session for one id is refused.
    pub active_clients: Mutex<HashSet<u64>>,
}

/// Accepts sessions until `shutdown`, each in its own task on `tracker`.
pub async fn serve(
    endpoint: Endpoint<ServerSide>,
    ctx: Arc<NetContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(session::run(incoming, ctx, shutdown));
    }
    info!("WebTransport endpoint stops accepting");
    // Sessions say goodbye themselves (they watch the same token); wait for them, then for
    // the close frames to leave.
    tracker.close();
    tracker.wait().await;
    if tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle())
        .await
        .is_err()
    {
        warn!("connections still open after the drain timeout");
    }
}
