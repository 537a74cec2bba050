//! The replay viewer, served on a listener of its own (`--viewer-bind`, loopback by default;
//! never on the game's HTTP side): `/replays` lists the recorded runs, `/replays/ID` is the
//! viewer page, and a small JSON API feeds it.
//!
//! - `GET /api/replays`: `{"replays": [ID, ...]}`, newest first.
//! - `GET /api/replays/ID/meta`: tick rate, first and last tick, map, players' names (each
//!   join), the AOI radius. Read from the run's index, never by re-simulating.
//! - `GET /api/replays/ID/frames?from=T&count=N`: `{"last_tick": L, "frames": [...]}`, frames
//!   from tick T on, each every living entity (`[id, kind, x, y, health]`, kind 0 player, 1
//!   NPC, 2 projectile, positions to a tenth of a unit), the rifle shots fired (`[shooter,
//!   aim]`) and the hits and kills (`["hit"|"kill", a, b]`). A client gets at most N frames
//!   (N at most `--viewer-max-frames`, 30 when not given), and fewer once the response
//!   reaches `--viewer-max-response-kb` (the first frame always comes; a 5,000-NPC frame is
//!   about 125 KB) or the recording's end: it asks again from the tick after the last frame
//!   it got. If the re-simulation cannot go on (the recorder dropped records there), an
//!   `"error"` follows the frames.
//!
//! Its cost is bounded whoever asks. A run is opened from its index ([`index`]): the
//! keyframe before the tick asked for, in its file, and the records from there to the last
//! frame asked; never the whole run. Frames come from re-simulating that stretch
//! (`replay::Replayer`) through the server's own systems, on a blocking thread, one tick at
//! a time, each frame written to the body as it is made ([`stream`]); the thread stops at
//! the next tick once its client has gone, and gives up on a client that reads nothing for
//! `--viewer-send-timeout`. At most `--viewer-max-streams` responses stream at once and at
//! most `--viewer-max-runs` runs are open (each holds a world); beyond either a request gets
//! 503 with `Retry-After`. One address (an IPv4 address, an IPv6 /64) holds at most
//! `--viewer-max-streams-per-address` of those streams (loopback spared under
//! `--exempt-loopback`), so clients that ask and never read, all from one host, cannot keep
//! everyone else out for their send timeout; beyond its share an address gets 429 with
//! `Retry-After`. Building a run's index the first time reads the whole run, so it is done
//! only in such a stream's place: a `frames` request builds in the one it holds, and a `meta`
//! for a run not yet indexed takes one for the build (and gets the same 503 or 429 when there
//! is none), so however many addresses ask for distinct runs at once, at most
//! `--viewer-max-streams` full reads run. An open run is kept for the next request, so playing forward
//! costs one tick of simulation per tick shown, and is closed for another run when all are
//! taken. No lock is held across a re-simulation: each open run is used by one request at a
//! time, and each run's index has its own lock. In front of all of it ([`guard`]): the bearer
//! token (`--viewer-token-file`) and the per-address rate (`--viewer-requests-per-sec`).
//! Every refusal is counted in `arena_viewer_rejected_total{reason}`.
//!
//! With a token, the page `/replays/ID` (which holds no data) is served to anyone and sends
//! the token it finds in its URL's fragment (`/replays/ID#token=...`, which browsers never
//! send to a server) on its API requests.

mod guard;
pub mod index;
mod stream;

pub use stream::THREAD_NAME;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::serve::HttpLimits;
use crate::net::limits::{AddressKey, exempt};
use crate::recording::{run_files, run_ids};
use crate::replay::Replayer;
use crate::stats::Stats;
use guard::Guard;
use index::{Position, RunIndex};
use stream::{Ask, Chunks, Cursor, Stop, Workers};

/// Runs whose index is kept (each a few bytes a keyframe); the least recently used goes.
const MAX_INDEXED_RUNS: usize = 64;
/// Records one open run holds ahead of its re-simulation.
const MAX_WINDOW_RECORDS: usize = 1 << 18;
/// What a refused client is told to wait, milliseconds.
const RETRY_MS: u32 = 1000;

/// The viewer's bounds (its flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_streams: usize,
    /// 0: no share.
    pub max_streams_per_address: usize,
    pub max_runs: usize,
    pub max_frames: u32,
    pub max_response_bytes: usize,
    pub requests_per_sec: f64,
    pub send_timeout: Duration,
    pub exempt_loopback: bool,
    /// `--viewer-token-file`'s token.
    pub token: Option<Vec<u8>>,
    pub aoi_radius: f32,
    /// The listener's bounds: the HTTP side's (`--http-*`: header deadline, connection caps,
    /// sizes), counted as `listener="viewer"`.
    pub http: HttpLimits,
}

