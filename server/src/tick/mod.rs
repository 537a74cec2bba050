//! The tick: the one place that assembles the server's simulation. It puts the game's systems
//! ([`crate::game`], the rules), replication ([`crate::replication`], what each client is
//! sent) and the recorder ([`crate::recording`]) into one [`Simulation`]: a bevy_ecs `World`
//! and one `Schedule` per [`Phase`], driven by [`Simulation::run`] on its own OS thread.
//!
//! Named `tick` rather than `world` because what it owns is the tick (the order of the phases,
//! the timeline and its catch-up, the inbox drained at the start of each tick), while the
//! world's contents belong to `game`. The live server ([`crate::Server`]) and re-simulation
//! ([`crate::replay`]) both build their worlds here, so a replay runs the systems that ship.
//!
//! Invariants:
//! - The simulation never waits on the network: it drains its inbox without blocking, and
//!   pushes snapshots into bounded outboxes that drop the oldest when full.
//! - One tick is always the same sequence of phases ([`Phase`]), every system in a fixed order,
//!   so the same inbox gives the same world. Each phase's schedule fails to build on an
//!   unordered conflict (ambiguity detection set to error).
//! - Time enters only through [`Simulation::run`]'s accumulator; [`Simulation::tick`] is pure in
//!   the sense that tests can call it directly, as fast as they like.
//! - A live handoff freezes the running loop only between two ticks ([`freeze`]), and a world
//!   restored from that state ([`Simulation::restore_from`]) runs the next tick as the old one
//!   would have.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arena_shared::map::Map;
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{LogLevel, ScheduleBuildSettings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::game::components::{Inbox, StatsRes};
use crate::game::{self, SimCommand, combat, systems};
use crate::recording::Recorder;
use crate::replication;
use crate::stats::Stats;

pub mod freeze;

pub use freeze::{FreezeError, Freezer, Frozen, Release};

/// The phases of one tick, in order. Each is its own `Schedule`, so the tick loop can time
/// them (an overrun is logged with the phase that took the time; Prometheus gets each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Apply joins, leaves and inputs that arrived since the last tick; players' intents.
    Receive,
    /// NPC brains: targets, steering, bolts.
    Ai,
    /// Move every body; file the living for queries and lag compensation.
    Movement,
    /// Launch and fly projectiles.
    Projectiles,
    /// Rifle shots (lag compensated), damage, deaths, respawns.
    Hits,
    /// Give each new link its replica, then build and queue each client's snapshot.
    Replicate,
    /// Publish gauges, advance the tick counter.
    End,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Receive,
        Phase::Ai,
        Phase::Movement,
        Phase::Projectiles,
        Phase::Hits,
        Phase::Replicate,
        Phase::End,
    ];

    /// The label used in logs and metrics ([`crate::metrics::PHASES`]).
    pub fn name(self) -> &'static str {
        crate::metrics::PHASES[self as usize]
    }
}

/// How long each phase of one tick took, indexed by `Phase as usize`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TickTimes(pub [Duration; Phase::ALL.len()]);

impl TickTimes {
    pub fn total(&self) -> Duration {
        self.0.iter().sum()
    }

    /// The phase that took longest, and how long.
    pub fn slowest(&self) -> (Phase, Duration) {
        Phase::ALL
            .into_iter()
            .map(|p| (p, self.0[p as usize]))
            .max_by_key(|(_, d)| *d)
            .unwrap_or((Phase::Receive, Duration::ZERO))
    }
}

/// Most ticks run back to back to catch up after a stall before the loop gives up on
/// real time and skips ahead (counted as an overrun).
const MAX_CATCH_UP_TICKS: u32 = 5;

/// Ticks per window of `arena_tick_duration_max_seconds` (5 s at 30 Hz).
const TICK_MAX_WINDOW_TICKS: u32 = 150;

pub struct Simulation {
    world: World,
    /// One schedule per [`Phase`], run in order.
    phases: [Schedule; Phase::ALL.len()],
    inbox: mpsc::Receiver<SimCommand>,
    inbox_capacity: usize,
    tick_interval: Duration,
    /// `--debug-stall-at-tick`/`--debug-stall-for`: a test hook that stops this thread once.
    stall: Option<(u64, Duration)>,
    /// Where a live handoff's freeze request arrives ([`Simulation::freezer`]).
    freeze: Option<mpsc::Receiver<freeze::FreezeRequest>>,
}

