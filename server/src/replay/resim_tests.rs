//! Re-simulation from keyframes, without sockets: a scripted brawl (players firing rifles and
//! rockets among NPCs that chase and shoot back, deaths, respawns, a lost connection and its
//! resume, a leave, a late join) is recorded through the real systems, written to a file, and
//! verified stretch by stretch, each stretch starting from a recorded keyframe's state.

use std::sync::Arc;

use arena_shared::protocol::{Buttons, GameEvent, Input};
use arena_shared::quant::{Aim, MoveDir};
use arena_shared::replay::{self, Header, MAGIC, Record, Role};
use arena_shared::rng::SplitMix64;
use clap::Parser;

use std::path::Path;

use arena_shared::protocol::PROTOCOL_VERSION;

use super::*;
use crate::recording::sim_args;
use crate::tick::handoff_tests::{self, PLAYERS};

const KEYFRAME_TICKS: u32 = 30;
const TICKS: u32 = 420;

fn config() -> Config {
    Config::try_parse_from([
        "arena-server",
        "--no-replays",
        "--seed",
        "5",
        "--npcs",
        "120",
        "--world-size",
        "900",
        "--obstacles",
        "6",
        "--npc-combat",
        "true",
        "--respawn-delay",
        "400ms",
        "--replay-keyframe-ticks",
        &KEYFRAME_TICKS.to_string(),
    ])
    .expect("flags")
}

fn join(tx: &tokio::sync::mpsc::Sender<SimCommand>, client_id: u64, session: u64, resume: bool) {
    tx.try_send(SimCommand::Join(JoinRequest {
        client_id,
        session,
        name: format!("p{client_id}"),
        outbox: Arc::new(Outbox::new(4, 1200)),
        resume,
        reply: tokio::sync::oneshot::channel().0,
    }))
    .expect("inbox");
}

/// Records the brawl through the server's systems; returns the file's records (header first).
fn record_brawl() -> Vec<Record> {
    let config = config();
    let (mut sim, tx, out) = fresh_sim(&config, true);
    let mut rng = SplitMix64::new(77);
    let mut seq = 0;
    let mut records = vec![Record::Header(Header {
        format_version: FORMAT_VERSION,
        protocol_version: PROTOCOL_VERSION,
        seed: config.seed,
        map: config.map(),
        tick_rate: config.tick_rate,
        start_unix_ms: 0,
        first_tick: 1,
        sim_args: sim_args(&config),
    })];
    // Clients 1..=6 play from the start; 7 joins late; 3 loses its connection and resumes;
    // 5 leaves for good.
    let mut playing: Vec<u64> = (1..=6).collect();
    for c in &playing {
        join(&tx, *c, 1, false);
    }
    for tick in 1..=TICKS {
        match tick {
            100 => {
                tx.try_send(SimCommand::Detach {
                    client_id: 3,
                    session: 1,
                })
                .unwrap();
                playing.retain(|&c| c != 3);
            }
            170 => {
                join(&tx, 3, 2, true);
                playing.push(3);
            }
            200 => {
                tx.try_send(SimCommand::Leave {
                    client_id: 5,
                    session: 1,
                })
                .unwrap();
                playing.retain(|&c| c != 5);
            }
            250 => {
                join(&tx, 7, 1, false);
                playing.push(7);
            }
            _ => {}
        }
        for &c in &playing {
            seq += 1;
            // Every player moves and fires, rifle and rockets, in seeded directions; now and
            // then one sends nothing (its last input repeats).
            if rng.below(6) == 0 {
                continue;
            }
            let input = Input {
                seq,
                tick,
                movement: MoveDir::from_vec2(rng.square(-1.0, 1.0)),
                aim: Aim(rng.below(1 << 16) as u16),
                buttons: Buttons(if rng.below(3) == 0 {
                    Buttons::FIRE | Buttons::ALT_FIRE
                } else {
                    Buttons::FIRE
                }),
                view_tick: tick.saturating_sub(1 + rng.below(8)),
                view_frac: rng.below(256) as u8,
            };
            tx.try_send(SimCommand::Input {
                client_id: c,
                input,
            })
            .unwrap();
        }
        sim.tick();
        records.extend(out.drain());
    }
    records
}

