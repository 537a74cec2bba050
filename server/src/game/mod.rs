//! The simulation: a bevy_ecs `World` and a fixed-tick `Schedule`, driven by [`Simulation::run`]
//! on its own OS thread.
//!
//! Invariants:
//! - The simulation never waits on the network: it drains its inbox without blocking, and
//!   pushes snapshots into bounded outboxes that drop the oldest when full.
//! - One tick is always the same sequence of phases ([`Phase`]), every system in a fixed order,
//!   so the same inbox gives the same world.
//! - Time enters only through [`Simulation::run`]'s accumulator; [`Simulation::tick`] is pure in
//!   the sense that tests can call it directly, as fast as they like.

pub mod components;
pub mod systems;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arena_shared::map::Map;
use arena_shared::protocol::{EntityKind, Input};
use arena_shared::rng::SplitMix64;
use arena_shared::sim::{self, Body};
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{LogLevel, ScheduleBuildSettings};
use glam::Vec2;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::net::outbox::Outbox;
use crate::replication;
use crate::stats::Stats;
use components::*;

/// What the network tells the simulation.
pub enum SimCommand {
    /// A client passed the handshake; the reply carries its entity.
    Join(JoinRequest),
    Input {
        client_id: u64,
        input: Input,
    },
    Leave {
        client_id: u64,
    },
}

pub struct JoinRequest {
    pub client_id: u64,
    pub name: String,
    pub outbox: Arc<Outbox>,
    pub reply: oneshot::Sender<JoinAck>,
}

#[derive(Debug, Clone, Copy)]
pub struct JoinAck {
    pub entity: u32,
    pub server_tick: u32,
}

/// The phases of one tick, in order.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Apply joins, leaves and inputs that arrived since the last tick.
    Receive,
    /// Decide intents (players' inputs, NPC brains), then move everything.
    Simulate,
    /// Build and queue each client's snapshot.
    Replicate,
    /// Publish gauges, advance the tick counter.
    End,
}

/// Most ticks run back to back to catch up after a stall before the loop gives up on
/// real time and skips ahead (counted as an overrun).
const MAX_CATCH_UP_TICKS: u32 = 5;

pub struct Simulation {
    world: World,
    schedule: Schedule,
    inbox: mpsc::Receiver<SimCommand>,
    inbox_capacity: usize,
    tick_interval: Duration,
}

impl Simulation {
    pub fn new(
        config: &Config,
        map: Arc<Map>,
        inbox: mpsc::Receiver<SimCommand>,
        stats: Arc<Stats>,
        frame_tap: Option<tokio::sync::broadcast::Sender<Arc<replication::frame::WorldFrame>>>,
    ) -> Self {
        let mut world = World::new();
        let mut rng = SplitMix64::new(config.seed);
        let mut ids = NetIds::default();
        for _ in 0..config.npcs {
            let pos = map.random_free_point(&mut rng, sim::NPC.radius);
            world.spawn((
                ids.allocate(),
                Kind(EntityKind::Npc),
                Motion(Body {
                    pos,
                    vel: Vec2::ZERO,
                }),
                MoveIntent::default(),
                Wander {
                    rng: SplitMix64::new(rng.next_u64()),
                    ticks_left: 0,
                },
            ));
        }
        world.insert_resource(ids);
        world.insert_resource(WorldRng(rng));
        world.insert_resource(MapRes(map));
        // Tick 0 means "no baseline" on the wire; the first tick is 1.
        world.insert_resource(Tick(1));
        world.insert_resource(SimSettings {
            dt: config.dt(),
            tick_rate: config.tick_rate,
            input_window: config.input_window.max(1),
        });
        world.insert_resource(Inbox::default());
        world.insert_resource(Clients::default());
        world.insert_resource(StatsRes(stats));
        world.insert_resource(replication::Replicator::new(
            config.replication,
            replication::settings(config),
            config.world_size,
            frame_tap,
        ));

        Self {
            world,
            schedule: build_schedule(),
            inbox,
            inbox_capacity: config.inbox_capacity.max(1),
            tick_interval: Duration::from_secs_f64(1.0 / f64::from(config.tick_rate)),
        }
    }

    /// Runs one tick now: drains the inbox (at most its capacity, so a flood cannot stall the
    /// tick), then runs the schedule.
    pub fn tick(&mut self) {
        {
            let mut inbox = self.world.resource_mut::<Inbox>();
            while inbox.0.len() < self.inbox_capacity {
                match self.inbox.try_recv() {
                    Ok(cmd) => inbox.0.push(cmd),
                    Err(_) => break,
                }
            }
        }
        self.schedule.run(&mut self.world);
    }

    pub fn world(&self) -> &World {
        &self.world
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
        let mut next = Instant::now();
        while !shutdown.is_cancelled() {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            let mut ran = 0;
            while Instant::now() >= next && ran < MAX_CATCH_UP_TICKS {
                let started = Instant::now();
                self.tick();
                let took = started.elapsed();
                Stats::add(&stats.tick_us, took.as_micros() as u64);
                Stats::add(&stats.ticks, 1);
                if took > self.tick_interval {
                    warn!(
                        took_ms = took.as_secs_f64() * 1e3,
                        "tick took longer than its interval"
                    );
                }
                next += self.tick_interval;
                ran += 1;
            }
            if Instant::now() >= next {
                let behind = Instant::now() - next;
                warn!(
                    behind_ms = behind.as_secs_f64() * 1e3,
                    "simulation fell behind; skipping ahead"
                );
                Stats::add(&stats.tick_overruns, 1);
                next = Instant::now() + self.tick_interval;
            }
        }
        info!("simulation stopped");
    }
}

fn build_schedule() -> Schedule {
    let mut schedule = Schedule::default();
    // Determinism depends on every conflicting pair of systems being ordered: fail loudly.
    schedule.set_build_settings(ScheduleBuildSettings {
        ambiguity_detection: LogLevel::Error,
        ..Default::default()
    });
    schedule.configure_sets(
        (
            Phase::Receive,
            Phase::Simulate,
            Phase::Replicate,
            Phase::End,
        )
            .chain(),
    );
    schedule.add_systems((
        (systems::admit_and_release, systems::route_inputs)
            .chain()
            .in_set(Phase::Receive),
        (
            systems::player_intent,
            systems::npc_wander,
            systems::movement,
            systems::quantize,
        )
            .chain()
            .in_set(Phase::Simulate),
        replication::replicate.in_set(Phase::Replicate),
        systems::end_tick.in_set(Phase::End),
    ));
    schedule
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod virtual_play;
