//! The WebTransport side: one endpoint, one task per session. The only code with sockets.
//!
//! - [`serve`] accepts connections until shutdown and spawns [`session::run`] for each, within
//!   the caps on handshakes in flight ([`in_flight`]; a QUIC Retry above a threshold).
//! - [`session`] runs the handshake (admission before any per-client state), then moves client
//!   frames into the simulation's inbox and snapshots out of the session's
//!   [`Outbox`](crate::outbox::Outbox).
//!   What it decides lives sans-IO beside it: [`admission`] (every check on `Hello`, in
//!   order), [`registry`] (who holds a seat), [`frame_policy`] (what each client frame and
//!   datagram gets), [`limits`] (rates and the backlog rule). Its reliable stream is written
//!   by `writer.rs`, a task of its own behind a buffer bounded in bytes.
//! - [`identity`] makes or loads the TLS certificate; [`rotate_identity`] replaces a
//!   self-signed one on the live endpoint before it expires.
//! - [`mover`] tells every live session to reconnect to another server (`Disconnect(Moved)`).
//!
//! Network tasks never touch the ECS world; they talk to it only through the bounded inbox
//! and the bounded outboxes.

pub mod admission;
pub mod frame_policy;
pub mod identity;
pub mod in_flight;
pub mod limits;
pub mod mover;
pub mod registry;
pub mod request;
pub mod session;
mod wake_gate;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arena_shared::map::Map;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wtransport::endpoint::endpoint_side::Server as ServerSide;
use wtransport::{Endpoint, ServerConfig};

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

/// Flow-control window of the reliable stream, each way (quinn's default is 1.25 MB per
/// stream and 10 MB of send buffer per connection): inputs and pongs are tens of bytes, and
/// this bounds what QUIC buffers for a client that stops reading.
pub const STREAM_WINDOW: u32 = 64 * 1024;

/// Binds the WebTransport UDP socket at `addr` and asks the kernel for `recv_buffer` bytes of
/// receive buffer (`--udp-recv-buffer`). Returns the socket and the size the kernel granted
/// (as it reports it: Linux counts its bookkeeping and doubles the request), or `None` where it
/// cannot be read. A request the kernel refuses or caps leaves what it gave, with a warning
/// naming `net.core.rmem_max`.
pub fn bind_udp(
    addr: std::net::SocketAddr,
    recv_buffer: usize,
) -> std::io::Result<(std::net::UdpSocket, Option<usize>)> {
    use wtransport::quinn::udp::{UdpSockRef, UdpSocketState};
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
    if let Err(e) = state.set_recv_buffer_size(UdpSockRef::from(&socket), recv_buffer) {
        warn!(error = %e, recv_buffer, "the UDP socket's receive buffer was not raised");
    }
    let granted = state.recv_buffer_size(UdpSockRef::from(&socket)).ok();
    match granted {
        Some(got) if got < recv_buffer => warn!(
            asked = recv_buffer,
            granted = got,
            "the kernel capped the UDP socket's receive buffer (net.core.rmem_max): datagrams \
             may be dropped while the server is busy; raise it with sysctl"
        ),
        _ => info!(asked = recv_buffer, granted, "UDP socket receive buffer"),
    }
    Ok((socket, granted))
}

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
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(STREAM_WINDOW.into())
        .send_window(STREAM_WINDOW.into())
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
    /// Live and lingering seats: capacity, `--max-per-ip`, one session per client id,
    /// resume. Locked after `used_tokens` when both are needed.
    pub registry: Arc<Mutex<registry::Registry>>,
    /// Tokens that admitted a session, remembered until they expire: each admits one.
    pub used_tokens: Mutex<UsedTokens>,
    /// Handshakes admitted per second (`--handshakes-per-sec`), spent after the per-address
    /// bucket and only by a decodable `Hello`.
    pub handshakes: Mutex<limits::TokenBucket>,
    /// Handshakes admitted per second from each address
    /// (`--handshakes-per-sec-per-address`).
    pub handshakes_per_address: Mutex<limits::AddressBuckets>,
    /// Connections accepted and not yet admitted or refused (`--max-handshakes-in-flight`).
    pub in_flight: Mutex<in_flight::InFlight>,
    /// The path and origins a WebTransport request must have.
    pub request_rules: request::Rules,
    /// The zero of the limiters' clocks.
    pub started: Instant,
    /// Player names by snapshot id, kept by the simulation, for `WhoIs`.
    pub names: Arc<crate::game::names::Names>,
    /// Set once every session is to move to another server ([`mover::Mover`]).
    pub moves: watch::Receiver<Option<Arc<mover::Move>>>,
    /// Set while a live handoff holds the simulation frozen (and after the world moved):
    /// a handshake then is refused as at shutdown, with a retry hint, rather than joining a
    /// world that is no longer ticking here.
    pub frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl NetContext {
    /// Seconds since the server started, for the rate limiters.
    pub fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Milliseconds since the server started, for the registry's grace periods.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `f` on the registry and publishes its lingering count.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut registry::Registry) -> T) -> T {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut registry);
        self.stats.lingering.store(
            registry.lingering() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        out
    }
}

