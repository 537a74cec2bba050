//! Combat in the simulation, without sockets or clocks: scenes set up in the world, inputs in,
//! ticks called directly, events and state read back.

use std::collections::BTreeMap;
use std::sync::Arc;

use arena_shared::combat::{self, HIT_RADIUS, RIFLE, ROCKET};
use arena_shared::protocol::{Buttons, EntityKind, GameEvent, Input};
use arena_shared::quant::{self, Aim, MoveDir};
use arena_shared::sim::Body;
use bevy_ecs::prelude::*;
use glam::Vec2;

use super::tests::{Harness, harness, harness_with, join, now};
use crate::game::combat::{Dead, Health, NpcBrain, Projectile, SpawnProtection};
use crate::game::components::{Kind, MapRes, Motion, NetId};
use crate::outbox::Outbox;
use crate::stats::Stats;

fn entity(h: &mut Harness, id: u32) -> Entity {
    let world = h.sim.world_mut();
    let mut q = world.query::<(Entity, &NetId)>();
    q.iter(world)
        .find(|(_, n)| n.0 == id)
        .map(|(e, _)| e)
        .expect("entity with this id")
}

fn place(h: &mut Harness, id: u32, pos: Vec2) {
    let e = entity(h, id);
    h.sim.world_mut().get_mut::<Motion>(e).unwrap().0 = Body {
        pos,
        vel: Vec2::ZERO,
    };
}

fn pos(h: &mut Harness, id: u32) -> Vec2 {
    let e = entity(h, id);
    h.sim.world().get::<Motion>(e).unwrap().0.pos
}

fn health(h: &mut Harness, id: u32) -> i32 {
    let e = entity(h, id);
    h.sim.world().get::<Health>(e).unwrap().0
}

fn input(h: &Harness, client_id: u64, input: Input) {
    h.tx.try_send(crate::game::SimCommand::Input { client_id, input })
        .unwrap();
}

/// An input for the tick about to run: moving, firing, aiming from `from` at `at`, seeing
/// others as of `view_tick`.
fn shot(h: &Harness, seq: u32, buttons: u8, from: Vec2, at: Vec2, view_tick: u32) -> Input {
    let d = at - from;
    Input {
        seq,
        tick: now(h),
        buttons: Buttons(buttons),
        aim: Aim::from_radians(d.y.atan2(d.x)),
        view_tick,
        ..Default::default()
    }
}

/// Two players: A (client 1) at `a_at` and B (client 2) at `b_at`, standing.
struct Duel {
    a_out: Arc<Outbox>,
    a: u32,
    b_out: Arc<Outbox>,
    b: u32,
}

fn duel(h: &mut Harness, a_at: Vec2, b_at: Vec2) -> Duel {
    let (a_out, a) = join(h, 1);
    let (b_out, b) = join(h, 2);
    place(h, a.entity, a_at);
    place(h, b.entity, b_at);
    Duel {
        a_out,
        a: a.entity,
        b_out,
        b: b.entity,
    }
}

fn set_health(h: &mut Harness, id: u32, hp: i32) {
    let e = entity(h, id);
    h.sim.world_mut().get_mut::<Health>(e).unwrap().0 = hp;
}

/// A (client 1) fires `buttons` from `from` at `at`, seeing the present, and the tick runs.
fn fire_now(h: &mut Harness, buttons: u8, from: Vec2, at: Vec2) {
    let i = shot(h, 1, buttons, from, at, now(h));
    input(h, 1, i);
    h.sim.tick();
}

fn events(outbox: &Outbox) -> Vec<GameEvent> {
    let mut out = Vec::new();
    outbox.drain_events(&mut out);
    out
}

fn hits_on(events: &[GameEvent], target: u32) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, GameEvent::Hit { target: t, .. } if *t == target))
        .count()
}

/// One tick of the lag-compensation scene: B (client 2) runs right, A (client 1) maybe fires;
/// B's position after the tick is filed under the tick.
fn run(
    h: &mut Harness,
    seq: &mut u32,
    seen: &mut BTreeMap<u32, Vec2>,
    b_id: u32,
    shot: Option<Input>,
) {
    *seq += 1;
    input(
        h,
        2,
        Input {
            seq: *seq,
            tick: now(h),
            movement: MoveDir { x: 127, y: 0 },
            ..Default::default()
        },
    );
    if let Some(i) = shot {
        input(h, 1, i);
    }
    let t = now(h);
    h.sim.tick();
    seen.insert(t, pos(h, b_id));
}