impl Settings {
    pub fn of(config: &Config, token: Option<Vec<u8>>) -> Self {
        Self {
            max_streams: config.viewer_max_streams.max(1),
            max_streams_per_address: config.viewer_max_streams_per_address,
            max_runs: config.viewer_max_runs.max(1),
            max_frames: config.viewer_max_frames.max(1),
            max_response_bytes: config.viewer_max_response_kb.saturating_mul(1024),
            requests_per_sec: config.viewer_requests_per_sec,
            send_timeout: config.viewer_send_timeout,
            exempt_loopback: config.exempt_loopback,
            token,
            aoi_radius: config.aoi_radius,
            http: HttpLimits {
                name: "viewer",
                ..HttpLimits::game(config)
            },
        }
    }
}

/// Where the runs are, their indexes, and the runs open for re-simulation.
pub struct Library {
    /// `--replay-dir`; or, for `replay view`, the one run's files.
    source: Source,
    settings: Settings,
    guard: Arc<Guard>,
    indexes: Mutex<HashMap<String, Indexed>>,
    /// Open runs no request is using, the least recently used first.
    idle: Mutex<Vec<Cursor>>,
    /// A permit per open run.
    open: Arc<Semaphore>,
    /// A permit per response streaming (or index being built).
    streams: Arc<Semaphore>,
    /// The streams each address holds, for its share; only addresses holding one are kept.
    held: Arc<Mutex<HashMap<AddressKey, usize>>>,
    workers: Workers,
    uses: std::sync::atomic::AtomicU64,
}

struct Indexed {
    index: Arc<Mutex<Option<RunIndex>>>,
    used: u64,
}

enum Source {
    Dir(PathBuf),
    Files { id: String, files: Vec<PathBuf> },
}

/// Why a request gets no frames.
enum Refused {
    NotFound(String),
    RunsBusy,
    /// The run has no index yet, and the caller holds no [`Slot`] to build it in.
    Unindexed,
}

/// A place to stream a response or build an index: one of `--viewer-max-streams`, and one of
/// its address's share, both given back when it is dropped.
struct Slot {
    _stream: OwnedSemaphorePermit,
    _share: Option<Share>,
}

