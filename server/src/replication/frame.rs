//! The world as replication sees it at the end of a tick: every replicated entity's quantized
//! state, sorted by id. Built once per tick and shared by every client's snapshot (the work
//! that is the same for everyone is done once).
//!
//! The frame also says, per entity, since when a client's record of it is still exact:
//! [`WorldFrame::current_from`]. An entity that moves in a straight line at constant velocity
//! (or stands still) follows its dead-reckoned path, and a record taken anywhere on that path
//! predicts this tick's fields exactly; so a client decides "up to date" by comparing its
//! record's tick with one number, instead of predicting the record and comparing the fields
//! (which costs a read of the entity's frame entry per member per client: the memory wait that
//! dominated replication).
//!
//! Invariant: for every entity at index `i` and every tick `r` with
//! `current_from[i] <= r <= tick`, the entity was in every frame from `r` to `tick`, and a
//! record of its fields in the frame of tick `r`, predicted to `tick`
//! ([`EntityRecord::predict`]), equals its fields now. This needs frames of strictly
//! increasing ticks (one frame per tick number), which the server's tick gives; a frame whose
//! tick does not follow the previous one by exactly one starts every entity's path afresh.

use arena_shared::protocol::EntityKind;
use arena_shared::quant::{quantize_pos, quantize_vel};
use arena_shared::snapshot::{EntityRecord, FIELDS, MAX_PREDICT_TICKS, fit_capacity};
use glam::Vec2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameEntity {
    pub id: u32,
    pub kind: EntityKind,
    /// Quantized: position x, y, velocity x, y.
    pub fields: [i32; FIELDS],
    pub pos: Vec2,
    pub speed: f32,
}

#[derive(Debug, Clone, Default)]
pub struct WorldFrame {
    pub tick: u32,
    /// Sorted by id.
    pub entities: Vec<FrameEntity>,
    /// By frame index: the oldest tick whose record of the entity still predicts its fields
    /// now (see the module's invariant). A separate, compact column: the per-client check
    /// reads only this for the members that did not change.
    pub current_from: Vec<u32>,
    /// By frame index: the first tick of the entity's current dead-reckoned path (the tick it
    /// last left the previous one, appeared, or the frames stopped following each other).
    path_start: Vec<u32>,
    /// The previous frame's entities and path starts, to continue the paths from.
    prev_entities: Vec<FrameEntity>,
    prev_path_start: Vec<u32>,
    /// Where an id lies in `entities`, found once a tick for every client's lookups
    /// ([`Self::index_of`]): the ids from the first's are cut into buckets of `1 << by_id_shift`
    /// consecutive ids, at most two an entity, and `by_id[b]` is the index of the first entity
    /// whose bucket is `b` or later (one more entry, the frame's length, closes the last). An
    /// id is then looked for among the few entities of its bucket, not by a binary search of
    /// the whole frame: ~13 dependent reads of a 5,000-entity frame, most of them out of the
    /// first-level cache (BENCHMARKS.md, "Issue 21: an id found in its bucket").
    by_id: Vec<u32>,
    by_id_base: u32,
    by_id_shift: u32,
}

impl WorldFrame {
    /// Refills the frame from `(id, kind, pos, vel)` in any order. `tick_rate` is the rate
    /// dead reckoning predicts with (the clients' [`EntityRecord::predict`]).
    pub fn rebuild(
        &mut self,
        tick: u32,
        tick_rate: u16,
        bodies: impl Iterator<Item = (u32, EntityKind, Vec2, Vec2)>,
    ) {
        std::mem::swap(&mut self.entities, &mut self.prev_entities);
        std::mem::swap(&mut self.path_start, &mut self.prev_path_start);
        let follows = self.tick.checked_add(1) == Some(tick);
        self.tick = tick;
        self.entities.clear();
        self.entities
            .extend(bodies.map(|(id, kind, pos, vel)| FrameEntity {
                id,
                kind,
                fields: [
                    quantize_pos(pos.x),
                    quantize_pos(pos.y),
                    quantize_vel(vel.x),
                    quantize_vel(vel.y),
                ],
                pos,
                speed: vel.length(),
            }));
        self.entities.sort_unstable_by_key(|e| e.id);

        self.path_start.clear();
        self.current_from.clear();
        let prev = if follows {
            self.prev_entities.as_slice()
        } else {
            &[]
        };
        let mut p = 0;
        for e in &self.entities {
            while p < prev.len() && prev[p].id < e.id {
                p += 1;
            }
            // Still on last tick's path when one tick of dead reckoning from last tick's
            // fields gives exactly this tick's (velocity included: a turn starts a new path).
            // The velocity is compared first, and a still entity's prediction is its position:
            // most entities are settled without the prediction's divisions.
            let [.., vx, vy] = e.fields;
            let on_path = p < prev.len()
                && prev[p].id == e.id
                && prev[p].fields[2..] == e.fields[2..]
                && if vx == 0 && vy == 0 {
                    prev[p].fields[..2] == e.fields[..2]
                } else {
                    record(prev[p].fields, tick - 1).predict(tick, tick_rate) == e.fields
                };
            let start = if on_path {
                self.prev_path_start[p]
            } else {
                tick
            };
            self.path_start.push(start);
            // Dead reckoning extrapolates at most `MAX_PREDICT_TICKS`: a moving entity's
            // record older than that predicts short of it, a still one's stays exact. (A
            // velocity too small to move a step a tick counts as moving: that only sends
            // more records through the full comparison, never fewer.)
            let moving = vx != 0 || vy != 0;
            self.current_from.push(if moving {
                start.max(tick.saturating_sub(MAX_PREDICT_TICKS))
            } else {
                start
            });
        }
        self.index_ids();
    }