#[test]
fn a_rifle_shot_hits_where_the_shooter_saw_its_target_within_the_rewind_cap() {
    let mut h = harness(0);
    let shooter = Vec2::new(1000.0, 1000.0);
    let Duel { a_out, b: b_id, .. } = duel(&mut h, shooter, Vec2::new(800.0, 1400.0));
    // B runs across A's view, left to right, 400 units away: ~10.7 units a tick at full speed.
    let mut seen = BTreeMap::new();
    let mut seq = 0;
    for _ in 0..20 {
        run(&mut h, &mut seq, &mut seen, b_id, None);
    }
    events(&a_out);

    // Aimed where A's view (4 ticks back, under the 6-tick cap) had B: a hit, though B has
    // moved ~43 units since.
    let t = now(&h);
    let view = t - 4;
    assert!(seen[&(t - 1)].distance(seen[&view]) > 2.0 * HIT_RADIUS);
    let aim = shot(&h, 1, Buttons::FIRE, shooter, seen[&view], view);
    run(&mut h, &mut seq, &mut seen, b_id, Some(aim));
    assert_eq!(hits_on(&events(&a_out), b_id), 1, "hit as seen");
    assert_eq!(health(&mut h, b_id), combat::PLAYER_HEALTH - RIFLE.damage);

    // Once the rifle is ready again: A fires at where B was `aim_back` ticks ago, claiming to
    // see the world as of `view_back` ticks ago; the hits on B.
    let mut volley = |h: &mut Harness, shot_seq: u32, aim_back: u32, view_back: u32| {
        for _ in 0..RIFLE.cooldown_ticks - 1 {
            run(h, &mut seq, &mut seen, b_id, None);
        }
        let t = now(h);
        let aim = shot(
            h,
            shot_seq,
            Buttons::FIRE,
            shooter,
            seen[&(t - aim_back)],
            t - view_back,
        );
        run(h, &mut seq, &mut seen, b_id, Some(aim));
        hits_on(&events(&a_out), b_id)
    };
    // The same 4-tick-old picture, but claiming to see the present: tested now, a miss.
    assert_eq!(volley(&mut h, 2, 4, 0), 0, "where it no longer is");
    // A view 10 ticks old is tested at the 6-tick cap: aimed at the 10-tick-old picture, a
    // miss; aimed at the picture at the cap, a hit.
    assert_eq!(volley(&mut h, 3, 10, 10), 0, "too far back");
    assert_eq!(volley(&mut h, 4, 6, 10), 1, "tested at the cap");
}

#[test]
fn holding_fire_fires_at_the_rifles_rate_only() {
    let mut h = harness(0);
    let (_, a) = join(&mut h, 1);
    place(&mut h, a.entity, Vec2::new(500.0, 500.0));
    for seq in 1..=30 {
        let i = shot(&h, seq, Buttons::FIRE, Vec2::ZERO, Vec2::X, now(&h));
        input(&h, 1, i);
        h.sim.tick();
    }
    assert_eq!(
        Stats::get(&h.stats.shots_fired),
        u64::from(30u32.div_ceil(RIFLE.cooldown_ticks))
    );
}

