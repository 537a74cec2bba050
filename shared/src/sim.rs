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

use crate::map::{Map, Rect};
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
/// that axis and slides along the other.
#[must_use]
pub fn step(body: Body, input: MoveDir, map: &Map, params: &MoveParams, dt: f32) -> Body {
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
pub fn tick_body(body: Body, input: MoveDir, map: &Map, params: &MoveParams, dt: f32) -> Body {
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
fn move_axis(pos: Vec2, delta: f32, axis: Axis, map: &Map, r: f32) -> (f32, bool) {
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
        // Stop at the face we came from; with several obstacles the nearest face wins.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::MapParams;
    use proptest::prelude::*;

    const DT: f32 = 1.0 / 30.0;

    fn run(map: &Map, start: Body, inputs: &[MoveDir]) -> Vec<Body> {
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
    }
}
