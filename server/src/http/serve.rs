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
//!   either cap is closed as soon as it is accepted, before a byte is read, and counted.
//!   Loopback is spared the per-address cap under `--exempt-loopback`, never the total.
//! - A request head larger than [`HttpLimits::max_header_bytes`] gets a 431; a body declared
//!   larger than [`HttpLimits::max_body_bytes`] gets a 413 without being read, and handlers
//!   that read a body stop there too ([`DefaultBodyLimit`]).
//! - Shutdown stops accepting at once; each connection finishes the request it is serving
//!   (at most [`SHUTDOWN_GRACE`]) and closes.
//!
//! Handlers see the peer's address as axum's [`ConnectInfo<SocketAddr>`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
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

/// The connections a listener holds, in all and by address, sans-IO. Memory is bounded by the
/// caps: an address is only tracked while it has a connection open.
#[derive(Debug)]
pub struct ConnectionTable {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    by_address: HashMap<AddressKey, usize>,
}

impl ConnectionTable {
    /// Caps of 0 mean no cap.
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            max_total,
            max_per_address,
            total: 0,
            by_address: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip`, or says which cap it is over. `exempt` spares it the
    /// per-address cap (it is then not tracked by address at all). On success the caller must
    /// [`release`](Self::release) with the returned key when the connection ends.
    pub fn admit(&mut self, ip: IpAddr, exempt: bool) -> Result<Option<AddressKey>, Refusal> {
        if self.max_total > 0 && self.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        let key = (!exempt && self.max_per_address > 0).then(|| AddressKey::of(ip));
        if let Some(key) = key {
            let open = self.by_address.entry(key).or_insert(0);
            if *open >= self.max_per_address {
                return Err(Refusal::TooManyFromAddress);
            }
            *open += 1;
        }
        self.total += 1;
        Ok(key)
    }

    /// Forgets a connection [`admit`](Self::admit) counted.
    pub fn release(&mut self, key: Option<AddressKey>) {
        self.total = self.total.saturating_sub(1);
        if let Some(key) = key
            && let Some(open) = self.by_address.get_mut(&key)
        {
            *open -= 1;
            if *open == 0 {
                self.by_address.remove(&key);
            }
        }
    }

    /// Connections counted now.
    pub fn open(&self) -> usize {
        self.total
    }

    /// Addresses tracked now.
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }
}

/// A connection's place in the [`ConnectionTable`], given back when dropped.
struct Slot {
    table: Arc<Mutex<ConnectionTable>>,
    key: Option<AddressKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).release(self.key);
    }
}

fn lock(table: &Mutex<ConnectionTable>) -> std::sync::MutexGuard<'_, ConnectionTable> {
    // The table's counts stay consistent whatever panicked while holding it.
    table.lock().unwrap_or_else(PoisonError::into_inner)
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
    let table = Arc::new(Mutex::new(ConnectionTable::new(
        limits.max_connections,
        limits.max_connections_per_address,
    )));
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
        let admitted = lock(&table).admit(peer.ip(), exempt(peer.ip(), limits.exempt_loopback));
        let slot = match admitted {
            Ok(key) => Slot {
                table: table.clone(),
                key,
            },
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
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let router = router.clone();
            let stats = stats.clone();
            answered.store(true, Ordering::Relaxed);
            async move {
                if declared_length(&request).is_some_and(|n| n > max_body) {
                    stats.metrics.http_rejected(name, "body_too_large");
                    return Ok::<_, Infallible>(too_large());
                }
                request.extensions_mut().insert(ConnectInfo(peer));
                router.call(request).await
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
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
    use super::{ConnectionTable, Refusal};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_per_address_cap_counts_an_ipv6_64_as_one_and_spares_the_exempt() {
        let mut t = ConnectionTable::new(10, 2);
        let a = t.admit(ip("2001:db8::1"), false).unwrap();
        let b = t.admit(ip("2001:db8::2"), false).unwrap();
        assert_eq!(
            t.admit(ip("2001:db8::ffff"), false),
            Err(Refusal::TooManyFromAddress)
        );
        assert!(t.admit(ip("2001:db8:0:1::1"), false).is_ok(), "another /64");
        for _ in 0..3 {
            assert_eq!(t.admit(ip("127.0.0.1"), true), Ok(None));
        }
        assert_eq!((t.open(), t.addresses()), (6, 2));
        t.release(a);
        assert!(t.admit(ip("2001:db8::3"), false).is_ok(), "a slot freed");
        t.release(b);
        assert_eq!((t.open(), t.addresses()), (5, 2));
    }

    #[test]
    fn the_total_cap_binds_everyone_and_a_release_frees_a_place() {
        let mut t = ConnectionTable::new(3, 0);
        let keys: Vec<_> = (1..=3)
            .map(|i| t.admit(ip(&format!("192.0.2.{i}")), false).unwrap())
            .collect();
        assert_eq!(
            keys,
            [None, None, None],
            "no per-address cap: nothing tracked"
        );
        assert_eq!(
            t.admit(ip("127.0.0.1"), true),
            Err(Refusal::TooManyConnections),
            "loopback is not spared the total"
        );
        t.release(None);
        assert!(t.admit(ip("192.0.2.9"), false).is_ok());
        assert_eq!((t.open(), t.addresses()), (3, 0));
    }

    #[test]
    fn addresses_are_forgotten_when_their_last_connection_ends() {
        let mut t = ConnectionTable::new(0, 1);
        let keys: Vec<_> = (0..100)
            .map(|i| t.admit(ip(&format!("10.0.0.{i}")), false).unwrap())
            .collect();
        assert_eq!(t.addresses(), 100);
        for key in keys {
            t.release(key);
        }
        assert_eq!((t.open(), t.addresses()), (0, 0));
    }
}