#[test]
fn a_rocket_flies_the_same_on_a_client_stepping_the_shared_rules_and_hits_its_target() {
    let mut h = harness(0);
    let target = Vec2::new(1400.0, 1003.0);
    let from = Vec2::new(1000.0, 1000.0);
    let Duel { a_out, b, .. } = duel(&mut h, from, target);
    fire_now(&mut h, Buttons::ALT_FIRE, from, target);
    // What a client is sent each tick: the projectile's quantized state.
    let mut flight = Vec::new();
    loop {
        let world = h.sim.world_mut();
        let mut q = world.query_filtered::<(&Motion, &Kind), With<Projectile>>();
        let Some((m, kind)) = q.iter(world).next() else {
            break;
        };
        assert_eq!(kind.0, EntityKind::Projectile);
        flight.push(m.0);
        assert!(flight.len() <= ROCKET.lifetime_ticks as usize, "it ends");
        h.sim.tick();
    }
    assert!(flight.len() > 10, "{} ticks in flight", flight.len());
    // The client: from the first state it saw, the same function gives the same positions,
    // bit for bit, and the same impact on the same tick.
    let map = h.sim.world().resource::<MapRes>().0.clone();
    let dt = 1.0 / 30.0;
    let mut body = flight[0];
    for (i, server) in flight.iter().enumerate().skip(1) {
        let step =
            combat::projectile_step(body.pos, body.vel, dt, ROCKET.radius, &map, [(b, target)]);
        assert!(
            step.hit.is_none(),
            "the client sees no impact before the server"
        );
        body.pos = quant::snap_pos(step.pos);
        assert_eq!(
            (body.pos.x.to_bits(), body.pos.y.to_bits()),
            (server.pos.x.to_bits(), server.pos.y.to_bits()),
            "tick {i} of the flight"
        );
    }
    let last = combat::projectile_step(body.pos, body.vel, dt, ROCKET.radius, &map, [(b, target)]);
    assert_eq!(last.hit, Some(combat::Impact::Target(b)));
    assert_eq!(health(&mut h, b), combat::PLAYER_HEALTH - ROCKET.damage);
    assert_eq!(hits_on(&events(&a_out), b), 1);
    assert_eq!(h.stats.entities(), 2, "the rocket is gone");
}

#[test]
fn a_kill_hides_the_victim_scores_and_tells_both_then_it_respawns_away_from_its_killer() {
    let mut h = harness(0);
    let shooter = Vec2::new(1000.0, 1000.0);
    let victim = Vec2::new(1200.0, 1000.0);
    let Duel { a_out, a, b_out, b } = duel(&mut h, shooter, victim);
    set_health(&mut h, b, RIFLE.damage);
    fire_now(&mut h, Buttons::FIRE, shooter, victim);
    let e = entity(&mut h, b);
    assert!(h.sim.world().get::<Dead>(e).is_some());
    let kill = GameEvent::Killed {
        killer: a,
        victim: b,
    };
    let (to_a, to_b) = (events(&a_out), events(&b_out));
    assert!(
        to_a.contains(&kill) && to_b.contains(&kill),
        "{to_a:?} {to_b:?}"
    );
    assert!(to_a.contains(&GameEvent::Score {
        kills: 1,
        deaths: 0
    }));
    assert!(to_b.contains(&GameEvent::Score {
        kills: 0,
        deaths: 1
    }));
    // Hidden: not in snapshots, not hittable, not moving.
    h.sim.tick();
    let snap = a_out.drain();
    let seen: Vec<u32> = snap
        .last()
        .unwrap()
        .iter()
        .flat_map(
            |d| match arena_shared::protocol::codec::decode_datagram(d) {
                Ok(arena_shared::protocol::ServerDatagram::Snapshot(s)) => s.entities,
                _ => Vec::new(),
            },
        )
        .map(|s| s.id)
        .collect();
    assert!(!seen.contains(&b), "{seen:?}");
    let respawn_ticks = h
        .sim
        .world()
        .resource::<crate::game::combat::CombatSettings>()
        .respawn_ticks;
    for _ in 0..respawn_ticks {
        h.sim.tick();
    }
    assert!(h.sim.world().get::<Dead>(e).is_none(), "back");
    assert_eq!(health(&mut h, b), combat::PLAYER_HEALTH);
    let back = events(&b_out)
        .into_iter()
        .find_map(|ev| match ev {
            GameEvent::Respawned { entity, pos, .. } => Some((entity, pos)),
            _ => None,
        })
        .expect("told where it is back");
    assert_eq!(back.0, b);
    assert_eq!(back.1, pos(&mut h, b));
    assert!(
        back.1.distance(shooter) > 600.0,
        "respawned {:.0} units from its killer",
        back.1.distance(shooter)
    );
}

