//! The accept loop of an HTTP listener, with the bounds `axum::serve` does not set: a deadline
//! for each request head, a cap on connections in all and from one address, and size limits on
//! what a request may bring.
//!
//! `axum::serve` turns on no timer, so hyper's header-read timeout is off there: a client that
//! opens connections and sends a header line now and then, never the blank line that ends the
//! head (slowloris), holds each connection, and a file descriptor, for as long as it likes. A
//! few hundred of them from one host used to be enough to stop `/api/connect` answering
//! anyone. Here, over HTTP/1.1 only (what the page and the tools speak):
//!
//! - A request head must arrive whole within [`HttpLimits::header_timeout`] of the connection
//!   opening or of the previous response. In hyper 1.x the same timer runs while a kept-alive
//!   connection waits for its next request's first byte, so it is the idle timeout as well: a
//!   quiet kept-alive connection is closed after that long. A connection that never got a
//!   whole head in is counted (`header_timeout`); a half-sent head gets a 408.
//! - Connections are counted in all and by [`AddressKey`] (IPv4 address, IPv6 /64); one over
//!   the per-address cap is closed as soon as it is accepted, before a byte is read, and
//!   counted (`too_many_from_address`). Loopback is spared the per-address cap under
//!   `--exempt-loopback`, never the total. When the total cap is reached, the new connection
//!   takes the place of the one that has waited longest for a request head (never sent a
//!   whole one, or kept alive and idle since its last response), which is closed and counted
//!   (`evicted_waiting`): otherwise an attacker with enough addresses to fill the total keeps
//!   every newcomer out, reconnecting as the header timeout frees his connections. Only when
//!   every connection is in a request (from the handler's call until its response body is
//!   written) is the new one closed instead (`too_many_connections`). An attacker can still
//!   evict a newcomer, but only by opening a whole cap's worth of connections between the
//!   newcomer's connect and its head (a round trip); an evicted connection's place is given
//!   to the new one at once, and its socket is closed when its task next runs.
//! - A request head larger than [`HttpLimits::max_header_bytes`] gets a 431; a body declared
//!   larger than [`HttpLimits::max_body_bytes`] gets a 413 without being read, and handlers
//!   that read a body stop there too ([`DefaultBodyLimit`]).
//! - Shutdown stops accepting at once; each connection finishes the request it is serving
//!   (at most [`SHUTDOWN_GRACE`]) and closes.
//!
//! Handlers see the peer's address as axum's [`ConnectInfo<SocketAddr>`].

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::Config;
use crate::net::limits::{AddressKey, exempt};
use crate::stats::Stats;

/// How long a connection may take, once shutdown begins, to finish the request it is serving.
/// The game's handlers answer in microseconds; this bounds a client that reads its response
/// slowly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one listener allows; see the module doc.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// The listener's name in metrics (the `listener` label), e.g. `"game"`.
    pub name: &'static str,
    /// From a connection's opening, or the end of its previous response, until a whole
    /// request head is in. `Duration::ZERO`: no deadline.
    pub header_timeout: Duration,
    /// Connections open at once, all addresses together. 0: no cap.
    pub max_connections: usize,
    /// Connections open at once from one [`AddressKey`]. 0: no cap.
    pub max_connections_per_address: usize,
    /// Spares loopback addresses the per-address cap (`--exempt-loopback`).
    pub exempt_loopback: bool,
    /// The largest request head (request line and headers) read; hyper's floor is 8192.
    pub max_header_bytes: usize,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
}

impl HttpLimits {
    /// The game's HTTP side, from its `--http-*` flags.
    pub fn game(config: &Config) -> Self {
        Self {
            name: "game",
            header_timeout: config.http_header_timeout,
            max_connections: config.http_max_connections,
            max_connections_per_address: config.http_max_connections_per_address,
            exempt_loopback: config.exempt_loopback,
            max_header_bytes: config.http_max_header_bytes,
            max_body_bytes: config.http_max_body_bytes,
        }
    }
}

/// Why a connection was refused as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyFromAddress,
}

impl Refusal {
    /// The `reason` label of `arena_http_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyFromAddress => "too_many_from_address",
        }
    }
}

/// A connection's number in its [`ConnectionTable`]; never reused.
pub type ConnectionId = u64;

/// What [`ConnectionTable::admit`] did: the new connection's number, and the connection
/// closed to make room for it, if the table was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub id: ConnectionId,
    pub evicted: Option<ConnectionId>,
}

