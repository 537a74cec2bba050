//! The simulation without sockets or clocks: commands in, ticks called directly, snapshots out.

use std::sync::Arc;

use arena_shared::protocol::codec::decode_datagram;
use arena_shared::protocol::{EntityKind, Input, ServerDatagram};
use arena_shared::quant::MoveDir;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::game::components::{self, Clients};
use crate::game::{JoinAck, JoinRequest};
use crate::outbox::Outbox;

pub(super) struct Harness {
    pub(super) sim: Simulation,
    pub(super) tx: mpsc::Sender<SimCommand>,
    pub(super) stats: Arc<Stats>,
}

pub(super) fn harness(npcs: u32) -> Harness {
    // Scenes shoot players the tick they join: no spawn protection, except where a test asks.
    harness_with(npcs, &["--spawn-protection", "0s"])
}

/// A harness whose config adds `extra` flags.
pub(super) fn harness_with(npcs: u32, extra: &[&str]) -> Harness {
    // Full-state replication: these tests read their player's state straight from the outbox.
    let npcs = npcs.to_string();
    let mut args = vec![
        "--npcs",
        npcs.as_str(),
        "--obstacles",
        "0",
        "--replication",
        "full",
    ];
    args.extend_from_slice(extra);
    let config = config(&args);
    let map = Arc::new(config.map());
    let (tx, rx) = mpsc::channel(1024);
    let stats = Arc::new(Stats::default());
    Harness {
        sim: Simulation::new(&config, map, rx, stats.clone(), None),
        tx,
        stats,
    }
}

fn config(args: &[&str]) -> Config {
    use clap::Parser;
    Config::try_parse_from(std::iter::once("arena-server").chain(args.iter().copied())).unwrap()
}

pub(super) fn join(h: &mut Harness, client_id: u64) -> (Arc<Outbox>, JoinAck) {
    join_session(h, client_id, client_id, false)
}

/// Joins as session `session` of `client_id`, resuming its entity if `resume`.
fn join_session(
    h: &mut Harness,
    client_id: u64,
    session: u64,
    resume: bool,
) -> (Arc<Outbox>, JoinAck) {
    let outbox = Arc::new(Outbox::new(4, 1200));
    let (reply, mut rx) = oneshot::channel();
    h.tx.try_send(SimCommand::Join(JoinRequest {
        client_id,
        session,
        name: "p".into(),
        outbox: outbox.clone(),
        resume,
        reply,
    }))
    .unwrap();
    h.sim.tick();
    (outbox, rx.try_recv().expect("joined within one tick"))
}

/// `ticks` ticks of client `client_id` pushing right at full deflection, one input a tick.
fn push_right(h: &mut Harness, client_id: u64, ticks: u32) {
    for seq in 0..ticks {
        let input = Input {
            seq,
            tick: now(h),
            movement: MoveDir { x: 127, y: 0 },
            ..Default::default()
        };
        h.tx.try_send(SimCommand::Input { client_id, input })
            .unwrap();
        h.sim.tick();
    }
}

/// The tick the next `tick()` will simulate.
pub(super) fn now(h: &Harness) -> u32 {
    h.sim.world().resource::<components::Tick>().0
}

fn own_state(outbox: &Outbox, entity: u32) -> arena_shared::protocol::EntityState {
    let snaps = outbox.drain();
    let last = snaps.last().expect("a snapshot this tick");
    last.iter()
        .flat_map(|d| match decode_datagram(d) {
            Ok(ServerDatagram::Snapshot(s)) => s.entities,
            other => panic!("expected a full-state part, got {other:?}"),
        })
        .find(|e| e.id == entity)
        .expect("own entity in the full snapshot")
}

