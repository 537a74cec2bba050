//! Replication: what each client is sent at the end of each tick.
//!
//! Two modes (`--replication`):
//! - `delta` (default): per client, a delta snapshot against the newest view it acknowledged,
//!   limited to its area of interest and its byte budget, chosen by priority. The decisions
//!   live in [`replicator::ClientReplicator`] (sans-IO); the quantized [`frame::WorldFrame`] and
//!   the interest [`grid::Grid`] are built once per tick and shared by every client.
//! - `full`: every client gets every entity every tick, split into datagrams of the path's
//!   size. Kept as the baseline that benchmarks compare against.
//!
//! Replication keeps what it knows of each client itself, in a [`Replica`] component on the
//! client's player entity: [`follow_links`] gives an entity a fresh one whenever the game makes
//! or replaces its link (a join, a resume: the first snapshot is a full one) and takes it away
//! when the link is dropped (a detach; a leave despawns the entity). [`replicate`] then queries
//! the replicas directly, as cheaply per client as when the state sat in the game's link.

pub mod frame;
pub mod grid;
pub mod post;
pub mod replicator;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arena_shared::protocol::codec::encode_snapshot_parts;
use arena_shared::protocol::{EntityState, InputStatus};
use arena_shared::sim;
use bevy_ecs::prelude::*;
use tokio::sync::broadcast;
use tracing::warn;

use crate::game::combat::Dead;
use crate::game::components::{
    Clients, InputBuffer, Kind, LinkChanges, Motion, NetId, Player, StatsRes, Tick,
};
use crate::outbox::{Outbox, SnapshotDatagrams};
use crate::stats::Stats;
use frame::WorldFrame;
use grid::Grid;
use replicator::RepSettings;

/// How snapshots are built (`--replication`; the type lives with the other settings).
pub use crate::config::ReplicationMode as Mode;

/// A thread that builds snapshots builds at least this many clients' (a tick with fewer than
/// twice as many clients builds them on the simulation thread alone): starting a helper costs
/// about what building a few snapshots does.
pub const MIN_CLIENTS_PER_THREAD: usize = 8;

/// Builders beyond one per CPU when `--replication-threads` is 0. The builders are the tick's
/// critical path, and while they build, the runtime's workers (one per CPU) receive the
/// clients' packets on the same cores: the scheduler shares a core by thread, so one builder
/// more than the CPUs gives the phase a larger share while both want the cores, and costs a
/// helper's start (~50 us of CPU) a tick. On two CPUs with 1,000 bots on the same cores, the
/// phase's wall fell from ~7.0 to ~5.6-6.1 us a client and the tick's p99 from ~16 to ~11 ms;
/// with nothing else running it reads ~1.02x (BENCHMARKS.md, "one builder more than the
/// CPUs"). The chunks a builder takes are small, so a builder the scheduler leaves waiting
/// holds back no more than its chunk.
pub const EXTRA_BUILDERS: usize = 1;

/// The builders `--replication-threads` asks for: `threads`, or for 0 one per CPU of `cpus`
/// plus [`EXTRA_BUILDERS`]; at least 1 and at most
/// [`crate::config::MAX_REPLICATION_THREADS`].
fn builder_threads(threads: usize, cpus: usize) -> usize {
    match threads {
        0 => cpus + EXTRA_BUILDERS,
        n => n,
    }
    .clamp(1, crate::config::MAX_REPLICATION_THREADS)
}

/// Replication's state kept between ticks.
#[derive(Resource)]
pub struct Replicator {
    pub mode: Mode,
    pub settings: RepSettings,
    pub world_size: f32,
    pub frame: WorldFrame,
    pub grid: Grid,
    /// Working memory for building snapshots, one per thread that builds them (the
    /// simulation thread's first, then its helpers'): clients are split into as many
    /// contiguous chunks. See [`build_all`].
    scratch: Vec<replicator::Scratch>,
    /// How helper threads start, and whether one could not.
    helpers: Helpers,
    /// Full mode: the encodings of this tick, by maximum datagram size.
    encoded: Vec<(usize, SnapshotDatagrams)>,
    full_state: Vec<EntityState>,
    /// Where each tick's frame is published when someone listens (tests, tools).
    tap: Option<broadcast::Sender<Arc<WorldFrame>>>,
    /// Where the tick's snapshots go once the tick is done ([`post_snapshots`]); without
    /// one (tests, re-simulation) each is delivered by the simulation thread at the end of
    /// [`replicate`].
    post: Option<post::SnapshotPost>,
    /// This tick's snapshots, built and not yet posted.
    outgoing: post::Batch,
}

