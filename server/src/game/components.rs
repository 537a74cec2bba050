//! Components and resources of the simulation world.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arena_shared::map::Map;
use arena_shared::obstacle_grid::ObstacleGrid;
use arena_shared::protocol::{EntityKind, Input};
use arena_shared::quant::MoveDir;
use arena_shared::rng::SplitMix64;
use arena_shared::sim::Body;
use bevy_ecs::prelude::*;

use super::SimCommand;
use crate::outbox::Outbox;
use crate::stats::Stats;

/// The id clients see in snapshots. Allocated by [`NetIds`], never reused within a run, and
/// independent of bevy's `Entity` bits so that replays and clients do not depend on ECS
/// internals.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetId(pub u32);

#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(pub EntityKind);

/// Position and velocity, moved only by `arena_shared::sim::step`.
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Motion(pub Body);

/// The movement intent applied this tick.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoveIntent(pub MoveDir);

/// A connected player. Its hooks keep [`super::names::Names`] in step with player entities.
/// Every player has a [`super::combat::SpawnProtection`] (none by default), which the systems that read
/// players' inputs and blows query for: a spawn path that forgot it would leave a player who
/// ignores its inputs.
#[derive(Component, Debug, Clone)]
#[component(on_insert = super::names::on_player_insert, on_discard = super::names::on_player_discard)]
#[require(super::combat::SpawnProtection)]
pub struct Player {
    pub client_id: u64,
    pub name: String,
}

/// A player's inputs keyed by the tick they are meant for. At tick T the input for T is
/// applied; if it has not arrived the last one is repeated (holding a key keeps moving) and the
/// miss is counted as late. Inputs for ticks already simulated are dropped; inputs more than
/// `--input-window` ticks ahead are refused. Both are counted; the buffer never holds more
/// than the window.
#[derive(Component, Debug, Default)]
pub struct InputBuffer {
    pub pending: BTreeMap<u32, Input>,
    pub last: Input,
    /// Seq of the input applied at the last tick (repeated inputs keep their seq).
    pub last_seq: u32,
    /// Ticks whose input had not arrived in time, since the first input arrived.
    pub late: u32,
    /// Whether an input was applied (or one arrived too late) yet; no lateness before.
    pub started: bool,
    /// Ticks before its tick the newest input arrived (negative: after).
    pub lead: i8,
}

/// An NPC's random walk: a direction held for a while, then another.
#[derive(Component, Debug, Clone)]
pub struct Wander {
    pub rng: SplitMix64,
    pub ticks_left: u32,
}

/// The tick being simulated; it becomes the snapshot's tick.
#[derive(Resource, Debug, Default, Clone, Copy)]
pub struct Tick(pub u32);

/// Settings the systems read.
#[derive(Resource, Debug, Clone)]
pub struct SimSettings {
    pub dt: f32,
    pub tick_rate: u16,
    /// How far ahead of the simulated tick an input may be.
    pub input_window: u32,
}

#[derive(Resource, Debug, Clone)]
pub struct MapRes(pub Arc<Map>);

/// The map's obstacle grid, which movement reads the map through (built once, from `MapRes`).
#[derive(Resource, Debug)]
pub struct Obstacles(pub ObstacleGrid);

/// Commands drained from the network this tick, in arrival order.
#[derive(Resource, Default)]
pub struct Inbox(pub Vec<SimCommand>);

/// Where each connected client's entity is and where its snapshots go.
#[derive(Resource, Default)]
pub struct Clients(pub HashMap<u64, ClientLink>);

pub struct ClientLink {
    pub entity: Entity,
    pub net_id: u32,
    /// The network session this link belongs to.
    pub session: u64,
    pub outbox: Arc<Outbox>,
}

/// Player entities whose client link was made, replaced or dropped this tick (a join, a
/// resume, a detach or a leave), in the order it happened; emptied when the tick ends. What is
/// kept per connection beside the game (replication's view of each client) follows the links
/// from here, so a link that changed is noticed without looking at every client every tick.
#[derive(Resource, Debug, Default)]
pub struct LinkChanges(pub Vec<Entity>);

/// Players whose connection was lost, by client id: their entity stays in the world (still,
/// not replicated to anyone's own view of it) until the network layer says the grace period
/// is over (`SimCommand::Leave`) or the player resumes (`SimCommand::Join` with `resume`).
#[derive(Resource, Debug, Default)]
pub struct Lingering(pub HashMap<u64, LingeringPlayer>);

#[derive(Debug, Clone, Copy)]
pub struct LingeringPlayer {
    pub entity: Entity,
    pub net_id: u32,
    pub session: u64,
}

#[derive(Resource, Debug, Default)]
pub struct NetIds {
    next: u32,
}

impl NetIds {
    /// Ids continue after `last` (a world restored from a replay keyframe).
    pub fn after(last: u32) -> Self {
        Self { next: last }
    }

    pub fn allocate(&mut self) -> NetId {
        self.next += 1;
        NetId(self.next)
    }

    /// The last id handed out (0: none yet).
    pub fn last(&self) -> u32 {
        self.next
    }
}

/// The world's own generator (spawn points); NPCs carry their own.
#[derive(Resource, Debug)]
pub struct WorldRng(pub SplitMix64);

#[derive(Resource, Debug, Clone)]
pub struct StatsRes(pub Arc<Stats>);