#[test]
fn a_joined_player_moves_the_way_its_inputs_push_and_leaves_cleanly() {
    let mut h = harness(10);
    let (outbox, ack) = join(&mut h, 7);
    let start = own_state(&outbox, ack.entity);
    assert_eq!(start.kind, EntityKind::Player);
    push_right(&mut h, 7, 30);
    let end = own_state(&outbox, ack.entity);
    assert!(
        end.pos.x > start.pos.x + 100.0,
        "moved right: {:?} -> {:?}",
        start.pos,
        end.pos
    );
    assert_eq!(end.pos.y, start.pos.y);
    assert_eq!(h.stats.players(), 1);
    assert_eq!(h.stats.entities(), 11);

    h.tx.try_send(SimCommand::Leave {
        client_id: 7,
        session: 7,
    })
    .unwrap();
    h.sim.tick();
    assert_eq!(h.stats.players(), 0);
    assert_eq!(h.stats.entities(), 10, "no entity leaks after leaving");
}

#[test]
fn inputs_apply_at_their_tick_a_missing_one_repeats_and_counts_late_and_bounds_hold() {
    let mut h = harness(0);
    let (outbox, ack) = join(&mut h, 1);
    let down = Input {
        seq: 1,
        tick: now(&h),
        movement: MoveDir { x: 0, y: 127 },
        ..Default::default()
    };
    h.tx.try_send(SimCommand::Input {
        client_id: 1,
        input: down,
    })
    .unwrap();
    h.sim.tick();
    let a = own_state(&outbox, ack.entity);
    h.sim.tick(); // no input for this tick: the last one repeats, counted late
    let b = own_state(&outbox, ack.entity);
    assert!(b.vel.y > a.vel.y, "kept pushing down");
    assert_eq!(Stats::get(&h.stats.inputs_late), 1);

    let t = now(&h);
    let window = 32;
    for (seq, tick) in [(10, t - 1), (11, t + window + 1), (12, t + window)] {
        h.tx.try_send(SimCommand::Input {
            client_id: 1,
            input: Input { seq, tick, ..down },
        })
        .unwrap();
    }
    h.sim.tick();
    assert_eq!(
        Stats::get(&h.stats.inputs_too_old),
        1,
        "a tick already simulated"
    );
    assert_eq!(
        Stats::get(&h.stats.inputs_too_far),
        1,
        "beyond --input-window"
    );
    // The one at the edge of the window waits for its tick; the buffer holds at most the window.
    let world = h.sim.world();
    let held: Vec<usize> = world
        .try_query::<&components::InputBuffer>()
        .unwrap()
        .iter(world)
        .map(|b| b.pending.len())
        .collect();
    assert_eq!(held, vec![1]);
}

#[test]
fn npcs_wander_deterministically_from_the_seed() {
    fn positions(h: &Harness) -> Vec<(u32, u32, u32)> {
        let world = h.sim.world();
        let mut v: Vec<_> = world
            .try_query::<(&components::NetId, &components::Motion)>()
            .unwrap()
            .iter(world)
            .map(|(id, m)| (id.0, m.0.pos.x.to_bits(), m.0.pos.y.to_bits()))
            .collect();
        v.sort_unstable();
        v
    }
    let run = || {
        let mut h = harness(50);
        let spawn = positions(&h);
        for _ in 0..90 {
            h.sim.tick();
        }
        (spawn, positions(&h))
    };
    let (spawn, a) = run();
    let (_, b) = run();
    assert_eq!(a, b, "same seed, same world after 3 s");
    let moved = spawn.iter().zip(&a).filter(|(s, e)| s != e).count();
    assert!(moved >= 40, "only {moved} of 50 NPCs moved in 3 s");
}

#[test]
fn the_schedule_has_no_ambiguous_systems() {
    // Building runs the ambiguity check configured as an error.
    let mut h = harness(1);
    for schedule in &mut h.sim.phases {
        schedule
            .initialize(&mut h.sim.world)
            .expect("no ambiguities");
    }
}

