//! The old server's side of a live handoff, on the game HTTP side (see [`crate::handoff`] for
//! the flow):
//!
//! - `POST /api/handoff`, body the new server's [`MovedTo`] (bitcode): freezes the simulation
//!   between two ticks, and answers the [`Bundle`] (`application/octet-stream`). The
//!   simulation stays frozen until the confirmation, or `--handoff-timeout`.
//! - `POST /api/handoff/confirm`, empty body: the new server runs the world. This one stops its
//!   simulation, moves every player there (`Disconnect(Moved)` spread over
//!   `--handoff-spread`), waits for the sessions to end and shuts down.
//!
//! Both must carry [`HEADER`], signed with the fleet's token secret ([`crate::handoff::auth`]); without it, or
//! with a bad one, the answer is 403 and nothing else happens. A request while a handoff is
//! under way is answered 409. While frozen, new handshakes are refused with a retry hint
//! (`NetContext::frozen`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arena_shared::protocol::MovedTo;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::HttpState;
use crate::config::Config;
use crate::handoff::auth::Verifier;
use crate::handoff::bundle::{Bundle, FORMAT, RunLink};
use crate::handoff::handover::{Handover, Refused};
use crate::net::mover::Mover;
use crate::net::registry::Registry;
use crate::recording::RunFiles;
use crate::stats::Stats;
use crate::tick::freeze::{Freezer, Release};

/// The request header that carries the signature (`t=..,n=..,s=..`, see [`crate::handoff::auth`]).
pub const HEADER: &str = "x-arena-handoff";
pub const PATH: &str = "/api/handoff";
pub const CONFIRM_PATH: &str = "/api/handoff/confirm";
/// The most bytes a request body may have: an encoded [`MovedTo`] within its bounds is far
/// smaller.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// The simulation's own safety timeout, in `--handoff-timeout`s: the timer here unfreezes it
/// at the deadline; this, well after it, only if that timer never ran.
const SIM_TIMEOUT_FACTOR: u32 = 2;
/// How long the old server waits for its moved sessions to end beyond the spread of their
/// reconnect hints, before it stops anyway.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// What the handoff routes share.
pub struct Handoff {
    pub config: Arc<Config>,
    pub http: Arc<HttpState>,
    pub verifier: Mutex<Verifier>,
    pub handover: Mutex<Handover>,
    pub freezer: Freezer,
    pub registry: Arc<Mutex<Registry>>,
    /// The registry's clock origin (`NetContext::started`): its grace periods count from it.
    pub started: Instant,
    pub mover: Mover,
    pub stats: Arc<Stats>,
    /// Shared with `NetContext::frozen`: refuses handshakes while set.
    pub frozen: Arc<AtomicBool>,
    /// Cancelled once the world has moved and the sessions have gone: the server stops.
    pub shutdown: CancellationToken,
    /// The frozen simulation's release and where the players go, while a state is out.
    pub pending: Mutex<Option<(Release, MovedTo)>>,
    /// The replay run this server records (`None`: `--no-replays`), which the new server
    /// continues.
    pub run: Option<Arc<RunFiles>>,
}

impl Handoff {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn verify(&self, headers: &HeaderMap, path: &str, body: &[u8]) -> Result<(), String> {
        let header = headers
            .get(HEADER)
            .ok_or_else(|| format!("no {HEADER} header"))?
            .to_str()
            .map_err(|_| format!("{HEADER} is not text"))?;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        lock(&self.verifier)
            .verify(header, "POST", path, body, unix_ms)
            .map_err(|e| e.to_string())
    }

