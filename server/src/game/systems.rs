//! The systems of one tick. Each is small and says in its parameters what it reads and writes.

// Systems name everything they touch in their parameters: long signatures and query types
// are the point, not a smell.
#![allow(clippy::type_complexity, clippy::too_many_arguments)]

use arena_shared::protocol::EntityKind;
use arena_shared::quant;
use arena_shared::replay::Record;
use arena_shared::sim::{self, Body};
use bevy_ecs::prelude::*;
use glam::Vec2;
use tracing::debug;

use super::combat::{
    self, Arsenal, CombatSettings, Dead, Health, HitGrid, Projectile, Score, SpawnProtection,
    Trigger,
};
use super::components::*;
use super::{JoinAck, SimCommand};
use crate::recording::Recorder;
use crate::stats::Stats;

/// Applies joins, detaches and leaves, in arrival order: a join spawns a player (or hands a
/// resuming one its old entity), a detach parks a player whose connection was lost, a leave
/// removes one. Inputs stay in the inbox for [`route_inputs`], which runs after the spawns
/// are applied.
pub fn admit_and_release(
    mut commands: Commands,
    mut inbox: ResMut<Inbox>,
    mut clients: ResMut<Clients>,
    mut lingering: ResMut<Lingering>,
    mut changes: ResMut<LinkChanges>,
    mut ids: ResMut<NetIds>,
    mut rng: ResMut<WorldRng>,
    map: Res<MapRes>,
    (grid, combat_settings): (Res<HitGrid>, Res<CombatSettings>),
    tick: Res<Tick>,
    mut recorder: Option<ResMut<Recorder>>,
) {
    let mut inputs = Vec::with_capacity(inbox.0.len());
    for cmd in inbox.0.drain(..) {
        match cmd {
            SimCommand::Join(join) => {
                let old = clients
                    .0
                    .remove(&join.client_id)
                    .map(|l| (l.entity, l.net_id))
                    .or_else(|| {
                        lingering
                            .0
                            .remove(&join.client_id)
                            .map(|l| (l.entity, l.net_id))
                    });
                let (entity, net_id, resumed) = match old {
                    Some((entity, net_id)) if join.resume => {
                        // Same entity, fresh inputs: the new connection's sequence numbers
                        // and clock start over. The link is new (see `LinkChanges`), so what
                        // replication knew of the old one goes: the first snapshot is full.
                        commands.entity(entity).insert((
                            InputBuffer::default(),
                            MoveIntent::default(),
                            Trigger::default(),
                        ));
                        (entity, net_id, true)
                    }
                    old => {
                        if let Some((entity, _)) = old {
                            // Not a resume (its grace ran out as it came back): a new life.
                            commands.entity(entity).despawn();
                        }
                        let net_id = ids.allocate();
                        // Away from everyone, like a respawn: nobody is born in a crowd.
                        let pos =
                            combat::spawn_point(&map.0, &mut rng.0, &grid, sim::PLAYER.radius);
                        let entity = commands
                            .spawn((
                                net_id,
                                Kind(EntityKind::Player),
                                Motion(Body {
                                    pos,
                                    vel: Vec2::ZERO,
                                }),
                                MoveIntent::default(),
                                Player {
                                    client_id: join.client_id,
                                    name: join.name.clone(),
                                },
                                InputBuffer::default(),
                                Health(arena_shared::combat::PLAYER_HEALTH),
                                Arsenal::default(),
                                Trigger::default(),
                                Score::default(),
                                SpawnProtection::from(
                                    tick.0,
                                    combat_settings.spawn_protection_ticks,
                                ),
                            ))
                            .id();
                        (entity, net_id.0, false)
                    }
                };
                if let Some(r) = recorder.as_mut() {
                    r.record(Record::Join {
                        tick: tick.0,
                        client_id: join.client_id,
                        entity: net_id,
                        name: join.name,
                        resumed,
                    });
                }
                let link = ClientLink {
                    entity,
                    net_id,
                    session: join.session,
                    outbox: join.outbox,
                };
                clients.0.insert(join.client_id, link);
                changes.0.push(entity);
                // The session may have gone already; then its Leave or Detach follows.
                let _ = join.reply.send(JoinAck {
                    entity: net_id,
                    server_tick: tick.0,
                    resumed,
                });
                debug!(
                    client_id = join.client_id,
                    entity = net_id,
                    resumed,
                    "player joined"
                );
            }
            SimCommand::Detach { client_id, session } => {
                if clients
                    .0
                    .get(&client_id)
                    .is_some_and(|l| l.session == session)
                    && let Some(link) = clients.0.remove(&client_id)
                {
                    changes.0.push(link.entity);
                    // It stands still, not firing, until it comes back or is removed.
                    commands.entity(link.entity).insert((
                        InputBuffer::default(),
                        MoveIntent::default(),
                        Trigger::default(),
                    ));
                    if let Some(r) = recorder.as_mut() {
                        r.record(Record::Detach {
                            tick: tick.0,
                            client_id,
                        });
                    }
                    lingering.0.insert(
                        client_id,
                        LingeringPlayer {
                            entity: link.entity,
                            net_id: link.net_id,
                            session,
                        },
                    );
                    debug!(client_id, "player lingering");
                }
            }
            SimCommand::Leave { client_id, session } => {
                let entity = if clients
                    .0
                    .get(&client_id)
                    .is_some_and(|l| l.session == session)
                {
                    clients.0.remove(&client_id).map(|l| l.entity)
                } else if lingering
                    .0
                    .get(&client_id)
                    .is_some_and(|l| l.session == session)
                {
                    lingering.0.remove(&client_id).map(|l| l.entity)
                } else {
                    None
                };
                if let Some(entity) = entity {
                    changes.0.push(entity);
                    commands.entity(entity).despawn();
                    if let Some(r) = recorder.as_mut() {
                        r.record(Record::Leave {
                            tick: tick.0,
                            client_id,
                        });
                    }
                    debug!(client_id, "player despawned");
                }
            }
            input @ SimCommand::Input { .. } => inputs.push(input),
        }
    }
    inbox.0 = inputs;
}