#[test]
fn an_npc_notices_a_player_closes_in_and_fires_back() {
    let mut h = harness(1);
    let (p_out, p) = join(&mut h, 1);
    let npc = {
        let world = h.sim.world_mut();
        let mut q = world.query::<(&NetId, &Kind)>();
        q.iter(world)
            .find(|(_, k)| k.0 == EntityKind::Npc)
            .map(|(n, _)| n.0)
            .unwrap()
    };
    place(&mut h, npc, Vec2::new(1000.0, 1000.0));
    place(&mut h, p.entity, Vec2::new(1300.0, 1000.0));
    for _ in 0..60 {
        h.sim.tick();
    }
    let d = pos(&mut h, npc).distance(pos(&mut h, p.entity));
    assert!(d < 250.0, "it closed in: {d:.0} units");
    let bolts = events(&p_out)
        .iter()
        .filter(|e| matches!(e, GameEvent::Hit { attacker, .. } if *attacker == npc))
        .count();
    assert!(bolts >= 1, "its bolts hit a player standing still");
    assert!(health(&mut h, p.entity) < combat::PLAYER_HEALTH);
}

#[test]
fn a_rocket_that_kills_after_its_shooter_died_still_scores_for_it() {
    let mut h = harness(0);
    let (from, to) = (Vec2::new(1000.0, 1000.0), Vec2::new(1300.0, 1000.0));
    let Duel { a_out, a, b, .. } = duel(&mut h, from, to);
    set_health(&mut h, b, ROCKET.damage);
    fire_now(&mut h, Buttons::ALT_FIRE, from, to);
    // The shooter dies while its rocket flies.
    let ea = entity(&mut h, a);
    h.sim.world_mut().entity_mut(ea).insert(Dead {
        respawn_at: u32::MAX,
    });
    for _ in 0..ROCKET.lifetime_ticks {
        h.sim.tick();
    }
    let eb = entity(&mut h, b);
    assert!(h.sim.world().get::<Dead>(eb).is_some(), "the rocket killed");
    let told = events(&a_out);
    assert!(
        told.contains(&GameEvent::Killed {
            killer: a,
            victim: b
        }) && told.contains(&GameEvent::Score {
            kills: 1,
            deaths: 0
        }),
        "{told:?}"
    );
}

/// The NPCs' ids, lowest first.
fn npc_ids(h: &mut Harness) -> Vec<u32> {
    let world = h.sim.world_mut();
    let mut q = world.query::<(&NetId, &Kind)>();
    let mut ids: Vec<u32> = q
        .iter(world)
        .filter(|(_, k)| k.0 == EntityKind::Npc)
        .map(|(n, _)| n.0)
        .collect();
    ids.sort_unstable();
    ids
}

/// The living NPCs chasing `target`, lowest id first.
fn chasers_of(h: &mut Harness, target: u32) -> Vec<u32> {
    let world = h.sim.world_mut();
    let mut q = world.query_filtered::<(&NetId, &NpcBrain), Without<Dead>>();
    let mut ids: Vec<u32> = q
        .iter(world)
        .filter(|(_, b)| b.target == Some(target))
        .map(|(n, _)| n.0)
        .collect();
    ids.sort_unstable();
    ids
}

fn projectiles(h: &mut Harness) -> usize {
    let world = h.sim.world_mut();
    world.query::<&Projectile>().iter(world).count()
}

#[test]
fn npcs_look_around_an_eighth_at_a_time_not_all_on_one_tick() {
    // 80 NPCs and nobody to chase: each looks once every NPC_LOOK_TICKS ticks, and as many
    // look on each tick.
    let mut h = harness(80);
    let looks = |h: &mut Harness| -> BTreeMap<u32, u32> {
        let world = h.sim.world_mut();
        let mut q = world.query::<(&NetId, &NpcBrain)>();
        q.iter(world).map(|(n, b)| (n.0, b.next_look)).collect()
    };
    let mut before = looks(&mut h);
    let mut looked: BTreeMap<u32, u32> = BTreeMap::new();
    for _ in 0..3 * combat::NPC_LOOK_TICKS {
        h.sim.tick();
        let after = looks(&mut h);
        let this_tick = after
            .iter()
            .filter(|(id, next)| before[*id] != **next)
            .count();
        assert_eq!(
            this_tick,
            80 / combat::NPC_LOOK_TICKS as usize,
            "tick {}",
            now(&h)
        );
        for (id, next) in &after {
            if before[id] != *next {
                *looked.entry(*id).or_default() += 1;
            }
        }
        before = after;
    }
    assert_eq!(looked.len(), 80);
    assert!(looked.values().all(|&n| n == 3), "{looked:?}");
}