fn write(dir: &Path, name: &str, records: &[Record]) -> PathBuf {
    let mut bytes = MAGIC.to_vec();
    for r in records {
        replay::encode_record(r, &mut bytes);
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writable");
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arena-resim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_brawl_verifies_stretch_by_stretch_from_each_keyframe() {
    let records = record_brawl();
    // The brawl is worth verifying: kills, respawns, projectiles in flight at a keyframe, a
    // lingering player at a keyframe.
    let events = |f: fn(&GameEvent) -> bool| {
        records
            .iter()
            .filter(|r| matches!(r, Record::Event { event, .. } if f(event)))
            .count()
    };
    assert!(events(|e| matches!(e, GameEvent::Killed { .. })) >= 3);
    assert!(events(|e| matches!(e, GameEvent::Respawned { .. })) >= 3);
    let states = || {
        records.iter().filter_map(|r| match r {
            Record::Keyframe { state, .. } => Some(state),
            _ => None,
        })
    };
    assert!(states().any(|s| {
        s.entities
            .iter()
            .any(|e| matches!(e.role, Role::Projectile { .. }))
    }));
    assert!(states().any(|s| s.entities.iter().any(|e| matches!(
        e.role,
        Role::Player {
            lingering: true,
            ..
        }
    ))));
    assert!(states().any(|s| s.entities.iter().any(|e| e.respawn_at.is_some())));

    let dir = temp_dir("brawl");
    let path = write(&dir, "brawl.replay", &records);
    let v = verify(std::slice::from_ref(&path)).expect("verifies");
    let keyframes = states().count() as u64;
    // From the start to the first keyframe (tick 1), then from each keyframe to the next;
    // the last keyframe is the last tick.
    assert_eq!(v.segments, keyframes, "{v:?}");
    assert_eq!(v.ticks, TICKS);
    assert_eq!(v.keyframes, keyframes);
    assert_eq!(v.records, records.len() as u64 - 1);
    assert!(v.skipped.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_starts_at_a_keyframe_verifies_alone() {
    let records = record_brawl();
    // What a rotated file holds: its header, then the keyframe it starts at, then the rest.
    let at = records
        .iter()
        .position(|r| matches!(r, Record::Keyframe { tick: 180, .. }))
        .expect("a keyframe at tick 180");
    let mut header = match &records[0] {
        Record::Header(h) => h.clone(),
        _ => unreachable!(),
    };
    header.first_tick = 180;
    let mut file = vec![Record::Header(header)];
    file.extend_from_slice(&records[at..]);
    let dir = temp_dir("rotated");
    let path = write(&dir, "rotated.replay", &file);
    let v = verify(std::slice::from_ref(&path)).expect("verifies");
    assert_eq!(v.ticks, TICKS - 180);
    assert_eq!(v.segments, u64::from((TICKS - 180) / KEYFRAME_TICKS));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_forged_state_is_named_by_tick_and_entity() {
    let mut records = record_brawl();
    // An NPC's generator one step off at the keyframe of tick 240: its stretch, re-simulated
    // from tick 210, does not come to that.
    let (tick, id) = records
        .iter_mut()
        .find_map(|r| match r {
            Record::Keyframe {
                tick: 240, state, ..
            } => {
                let npc = state
                    .entities
                    .iter_mut()
                    .find(|e| matches!(e.role, Role::Npc { .. }))?;
                if let Role::Npc { rng, .. } = &mut npc.role {
                    *rng = rng.wrapping_add(1);
                }
                Some((240, npc.id))
            }
            _ => None,
        })
        .expect("an NPC at tick 240");
    let dir = temp_dir("forged");
    let path = write(&dir, "forged.replay", &records);
    match verify(std::slice::from_ref(&path)) {
        Err(VerifyError::Entity {
            tick: t, entity, ..
        }) => assert_eq!((t, entity), (tick, id)),
        other => panic!("expected a mismatch at tick {tick}, entity {id}: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gap_skips_only_its_stretch() {
    let mut records = record_brawl();
    // The recorder fell behind inside the stretch 61..=90: one input lost.
    let lost = records
        .iter()
        .position(|r| matches!(r, Record::Input { tick: 75, .. }))
        .expect("an input at tick 75");
    records[lost] = Record::Gap {
        tick: 75,
        dropped: 1,
    };
    let dir = temp_dir("gap");
    let path = write(&dir, "gap.replay", &records);
    let v = verify(std::slice::from_ref(&path)).expect("the rest verifies");
    assert_eq!(v.skipped, [(61, 90)]);
    assert_eq!(v.ticks, TICKS - KEYFRAME_TICKS);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn seeking_restores_the_nearest_keyframe_and_lands_on_the_recorded_tick() {
    let records = record_brawl();
    let dir = temp_dir("seek");
    let path = write(&dir, "seek.replay", &records);
    let mut r = Replayer::open(std::slice::from_ref(&path)).expect("opens");
    // Forward, backward, onto a keyframe's tick and just after one: each step after a seek
    // reproduces what was recorded at that tick.
    for target in [200, 95, 121, 120, 300, 2, 419] {
        r.seek(target).expect("seeks");
        assert_eq!(r.tick() + 1, target);
        let step = r.step().expect("steps");
        let recorded = &r.records()[step.recorded.clone()];
        compare_tick(target, recorded, &step.replayed, Tail::Whole)
            .unwrap_or_else(|e| panic!("tick {target}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The replay of a run handed over: the old server's files, then the new server's, which go on
/// under the same run id from the number the old one gave away, verify as one run across the
/// handoff (the new server's first tick records each player's lost connection).
#[tokio::test]
async fn a_run_recorded_across_a_handoff_verifies_over_both_servers_files() {
    let base = std::env::temp_dir().join(format!("arena-handoff-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (a_dir, b_dir) = (base.join("a"), base.join("b"));
    let dir_args = |dir: &std::path::Path| {
        vec![
            "--replay-dir".to_string(),
            dir.display().to_string(),
            "--replay-keyframe-ticks".into(),
            "40".into(),
            "--replay-rotate-mb".into(),
            "0".into(),
        ]
    };
    let a_args = dir_args(&a_dir);
    let (config, a_tx, mut a) =
        handoff_tests::world(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let map = Arc::new(config.map());
    let (recorder, a_writer) =
        crate::recording::start(&config, &map, Arc::new(Stats::default()), None).unwrap();
    let a_files = recorder.files().unwrap();
    a.set_recorder(recorder);
    let mut rng = SplitMix64::new(21);
    let _outboxes: Vec<_> = (1..=PLAYERS)
        .map(|id| handoff_tests::join(&a_tx, id, id, false))
        .collect();
    for seq in 1..=100 {
        let tick = a.world().resource::<crate::game::components::Tick>().0;
        handoff_tests::inputs(&a_tx, &mut rng, tick + 1, seq);
        a.tick();
    }

    // Frozen after tick 100: the state and where the run goes on.
    let (tick, state) = crate::game::state::capture_after_tick(a.world_mut());
    let continues = a_files
        .hand_over(handoff_tests::LONG)
        .await
        .expect("the writer catches up");
    drop(a);
    a_writer.join().unwrap();
    let link = crate::handoff::bundle::RunLink::of(&config, continues);
    let b_args = dir_args(&b_dir);
    let b_config = handoff_tests::config(
        &[
            &["--npcs", "1000", "--world-size", "1024", "--obstacles", "8"][..],
            &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    assert!(link.continues_with(&b_config), "the same simulation flags");
    let (b_tx, b_rx) = tokio::sync::mpsc::channel(1024);
    let (mut b, _) = crate::tick::Simulation::restore_from(
        &b_config,
        map.clone(),
        b_rx,
        Arc::new(Stats::default()),
        None,
        tick,
        &state,
    );
    let (recorder, b_writer) = crate::recording::start(
        &b_config,
        &map,
        Arc::new(Stats::default()),
        Some(link.continuation()),
    )
    .unwrap();
    b.set_recorder(recorder);
    for n in 1..=100u32 {
        if n == 10 {
            for client_id in 1..=PLAYERS {
                handoff_tests::join(&b_tx, client_id, 100 + client_id, true);
            }
        }
        if n > 10 {
            handoff_tests::inputs(&b_tx, &mut rng, tick + n, 100 + n);
        }
        b.tick();
    }
    drop(b);
    b_writer.join().unwrap();

    let id = crate::recording::run_id(continues.run_start_unix_ms);
    let a_paths = crate::recording::run_files(&a_dir, &id).unwrap();
    let b_paths = crate::recording::run_files(&b_dir, &id).unwrap();
    let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        name(&b_paths[0]),
        format!("{id}-{:04}.replay", a_files.last_file() + 1),
        "the new server's first file is the old one's next"
    );
    let first = arena_shared::replay::read(&std::fs::read(&b_paths[0]).unwrap());
    let arena_shared::replay::Record::Header(header) = &first.records[0] else {
        panic!("no header");
    };
    assert_eq!(header.first_tick, tick + 1, "it says where it goes on");
    let both: Vec<_> = a_paths.iter().chain(&b_paths).cloned().collect();
    let verified = verify(&both).unwrap_or_else(|e| panic!("{e}"));
    assert!(verified.skipped.is_empty(), "{verified:?}");
    assert_eq!(
        verified.ticks,
        tick + 100,
        "every tick of both servers: {verified:?}"
    );
    let _ = std::fs::remove_dir_all(&base);
}
