//! The HTTP side (axum, served by [`serve`]'s accept loop with its timeouts and caps): health
//! and connect tokens. Plain HTTP on loopback by default; put a TLS-terminating proxy in front
//! for the public internet.
//!
//! - `GET /healthz`: 200 with the live session count and tick, for orchestrators.
//! - `GET /api/connect[?name=NAME]`: where to connect, the certificate hashes to pin
//!   (self-signed only: the current one, and the next one shortly before a rotation), and a
//!   fresh connect token that `Hello` must carry. At most `--connect-per-sec-per-address`
//!   a second to one address (after a burst); beyond that 429 with `Retry-After`.
//! - `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
//! - `POST /api/handoff`, `POST /api/handoff/confirm`: a live handoff's old side, signed with
//!   the token secret ([`handoff`]).
//! - `GET /`, `/arena.js`, `/arena_web.wasm`: the browser game client ([`page`]).
//!
//! The replay viewer ([`replays`]) is served on a listener of its own (`--viewer-bind`), never
//! here; it runs the same accept loop ([`serve`]).

pub mod handoff;
pub mod page;
pub mod replays;
pub mod serve;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arena_shared::protocol::MAX_NAME_LEN;
use arena_shared::token::{self, Claims};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::net::identity::CertHashes;
use crate::net::limits::{AddressBuckets, AddressKey, exempt};
use crate::stats::Stats;

/// Addresses whose `/api/connect` rate is tracked at once. An address is forgotten once its
/// bucket has refilled (4 s at the defaults), so only more than ~16,000 new addresses a second
/// fill it; then newcomers wait for a refill (see [`AddressBuckets`]). About 4 MB when full.
pub const CONNECT_ADDRESSES_TRACKED: usize = 65_536;

/// `/api/connect`'s per-address rate (`--connect-per-sec-per-address`, its burst).
#[derive(Debug)]
pub struct ConnectLimit {
    buckets: Mutex<AddressBuckets>,
    exempt_loopback: bool,
    /// The buckets' clock origin.
    started: Instant,
}

impl ConnectLimit {
    pub fn new(rate: f64, burst: f64, exempt_loopback: bool) -> Self {
        Self {
            buckets: Mutex::new(AddressBuckets::new(rate, burst, CONNECT_ADDRESSES_TRACKED)),
            exempt_loopback,
            started: Instant::now(),
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.connect_per_sec_per_address,
            config.connect_burst_per_address,
            config.exempt_loopback,
        )
    }

    /// Takes one of `ip`'s tokens now, or says how many whole seconds until one is there.
    pub fn take(&self, ip: IpAddr) -> Result<(), u64> {
        self.take_at(ip, self.started.elapsed().as_secs_f64())
    }

    /// [`take`](Self::take) at `now` seconds on the buckets' clock.
    pub fn take_at(&self, ip: IpAddr, now: f64) -> Result<(), u64> {
        if exempt(ip, self.exempt_loopback) {
            return Ok(());
        }
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(AddressKey::of(ip), now)
            // Retry-After counts whole seconds: rounded up, so a client that waits as told
            // finds a token.
            .map_err(|ms| u64::from(ms).div_ceil(1000))
    }
}

pub struct HttpState {
    pub token_secret: Arc<[u8]>,
    /// The `server` claim of issued tokens (what the WebTransport side checks).
    pub token_audience: String,
    pub public_url: Option<String>,
    pub wt_addr: SocketAddr,
    /// The certificate hashes to hand out, kept current by the rotation task.
    pub certs: watch::Receiver<CertHashes>,
    pub token_ttl: Duration,
    pub next_client_id: AtomicU64,
    pub stats: Arc<Stats>,
    /// `/api/connect` issues tokens (off with `--no-guest-tokens`).
    pub guest_tokens: bool,
    pub connect_limit: ConnectLimit,
}

/// Body of `/api/connect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectInfo {
    pub url: String,
    /// The certificate the server presents now (self-signed only).
    pub cert_sha256: Option<String>,
    /// Every hash to pin, `cert_sha256` first, then the next certificate's shortly before a
    /// rotation; empty with a real certificate.
    #[serde(default)]
    pub cert_sha256s: Vec<String>,
    pub token: String,
}

#[derive(Debug, Deserialize)]
struct ConnectQuery {
    name: Option<String>,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/connect", get(connect))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "sessions": state.stats.sessions(),
        "tick": Stats::get(&state.stats.tick),
    }))
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.stats.render_metrics(),
    )
}

async fn connect(
    State(state): State<Arc<HttpState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
) -> Response {
    if !state.guest_tokens {
        let msg = "this server hands out no guest tokens: sign in with the game's login service";
        return (StatusCode::NOT_FOUND, msg).into_response();
    }
    // The connection's address, never X-Forwarded-For: any client can write that header.
    if let Err(secs) = state.connect_limit.take(peer.ip()) {
        state.stats.metrics.connect_rejected("rate_limited");
        let msg = "too many connect tokens asked from this address; retry later";
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            msg,
        )
            .into_response();
    }
    let client_id = state.next_client_id.fetch_add(1, Ordering::Relaxed);
    let name = query
        .name
        .unwrap_or_else(|| format!("guest-{}", client_id & 0xFFFF_FFFF));
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        let msg = format!("name must be 1 to {MAX_NAME_LEN} bytes with no control characters");
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let claims = Claims {
        client_id,
        name,
        expires_at_ms: now_ms + state.token_ttl.as_millis() as u64,
        server: state.token_audience.clone(),
    };
    let certs = state.certs.borrow().clone();
    let info = ConnectInfo {
        url: connect_url(
            &state,
            headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        ),
        cert_sha256s: certs.pinnable(),
        cert_sha256: certs.current,
        token: token::sign(&state.token_secret, &claims),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(info)).into_response()
}

