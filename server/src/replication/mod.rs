//! Replication: what each client is sent at the end of each tick.
//!
//! Two modes (`--replication`):
//! - `delta` (default): per client, a delta snapshot against the newest view it acknowledged,
//!   limited to its area of interest and its byte budget, chosen by priority. The decisions
//!   live in [`client::ClientReplicator`] (sans-IO); the quantized [`frame::WorldFrame`] and
//!   the interest [`grid::Grid`] are built once per tick and shared by every client.
//! - `full`: every client gets every entity every tick, split into datagrams of the path's
//!   size. Kept as the baseline that benchmarks compare against.

pub mod client;
pub mod frame;
pub mod grid;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use arena_shared::protocol::codec::encode_snapshot_parts;
use arena_shared::protocol::{EntityState, InputStatus};
use arena_shared::sim;
use bevy_ecs::prelude::*;
use clap::ValueEnum;
use tokio::sync::broadcast;

use crate::game::components::{Clients, InputBuffer, Kind, Motion, NetId, StatsRes, Tick};
use crate::net::outbox::SnapshotDatagrams;
use crate::stats::Stats;
use client::RepSettings;
use frame::WorldFrame;
use grid::Grid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Deltas against acknowledged views, interest management, byte budget.
    Delta,
    /// The full state of every entity to every client every tick.
    Full,
}

/// Replication's state kept between ticks.
#[derive(Resource)]
pub struct Replicator {
    pub mode: Mode,
    pub settings: RepSettings,
    pub world_size: f32,
    pub frame: WorldFrame,
    pub grid: Grid,
    /// Working memory for building one client's snapshot, reused for all of them.
    scratch: client::Scratch,
    /// Full mode: the encodings of this tick, by maximum datagram size.
    encoded: Vec<(usize, SnapshotDatagrams)>,
    full_state: Vec<EntityState>,
    /// Where each tick's frame is published when someone listens (tests, tools).
    tap: Option<broadcast::Sender<Arc<WorldFrame>>>,
}

impl Replicator {
    pub fn new(
        mode: Mode,
        settings: RepSettings,
        world_size: f32,
        tap: Option<broadcast::Sender<Arc<WorldFrame>>>,
    ) -> Self {
        Self {
            mode,
            settings,
            world_size,
            frame: WorldFrame::default(),
            grid: Grid::default(),
            scratch: client::Scratch::default(),
            encoded: Vec::new(),
            full_state: Vec::new(),
            tap,
        }
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
    }
}

/// Builds this tick's snapshot for every client and queues it in the client's outbox.
pub fn replicate(
    bodies: Query<(&NetId, &Kind, &Motion)>,
    inputs: Query<&InputBuffer>,
    mut clients: ResMut<Clients>,
    tick: Res<Tick>,
    stats: Res<StatsRes>,
    mut rep: ResMut<Replicator>,
) {
    if clients.0.is_empty() {
        return;
    }
    let started = Instant::now();
    let rep = &mut *rep;
    let (mut dropped, mut bytes, mut full, mut sent, mut in_view, mut deferred) =
        (0, 0, 0, 0, 0, 0);
    let mut passes = 0;
    match rep.mode {
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
                bytes += datagrams.iter().map(Vec::len).sum::<usize>();
                full += 1;
                sent += rep.full_state.len();
                dropped += link.outbox.push(datagrams);
            }
        }
        Mode::Delta => {
            rep.frame.rebuild(
                tick.0,
                bodies
                    .iter()
                    .map(|(id, kind, m)| (id.0, kind.0, m.0.pos, m.0.vel)),
            );
            rep.grid
                .rebuild(&rep.frame, rep.world_size, rep.settings.aoi_radius / 2.0);
            if let Some(tap) = rep.tap.as_ref().filter(|t| t.receiver_count() > 0) {
                let _ = tap.send(Arc::new(rep.frame.clone()));
            }
            for link in clients.0.values_mut() {
                if let Some(acked) = link.outbox.acked() {
                    link.replicator.on_ack(acked);
                }
                let input =
                    inputs
                        .get(link.entity)
                        .map_or(InputStatus::default(), |b| InputStatus {
                            last_seq: b.last_seq,
                            late: b.late,
                            lead: b.lead,
                        });
                let built = link.replicator.build(
                    &mut rep.scratch,
                    &rep.frame,
                    &rep.grid,
                    link.net_id,
                    &rep.settings,
                    link.outbox.max_datagram(),
                    input,
                );
                bytes += built.bytes.len();
                full += usize::from(built.full);
                sent += built.sent;
                in_view += built.in_view;
                deferred += built.deferred;
                passes += built.encode_passes;
                dropped += link.outbox.push(Arc::new(vec![built.bytes]));
            }
        }
    }
    let s = &stats.0;
    Stats::add(&s.snapshots_dropped_slow_consumer, dropped as u64);
    Stats::add(&s.snapshots_built, clients.0.len() as u64);
    Stats::add(&s.snapshots_full, full as u64);
    Stats::add(&s.snapshot_bytes, bytes as u64);
    Stats::add(&s.entities_sent, sent as u64);
    Stats::add(&s.entities_in_view, in_view as u64);
    Stats::add(&s.entities_deferred, deferred as u64);
    Stats::add(&s.encode_passes, passes as u64);
    Stats::add(&s.replication_us, started.elapsed().as_micros() as u64);
}