/// One of an address's `--viewer-max-streams-per-address`.
struct Share {
    held: Arc<Mutex<HashMap<AddressKey, usize>>>,
    key: AddressKey,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Library {
    pub fn dir(dir: PathBuf, settings: Settings, stats: Arc<Stats>) -> Self {
        Self::new(Source::Dir(dir), settings, stats)
    }

    /// One run's files (`replay view`), served under `id`.
    pub fn files(id: String, files: Vec<PathBuf>, settings: Settings, stats: Arc<Stats>) -> Self {
        Self::new(Source::Files { id, files }, settings, stats)
    }

    fn new(source: Source, settings: Settings, stats: Arc<Stats>) -> Self {
        Self {
            source,
            guard: Arc::new(Guard::new(
                settings.token.clone(),
                settings.requests_per_sec,
                settings.exempt_loopback,
                stats,
            )),
            indexes: Mutex::default(),
            idle: Mutex::default(),
            open: Arc::new(Semaphore::new(settings.max_runs)),
            streams: Arc::new(Semaphore::new(settings.max_streams)),
            held: Arc::default(),
            workers: Workers::new(settings.max_streams),
            uses: Default::default(),
            settings,
        }
    }

    fn ids(&self) -> Vec<String> {
        match &self.source {
            Source::Dir(dir) => run_ids(dir).unwrap_or_default(),
            Source::Files { id, .. } => vec![id.clone()],
        }
    }

    fn files_of(&self, id: &str) -> Option<Vec<PathBuf>> {
        // Ids come from URLs: only the shape the recorder writes is looked up.
        if !is_run_id(id) {
            return None;
        }
        match &self.source {
            Source::Dir(dir) => run_files(dir, id).ok().filter(|f| !f.is_empty()),
            Source::Files { id: only, files } => (only == id).then(|| files.clone()),
        }
    }

    /// A place for one more stream (or index build) for a client at `peer`: its address's
    /// share first, then the global cap; refused, the reason and status to answer with
    /// ([`Library::refuse`]).
    fn slot(&self, peer: IpAddr) -> Result<Slot, (&'static str, StatusCode)> {
        let per_address = self.settings.max_streams_per_address;
        let share = if per_address == 0 || exempt(peer, self.settings.exempt_loopback) {
            None
        } else {
            let key = AddressKey::of(peer);
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let n = held.entry(key).or_insert(0);
            if *n >= per_address {
                return Err(("streams_per_address", StatusCode::TOO_MANY_REQUESTS));
            }
            *n += 1;
            Some(Share {
                held: self.held.clone(),
                key,
            })
        };
        let Ok(stream) = self.streams.clone().try_acquire_owned() else {
            // The share taken above goes back as it drops.
            return Err(("busy", StatusCode::SERVICE_UNAVAILABLE));
        };
        Ok(Slot {
            _stream: stream,
            _share: share,
        })
    }

    /// Counts a refused [`Library::slot`] and says when to come back.
    fn refuse(&self, (reason, status): (&'static str, StatusCode)) -> Response {
        self.guard.reject(reason, status, Some(RETRY_MS))
    }

    /// Runs `f` on the run's index, built if needed and, with `refresh`, brought up to date
    /// with its files (only what was written since the last look is read). Building reads the
    /// whole run: only a caller that holds a [`Slot`] may (`may_build`); another gets
    /// [`Refused::Unindexed`]. Blocking.
    fn with_index<T>(
        &self,
        id: &str,
        refresh: bool,
        may_build: bool,
        f: impl FnOnce(&RunIndex) -> T,
    ) -> Result<T, Refused> {
        let files = self
            .files_of(id)
            .ok_or_else(|| Refused::NotFound("no such replay".into()))?;
        let used = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = {
            let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
            if !indexes.contains_key(id)
                && indexes.len() >= MAX_INDEXED_RUNS
                && let Some(oldest) = indexes
                    .iter()
                    .min_by_key(|(_, i)| i.used)
                    .map(|(k, _)| k.clone())
            {
                indexes.remove(&oldest);
            }
            let entry = indexes.entry(id.to_string()).or_insert_with(|| Indexed {
                index: Arc::default(),
                used,
            });
            entry.used = used;
            entry.index.clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(index) if refresh => index.refresh(&files).map_err(Refused::NotFound)?,
            Some(_) => {}
            None if may_build => {
                *slot = Some(RunIndex::build(&files).map_err(Refused::NotFound)?);
            }
            None => return Err(Refused::Unindexed),
        }
        slot.as_ref()
            .map(f)
            .ok_or_else(|| Refused::NotFound("no index".into()))
    }

    /// An open run positioned for frames from `from`, holding the records through
    /// `from + count - 1`: one kept from an earlier request if it can step there, else the
    /// run opened at the keyframe before `from`. The caller holds a [`Slot`] (the index may
    /// be built in it). Blocking.
    fn cursor(&self, id: &str, from: u32, count: u32) -> Result<(Cursor, u32), Refused> {
        let until = from.saturating_add(count - 1);
        let (entry, last_tick, paths, header) = self.with_index(id, true, true, |ix| {
            (
                ix.entry_for(from),
                ix.last_tick(),
                ix.paths(),
                ix.header.clone(),
            )
        })?;
        let entry = entry.ok_or_else(|| Refused::NotFound("no keyframe to start from".into()))?;
        let kept = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter().position(|c| c.id == id).map(|i| idle.remove(i))
        };
        let reusable = |c: &Cursor| {
            let at = c.replayer.tick();
            at < from
                && self
                    .with_index(id, false, true, |ix| {
                        !ix.keyframe_between(at, from) && at >= entry.tick
                    })
                    .unwrap_or(false)
        };
        // The run opened at the keyframe before `from`, holding the records through `until`.
        let fresh = || -> Result<(Cursor, u32), Refused> {
            let permit = self.open_slot().ok_or(Refused::RunsBusy)?;
            let window = self
                .with_index(id, false, true, |ix| {
                    ix.read(
                        Position {
                            file: entry.file,
                            offset: entry.offset,
                        },
                        until,
                        MAX_WINDOW_RECORDS,
                    )
                })?
                .map_err(Refused::NotFound)?;
            let mut header = header.clone();
            // Records that begin at a keyframe cannot start from a fresh world.
            header.first_tick = entry.tick + 1;
            let replayer =
                Replayer::from_records(&paths[entry.file..], header, window.records, true)
                    .map_err(|e| Refused::NotFound(e.to_string()))?;
            Ok((
                Cursor {
                    id: id.to_string(),
                    replayer,
                    next: window.next,
                    through: window.through,
                    _open: permit,
                },
                last_tick,
            ))
        };
        let mut cursor = match kept {
            Some(c) if reusable(&c) => c,
            other => {
                // A kept cursor that would have to go back gives its place to a fresh one.
                drop(other);
                return fresh();
            }
        };
        if cursor.through < until {
            let window = self
                .with_index(id, false, true, |ix| {
                    ix.read(cursor.next, until, MAX_WINDOW_RECORDS)
                })?
                .map_err(Refused::NotFound)?;
            if !window.records.is_empty() {
                cursor.through = cursor.through.max(window.through);
            }
            cursor.next = window.next;
            cursor.replayer.extend(window.records);
        }
        if cursor.through < until.min(last_tick) {
            // A kept run that could not be carried to the ticks asked for would answer with
            // fewer frames than a fresh one (none, when it stopped before `from`): it gives
            // its place to a fresh one.
            drop(cursor);
            return fresh();
        }
        Ok((cursor, last_tick))
    }

    /// A place for one more open run: a free one, or the least recently used idle run's.
    fn open_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.open.clone().try_acquire_owned() {
                return Some(permit);
            }
            let oldest = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                (!idle.is_empty()).then(|| idle.remove(0))
            };
            // Every open run is in use.
            drop(oldest?);
        }
    }

    /// Keeps an open run for the next request.
    fn put_back(&self, cursor: Cursor) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cursor);
    }
}

