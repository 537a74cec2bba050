//! Replication: what each client is sent at the end of each tick.
//!
//! Today every client gets the full state of every entity, split into datagrams that fit its
//! connection's maximum datagram size ([`arena_shared::protocol::codec::encode_snapshot_parts`]).
//! Clients on paths with the same maximum share one encoding. This module is the one seam
//! where per-client deltas, interest management and byte budgets replace the broadcast: it
//! reads the world and each client's outbox, and nothing else depends on how it decides.

use std::sync::Arc;

use arena_shared::protocol::EntityState;
use arena_shared::protocol::codec::encode_snapshot_parts;
use bevy_ecs::prelude::*;

use crate::game::components::{Clients, Kind, Motion, NetId, StatsRes, Tick};
use crate::net::outbox::SnapshotDatagrams;
use crate::stats::Stats;

/// Scratch space kept between ticks so replication does not reallocate every tick.
#[derive(Resource, Default)]
pub struct Replicator {
    entities: Vec<EntityState>,
    /// Encodings of this tick's snapshot, by maximum datagram size.
    encoded: Vec<(usize, SnapshotDatagrams)>,
}

/// The full state of the world, ordered by entity id.
pub fn collect_full_state(bodies: &Query<(&NetId, &Kind, &Motion)>, out: &mut Vec<EntityState>) {
    out.clear();
    out.extend(bodies.iter().map(|(id, kind, motion)| EntityState {
        id: id.0,
        kind: kind.0,
        pos: motion.0.pos,
        vel: motion.0.vel,
    }));
    out.sort_unstable_by_key(|e| e.id);
}

/// Builds this tick's snapshot and queues it in every client's outbox.
pub fn replicate(
    bodies: Query<(&NetId, &Kind, &Motion)>,
    clients: Res<Clients>,
    tick: Res<Tick>,
    stats: Res<StatsRes>,
    mut rep: ResMut<Replicator>,
) {
    if clients.0.is_empty() {
        return;
    }
    let rep = &mut *rep;
    collect_full_state(&bodies, &mut rep.entities);
    rep.encoded.clear();
    let mut dropped = 0;
    for link in clients.0.values() {
        let max = link.outbox.max_datagram();
        let datagrams = match rep.encoded.iter().find(|(size, _)| *size == max) {
            Some((_, d)) => d.clone(),
            None => {
                let d: SnapshotDatagrams =
                    Arc::new(encode_snapshot_parts(tick.0, &rep.entities, max));
                rep.encoded.push((max, d.clone()));
                d
            }
        };
        dropped += link.outbox.push(datagrams);
    }
    Stats::add(&stats.0.snapshots_dropped_slow_consumer, dropped as u64);
}
