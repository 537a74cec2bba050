//! Quantization of what crosses the wire.
//!
//! Invariant: the server simulates from the quantized value, never from the float it had, so
//! what a client reconstructs from the wire is exactly the state the server steps from.
//! Precision:
//! - position: 1/16 world unit ([`POS_STEPS`] per unit), as `i32`;
//! - velocity: 1/16 world unit per second ([`VEL_STEPS`]), as `i32`;
//! - movement direction: each axis in `-127..=127` (1/127 of full deflection), clamped to the
//!   unit disc when turned back into a vector;
//! - aim: a `u16` turn fraction, 2π/65536 rad (≈ 0.0055°) per step.
//!
//! Round trips are exact: `dequantize(quantize(x))` is a multiple of 1/16, and quantizing it
//! again gives the same integer (all such values are exact in `f32` below 2^24 / 16 = 1,048,576
//! units, far beyond any world size the server accepts).

use bitcode::{Decode, Encode};
use glam::Vec2;

/// Position steps per world unit.
pub const POS_STEPS: f32 = 16.0;
/// Velocity steps per world unit per second.
pub const VEL_STEPS: f32 = 16.0;

/// Quantizes a coordinate (NaN and infinities become 0, which the simulation never produces).
pub fn quantize_pos(x: f32) -> i32 {
    quantize(x, POS_STEPS)
}

pub fn dequantize_pos(q: i32) -> f32 {
    q as f32 / POS_STEPS
}

pub fn quantize_vel(v: f32) -> i32 {
    quantize(v, VEL_STEPS)
}

pub fn dequantize_vel(q: i32) -> f32 {
    q as f32 / VEL_STEPS
}

/// Quantized values saturate here (positions past a million units, which nothing reaches).
const QUANT_LIMIT: i32 = 1 << 24;

/// `round(x * steps)`, halves away from zero, saturating at [`QUANT_LIMIT`]; 0 for NaN and
/// infinities. Bit for bit what `(x * steps).round().clamp(..) as i32` gives (a property test
/// holds it to that), without `f32::round`: on the baseline x86-64 target that is a call into
/// libm, four of them in every body's tick, and the server quantizes every entity every tick.
#[inline]
fn quantize(x: f32, steps: f32) -> i32 {
    if !x.is_finite() {
        return 0;
    }
    let y = x * steps;
    if y.abs() < QUANT_LIMIT as f32 {
        // Below 2^24 the truncation is exact, and so is the fraction `y - t` (Sterbenz).
        let t = y as i32;
        let frac = y - t as f32;
        t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)
    } else if y > 0.0 {
        QUANT_LIMIT
    } else {
        -QUANT_LIMIT
    }
}

/// Snaps a vector to the position grid.
pub fn snap_pos(v: Vec2) -> Vec2 {
    Vec2::new(
        dequantize_pos(quantize_pos(v.x)),
        dequantize_pos(quantize_pos(v.y)),
    )
}

/// Snaps a vector to the velocity grid.
pub fn snap_vel(v: Vec2) -> Vec2 {
    Vec2::new(
        dequantize_vel(quantize_vel(v.x)),
        dequantize_vel(quantize_vel(v.y)),
    )
}

/// A movement intent: a direction with magnitude at most 1, one signed byte per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub struct MoveDir {
    pub x: i8,
    pub y: i8,
}

impl MoveDir {
    pub const STEPS: f32 = 127.0;

    /// Quantizes a direction; NaN counts as no movement, magnitudes above 1 are normalised.
    pub fn from_vec2(v: Vec2) -> Self {
        let v = if v.is_finite() { v } else { Vec2::ZERO };
        let v = if v.length_squared() > 1.0 {
            v.normalize()
        } else {
            v
        };
        let q = |c: f32| (c * Self::STEPS).round().clamp(-127.0, 127.0) as i32;
        let (mut x, mut y) = (q(v.x), q(v.y));
        // Rounding can land just outside the unit disc; step back in, so that what we send is
        // exactly what the simulation uses (and requantizing it is stable).
        while x * x + y * y > 127 * 127 {
            if x.abs() >= y.abs() {
                x -= x.signum();
            } else {
                y -= y.signum();
            }
        }
        Self {
            x: x as i8,
            y: y as i8,
        }
    }

    /// The direction the simulation uses. Whatever the bytes, the result has length <= 1
    /// (`-128` is treated as `-127`; diagonals like (127,127) are scaled back to the unit disc).
    pub fn to_vec2(self) -> Vec2 {
        let c = |b: i8| f32::from(b.max(-127)) / Self::STEPS;
        let v = Vec2::new(c(self.x), c(self.y));
        let len2 = v.length_squared();
        if len2 > 1.0 { v / len2.sqrt() } else { v }
    }
}

