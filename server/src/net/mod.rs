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