impl Replicator {
    /// `threads`: threads building snapshots each tick, the simulation thread included: 0 for
    /// one per CPU and [`EXTRA_BUILDERS`] more, 1 for the simulation thread alone; at most
    /// [`crate::config::MAX_REPLICATION_THREADS`].
    pub fn new(
        mode: Mode,
        settings: RepSettings,
        world_size: f32,
        threads: usize,
        tap: Option<broadcast::Sender<Arc<WorldFrame>>>,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = builder_threads(threads, cpus);
        Self {
            mode,
            settings,
            world_size,
            frame: WorldFrame::default(),
            grid: Grid::default(),
            scratch: (0..threads)
                .map(|_| replicator::Scratch::default())
                .collect(),
            helpers: Helpers::default(),
            encoded: Vec::new(),
            full_state: Vec::new(),
            tap,
            post: None,
            outgoing: Vec::new(),
        }
    }

    /// Hands each tick's snapshots, once the tick is done, to a task on `runtime` that gives
    /// them to their connections ([`post`]).
    pub fn post_on(&mut self, runtime: &tokio::runtime::Handle, stats: Arc<Stats>) {
        self.post = Some(post::SnapshotPost::start(runtime, stats));
    }
}

/// How [`build_all`]'s helper threads start, and whether one could not.
#[derive(Debug, Default)]
struct Helpers {
    /// Their stack size; `None`: the platform's default. Only the tests set it, to one no
    /// thread can have, so that the operating system refuses each helper as it would when out
    /// of threads or memory ([`Replicator::set_helper_stack`]).
    stack: Option<usize>,
    /// A helper could not be started (the other threads built its chunk): said once.
    failed: bool,
}

impl Replicator {
    /// Starts each helper thread with a stack of `bytes` (tests: see [`Helpers::stack`]).
    #[cfg(test)]
    pub(crate) fn set_helper_stack(&mut self, bytes: usize) {
        self.helpers.stack = Some(bytes);
    }

    /// Whether a helper thread could not be started since the server began.
    #[cfg(test)]
    pub(crate) fn helper_failed(&self) -> bool {
        self.helpers.failed
    }
}

/// One connected client's replication: where its snapshots go and the views it was sent
/// (baselines, acknowledgements, interest). On the player entity for as long as the game links
/// the entity to a session; a new link (a resume) gets a new one.
#[derive(Component)]
pub struct Replica {
    outbox: Arc<Outbox>,
    replicator: replicator::ClientReplicator,
    /// This tick's snapshot, from its build to the end of [`replicate`].
    built: Option<Vec<u8>>,
}

/// Gives a fresh [`Replica`] to each player whose link was made or replaced this tick and takes
/// it from one whose link was dropped ([`LinkChanges`]). Runs before [`replicate`], in the same
/// phase; on a tick without joins, detaches or leaves it does nothing.
pub fn follow_links(
    mut commands: Commands,
    changes: Res<LinkChanges>,
    clients: Res<Clients>,
    players: Query<&Player>,
) {
    for &entity in &changes.0 {
        // A leave despawned it: nothing to follow.
        let Ok(player) = players.get(entity) else {
            continue;
        };
        match clients.0.get(&player.client_id) {
            Some(link) if link.entity == entity => {
                commands.entity(entity).insert(Replica {
                    outbox: link.outbox.clone(),
                    replicator: Default::default(),
                    built: None,
                });
            }
            _ => {
                commands.entity(entity).remove::<Replica>();
            }
        }
    }
}

