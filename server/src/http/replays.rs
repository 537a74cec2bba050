//! The replay viewer's side of HTTP: `/replays` lists the recorded runs, `/replays/ID` is the
//! viewer page, and a small JSON API feeds it.
//!
//! - `GET /api/replays/ID/meta`: tick rate, ticks, map, players' names, the AOI radius.
//! - `GET /api/replays/ID/frames?from=T&count=N`: for each tick from T, every living entity
//!   (`[id, kind, x, y, health]`, kind 0 player, 1 NPC, 2 projectile), the rifle shots fired
//!   (`[shooter, aim]`) and the hits and kills (`["hit"|"kill", a, b]`).
//!
//! Frames come from re-simulating the run (`replay::Replayer`) through the server's own
//! systems: one cursor per run is kept, so playing forward costs one tick of simulation per
//! tick shown; a seek restores the nearest keyframe before the tick asked for and simulates
//! forward from there (at most `--replay-keyframe-ticks` ticks). A run still being recorded
//! is followed: a request past the known end reads the files again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arena_shared::combat::RIFLE;
use arena_shared::protocol::{EntityKind, GameEvent};
use arena_shared::replay::Record;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bevy_ecs::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::game::combat::{Arsenal, Dead, Health, Trigger};
use crate::game::components::{Kind, Motion, NetId};
use crate::replay::{Replayer, run_files, run_ids};

/// Most frames one request returns.
pub const MAX_FRAMES: u32 = 300;
/// Runs kept open for re-simulation at once (each holds a world).
const MAX_CURSORS: usize = 4;

/// Where the runs are, and the re-simulations in progress.
pub struct Library {
    /// `--replay-dir`; or, for `replay view`, the one run's files.
    source: Source,
    aoi_radius: f32,
    cursors: Mutex<HashMap<String, Replayer>>,
}

enum Source {
    Dir(PathBuf),
    Files { id: String, files: Vec<PathBuf> },
}

impl Library {
    pub fn dir(dir: PathBuf, aoi_radius: f32) -> Self {
        Self {
            source: Source::Dir(dir),
            aoi_radius,
            cursors: Mutex::default(),
        }
    }