#[test]
fn a_player_under_spawn_protection_takes_no_damage_and_no_npc_picks_it_until_it_runs_out() {
    let mut h = harness_with(1, &["--spawn-protection", "500ms"]);
    // The NPC is 180 units from B and 520 from A, beyond the 400 it notices from, and wanders
    // at most 150 units before it looks again after B's protection: B is the one it can pick.
    let (a_at, b_at) = (Vec2::new(600.0, 1000.0), Vec2::new(1000.0, 1000.0));
    let Duel { b_out, b, .. } = duel(&mut h, a_at, b_at);
    let npc = npc_ids(&mut h)[0];
    place(&mut h, npc, Vec2::new(1100.0, 1150.0));
    // A is shot at the tick B is protected: nothing lands, nobody is told of a hit.
    fire_now(&mut h, Buttons::FIRE, a_at, b_at);
    assert_eq!(health(&mut h, b), combat::PLAYER_HEALTH);
    assert_eq!(hits_on(&events(&b_out), b), 0);
    // The NPC next to B ignores it while it is protected...
    let e = entity(&mut h, b);
    let until = h.sim.world().get::<SpawnProtection>(e).unwrap().until;
    while now(&h) < until {
        assert_eq!(chasers_of(&mut h, b), [] as [u32; 0], "tick {}", now(&h));
        h.sim.tick();
    }
    // ...and picks it within one look once the protection is over.
    for _ in 0..=combat::NPC_LOOK_TICKS {
        h.sim.tick();
    }
    assert_eq!(chasers_of(&mut h, b), [npc]);
    // Now a shot lands.
    let b_now = pos(&mut h, b);
    fire_now(&mut h, Buttons::FIRE, a_at, b_now);
    assert!(health(&mut h, b) < combat::PLAYER_HEALTH);
}

#[test]
fn a_protected_player_that_fires_gives_its_protection_up() {
    let mut h = harness_with(0, &["--spawn-protection", "10s"]);
    let (a_at, b_at) = (Vec2::new(1000.0, 1000.0), Vec2::new(1200.0, 1000.0));
    let Duel { a, b, .. } = duel(&mut h, a_at, b_at);
    // B fires (at nothing in particular): it is fair game from this tick on.
    let i = shot(&h, 1, Buttons::FIRE, b_at, Vec2::new(1200.0, 0.0), now(&h));
    input(&h, 2, i);
    h.sim.tick();
    let e = entity(&mut h, b);
    assert_eq!(h.sim.world().get::<SpawnProtection>(e).unwrap().until, 0);
    fire_now(&mut h, Buttons::FIRE, a_at, b_at);
    assert_eq!(health(&mut h, b), combat::PLAYER_HEALTH - RIFLE.damage);
    // A never fired before that shot: it stayed protected until it did.
    let ea = entity(&mut h, a);
    assert_eq!(h.sim.world().get::<SpawnProtection>(ea).unwrap().until, 0);
}