/// What building snapshots produced, summed for the stats.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    bytes: usize,
    full: usize,
    between: usize,
    sent: usize,
    in_view: usize,
    deferred: usize,
    passes: usize,
    /// Snapshots dropped from full outboxes (full mode: the delta mode's are counted where
    /// they are delivered, [`post::deliver`]).
    dropped: usize,
    view_bytes: usize,
    views_whole: usize,
    /// CPU time the threads spent building, microseconds.
    cpu_us: u64,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            bytes: self.bytes + o.bytes,
            full: self.full + o.full,
            between: self.between + o.between,
            sent: self.sent + o.sent,
            in_view: self.in_view + o.in_view,
            deferred: self.deferred + o.deferred,
            passes: self.passes + o.passes,
            dropped: self.dropped + o.dropped,
            view_bytes: self.view_bytes + o.view_bytes,
            views_whole: self.views_whole + o.views_whole,
            cpu_us: self.cpu_us + o.cpu_us,
        }
    }
}

/// One client's snapshot for this tick, built and kept on its replica for [`replicate`] to
/// deliver or post.
fn build_one(
    replica: &mut Replica,
    net_id: u32,
    input: InputStatus,
    scratch: &mut replicator::Scratch,
    frame: &WorldFrame,
    grid: &Grid,
    settings: &RepSettings,
) -> Tally {
    if let Some(acked) = replica.outbox.acked() {
        replica.replicator.on_ack(acked);
    }
    // The answer to the client's newest snapshot ping, timed as late as the build allows (the
    // snapshot leaves once the tick's last one is built: `post`).
    let input = InputStatus {
        pong: replica.outbox.take_pong(),
        ..input
    };
    let built = replica.replicator.build(
        scratch,
        frame,
        grid,
        net_id,
        settings,
        replica.outbox.max_datagram(),
        input,
    );
    let bytes = built.bytes.len();
    replica.built = Some(built.bytes);
    Tally {
        bytes,
        full: usize::from(built.full),
        between: usize::from(!built.ranked),
        sent: built.sent,
        in_view: built.in_view,
        deferred: built.deferred,
        passes: built.encode_passes,
        dropped: 0,
        view_bytes: replica.replicator.view_bytes() + replica.replicator.interest_bytes(),
        views_whole: replica.replicator.whole_views(),
        cpu_us: 0,
    }
}

/// What every client's build reads: this tick's frame and grid, and the settings.
#[derive(Clone, Copy)]
struct Shared<'a> {
    frame: &'a WorldFrame,
    grid: &'a Grid,
    settings: &'a RepSettings,
}

/// A client to build for: its replication, its entity's id and its input's status.
type Work<'a> = (&'a mut Replica, u32, InputStatus);

/// Each building thread's share of a tick's clients is cut into this many chunks, taken in
/// turn by whichever thread is free: a helper that starts late (a new thread waits for a
/// CPU: ~0.9 ms at the median at 400 bots on two cores, 3.4 at the 90th percentile) leaves
/// the chunks it has not taken to the others instead of finishing its half that much later.
pub const CHUNKS_PER_THREAD: usize = 8;

