//! A replay keyframe's world: [`capture`] writes down, at the end of a tick, everything the
//! simulation carries into the next one ([`SimState`]); [`restore`] rebuilds a world from it, so
//! a re-simulation (`replay verify`, the viewer's seek) can start at any keyframe instead of
//! the run's first tick.
//!
//! What is *not* in the state, and why it need not be:
//! - per-tick scratch ([`Blows`], [`Launches`], [`Inbox`]): empty between ticks;
//! - a player's [`Trigger`] and [`MoveIntent`]: set from its last input at the start of every
//!   tick; its pending inputs: the recording has each one at the tick it was applied;
//! - the [`HitGrid`]: rebuilt from the newest lag-compensation frame, which is exactly what it
//!   was filed from;
//! - sessions and outboxes: a re-simulation sends nothing; replication only reads the world
//!   (a restored link is listed in [`LinkChanges`], so a world that does build snapshots starts
//!   each client from a full one).
//!
//! Restoring is only half of determinism: every system whose result depends on the order it
//! visits entities visits them by [`NetId`] (see `combat`), so a restored world, whose ECS
//! storage order differs from the recorded run's, still takes the same decisions.

use std::collections::HashMap;
use std::sync::Arc;

use arena_shared::combat::History;
use arena_shared::protocol::{EntityKind, EntityState};
use arena_shared::replay::{EntityRecord, HistoryFrame, Role, SimState};
use arena_shared::rng::SplitMix64;
use arena_shared::sim::Body;
use bevy_ecs::prelude::*;

use super::combat::{
    Arsenal, CombatSettings, Dead, Health, HitGrid, Hittable, LagComp, NpcBrain, Projectile, Score,
    SpawnProtection, Trigger,
};
use super::components::*;
use crate::outbox::Outbox;

/// The living entities as clients see them (sorted by id), and the whole state, during the
/// tick being run (a keyframe, written at the end of its tick).
pub fn capture(world: &mut World) -> (Vec<EntityState>, SimState) {
    let tick = world.resource::<Tick>().0;
    capture_at(world, tick)
}

/// The whole state between two ticks (a live handoff freezes there), and the last tick run:
/// what [`capture`] would have written at the end of that tick, so [`restore`] takes either.
pub fn capture_after_tick(world: &mut World) -> (u32, SimState) {
    let tick = world.resource::<Tick>().0.wrapping_sub(1);
    (tick, capture_at(world, tick).1)
}

