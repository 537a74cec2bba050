//! The swarm's QUIC endpoints: many bots share one endpoint (one UDP socket, one endpoint
//! driver, one TLS configuration), each bot still its own QUIC connection and player.
//!
//! A bot's own endpoint cost it a socket, a driver task that woke for every datagram, a TLS
//! configuration and the driver's receive buffer (32 slots of up to 64 segments); shared, a
//! wake of one driver reads a batch of datagrams for many bots, and all the rest is paid once
//! per endpoint.
//!
//! Sharing is bounded ([`EndpointPool::new`]'s `per_endpoint`): at each server tick every
//! bot's snapshot arrives at once, so one socket for all bots would take a burst of
//! `bots × ~300 B` that the kernel's receive buffer may not hold while the driver waits for a
//! thread. Each endpoint's socket asks for [`RECV_BUFFER_PER_BOT`] per bot it may carry (never
//! less than the system's default): many ticks' bursts, for a machine so loaded that the bots'
//! process goes unscheduled for a while. The kernel caps the request at `net.core.rmem_max`
//! (4 MiB on the project's machines, 208 KiB on a stock kernel); where it is low, fewer bots
//! an endpoint keep the room per bot.
//!
//! Endpoints are keyed by what their TLS configuration pins (the certificate hashes
//! `/api/connect` or a move named) and the idle timeout: a bot only shares with bots that
//! would have built the same configuration, so pinning stays exactly per connection. An
//! endpoint stays in the pool while the swarm runs, with or without bots on it, so that a
//! closing connection's last packets still leave; [`EndpointPool::wait_idle`] waits for them
//! at the end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wtransport::config::ClientConfigBuilder;
use wtransport::config::states::WantsRootStore;
use wtransport::endpoint::endpoint_side::Client;
use wtransport::quinn::udp::{UdpSockRef, UdpSocketState};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint};

use crate::connect::ClientError;

/// Bots on one endpoint unless told otherwise. An endpoint's driver reads for at most 50 µs a
/// turn (quinn's bound) and then waits behind every other task of the swarm: 16 bots' burst,
/// a datagram each a tick, fits in one turn. With 64 on an endpoint, 600 bots on a saturated
/// 2-core machine got their snapshots late (no loss, the buffer held them): 84,000 corrections
/// where sockets of their own had 3,300, and sessions lost (BENCHMARKS.md, "Issue 21: lighter
/// bots"); 16 kept the corrections at 3,000 and most of the saving.
pub const DEFAULT_BOTS_PER_ENDPOINT: u32 = 16;

/// Receive buffer asked for per bot an endpoint carries. The kernel charges a datagram of a
/// few hundred bytes ~1.3 KiB of buffer (its whole allocation) and doubles the request, so this
/// holds a few seconds of a bot's snapshots, as much as a socket of its own had by default
/// (208 KiB): on a machine too loaded to run the bots for a while, 16 KiB a bot lost snapshots
/// that sockets of their own only delayed. It costs nothing while the driver keeps up: the
/// kernel takes memory only for what waits.
pub const RECV_BUFFER_PER_BOT: usize = 64 * 1024;

/// A client endpoint, shared.
pub type ClientEndpoint = Endpoint<Client>;

/// What makes two bots' endpoints interchangeable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    hashes: Vec<Sha256Digest>,
    idle_timeout: Duration,
}

struct Pooled {
    key: Key,
    endpoint: Arc<ClientEndpoint>,
    /// Bots holding a [`Lease`] on it.
    bots: usize,
}

/// Endpoints shared by a swarm's bots, at most `per_endpoint` bots on each.
pub struct EndpointPool {
    per_endpoint: usize,
    bind: Option<IpAddr>,
    endpoints: Mutex<Vec<Pooled>>,
}

/// A bot's place on a pooled endpoint, given back when dropped (the endpoint stays).
pub struct Lease {
    endpoint: Arc<ClientEndpoint>,
    pool: Option<Arc<EndpointPool>>,
}

impl Lease {
    /// An endpoint of the caller's own, in no pool (a test's single connection).
    pub fn own(endpoint: ClientEndpoint) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
            pool: None,
        }
    }
}