/// Serves the viewer on `listener` until `shutdown` fires (`replay view`, and the server's
/// `--viewer-bind`), through the HTTP side's accept loop and its bounds.
pub async fn serve(
    library: Arc<Library>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let limits = library.settings.http.clone();
    let stats = library.guard.stats.clone();
    crate::http::serve::serve(listener, router(library), limits, stats, shutdown).await
}

/// Whether `id` has the shape the recorder gives runs: `arena-<digits>`.
fn is_run_id(id: &str) -> bool {
    id.strip_prefix("arena-")
        .is_some_and(|ms| !ms.is_empty() && ms.chars().all(|c| c.is_ascii_digit()))
}

/// The run id of a replay file's name (`arena-<ms>-<n>.replay`), if it has that shape.
pub fn id_of(path: &std::path::Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let (id, _) = stem.rsplit_once('-')?;
    is_run_id(id).then(|| id.to_string())
}

/// The viewer's routes, behind its token and rate checks (which need the peer's address as
/// `ConnectInfo<SocketAddr>`, as [`serve`] gives it).
pub fn router(library: Arc<Library>) -> Router {
    let guard = library.guard.clone();
    let api = Router::new()
        .route("/replays", get(list))
        .route("/api/replays", get(list_json))
        .route("/api/replays/{id}/meta", get(meta))
        .route("/api/replays/{id}/frames", get(frames))
        .with_state(library)
        .layer(middleware::from_fn_with_state(guard, guard::admit));
    // The page holds no data: it is what a browser opens with the token in its fragment.
    Router::new().route("/replays/{id}", get(page)).merge(api)
}

async fn list(State(lib): State<Arc<Library>>) -> Html<String> {
    Html(list_page(&lib.ids()))
}

/// The list of runs as a page. Run ids come from file names; whatever the library lets
/// through, the page prints them escaped, as text and in the link.
fn list_page(ids: &[String]) -> String {
    let items: String = ids
        .iter()
        .map(|id| {
            let id = html_escape(id);
            format!("<li><a href=\"/replays/{id}\">{id}</a></li>")
        })
        .collect();
    format!(
        "<!doctype html><meta charset=utf-8><title>Arena replays</title>\
         <h1>Arena replays</h1><ul>{items}</ul>"
    )
}

/// `s` as HTML text or a quoted attribute value.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn list_json(State(lib): State<Arc<Library>>) -> Json<Value> {
    Json(json!({ "replays": lib.ids() }))
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../viewer.html"),
    )
        .into_response()
}

fn not_found(why: String) -> Response {
    (StatusCode::NOT_FOUND, why).into_response()
}