    /// Unfreezes after an expired or failed handoff: the simulation ticks on, handshakes are
    /// admitted again.
    fn carry_on(&self) {
        if let Some((release, _)) = lock(&self.pending).take() {
            release.carry_on();
        }
        self.frozen.store(false, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn router(state: Arc<Handoff>) -> Router {
    Router::new()
        .route(PATH, post(request))
        .route(CONFIRM_PATH, post(confirm))
        .with_state(state)
}

/// Hex SHA-256 of the bitcode-encoded state: logged by both servers so the state can be seen
/// to have moved bit for bit.
pub fn state_sha256(state: &arena_shared::replay::SimState) -> String {
    Sha256::digest(bitcode::encode(state))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn refused(state: &Handoff, status: StatusCode, why: String) -> Response {
    state.stats.metrics.handoff("refused");
    warn!(status = status.as_u16(), %why, "handoff request refused");
    (status, why).into_response()
}

async fn request(State(state): State<Arc<Handoff>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = state.verify(&headers, PATH, &body) {
        return refused(&state, StatusCode::FORBIDDEN, why);
    }
    let to = match (body.len() <= MAX_REQUEST_BYTES)
        .then(|| bitcode::decode::<MovedTo>(&body).ok())
        .flatten()
    {
        Some(to) if to.within_bounds() => to,
        _ => {
            let why = "the body is not the new server's MovedTo".to_string();
            return refused(&state, StatusCode::BAD_REQUEST, why);
        }
    };
    if let Err(e) = lock(&state.handover).request() {
        return refused(&state, StatusCode::CONFLICT, e.to_string());
    }
    // From here no one joins the world being handed over.
    state.frozen.store(true, Ordering::Relaxed);
    let began = Instant::now();
    let timeout = state.config.handoff_timeout;
    let frozen = match state.freezer.freeze(timeout * SIM_TIMEOUT_FACTOR).await {
        Ok(frozen) => frozen,
        Err(e) => {
            lock(&state.handover).freeze_failed();
            state.frozen.store(false, Ordering::Relaxed);
            state.stats.metrics.handoff("expired");
            warn!(error = %e, "handoff: the simulation could not be frozen; serving on");
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
    };
    let sha = state_sha256(&frozen.state);
    let captured = began.elapsed();
    // The replay writer gets half of --handoff-timeout to write what the simulation recorded
    // before the freeze: the simulation's own timeout (twice --handoff-timeout) must not run
    // out before the confirmation's deadline.
    let run = match &state.run {
        Some(files) => match files.hand_over(timeout / 2).await {
            Some(continues) => Some(RunLink::of(&state.config, continues)),
            None => {
                warn!(
                    "handoff: the replay writer is behind; the new server starts a run of its own"
                );
                None
            }
        },
        None => None,
    };
    let seats = lock(&state.registry).export(state.now_ms());
    let bundle = Bundle {
        format: FORMAT,
        tick: frozen.tick,
        sim: frozen.state,
        seats,
        next_client_id: state.http.next_client_id.load(Ordering::Relaxed),
        run,
    };
    let bytes = bundle.encode();
    info!(
        tick = bundle.tick,
        state_sha256 = sha.as_str(),
        seats = bundle.seats.len(),
        bytes = bytes.len(),
        request_to_capture_ms = captured.as_secs_f64() * 1e3,
        replay_catch_up_ms = (began.elapsed() - captured).as_secs_f64() * 1e3,
        "handoff: state captured"
    );
    if bytes.len() > state.config.handoff_max_bytes {
        frozen.release.carry_on();
        lock(&state.handover).freeze_failed();
        state.frozen.store(false, Ordering::Relaxed);
        state.stats.metrics.handoff("expired");
        let why = format!(
            "the state is {} bytes, more than --handoff-max-bytes {}",
            bytes.len(),
            state.config.handoff_max_bytes
        );
        warn!(%why, "handoff abandoned; serving on");
        return (StatusCode::INSUFFICIENT_STORAGE, why).into_response();
    }
    let deadline = {
        let mut handover = lock(&state.handover);
        handover.handed_out(state.now_ms());
        *lock(&state.pending) = Some((frozen.release, to));
        handover.deadline().unwrap_or(0)
    };
    tokio::spawn(expire_at(state.clone(), deadline));
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

/// At the deadline: unless confirmed, unfreeze and serve on (logged and counted).
async fn expire_at(state: Arc<Handoff>, deadline_ms: u64) {
    tokio::time::sleep_until((state.started + Duration::from_millis(deadline_ms)).into()).await;
    let expired = lock(&state.handover).poll(state.now_ms()).is_some();
    if expired {
        state.carry_on();
        state.stats.metrics.handoff("expired");
        warn!(
            timeout = %humantime::format_duration(state.config.handoff_timeout),
            "handoff: no confirmation in time; the simulation carries on here"
        );
    }
}

async fn confirm(State(state): State<Arc<Handoff>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = state.verify(&headers, CONFIRM_PATH, &body) {
        return refused(&state, StatusCode::FORBIDDEN, why);
    }
    let confirmed = lock(&state.handover).confirm(state.now_ms());
    match confirmed {
        Ok(()) => {}
        Err(Refused::TooLate) => {
            state.carry_on();
            state.stats.metrics.handoff("expired");
            warn!("handoff: the confirmation came too late; the simulation carries on here");
            return (StatusCode::CONFLICT, Refused::TooLate.to_string()).into_response();
        }
        Err(e) => return refused(&state, StatusCode::CONFLICT, e.to_string()),
    }
    let Some((release, to)) = lock(&state.pending).take() else {
        return (StatusCode::CONFLICT, "no state is out").into_response();
    };
    // The players first (their moves queue behind nothing), then the simulation ends.
    let spread = state.config.handoff_spread;
    state.mover.move_everyone(to.clone(), spread);
    release.stop();
    state.stats.metrics.handoff("confirmed");
    info!(
        to = to.url.as_str(),
        sessions = state.stats.sessions(),
        "handoff confirmed: every player moves to the new server"
    );
    tokio::spawn(stop_when_moved(state.clone(), spread + DRAIN_MARGIN));
    StatusCode::OK.into_response()
}

/// Stops the server once its moved sessions have all ended, at most `within` from now.
async fn stop_when_moved(state: Arc<Handoff>, within: Duration) {
    let mut sessions = state.stats.watch_sessions();
    let _ = tokio::time::timeout(within, sessions.wait_for(|n| *n == 0)).await;
    info!(
        left = state.stats.sessions(),
        "handoff: the sessions have moved; stopping"
    );
    state.shutdown.cancel();
}
