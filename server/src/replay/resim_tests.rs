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
                movement: MoveDir::from_vec2(glam::Vec2::new(
                    rng.range_f32(-1.0, 1.0),
                    rng.range_f32(-1.0, 1.0),
                )),
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
        records.extend(out.try_iter());
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