async fn meta(
    State(lib): State<Arc<Library>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let look = |lib: Arc<Library>, id: String, slot: Option<Slot>| {
        tokio::task::spawn_blocking(move || {
            let result = lib.with_index(&id, true, slot.is_some(), |ix| meta_of(&lib, &id, ix));
            drop(slot);
            result
        })
    };
    let mut result = look(lib.clone(), id.clone(), None).await;
    if let Ok(Err(Refused::Unindexed)) = result {
        // The first look at this run reads all of it: in a stream's place, or not now.
        let slot = match lib.slot(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => return lib.refuse(refused),
        };
        result = look(lib, id, Some(slot)).await;
    }
    match result {
        Ok(Ok(v)) => ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response(),
        Ok(Err(Refused::NotFound(e))) => not_found(e),
        Ok(Err(Refused::RunsBusy | Refused::Unindexed)) => not_found("no index".into()),
        Err(e) => not_found(e.to_string()),
    }
}

/// What `meta` answers for run `id`.
fn meta_of(lib: &Library, id: &str, ix: &RunIndex) -> Value {
    let h = &ix.header;
    json!({
        "id": id,
        "tick_rate": h.tick_rate,
        "first_tick": ix.first_tick(),
        "last_tick": ix.last_tick(),
        "map": {
            "width": h.map.width,
            "height": h.map.height,
            "obstacles": h.map.obstacles.iter()
                .map(|o| [o.min.x, o.min.y, o.max.x, o.max.y])
                .collect::<Vec<_>>(),
        },
        "players": ix.players.iter().map(|(e, n)| json!([e, n])).collect::<Vec<_>>(),
        "aoi_radius": lib.settings.aoi_radius,
    })
}

#[derive(Debug, Deserialize)]
struct FramesQuery {
    from: u32,
    count: Option<u32>,
}

async fn frames(
    State(lib): State<Arc<Library>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Query<FramesQuery>,
) -> Response {
    let stream_slot = match lib.slot(peer.ip()) {
        Ok(slot) => slot,
        Err(refused) => return lib.refuse(refused),
    };
    let from = q.from.max(1);
    let count = q.count.unwrap_or(30).clamp(1, lib.settings.max_frames);
    let ask = Ask {
        from,
        count,
        last_tick: 0,
        max_bytes: lib.settings.max_response_bytes,
        send_timeout: lib.settings.send_timeout,
    };
    let (opened_tx, opened) = oneshot::channel();
    let rt = tokio::runtime::Handle::current();
    let job = {
        let lib = lib.clone();
        move || {
            let _slot = stream_slot;
            let (mut cursor, last_tick) = match lib.cursor(&id, from, count) {
                Ok(c) => c,
                Err(refused) => {
                    let _ = opened_tx.send(Err(refused));
                    return;
                }
            };
            let (tx, rx) = mpsc::channel(stream::CHUNKS);
            if opened_tx.send(Ok(rx)).is_ok() {
                let ask = Ask { last_tick, ..ask };
                match stream::run(&rt, &mut cursor, &ask, &tx) {
                    Ok(()) | Err(Stop::Gone) => {}
                    Err(Stop::Stalled) => lib.guard.stats.metrics.viewer_rejected("send_timeout"),
                }
            }
            lib.put_back(cursor);
        }
    };
    if !lib.workers.run(job) {
        return lib
            .guard
            .reject("busy", StatusCode::SERVICE_UNAVAILABLE, Some(RETRY_MS));
    }
    let rx = match opened.await {
        Ok(Ok(rx)) => rx,
        Ok(Err(Refused::NotFound(why))) => return not_found(why),
        Ok(Err(Refused::Unindexed)) => return not_found("no index".into()),
        Ok(Err(Refused::RunsBusy)) => {
            return lib
                .guard
                .reject("runs_open", StatusCode::SERVICE_UNAVAILABLE, Some(RETRY_MS));
        }
        Err(_) => return not_found("the re-simulation failed".into()),
    };
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(Chunks(rx)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_prints_run_ids_escaped_in_text_and_links() {
        let page = list_page(&["arena-1".into(), "<b x=\"'&'\">".into()]);
        assert!(page.contains(r#"<li><a href="/replays/arena-1">arena-1</a></li>"#));
        let hostile = "&lt;b x=&quot;&#39;&amp;&#39;&quot;&gt;";
        assert!(
            page.contains(&format!(r#"<a href="/replays/{hostile}">{hostile}</a>"#)),
            "{page}"
        );
        assert!(!page.contains("<b "), "{page}");
    }
}
