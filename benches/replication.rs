//! Replication cost, in-process (no sockets): building every client's snapshot for one tick.
//!
//! `cargo bench --bench replication`. Scenarios:
//! - `arena_1000x10000`: 1,000 clients among 10,000 entities (the clients' own entities are
//!   1,000 of them), half moving, in an 8,192-unit world, default budget (64 kbps at 30 Hz).
//! - the peers' scenarios (naia, bevy_replicon and lightyear measured the same on this kind of
//!   machine): `16x16` (16 clients each seeing 16 entities that all change every tick),
//!   `capacity` (16 clients, 10,000 static + 32 moving), `1000` (1 client, 1,000 changing).
//! - `arena_1000x10000_lag3`: the first, each snapshot acknowledged 3 ticks after it was built
//!   (a 100 ms round trip at 30 Hz) instead of at once: the server holds a round trip of views
//!   and builds on older baselines.
//!
//! Each iteration is one whole tick: step the world, build the frame and grid once, build
//! every client's snapshot, acknowledge it (instant delivery unless the scenario lags). Bytes are printed once per
//! scenario after a warm-up: bytes per client per tick and bytes per changed entity in view.

use std::hint::black_box;

use arena_server::replication::frame::WorldFrame;
use arena_server::replication::grid::Grid;
use arena_server::replication::replicator::{ClientReplicator, RepSettings, Scratch};
use arena_shared::protocol::EntityKind;
use arena_shared::quant;
use arena_shared::rng::SplitMix64;
use criterion::{Criterion, criterion_group, criterion_main};
use glam::Vec2;

const RATE: u16 = 30;
const MAX_DATAGRAM: usize = 1350;

/// How a body moves.
#[derive(Clone, Copy, PartialEq)]
enum Motion {
    Still,
    /// Straight lines at steady speed, turning about every two seconds.
    Steady,
    /// A new random velocity every tick: every entity changes every tick, as in the peers'
    /// benchmarks.
    Jitter,
}

struct Scenario {
    size: f32,
    bodies: Vec<(u32, Vec2, Vec2, Motion)>,
    clients: Vec<(u32, ClientReplicator)>,
    settings: RepSettings,
    frame: WorldFrame,
    grid: Grid,
    scratch: Scratch,
    rng: SplitMix64,
    tick: u32,
    /// Ticks between a snapshot and its acknowledgement.
    ack_lag: u32,
}

impl Scenario {
    fn new(size: f32, budget_bytes: usize) -> Self {
        Self {
            size,
            bodies: Vec::new(),
            clients: Vec::new(),
            settings: RepSettings {
                tick_rate: RATE,
                aoi_radius: 600.0,
                aoi_hysteresis: 60.0,
                budget_bytes,
                max_view: 1024,
                max_speed: 320.0,
                rerank_ticks: 2,
            },
            frame: WorldFrame::default(),
            grid: Grid::default(),
            scratch: Scratch::default(),
            rng: SplitMix64::new(7),
            tick: 0,
            ack_lag: 0,
        }
    }

    fn add(&mut self, pos: Vec2, motion: Motion) -> u32 {
        let id = self.bodies.len() as u32 + 1;
        let vel = if motion == Motion::Still {
            Vec2::ZERO
        } else {
            self.random_vel()
        };
        self.bodies.push((id, pos, vel, motion));
        id
    }

    fn add_client(&mut self, pos: Vec2) {
        let id = self.add(pos, Motion::Still);
        self.clients.push((id, ClientReplicator::default()));
    }

    fn random_pos(&mut self) -> Vec2 {
        self.rng.square(0.0, self.size)
    }

    fn random_vel(&mut self) -> Vec2 {
        self.rng.square(-150.0, 150.0)
    }

    fn step_world(&mut self) {
        self.step_world_only();
        self.build_frame();
    }

    /// One tick of the world, snapped to the wire grid as the server does.
    fn step_world_only(&mut self) {
        self.tick += 1;
        let dt = 1.0 / f32::from(RATE);
        for i in 0..self.bodies.len() {
            let motion = self.bodies[i].3;
            let turn = match motion {
                Motion::Still => false,
                Motion::Steady => self.rng.below(60) == 0,
                Motion::Jitter => true,
            };
            if turn {
                self.bodies[i].2 = self.random_vel();
            }
            let (_, pos, vel, _) = &mut self.bodies[i];
            *pos += *vel * dt;
            for axis in 0..2 {
                if pos[axis] < 0.0 || pos[axis] > self.size {
                    vel[axis] = -vel[axis];
                    pos[axis] = pos[axis].clamp(0.0, self.size);
                }
            }
            *pos = quant::snap_pos(*pos);
            *vel = quant::snap_vel(*vel);
        }
    }

    /// The per-tick work shared by all clients: the quantized frame and the interest grid.
    fn build_frame(&mut self) {
        self.frame.rebuild(
            self.tick,
            RATE,
            self.bodies
                .iter()
                .map(|&(id, p, v, _)| (id, EntityKind::Npc, p, v)),
        );
        self.grid
            .rebuild(&self.frame, self.size, self.settings.aoi_radius / 2.0);
    }