#[derive(Debug)]
struct Entry {
    /// `None`: not counted by address (exempt, or no per-address cap).
    key: Option<AddressKey>,
    /// Requests being served: from the service's call until the response body has been
    /// written (or dropped). 0: the connection is waiting for a request head.
    active: u32,
    /// When it last began waiting: its opening, or the end of its last response.
    since: Duration,
}

/// The connections a listener holds, in all and by address, and whether each is waiting for
/// a request head or in the middle of a request, sans-IO (times are given by the caller).
/// Memory is bounded by the caps: an address is only tracked while it has a connection open.
///
/// When the total cap is reached, a new connection takes the place of the one that has been
/// waiting longest for a request head (a slowloris connection, or a kept-alive one sitting
/// idle), so an attacker with enough addresses to fill the cap cannot keep everyone else out
/// for as long as the header timeout; only when every connection is in a request is the new
/// one refused. The per-address cap refuses the new connection instead: evicting within an
/// address would only let that address cycle through its own connections.
#[derive(Debug)]
pub struct ConnectionTable {
    max_total: usize,
    max_per_address: usize,
    next_id: ConnectionId,
    entries: HashMap<ConnectionId, Entry>,
    /// The connections waiting for a head, oldest first.
    waiting: BTreeSet<(Duration, ConnectionId)>,
    by_address: HashMap<AddressKey, usize>,
}