/// Builds every client's snapshot: in contiguous chunks of clients (they are independent, so
/// the split changes nothing in what each is sent), each thread with its own scratch. The
/// calling thread (the simulation's) builds chunks itself while helper threads, started for
/// this tick inside a scope and ended with it, build the others; each thread takes the next
/// chunk nobody has taken, so a helper that starts late, or not at all, leaves its chunks to
/// the others. Each thread gets at least [`MIN_CLIENTS_PER_THREAD`] clients' worth: fewer
/// clients, fewer helpers.
///
/// Helpers are started each tick rather than kept in a pool: a pool's workers took the tick's
/// work from a simulation thread that then waited idle, and yielded in a spin before they
/// slept; in the combat bench that was the phase's tail (BENCHMARKS.md, "Issue 21: the
/// simulation thread builds too"). A start and join costs ~50 us of CPU a tick on the 2-core
/// VM (0.15% of a core at 30 Hz).
fn build_all(
    work: &mut [Work<'_>],
    scratch: &mut [replicator::Scratch],
    shared: Shared<'_>,
    start: &mut Helpers,
) -> Tally {
    let threads = builders(work.len(), scratch.len());
    let chunk = work.len().div_ceil(threads * CHUNKS_PER_THREAD).max(1);
    let chunks: Vec<std::sync::Mutex<(&mut [Work], Tally)>> = work
        .chunks_mut(chunk)
        .map(|c| std::sync::Mutex::new((c, Tally::default())))
        .collect();
    let next = AtomicUsize::new(0);
    // Takes chunks until none is left, building with `scratch`; returns the CPU time it spent.
    let take = |scratch: &mut replicator::Scratch| {
        let cpu = thread_cpu_us();
        while let Some(c) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let (part, tally) = &mut *c;
            *tally = part
                .iter_mut()
                .fold(Tally::default(), |t, (replica, id, input)| {
                    t + build_one(
                        replica,
                        *id,
                        *input,
                        scratch,
                        shared.frame,
                        shared.grid,
                        shared.settings,
                    )
                });
        }
        thread_cpu_us().saturating_sub(cpu)
    };
    let take = &take;
    let (own_scratch, helper_scratch) = scratch[..threads]
        .split_first_mut()
        .expect("a replicator has a scratch for the simulation thread");
    let cpu_us = std::thread::scope(|scope| {
        let mut helpers = Vec::with_capacity(helper_scratch.len());
        for (i, scratch) in helper_scratch.iter_mut().enumerate() {
            let mut builder = std::thread::Builder::new().name(format!("arena-rep-{}", i + 1));
            if let Some(bytes) = start.stack {
                builder = builder.stack_size(bytes);
            }
            let helper = move || take(scratch);
            match builder.spawn_scoped(scope, helper) {
                Ok(h) => helpers.push(h),
                Err(e) => {
                    if !std::mem::replace(&mut start.failed, true) {
                        warn!(error = %e, "a replication helper thread could not start; the threads already building take its clients");
                    }
                    break;
                }
            }
        }
        let own = take(own_scratch);
        helpers.into_iter().fold(own, |cpu, h| {
            cpu + h
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    });
    let tally = chunks
        .into_iter()
        .map(|c| c.into_inner().unwrap_or_else(|e| e.into_inner()).1)
        .fold(Tally::default(), |a, b| a + b);
    Tally { cpu_us, ..tally }
}

/// How many threads build `clients` snapshots when `threads` may: each at least
/// [`MIN_CLIENTS_PER_THREAD`], and at least the simulation thread.
fn builders(clients: usize, threads: usize) -> usize {
    (clients / MIN_CLIENTS_PER_THREAD).clamp(1, threads.max(1))
}

/// The calling thread's CPU time so far, microseconds (0 where it cannot be read).
fn thread_cpu_us() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid `timespec` for the call to write, and the clock is one every
        // Unix the server builds for knows.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        }
    }
    0
}

/// Settings derived from the config.
pub fn settings(config: &crate::Config) -> RepSettings {
    let per_tick = f64::from(config.client_kbps) * 1000.0 / 8.0 / f64::from(config.tick_rate);
    RepSettings {
        tick_rate: config.tick_rate,
        aoi_radius: config.aoi_radius,
        aoi_hysteresis: config.aoi_hysteresis,
        budget_bytes: per_tick as usize,
        max_view: config.max_view.max(1),
        max_speed: sim::PLAYER.max_speed,
        rerank_ticks: config.rerank_ticks.max(1),
    }
}

