//! Quantization of what crosses the wire.
//!
//! Invariant: the server simulates from the quantized value, never from the float the client
//! had, so a client that quantizes its own input the same way predicts exactly what the server
//! computes. Precision:
//! - movement direction: each axis in `-127..=127` (1/127 of full deflection), clamped to the
//!   unit disc when turned back into a vector;
//! - aim: a `u16` turn fraction, 2π/65536 rad (≈ 0.0055°) per step.

use bitcode::{Decode, Encode};
use glam::Vec2;

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
        let q = |c: f32| (c * Self::STEPS).round().clamp(-127.0, 127.0) as i8;
        Self {
            x: q(v.x),
            y: q(v.y),
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

    proptest! {
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
