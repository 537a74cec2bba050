//! The arena: its bounds and rectangular obstacles.
//!
//! A map is generated from a seed by [`Map::generate`] with [`SplitMix64`], so the server, a
//! replay and the browser get the same map from the same numbers. The server also sends the map
//! in `Welcome`, so a client never has to trust its own generator.

use bitcode::{Decode, Encode};
use glam::Vec2;

use crate::rng::SplitMix64;

/// An axis-aligned rectangle, `min` inclusive corner, `max` exclusive corner.
#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode)]
pub struct Rect {
    pub min: Vec2,
    pub max: Vec2,
}

impl Rect {
    pub fn new(min: Vec2, max: Vec2) -> Self {
        Self { min, max }
    }

    /// True when the open interiors overlap (touching edges do not count).
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.min.x < other.max.x
            && other.min.x < self.max.x
            && self.min.y < other.max.y
            && other.min.y < self.max.y
    }

    /// A square of half-size `r` around `c`.
    pub fn around(c: Vec2, r: f32) -> Self {
        Self {
            min: c - Vec2::splat(r),
            max: c + Vec2::splat(r),
        }
    }
}

/// Parameters of the generated map; everything the generator reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapParams {
    pub seed: u64,
    pub width: f32,
    pub height: f32,
    pub obstacles: u32,
}

/// The world: `[0, width] x [0, height]` with solid rectangular obstacles.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Map {
    pub width: f32,
    pub height: f32,
    pub obstacles: Vec<Rect>,
}

/// Keeps the middle of every edge and a band around the map clear, so spawns always find room.
const EDGE_MARGIN: f32 = 96.0;
const MIN_SIDE: f32 = 48.0;
const MAX_SIDE: f32 = 320.0;

impl Map {
    /// Obstacles of 48–320 units a side, placed so that none overlap and a margin along the
    /// edges stays open. Deterministic in `params`.
    pub fn generate(params: MapParams) -> Self {
        let mut rng = SplitMix64::new(params.seed ^ 0xA4E7_4A11_0000_0001);
        let mut obstacles: Vec<Rect> = Vec::with_capacity(params.obstacles as usize);
        let usable = params.width.min(params.height) - 2.0 * EDGE_MARGIN;
        if usable > MAX_SIDE {
            // Bounded retries: a crowded map gets fewer obstacles rather than looping forever.
            let mut tries = params.obstacles.saturating_mul(20);
            while obstacles.len() < params.obstacles as usize && tries > 0 {
                tries -= 1;
                let size = Vec2::new(
                    rng.range_f32(MIN_SIDE, MAX_SIDE).round(),
                    rng.range_f32(MIN_SIDE, MAX_SIDE).round(),
                );
                let min = Vec2::new(
                    rng.range_f32(EDGE_MARGIN, params.width - EDGE_MARGIN - size.x)
                        .round(),
                    rng.range_f32(EDGE_MARGIN, params.height - EDGE_MARGIN - size.y)
                        .round(),
                );
                let rect = Rect::new(min, min + size);
                // Leave a corridor between obstacles so nothing gets boxed in.
                let padded = Rect::new(rect.min - Vec2::splat(64.0), rect.max + Vec2::splat(64.0));
                if obstacles.iter().all(|o| !o.overlaps(&padded)) {
                    obstacles.push(rect);
                }
            }
        }
        Self {
            width: params.width,
            height: params.height,
            obstacles,
        }
    }

    /// An empty map of the given size (tests, and studios that want an open arena).
    pub fn open(width: f32, height: f32) -> Self {
        Self {
            width,
            height,
            obstacles: Vec::new(),
        }
    }

    /// True when a square body of half-size `radius` at `pos` is inside the bounds and clear
    /// of every obstacle.
    pub fn is_free(&self, pos: Vec2, radius: f32) -> bool {
        let body = Rect::around(pos, radius);
        pos.x >= radius
            && pos.y >= radius
            && pos.x <= self.width - radius
            && pos.y <= self.height - radius
            && self.obstacles.iter().all(|o| !o.overlaps(&body))
    }

    /// A random free spot for a body of half-size `radius`. Falls back to the map's margin band,
    /// which [`Map::generate`] keeps clear, so it always returns a free point.
    pub fn random_free_point(&self, rng: &mut SplitMix64, radius: f32) -> Vec2 {
        let lo = radius;
        for _ in 0..64 {
            let p = Vec2::new(
                rng.range_f32(lo, (self.width - radius).max(lo)),
                rng.range_f32(lo, (self.height - radius).max(lo)),
            );
            if self.is_free(p, radius) {
                return p;
            }
        }
        Vec2::new(
            rng.range_f32(lo, (self.width - radius).max(lo)),
            (EDGE_MARGIN / 2.0).clamp(lo, (self.height - radius).max(lo)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> MapParams {
        MapParams {
            seed,
            width: 4096.0,
            height: 4096.0,
            obstacles: 48,
        }
    }

    #[test]
    fn same_seed_same_map_and_obstacles_stay_apart_inside_the_margin() {
        let a = Map::generate(params(42));
        assert_eq!(a, Map::generate(params(42)));
        assert_ne!(a, Map::generate(params(43)));
        assert!(
            a.obstacles.len() >= 30,
            "only {} obstacles placed",
            a.obstacles.len()
        );
        for (i, o) in a.obstacles.iter().enumerate() {
            assert!(o.min.x >= EDGE_MARGIN && o.max.x <= a.width - EDGE_MARGIN);
            assert!(o.min.y >= EDGE_MARGIN && o.max.y <= a.height - EDGE_MARGIN);
            for p in &a.obstacles[i + 1..] {
                assert!(!o.overlaps(p));
            }
        }
    }

    #[test]
    fn random_free_points_are_free() {
        let map = Map::generate(params(1));
        let mut rng = SplitMix64::new(9);
        for _ in 0..500 {
            assert!(map.is_free(map.random_free_point(&mut rng, 16.0), 16.0));
        }
    }

    #[test]
    fn a_map_too_small_for_obstacles_is_open() {
        let map = Map::generate(MapParams {
            seed: 1,
            width: 300.0,
            height: 300.0,
            obstacles: 10,
        });
        assert!(map.obstacles.is_empty());
    }
}
