//! A live handoff's simulation side: the running loop frozen between ticks on its own thread,
//! and a world restored from the frozen state that goes on exactly as the old one would have.

use std::sync::Arc;
use std::time::Duration;

use arena_shared::protocol::{Buttons, Input};
use arena_shared::quant::{Aim, MoveDir};
use arena_shared::replay::{Role, SimState};
use arena_shared::rng::SplitMix64;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::game::JoinRequest;
use crate::net::registry::IMPORTED_SESSION;
use crate::outbox::Outbox;

pub(crate) fn config(args: &[&str]) -> Config {
    use clap::Parser;
    Config::try_parse_from(std::iter::once("arena-server").chain(args.iter().copied())).unwrap()
}

/// A simulation of 50 wandering NPCs running on its own thread, and its freezer.
fn running() -> (
    Freezer,
    Arc<Stats>,
    CancellationToken,
    std::thread::JoinHandle<()>,
) {
    let config = config(&["--npcs", "50"]);
    let (_tx, rx) = mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let mut sim = Simulation::new(&config, Arc::new(config.map()), rx, stats.clone(), None);
    let freezer = sim.freezer();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || sim.run(stop));
    (freezer, stats, shutdown, thread)
}

pub(crate) const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_frozen_loop_hands_out_the_state_between_ticks_and_carries_on_without_catching_up() {
    let (freezer, stats, shutdown, thread) = running();
    let first = freezer.freeze(LONG).await.unwrap();
    // Between ticks: the last tick run is the one published, and none runs while frozen.
    assert_eq!(Stats::get(&stats.tick), u64::from(first.tick));
    let ticks = Stats::get(&stats.ticks);
    assert_eq!(first.state.entities.len(), 50);
    // A second request waits for the next boundary; a third, while it waits, is refused.
    let queued = {
        let freezer = freezer.clone();
        tokio::spawn(async move { freezer.freeze(LONG).await })
    };
    while freezer.tx.capacity() > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(freezer.freeze(LONG).await.unwrap_err(), FreezeError::Busy);
    // Frozen for ten tick intervals: the time being measured, not a synchronisation.
    std::thread::sleep(Duration::from_millis(340));
    assert_eq!(
        Stats::get(&stats.ticks),
        ticks,
        "nothing ticks while frozen"
    );
    first.release.carry_on();
    let second = queued.await.unwrap().unwrap();
    assert_eq!(second.tick, first.tick + 1, "it went on from the next tick");
    assert_eq!(
        Stats::get(&stats.tick_overruns),
        0,
        "the frozen span is not lag: no catch-up, no overrun"
    );
    second.release.stop();
    thread.join().expect("the loop ends cleanly on stop");
    assert!(!shutdown.is_cancelled(), "it stopped by itself");
}

#[tokio::test]
async fn an_unreleased_freeze_carries_on_after_its_timeout_and_a_dropped_release_at_once() {
    let (freezer, _stats, shutdown, thread) = running();
    let held = freezer.freeze(Duration::from_millis(100)).await.unwrap();
    // Still holding the release: only the timeout can have let the loop go on.
    let next = freezer.freeze(LONG).await.unwrap();
    assert!(next.tick > held.tick);
    drop(held);
    drop(next);
    let after = freezer.freeze(LONG).await.unwrap();
    after.release.carry_on();
    shutdown.cancel();
    thread.join().unwrap();
    assert_eq!(
        freezer.freeze(LONG).await.unwrap_err(),
        FreezeError::Stopped
    );
}

/// A simulation with 1,000 NPCs that fight, on a small map so they meet the players.
pub(crate) fn world(tick_args: &[&str]) -> (Config, mpsc::Sender<SimCommand>, Simulation) {
    let mut args = vec!["--npcs", "1000", "--world-size", "1024", "--obstacles", "8"];
    args.extend_from_slice(tick_args);
    let config = config(&args);
    let (tx, rx) = mpsc::channel(1024);
    let sim = Simulation::new(
        &config,
        Arc::new(config.map()),
        rx,
        Arc::new(Stats::default()),
        None,
    );
    (config, tx, sim)
}

pub(crate) const PLAYERS: u64 = 4;

pub(crate) fn join(
    tx: &mpsc::Sender<SimCommand>,
    client_id: u64,
    session: u64,
    resume: bool,
) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox::new(4, 1200));
    let (reply, _) = oneshot::channel();
    tx.try_send(SimCommand::Join(JoinRequest {
        client_id,
        session,
        name: format!("p{client_id}"),
        outbox: outbox.clone(),
        resume,
        reply,
    }))
    .unwrap();
    outbox
}