impl std::ops::Deref for Lease {
    type Target = ClientEndpoint;
    fn deref(&self) -> &ClientEndpoint {
        &self.endpoint
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            let mut endpoints = pool.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = endpoints
                .iter_mut()
                .find(|p| Arc::ptr_eq(&p.endpoint, &self.endpoint))
            {
                p.bots = p.bots.saturating_sub(1);
            }
        }
    }
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("per_endpoint", &self.per_endpoint)
            .field("bind", &self.bind)
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl EndpointPool {
    /// A pool putting at most `per_endpoint` bots (at least one) on each endpoint, its sockets
    /// bound to `bind` (any free port), or to the wildcard address.
    pub fn new(per_endpoint: u32, bind: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            per_endpoint: per_endpoint.max(1) as usize,
            bind,
            endpoints: Mutex::new(Vec::new()),
        })
    }

    /// A place on an endpoint pinning `hashes` (none: the system's roots) with `idle_timeout`:
    /// the first such endpoint with room, or a new one.
    pub fn lease(
        self: &Arc<Self>,
        hashes: &[Sha256Digest],
        idle_timeout: Duration,
    ) -> Result<Lease, ClientError> {
        let key = Key {
            hashes: hashes.to_vec(),
            idle_timeout,
        };
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let endpoint = match endpoints
            .iter_mut()
            .find(|p| p.key == key && p.bots < self.per_endpoint)
        {
            Some(p) => {
                p.bots += 1;
                p.endpoint.clone()
            }
            None => {
                let socket = self.socket()?;
                let endpoint = Arc::new(client_endpoint(
                    ClientConfig::builder().with_bind_socket(socket),
                    hashes,
                    idle_timeout,
                )?);
                endpoints.push(Pooled {
                    key,
                    endpoint: endpoint.clone(),
                    bots: 1,
                });
                endpoint
            }
        };
        Ok(Lease {
            endpoint,
            pool: Some(self.clone()),
        })
    }

    /// How many endpoints (sockets) the pool has opened.
    pub fn endpoints(&self) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits, at most `timeout`, until every endpoint's closed connections have sent their
    /// last packets: a swarm does this before it reports, so its bots' close frames leave
    /// before the process does.
    pub async fn wait_idle(&self, timeout: Duration) {
        let endpoints: Vec<_> = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|p| p.endpoint.clone())
            .collect();
        let all = async {
            for endpoint in &endpoints {
                endpoint.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
    }

    /// A new socket for an endpoint: on `bind` or the wildcard address (IPv6 with IPv4
    /// mapped where the host has IPv6), its receive buffer sized for the bots it may carry.
    fn socket(&self) -> Result<UdpSocket, ClientError> {
        let socket = match self.bind {
            Some(ip) => UdpSocket::bind(SocketAddr::new(ip, 0)),
            None => UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0))
                .or_else(|_| UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))),
        }
        .map_err(|e| ClientError::Connect(format!("binding a UDP socket: {e}")))?;
        size_recv_buffer(&socket, self.per_endpoint * RECV_BUFFER_PER_BOT);
        Ok(socket)
    }
}

/// Raises `socket`'s receive buffer to `bytes` where it is smaller. The kernel caps the
/// request (`net.core.rmem_max`); a refusal leaves the default, which still holds a burst for
/// the default number of bots.
fn size_recv_buffer(socket: &UdpSocket, bytes: usize) {
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
    let config = if hashes.is_empty() {
        builder.with_native_certs()
    } else {
        builder.with_server_certificate_hashes(hashes.iter().cloned())
    };
    let mut config = config.build();
    config
        .quic_config_mut()
        .transport_config(Arc::new(transport_config(idle_timeout)?));
    Endpoint::client(config).map_err(|e| ClientError::Connect(e.to_string()))
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
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use super::*;

    const IDLE: Duration = Duration::from_secs(10);

    fn hash(b: u8) -> Vec<Sha256Digest> {
        vec![Sha256Digest::new([b; 32])]
    }

    fn port(lease: &Lease) -> u16 {
        lease.local_addr().expect("bound").port()
    }

    #[tokio::test]
    async fn bots_fill_an_endpoint_before_the_next_and_a_place_given_back_is_taken_again() {
        let pool = EndpointPool::new(3, Some(Ipv4Addr::LOCALHOST.into()));
        let leases: Vec<Lease> = (0..7)
            .map(|_| pool.lease(&hash(1), IDLE).unwrap())
            .collect();
        let ports: Vec<u16> = leases.iter().map(port).collect();
        assert_eq!(pool.endpoints(), 3, "7 bots, 3 to an endpoint");
        assert_eq!(ports[0..3], [ports[0]; 3]);
        assert_eq!(ports[3..6], [ports[3]; 3]);
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 3);
        assert!(
            leases
                .iter()
                .all(|l| l.local_addr().unwrap().ip() == Ipv4Addr::LOCALHOST)
        );

        // A bot that leaves frees its place on its endpoint; the next bot takes it.
        let mut leases = leases;
        let freed = port(&leases.remove(4));
        let next = pool.lease(&hash(1), IDLE).unwrap();
        assert_eq!(port(&next), freed);
        assert_eq!(pool.endpoints(), 3);
    }

    #[tokio::test]
    async fn bots_pinning_other_certificates_never_share_an_endpoint() {
        let pool = EndpointPool::new(8, Some(Ipv4Addr::LOCALHOST.into()));
        let a = pool.lease(&hash(1), IDLE).unwrap();
        let b = pool.lease(&hash(2), IDLE).unwrap();
        let c = pool.lease(&[], IDLE).unwrap();
        let d = pool.lease(&hash(1), IDLE * 2).unwrap();
        let ports: HashSet<u16> = [&a, &b, &c, &d].into_iter().map(port).collect();
        assert_eq!(ports.len(), 4, "each configuration its own endpoint");
        assert_eq!(port(&pool.lease(&hash(1), IDLE).unwrap()), port(&a));
    }

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