/// An aim angle as a fraction of a full turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub struct Aim(pub u16);

impl Aim {
    const PER_RADIAN: f32 = 65536.0 / std::f32::consts::TAU;

    /// Quantizes an angle in radians (any value; wrapped to one turn). NaN aims at 0.
    pub fn from_radians(a: f32) -> Self {
        if !a.is_finite() {
            return Self(0);
        }
        let turns = (a * Self::PER_RADIAN).round() as i64;
        Self(turns.rem_euclid(65536) as u16)
    }

    pub fn radians(self) -> f32 {
        f32::from(self.0) / Self::PER_RADIAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cardinal_directions_are_exact() {
        assert_eq!(MoveDir::from_vec2(Vec2::X).to_vec2(), Vec2::X);
        assert_eq!(MoveDir::from_vec2(-Vec2::Y).to_vec2(), -Vec2::Y);
        assert_eq!(MoveDir::from_vec2(Vec2::NAN), MoveDir::default());
        assert_eq!(
            MoveDir::from_vec2(Vec2::new(10.0, 0.0)),
            MoveDir { x: 127, y: 0 }
        );
    }

    /// The quantization the wire was defined with, through `f32::round`.
    fn quantize_by_round(x: f32, steps: f32) -> i32 {
        if x.is_finite() {
            (x * steps)
                .round()
                .clamp(-QUANT_LIMIT as f32, QUANT_LIMIT as f32) as i32
        } else {
            0
        }
    }

    #[test]
    fn quantizing_gives_what_rounding_gives_for_every_kind_of_float() {
        let mut rng = crate::rng::SplitMix64::new(21);
        let mut cases: Vec<f32> = vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::EPSILON,
            0.5 / 16.0,
            -0.5 / 16.0,
            0.49999997 / 16.0,
            -0.49999997 / 16.0,
            1_048_575.97,
            1_048_576.0,
            -1_048_576.0,
            1.0e7,
        ];
        // Every half-way point and its neighbours on both sides, over the world's range.
        for q in (-2_000_000..2_000_000).step_by(997) {
            let half = (q as f32 + 0.5) / 16.0;
            cases.extend([half, f32::from_bits(half.to_bits() + 1)]);
            cases.extend([f32::from_bits(half.to_bits().saturating_sub(1)), -half]);
        }
        // Any bit pattern at all.
        cases.extend((0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
        for x in cases {
            for steps in [POS_STEPS, VEL_STEPS, 1.0] {
                assert_eq!(
                    quantize(x, steps),
                    quantize_by_round(x, steps),
                    "x = {x:e} ({:#x}), steps = {steps}",
                    x.to_bits()
                );
            }
        }
    }

    proptest! {
        #[test]
        fn positions_and_velocities_round_trip_exactly(x in -70_000.0f32..70_000.0, v in -1000.0f32..1000.0) {
            let q = quantize_pos(x);
            prop_assert!((dequantize_pos(q) - x).abs() <= 0.5 / POS_STEPS);
            prop_assert_eq!(quantize_pos(dequantize_pos(q)), q);
            let s = snap_pos(Vec2::new(x, x));
            prop_assert_eq!(snap_pos(s), s);
            let qv = quantize_vel(v);
            prop_assert_eq!(quantize_vel(dequantize_vel(qv)), qv);
        }

        #[test]
        fn any_bytes_give_a_direction_inside_the_unit_disc(x in any::<i8>(), y in any::<i8>()) {
            let v = MoveDir { x, y }.to_vec2();
            prop_assert!(v.is_finite());
            prop_assert!(v.length() <= 1.0 + 1e-6);
        }

        #[test]
        fn requantizing_is_stable(x in -1.0f32..1.0, y in -1.0f32..1.0) {
            let q = MoveDir::from_vec2(Vec2::new(x, y));
            prop_assert_eq!(MoveDir::from_vec2(q.to_vec2()), q);
        }

        #[test]
        fn aim_round_trips_within_one_step(a in -10.0f32..10.0) {
            let back = Aim::from_radians(a).radians();
            let diff = (back - a).rem_euclid(std::f32::consts::TAU);
            let err = diff.min(std::f32::consts::TAU - diff);
            prop_assert!(err <= std::f32::consts::TAU / 65536.0);
        }
    }
}