#[test]
fn the_server_moves_a_player_exactly_as_the_client_predicts() {
    use arena_shared::predict::Predictor;
    use arena_shared::rng::SplitMix64;
    let mut h = harness(0);
    // The client builds its own grid from the map, as a welcomed session does.
    let map = arena_shared::obstacle_grid::ObstacleGrid::new(
        &h.sim.world().resource::<components::MapRes>().0,
    );
    let (_outbox, _ack) = join(&mut h, 3);
    let body = |h: &Harness| {
        let world = h.sim.world();
        world
            .try_query::<&components::Motion>()
            .unwrap()
            .iter(world)
            .next()
            .unwrap()
            .0
    };
    let mut predictor = Predictor::new(body(&h), arena_shared::sim::PLAYER, 30);
    let mut rng = SplitMix64::new(4);
    for seq in 1..=300u32 {
        let movement = MoveDir {
            x: rng.below(255) as i8,
            y: rng.below(255) as i8,
        };
        h.tx.try_send(SimCommand::Input {
            client_id: 3,
            input: Input {
                seq,
                tick: now(&h),
                movement,
                ..Default::default()
            },
        })
        .unwrap();
        h.sim.tick();
        let predicted = predictor.apply(seq, movement, &map);
        assert_eq!(
            body(&h),
            predicted,
            "tick {seq}: the ECS path and shared::predict agree bit for bit"
        );
    }
}