fn capture_at(world: &mut World, tick: u32) -> (Vec<EntityState>, SimState) {
    let lingering = &world.resource::<Lingering>().0;
    let lingering: Vec<u64> = lingering.keys().copied().collect();
    let mut q = world.query::<(
        &NetId,
        &Kind,
        &Motion,
        Option<&Health>,
        Option<&Dead>,
        (
            Option<&Player>,
            Option<&InputBuffer>,
            Option<&Arsenal>,
            Option<&Score>,
            Option<&SpawnProtection>,
        ),
        (Option<&Wander>, Option<&MoveIntent>, Option<&NpcBrain>),
        Option<&Projectile>,
    )>();
    let mut visible = Vec::new();
    let mut entities = Vec::new();
    for (id, kind, motion, health, dead, player, npc, projectile) in q.iter(world) {
        let Body { pos, vel } = motion.0;
        if dead.is_none() {
            visible.push(EntityState {
                id: id.0,
                kind: kind.0,
                pos,
                vel,
            });
        }
        let role = match (kind.0, player, npc, projectile) {
            (EntityKind::Player, (Some(p), buffer, arsenal, score, protection), _, _) => {
                let arsenal = arsenal.copied().unwrap_or_default();
                let score = score.copied().unwrap_or_default();
                Role::Player {
                    client_id: p.client_id,
                    name: p.name.clone(),
                    lingering: lingering.contains(&p.client_id),
                    last_input: buffer.map(|b| b.last).unwrap_or_default(),
                    rifle_ready: arsenal.rifle_ready,
                    rocket_ready: arsenal.rocket_ready,
                    kills: score.kills,
                    deaths: score.deaths,
                    protected_until: protection.map_or(0, |p| p.until),
                }
            }
            (EntityKind::Npc, _, (Some(w), intent, brain), _) => {
                let brain = brain.copied().unwrap_or_default();
                Role::Npc {
                    intent: intent.map(|i| i.0).unwrap_or_default(),
                    rng: w.rng.state(),
                    wander_ticks: w.ticks_left,
                    target: brain.target,
                    next_look: brain.next_look,
                    bolt_ready: brain.bolt_ready,
                }
            }
            (EntityKind::Projectile, _, _, Some(p)) => Role::Projectile {
                owner: p.owner_id,
                damage: p.damage,
                radius: p.radius,
                expires: p.expires,
            },
            // Not an entity this simulation makes: nothing to carry.
            _ => continue,
        };
        entities.push(EntityRecord {
            id: id.0,
            pos,
            vel,
            health: health.map_or(0, |h| h.0),
            respawn_at: dead.map(|d| d.respawn_at),
            role,
        });
    }
    visible.sort_unstable_by_key(|e| e.id);
    entities.sort_unstable_by_key(|e| e.id);
    // A shot in the next ticks rewinds at most this far (and never before the oldest frame).
    let reach = world.resource::<CombatSettings>().max_rewind_ticks.max(1);
    let history = world
        .resource::<LagComp>()
        .0
        .frames_from((tick + 1).saturating_sub(reach))
        .map(|(tick, positions)| HistoryFrame {
            tick,
            positions: positions.to_vec(),
        })
        .collect();
    let state = SimState {
        last_id: world.resource::<NetIds>().last(),
        rng: world.resource::<WorldRng>().0.state(),
        entities,
        history,
    };
    (visible, state)
}

