//! A `frames` response: re-simulated on a blocking thread one tick at a time, each frame
//! written to the body as JSON as soon as it is made, through a channel of a few chunks. A
//! client that does not read costs those chunks, then its response is abandoned after
//! `--viewer-send-timeout`; a client that leaves closes the channel, and the thread stops at
//! its next tick.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arena_shared::combat::RIFLE;
use arena_shared::protocol::{EntityKind, GameEvent};
use arena_shared::replay::Record;
use axum::body::Bytes;
use bevy_ecs::prelude::*;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::index::Position;
use crate::game::combat::{Arsenal, Dead, Health, Trigger};
use crate::game::components::{Kind, Motion, NetId};
use crate::replay::Replayer;

/// The name of the threads that re-simulate for responses.
pub const THREAD_NAME: &str = "arena-viewer";
/// Chunks (a frame each) waiting for the client.
pub const CHUNKS: usize = 4;
/// While the re-simulation steps towards the first frame, a space (JSON allows it) goes out
/// this often: writing is how the server learns that a client has left.
const PING_EVERY: Duration = Duration::from_millis(100);

/// The threads that open runs and stream their frames: as many as responses may stream at
/// once, so a job never waits for one, and made once, so the worlds they build reuse the same
/// memory (a thread per response would leave the allocator a heap per thread).
pub struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
    threads: usize,
}

type Job = Box<dyn FnOnce() + Send>;

impl Workers {
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let spawned = (0..threads)
            .filter(|_| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(THREAD_NAME.into())
                    .spawn(move || {
                        loop {
                            let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            // The library is gone: so are its jobs.
                            let Ok(job) = job else { return };
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    })
                    .is_ok()
            })
            .count();
        Self {
            jobs,
            threads: spawned,
        }
    }

    /// Hands `job` to a worker; false if there is none to run it.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.threads > 0 && self.jobs.send(Box::new(job)).is_ok()
    }
}

/// A run open for re-simulation, with where its records were read up to.
pub struct Cursor {
    pub id: String,
    pub replayer: Replayer,
    /// Where the next read of the run's files goes on.
    pub next: Position,
    /// The last tick whose records the replayer holds.
    pub through: u32,
    /// Its place among the runs open at once, given back when it is dropped.
    pub(super) _open: OwnedSemaphorePermit,
}

/// The body of a streamed response: what the re-simulation thread sends.
pub struct Chunks(pub mpsc::Receiver<Bytes>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(Ok))
    }
}

/// What one request asks for and may send.
pub struct Ask {
    pub from: u32,
    pub count: u32,
    pub last_tick: u32,
    pub max_bytes: usize,
    pub send_timeout: Duration,
}

/// Why a stream ended before its last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The client went away (the body was dropped).
    Gone,
    /// The client read nothing for `--viewer-send-timeout`.
    Stalled,
}

/// Sends the frames `ask` wants from `cursor` down `tx`, as one JSON object:
/// `{"last_tick":L,"frames":[...]}`, with `"error"` after the frames if the re-simulation
/// could not go on. Runs on a blocking thread; `rt` is the runtime the body lives on.
pub fn run(
    rt: &tokio::runtime::Handle,
    cursor: &mut Cursor,
    ask: &Ask,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), Stop> {
    let send = |text: String| -> Result<(), Stop> {
        // The timer is made inside the runtime's context (block_on), which it needs.
        let sent = rt.block_on(async {
            tokio::time::timeout(ask.send_timeout, tx.send(Bytes::from(text))).await
        });
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Stalled),
        }
    };
    let r = &mut cursor.replayer;
    let last = cursor.through.min(ask.last_tick);
    let head = format!("{{\"last_tick\":{},\"frames\":[", ask.last_tick);
    let mut bytes = head.len();
    send(head)?;
    let mut error = None;
    let mut pinged = Instant::now();
    while r.tick() + 1 < ask.from && r.tick() < last {
        if tx.is_closed() {
            return Err(Stop::Gone);
        }
        if let Err(e) = r.step() {
            error = Some(e.to_string());
            break;
        }
        if pinged.elapsed() >= PING_EVERY {
            pinged = Instant::now();
            bytes += 1;
            send(" ".into())?;
        }
    }
    let (mut sent, mut last_len) = (0u32, 0usize);
    while error.is_none() && sent < ask.count && r.tick() < last {
        // The next frame is about as large as the last: stop before it would pass the cap.
        if sent > 0 && bytes + last_len > ask.max_bytes {
            break;
        }
        if tx.is_closed() {
            return Err(Stop::Gone);
        }
        let stepped = match r.step() {
            Ok(s) => s,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        };
        let mut text = String::with_capacity(last_len + 64);
        if sent > 0 {
            text.push(',');
        }
        frame(&mut text, r, stepped.tick, &stepped.replayed);
        last_len = text.len();
        bytes += text.len();
        sent += 1;
        send(text)?;
    }
    let tail = match error {
        Some(e) => format!("],\"error\":{}}}", serde_json::Value::String(e)),
        None => "]}".into(),
    };
    send(tail)
}

/// One tick as the viewer draws it: `{"t":T,"e":[[id,kind,x,y,hp],...],"s":[[id,aim],...],
/// "ev":[["hit"|"kill",a,b],...]}`, positions to a tenth of a unit.
fn frame(out: &mut String, r: &mut Replayer, tick: u32, replayed: &[Record]) {
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
    let shots: Vec<(u32, u16)> = shooters
        .iter(world)
        .filter(|(_, t, a)| t.rifle && a.rifle_ready == tick + RIFLE.cooldown_ticks)
        .map(|(id, t, _)| (id.0, t.aim.0))
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
    let _ = write!(out, "{{\"t\":{tick},\"e\":[");
    for (i, (id, k, x, y, hp)) in entities.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(out, "{comma}[{id},{k},{x:.1},{y:.1},{hp}]");
    }
    out.push_str("],\"s\":[");
    for (i, (id, aim)) in shots.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(out, "{comma}[{id},{aim}]");
    }
    out.push_str("],\"ev\":[");
    for (i, (what, a, b)) in events.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(out, "{comma}[\"{what}\",{a},{b}]");
    }
    out.push_str("]}");
}