/// Builds this tick's snapshot for every client. Full mode queues each in its client's
/// outbox; delta mode keeps them for [`post_snapshots`], or, with no post, delivers each
/// here.
pub fn replicate(
    bodies: Query<(&NetId, &Kind, &Motion), Without<Dead>>,
    mut replicas: Query<(&NetId, &mut Replica, Option<&InputBuffer>)>,
    clients: Res<Clients>,
    tick: Res<Tick>,
    stats: Res<StatsRes>,
    mut rep: ResMut<Replicator>,
) {
    if clients.0.is_empty() {
        // Nobody to build for, and nothing held: the gauges would otherwise keep the last
        // client's figures for as long as the server stays empty.
        let s = &stats.0;
        s.replication_view_bytes.store(0, Ordering::Relaxed);
        s.replication_views_whole.store(0, Ordering::Relaxed);
        return;
    }
    let started = Instant::now();
    let rep = &mut *rep;
    let mode = rep.mode;
    let tally = match mode {
        Mode::Full => {
            let cpu = thread_cpu_us();
            rep.full_state.clear();
            rep.full_state
                .extend(bodies.iter().map(|(id, kind, m)| EntityState {
                    id: id.0,
                    kind: kind.0,
                    pos: m.0.pos,
                    vel: m.0.vel,
                }));
            rep.full_state.sort_unstable_by_key(|e| e.id);
            rep.encoded.clear();
            let mut tally = Tally::default();
            for link in clients.0.values() {
                let max = link.outbox.max_datagram();
                let datagrams = match rep.encoded.iter().find(|(size, _)| *size == max) {
                    Some((_, d)) => d.clone(),
                    None => {
                        let d: SnapshotDatagrams =
                            Arc::new(encode_snapshot_parts(tick.0, &rep.full_state, max));
                        rep.encoded.push((max, d.clone()));
                        d
                    }
                };
                tally.bytes += datagrams.iter().map(Vec::len).sum::<usize>();
                tally.full += 1;
                tally.sent += rep.full_state.len();
                tally.dropped += link.outbox.push(datagrams);
            }
            tally.cpu_us = thread_cpu_us().saturating_sub(cpu);
            tally
        }
        Mode::Delta => {
            rep.frame.rebuild(
                tick.0,
                rep.settings.tick_rate,
                bodies
                    .iter()
                    .map(|(id, kind, m)| (id.0, kind.0, m.0.pos, m.0.vel)),
            );
            rep.grid
                .rebuild(&rep.frame, rep.world_size, rep.settings.aoi_radius / 2.0);
            if let Some(tap) = rep.tap.as_ref().filter(|t| t.receiver_count() > 0) {
                let _ = tap.send(Arc::new(rep.frame.clone()));
            }
            let mut work: Vec<(&mut Replica, u32, InputStatus)> = replicas
                .iter_mut()
                .map(|(net_id, replica, buffer)| {
                    let input = buffer.map_or(InputStatus::default(), |b| InputStatus {
                        last_seq: b.last_seq,
                        late: b.late,
                        lead: b.lead,
                        pong: None,
                    });
                    (replica.into_inner(), net_id.0, input)
                })
                .collect();
            let Replicator {
                scratch,
                frame,
                grid,
                settings,
                helpers,
                ..
            } = &mut *rep;
            let tally = build_all(
                &mut work,
                scratch,
                Shared {
                    frame,
                    grid,
                    settings,
                },
                helpers,
            );
            rep.outgoing.clear();
            rep.outgoing
                .extend(work.iter_mut().filter_map(|(replica, _, _)| {
                    replica.built.take().map(|b| (replica.outbox.clone(), b))
                }));
            if rep.post.is_none() {
                post::deliver(std::mem::take(&mut rep.outgoing), &stats.0);
            }
            tally
        }
    };
    let s = &stats.0;
    Stats::add(&s.snapshots_dropped_slow_consumer, tally.dropped as u64);
    Stats::add(&s.snapshots_built, clients.0.len() as u64);
    Stats::add(&s.snapshots_full, tally.full as u64);
    Stats::add(&s.snapshots_between_rankings, tally.between as u64);
    Stats::add(&s.snapshot_bytes, tally.bytes as u64);
    Stats::add(&s.entities_sent, tally.sent as u64);
    Stats::add(&s.entities_in_view, tally.in_view as u64);
    Stats::add(&s.entities_deferred, tally.deferred as u64);
    Stats::add(&s.encode_passes, tally.passes as u64);
    Stats::add(&s.replication_us, started.elapsed().as_micros() as u64);
    Stats::add(&s.replication_cpu_us, tally.cpu_us);
    if mode == Mode::Delta {
        s.replication_view_bytes
            .store(tally.view_bytes as u64, Ordering::Relaxed);
        s.replication_views_whole
            .store(tally.views_whole as u64, Ordering::Relaxed);
    }
}

/// Hands the snapshots [`replicate`] built to the network side ([`post`]). The simulation
/// calls it once the tick's phases are done (`tick::Simulation::tick`): the task it wakes
/// then takes a core from nothing the tick still has to do.
pub fn post_snapshots(world: &mut World) {
    let Some(mut rep) = world.get_resource_mut::<Replicator>() else {
        return;
    };
    let rep = &mut *rep;
    let Some(post) = &rep.post else {
        return;
    };
    if rep.outgoing.is_empty() {
        return;
    }
    let superseded = post.post(std::mem::take(&mut rep.outgoing));
    if superseded > 0
        && let Some(stats) = world.get_resource::<StatsRes>()
    {
        Stats::add(&stats.0.snapshots_superseded_unsent, superseded as u64);
    }
}