/// Replaces every entity and the carried resources of `world` (a fresh simulation's, built
/// from the same settings) with `state` as it was at the end of `tick`; the next tick run is
/// `tick + 1`. Sessions come back with session number 1 and outboxes nobody reads.
pub fn restore(world: &mut World, tick: u32, state: &SimState) {
    let old: Vec<Entity> = world
        .query_filtered::<Entity, With<NetId>>()
        .iter(world)
        .collect();
    for e in old {
        world.despawn(e);
    }
    let mut clients = Clients::default();
    let mut lingering = Lingering::default();
    // Every link is new to whatever follows links (replication, if this world builds snapshots).
    let mut changes = Vec::new();
    let mut by_id: HashMap<u32, (Entity, EntityKind)> = HashMap::new();
    // Owners first (projectiles name theirs by id).
    let owners = state
        .entities
        .iter()
        .filter(|e| !matches!(e.role, Role::Projectile { .. }));
    let projectiles = state
        .entities
        .iter()
        .filter(|e| matches!(e.role, Role::Projectile { .. }));
    for rec in owners.chain(projectiles) {
        let motion = Motion(Body {
            pos: rec.pos,
            vel: rec.vel,
        });
        let mut e = world.spawn((NetId(rec.id), motion));
        let kind = match &rec.role {
            Role::Npc {
                intent,
                rng,
                wander_ticks,
                target,
                next_look,
                bolt_ready,
            } => {
                e.insert((
                    MoveIntent(*intent),
                    Wander {
                        rng: SplitMix64::new(*rng),
                        ticks_left: *wander_ticks,
                    },
                    Health(rec.health),
                    NpcBrain {
                        target: *target,
                        next_look: *next_look,
                        bolt_ready: *bolt_ready,
                    },
                ));
                EntityKind::Npc
            }
            Role::Player {
                client_id,
                name,
                lingering: parked,
                last_input,
                rifle_ready,
                rocket_ready,
                kills,
                deaths,
                protected_until,
            } => {
                e.insert((
                    MoveIntent::default(),
                    Player {
                        client_id: *client_id,
                        name: name.clone(),
                    },
                    InputBuffer {
                        last: *last_input,
                        last_seq: last_input.seq,
                        started: true,
                        ..Default::default()
                    },
                    Health(rec.health),
                    Arsenal {
                        rifle_ready: *rifle_ready,
                        rocket_ready: *rocket_ready,
                    },
                    Trigger::default(),
                    Score {
                        kills: *kills,
                        deaths: *deaths,
                    },
                    SpawnProtection {
                        until: *protected_until,
                    },
                ));
                let entity = e.id();
                if *parked {
                    lingering.0.insert(
                        *client_id,
                        LingeringPlayer {
                            entity,
                            net_id: rec.id,
                            session: 1,
                        },
                    );
                } else {
                    clients.0.insert(
                        *client_id,
                        ClientLink {
                            entity,
                            net_id: rec.id,
                            session: 1,
                            outbox: Arc::new(Outbox::new(1, 1200)),
                        },
                    );
                    changes.push(entity);
                }
                EntityKind::Player
            }
            Role::Projectile {
                owner,
                damage,
                radius,
                expires,
            } => {
                // An owner that has left the world no longer takes credit, as in the run.
                let owner_entity = by_id.get(owner).map_or(Entity::PLACEHOLDER, |o| o.0);
                e.insert(Projectile {
                    owner: owner_entity,
                    owner_id: *owner,
                    damage: *damage,
                    radius: *radius,
                    expires: *expires,
                });
                EntityKind::Projectile
            }
        };
        e.insert(Kind(kind));
        if let Some(at) = rec.respawn_at {
            e.insert(Dead { respawn_at: at });
        }
        by_id.insert(rec.id, (e.id(), kind));
    }
    world.insert_resource(clients);
    world.insert_resource(lingering);
    world.insert_resource(LinkChanges(changes));
    world.insert_resource(NetIds::after(state.last_id));
    world.insert_resource(WorldRng(SplitMix64::new(state.rng)));
    world.insert_resource(Tick(tick.wrapping_add(1)));
    let capacity = world.resource::<LagComp>().0.capacity();
    let history = History::restored(
        capacity,
        state.history.iter().map(|f| (f.tick, f.positions.clone())),
    );
    // The grid the next tick's NPCs look at was filed from the newest frame.
    if let Some(newest) = state.history.last() {
        let items = newest.positions.iter().filter_map(|&(id, pos)| {
            let &(entity, kind) = by_id.get(&id)?;
            Some(Hittable {
                id,
                entity,
                pos,
                player: kind == EntityKind::Player,
            })
        });
        world.resource_mut::<HitGrid>().rebuild(items);
    }
    world.insert_resource(LagComp(history));
}

/// Detaches every connected player at the next tick, as a lost connection would: a
/// `SimCommand::Detach` for each, queued ahead of anything the network delivers. A world
/// restored on another server has no connections yet; its players stand still, not firing,
/// keeping their entities, until each resumes through `SimCommand::Join` or its seat expires.
/// Going through the command, the next tick records a `Detach` for each, in client-id order,
/// so a re-simulation of the old server's run, fed those records, reaches the same state (a
/// live handoff's replay verifies across both servers' files).
pub fn detach_players(world: &mut World) {
    let mut links: Vec<(u64, u64)> = world
        .resource::<Clients>()
        .0
        .iter()
        .map(|(&client_id, link)| (client_id, link.session))
        .collect();
    links.sort_unstable();
    let mut inbox = world.resource_mut::<Inbox>();
    let queued = std::mem::take(&mut inbox.0);
    inbox.0 = links
        .into_iter()
        .map(|(client_id, session)| super::SimCommand::Detach { client_id, session })
        .chain(queued)
        .collect();
}