/// Every player's input for the tick about to run: a seeded walk, firing, rockets now and then.
pub(crate) fn inputs(tx: &mpsc::Sender<SimCommand>, rng: &mut SplitMix64, tick: u32, seq: u32) {
    for client_id in 1..=PLAYERS {
        let input = Input {
            seq,
            tick,
            movement: MoveDir::from_vec2(rng.square(-1.0, 1.0)),
            aim: Aim(rng.below(65536) as u16),
            buttons: Buttons(if rng.below(10) == 0 {
                Buttons::FIRE | Buttons::ALT_FIRE
            } else {
                Buttons::FIRE
            }),
            view_tick: tick.saturating_sub(3),
            view_frac: 0,
        };
        tx.try_send(SimCommand::Input { client_id, input }).unwrap();
    }
}

/// Where two states first differ, for the failure message (the states are too big to print).
fn first_difference(a: &SimState, b: &SimState) -> String {
    if (a.last_id, a.rng) != (b.last_id, b.rng) {
        return format!(
            "ids/rng {:?} vs {:?}",
            (a.last_id, a.rng),
            (b.last_id, b.rng)
        );
    }
    if let Some((x, y)) = a.entities.iter().zip(&b.entities).find(|(x, y)| x != y) {
        return format!("entity {x:?} vs {y:?}");
    }
    if a.entities.len() != b.entities.len() {
        return format!("{} vs {} entities", a.entities.len(), b.entities.len());
    }
    format!(
        "history: {} vs {} frames, ticks {:?} vs {:?}",
        a.history.len(),
        b.history.len(),
        a.history.iter().map(|f| f.tick).collect::<Vec<_>>(),
        b.history.iter().map(|f| f.tick).collect::<Vec<_>>()
    )
}

#[test]
fn a_restored_world_goes_on_bit_for_bit_as_the_one_it_was_captured_from() {
    let (config, a_tx, mut a) = world(&[]);
    let mut rng = SplitMix64::new(20);
    let _outboxes: Vec<_> = (1..=PLAYERS).map(|id| join(&a_tx, id, id, false)).collect();
    a.tick();
    for seq in 1..200 {
        let tick = a.world().resource::<crate::game::components::Tick>().0;
        inputs(&a_tx, &mut rng, tick, seq);
        a.tick();
    }
    let (tick, state) = game::state::capture_after_tick(a.world_mut());
    assert_eq!(tick, 200);
    let fights = |s: &SimState| {
        s.entities
            .iter()
            .filter(|e| matches!(e.role, Role::Projectile { .. }) || e.health < 100)
            .count()
    };
    assert!(fights(&state) > 0, "the scene has fighting in it");

    let (b_tx, b_rx) = mpsc::channel(1024);
    let (mut b, restored) = Simulation::restore_from(
        &config,
        Arc::new(config.map()),
        b_rx,
        Arc::new(Stats::default()),
        None,
        tick,
        &state,
    );
    assert!(
        restored == state,
        "the restored world captures as the state it came from"
    );
    for client_id in 1..=PLAYERS {
        a_tx.try_send(SimCommand::Detach {
            client_id,
            session: client_id,
        })
        .unwrap();
    }
    let mut outboxes = Vec::new();
    for n in 1..=100u32 {
        let tick = tick + n;
        if n == 10 {
            // Every player comes back, on both, and takes its entity back.
            for client_id in 1..=PLAYERS {
                outboxes.push(join(&a_tx, client_id, 100 + client_id, true));
                outboxes.push(join(&b_tx, client_id, 100 + client_id, true));
            }
        }
        if n > 10 {
            let mut b_rng = rng.clone();
            inputs(&a_tx, &mut rng, tick, n);
            inputs(&b_tx, &mut b_rng, tick, n);
        }
        a.tick();
        b.tick();
        if n == 1 {
            // On the new server every player lost its connection at the first tick and
            // lingers until it resumes, as the old one's players did when they were moved.
            let lingering = &b.world().resource::<crate::game::components::Lingering>().0;
            assert_eq!(lingering.len(), PLAYERS as usize);
            assert!(lingering.values().all(|l| l.session == IMPORTED_SESSION));
            assert!(
                b.world()
                    .resource::<crate::game::components::Clients>()
                    .0
                    .is_empty()
            );
        }
        let (a_tick, a_state) = game::state::capture_after_tick(a.world_mut());
        let (b_tick, b_state) = game::state::capture_after_tick(b.world_mut());
        assert_eq!((a_tick, b_tick), (tick, tick));
        assert!(
            a_state == b_state,
            "tick {tick}: {}",
            first_difference(&a_state, &b_state)
        );
    }
    let (_, end) = game::state::capture_after_tick(a.world_mut());
    assert!(
        end.entities.iter().any(|e| matches!(
            e.role,
            Role::Player {
                lingering: false,
                ..
            }
        )),
        "the players are back and playing"
    );
}