/// The URL clients are told: `--public-url` when given, never guessed over it. Otherwise the
/// bound address, or for an unspecified bind (0.0.0.0, ::) the host this request was sent to.
pub fn connect_url(state: &HttpState, host_header: Option<&str>) -> String {
    if let Some(url) = &state.public_url {
        return url.clone();
    }
    if !state.wt_addr.ip().is_unspecified() {
        return format!("https://{}/", state.wt_addr);
    }
    let host = host_header
        .map(|h| match h.rsplit_once(':') {
            // Strip a port, but not the colons inside a bracketed IPv6 literal.
            Some((host, port)) if !port.contains(']') => host.to_string(),
            _ => h.to_string(),
        })
        .unwrap_or_else(|| "localhost".to_string());
    format!("https://{host}:{}/", state.wt_addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(public_url: Option<&str>, wt: &str) -> HttpState {
        HttpState {
            token_secret: Arc::from(&b"s"[..]),
            token_audience: "a".into(),
            public_url: public_url.map(String::from),
            wt_addr: wt.parse().unwrap(),
            certs: watch::channel(CertHashes::default()).1,
            token_ttl: Duration::from_secs(30),
            next_client_id: AtomicU64::new(1),
            stats: Arc::new(Stats::default()),
            guest_tokens: true,
            connect_limit: ConnectLimit::new(0.0, 1.0, true),
        }
    }

    #[test]
    fn the_public_url_wins_then_the_bound_address_then_the_request_host() {
        let s = state(Some("https://play.example.com:443/"), "0.0.0.0:4433");
        assert_eq!(
            connect_url(&s, Some("10.0.0.1:8080")),
            "https://play.example.com:443/"
        );
        let s = state(None, "127.0.0.1:4433");
        assert_eq!(
            connect_url(&s, Some("localhost:8080")),
            "https://127.0.0.1:4433/"
        );
        let s = state(None, "0.0.0.0:4433");
        assert_eq!(
            connect_url(&s, Some("192.0.2.7:8080")),
            "https://192.0.2.7:4433/"
        );
        assert_eq!(
            connect_url(&s, Some("[2001:db8::1]:8080")),
            "https://[2001:db8::1]:4433/"
        );
        assert_eq!(connect_url(&s, None), "https://localhost:4433/");
    }

    #[test]
    fn connect_tokens_are_rationed_per_address_with_retry_after_in_whole_seconds() {
        let limit = ConnectLimit::new(0.5, 3.0, true);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(limit.take_at(a, 10.0), Ok(()));
        }
        // One token every 2 s: 2 s to wait, told as 2.
        assert_eq!(limit.take_at(a, 10.0), Err(2));
        // 0.1 s later: 1.9 s to wait, rounded up so a client waiting as told finds a token.
        assert_eq!(limit.take_at(a, 10.1), Err(2));
        assert_eq!(
            limit.take_at(b, 10.1),
            Ok(()),
            "another address has its own"
        );
        assert_eq!(limit.take_at(a, 12.0), Ok(()));
        let loopback: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(limit.take_at(loopback, 12.0), Ok(()), "spared");
        }
        let strict = ConnectLimit::new(0.5, 1.0, false);
        assert_eq!(strict.take_at(loopback, 0.0), Ok(()));
        assert_eq!(strict.take_at(loopback, 0.0), Err(2));
    }
}

#[cfg(test)]
mod connect_tests {
    use super::*;

    async fn connect_json(state: &Arc<HttpState>) -> ConnectInfo {
        let query = Query(ConnectQuery {
            name: Some("p".into()),
        });
        let peer = axum::extract::ConnectInfo("192.0.2.1:5000".parse().expect("an address"));
        let response = connect(State(state.clone()), peer, query, HeaderMap::new()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .expect("a body");
        serde_json::from_slice(&body).expect("ConnectInfo JSON")
    }

    #[tokio::test]
    async fn connect_hands_out_the_current_hash_and_the_announced_next_one() {
        let (certs, rx) = watch::channel(CertHashes {
            current: Some("old".into()),
            next: None,
        });
        let state = Arc::new(HttpState {
            token_secret: Arc::from(&b"s"[..]),
            token_audience: "a".into(),
            public_url: None,
            wt_addr: "127.0.0.1:4433".parse().expect("an address"),
            certs: rx,
            token_ttl: Duration::from_secs(30),
            next_client_id: AtomicU64::new(1),
            stats: Arc::new(Stats::default()),
            guest_tokens: true,
            connect_limit: ConnectLimit::new(0.0, 1.0, true),
        });
        let info = connect_json(&state).await;
        assert_eq!(info.cert_sha256.as_deref(), Some("old"));
        assert_eq!(info.cert_sha256s, ["old"]);

        certs.send_modify(|h| h.next = Some("new".into()));
        let info = connect_json(&state).await;
        assert_eq!(
            info.cert_sha256.as_deref(),
            Some("old"),
            "not installed yet"
        );
        assert_eq!(info.cert_sha256s, ["old", "new"]);

        certs.send_replace(CertHashes {
            current: Some("new".into()),
            next: None,
        });
        let info = connect_json(&state).await;
        assert_eq!(info.cert_sha256.as_deref(), Some("new"));
        assert_eq!(info.cert_sha256s, ["new"]);

        certs.send_replace(CertHashes::default());
        let info = connect_json(&state).await;
        assert_eq!((info.cert_sha256, info.cert_sha256s), (None, Vec::new()));
    }
}