impl Simulation {
    pub fn new(
        config: &Config,
        map: Arc<Map>,
        inbox: mpsc::Receiver<SimCommand>,
        stats: Arc<Stats>,
        frame_tap: Option<tokio::sync::broadcast::Sender<Arc<replication::frame::WorldFrame>>>,
    ) -> Self {
        let mut world = game::new_world(config, map, stats);
        world.insert_resource(replication::Replicator::new(
            config.replication,
            replication::settings(config),
            config.world_size,
            config.replication_threads,
            frame_tap,
        ));

        Self {
            world,
            phases: build_schedules(),
            inbox,
            inbox_capacity: config.inbox_capacity.max(1),
            tick_interval: Duration::from_secs_f64(1.0 / f64::from(config.tick_rate)),
            stall: config
                .debug_stall_at_tick
                .map(|tick| (tick, config.debug_stall_for)),
            freeze: None,
        }
    }

    /// A simulation that goes on from another's state at the end of `tick` (a live handoff's
    /// [`Frozen`], or a keyframe): built as [`Simulation::new`] builds one from the same flags,
    /// then restored as a re-simulation restores a keyframe (`game::state::restore`), so it
    /// runs `tick + 1` next and takes the decisions the old one would have. Its players have no
    /// connection here yet: `tick + 1` detaches each (`game::state::detach_players`, recorded
    /// as the old server's next tick would have recorded their lost connections), and each
    /// lingers with session `net::registry::IMPORTED_SESSION` until it resumes or its seat
    /// expires.
    ///
    /// Also returns the restored world as captured: the same state as `state` when it moved
    /// whole (a live handoff logs both hashes to show it).
    pub fn restore_from(
        config: &Config,
        map: Arc<Map>,
        inbox: mpsc::Receiver<SimCommand>,
        stats: Arc<Stats>,
        frame_tap: Option<tokio::sync::broadcast::Sender<Arc<replication::frame::WorldFrame>>>,
        tick: u32,
        state: &arena_shared::replay::SimState,
    ) -> (Self, arena_shared::replay::SimState) {
        let mut sim = Self::new(config, map, inbox, stats, frame_tap);
        game::state::restore(&mut sim.world, tick, state);
        let (_, restored) = game::state::capture_after_tick(&mut sim.world);
        game::state::detach_players(&mut sim.world);
        (sim, restored)
    }

    /// The handle a live handoff freezes this simulation with, once it runs
    /// ([`Simulation::run`] answers between two ticks). One simulation has one.
    pub fn freezer(&mut self) -> Freezer {
        let (freezer, rx) = Freezer::new();
        self.freeze = Some(rx);
        freezer
    }

