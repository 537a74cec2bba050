//! The bots' QUIC configuration, and a QUIC endpoint of one's own for a single connection
//! (`connect::open`, the tests' hand-driven clients).
//!
//! A swarm's bots do not use endpoints: they run on flocks ([`crate::flock`]), many bots'
//! connections over one socket, at most [`DEFAULT_BOTS_PER_ENDPOINT`] to a flock unless told
//! otherwise. Each flock's socket asks for [`RECV_BUFFER_PER_BOT`] per bot it may carry (never
//! less than the system's default): at each server tick every bot's snapshot arrives at once,
//! and on a machine so loaded that the bots' process goes unscheduled for a while, many ticks'
//! bursts wait in it. The kernel caps the request at `net.core.rmem_max` (4 MiB on the
//! project's machines, 208 KiB on a stock kernel); where it is low, fewer bots a flock keep the
//! room per bot.
//!
//! Every connection pins exactly the certificate hashes its `/api/connect` (or move) named.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use wtransport::config::ClientConfigBuilder;
use wtransport::config::states::WantsRootStore;
use wtransport::endpoint::endpoint_side::Client;
use wtransport::quinn::udp::{UdpSockRef, UdpSocketState};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint};

use crate::connect::ClientError;

/// Bots on one flock (one socket) unless told otherwise. At 400 bots, 16, 32 and 64 to a flock
/// cost the same CPU within this machine's noise (BENCHMARKS.md, "Issue 21: bots as flocks");
/// fewer bots a flock keep each wake's burst short and a stalled flock's harm small.
pub const DEFAULT_BOTS_PER_ENDPOINT: u32 = 16;

/// Receive buffer asked for per bot a flock's socket carries. The kernel charges a datagram of a
/// few hundred bytes ~1.3 KiB of buffer (its whole allocation) and doubles the request, so this
/// holds a few seconds of a bot's snapshots, as much as a socket of its own had by default
/// (208 KiB): on a machine too loaded to run the bots for a while, 16 KiB a bot lost snapshots
/// that sockets of their own only delayed. It costs nothing while the flock keeps up: the
/// kernel takes memory only for what waits.
pub const RECV_BUFFER_PER_BOT: usize = 64 * 1024;

/// A client endpoint, shared.
pub type ClientEndpoint = Endpoint<Client>;

/// A connection's endpoint, its own (a test's single connection).
pub struct Lease {
    endpoint: Arc<ClientEndpoint>,
}

impl Lease {
    /// An endpoint of the caller's own.
    pub fn own(endpoint: ClientEndpoint) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
        }
    }
}

impl std::ops::Deref for Lease {
    type Target = ClientEndpoint;
    fn deref(&self) -> &ClientEndpoint {
        &self.endpoint
    }
}

/// Raises `socket`'s receive buffer to `bytes` where it is smaller. The kernel caps the
/// request (`net.core.rmem_max`); a refusal leaves the default, which still holds a burst for
/// the default number of bots.
pub(crate) fn size_recv_buffer(socket: &UdpSocket, bytes: usize) {
    let Ok(state) = UdpSocketState::new(UdpSockRef::from(socket)) else {
        return;
    };
    let current = state
        .recv_buffer_size(UdpSockRef::from(socket))
        .unwrap_or(0);
    if current < bytes
        && let Err(e) = state.set_recv_buffer_size(UdpSockRef::from(socket), bytes)
    {
        tracing::debug!(%e, bytes, "socket receive buffer not raised");
    }
}

/// A client endpoint from `builder`, pinning `hashes` when there are any (else verifying with
/// the system's roots), with the bots' keep-alive and idle timeout.
pub fn client_endpoint(
    builder: ClientConfigBuilder<WantsRootStore>,
    hashes: &[Sha256Digest],
    idle_timeout: Duration,
) -> Result<ClientEndpoint, ClientError> {
    let config = client_config(builder, hashes, idle_timeout)?;
    Endpoint::client(config).map_err(|e| ClientError::Connect(e.to_string()))
}

/// The QUIC client configuration of a bot's connection on a flock: as [`client_endpoint`]'s,
/// without the endpoint.
pub fn quic_client_config(
    hashes: &[Sha256Digest],
    idle_timeout: Duration,
) -> Result<wtransport::quinn::ClientConfig, ClientError> {
    let config = client_config(
        ClientConfig::builder().with_bind_default(),
        hashes,
        idle_timeout,
    )?;
    Ok(config.quic_config().clone())
}

fn client_config(
    builder: ClientConfigBuilder<WantsRootStore>,
    hashes: &[Sha256Digest],
    idle_timeout: Duration,
) -> Result<ClientConfig, ClientError> {
    let config = if hashes.is_empty() {
        builder.with_native_certs()
    } else {
        builder.with_server_certificate_hashes(hashes.iter().cloned())
    };
    let mut config = config.build();
    config
        .quic_config_mut()
        .transport_config(Arc::new(transport_config(idle_timeout)?));
    Ok(config)
}

/// Streams the server may open toward a bot: HTTP/3's control stream and QPACK's two
/// (unidirectional; wtransport's server opens only the first, and with none allowed no bot
/// gets in), and one to spare; Arena's server opens no stream of its own. quinn makes the
/// state of every stream a peer may open when the connection starts: its default of 100 each
/// way cost ~7 KiB a bot.
const SERVER_UNI_STREAMS: u32 = 4;
const SERVER_BIDI_STREAMS: u32 = 1;

/// A bot's QUIC transport: quinn's defaults (windows, datagram buffers) but for the streams the
/// server may open, plus the bots' keep-alive and idle timeout.
fn transport_config(
    idle_timeout: Duration,
) -> Result<wtransport::config::QuicTransportConfig, ClientError> {
    let idle = wtransport::quinn::IdleTimeout::try_from(idle_timeout)
        .map_err(|e| ClientError::Connect(format!("idle timeout: {e}")))?;
    let mut t = wtransport::config::QuicTransportConfig::default();
    t.max_concurrent_bidi_streams(SERVER_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(SERVER_UNI_STREAMS.into())
        .keep_alive_interval(Some(idle_timeout / 3))
        .max_idle_timeout(Some(idle));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn an_endpoints_socket_buffer_holds_its_bots_bursts() {
        let wanted = DEFAULT_BOTS_PER_ENDPOINT as usize * RECV_BUFFER_PER_BOT;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        size_recv_buffer(&socket, wanted);
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).unwrap();
        let got = state.recv_buffer_size(UdpSockRef::from(&socket)).unwrap();
        // The kernel caps a request at net.core.rmem_max: the buffer is what was asked or the
        // most this host allows, never below either.
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(wanted);
        assert!(
            got >= wanted.min(max),
            "receive buffer {got} B, wanted {wanted} B"
        );
    }
}