/// The fingerprints of tokens that have admitted a session, each kept until its token expires
/// (after that the token is refused as expired anyway). Bounded by `--max-used-tokens`: when
/// full, no unexpired entry is ever forgotten (a forgotten token would admit again: replayable
/// by whoever saw it); new sessions by token are refused instead until the first entry
/// expires ([`UsedTokens::room`]). Resumes do not need it. Sans-IO: `now_ms` is a parameter.
#[derive(Debug)]
pub struct UsedTokens {
    max: usize,
    expiry: HashMap<[u8; 32], u64>,
    by_expiry: BTreeSet<(u64, [u8; 32])>,
}

impl UsedTokens {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            expiry: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Whether this token has admitted a session already (expired entries are dropped first).
    pub fn was_used(&mut self, fingerprint: &[u8; 32], now_ms: u64) -> bool {
        self.expire(now_ms);
        self.expiry.contains_key(fingerprint)
    }

    /// Whether another token can be remembered at `now_ms`; when the set is full of unexpired
    /// entries, how long until the first of them expires (milliseconds, at least 1).
    pub fn room(&mut self, now_ms: u64) -> Result<(), u64> {
        self.expire(now_ms);
        match self.by_expiry.first() {
            Some(&(at, _)) if self.expiry.len() >= self.max => {
                Err(at.saturating_sub(now_ms).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Remembers a token as used until `expires_at_ms`. The caller has checked
    /// [`room`](Self::room) under the same lock; without room nothing is remembered and
    /// `false` comes back.
    pub fn mark_used(&mut self, fingerprint: [u8; 32], expires_at_ms: u64) -> bool {
        if self.expiry.contains_key(&fingerprint) {
            return true;
        }
        if self.expiry.len() >= self.max {
            return false;
        }
        self.expiry.insert(fingerprint, expires_at_ms);
        self.by_expiry.insert((expires_at_ms, fingerprint));
        true
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, fp)) = self.by_expiry.first() {
            if at > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry.remove(&fp);
        }
    }

    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }
}

/// The QUIC application close code for Arena code `code` (a reason's `code()`): mapped into
/// WebTransport's application range ([`arena_shared::protocol::close_code`]), always below
/// QUIC's 2^62.
pub fn close_varint(code: u32) -> wtransport::VarInt {
    wtransport::VarInt::try_from_u64(arena_shared::protocol::close_code(code))
        .expect("WebTransport's application codes are below 2^62")
}

/// A connection's place among the handshakes in flight, given back when dropped (once the
/// session is admitted or refused, or its task ends).
pub struct HandshakeSlot {
    ctx: Arc<NetContext>,
    ip: std::net::IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.ctx
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leave(self.ip);
    }
}

/// Judges a new connection against the caps on handshakes in flight: a slot to run its
/// handshake in, or `None` when it was answered with a Retry or refused (and counted).
fn enter(
    ctx: &Arc<NetContext>,
    incoming: wtransport::endpoint::IncomingSession,
) -> Option<(wtransport::endpoint::IncomingSession, HandshakeSlot)> {
    let ip = incoming.remote_address().ip();
    let validated = incoming.remote_address_validated();
    let verdict = ctx
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .enter(ip, validated);
    match verdict {
        in_flight::Verdict::Enter => Some((
            incoming,
            HandshakeSlot {
                ctx: ctx.clone(),
                ip,
            },
        )),
        // Only an unvalidated address is sent a Retry (quinn refuses to retry twice).
        in_flight::Verdict::Retry(reason) if !validated => {
            ctx.stats.metrics.handshake_rejected(reason);
            incoming.retry();
            None
        }
        in_flight::Verdict::Retry(reason) | in_flight::Verdict::Refuse(reason) => {
            ctx.stats.metrics.handshake_rejected(reason);
            incoming.refuse();
            None
        }
    }
}

/// Accepts sessions until `shutdown`, each in its own task on `tracker`.
pub async fn serve(
    endpoint: Arc<Endpoint<ServerSide>>,
    ctx: Arc<NetContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let reaper = tokio::spawn(reap_lingering(ctx.clone()));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some((incoming, slot)) = enter(&ctx, incoming) else {
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(session::run(incoming, slot, ctx, shutdown));
    }
    reaper.abort();
    info!("WebTransport endpoint stops accepting");
    // Sessions say goodbye themselves (they watch the same token); wait for them, then for
    // the close frames to leave. Each goodbye is bounded (a second to flush, a second for the
    // client to close), but the drain as a whole must end within --drain-secs whatever
    // happens: past it, every connection still open is closed from here.
    tracker.close();
    let drain = std::time::Duration::from_secs(u64::from(ctx.config.drain_secs.max(1)));
    let deadline = tokio::time::Instant::now() + drain;
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            sessions = tracker.len(),
            "sessions still closing at the end of the drain; closing their connections"
        );
        endpoint.close(
            close_varint(arena_shared::protocol::DisconnectReason::ServerShutdown.code()),
            b"server shutting down",
        );
    }
    // Let the close frames leave, within what is left of the drain (at least a moment).
    let flush = deadline.max(tokio::time::Instant::now() + std::time::Duration::from_millis(200));
    if tokio::time::timeout_at(flush, endpoint.wait_idle())
        .await
        .is_err()
    {
        warn!("connections still open after the drain timeout");
    }
}