    /// Runs one tick now: drains the inbox (at most its capacity, so a flood cannot stall the
    /// tick), then runs each phase's schedule; says how long each phase took.
    pub fn tick(&mut self) -> TickTimes {
        {
            let mut inbox = self.world.resource_mut::<Inbox>();
            while inbox.0.len() < self.inbox_capacity {
                match self.inbox.try_recv() {
                    Ok(cmd) => inbox.0.push(cmd),
                    Err(_) => break,
                }
            }
        }
        let mut times = TickTimes::default();
        let mut mark = Instant::now();
        for (i, schedule) in self.phases.iter_mut().enumerate() {
            schedule.run(&mut self.world);
            let now = Instant::now();
            times.0[i] = now - mark;
            mark = now;
        }
        // The tick is done: its snapshots go to the network side now, not while it was still
        // running (`replication::post`). Not a phase, so not in the tick's time: what it
        // costs is a lock and a wake-up, and what it wakes competes with nothing the tick
        // has left to do.
        replication::post_snapshots(&mut self.world);
        // bevy_ecs writes a message for each component of every entity despawned, and for
        // each component removed (`RemovedComponents`), and lets them go only here: a bevy
        // `App` calls this each frame, a bare `World` must. No system reads them; uncleared,
        // they grew for the server's life (30-44 KB a second at 200 bots in combat).
        self.world.clear_trackers();
        times
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Stops building snapshots (a re-simulation has no one to send them to; the world is
    /// the same either way, replication only reads it).
    pub fn without_replication(&mut self) {
        self.phases[Phase::Replicate as usize] = Schedule::default();
    }

    /// Records the run from the next tick on (`crate::recording::start` makes the recorder).
    pub fn set_recorder(&mut self, recorder: Recorder) {
        self.world.insert_resource(recorder);
    }

    /// The world, to set up a scene (tests, benchmarks). The tick loop never needs it.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// The fixed-tick loop. Ticks are scheduled on an absolute timeline (`next += interval`), so
    /// rounding never drifts; after a stall it runs up to [`MAX_CATCH_UP_TICKS`] back to back,
    /// and beyond that skips ahead and counts an overrun.
    pub fn run(mut self, shutdown: CancellationToken) {
        let stats = self.world.resource::<StatsRes>().0.clone();
        info!(
            tick_interval_ms = self.tick_interval.as_secs_f64() * 1e3,
            "simulation running"
        );
        let metrics = &stats.metrics;
        // The longest tick of the current window, published when the window closes.
        let window = u64::from(TICK_MAX_WINDOW_TICKS);
        let mut window_max = Duration::ZERO;
        let mut last = TickTimes::default();
        let mut next = Instant::now();
        while !shutdown.is_cancelled() {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            let mut ran = 0;
            let mut thawed = false;
            while Instant::now() >= next && ran < MAX_CATCH_UP_TICKS {
                last = self.tick();
                let took = last.total();
                Stats::add(&stats.tick_us, took.as_micros() as u64);
                Stats::add(&stats.ticks, 1);
                metrics.tick.record(took.as_secs_f64());
                for (h, d) in metrics.phases.iter().zip(last.0) {
                    h.record(d.as_secs_f64());
                }
                window_max = window_max.max(took);
                if Stats::get(&stats.ticks).is_multiple_of(window) {
                    stats
                        .tick_max_us_recent
                        .store(window_max.as_micros() as u64, Ordering::Relaxed);
                    window_max = Duration::ZERO;
                }
                if took > self.tick_interval {
                    let (phase, phase_took) = last.slowest();
                    warn!(
                        took_ms = took.as_secs_f64() * 1e3,
                        slowest = phase.name(),
                        slowest_ms = phase_took.as_secs_f64() * 1e3,
                        phases_ms = ?last.0.map(|d| d.as_secs_f64() * 1e3),
                        "tick took longer than its interval"
                    );
                }
                next += self.tick_interval;
                ran += 1;
                if let Some(request) = self.freeze.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    let (tick, state) = game::state::capture_after_tick(&mut self.world);
                    info!(tick, "simulation frozen for a handoff");
                    if freeze::hold(request, tick, state) {
                        info!(tick, "the world runs elsewhere now");
                        return;
                    }
                    info!(tick, "simulation unfrozen");
                    // The frozen span is not lag: the next tick is due now, none is caught up.
                    next = Instant::now();
                    thawed = true;
                    break;
                }
                if let Some((at, stall_for)) = self.stall
                    && Stats::get(&stats.tick) >= at
                {
                    self.stall = None;
                    warn!(
                        tick = at,
                        stall_ms = stall_for.as_millis() as u64,
                        "test hook (--debug-stall-at-tick): the simulation thread stops"
                    );
                    std::thread::sleep(stall_for);
                }
            }
            if !thawed && Instant::now() >= next {
                let behind = Instant::now() - next;
                let (phase, phase_took) = last.slowest();
                warn!(
                    behind_ms = behind.as_secs_f64() * 1e3,
                    last_tick_ms = last.total().as_secs_f64() * 1e3,
                    slowest = phase.name(),
                    slowest_ms = phase_took.as_secs_f64() * 1e3,
                    "simulation fell behind; skipping ahead"
                );
                Stats::add(&stats.tick_overruns, 1);
                next = Instant::now() + self.tick_interval;
            }
        }
        info!("simulation stopped");
    }
}

/// One schedule per phase. Determinism depends on every conflicting pair of systems in a
/// phase being ordered: the ambiguity check fails loudly.
fn build_schedules() -> [Schedule; Phase::ALL.len()] {
    let mut phases = Phase::ALL.map(|_| {
        let mut schedule = Schedule::default();
        schedule.set_build_settings(ScheduleBuildSettings {
            ambiguity_detection: LogLevel::Error,
            ..Default::default()
        });
        schedule
    });
    let [receive, ai, movement, projectiles, hits, replicate, end] = &mut phases;
    receive.add_systems(
        (
            systems::admit_and_release,
            systems::route_inputs,
            systems::player_intent,
        )
            .chain(),
    );
    ai.add_systems(combat::npc_ai);
    movement.add_systems(
        (
            systems::movement,
            systems::quantize,
            combat::record_hittables,
        )
            .chain(),
    );
    projectiles.add_systems((combat::launch_projectiles, combat::step_projectiles).chain());
    hits.add_systems((combat::fire_rifles, combat::apply_damage, combat::respawn).chain());
    replicate.add_systems((replication::follow_links, replication::replicate).chain());
    end.add_systems((systems::record_keyframe, systems::end_tick).chain());
    phases
}

#[cfg(test)]
mod combat_tests;
#[cfg(test)]
pub(crate) mod handoff_tests;
#[cfg(test)]
mod tests;
// The virtual-clock harness drives the whole assembled tick, so it is a module of `tick`; its
// file stays beside the rules it was written against.
#[doc(hidden)]
#[path = "../game/virtual_play.rs"]
pub mod virtual_play;