/// Files each input under its tick: too old (already simulated) and too far ahead
/// (`--input-window`) are dropped and counted; the first input for a tick wins.
pub fn route_inputs(
    mut inbox: ResMut<Inbox>,
    clients: Res<Clients>,
    mut buffers: Query<&mut InputBuffer>,
    tick: Res<Tick>,
    settings: Res<SimSettings>,
    stats: Res<StatsRes>,
) {
    for cmd in inbox.0.drain(..) {
        let SimCommand::Input { client_id, input } = cmd else {
            continue;
        };
        let Some(link) = clients.0.get(&client_id) else {
            continue;
        };
        let Ok(mut buffer) = buffers.get_mut(link.entity) else {
            continue;
        };
        buffer.lead = (i64::from(input.tick) - i64::from(tick.0)).clamp(-128, 127) as i8;
        if input.tick < tick.0 {
            // The client is sending, late: from now on a tick without its input counts.
            buffer.started = true;
            Stats::add(&stats.0.inputs_too_old, 1);
        } else if input.tick - tick.0 > settings.input_window {
            Stats::add(&stats.0.inputs_too_far, 1);
        } else {
            buffer.pending.entry(input.tick).or_insert(input);
        }
    }
}

/// Applies each player's input for this tick, or repeats the last one and counts it late. A
/// player under spawn protection that fires gives its protection up.
pub fn player_intent(
    mut players: Query<(
        &Player,
        &mut InputBuffer,
        &mut MoveIntent,
        &mut Trigger,
        &mut SpawnProtection,
    )>,
    tick: Res<Tick>,
    stats: Res<StatsRes>,
    mut recorder: Option<ResMut<Recorder>>,
) {
    // Recorded in client id order, not storage order: a world restored from a keyframe stores
    // its entities differently and must record the same file.
    let mut applied = Vec::new();
    for (player, mut buffer, mut intent, mut trigger, mut protection) in &mut players {
        let buffer = &mut *buffer;
        // Nothing older than this tick can still be applied.
        while buffer
            .pending
            .first_key_value()
            .is_some_and(|(&t, _)| t < tick.0)
        {
            buffer.pending.pop_first();
        }
        match buffer.pending.remove(&tick.0) {
            Some(input) => {
                if recorder.is_some() {
                    applied.push((player.client_id, input));
                }
                buffer.last = input;
                buffer.last_seq = input.seq;
                // Ticks before the client's first input are not late: it was not playing yet.
                buffer.started = true;
            }
            None if buffer.started => {
                buffer.late += 1;
                Stats::add(&stats.0.inputs_late, 1);
            }
            None => {}
        }
        let input = buffer.last;
        intent.0 = input.movement;
        // A repeated input keeps its buttons (holding fire keeps firing) and its view time.
        *trigger = Trigger {
            rifle: input.buttons.fire(),
            rocket: input.buttons.alt_fire(),
            aim: input.aim,
            view_tick: input.view_tick,
            view_frac: input.view_frac,
        };
        if (trigger.rifle || trigger.rocket) && protection.until != 0 {
            protection.until = 0;
        }
    }
    if let Some(r) = recorder.as_mut() {
        applied.sort_unstable_by_key(|&(client_id, _)| client_id);
        for (client_id, input) in applied {
            r.record(Record::Input {
                tick: tick.0,
                client_id,
                input,
            });
        }
    }
}

