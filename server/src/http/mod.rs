//! The HTTP side (axum): health and connect tokens. Plain HTTP on loopback by default; put a
//! TLS-terminating proxy in front for the public internet.
//!
//! - `GET /healthz`: 200 with the live session count and tick, for orchestrators.
//! - `GET /api/connect[?name=NAME]`: where to connect, the certificate hashes to pin
//!   (self-signed only: the current one, and the next one shortly before a rotation), and a
//!   fresh connect token that `Hello` must carry.
//! - `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
//! - `GET /replays`, `/replays/ID` and `/api/replays/...`: the replay viewer ([`replays`]).
//! - `GET /`, `/arena.js`, `/arena_web.wasm`: the browser game client ([`client`]).

pub mod client;
pub mod replays;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arena_shared::protocol::MAX_NAME_LEN;
use arena_shared::token::{self, Claims};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::net::identity::CertHashes;
use crate::stats::Stats;

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
        state.stats.metrics.render(&state.stats),
    )
}

async fn connect(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
) -> Response {
    if !state.guest_tokens {
        let msg = "this server hands out no guest tokens: sign in with the game's login service";
        return (StatusCode::NOT_FOUND, msg).into_response();
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
}

#[cfg(test)]
mod connect_tests {
    use super::*;

    async fn connect_json(state: &Arc<HttpState>) -> ConnectInfo {
        let query = Query(ConnectQuery {
            name: Some("p".into()),
        });
        let response = connect(State(state.clone()), query, HeaderMap::new()).await;
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
