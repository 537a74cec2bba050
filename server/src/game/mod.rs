//! The game's rules on a bevy_ecs `World`: its components and resources, the systems of a
//! tick (players' inputs, NPC brains, movement, projectiles, rifles, damage, respawns), the
//! names directory and the keyframe state a re-simulation restores. [`new_world`] makes a
//! world ready for its first tick.
//!
//! What this module does not know: how the systems are put in order and timed, and what
//! happens to the world after the rules have run (snapshots, the tick loop). That is
//! [`crate::tick`], which assembles these systems with replication. The systems that record a
//! run hold a [`crate::recording::Recorder`], a leaf; `game` imports neither replication,
//! replay nor the tick, so the rules can be read, tested and changed on their own.
//!
//! Invariants:
//! - The systems never wait on the network: they read the commands the tick drained into the
//!   [`components::Inbox`] and push events into bounded outboxes that drop when full.
//! - Every system that depends on the order it visits entities visits them by
//!   [`components::NetId`], so the same inbox gives the same world, and a world restored from a
//!   keyframe takes the same decisions as the one recorded.

pub mod combat;
pub mod components;
pub mod names;
pub mod state;
pub mod systems;

use std::sync::Arc;

use arena_shared::map::Map;
use arena_shared::obstacle_grid::ObstacleGrid;
use arena_shared::protocol::{EntityKind, Input};
use arena_shared::rng::SplitMix64;
use arena_shared::sim::{self, Body};
use bevy_ecs::prelude::*;
use glam::Vec2;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::outbox::Outbox;
use crate::stats::Stats;
use components::*;

/// What the network tells the simulation.
pub enum SimCommand {
    /// A client passed the handshake; the reply carries its entity.
    Join(JoinRequest),
    Input {
        client_id: u64,
        input: Input,
    },
    /// The session's connection was lost: the entity stays (standing still, no snapshots)
    /// for the grace period, in case the player resumes.
    Detach {
        client_id: u64,
        session: u64,
    },
    /// The player is gone: the entity is removed.
    Leave {
        client_id: u64,
        session: u64,
    },
}

pub struct JoinRequest {
    pub client_id: u64,
    /// The session asking; `Detach` and `Leave` name it, so a late one about an earlier
    /// session of the same client never touches this one.
    pub session: u64,
    pub name: String,
    pub outbox: Arc<Outbox>,
    /// Take over the client's entity if it still has one (the network layer admitted this
    /// session as a resume); otherwise a new entity replaces any old one.
    pub resume: bool,
    pub reply: oneshot::Sender<JoinAck>,
}

#[derive(Debug, Clone, Copy)]
pub struct JoinAck {
    pub entity: u32,
    pub server_tick: u32,
    /// The entity is the one an earlier session of this client played.
    pub resumed: bool,
}

/// A world ready for its first tick: the map, `--npcs` NPCs at random free points, and every
/// resource the systems read, from the config. The same flags give the same world.
pub fn new_world(config: &Config, map: Arc<Map>, stats: Arc<Stats>) -> World {
    let mut world = World::new();
    let mut rng = SplitMix64::new(config.seed);
    let mut ids = NetIds::default();
    // Tick 0 means "no baseline" on the wire; the first tick is 1.
    let first_tick = 1;
    for _ in 0..config.npcs {
        let pos = map.random_free_point(&mut rng, sim::NPC.radius);
        let id = ids.allocate();
        // The NPCs look around in turn, an eighth of them a tick (by id), not all on the same
        // tick: a look is a search of the grid, and thousands at once made every eighth tick's
        // `ai` phase several times the others' (BENCHMARKS.md, "Issue 21: the tick's tails").
        let brain = combat::NpcBrain {
            next_look: first_tick + id.0 % arena_shared::combat::NPC_LOOK_TICKS,
            ..Default::default()
        };
        world.spawn((
            id,
            Kind(EntityKind::Npc),
            Motion(Body {
                pos,
                vel: Vec2::ZERO,
            }),
            MoveIntent::default(),
            Wander {
                rng: SplitMix64::new(rng.next_u64()),
                ticks_left: 0,
            },
            combat::Health(arena_shared::combat::NPC_HEALTH),
            brain,
        ));
    }
    world.insert_resource(ids);
    world.insert_resource(WorldRng(rng));
    world.insert_resource(Obstacles(ObstacleGrid::new(&map)));
    world.insert_resource(MapRes(map));
    world.insert_resource(Tick(first_tick));
    world.insert_resource(SimSettings {
        dt: config.dt(),
        tick_rate: config.tick_rate,
        input_window: config.input_window.max(1),
    });
    world.insert_resource(Inbox::default());
    world.insert_resource(Clients::default());
    world.insert_resource(Lingering::default());
    world.insert_resource(LinkChanges::default());
    let history_ticks = config.ticks(config.lag_comp_history, 1);
    world.insert_resource(combat::CombatSettings {
        respawn_ticks: config.ticks(config.respawn_delay, 1),
        max_rewind_ticks: config.ticks(config.max_rewind, 0).min(history_ticks),
        npc_combat: config.npc_combat,
        spawn_protection_ticks: config.ticks(config.spawn_protection, 0),
        npc_max_engaged: config.npc_max_engaged,
        npc_reaction_ticks: config.ticks(config.npc_reaction, 0),
    });
    world.insert_resource(combat::LagComp(arena_shared::combat::History::new(
        history_ticks,
    )));
    world.insert_resource(combat::HitGrid::new(config.world_size));
    world.insert_resource(combat::Blows::default());
    world.insert_resource(combat::Launches::default());
    world.insert_resource(StatsRes(stats));
    world
}
