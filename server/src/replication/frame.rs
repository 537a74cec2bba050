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
use arena_shared::snapshot::{EntityRecord, FIELDS, MAX_PREDICT_TICKS};
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
    }

    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.entities.binary_search_by_key(&id, |e| e.id).ok()
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
}