    /// Builds and acknowledges every client's snapshot; returns (bytes, entities sent, in view).
    fn replicate(&mut self) -> (usize, usize, usize) {
        let (mut bytes, mut sent, mut in_view) = (0, 0, 0);
        for (own, client) in &mut self.clients {
            let built = client.build(
                &mut self.scratch,
                &self.frame,
                &self.grid,
                *own,
                &self.settings,
                MAX_DATAGRAM,
                Default::default(),
            );
            if self.tick > self.ack_lag {
                client.on_ack(self.tick - self.ack_lag);
            }
            bytes += built.bytes.len();
            sent += built.sent;
            in_view += built.in_view;
        }
        (bytes, sent, in_view)
    }

    fn tick(&mut self) -> (usize, usize, usize) {
        self.step_world();
        self.replicate()
    }

    /// Runs `ticks` ticks and prints what was sent per client per tick.
    fn report(&mut self, name: &str, ticks: u32) {
        let moving: Vec<bool> = self.bodies.iter().map(|b| b.3 != Motion::Still).collect();
        let (mut bytes, mut sent, mut in_view, mut moving_in_view) = (0, 0, 0, 0);
        for _ in 0..ticks {
            let (b, s, v) = self.tick();
            bytes += b;
            sent += s;
            in_view += v;
            for (own, _) in &self.clients {
                let me = self.frame.entities[self.frame.index_of(*own).unwrap()].pos;
                let r = self.settings.aoi_radius;
                moving_in_view += self
                    .frame
                    .entities
                    .iter()
                    .filter(|e| moving[e.id as usize - 1] && e.pos.distance_squared(me) <= r * r)
                    .count();
            }
        }
        let per = f64::from(ticks) * self.clients.len() as f64;
        let view_bytes: usize = self.clients.iter().map(|(_, c)| c.view_bytes()).sum();
        eprintln!(
            "{name}: {:.1} B per client per tick, {:.1} entities in view, {:.1} sent, {:.2} B per moving entity in view, {:.1} KiB of views per client",
            bytes as f64 / per,
            in_view as f64 / per,
            sent as f64 / per,
            bytes as f64 / moving_in_view.max(1) as f64,
            view_bytes as f64 / self.clients.len() as f64 / 1024.0,
        );
    }
}

fn arena_1000x10000() -> Scenario {
    let mut s = Scenario::new(8192.0, 64_000 / 8 / usize::from(RATE));
    for _ in 0..1000 {
        let p = s.random_pos();
        s.add_client(p);
    }
    for i in 0..9000 {
        let p = s.random_pos();
        // Half of all 10,000 entities move (the clients' own entities stand still).
        s.add(
            p,
            if i < 5000 {
                Motion::Steady
            } else {
                Motion::Still
            },
        );
    }
    s
}

/// `groups` clusters far apart, each with `clients` clients and `entities` entities around
/// them; the budget is the datagram (the peers have no per-client budget).
fn clusters(
    groups: u32,
    clients: u32,
    entities: u32,
    motion: Motion,
    extra_still: u32,
) -> Scenario {
    let mut s = Scenario::new(8192.0, MAX_DATAGRAM);
    for g in 0..groups {
        let center = Vec2::new(
            700.0 + 1500.0 * (g % 5) as f32,
            700.0 + 1500.0 * (g / 5) as f32,
        );
        for _ in 0..clients {
            s.add_client(center);
        }
        for _ in 0..entities {
            let off = s.rng.square(-250.0, 250.0);
            s.add(center + off, motion);
        }
    }
    for _ in 0..extra_still {
        let p = s.random_pos();
        s.add(p, Motion::Still);
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("replication");
    group.sample_size(10);
    type Make = Box<dyn Fn() -> Scenario>;
    let cases: Vec<(&str, Make)> = vec![
        ("arena_1000x10000", Box::new(arena_1000x10000)),
        (
            "arena_1000x10000_lag3",
            Box::new(|| {
                let mut s = arena_1000x10000();
                s.ack_lag = 3;
                s
            }),
        ),
        // 16 clients, each seeing the 16 entities of its own cluster, all changing every tick.
        ("16x16", Box::new(|| clusters(16, 1, 16, Motion::Jitter, 0))),
        // 16 clients in one place among 32 moving entities, 10,000 static ones over the world.
        (
            "capacity",
            Box::new(|| clusters(1, 16, 32, Motion::Steady, 10_000)),
        ),
        // 1 client, 1,000 entities around it all changing every tick.
        ("1000", Box::new(|| clusters(1, 1, 1000, Motion::Jitter, 0))),
    ];
    // `cargo test --all-targets` runs each benchmark once as a smoke test (no `--bench` flag):
    // keep that quick.
    let (warm_up, measured) = if std::env::args().any(|a| a == "--bench") {
        (150, 60)
    } else {
        (10, 2)
    };
    for (name, make) in cases {
        let mut s = make();
        // Warm up: views filled, baselines acknowledged.
        for _ in 0..warm_up {
            s.tick();
        }
        s.report(name, measured);
        let clients = s.clients.len();
        // Times only replication (frame, grid and every client's snapshot), not the world step.
        group.bench_function(format!("{name}/tick_{clients}_clients"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    s.step_world_only();
                    let started = std::time::Instant::now();
                    s.build_frame();
                    black_box(s.replicate());
                    total += started.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
