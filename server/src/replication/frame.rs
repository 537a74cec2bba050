//! The world as replication sees it at the end of a tick: every replicated entity's quantized
//! state, sorted by id. Built once per tick and shared by every client's snapshot (the work
//! that is the same for everyone is done once).

use arena_shared::protocol::EntityKind;
use arena_shared::quant::{quantize_pos, quantize_vel};
use arena_shared::snapshot::FIELDS;
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
}

impl WorldFrame {
    /// Refills the frame from `(id, kind, pos, vel)` in any order.
    pub fn rebuild(
        &mut self,
        tick: u32,
        bodies: impl Iterator<Item = (u32, EntityKind, Vec2, Vec2)>,
    ) {
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
    }

    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.entities.binary_search_by_key(&id, |e| e.id).ok()
    }
}