    /// One run's files (`replay view`), served under `id`.
    pub fn files(id: String, files: Vec<PathBuf>, aoi_radius: f32) -> Self {
        Self {
            source: Source::Files { id, files },
            aoi_radius,
            cursors: Mutex::default(),
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

    /// Runs `f` on the run's cursor, opened as needed.
    fn with_cursor<T>(&self, id: &str, f: impl FnOnce(&mut Replayer) -> T) -> Result<T, String> {
        let files = self.files_of(id).ok_or("no such replay")?;
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        if !cursors.contains_key(id) {
            if cursors.len() >= MAX_CURSORS
                && let Some(k) = cursors.keys().find(|k| k.as_str() != id).cloned()
            {
                cursors.remove(&k);
            }
            cursors.insert(
                id.to_string(),
                Replayer::open(&files).map_err(|e| e.to_string())?,
            );
        }
        let replayer = cursors.get_mut(id).ok_or("no cursor")?;
        Ok(f(replayer))
    }
}

/// Serves just the viewer (`arena-server replay view`) on `listener` until the process ends.
pub async fn serve_viewer(
    library: Arc<Library>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    axum::serve(listener, router(library)).await
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

pub fn router(library: Arc<Library>) -> Router {
    Router::new()
        .route("/replays", get(list))
        .route("/replays/{id}", get(page))
        .route("/api/replays", get(list_json))
        .route("/api/replays/{id}/meta", get(meta))
        .route("/api/replays/{id}/frames", get(frames))
        .with_state(library)
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
        include_str!("viewer.html"),
    )
        .into_response()
}

fn not_found(why: String) -> Response {
    (StatusCode::NOT_FOUND, why).into_response()
}

async fn meta(State(lib): State<Arc<Library>>, Path(id): Path<String>) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        lib.with_cursor(&id, |r| {
            let _ = r.refresh();
            let h = &r.header;
            let players: Vec<Value> = r
                .records()
                .iter()
                .filter_map(|rec| match rec {
                    Record::Join { entity, name, .. } => Some(json!([entity, name])),
                    _ => None,
                })
                .collect();
            json!({
                "id": id,
                "tick_rate": h.tick_rate,
                "first_tick": r.first_tick(),
                "last_tick": r.last_tick(),
                "map": {
                    "width": h.map.width,
                    "height": h.map.height,
                    "obstacles": h.map.obstacles.iter()
                        .map(|o| [o.min.x, o.min.y, o.max.x, o.max.y])
                        .collect::<Vec<_>>(),
                },
                "players": players,
                "aoi_radius": lib.aoi_radius,
            })
        })
    })
    .await;
    match result {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => not_found(e),
        Err(e) => not_found(e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct FramesQuery {
    from: u32,
    count: Option<u32>,
}

async fn frames(
    State(lib): State<Arc<Library>>,
    Path(id): Path<String>,
    Query(q): Query<FramesQuery>,
) -> Response {
    let from = q.from.max(1);
    let count = q.count.unwrap_or(30).clamp(1, MAX_FRAMES);
    let result = tokio::task::spawn_blocking(move || {
        lib.with_cursor(&id, |r| -> Result<Value, String> {
            if from + count - 1 > r.last_tick() {
                r.refresh().map_err(|e| e.to_string())?;
            }
            let last = r.last_tick();
            r.seek(from).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            while r.tick() < last && out.len() < count as usize {
                let stepped = r.step().map_err(|e| e.to_string())?;
                out.push(frame(r, stepped.tick, &stepped.replayed));
            }
            Ok(json!({ "last_tick": last, "frames": out }))
        })
    })
    .await;
    match result {
        Ok(Ok(Ok(v))) => Json(v).into_response(),
        Ok(Ok(Err(e)) | Err(e)) => not_found(e),
        Err(e) => not_found(e.to_string()),
    }
}

/// One tick as the viewer draws it.
fn frame(r: &mut Replayer, tick: u32, replayed: &[Record]) -> Value {
    let world = r.world();
    let mut q = world.query_filtered::<(&NetId, &Kind, &Motion, Option<&Health>), Without<Dead>>();
    let mut entities: Vec<(u32, u8, f32, f32, i32)> = q
        .iter(world)
        .map(|(id, kind, m, hp)| {
            let k = match kind.0 {
                EntityKind::Player => 0,
                EntityKind::Npc => 1,
                EntityKind::Projectile => 2,
            };
            (id.0, k, m.0.pos.x, m.0.pos.y, hp.map_or(0, |h| h.0))
        })
        .collect();
    entities.sort_unstable_by_key(|e| e.0);
    let mut shooters = world.query_filtered::<(&NetId, &Trigger, &Arsenal), Without<Dead>>();
    // A rifle fired this tick has its next shot due one cooldown from now.
    let shots: Vec<Value> = shooters
        .iter(world)
        .filter(|(_, t, a)| t.rifle && a.rifle_ready == tick + RIFLE.cooldown_ticks)
        .map(|(id, t, _)| json!([id.0, t.aim.0]))
        .collect();
    let mut events: Vec<(&str, u32, u32)> = replayed
        .iter()
        .filter_map(|rec| match rec {
            Record::Event {
                event: GameEvent::Hit {
                    attacker, target, ..
                },
                ..
            } => Some(("hit", *attacker, *target)),
            Record::Event {
                event: GameEvent::Killed { killer, victim },
                ..
            } => Some(("kill", *killer, *victim)),
            _ => None,
        })
        .collect();
    // Each is recorded once per player told (attacker and target).
    events.sort_unstable();
    events.dedup();
    json!({
        "t": tick,
        "e": entities.iter().map(|e| json!([e.0, e.1, e.2, e.3, e.4])).collect::<Vec<_>>(),
        "s": shots,
        "ev": events.iter().map(|e| json!([e.0, e.1, e.2])).collect::<Vec<_>>(),
    })
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
