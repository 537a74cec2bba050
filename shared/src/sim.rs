//! The game rules: pure, deterministic step functions on plain data.
//!
//! This is the only place that moves a body. The server's ECS systems call it for players and
//! NPCs, and every client predictor calls it for its own player, so both sides compute the same
//! bits from the same state and input.
//!
//! Determinism: only `+ - * /`, `sqrt`, comparisons and `min`/`max` on `f32` (all exactly
//! specified by IEEE 754), no fused multiply-add, no transcendental functions, no iteration
//! over unordered collections. The same `Body`, input, map and `dt` give bit-identical results
//! on every platform Rust targets, wasm32 included.

use glam::Vec2;

use crate::map::Rect;
use crate::obstacle_grid::ObstacleGrid;
use crate::quant::MoveDir;

/// Position and velocity of anything that moves.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Body {
    pub pos: Vec2,
    pub vel: Vec2,
}

/// How a kind of body moves. Units: world units, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoveParams {
    /// Acceleration at full input deflection.
    pub accel: f32,
    /// Quake-style ground friction: fraction of speed lost per second...
    pub friction: f32,
    /// ...computed from at least this speed, so a body comes to a full stop in finite time.
    pub stop_speed: f32,
    /// Speed is clamped to this after acceleration.
    pub max_speed: f32,
    /// Half the side of the body's collision square.
    pub radius: f32,
}

/// Players: reach full speed in about 0.2 s, stop in about 0.3 s.
pub const PLAYER: MoveParams = MoveParams {
    accel: 3200.0,
    friction: 8.0,
    stop_speed: 100.0,
    max_speed: 320.0,
    radius: 16.0,
};

/// NPCs: slower than players, so a player can always get away.
pub const NPC: MoveParams = MoveParams {
    accel: 1600.0,
    friction: 6.0,
    stop_speed: 60.0,
    max_speed: 200.0,
    radius: 16.0,
};

/// Advances one body by `dt` seconds under a movement intent.
///
/// Order (fixed, part of the rules): friction, acceleration, speed cap, then movement one axis
/// at a time with collision (x first, then y). A body that hits a wall or an obstacle stops on
/// that axis and slides along the other. The map comes with its [`ObstacleGrid`], which gives
/// the same result as testing every obstacle, in fewer tests.
#[must_use]
pub fn step(body: Body, input: MoveDir, map: &ObstacleGrid, params: &MoveParams, dt: f32) -> Body {
    let wish = input.to_vec2();
    let mut vel = body.vel;

    let speed = vel.length();
    if speed > 0.0 {
        let drop = speed.max(params.stop_speed) * params.friction * dt;
        let new_speed = (speed - drop).max(0.0);
        vel *= new_speed / speed;
    }
    vel += wish * (params.accel * dt);
    let speed = vel.length();
    if speed > params.max_speed {
        vel *= params.max_speed / speed;
    }

    let mut pos = body.pos;
    let hit_x;
    let hit_y;
    (pos.x, hit_x) = move_axis(pos, vel.x * dt, Axis::X, map, params.radius);
    (pos.y, hit_y) = move_axis(pos, vel.y * dt, Axis::Y, map, params.radius);
    if hit_x {
        vel.x = 0.0;
    }
    if hit_y {
        vel.y = 0.0;
    }
    Body { pos, vel }
}

/// One tick of a body as the server computes it: [`step`], then snap position and velocity
/// to the wire grid (see [`crate::quant`]). Predictors must use this, not `step` alone.
#[must_use]
pub fn tick_body(
    body: Body,
    input: MoveDir,
    map: &ObstacleGrid,
    params: &MoveParams,
    dt: f32,
) -> Body {
    let b = step(body, input, map, params, dt);
    Body {
        pos: crate::quant::snap_pos(b.pos),
        vel: crate::quant::snap_vel(b.vel),
    }
}

#[derive(Clone, Copy)]
enum Axis {
    X,
    Y,
}

