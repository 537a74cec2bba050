//! A live handoff's state: its size and the parts of the freeze that are the server's own work
//! (capture, encode, decode, restore), for 1,000 NPCs + 50 players and 5,000 NPCs + 500 players.
//!
//! `cargo bench -p arena-server --bench handoff` (a release build) builds each world as the
//! server does, joins the players with outboxes and plays `WARM_UP_TICKS` ticks of combat (a
//! random walk, the rifle held, rockets now and then), so the state has projectiles, wounded
//! and dead in it and a full lag-compensation history. Then, `RUNS` times: the capture between
//! two ticks (`game::state::capture_after_tick`), the bundle with every seat
//! (`Registry::export`) encoded, decoded (`handoff::bundle::decode`) and restored into a new
//! simulation (`Simulation::restore_from`); the table gives each part's median. BENCHMARKS.md
//! ("Live handoff") records the figures. Under `cargo test --all-targets` it runs one small
//! world twice, as a smoke test.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arena_server::Config;
use arena_server::game::{JoinRequest, SimCommand};
use arena_server::handoff::bundle::{self, Bundle, FORMAT};
use arena_server::net::registry::{Claim, Registry};
use arena_server::outbox::Outbox;
use arena_server::stats::Stats;
use arena_server::tick::Simulation;
use arena_shared::protocol::{Buttons, Input, ResumeToken};
use arena_shared::quant::{Aim, MoveDir};
use arena_shared::rng::SplitMix64;
use clap::Parser;
use tokio::sync::{mpsc, oneshot};

const RUNS: usize = 20;
const WARM_UP_TICKS: u32 = 150;

struct Row {
    npcs: usize,
    players: usize,
    bytes: usize,
    capture: Duration,
    encode: Duration,
    decode: Duration,
    restore: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn measure(npcs: usize, players: usize, runs: usize, warm_up: u32) -> Row {
    let npcs_arg = npcs.to_string();
    let config = Config::try_parse_from(["arena-server", "--npcs", &npcs_arg, "--log", "warn"])
        .expect("valid flags");
    let map = Arc::new(config.map());
    let (tx, rx) = mpsc::channel(players * 2 + 16);
    let mut sim = Simulation::new(&config, map.clone(), rx, Arc::new(Stats::default()), None);
    // Every player holds a seat as on a live server (one address each, like real players).
    let mut registry = Registry::new(players, 0, 10_000);
    let mut outboxes = Vec::with_capacity(players);
    for i in 0..players {
        let client_id = i as u64 + 1;
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
        let mut token = [0u8; 16];
        token[..8].copy_from_slice(&client_id.to_le_bytes());
        let seat = registry
            .admit(
                Claim::Token {
                    client_id,
                    name: &format!("p{i}"),
                },
                ip,
                ResumeToken(token),
            )
            .expect("a seat for every player");
        let outbox = Arc::new(Outbox::new(config.outbox_snapshots, 1200));
        let (reply, _ack) = oneshot::channel();
        tx.try_send(SimCommand::Join(JoinRequest {
            client_id,
            session: seat.session,
            name: seat.name,
            outbox: outbox.clone(),
            resume: false,
            reply,
        }))
        .expect("inbox has room");
        outboxes.push(outbox);
    }
    sim.tick();
    let mut rng = SplitMix64::new(7);
    for n in 0..warm_up {
        let tick = n + 2;
        for i in 0..players {
            let input = Input {
                seq: n + 1,
                tick,
                movement: MoveDir::from_vec2(rng.square(-1.0, 1.0)),
                aim: Aim(rng.below(65536) as u16),
                buttons: Buttons(if rng.below(20) == 0 {
                    Buttons::FIRE | Buttons::ALT_FIRE
                } else {
                    Buttons::FIRE
                }),
                view_tick: tick.saturating_sub(3),
                view_frac: 0,
            };
            let _ = tx.try_send(SimCommand::Input {
                client_id: i as u64 + 1,
                input,
            });
        }
        sim.tick();
        for o in &outboxes {
            o.drain();
        }
    }

    let (mut capture, mut encode, mut decode, mut restore) = (vec![], vec![], vec![], vec![]);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let (tick, sim_state) =
            arena_server::game::state::capture_after_tick(black_box(sim.world_mut()));
        let seats = registry.export(0);
        capture.push(t.elapsed());
        let b = Bundle {
            format: FORMAT,
            tick,
            sim: sim_state,
            seats,
            next_client_id: players as u64 + 1,
            run: None,
        };
        let t = Instant::now();
        let encoded = black_box(b.encode());
        encode.push(t.elapsed());
        bytes = encoded.len();
        let t = Instant::now();
        let back = bundle::decode(&encoded, config.handoff_max_bytes).expect("its own bundle");
        decode.push(t.elapsed());
        assert!(back == b, "the bundle decodes to what was encoded");
        let (_tx, rx) = mpsc::channel(16);
        let t = Instant::now();
        let (restored, _) = Simulation::restore_from(
            &config,
            map.clone(),
            rx,
            Arc::new(Stats::default()),
            None,
            back.tick,
            &back.sim,
        );
        restore.push(t.elapsed());
        // Dropping a world (and its replication pool) is not part of the freeze.
        drop(black_box(restored));
    }
    Row {
        npcs,
        players,
        bytes,
        capture: median(capture),
        encode: median(encode),
        decode: median(decode),
        restore: median(restore),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it.
    let bench = std::env::args().any(|a| a == "--bench");
    let rows: Vec<Row> = if bench {
        vec![
            measure(1_000, 50, RUNS, WARM_UP_TICKS),
            measure(5_000, 500, RUNS, WARM_UP_TICKS),
        ]
    } else {
        vec![measure(100, 5, 2, 10)]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "handoff state, median of {} runs",
        if bench { RUNS } else { 2 }
    );
    println!(
        "{:>6} {:>8} {:>12} {:>11} {:>10} {:>10} {:>11}",
        "NPCs", "players", "bytes", "capture ms", "encode ms", "decode ms", "restore ms"
    );
    for r in rows {
        println!(
            "{:>6} {:>8} {:>12} {:>11.2} {:>10.2} {:>10.2} {:>11.2}",
            r.npcs,
            r.players,
            r.bytes,
            ms(r.capture),
            ms(r.encode),
            ms(r.decode),
            ms(r.restore)
        );
    }
}