    /// The index of entity `id` in the frame, if there: a read of its bucket's bounds and a
    /// search among that bucket's entities (one or two, unless the ids are far from even).
    pub fn index_of(&self, id: u32) -> Option<usize> {
        // Made by `rebuild` for these entities (the closing entry is their count).
        if self.by_id.last().map(|&n| n as usize) != Some(self.entities.len()) {
            return self.entities.binary_search_by_key(&id, |e| e.id).ok();
        }
        let b = (id.checked_sub(self.by_id_base)? >> self.by_id_shift) as usize;
        let (lo, hi) = (
            *self.by_id.get(b)? as usize,
            *self.by_id.get(b + 1)? as usize,
        );
        self.entities[lo..hi]
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| lo + i)
    }

    /// Refills [`Self::by_id`] for the entities as they are now (sorted by id): the narrowest
    /// buckets that number at most two an entity.
    fn index_ids(&mut self) {
        self.by_id.clear();
        let (Some(first), Some(last)) = (self.entities.first(), self.entities.last()) else {
            return;
        };
        let (base, span) = (first.id, u64::from(last.id - first.id));
        let most = 2 * self.entities.len() as u64;
        let mut shift = 0;
        while (span >> shift) + 1 > most {
            shift += 1;
        }
        self.by_id_base = base;
        self.by_id_shift = shift;
        fit_capacity(&mut self.by_id, (span >> shift) as usize + 2);
        for (i, e) in self.entities.iter().enumerate() {
            let bucket = ((e.id - base) >> shift) as usize;
            while self.by_id.len() <= bucket {
                self.by_id.push(i as u32);
            }
        }
        self.by_id.push(self.entities.len() as u32);
    }

    /// [`Self::index_of`], trying `hint` first (where the entity was last tick: there while
    /// no entity of a lower id came or went, and then without a search of the frame).
    pub fn index_of_near(&self, id: u32, hint: usize) -> Option<usize> {
        if self.entities.get(hint).is_some_and(|e| e.id == id) {
            Some(hint)
        } else {
            self.index_of(id)
        }
    }

    /// Makes every entity's path start now, so no record counts as current by its tick and
    /// every client compares records in full: the computation the paths stand in for, which
    /// the property tests hold them to.
    #[cfg(test)]
    pub fn forget_paths(&mut self) {
        self.current_from.fill(u32::MAX);
    }
}

/// A record of `fields` at `tick`, for predicting with the clients' own arithmetic (the id and
/// kind do not take part).
fn record(fields: [i32; FIELDS], tick: u32) -> EntityRecord {
    EntityRecord {
        id: 0,
        kind: EntityKind::Npc,
        fields,
        tick,
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn an_entity_is_found_whether_the_hint_is_right_stale_or_out_of_the_frame() {
        let mut frame = WorldFrame::default();
        let bodies = |ids: &[u32]| {
            ids.iter()
                .map(|&id| (id, EntityKind::Npc, Vec2::ZERO, Vec2::ZERO))
                .collect::<Vec<_>>()
                .into_iter()
        };
        frame.rebuild(1, 30, bodies(&[3, 5, 8, 13, 21]));
        for hint in [0, 2, 3, 4, 5, 1000] {
            assert_eq!(frame.index_of_near(13, hint), Some(3), "hint {hint}");
            assert_eq!(frame.index_of_near(4, hint), None, "hint {hint}");
        }
        // An entity of a lower id gone: 13 moved down one place, its old index now holds 21.
        frame.rebuild(2, 30, bodies(&[3, 8, 13, 21]));
        assert_eq!(frame.index_of_near(13, 3), Some(2));
        assert_eq!(frame.index_of_near(21, 3), Some(3));
    }

    /// The buckets find every id where a search of the whole frame does, and nothing else:
    /// ids dense, sparse, in clumps far apart, at both ends of `u32`, one or none.
    #[test]
    fn the_id_index_finds_what_a_search_of_the_frame_finds() {
        let mut rng = arena_shared::rng::SplitMix64::new(21);
        let mut frame = WorldFrame::default();
        for round in 0..400u32 {
            let n = rng.below(300) as usize;
            let mut ids: Vec<u32> = match round % 4 {
                // Dense, with a few holes.
                0 => (1..).filter(|_| rng.below(8) != 0).take(n).collect(),
                // Spread over all of u32.
                1 => (0..n).map(|_| rng.next_u64() as u32).collect(),
                // Two clumps far apart: old survivors and the newest ids.
                2 => (0..n)
                    .map(|i| {
                        let clump = if i % 2 == 0 { 10 } else { u32::MAX - 5_000 };
                        clump + rng.below(5_000)
                    })
                    .collect(),
                // The ends of the range.
                _ => (0..n)
                    .map(|_| match rng.below(3) {
                        0 => rng.below(4),
                        1 => u32::MAX - rng.below(4),
                        _ => rng.below(1_000),
                    })
                    .collect(),
            };
            ids.sort_unstable();
            ids.dedup();
            frame.rebuild(
                round + 1,
                30,
                ids.iter()
                    .map(|&id| (id, EntityKind::Npc, Vec2::ZERO, Vec2::ZERO)),
            );
            assert!(frame.by_id.len() <= 2 * ids.len() + 1, "round {round}");
            let probes = ids
                .iter()
                .flat_map(|&id| [id, id.wrapping_sub(1), id.wrapping_add(1)])
                .chain([0, 1, u32::MAX, u32::MAX - 1])
                .chain((0..50).map(|_| rng.next_u64() as u32));
            for id in probes {
                assert_eq!(
                    frame.index_of(id),
                    ids.binary_search(&id).ok(),
                    "round {round}, id {id}"
                );
            }
        }
    }
}