impl ConnectionTable {
    /// Caps of 0 mean no cap.
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            max_total,
            max_per_address,
            next_id: 0,
            entries: HashMap::new(),
            waiting: BTreeSet::new(),
            by_address: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip` at `now`, waiting for its first head, or says which
    /// cap it is over. `exempt` spares it the per-address cap (it is then not tracked by
    /// address at all). If the table is full, the connection that has waited longest for a
    /// head is forgotten in its favour (the caller closes it); with none waiting, the new one
    /// is refused. On success the caller must [`release`](Self::release) the returned id when
    /// the connection ends.
    pub fn admit(&mut self, ip: IpAddr, exempt: bool, now: Duration) -> Result<Admitted, Refusal> {
        let key = (!exempt && self.max_per_address > 0).then(|| AddressKey::of(ip));
        if let Some(key) = key
            && self
                .by_address
                .get(&key)
                .is_some_and(|&n| n >= self.max_per_address)
        {
            return Err(Refusal::TooManyFromAddress);
        }
        let mut evicted = None;
        if self.max_total > 0 && self.entries.len() >= self.max_total {
            let &(_, oldest) = self.waiting.first().ok_or(Refusal::TooManyConnections)?;
            self.release(oldest);
            evicted = Some(oldest);
        }
        if let Some(key) = key {
            *self.by_address.entry(key).or_insert(0) += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                key,
                active: 0,
                since: now,
            },
        );
        self.waiting.insert((now, id));
        Ok(Admitted { id, evicted })
    }

    /// A request on `id` is being served: it cannot be evicted until it
    /// [`ends`](Self::end_request). Unknown ids (released or evicted) are ignored.
    pub fn begin_request(&mut self, id: ConnectionId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if entry.active == 0 {
                self.waiting.remove(&(entry.since, id));
            }
            entry.active += 1;
        }
    }

    /// A request on `id` has been answered (its response body written or dropped) at `now`;
    /// with none left, the connection waits for its next head from `now`.
    pub fn end_request(&mut self, id: ConnectionId, now: Duration) {
        if let Some(entry) = self.entries.get_mut(&id)
            && entry.active > 0
        {
            entry.active -= 1;
            if entry.active == 0 {
                entry.since = now;
                self.waiting.insert((now, id));
            }
        }
    }

    /// Forgets a connection [`admit`](Self::admit) counted; false if it was already
    /// forgotten (evicted).
    pub fn release(&mut self, id: ConnectionId) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        if entry.active == 0 {
            self.waiting.remove(&(entry.since, id));
        }
        if let Some(key) = entry.key
            && let Some(open) = self.by_address.get_mut(&key)
        {
            *open -= 1;
            if *open == 0 {
                self.by_address.remove(&key);
            }
        }
        true
    }

    /// Connections counted now.
    pub fn open(&self) -> usize {
        self.entries.len()
    }

    /// Connections waiting for a request head now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Addresses tracked now.
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }
}

/// What the accept loop and its connections share: the table, each connection's eviction
/// token, and the origin of the table's times.
struct Shared {
    table: ConnectionTable,
    evict: HashMap<ConnectionId, CancellationToken>,
    origin: Instant,
}

impl Shared {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A connection's place in the [`ConnectionTable`], given back when dropped.
struct Slot {
    shared: Arc<Mutex<Shared>>,
    id: ConnectionId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.table.release(self.id);
        shared.evict.remove(&self.id);
    }
}

/// One request in a [`ConnectionTable`], from the service's call until dropped: with the
/// response body (so once hyper has written it all, or the connection is gone), or with the
/// service's future if that never produced a response.
struct InRequest {
    shared: Arc<Mutex<Shared>>,
    id: ConnectionId,
}

impl InRequest {
    fn begin(shared: &Arc<Mutex<Shared>>, id: ConnectionId) -> Self {
        lock(shared).table.begin_request(id);
        Self {
            shared: shared.clone(),
            id,
        }
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        let now = shared.now();
        shared.table.end_request(self.id, now);
    }
}

/// A response body that keeps its request marked as in progress until the body is dropped.
/// The body's end, not the handler's return, is what counts: the replay viewer streams its
/// responses for seconds after its handler has returned, and such a connection is busy, not
/// idle. (hyper drops the body as soon as its last frame is written.)
struct Tracked {
    body: Body,
    _request: InRequest,
}

impl hyper::body::Body for Tracked {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // The table's counts stay consistent whatever panicked while holding it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `router` on `listener` until `shutdown` fires, then lets each connection finish
/// its request (at most [`SHUTDOWN_GRACE`]) and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Mutex::new(Shared {
        table: ConnectionTable::new(limits.max_connections, limits.max_connections_per_address),
        evict: HashMap::new(),
        origin: Instant::now(),
    }));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout((!limits.header_timeout.is_zero()).then_some(limits.header_timeout))
        .max_buf_size(limits.max_header_bytes.max(8192));
    let router = router.layer(DefaultBodyLimit::max(limits.max_body_bytes));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The peer gave up before we got to it: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: the caps are above the process's
                    // limit. Waiting lets connections close rather than spinning on accept.
                    warn!(listener = limits.name, error = %e, "HTTP accept failed; pausing a second");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let evict = CancellationToken::new();
        let admitted = {
            let mut shared = lock(&shared);
            let now = shared.now();
            let exempt = exempt(peer.ip(), limits.exempt_loopback);
            let admitted = shared.table.admit(peer.ip(), exempt, now);
            if let Ok(admitted) = admitted {
                if let Some(old) = admitted.evicted
                    && let Some(token) = shared.evict.remove(&old)
                {
                    // Its task drops hyper's connection, which closes the socket.
                    token.cancel();
                }
                shared.evict.insert(admitted.id, evict.clone());
            }
            admitted
        };
        let slot = match admitted {
            Ok(admitted) => {
                if admitted.evicted.is_some() {
                    stats.metrics.http_rejected(limits.name, "evicted_waiting");
                }
                Slot {
                    shared: shared.clone(),
                    id: admitted.id,
                }
            }
            Err(refusal) => {
                stats.metrics.http_rejected(limits.name, refusal.reason());
                drop(stream);
                continue;
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            slot,
            evict,
            builder.clone(),
            router.clone(),
            limits.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection to its end, then gives its slot back.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    evict: CancellationToken,
    builder: http1::Builder,
    router: Router,
    limits: HttpLimits,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    // Responses are small and whole; Nagle would only delay them (axum::serve sets it too).
    let _ = stream.set_nodelay(true);
    let router = TowerToHyperService::new(router);
    let (name, max_body) = (limits.name, limits.max_body_bytes as u64);
    let answered = Arc::new(AtomicBool::new(false));
    let service = {
        let (stats, answered) = (stats.clone(), answered.clone());
        let (shared, id) = (slot.shared.clone(), slot.id);
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let router = router.clone();
            let stats = stats.clone();
            answered.store(true, Ordering::Relaxed);
            // From here until the response body is dropped, the connection cannot be evicted.
            let in_request = InRequest::begin(&shared, id);
            async move {
                let response = if declared_length(&request).is_some_and(|n| n > max_body) {
                    stats.metrics.http_rejected(name, "body_too_large");
                    too_large()
                } else {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let Ok(response) = router.call(request).await;
                    response
                };
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _request: in_request,
                }))
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // Evicted for a newcomer while it waited for a head: closed at once, uncounted here
        // (the accept loop counted it).
        _ = evict.cancelled() => Ok(()),
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        // hyper reports the same timeout for a kept-alive connection that sat quiet, the
        // normal end of one, and cannot say whether a next head was begun: only a connection
        // that never got a whole head in counts as refused (a client that sends one request
        // and then trickles is closed all the same, uncounted).
        if e.is_timeout() && !answered.load(Ordering::Relaxed) {
            stats.metrics.http_rejected(name, "header_timeout");
        } else if e.is_parse_too_large() {
            stats.metrics.http_rejected(name, "header_too_large");
        }
    }
    drop(slot);
}

/// The body length a request declares, if it declares one that parses.
fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large() -> Response<Body> {
    let mut response = Response::new(Body::from("request body too large"));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::{Admitted, ConnectionTable, HttpLimits, Refusal, serve};
    use crate::stats::Stats;
    use axum::Router;
    use axum::routing::get;
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Admits a connection from `addr` at `now`, which must get in.
    fn admit(t: &mut ConnectionTable, addr: &str, now: u64) -> Admitted {
        t.admit(ip(addr), false, secs(now)).expect("admitted")
    }

    #[test]
    fn the_per_address_cap_counts_an_ipv6_64_as_one_and_spares_the_exempt() {
        let mut t = ConnectionTable::new(10, 2);
        let a = admit(&mut t, "2001:db8::1", 0).id;
        let b = admit(&mut t, "2001:db8::2", 0).id;
        assert_eq!(
            t.admit(ip("2001:db8::ffff"), false, secs(0)),
            Err(Refusal::TooManyFromAddress)
        );
        admit(&mut t, "2001:db8:0:1::1", 0);
        for _ in 0..3 {
            assert!(t.admit(ip("127.0.0.1"), true, secs(0)).is_ok());
        }
        assert_eq!((t.open(), t.addresses()), (6, 2));
        assert!(t.release(a));
        admit(&mut t, "2001:db8::3", 0);
        assert!(t.release(b));
        assert_eq!((t.open(), t.addresses()), (5, 2));
    }

    #[test]
    fn with_every_connection_in_a_request_the_total_cap_refuses_everyone() {
        let mut t = ConnectionTable::new(3, 0);
        let ids: Vec<_> = (1..=3)
            .map(|i| admit(&mut t, &format!("192.0.2.{i}"), 0).id)
            .collect();
        assert_eq!(t.addresses(), 0, "no per-address cap: nothing tracked");
        for &id in &ids {
            t.begin_request(id);
        }
        assert_eq!(
            t.admit(ip("127.0.0.1"), true, secs(1)),
            Err(Refusal::TooManyConnections),
            "loopback is not spared the total"
        );
        assert!(t.release(ids[0]));
        assert_eq!(admit(&mut t, "192.0.2.9", 2).evicted, None);
        assert_eq!((t.open(), t.addresses()), (3, 0));
    }

    #[test]
    fn a_full_table_evicts_the_connection_waiting_longest_for_a_head() {
        let mut t = ConnectionTable::new(4, 0);
        // Opened at 0, 1, 2, 3 s; the first is in a request, the third went into one and
        // was answered at 10 s, so it has waited since then.
        let ids: Vec<_> = (0..4)
            .map(|i| admit(&mut t, &format!("192.0.2.{i}"), i).id)
            .collect();
        t.begin_request(ids[0]);
        t.begin_request(ids[2]);
        t.end_request(ids[2], secs(10));
        assert_eq!(t.waiting(), 3);
        let order: Vec<_> = (0..3)
            .map(|i| admit(&mut t, "198.51.100.1", 20 + i).evicted)
            .collect();
        // The second (waiting since 1 s), the fourth (3 s), the third (10 s); never the
        // first, whose request has been going on all along.
        assert_eq!(order, [Some(ids[1]), Some(ids[3]), Some(ids[2])]);
        assert_eq!(t.open(), 4);
        // The newcomers, oldest first, are next.
        assert!(admit(&mut t, "198.51.100.1", 30).evicted > Some(ids[3]));
        assert!(
            !t.release(ids[1]),
            "an evicted connection is already forgotten"
        );
        t.end_request(ids[1], secs(31));
        t.begin_request(ids[1]);
        assert_eq!(
            (t.open(), t.waiting()),
            (4, 3),
            "unknown ids change nothing"
        );
    }

    #[test]
    fn a_connection_is_never_evicted_while_any_of_its_requests_is_in_progress() {
        let mut t = ConnectionTable::new(1, 0);
        let a = admit(&mut t, "192.0.2.1", 0).id;
        // hyper may call the service for a pipelined request before the previous
        // response's body is dropped: the connection waits again only when both are done.
        t.begin_request(a);
        t.begin_request(a);
        t.end_request(a, secs(1));
        assert_eq!(
            t.admit(ip("192.0.2.2"), false, secs(2)),
            Err(Refusal::TooManyConnections)
        );
        t.end_request(a, secs(3));
        assert_eq!(admit(&mut t, "192.0.2.2", 4).evicted, Some(a));
    }

    #[test]
    fn per_address_counts_stay_right_across_evictions() {
        let mut t = ConnectionTable::new(3, 2);
        let a1 = admit(&mut t, "192.0.2.1", 0).id;
        let a2 = admit(&mut t, "192.0.2.1", 1).id;
        admit(&mut t, "192.0.2.2", 2);
        // 192.0.2.1 is at its cap: refused, and nobody is evicted for it.
        assert_eq!(
            t.admit(ip("192.0.2.1"), false, secs(3)),
            Err(Refusal::TooManyFromAddress)
        );
        assert_eq!(t.open(), 3);
        // Another address takes 192.0.2.1's oldest place, which gives 192.0.2.1 one back.
        assert_eq!(admit(&mut t, "192.0.2.3", 4).evicted, Some(a1));
        assert_eq!(t.addresses(), 3);
        // 192.0.2.1 may open one again; it evicts its own older connection (the oldest
        // waiting), so it still holds one, and one more (evicting 192.0.2.2's) brings it to
        // its cap of 2, after which it is refused again.
        assert_eq!(admit(&mut t, "192.0.2.1", 5).evicted, Some(a2));
        assert_eq!((t.open(), t.addresses()), (3, 3));
        assert!(admit(&mut t, "192.0.2.1", 6).evicted.is_some());
        assert_eq!((t.open(), t.addresses()), (3, 2));
        assert_eq!(
            t.admit(ip("192.0.2.1"), false, secs(7)),
            Err(Refusal::TooManyFromAddress),
            "at its cap of 2"
        );
        let mut t2 = ConnectionTable::new(0, 1);
        let ids: Vec<_> = (0..100)
            .map(|i| admit(&mut t2, &format!("10.0.0.{i}"), 0).id)
            .collect();
        assert_eq!(t2.addresses(), 100);
        for id in ids {
            assert!(t2.release(id));
        }
        assert_eq!((t2.open(), t2.addresses(), t2.waiting()), (0, 0, 0));
    }

    /// Reads what the server sends until it closes `stream`; panics if it is still open
    /// after 5 s (the header timeout is 30 s: only an eviction or a refusal closes it).
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(secs(5), read)
            .await
            .expect("the server closed the connection");
        all
    }

    /// The real loop on loopback, with a handler that is slow until told: the game's routes
    /// all answer at once, so the e2e tests cannot hold a connection in a request.
    #[tokio::test]
    async fn the_loop_evicts_a_waiting_connection_never_one_in_a_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let router = Router::new().route(
            "/slow",
            get({
                let gate = gate.clone();
                async move || {
                    entered_tx.send(()).unwrap();
                    let _ = gate.acquire().await.unwrap();
                    "done"
                }
            }),
        );
        let limits = HttpLimits {
            name: "test",
            header_timeout: secs(30),
            max_connections: 2,
            max_connections_per_address: 0,
            exempt_loopback: true,
            max_header_bytes: 8192,
            max_body_bytes: 1024,
        };
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            limits,
            stats.clone(),
            shutdown.clone(),
        ));
        let rejected = |reason: &str| {
            let text = stats.render_metrics();
            text.lines()
                .find(|l| {
                    l.starts_with("arena_http_rejected_total{")
                        && l.contains(&format!("reason=\"{reason}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let slow = b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n";
        // The oldest connection is in a request; the next waits for its head.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(slow).await.unwrap();
        entered.recv().await.unwrap();
        let mut waiting = TcpStream::connect(addr).await.unwrap();
        waiting.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
        // A third evicts the waiting one, not the older one in a request, and goes into a
        // request itself.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(slow).await.unwrap();
        assert!(read_to_close(&mut waiting).await.is_empty());
        entered.recv().await.unwrap();
        assert_eq!(rejected("evicted_waiting"), 1);
        // Both in a request: a fourth is refused.
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(read_to_close(&mut fourth).await.is_empty());
        assert_eq!(rejected("too_many_connections"), 1);
        gate.add_permits(2);
        for stream in [&mut busy, &mut third] {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(secs(5), stream.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered");
        }
        assert_eq!(rejected("evicted_waiting"), 1, "nothing else evicted");
        shutdown.cancel();
        tokio::time::timeout(secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