/// Moves `pos` by `delta` along one axis; returns the new coordinate and whether something
/// stopped it. The body never ends inside an obstacle it was not already in, nor outside the
/// bounds. No tunnelling as long as one step (`max_speed * dt`) is shorter than the thinnest
/// obstacle plus the body's size, which the generated maps and the default rates keep.
///
/// Only obstacles overlapping the moved box can stop the body, so the grid is asked for those
/// near it; it visits them in the map's order, as a scan of every obstacle would, so the result
/// is that scan's to the bit.
fn move_axis(pos: Vec2, delta: f32, axis: Axis, grid: &ObstacleGrid, r: f32) -> (f32, bool) {
    let map = grid.map();
    let (start, limit) = match axis {
        Axis::X => (pos.x, map.width),
        Axis::Y => (pos.y, map.height),
    };
    if delta == 0.0 || !delta.is_finite() {
        return (start, delta != 0.0);
    }
    let mut to = start + delta;
    let mut hit = false;
    let moved = match axis {
        Axis::X => Vec2::new(to, pos.y),
        Axis::Y => Vec2::new(pos.x, to),
    };
    let body = Rect::around(moved, r);
    let was = Rect::around(pos, r);
    grid.for_each_near(&body, |o| {
        if !o.overlaps(&body) || o.overlaps(&was) {
            return;
        }
        let (lo, hi) = match axis {
            Axis::X => (o.min.x, o.max.x),
            Axis::Y => (o.min.y, o.max.y),
        };
        // Stop at the face we came from; with several obstacles the nearest face wins.
        to = if delta > 0.0 {
            to.min(lo - r)
        } else {
            to.max(hi + r)
        };
        hit = true;
    });
    if to < r {
        to = r;
        hit = true;
    } else if to > limit - r {
        to = limit - r;
        hit = true;
    }
    (to, hit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Map, MapParams};
    use proptest::prelude::*;

    const DT: f32 = 1.0 / 30.0;

    fn run(map: &Map, start: Body, inputs: &[MoveDir]) -> Vec<Body> {
        let map = &ObstacleGrid::new(map);
        let mut b = start;
        inputs
            .iter()
            .map(|i| {
                b = step(b, *i, map, &PLAYER, DT);
                b
            })
            .collect()
    }

    #[test]
    fn accelerates_to_max_speed_then_stops_by_friction() {
        let map = Map::open(4096.0, 4096.0);
        let push = vec![MoveDir { x: 127, y: 0 }; 30];
        let trail = run(
            &map,
            Body {
                pos: Vec2::splat(2048.0),
                vel: Vec2::ZERO,
            },
            &push,
        );
        let last = *trail.last().unwrap();
        assert!(
            (last.vel.x - PLAYER.max_speed).abs() < 1e-3,
            "vel {:?}",
            last.vel
        );
        assert!(last.pos.x > 2048.0 + 250.0);
        let stop = run(&map, last, &[MoveDir::default(); 30]);
        assert_eq!(stop.last().unwrap().vel, Vec2::ZERO);
    }

    #[test]
    fn walls_and_obstacles_stop_the_body_on_that_axis_only() {
        let mut map = Map::open(1000.0, 1000.0);
        map.obstacles
            .push(Rect::new(Vec2::new(500.0, 0.0), Vec2::new(600.0, 1000.0)));
        let diag = vec![MoveDir { x: 90, y: 90 }; 180];
        let trail = run(
            &map,
            Body {
                pos: Vec2::new(400.0, 100.0),
                vel: Vec2::ZERO,
            },
            &diag,
        );
        let last = *trail.last().unwrap();
        assert_eq!(
            last.pos.x,
            500.0 - PLAYER.radius,
            "stopped at the obstacle's face"
        );
        assert_eq!(
            last.pos.y,
            1000.0 - PLAYER.radius,
            "slid along it to the wall"
        );
        for b in &trail {
            assert!(
                map.is_free(b.pos, PLAYER.radius),
                "inside an obstacle at {:?}",
                b.pos
            );
        }
    }

    fn arb_move() -> impl Strategy<Value = MoveDir> {
        (any::<i8>(), any::<i8>()).prop_map(|(x, y)| MoveDir { x, y })
    }

    proptest! {
        /// The property the whole netcode rests on: the same state and inputs give the same bits.
        #[test]
        fn stepping_is_deterministic_and_stays_free(
            seed in any::<u64>(),
            start in 0u32..1000,
            inputs in proptest::collection::vec(arb_move(), 1..200),
        ) {
            let map = Map::generate(MapParams { seed, width: 2048.0, height: 2048.0, obstacles: 24 });
            let mut rng = crate::rng::SplitMix64::new(u64::from(start));
            let pos = map.random_free_point(&mut rng, PLAYER.radius);
            let body = Body { pos, vel: Vec2::ZERO };
            let a = run(&map, body, &inputs);
            let b = run(&map, body, &inputs);
            for (x, y) in a.iter().zip(&b) {
                prop_assert_eq!(x.pos.x.to_bits(), y.pos.x.to_bits());
                prop_assert_eq!(x.pos.y.to_bits(), y.pos.y.to_bits());
                prop_assert_eq!(x.vel.x.to_bits(), y.vel.x.to_bits());
                prop_assert_eq!(x.vel.y.to_bits(), y.vel.y.to_bits());
                prop_assert!(map.is_free(x.pos, PLAYER.radius), "body inside an obstacle at {:?}", x.pos);
                prop_assert!(x.vel.length() <= PLAYER.max_speed + 1e-3);
            }
        }

        /// The grid changes which obstacles are tested, never the outcome: on random maps
        /// (any size, 0 to 200 obstacles overlapping each other and the walls, some of zero
        /// size) and random grids, a body placed near or inside obstacles and walls moves to
        /// the same bits as the scan of every obstacle that movement did before the grid.
        #[test]
        fn the_grid_moves_a_body_exactly_as_the_full_scan(
            map in arb_map(),
            cells in prop_oneof![Just(None), (1u32..=64, 1u32..=64).prop_map(Some)],
            moves in proptest::collection::vec(
                (arb_spot(), arb_radius(), arb_delta(), any::<bool>()),
                1..60,
            ),
        ) {
            let grid = match cells {
                None => ObstacleGrid::new(&map),
                Some((cols, rows)) => ObstacleGrid::with_cells(&map, cols, rows),
            };
            for (spot, r, delta, along_x) in moves {
                let pos = spot.place(&map, r);
                let axis = if along_x { Axis::X } else { Axis::Y };
                let (to, hit) = move_axis(pos, delta, axis, &grid, r);
                let (want, want_hit) = move_axis_full_scan(pos, delta, axis, &map, r);
                prop_assert_eq!(
                    (to.to_bits(), hit),
                    (want.to_bits(), want_hit),
                    "{:?} by {} along x: {}, r {}", pos, delta, along_x, r
                );
            }
        }

        /// The same over whole ticks: players and NPCs walking into and along obstacles from
        /// spots near them, on the default grid, against a one-cell grid (a scan of every
        /// obstacle in order).
        #[test]
        fn ticks_on_the_grid_equal_ticks_on_one_cell(
            map in arb_map(),
            spot in arb_spot(),
            npc in any::<bool>(),
            speed in prop_oneof![0.0f32..1.0, 0.0f32..400.0],
            inputs in proptest::collection::vec(arb_move(), 1..90),
        ) {
            let grid = ObstacleGrid::new(&map);
            let scan = ObstacleGrid::with_cells(&map, 1, 1);
            let params = if npc { &NPC } else { &PLAYER };
            let pos = spot.place(&map, params.radius);
            let start = Body { pos, vel: Vec2::new(speed, -speed) };
            let (mut a, mut b) = (start, start);
            for i in inputs {
                a = tick_body(a, i, &grid, params, DT);
                b = tick_body(b, i, &scan, params, DT);
                prop_assert_eq!(
                    [a.pos.x, a.pos.y, a.vel.x, a.vel.y].map(f32::to_bits),
                    [b.pos.x, b.pos.y, b.vel.x, b.vel.y].map(f32::to_bits)
                );
            }
        }
    }

    /// `move_axis` as it was before the grid: every obstacle, in order.
    fn move_axis_full_scan(pos: Vec2, delta: f32, axis: Axis, map: &Map, r: f32) -> (f32, bool) {
        let (start, limit) = match axis {
            Axis::X => (pos.x, map.width),
            Axis::Y => (pos.y, map.height),
        };
        if delta == 0.0 || !delta.is_finite() {
            return (start, delta != 0.0);
        }
        let mut to = start + delta;
        let mut hit = false;
        let moved = match axis {
            Axis::X => Vec2::new(to, pos.y),
            Axis::Y => Vec2::new(pos.x, to),
        };
        let body = Rect::around(moved, r);
        let was = Rect::around(pos, r);
        for o in &map.obstacles {
            if !o.overlaps(&body) || o.overlaps(&was) {
                continue;
            }
            let (lo, hi) = match axis {
                Axis::X => (o.min.x, o.max.x),
                Axis::Y => (o.min.y, o.max.y),
            };
            to = if delta > 0.0 {
                to.min(lo - r)
            } else {
                to.max(hi + r)
            };
            hit = true;
        }
        if to < r {
            to = r;
            hit = true;
        } else if to > limit - r {
            to = limit - r;
            hit = true;
        }
        (to, hit)
    }

    /// Maps of any size with obstacles anywhere: overlapping each other, across the walls and
    /// outside them, of zero size or inside out (a map from the wire may hold anything), on
    /// whole units (as generated) or not.
    fn arb_map() -> impl Strategy<Value = Map> {
        (
            16.0f32..6000.0,
            16.0f32..6000.0,
            prop_oneof![Just(0usize), 0usize..8, 0usize..200],
        )
            .prop_flat_map(|(width, height, n)| {
                let rect = (
                    -200.0f32..width + 200.0,
                    -200.0f32..height + 200.0,
                    prop_oneof![Just(0.0f32), 0.0f32..64.0, 0.0f32..700.0, -64.0f32..0.0],
                    prop_oneof![Just(0.0f32), 0.0f32..64.0, 0.0f32..700.0, -64.0f32..0.0],
                    any::<bool>(),
                )
                    .prop_map(|(x, y, w, h, whole)| {
                        let (x, y, w, h) = if whole {
                            (x.round(), y.round(), w.round(), h.round())
                        } else {
                            (x, y, w, h)
                        };
                        Rect::new(Vec2::new(x, y), Vec2::new(x + w, y + h))
                    });
                proptest::collection::vec(rect, n).prop_map(move |obstacles| Map {
                    width,
                    height,
                    obstacles,
                })
            })
    }

    /// Where to put a body, relative to what the map turns out to hold.
    #[derive(Debug, Clone)]
    enum Spot {
        /// Anywhere in the bounds or a little outside (fractions of the map's size).
        Anywhere(f32, f32),
        /// Against one face of an obstacle, off it by `gap` (negative: inside by that much).
        Face {
            obstacle: proptest::sample::Index,
            face: u8,
            along: f32,
            gap: f32,
        },
        /// Inside an obstacle (fractions of its size).
        Inside {
            obstacle: proptest::sample::Index,
            x: f32,
            y: f32,
        },
        /// Against a wall, off it by `gap`.
        Wall { wall: u8, along: f32, gap: f32 },
    }

    impl Spot {
        fn place(&self, map: &Map, r: f32) -> Vec2 {
            let size = Vec2::new(map.width, map.height);
            match *self {
                Spot::Anywhere(x, y) => Vec2::new(x, y) * size,
                Spot::Face {
                    ref obstacle,
                    face,
                    along,
                    gap,
                } if !map.obstacles.is_empty() => {
                    let o = map.obstacles[obstacle.index(map.obstacles.len())];
                    let x = o.min.x - r + along * (o.max.x - o.min.x + 2.0 * r);
                    let y = o.min.y - r + along * (o.max.y - o.min.y + 2.0 * r);
                    match face {
                        0 => Vec2::new(o.min.x - r - gap, y),
                        1 => Vec2::new(o.max.x + r + gap, y),
                        2 => Vec2::new(x, o.min.y - r - gap),
                        _ => Vec2::new(x, o.max.y + r + gap),
                    }
                }
                Spot::Inside { ref obstacle, x, y } if !map.obstacles.is_empty() => {
                    let o = map.obstacles[obstacle.index(map.obstacles.len())];
                    o.min + Vec2::new(x, y) * (o.max - o.min)
                }
                Spot::Wall { wall, along, gap } => match wall {
                    0 => Vec2::new(r + gap, along * map.height),
                    1 => Vec2::new(map.width - r - gap, along * map.height),
                    2 => Vec2::new(along * map.width, r + gap),
                    _ => Vec2::new(along * map.width, map.height - r - gap),
                },
                _ => size / 2.0,
            }
        }
    }

    fn arb_gap() -> impl Strategy<Value = f32> {
        prop_oneof![
            Just(0.0f32),
            -1e-3f32..1e-3,
            -2.0f32..2.0,
            -40.0f32..40.0,
            (-256i32..256).prop_map(|q| q as f32 / 64.0),
        ]
    }

    fn arb_spot() -> impl Strategy<Value = Spot> {
        prop_oneof![
            (-0.05f32..1.05, -0.05f32..1.05).prop_map(|(x, y)| Spot::Anywhere(x, y)),
            (
                any::<proptest::sample::Index>(),
                0u8..4,
                0.0f32..1.0,
                arb_gap()
            )
                .prop_map(|(obstacle, face, along, gap)| Spot::Face {
                    obstacle,
                    face,
                    along,
                    gap
                }),
            (any::<proptest::sample::Index>(), 0.0f32..1.0, 0.0f32..1.0)
                .prop_map(|(obstacle, x, y)| Spot::Inside { obstacle, x, y }),
            (0u8..4, 0.0f32..1.0, arb_gap()).prop_map(|(wall, along, gap)| Spot::Wall {
                wall,
                along,
                gap
            }),
        ]
    }

    /// Players' and NPCs' bodies mostly; other sizes, a negative one too, because the grid's
    /// answer must not depend on the size of what asks.
    fn arb_radius() -> impl Strategy<Value = f32> {
        prop_oneof![
            3 => Just(PLAYER.radius),
            3 => Just(NPC.radius),
            1 => 0.25f32..600.0,
            1 => -20.0f32..0.0,
        ]
    }

    /// Steps of every size: none, tiny, a tick's, far beyond a tick's, and not a number.
    fn arb_delta() -> impl Strategy<Value = f32> {
        prop_oneof![
            Just(0.0f32),
            -1e-3f32..1e-3,
            (-64i32..64).prop_map(|q| q as f32 / 64.0),
            -12.0f32..12.0,
            -3000.0f32..3000.0,
            Just(f32::NAN),
            Just(f32::INFINITY),
        ]
    }
}