#[test]
fn at_most_npc_max_engaged_npcs_chase_one_player_the_lowest_ids_first() {
    let mut h = harness_with(
        8,
        &[
            "--spawn-protection",
            "0s",
            "--npc-max-engaged",
            "2",
            "--npc-reaction",
            "10s",
        ],
    );
    let (_, p) = join(&mut h, 1);
    let centre = Vec2::new(2000.0, 2000.0);
    place(&mut h, p.entity, centre);
    // Eight NPCs in a ring 200 units out, the highest ids nearest: the cap, not the distance,
    // decides who chases.
    let npcs = npc_ids(&mut h);
    for (i, &id) in npcs.iter().enumerate() {
        let angle = i as f32 * std::f32::consts::TAU / 8.0;
        let r = 250.0 - 5.0 * i as f32;
        place(&mut h, id, centre + r * Vec2::new(angle.cos(), angle.sin()));
        // All look on the same tick, the next but one, once the grid has them where they
        // were placed (NPCs look in turn, by id, an eighth a tick): among those looking at
        // once, the lowest ids pick first.
        let e = entity(&mut h, id);
        let at = now(&h) + 1;
        h.sim.world_mut().get_mut::<NpcBrain>(e).unwrap().next_look = at;
    }
    h.sim.tick();
    h.sim.tick();
    assert_eq!(chasers_of(&mut h, p.entity), npcs[..2]);
    // One of them dies: another takes its place within a look, never a third at once.
    let first = entity(&mut h, npcs[0]);
    h.sim.world_mut().entity_mut(first).insert(Dead {
        respawn_at: u32::MAX,
    });
    h.sim.tick();
    assert_eq!(chasers_of(&mut h, p.entity), npcs[1..2]);
    for _ in 0..=combat::NPC_LOOK_TICKS {
        h.sim.tick();
        assert!(chasers_of(&mut h, p.entity).len() <= 2);
    }
    assert_eq!(chasers_of(&mut h, p.entity), npcs[1..3]);
}

#[test]
fn an_npc_that_notices_a_player_waits_its_reaction_time_before_its_first_bolt() {
    let mut h = harness_with(1, &["--spawn-protection", "0s", "--npc-reaction", "1s"]);
    let (_, p) = join(&mut h, 1);
    let npc = npc_ids(&mut h)[0];
    place(&mut h, npc, Vec2::new(1000.0, 1000.0));
    place(&mut h, p.entity, Vec2::new(1200.0, 1000.0));
    while chasers_of(&mut h, p.entity).is_empty() {
        assert!(
            now(&h) < 2 * combat::NPC_LOOK_TICKS + 2,
            "noticed within a look"
        );
        h.sim.tick();
    }
    let reaction = h
        .sim
        .world()
        .resource::<crate::game::combat::CombatSettings>()
        .npc_reaction_ticks;
    assert_eq!(reaction, 30);
    // In range and in sight all along, yet no bolt for a second...
    for _ in 1..reaction {
        h.sim.tick();
        assert_eq!(projectiles(&mut h), 0, "fired before its reaction time");
    }
    // ...then it fires.
    h.sim.tick();
    h.sim.tick();
    assert_eq!(projectiles(&mut h), 1);
}

/// Removal messages held by the world: (written since it was made, held now).
fn removals(h: &Harness) -> (usize, usize) {
    h.sim
        .world()
        .removed_components()
        .iter()
        .fold((0, 0), |(written, held), (_, messages)| {
            (
                written + messages.oldest_message_count() + messages.len(),
                held + messages.len(),
            )
        })
}

#[test]
fn what_a_fight_despawns_leaves_nothing_behind_two_ticks_after_it() {
    // bevy_ecs writes a message for every component of an entity despawned or removed, for
    // `RemovedComponents` readers, and lets it go only at `World::clear_trackers`. Arena reads
    // none, but a world never cleared keeps every one for the server's life: 30-44 KB a
    // second at 200 bots (BENCHMARKS.md), a leak that grew without bound.
    let mut h = harness(0);
    let (_, a) = join(&mut h, 1);
    let from = Vec2::new(1000.0, 1000.0);
    place(&mut h, a.entity, from);
    for seq in 1..=90 {
        let i = shot(&h, seq, Buttons::ALT_FIRE, from, from + Vec2::X, now(&h));
        input(&h, 1, i);
        h.sim.tick();
    }
    // Fire released (a missing input repeats the last one), then the rockets' flights end.
    let i = shot(&h, 91, 0, from, from + Vec2::X, now(&h));
    input(&h, 1, i);
    for _ in 0..=ROCKET.lifetime_ticks {
        h.sim.tick();
    }
    assert_eq!(projectiles(&mut h), 0);
    h.sim.tick();
    h.sim.tick();
    let (written, held) = removals(&h);
    assert!(
        written >= 10,
        "the rockets despawned, each writing its removals: {written}"
    );
    assert_eq!(held, 0, "of {written} removals written");
}