/// Snaps every body to the wire's grid, so the state the next tick starts from is exactly
/// what clients reconstruct (see `arena_shared::quant`).
pub fn quantize(mut bodies: Query<&mut Motion>) {
    for mut motion in &mut bodies {
        let b = motion.0;
        motion.0 = Body {
            pos: quant::snap_pos(b.pos),
            vel: quant::snap_vel(b.vel),
        };
    }
}

/// Moves every body through the shared rules.
/// Moves every living player and NPC through the shared rules (projectiles fly in their own
/// phase, the dead stay where they fell).
pub fn movement(
    mut bodies: Query<(&mut Motion, &MoveIntent, &Kind), (Without<Dead>, Without<Projectile>)>,
    obstacles: Res<Obstacles>,
    settings: Res<SimSettings>,
) {
    for (mut motion, intent, kind) in &mut bodies {
        let params = match kind.0 {
            EntityKind::Player => &sim::PLAYER,
            EntityKind::Npc | EntityKind::Projectile => &sim::NPC,
        };
        motion.0 = sim::step(motion.0, intent.0, &obstacles.0, params, settings.dt);
    }
}

/// At a keyframe tick (`--replay-keyframe-ticks`, and the first tick recorded), records the
/// world: what clients would see, and the whole state a re-simulation starts from
/// (`super::state`). Then hands the tick's records to the writer ([`Recorder::flush`]): the
/// last system that records. An exclusive system: it reads every component there is.
pub fn record_keyframe(world: &mut World) {
    let tick = world.resource::<Tick>().0;
    let due = world
        .get_resource_mut::<Recorder>()
        .is_some_and(|mut r| r.keyframe_due(tick));
    let keyframe = due.then(|| super::state::capture(world));
    if let Some(mut r) = world.get_resource_mut::<Recorder>() {
        if let Some((entities, state)) = keyframe {
            r.record(Record::Keyframe {
                tick,
                entities,
                state,
            });
        }
        r.flush();
    }
}

/// Publishes gauges, forgets this tick's link changes and moves to the next tick.
pub fn end_tick(
    mut tick: ResMut<Tick>,
    mut changes: ResMut<LinkChanges>,
    stats: Res<StatsRes>,
    players: Query<(), With<Player>>,
    all: Query<(), With<NetId>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    stats.0.set_entities(all.iter().count() as u64);
    stats.0.tick.store(u64::from(tick.0), Relaxed);
    // Last: it wakes whoever awaits a player count, and they may read the others.
    stats.0.set_players(players.iter().count() as u64);
    changes.0.clear();
    tick.0 = tick.0.wrapping_add(1);
}
