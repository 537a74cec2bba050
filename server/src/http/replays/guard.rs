//! Who may ask the viewer, and how often: the bearer token (`--viewer-token-file`) and the
//! per-address request rate (`--viewer-requests-per-sec`), checked before any handler runs.
//! Every refusal is counted in `arena_viewer_rejected_total{reason}`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::net::limits::{AddressBuckets, AddressKey, exempt};
use crate::stats::Stats;

/// Addresses whose request rate is tracked at once.
const MAX_ADDRESSES: usize = 4096;

pub struct Guard {
    token: Option<Vec<u8>>,
    rate: Mutex<AddressBuckets>,
    exempt_loopback: bool,
    started: Instant,
    pub stats: Arc<Stats>,
}

impl Guard {
    pub fn new(
        token: Option<Vec<u8>>,
        requests_per_sec: f64,
        exempt_loopback: bool,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            token,
            rate: Mutex::new(AddressBuckets::new(
                requests_per_sec,
                2.0 * requests_per_sec,
                MAX_ADDRESSES,
            )),
            exempt_loopback,
            started: Instant::now(),
            stats,
        }
    }

    /// Counts a refusal and says so to the client.
    pub fn reject(
        &self,
        reason: &'static str,
        status: StatusCode,
        retry_ms: Option<u32>,
    ) -> Response {
        self.stats.metrics.viewer_rejected(reason);
        let mut response = (status, reason.replace('_', " ")).into_response();
        if let Some(ms) = retry_ms {
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|given| same_secret(given, token))
    }
}

/// Whether `a` is `b`, in a time that does not depend on where they differ (only on their
/// lengths), so a client cannot find the token a byte at a time by timing refusals.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The check in front of every route: the token, then the address's rate.
pub async fn admit(
    State(guard): State<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !guard.authorized(&request) {
        let mut response = guard.reject("unauthorized", StatusCode::UNAUTHORIZED, None);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let ip = peer.ip();
    if !exempt(ip, guard.exempt_loopback) {
        let now = guard.started.elapsed().as_secs_f64();
        let taken = guard
            .rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(AddressKey::of(ip), now);
        if let Err(retry_ms) = taken {
            return guard.reject(
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                Some(retry_ms),
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_whole() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }
}
