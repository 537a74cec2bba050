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
pub mod replicator;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arena_shared::protocol::codec::encode_snapshot_parts;
use arena_shared::protocol::{EntityState, InputStatus};
use arena_shared::sim;
use bevy_ecs::prelude::*;
use rayon::prelude::*;
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

/// Below this many clients, snapshots are built on the simulation thread: handing work to the
/// pool costs more than it saves.
pub const PARALLEL_MIN_CLIENTS: usize = 16;

/// Replication's state kept between ticks.
#[derive(Resource)]
pub struct Replicator {
    pub mode: Mode,
    pub settings: RepSettings,
    pub world_size: f32,
    pub frame: WorldFrame,
    pub grid: Grid,
    /// Threads building snapshots; `None` builds them on the simulation thread.
    pool: Option<rayon::ThreadPool>,
    /// Working memory for building snapshots, one per worker (clients are split into as many
    /// contiguous chunks).
    scratch: Vec<replicator::Scratch>,
    /// Full mode: the encodings of this tick, by maximum datagram size.
    encoded: Vec<(usize, SnapshotDatagrams)>,
    full_state: Vec<EntityState>,
    /// Where each tick's frame is published when someone listens (tests, tools).
    tap: Option<broadcast::Sender<Arc<WorldFrame>>>,
}

impl Replicator {
    /// `threads`: workers for building snapshots, 0 for one per CPU, 1 for none.
    pub fn new(
        mode: Mode,
        settings: RepSettings,
        world_size: f32,
        threads: usize,
        tap: Option<broadcast::Sender<Arc<WorldFrame>>>,
    ) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let pool = (threads > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("arena-rep-{i}"))
                    .build()
                    .map_err(|e| warn!(error = %e, "no replication threads; building on the simulation thread"))
                    .ok()
            })
            .flatten();
        let workers = pool
            .as_ref()
            .map_or(1, rayon::ThreadPool::current_num_threads);
        Self {
            mode,
            settings,
            world_size,
            frame: WorldFrame::default(),
            grid: Grid::default(),
            pool,
            scratch: (0..workers)
                .map(|_| replicator::Scratch::default())
                .collect(),
            encoded: Vec::new(),
            full_state: Vec::new(),
            tap,
        }
    }
}

/// One connected client's replication: where its snapshots go and the views it was sent
/// (baselines, acknowledgements, interest). On the player entity for as long as the game links
/// the entity to a session; a new link (a resume) gets a new one.
#[derive(Component)]
pub struct Replica {
    outbox: Arc<Outbox>,
    replicator: replicator::ClientReplicator,
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
    dropped: usize,
    /// Datagrams and bytes handed to the transport by the workers themselves.
    datagrams: usize,
    datagram_bytes: usize,
    view_bytes: usize,
    views_whole: usize,
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
            datagrams: self.datagrams + o.datagrams,
            datagram_bytes: self.datagram_bytes + o.datagram_bytes,
            view_bytes: self.view_bytes + o.view_bytes,
            views_whole: self.views_whole + o.views_whole,
        }
    }
}

/// One client's snapshot for this tick, built and queued in its outbox.
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
    let delivered = replica.outbox.deliver(built.bytes);
    Tally {
        bytes,
        full: usize::from(built.full),
        between: usize::from(!built.ranked),
        sent: built.sent,
        in_view: built.in_view,
        deferred: built.deferred,
        passes: built.encode_passes,
        dropped: delivered.dropped,
        datagrams: delivered.datagrams,
        datagram_bytes: delivered.bytes,
        view_bytes: replica.replicator.view_bytes() + replica.replicator.interest_bytes(),
        views_whole: replica.replicator.whole_views(),
    }
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

/// Builds this tick's snapshot for every client and queues it in the client's outbox.
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
                    });
                    (replica.into_inner(), net_id.0, input)
                })
                .collect();
            let Replicator {
                pool,
                scratch,
                frame,
                grid,
                settings,
                ..
            } = rep;
            let (frame, grid, settings) = (&*frame, &*grid, &*settings);
            match pool {
                Some(pool) if work.len() >= PARALLEL_MIN_CLIENTS => {
                    // Contiguous chunks, one per worker and its scratch: clients are
                    // independent, so the split changes nothing in what each is sent.
                    let chunk = work.len().div_ceil(scratch.len());
                    pool.install(|| {
                        work.par_chunks_mut(chunk)
                            .zip(scratch.par_iter_mut())
                            .map(|(part, scratch)| {
                                part.iter_mut().fold(
                                    Tally::default(),
                                    |t, (replica, net_id, input)| {
                                        t + build_one(
                                            replica, *net_id, *input, scratch, frame, grid,
                                            settings,
                                        )
                                    },
                                )
                            })
                            .reduce(Tally::default, |a, b| a + b)
                    })
                }
                _ => work
                    .iter_mut()
                    .fold(Tally::default(), |t, (replica, net_id, input)| {
                        t + build_one(
                            replica,
                            *net_id,
                            *input,
                            &mut scratch[0],
                            frame,
                            grid,
                            settings,
                        )
                    }),
            }
        }
    };
    let s = &stats.0;
    Stats::add(&s.snapshots_dropped_slow_consumer, tally.dropped as u64);
    Stats::add(&s.datagrams_sent, tally.datagrams as u64);
    Stats::add(&s.datagram_bytes_sent, tally.datagram_bytes as u64);
    Stats::add(&s.snapshots_built, clients.0.len() as u64);
    Stats::add(&s.snapshots_full, tally.full as u64);
    Stats::add(&s.snapshots_between_rankings, tally.between as u64);
    Stats::add(&s.snapshot_bytes, tally.bytes as u64);
    Stats::add(&s.entities_sent, tally.sent as u64);
    Stats::add(&s.entities_in_view, tally.in_view as u64);
    Stats::add(&s.entities_deferred, tally.deferred as u64);
    Stats::add(&s.encode_passes, tally.passes as u64);
    Stats::add(&s.replication_us, started.elapsed().as_micros() as u64);
    if mode == Mode::Delta {
        s.replication_view_bytes
            .store(tally.view_bytes as u64, Ordering::Relaxed);
        s.replication_views_whole
            .store(tally.views_whole as u64, Ordering::Relaxed);
    }
}