#[test]
fn building_snapshots_in_parallel_sends_every_client_the_same_bytes_even_when_helpers_cannot_start()
{
    // 40 clients among 2,000 NPCs, acknowledging every other tick: the simulation thread
    // alone, and with helpers in chunks of 14 (3 threads), and of 8 (5 threads: 64 asked for,
    // MIN_CLIENTS_PER_THREAD each at least) must queue identical datagrams for every client,
    // each built once a tick; the builders' CPU time is counted. And with 3 threads whose
    // helpers the operating system refuses to start (a stack no thread can have), the
    // simulation thread builds every chunk itself, with the same bytes.
    let run = |threads: &str, helpers_start: bool| {
        let config = config(&["--npcs", "2000", "--replication-threads", threads]);
        let map = Arc::new(config.map());
        let (tx, rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let mut h = Harness {
            sim: Simulation::new(&config, map, rx, stats.clone(), None),
            tx,
            stats: stats.clone(),
        };
        if !helpers_start {
            h.sim
                .world_mut()
                .resource_mut::<crate::replication::Replicator>()
                .set_helper_stack(1 << 60);
        }
        let clients: Vec<_> = (1..=40).map(|id| join(&mut h, id).0).collect();
        let mut sent = Vec::new();
        for tick in 0..40 {
            h.sim.tick();
            for (i, outbox) in clients.iter().enumerate() {
                for snapshot in outbox.drain() {
                    sent.push((tick, i, snapshot.as_ref().clone()));
                }
                if tick % 2 == 0 {
                    let t = now(&h) - 1;
                    outbox.record_ack(t);
                }
            }
        }
        let cpu = Stats::get(&stats.replication_cpu_us);
        assert!(
            cpu > 0,
            "{threads} threads: the builders' CPU time is counted"
        );
        let failed = h
            .sim
            .world()
            .resource::<crate::replication::Replicator>()
            .helper_failed();
        assert_eq!(
            failed,
            threads != "1" && !helpers_start,
            "{threads} threads: a helper's failed start is noted, and only then"
        );
        sent
    };
    let one = run("1", true);
    assert!(one.len() >= 40 * 39, "{} snapshots", one.len());
    for threads in ["3", "64"] {
        assert!(
            one == run(threads, true),
            "{threads} threads changed what clients are sent"
        );
    }
    assert!(
        one == run("3", false),
        "helpers that could not start left clients unbuilt or built twice"
    );
}

#[test]
fn a_lost_player_lingers_still_and_unreplicated_then_resumes_its_entity_with_a_full_snapshot() {
    let mut h = harness(0);
    let (outbox, first) = join_session(&mut h, 7, 1, false);
    push_right(&mut h, 7, 5);
    outbox.drain();
    h.tx.try_send(SimCommand::Detach {
        client_id: 7,
        session: 1,
    })
    .unwrap();
    h.sim.tick();
    let parked = h.sim.world().resource::<components::Lingering>().0[&7].entity;
    let at = |h: &Harness| h.sim.world().get::<components::Motion>(parked).unwrap().0;
    // It coasts to a stop (no intent), then stays put.
    for _ in 0..30 {
        h.sim.tick();
    }
    let still = at(&h);
    assert_eq!(still.vel, glam::Vec2::ZERO);
    for _ in 0..10 {
        h.sim.tick();
    }
    assert!(outbox.drain().is_empty(), "no snapshots once detached");
    assert_eq!(at(&h).pos, still.pos, "a lingering player stands still");
    assert_eq!(Stats::get(&h.stats.inputs_late), 0, "nor is it late");
    assert_eq!(h.stats.players(), 1, "its entity stays");

    // A stale message about an older session changes nothing.
    h.tx.try_send(SimCommand::Leave {
        client_id: 7,
        session: 0,
    })
    .unwrap();
    h.sim.tick();
    assert_eq!(h.stats.players(), 1);

    let (outbox, again) = join_session(&mut h, 7, 2, true);
    assert!(again.resumed);
    assert_eq!(again.entity, first.entity, "the same entity");
    // (That the first one is a full snapshot, in delta mode, the end-to-end resume test checks.)
    assert!(
        !outbox.drain().is_empty(),
        "snapshots go to the new session"
    );
    // The old session's late goodbye does not remove the resumed player.
    h.tx.try_send(SimCommand::Leave {
        client_id: 7,
        session: 1,
    })
    .unwrap();
    h.sim.tick();
    assert_eq!(h.stats.players(), 1);
}

#[test]
fn the_grace_period_ends_in_removal_and_a_join_without_resume_gets_a_new_entity() {
    let mut h = harness(0);
    let (_, first) = join_session(&mut h, 7, 1, false);
    h.tx.try_send(SimCommand::Detach {
        client_id: 7,
        session: 1,
    })
    .unwrap();
    h.sim.tick();
    h.tx.try_send(SimCommand::Leave {
        client_id: 7,
        session: 1,
    })
    .unwrap();
    h.sim.tick();
    assert_eq!(h.stats.players(), 0, "removed once its grace is over");
    assert!(
        h.sim
            .world()
            .resource::<components::Lingering>()
            .0
            .is_empty()
    );

    let (_, second) = join_session(&mut h, 7, 2, false);
    h.tx.try_send(SimCommand::Detach {
        client_id: 7,
        session: 2,
    })
    .unwrap();
    h.sim.tick();
    // Its grace ran out in the registry while the Leave was still on its way.
    let (_, third) = join_session(&mut h, 7, 3, false);
    assert!(!second.resumed && !third.resumed);
    assert!(first.entity != second.entity && second.entity != third.entity);
    assert_eq!(h.stats.players(), 1, "the old entity went");
}

/// The baseline of each delta snapshot queued since the last drain (0: a full snapshot).
fn baselines(outbox: &Outbox) -> Vec<u32> {
    outbox
        .drain()
        .iter()
        .flat_map(|snapshot| snapshot.iter())
        .map(|d| match decode_datagram(d) {
            Ok(ServerDatagram::Delta(_, delta)) => delta.baseline,
            other => panic!("expected a delta snapshot, got {other:?}"),
        })
        .collect()
}

/// Acknowledges the newest tick simulated, then runs one tick.
fn ack_and_tick(h: &mut Harness, outbox: &Outbox) {
    outbox.record_ack(now(h) - 1);
    h.sim.tick();
}

#[test]
fn every_link_gets_its_own_replica_so_a_resume_starts_from_a_full_snapshot_and_a_detach_stops_them()
{
    // Delta replication (the default): what a client is sent depends on what it acknowledged.
    let config = config(&["--npcs", "3", "--obstacles", "0"]);
    let map = Arc::new(config.map());
    let (tx, rx) = mpsc::channel(1024);
    let stats = Arc::new(Stats::default());
    let mut h = Harness {
        sim: Simulation::new(&config, map, rx, stats.clone(), None),
        tx,
        stats,
    };
    let has_replica =
        |h: &Harness, entity: Entity| h.sim.world().get::<replication::Replica>(entity).is_some();
    let entity_of = |h: &Harness| h.sim.world().resource::<Clients>().0[&7].entity;

    let (first, _) = join_session(&mut h, 7, 1, false);
    assert_eq!(
        baselines(&first),
        [0],
        "a new client starts from a full snapshot"
    );
    ack_and_tick(&mut h, &first);
    let acked = baselines(&first);
    assert!(acked.len() == 1 && acked[0] != 0, "then deltas: {acked:?}");
    let entity = entity_of(&h);

    // A resume while the old session's link is still there (its Detach not yet arrived): the
    // new session knows nothing of what the old one acknowledged.
    let (second, again) = join_session(&mut h, 7, 2, true);
    assert!(again.resumed);
    assert_eq!(
        baselines(&second),
        [0],
        "a resumed client starts from a full snapshot"
    );
    assert!(
        first.drain().is_empty(),
        "nothing more for the replaced session"
    );
    ack_and_tick(&mut h, &second);
    assert!(baselines(&second).iter().all(|&b| b != 0));

    h.tx.try_send(SimCommand::Detach {
        client_id: 7,
        session: 2,
    })
    .unwrap();
    h.sim.tick();
    assert!(second.drain().is_empty(), "no snapshots once detached");
    assert!(
        !has_replica(&h, entity),
        "a detached player keeps no replica"
    );

    let (third, _) = join_session(&mut h, 7, 3, true);
    assert_eq!(entity_of(&h), entity);
    assert_eq!(baselines(&third), [0], "resumed after a detach: full");
    ack_and_tick(&mut h, &third);
    assert!(baselines(&third).iter().all(|&b| b != 0));

    // The connection drops and the player resumes within one tick.
    h.tx.try_send(SimCommand::Detach {
        client_id: 7,
        session: 3,
    })
    .unwrap();
    let (fourth, _) = join_session(&mut h, 7, 4, true);
    assert_eq!(
        baselines(&fourth),
        [0],
        "detached and resumed in one tick: full"
    );
    assert!(third.drain().is_empty());
    let built = Stats::get(&h.stats.snapshots_built);
    h.sim.tick();
    assert_eq!(
        Stats::get(&h.stats.snapshots_built) - built,
        1,
        "one client, one snapshot a tick"
    );

    fourth.drain();

    h.tx.try_send(SimCommand::Leave {
        client_id: 7,
        session: 4,
    })
    .unwrap();
    h.sim.tick();
    assert_eq!(h.stats.players(), 0);
    assert!(
        fourth.drain().is_empty(),
        "nothing from the leave's tick on"
    );
}

#[test]
fn replications_gauges_read_nothing_held_once_the_last_client_has_left() {
    let mut h = harness_with(10, &["--replication", "delta"]);
    let (_outbox, _ack) = join(&mut h, 7);
    for _ in 0..3 {
        h.sim.tick();
    }
    let held = || Stats::get(&h.stats.replication_view_bytes);
    assert!(held() > 0, "a client's views are counted while it plays");
    h.tx.try_send(SimCommand::Leave {
        client_id: 7,
        session: 7,
    })
    .unwrap();
    h.sim.tick();
    h.sim.tick();
    assert_eq!(h.stats.players(), 0);
    assert_eq!(
        (held(), Stats::get(&h.stats.replication_views_whole)),
        (0, 0),
        "nobody is left to hold views for"
    );
}

/// Snapshots counted between rankings for a client whose budget is full, acknowledging each
/// snapshot at once, over `ticks` ticks among 3,000 NPCs on a small map.
fn snapshots_between_rankings(rerank_ticks: &str, ticks: u32) -> u64 {
    let mut h = harness_with(
        3000,
        &[
            "--replication",
            "delta",
            "--world-size",
            "1200",
            "--client-kbps",
            "16",
            "--rerank-ticks",
            rerank_ticks,
        ],
    );
    let (outbox, _ack) = join(&mut h, 7);
    for _ in 0..ticks {
        h.sim.tick();
        outbox.drain();
        // The tick just built: the clock has moved on to the next.
        outbox.record_ack(now(&h) - 1);
    }
    assert_eq!(
        Stats::get(&h.stats.snapshots_built),
        u64::from(ticks) + 1,
        "one snapshot a tick"
    );
    Stats::get(&h.stats.snapshots_between_rankings)
}

#[test]
fn a_full_budget_makes_every_other_snapshot_between_rankings_and_the_metric_counts_them() {
    let between = snapshots_between_rankings("2", 40);
    assert!(
        (15..=20).contains(&between),
        "{between} of 40 between rankings"
    );
    assert_eq!(snapshots_between_rankings("1", 40), 0, "ranked every tick");
}