/// The longest the rotation task sleeps before it looks at the wall clock again, so that a
/// clock that jumps (a suspended machine, a corrected clock) delays a rotation by this at most.
const ROTATION_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// After a failed attempt to make or install a certificate, the next try waits this long.
const ROTATION_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// A certificate made ahead of its install: the endpoint's configuration around it, and its
/// hash and expiry.
pub struct NextIdentity {
    pub config: ServerConfig,
    pub cert_sha256: String,
    pub not_after: SystemTime,
}

/// Replaces the self-signed certificate before it expires, until `shutdown`, following
/// `rotation` ([`identity::Rotation`]): makes the next one with `make` and publishes its hash
/// next to the current one in `hashes`, then installs its configuration with
/// [`Endpoint::reload_config`] (no rebind). quinn hands the new TLS configuration to new
/// handshakes only; a connection already made keeps its TLS session, its certificate and its
/// socket, so connected players notice nothing. `not_after` is the current certificate's
/// expiry.
pub async fn rotate_identity(
    endpoint: Arc<Endpoint<ServerSide>>,
    mut not_after: SystemTime,
    rotation: identity::Rotation,
    make: impl Fn() -> Result<NextIdentity, String>,
    hashes: watch::Sender<identity::CertHashes>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut next: Option<NextIdentity> = None;
    loop {
        let wait = match rotation.step(not_after, next.is_some(), SystemTime::now()) {
            identity::Step::Wait(wait) => wait.min(ROTATION_RECHECK),
            identity::Step::Announce => match make() {
                Ok(made) => {
                    hashes.send_modify(|h| h.next = Some(made.cert_sha256.clone()));
                    info!(
                        next_cert_sha256 = made.cert_sha256.as_str(),
                        "next certificate made; /api/connect hands out its hash too"
                    );
                    next = Some(made);
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "making the next certificate failed; retrying");
                    ROTATION_RETRY
                }
            },
            identity::Step::Install => {
                let Some(made) = next.take() else { continue };
                // Without a rebind this only swaps quinn's server configuration.
                match endpoint.reload_config(made.config, false) {
                    Ok(()) => {
                        not_after = made.not_after;
                        info!(
                            cert_sha256 = made.cert_sha256.as_str(),
                            not_after = %humantime::format_rfc3339_seconds(not_after),
                            "certificate rotated: new handshakes get this one, connected \
                             players keep theirs"
                        );
                        hashes.send_replace(identity::CertHashes {
                            current: Some(made.cert_sha256),
                            next: None,
                        });
                        stats.count_cert_rotation();
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %e, "installing the next certificate failed; making another");
                        hashes.send_modify(|h| h.next = None);
                        ROTATION_RETRY
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How often lingering seats are checked for the end of their grace period: an entity goes
/// at most this long after its grace ends.
const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Frees lingering seats whose grace period is over and has the simulation remove their
/// entities.
async fn reap_lingering(ctx: Arc<NetContext>) {
    let mut timer = tokio::time::interval(REAP_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let now = ctx.now_ms();
        let expired = ctx.with_registry(|r| r.expire(now));
        for (client_id, session) in expired {
            info!(client_id, "grace period over; player removed");
            if ctx
                .inbox
                .send(SimCommand::Leave { client_id, session })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod cork_tests;
#[cfg(test)]
mod tests {
    use super::UsedTokens;

    #[test]
    fn a_token_is_used_once_until_it_expires_and_a_full_set_refuses_rather_than_forgets() {
        let mut used = UsedTokens::new(3);
        let fp = |b: u8| [b; 32];
        assert!(!used.was_used(&fp(1), 0));
        used.mark_used(fp(1), 100);
        assert!(used.was_used(&fp(1), 50), "second use within its life");
        assert!(!used.was_used(&fp(1), 100), "forgotten once expired");
        assert!(used.is_empty());
        for (b, exp) in [(2, 300), (3, 200), (4, 400)] {
            assert_eq!(used.room(0), Ok(()));
            assert!(used.mark_used(fp(b), exp));
        }
        // Full of unexpired tokens: none is forgotten to make room (it would admit again);
        // the next token waits for the first expiry, 200 ms away.
        assert_eq!(used.room(0), Err(200));
        assert!(
            !used.mark_used(fp(5), 500),
            "nothing remembered without room"
        );
        assert_eq!(used.len(), 3, "bounded");
        assert!([2, 3, 4].iter().all(|b| used.was_used(&fp(*b), 0)));
        assert_eq!(used.room(199), Err(1));
        // Once one expires there is room again.
        assert_eq!(used.room(200), Ok(()));
        assert!(used.mark_used(fp(5), 500));
        assert!(used.was_used(&fp(2), 200) && used.was_used(&fp(5), 200));
        assert!(!used.was_used(&fp(3), 200), "expired");
    }
}
