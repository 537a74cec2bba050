//! Tick time of the whole game in combat, split by phase: `cargo bench --bench combat`.
//!
//! The real `Simulation` (no sockets): PLAYERS players joined with outboxes drained and
//! acknowledged every tick (instant delivery: each snapshot is a delta against the last; events
//! beyond `--event-queue` are dropped and counted),
//! NPCS NPCs that fight back, on the default 4096-unit map. Every player sends one input a
//! tick: a random walk, the rifle held, a rocket now and then, aimed at a random angle,
//! seeing the world 3 ticks back (lag compensation rewinds every shot). After a warm-up the
//! time of each phase is recorded per tick; the table gives the mean and the 99th percentile.
//!
//! Arguments (optional): PLAYERS NPCS TICKS. Defaults: 1000 5000 300.

use std::sync::Arc;
use std::time::Duration;

use arena_server::Config;
use arena_server::game::{JoinRequest, SimCommand};
use arena_server::outbox::Outbox;
use arena_server::stats::Stats;
use arena_server::tick::{Phase, Simulation};
use arena_shared::protocol::{Buttons, Input};
use arena_shared::quant::{Aim, MoveDir};
use arena_shared::rng::SplitMix64;
use clap::Parser;
use tokio::sync::{mpsc, oneshot};

const WARM_UP_TICKS: usize = 60;

fn main() {
    // `cargo bench` passes `--bench`; only numbers are ours.
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let players = args.first().copied().unwrap_or(1000);
    let npcs = args.get(1).copied().unwrap_or(5000);
    let ticks = args.get(2).copied().unwrap_or(300);

    let npcs_arg = npcs.to_string();
    let config = Config::try_parse_from(["arena-server", "--npcs", &npcs_arg, "--log", "warn"])
        .expect("valid flags");
    let map = Arc::new(config.map());
    let (tx, rx) = mpsc::channel(players * 4 + 16);
    let stats = Arc::new(Stats::new(
        Duration::from_secs(1) / u32::from(config.tick_rate),
    ));
    let mut sim = Simulation::new(&config, map, rx, stats.clone(), None);

    let mut outboxes = Vec::with_capacity(players);
    for i in 0..players {
        let outbox = Arc::new(
            Outbox::new(config.outbox_snapshots, 1200).with_event_capacity(config.event_queue),
        );
        let (reply, _ack) = oneshot::channel();
        tx.try_send(SimCommand::Join(JoinRequest {
            client_id: i as u64 + 1,
            session: i as u64 + 1,
            name: format!("p{i}"),
            outbox: outbox.clone(),
            resume: false,
            reply,
        }))
        .expect("inbox has room");
        outboxes.push(outbox);
    }
    sim.tick();

    let mut rng = SplitMix64::new(7);
    let mut dirs: Vec<MoveDir> = (0..players).map(|_| MoveDir::default()).collect();
    let mut samples: Vec<[Duration; Phase::ALL.len()]> = Vec::with_capacity(ticks);
    for n in 0..WARM_UP_TICKS + ticks {
        // The first tick after the joins' is 2.
        let tick = n as u32 + 2;
        for (i, dir) in dirs.iter_mut().enumerate() {
            if rng.below(15) == 0 {
                *dir = MoveDir::from_vec2(rng.square(-1.0, 1.0));
            }
            let mut buttons = Buttons::FIRE;
            if rng.below(20) == 0 {
                buttons |= Buttons::ALT_FIRE;
            }
            let input = Input {
                seq: n as u32 + 1,
                tick,
                movement: *dir,
                aim: Aim(rng.below(65536) as u16),
                buttons: Buttons(buttons),
                view_tick: tick.saturating_sub(3),
                view_frac: 0,
            };
            let _ = tx.try_send(SimCommand::Input {
                client_id: i as u64 + 1,
                input,
            });
        }
        let times = sim.tick();
        if n >= WARM_UP_TICKS {
            samples.push(times.0);
        }
        // Every snapshot is delivered and acknowledged at once (as in `benches/replication.rs`),
        // so the next is a delta against it, as for a connected player, not a full one.
        for o in &outboxes {
            o.drain();
            o.record_ack(tick);
        }
    }

    println!(
        "combat: {players} players, {npcs} NPCs, {ticks} ticks measured after {WARM_UP_TICKS} \
         (entities now {}: projectiles {}); {} shots, {} hits, {} kills",
        stats.entities(),
        stats.entities().saturating_sub((players + npcs) as u64),
        Stats::get(&stats.shots_fired),
        Stats::get(&stats.hits),
        Stats::get(&stats.kills),
    );
    let built = Stats::get(&stats.snapshots_built).max(1);
    println!(
        "snapshots: {built} built, {} full, {} between rankings, {:.1} entities in view, {:.1} sent and {:.1} deferred per snapshot",
        Stats::get(&stats.snapshots_full),
        Stats::get(&stats.snapshots_between_rankings),
        Stats::get(&stats.entities_in_view) as f64 / built as f64,
        Stats::get(&stats.entities_sent) as f64 / built as f64,
        Stats::get(&stats.entities_deferred) as f64 / built as f64,
    );
    println!(
        "encode passes per snapshot {:.3}",
        Stats::get(&stats.encode_passes) as f64 / built as f64,
    );
    println!("{:<12} {:>10} {:>10}", "phase", "mean ms", "p99 ms");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for phase in Phase::ALL {
        let mut v: Vec<Duration> = samples.iter().map(|s| s[phase as usize]).collect();
        v.sort_unstable();
        let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
        let p99 = v[(v.len() * 99 / 100).min(v.len() - 1)];
        println!("{:<12} {:>10.3} {:>10.3}", phase.name(), ms(mean), ms(p99));
    }
    let mut totals: Vec<Duration> = samples.iter().map(|s| s.iter().sum()).collect();
    totals.sort_unstable();
    let mean = totals.iter().sum::<Duration>() / totals.len().max(1) as u32;
    println!(
        "{:<12} {:>10.3} {:>10.3}",
        "tick",
        ms(mean),
        ms(totals[(totals.len() * 99 / 100).min(totals.len() - 1)])
    );
}
