//! Cost of reconciling the client's prediction with 30 inputs pending (a 1 s round trip at
//! 30 Hz): the slow path replays all 30 through `sim::tick_body` on the default map; the fast
//! path (the server agreed) only drops the confirmed input.
//!
//! `cargo bench --bench prediction`. Results in BENCHMARKS.md.

use std::hint::black_box;

use arena_shared::map::{Map, MapParams};
use arena_shared::obstacle_grid::ObstacleGrid;
use arena_shared::predict::Predictor;
use arena_shared::quant::{MoveDir, snap_pos};
use arena_shared::rng::SplitMix64;
use arena_shared::sim::{self, Body};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use glam::Vec2;

fn setup(obstacles: u32) -> (ObstacleGrid, Predictor, Body, Body) {
    let map = Map::generate(MapParams {
        seed: 1,
        width: 4096.0,
        height: 4096.0,
        obstacles,
    });
    let mut rng = SplitMix64::new(2);
    let start = Body {
        pos: snap_pos(map.random_free_point(&mut rng, sim::PLAYER.radius)),
        vel: Vec2::ZERO,
    };
    let grid = ObstacleGrid::new(&map);
    let mut p = Predictor::new(start, sim::PLAYER, 30);
    let mut first = start;
    for seq in 1..=31 {
        let m = MoveDir {
            x: rng.below(255) as i8,
            y: rng.below(255) as i8,
        };
        let b = p.apply(seq, m, &grid);
        if seq == 1 {
            first = b;
        }
    }
    let mut wrong = first;
    wrong.pos.x += 2.0;
    (grid, p, first, wrong)
}

fn bench(c: &mut Criterion) {
    let (map, p, agreed, wrong) = setup(48);
    c.bench_function("reconcile_30_pending/replay", |b| {
        b.iter_batched_ref(
            || p.clone(),
            |p| black_box(p.reconcile(1, wrong, &map)),
            BatchSize::SmallInput,
        )
    });
    // The floor: the same replay with no obstacle to test (the step's arithmetic and snapping).
    let (open, p_open, _, wrong_open) = setup(0);
    c.bench_function("reconcile_30_pending/replay_no_obstacles", |b| {
        b.iter_batched_ref(
            || p_open.clone(),
            |p| black_box(p.reconcile(1, wrong_open, &open)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("reconcile_30_pending/agreed", |b| {
        b.iter_batched_ref(
            || p.clone(),
            |p| black_box(p.reconcile(1, agreed, &map)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
