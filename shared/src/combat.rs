//! Combat rules: weapons, aim, shots, projectiles and lag compensation, as pure functions.
//!
//! The server is authoritative: it runs these to decide hits and damage. Clients run the same
//! functions to predict their own shots and draw projectiles, so what they show agrees with what
//! the server decides. Nothing here owns entities or time; positions, ticks and the map come in
//! as values.
//!
//! - Parameters: health, [`RIFLE`] (hitscan), [`ROCKET`] and [`NPC_BOLT`] (projectiles),
//!   [`HIT_RADIUS`], the lag-compensation window and [`RESPAWN_TICKS`].
//! - [`aim_dir`]: the unit vector of a wire [`Aim`], without `sin`/`cos`.
//! - Geometry: [`ray_obstacle`], [`ray_circle`], [`hitscan`] and the swept [`projectile_step`].
//! - Lag compensation: [`History`] keeps where every hittable entity was for the last ticks;
//!   [`rewind_target`] picks the time a shot is tested at and [`hitscan_rewound`] tests it there.
//!
//! Determinism (as in [`crate::sim`]): only `+ - * /`, `sqrt` and comparisons on `f32`, no fused
//! multiply-add, no transcendental functions (their `libm` results differ across platforms), no
//! iteration over unordered collections, and ties always broken by id. Minimum and maximum are
//! taken by comparison (`fmin`, `fmax` here) rather than `f32::min`/`f32::max`, whose choice
//! between `0.0` and `-0.0` differs across targets. The same inputs give bit-identical results on
//! every platform Rust targets, wasm32 included.
//!
//! Tick counts below are for the default 30 Hz tick rate.

use std::cmp::Ordering;
use std::collections::VecDeque;

use glam::Vec2;

use crate::map::Map;
use crate::quant::Aim;

/// NPCs notice a living player this close (and start chasing it).
pub const NPC_NOTICE_RANGE: f32 = 400.0;
/// NPCs give up a chase beyond this distance.
pub const NPC_FORGET_RANGE: f32 = 650.0;
/// NPCs fire their bolt at a player this close, when they can see it.
pub const NPC_FIRE_RANGE: f32 = 350.0;
/// NPCs stop closing in at this distance (they keep firing).
pub const NPC_KEEP_DISTANCE: f32 = 120.0;
/// NPCs look for a new target this often, each on its own phase (spreads the cost).
pub const NPC_LOOK_TICKS: u32 = 8;

/// Health a player spawns with.
pub const PLAYER_HEALTH: i32 = 100;
/// Health an NPC spawns with.
pub const NPC_HEALTH: i32 = 60;

/// A weapon that hits instantly along a ray.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hitscan {
    /// Health taken from the target hit.
    pub damage: i32,
    /// Longest shot, world units.
    pub range: f32,
    /// Ticks between two shots.
    pub cooldown_ticks: u32,
}

/// The players' rifle: 5 shots a second at 30 Hz.
pub const RIFLE: Hitscan = Hitscan {
    damage: 20,
    range: 900.0,
    cooldown_ticks: 6,
};

/// A weapon that fires a moving projectile (a circle), stepped by [`projectile_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectileParams {
    /// World units per second.
    pub speed: f32,
    /// Radius of the projectile's circle, world units.
    pub radius: f32,
    /// Ticks before it disappears without hitting anything.
    pub lifetime_ticks: u32,
    /// Health taken from the target hit.
    pub damage: i32,
    /// Ticks between two shots.
    pub cooldown_ticks: u32,
}

/// The players' rocket: fast, 1.5 s of flight (about 1,050 units).
pub const ROCKET: ProjectileParams = ProjectileParams {
    speed: 700.0,
    radius: 6.0,
    lifetime_ticks: 45,
    damage: 35,
    cooldown_ticks: 20,
};

/// What NPCs fire: slower than a player's reaction, so a player can dodge it.
pub const NPC_BOLT: ProjectileParams = ProjectileParams {
    speed: 450.0,
    radius: 5.0,
    lifetime_ticks: 40,
    damage: 10,
    cooldown_ticks: 30,
};

/// Players and NPCs are hit as circles of this radius. Their bodies collide with the map as
/// squares of the same half-side ([`crate::sim::PLAYER`]); for shots a circle is fairer, since
/// whether a shot hits then does not depend on the angle it comes from.
pub const HIT_RADIUS: f32 = 16.0;

/// Ticks of positions the server keeps for lag compensation: 1 s at 30 Hz. The server derives
/// the real value from its tick rate and config; this is the 30 Hz default.
pub const HISTORY_TICKS: u32 = 30;
/// Furthest back a shot is rewound: 200 ms at 30 Hz. A shooter with a worse connection has to
/// lead their target; a victim is never hit more than this long after reaching cover. The server
/// derives the real value from its tick rate and config; this is the 30 Hz default.
pub const MAX_REWIND_TICKS: u32 = 6;

/// Ticks between death and respawn: 3 s at 30 Hz.
pub const RESPAWN_TICKS: u32 = 90;

// ---------------------------------------------------------------------------------------------
// Aim

/// One [`Aim`] step in radians: a full turn is 65,536 steps.
const AIM_STEP: f32 = std::f32::consts::PI / 32768.0;
/// Steps in one eighth of a turn.
const OCTANT: u16 = 0x2000;

/// The unit vector an [`Aim`] points along: angle [`Aim::radians`], 0 along +x, counter-clockwise
/// towards +y.
///
/// Computed with `+ - * /` only, so it is the same on every platform: the top three bits pick
/// the octant, the rest is an angle in `[0, π/4]` (measured backwards from the octant's end in
/// odd octants) whose sine and cosine come from Taylor polynomials. Error at most 1.1e-7 in
/// each component, length and angle (radians), measured over all 65,536 aims. The four axis
/// directions are exact, and the four diagonals have components of exactly equal magnitude
/// (`FRAC_1_SQRT_2`).
pub fn aim_dir(aim: Aim) -> Vec2 {
    let octant = aim.0 / OCTANT;
    let within = aim.0 % OCTANT;
    let k = if octant.is_multiple_of(2) {
        within
    } else {
        OCTANT - within
    };
    let (s, c) = if k == OCTANT {
        // π/4: both polynomials are accurate there, but need not round to the same float.
        let d = std::f32::consts::FRAC_1_SQRT_2;
        (d, d)
    } else {
        let t = f32::from(k) * AIM_STEP;
        (sin_quarter(t), cos_quarter(t))
    };
    // (cos θ, sin θ) with θ = octant·π/4 + t in even octants, (octant + 1)·π/4 − t in odd ones.
    let (x, y) = match octant {
        0 => (c, s),
        1 => (s, c),
        2 => (neg(s), c),
        3 => (neg(c), s),
        4 => (neg(c), neg(s)),
        5 => (neg(s), neg(c)),
        6 => (s, neg(c)),
        _ => (c, neg(s)),
    };
    Vec2::new(x, y)
}

/// `-x`, except that it gives `0.0` rather than `-0.0` for zero (so 90° is exactly `(0, 1)`).
fn neg(x: f32) -> f32 {
    0.0 - x
}

/// sin t for t in [0, π/4]: Taylor series to t⁹ (truncation error below 2e-9), Horner form.
fn sin_quarter(t: f32) -> f32 {
    const C3: f32 = -1.0 / 6.0;
    const C5: f32 = 1.0 / 120.0;
    const C7: f32 = -1.0 / 5040.0;
    const C9: f32 = 1.0 / 362_880.0;
    let t2 = t * t;
    // The small correction is added to t last, which keeps the relative error near one ulp.
    t + t * t2 * (C3 + t2 * (C5 + t2 * (C7 + t2 * C9)))
}

/// cos t for t in [0, π/4]: Taylor series to t¹⁰ (truncation error below 2e-10), Horner form.
fn cos_quarter(t: f32) -> f32 {
    const C2: f32 = -0.5;
    const C4: f32 = 1.0 / 24.0;
    const C6: f32 = -1.0 / 720.0;
    const C8: f32 = 1.0 / 40_320.0;
    const C10: f32 = -1.0 / 3_628_800.0;
    let t2 = t * t;
    1.0 + t2 * (C2 + t2 * (C4 + t2 * (C6 + t2 * (C8 + t2 * C10))))
}

// ---------------------------------------------------------------------------------------------
// Rays and sweeps

/// The smaller of two floats, by comparison: `a` on ties, so never a platform-dependent zero.
/// Callers never pass NaN.
fn fmin(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

/// The larger of two floats, by comparison: `a` on ties. Callers never pass NaN.
fn fmax(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// `x` when it is positive, `0.0` otherwise (NaN and `-0.0` included).
fn non_neg(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

/// Distance along `dir` (unit) from `origin` to the first obstacle face or world edge, capped
/// at `max` (which must be ≥ 0). An origin inside an obstacle or outside the world gives 0.
///
/// Obstacles are solid in their open interior: a ray that only grazes a face or a corner, or
/// starts on a face and leaves, is not blocked. Never NaN for finite inputs; a `dir` that is not
/// unit gives the distance in multiples of its length.
pub fn ray_obstacle(map: &Map, origin: Vec2, dir: Vec2, max: f32) -> f32 {
    let t = first_block(map, origin, dir, 0.0);
    if t < max { t } else { non_neg(max) }
}

/// Like [`ray_obstacle`] for a circle of radius `grow` moving along the ray: its centre against
/// every obstacle grown by `grow` on each side (a square grown, not rounded at the corners, so a
/// corner is hit a little early) and against the world shrunk by `grow`. Not capped: infinite
/// when `dir` is zero and nothing overlaps the origin. Never NaN, never negative.
fn first_block(map: &Map, origin: Vec2, dir: Vec2, grow: f32) -> f32 {
    let lo = Vec2::splat(grow);
    let hi = Vec2::new(map.width - grow, map.height - grow);
    let mut t = fmin(
        exit_1d(origin.x, dir.x, lo.x, hi.x),
        exit_1d(origin.y, dir.y, lo.y, hi.y),
    );
    for o in &map.obstacles {
        if let Some(enter) = slab_entry(o.min - lo, o.max + lo, origin, dir) {
            t = fmin(t, enter);
        }
    }
    non_neg(t)
}

/// Distance along one axis until `o` leaves `[lo, hi]` moving at `d`; 0 when already outside.
fn exit_1d(o: f32, d: f32, lo: f32, hi: f32) -> f32 {
    if !(o >= lo && o <= hi) {
        0.0
    } else if d > 0.0 {
        (hi - o) / d
    } else if d < 0.0 {
        (lo - o) / d
    } else {
        f32::INFINITY
    }
}

/// Slab method: the distance at which the ray enters the open box `(lo, hi)`, 0 when it starts
/// inside, `None` when it misses it, only touches its boundary, or the box is behind it.
fn slab_entry(lo: Vec2, hi: Vec2, o: Vec2, d: Vec2) -> Option<f32> {
    let (enter_x, exit_x) = slab_1d(o.x, d.x, lo.x, hi.x)?;
    let (enter_y, exit_y) = slab_1d(o.y, d.y, lo.y, hi.y)?;
    let enter = non_neg(fmax(enter_x, enter_y));
    let exit = fmin(exit_x, exit_y);
    (exit > enter).then_some(enter)
}

/// The parameter interval during which the ray is strictly between `lo` and `hi` on one axis.
fn slab_1d(o: f32, d: f32, lo: f32, hi: f32) -> Option<(f32, f32)> {
    if d == 0.0 {
        // Parallel to the slab: inside it all along, or never.
        return (lo < o && o < hi).then_some((f32::NEG_INFINITY, f32::INFINITY));
    }
    // Finite numerators (possibly overflowing to ±inf) over a nonzero divisor: never NaN.
    let a = (lo - o) / d;
    let b = (hi - o) / d;
    Some(if a < b { (a, b) } else { (b, a) })
}

/// Distance along `dir` (unit) at which a ray from `origin` enters the circle, if that is within
/// `[0, max]` (`max` ≥ 0). An origin inside or on the circle gives `Some(0.0)`.
///
/// Uses the closest approach to the centre rather than the textbook discriminant `b² − c`, which
/// loses most of its digits to cancellation far from the circle. Never NaN for finite inputs
/// (overflowing ones miss); a `dir` that is not unit gives multiples of its length.
pub fn ray_circle(origin: Vec2, dir: Vec2, center: Vec2, radius: f32, max: f32) -> Option<f32> {
    let m = origin - center;
    let r2 = radius * radius;
    if m.dot(m) <= r2 {
        return Some(0.0);
    }
    let a = dir.dot(dir);
    // Parameter of the closest approach; not ahead (or NaN from overflow): no entry ahead.
    let s = -m.dot(dir) / a;
    if s.is_nan() || s <= 0.0 {
        return None;
    }
    let p = m + dir * s;
    let h2 = r2 - p.dot(p);
    if h2.is_nan() || h2 < 0.0 {
        return None;
    }
    let t = s - (h2 / a).sqrt();
    if t.is_nan() {
        return None;
    }
    let t = non_neg(t);
    (t <= max).then_some(t)
}

/// The nearest target whose [`HIT_RADIUS`] circle a shot enters before the first obstacle and
/// within `range`: its id and the distance to where the shot enters it. Ties go to the lower id,
/// so the answer does not depend on the order of `targets`. Callers leave the shooter out.
pub fn hitscan(
    map: &Map,
    origin: Vec2,
    dir: Vec2,
    range: f32,
    targets: impl IntoIterator<Item = (u32, Vec2)>,
) -> Option<(u32, f32)> {
    let limit = ray_obstacle(map, origin, dir, range);
    hitscan_within(origin, dir, limit, targets)
}

/// [`hitscan`]'s choice among `targets` for a ray whose obstacle limit is known already
/// (`limit`: [`ray_obstacle`]'s answer), e.g. because the caller gathered the targets along the
/// ray only that far.
pub fn hitscan_within(
    origin: Vec2,
    dir: Vec2,
    limit: f32,
    targets: impl IntoIterator<Item = (u32, Vec2)>,
) -> Option<(u32, f32)> {
    nearest(origin, dir, HIT_RADIUS, limit, targets)
}

/// The target whose circle of `radius` the ray enters first within `max`, ties to the lower id.
fn nearest(
    origin: Vec2,
    dir: Vec2,
    radius: f32,
    max: f32,
    targets: impl IntoIterator<Item = (u32, Vec2)>,
) -> Option<(u32, f32)> {
    let mut best: Option<(u32, f32)> = None;
    for (id, center) in targets {
        if let Some(t) = ray_circle(origin, dir, center, radius, max)
            && best.is_none_or(|(best_id, best_t)| t < best_t || (t == best_t && id < best_id))
        {
            best = Some((id, t));
        }
    }
    best
}

/// What a projectile ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impact {
    /// An obstacle or the edge of the world.
    Obstacle,
    /// The target with this id.
    Target(u32),
}

/// Where a projectile is after one step, and what stopped it, if anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectileStep {
    /// The contact point when something was hit, else the end of the step.
    pub pos: Vec2,
    /// What it hit; `None` when it flew the whole step.
    pub hit: Option<Impact>,
}

/// Moves a projectile (a circle of `radius`) from `pos` along `vel * dt`, stopping at the first
/// thing it touches on the way: a target's circle ([`HIT_RADIUS`] + `radius` from its centre),
/// an obstacle (grown by `radius`) or the world's edge.
///
/// The whole segment is swept, so a fast projectile cannot pass through a thin obstacle or a
/// target between two ticks. Ties go to a target before an obstacle, then to the lower id. The
/// projectile already overlapping something hits it at `pos`; a zero-length step only reports
/// such an overlap. Callers leave the shooter out of `targets`.
pub fn projectile_step(
    pos: Vec2,
    vel: Vec2,
    dt: f32,
    radius: f32,
    map: &Map,
    targets: impl IntoIterator<Item = (u32, Vec2)>,
) -> ProjectileStep {
    let delta = vel * dt;
    let len = delta.length();
    let dir = if len > 0.0 { delta / len } else { Vec2::ZERO };
    let len = non_neg(len);
    let wall = first_block(map, pos, dir, radius);
    if let Some((id, t)) = nearest(pos, dir, HIT_RADIUS + radius, len, targets)
        && t <= wall
    {
        return ProjectileStep {
            pos: pos + dir * t,
            hit: Some(Impact::Target(id)),
        };
    }
    if wall <= len {
        return ProjectileStep {
            pos: pos + dir * wall,
            hit: Some(Impact::Obstacle),
        };
    }
    ProjectileStep {
        pos: pos + delta,
        hit: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Lag compensation

/// Where every hittable entity was, tick by tick, for the last `capacity` ticks.
///
/// The server pushes one frame a tick with the positions clients are sent (the snapped ones), and
/// tests a shot against the picture the shooter saw: [`History::position_at`] blends two frames
/// exactly as the client's interpolation does. It never moves live entities, so a rewound test
/// has nothing to restore. Once full, each push reuses the allocation of the frame it drops:
/// steady state allocates nothing.
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    frames: VecDeque<Frame>,
}

/// Positions by id.
type Entries = [(u32, Vec2)];

/// One tick's positions, sorted by id, one entry per id.
#[derive(Debug, Clone)]
struct Frame {
    tick: u32,
    positions: Vec<(u32, Vec2)>,
}

/// Frames allocated up front at most; a larger history grows to its capacity as it fills.
const PREALLOCATED_FRAMES: usize = 256;

impl History {
    /// An empty history that keeps the last `capacity_ticks` frames (at least one).
    pub fn new(capacity_ticks: u32) -> Self {
        let capacity = capacity_ticks.max(1) as usize;
        Self {
            capacity,
            frames: VecDeque::with_capacity(capacity.min(PREALLOCATED_FRAMES)),
        }
    }

    /// Records the positions at `tick`, dropping the oldest frame when full. Ticks must
    /// increase: a tick not after the newest one (the server's counter restarted) clears the
    /// history first. Ids should be unique; of duplicates, the one with the smallest position
    /// (by x, then y) is kept.
    pub fn push(&mut self, tick: u32, positions: impl IntoIterator<Item = (u32, Vec2)>) {
        if self.frames.back().is_some_and(|f| f.tick >= tick) {
            self.frames.clear();
        }
        let mut slot = if self.frames.len() >= self.capacity {
            self.frames
                .pop_front()
                .map(|f| f.positions)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        // Grow a frame to what it must hold and an eighth more, not to double: the history
        // keeps thirty frames, so a few players joining a world of thousands would otherwise
        // double thirty buffers and cost the server tens of KiB per player.
        let positions = positions.into_iter();
        let needed = positions.size_hint().0;
        slot.clear();
        if slot.capacity() < needed {
            slot.reserve_exact(needed + needed / 8);
        }
        slot.extend(positions);
        // Unstable sort: no scratch allocation. The key is total, so the order is still defined.
        slot.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.x.total_cmp(&b.1.x))
                .then(a.1.y.total_cmp(&b.1.y))
        });
        slot.dedup_by_key(|e| e.0);
        self.frames.push_back(Frame {
            tick,
            positions: slot,
        });
    }

    /// The frames from `tick` on, oldest first, as `(tick, positions sorted by id)`: what a
    /// replay keyframe keeps so a re-simulation can rewind as far as the live server could.
    pub fn frames_from(&self, tick: u32) -> impl Iterator<Item = (u32, &[(u32, Vec2)])> + '_ {
        self.frames
            .iter()
            .filter(move |f| f.tick >= tick)
            .map(|f| (f.tick, &f.positions[..]))
    }

    /// A history of `capacity_ticks` holding `frames` (oldest first, as
    /// [`History::frames_from`] gives them): where a re-simulation from a keyframe starts.
    pub fn restored(
        capacity_ticks: u32,
        frames: impl IntoIterator<Item = (u32, Vec<(u32, Vec2)>)>,
    ) -> Self {
        let mut h = Self::new(capacity_ticks);
        for (tick, positions) in frames {
            h.push(tick, positions);
        }
        h
    }

    /// Frames it keeps at most.
    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }

    /// Tick of the oldest frame kept.
    pub fn oldest_tick(&self) -> Option<u32> {
        self.frames.front().map(|f| f.tick)
    }

    /// Tick of the newest frame.
    pub fn newest_tick(&self) -> Option<u32> {
        self.frames.back().map(|f| f.tick)
    }

    /// Frames kept (never more than the capacity).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True before the first push.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Where `id` was at `tick + frac` (`frac` in `[0, 1)`), blended linearly between the frames
    /// around that time, as a client's interpolation shows it. Times before the oldest frame or
    /// after the newest are clamped to that frame. `None` when neither frame around the time has
    /// the id; when only one has it, that one's position.
    pub fn position_at(&self, id: u32, tick: u32, frac: f32) -> Option<Vec2> {
        let (a, b, s) = self.bracket(tick, frac);
        let find = |f: &Entries| f.binary_search_by_key(&id, |e| e.0).ok().map(|i| f[i].1);
        blend(find(a), find(b), s)
    }

    /// Every entity of the two frames around `tick + frac` with its [`History::position_at`]
    /// position, in id order.
    pub fn positions_at(&self, tick: u32, frac: f32) -> impl Iterator<Item = (u32, Vec2)> + '_ {
        let (a, b, s) = self.bracket(tick, frac);
        Merge { a, b, s }
    }

    /// The frames before and after `tick + frac` and the blend factor between them; after the
    /// newest or before the oldest frame, that frame alone (an empty second frame).
    fn bracket(&self, tick: u32, frac: f32) -> (&Entries, &Entries, f32) {
        let frac = if frac > 0.0 { fmin(frac, 1.0) } else { 0.0 };
        let after = self.frames.partition_point(|f| f.tick <= tick);
        let Some(a) = after.checked_sub(1).map(|i| &self.frames[i]) else {
            let oldest = self.frames.front().map_or(&[][..], |f| &f.positions[..]);
            return (oldest, &[], 0.0);
        };
        match self.frames.get(after) {
            Some(b) => {
                // Ticks one apart (the usual case) give s = frac exactly.
                let s = ((tick - a.tick) as f32 + frac) / (b.tick - a.tick) as f32;
                (&a.positions, &b.positions, s)
            }
            None => (&a.positions, &[], 0.0),
        }
    }
}

/// The blend of two frames' positions of one id: the same formula as the client's
/// interpolation (`Vec2::lerp`), or the one position there is.
fn blend(a: Option<Vec2>, b: Option<Vec2>, s: f32) -> Option<Vec2> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.lerp(b, s)),
        (a, b) => a.or(b),
    }
}

/// Walks two id-sorted frames together, blending the ids they share.
struct Merge<'a> {
    a: &'a Entries,
    b: &'a Entries,
    s: f32,
}

impl Iterator for Merge<'_> {
    type Item = (u32, Vec2);

    fn next(&mut self) -> Option<(u32, Vec2)> {
        let order = match (self.a.first(), self.b.first()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.0.cmp(&b.0),
        };
        let (id, pa, pb) = match order {
            Ordering::Less => {
                let (id, p) = self.a[0];
                self.a = &self.a[1..];
                (id, Some(p), None)
            }
            Ordering::Greater => {
                let (id, p) = self.b[0];
                self.b = &self.b[1..];
                (id, None, Some(p))
            }
            Ordering::Equal => {
                let ((id, pa), (_, pb)) = (self.a[0], self.b[0]);
                self.a = &self.a[1..];
                self.b = &self.b[1..];
                (id, Some(pa), Some(pb))
            }
        };
        blend(pa, pb, self.s).map(|p| (id, p))
    }
}

/// The time, as (tick, fraction), to test a shot at: the shooter's view time, but no earlier
/// than `now_tick - max_rewind_ticks` and no later than `now_tick`. A fraction of 1 or more
/// counts as the next tick; a negative or NaN one as 0.
pub fn rewind_target(
    now_tick: u32,
    view_tick: u32,
    view_frac: f32,
    max_rewind_ticks: u32,
) -> (u32, f32) {
    let (tick, frac) = if view_frac >= 1.0 {
        (view_tick.saturating_add(1), 0.0)
    } else if view_frac > 0.0 {
        (view_tick, view_frac)
    } else {
        (view_tick, 0.0)
    };
    let earliest = now_tick.saturating_sub(max_rewind_ticks);
    if tick < earliest {
        (earliest, 0.0)
    } else if tick >= now_tick {
        (now_tick, 0.0)
    } else {
        (tick, frac)
    }
}

/// [`hitscan`] against every entity of `history` where it was at `at` (see
/// [`rewind_target`]), except `exclude` (the shooter). The server then damages the live entity
/// with that id.
pub fn hitscan_rewound(
    history: &History,
    map: &Map,
    origin: Vec2,
    dir: Vec2,
    range: f32,
    at: (u32, f32),
    exclude: u32,
) -> Option<(u32, f32)> {
    let targets = history
        .positions_at(at.0, at.1)
        .filter(|&(id, _)| id != exclude);
    hitscan(map, origin, dir, range, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Rect;
    use crate::quant::snap_pos;
    use proptest::prelude::*;

    const DT: f32 = 1.0 / 30.0;
    const UP: Aim = Aim(16384);

    fn close(a: Vec2, b: Vec2, eps: f32) -> bool {
        (a - b).abs().max_element() <= eps
    }

    // --- aim ---

    #[test]
    fn aim_dir_matches_sin_cos_for_every_aim() {
        for a in 0..=u16::MAX {
            let v = aim_dir(Aim(a));
            let theta = f64::from(a) * std::f64::consts::TAU / 65536.0;
            let (x, y) = (f64::from(v.x), f64::from(v.y));
            assert!((x - theta.cos()).abs() < 2e-6, "cos at {a}: {x}");
            assert!((y - theta.sin()).abs() < 2e-6, "sin at {a}: {y}");
            let len = (x * x + y * y).sqrt();
            assert!((len - 1.0).abs() < 1e-6, "length at {a}: {len}");
            let err = (y.atan2(x) - theta).rem_euclid(std::f64::consts::TAU);
            let err = err.min(std::f64::consts::TAU - err);
            assert!(err < 1e-6, "angle at {a}: off by {err}");
        }
    }

    #[test]
    fn aim_dir_is_exact_on_the_axes_and_symmetric_on_the_diagonals() {
        let bits = |v: Vec2| (v.x.to_bits(), v.y.to_bits());
        assert_eq!(bits(aim_dir(Aim(0))), bits(Vec2::new(1.0, 0.0)));
        assert_eq!(bits(aim_dir(Aim(16384))), bits(Vec2::new(0.0, 1.0)));
        assert_eq!(bits(aim_dir(Aim(32768))), bits(Vec2::new(-1.0, 0.0)));
        assert_eq!(bits(aim_dir(Aim(49152))), bits(Vec2::new(0.0, -1.0)));
        let d = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(aim_dir(Aim(8192)), Vec2::new(d, d));
        assert_eq!(aim_dir(Aim(24576)), Vec2::new(-d, d));
        assert_eq!(aim_dir(Aim(40960)), Vec2::new(-d, -d));
        assert_eq!(aim_dir(Aim(57344)), Vec2::new(d, -d));
    }

    #[test]
    fn aim_dir_follows_the_aim_radians_convention() {
        for a in [1u16, 5000, 20000, 40000, 65535] {
            let r = Aim(a).radians();
            assert!(close(aim_dir(Aim(a)), Vec2::new(r.cos(), r.sin()), 2e-6));
        }
    }

    // --- rays ---

    #[test]
    fn ray_obstacle_stops_at_the_first_face_or_the_world_edge() {
        let mut map = Map::open(1000.0, 1000.0);
        map.obstacles
            .push(Rect::new(Vec2::new(300.0, 0.0), Vec2::new(400.0, 600.0)));
        map.obstacles
            .push(Rect::new(Vec2::new(200.0, 400.0), Vec2::new(250.0, 500.0)));
        let o = Vec2::new(100.0, 450.0);
        assert_eq!(ray_obstacle(&map, o, Vec2::X, 2000.0), 100.0, "nearer one");
        assert_eq!(ray_obstacle(&map, o, Vec2::X, 50.0), 50.0, "capped");
        assert_eq!(ray_obstacle(&map, o, -Vec2::X, 2000.0), 100.0, "left edge");
        assert_eq!(ray_obstacle(&map, o, Vec2::Y, 2000.0), 550.0, "top edge");
        let inside = Vec2::new(350.0, 100.0);
        assert_eq!(ray_obstacle(&map, inside, Vec2::X, 2000.0), 0.0);
        // Sliding along a face, or leaving from it, is not blocked.
        let on_face = Vec2::new(250.0, 700.0);
        assert_eq!(ray_obstacle(&map, on_face, -Vec2::Y, 2000.0), 700.0);
        let leaving = Vec2::new(400.0, 100.0);
        assert_eq!(ray_obstacle(&map, leaving, Vec2::X, 2000.0), 600.0);
    }

    #[test]
    fn ray_circle_gives_the_entry_distance_or_none() {
        let c = Vec2::new(100.0, 0.0);
        assert_eq!(ray_circle(Vec2::ZERO, Vec2::X, c, 16.0, 500.0), Some(84.0));
        assert_eq!(ray_circle(Vec2::ZERO, Vec2::X, c, 16.0, 80.0), None);
        assert_eq!(ray_circle(Vec2::ZERO, -Vec2::X, c, 16.0, 500.0), None);
        assert_eq!(ray_circle(Vec2::ZERO, Vec2::Y, c, 16.0, 500.0), None);
        let inside = Vec2::new(90.0, 5.0);
        assert_eq!(ray_circle(inside, -Vec2::X, c, 16.0, 500.0), Some(0.0));
        // Off-centre: enters where the chord starts.
        let t = ray_circle(Vec2::new(0.0, 12.0), Vec2::X, c, 20.0, 500.0).unwrap();
        assert!((t - 84.0).abs() < 1e-4, "{t}");
    }

    // --- hitscan ---

    #[test]
    fn obstacles_block_hitscan_but_targets_in_front_are_hit() {
        let mut map = Map::open(1000.0, 1000.0);
        map.obstacles
            .push(Rect::new(Vec2::new(480.0, 300.0), Vec2::new(520.0, 320.0)));
        let origin = Vec2::new(500.0, 100.0);
        let dir = aim_dir(UP);
        assert_eq!(ray_obstacle(&map, origin, dir, RIFLE.range), 200.0);
        let behind = [(7, Vec2::new(500.0, 500.0))];
        assert_eq!(hitscan(&map, origin, dir, RIFLE.range, behind), None);
        let in_front = [(7, Vec2::new(500.0, 250.0))];
        assert_eq!(
            hitscan(&map, origin, dir, RIFLE.range, in_front),
            Some((7, 150.0 - HIT_RADIUS))
        );
        let out_of_range = [(7, Vec2::new(500.0, 100.0 + RIFLE.range + 20.0))];
        let open = Map::open(2000.0, 2000.0);
        assert_eq!(hitscan(&open, origin, dir, RIFLE.range, out_of_range), None);
    }

    #[test]
    fn hitscan_takes_the_nearest_target_and_ties_go_to_the_lower_id_in_any_order() {
        let map = Map::open(1000.0, 1000.0);
        let origin = Vec2::new(100.0, 500.0);
        // 4 and 9 are mirror images across the ray: the same entry distance to the bit.
        let targets = [
            (9, Vec2::new(300.0, 505.0)),
            (2, Vec2::new(600.0, 500.0)),
            (4, Vec2::new(300.0, 495.0)),
        ];
        let forward = hitscan(&map, origin, Vec2::X, 900.0, targets);
        let backward = hitscan(&map, origin, Vec2::X, 900.0, targets.into_iter().rev());
        assert_eq!(forward.map(|h| h.0), Some(4));
        assert_eq!(forward, backward);
    }

    // --- lag compensation ---

    /// A target crossing 400 units in front of the shooter at 300 u/s along x, pushed into a
    /// history every server tick from 0 to `now` (snapped, as the server sends it). It passes
    /// x = 500 at tick 29.5.
    const SHOOTER: u32 = 1;
    const TARGET: u32 = 2;
    const SHOOTER_POS: Vec2 = Vec2::new(500.0, 100.0);

    fn crossing_target_history(now: u32) -> History {
        let vel = Vec2::new(300.0, 0.0);
        let mut target = Vec2::new(205.0, 500.0);
        let mut history = History::new(HISTORY_TICKS);
        for tick in 0..=now {
            history.push(tick, [(TARGET, target), (SHOOTER, SHOOTER_POS)]);
            target = snap_pos(target + vel * DT);
        }
        history
    }

    #[test]
    fn rewound_hitscan_hits_what_the_shooter_saw_under_the_crosshair() {
        // 100 ms RTT: 1.5 ticks each way. The shooter's client shows others at its estimate of
        // the server tick minus the one-way delay (the age of its newest snapshot) minus the
        // 2-tick interpolation delay.
        const ONE_WAY: f32 = 1.5;
        const INTERP_DELAY: f32 = 2.0;
        // Its picture has the target under the crosshair at 29.5, and it fires then.
        let (view_tick, view_frac) = (29, 0.5);
        let view = view_tick as f32 + view_frac;
        let client_tick = view + ONE_WAY + INTERP_DELAY;
        // The shot reaches the server one-way later and is handled on its next tick.
        let now = (client_tick + ONE_WAY).ceil() as u32;
        assert_eq!(now, 35);

        let map = Map::open(2000.0, 2000.0);
        let history = crossing_target_history(now);
        let seen = history.position_at(TARGET, view_tick, view_frac).unwrap();
        assert!(close(seen, Vec2::new(500.0, 500.0), 0.01), "{seen}");
        let live = history.position_at(TARGET, now, 0.0).unwrap();
        assert!(
            live.x - seen.x > 15.0 + HIT_RADIUS,
            "moved only {}",
            live.x - seen.x
        );

        let at = rewind_target(now, view_tick, view_frac, MAX_REWIND_TICKS);
        assert_eq!(at, (view_tick, view_frac));
        let dir = aim_dir(UP);
        let range = RIFLE.range;
        let hit = hitscan_rewound(&history, &map, SHOOTER_POS, dir, range, at, SHOOTER);
        let (id, dist) = hit.expect("the rewound shot hits");
        assert_eq!(id, TARGET);
        assert!((dist - (400.0 - HIT_RADIUS)).abs() < 0.01, "{dist}");
        // Without rewinding, the same shot misses: the target has moved on.
        assert_eq!(
            hitscan(&map, SHOOTER_POS, dir, range, [(TARGET, live)]),
            None
        );
        // The shooter stands inside its own circle: left in, it would shoot itself.
        let own = hitscan_rewound(&history, &map, SHOOTER_POS, dir, range, at, u32::MAX);
        assert_eq!(own, Some((SHOOTER, 0.0)));

        // A target-width ahead of where the view had it: the picture said miss, so it misses.
        let ahead = aim_dir(Aim::from_radians(400.0f32.atan2(2.0 * HIT_RADIUS)));
        let miss = hitscan_rewound(&history, &map, SHOOTER_POS, ahead, range, at, SHOOTER);
        assert_eq!(miss, None);
    }

    #[test]
    fn shots_older_than_the_cap_are_tested_at_the_cap() {
        let now = 40;
        // 400 ms ago at 30 Hz: 12 ticks, twice the cap.
        let (view_tick, view_frac) = (now - 12, 0.0);
        let at = rewind_target(now, view_tick, view_frac, MAX_REWIND_TICKS);
        assert_eq!(at, (now - MAX_REWIND_TICKS, 0.0));

        let map = Map::open(2000.0, 2000.0);
        let history = crossing_target_history(now);
        // Aimed where the target was at the cap (60 units from where the view had it).
        let at_cap = history.position_at(TARGET, at.0, 0.0).unwrap();
        let seen = history.position_at(TARGET, view_tick, view_frac).unwrap();
        assert!(at_cap.x - seen.x > 2.0 * HIT_RADIUS);
        let origin = Vec2::new(at_cap.x, 100.0);
        let dir = aim_dir(UP);
        let shot = |at| hitscan_rewound(&history, &map, origin, dir, RIFLE.range, at, SHOOTER);
        assert_eq!(shot(at), shot((now - MAX_REWIND_TICKS, 0.0)));
        assert_eq!(shot(at).map(|h| h.0), Some(TARGET));
        assert_eq!(
            shot((view_tick, view_frac)),
            None,
            "the true view time differs"
        );
    }

    #[test]
    fn rewind_target_clamps_to_now_and_normalises_the_fraction() {
        assert_eq!(rewind_target(100, 97, 0.25, 6), (97, 0.25));
        assert_eq!(rewind_target(100, 94, 0.25, 6), (94, 0.25));
        assert_eq!(rewind_target(100, 93, 0.75, 6), (94, 0.0));
        assert_eq!(
            rewind_target(100, 100, 0.5, 6),
            (100, 0.0),
            "not ahead of now"
        );
        assert_eq!(rewind_target(100, 120, 0.0, 6), (100, 0.0));
        assert_eq!(rewind_target(100, 97, 1.0, 6), (98, 0.0));
        assert_eq!(rewind_target(100, 97, f32::NAN, 6), (97, 0.0));
        assert_eq!(rewind_target(3, 0, 0.5, 6), (0, 0.5), "early in the game");
    }

    #[test]
    fn history_interpolates_between_frames() {
        let mut h = History::new(8);
        h.push(10, [(1, Vec2::new(0.0, 0.0)), (2, Vec2::new(50.0, 50.0))]);
        h.push(
            11,
            [(2, Vec2::new(60.0, 40.0)), (1, Vec2::new(10.0, -20.0))],
        );
        assert_eq!(h.position_at(1, 10, 0.5), Some(Vec2::new(5.0, -10.0)));
        assert_eq!(h.position_at(2, 10, 0.5), Some(Vec2::new(55.0, 45.0)));
        assert_eq!(h.position_at(1, 10, 0.0), Some(Vec2::new(0.0, 0.0)));
        // A gap between frames: the blend spans it.
        h.push(13, [(1, Vec2::new(30.0, 0.0))]);
        assert_eq!(h.position_at(1, 12, 0.0), Some(Vec2::new(20.0, -10.0)));
        let all: Vec<_> = h.positions_at(10, 0.5).collect();
        assert_eq!(
            all,
            [(1, Vec2::new(5.0, -10.0)), (2, Vec2::new(55.0, 45.0))]
        );
    }

    #[test]
    fn history_clamps_to_the_oldest_and_newest_frames() {
        let mut h = History::new(8);
        h.push(10, [(1, Vec2::new(0.0, 0.0))]);
        h.push(11, [(1, Vec2::new(10.0, 0.0))]);
        assert_eq!(h.position_at(1, 3, 0.9), Some(Vec2::new(0.0, 0.0)));
        assert_eq!(h.position_at(1, 11, 0.5), Some(Vec2::new(10.0, 0.0)));
        assert_eq!(h.position_at(1, 500, 0.0), Some(Vec2::new(10.0, 0.0)));
        assert_eq!(History::new(8).position_at(1, 0, 0.0), None);
    }

    #[test]
    fn history_uses_the_one_frame_that_has_the_id() {
        let mut h = History::new(8);
        h.push(1, [(1, Vec2::new(0.0, 0.0)), (2, Vec2::new(5.0, 5.0))]);
        h.push(2, [(1, Vec2::new(10.0, 0.0)), (3, Vec2::new(7.0, 7.0))]);
        assert_eq!(h.position_at(2, 1, 0.5), Some(Vec2::new(5.0, 5.0)), "died");
        assert_eq!(
            h.position_at(3, 1, 0.5),
            Some(Vec2::new(7.0, 7.0)),
            "spawned"
        );
        assert_eq!(h.position_at(4, 1, 0.5), None);
        let ids: Vec<_> = h.positions_at(1, 0.5).map(|(id, _)| id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn history_keeps_at_most_capacity_frames() {
        let mut h = History::new(5);
        assert!(h.is_empty());
        for tick in 0..50 {
            h.push(tick, [(1, Vec2::splat(tick as f32))]);
            assert!(h.len() <= 5);
        }
        assert_eq!(h.len(), 5);
        assert_eq!((h.oldest_tick(), h.newest_tick()), (Some(45), Some(49)));
        assert_eq!(h.position_at(1, 0, 0.0), Some(Vec2::splat(45.0)));
    }

    #[test]
    fn history_reuses_the_popped_frames_allocation() {
        let mut h = History::new(4);
        let entities = |tick: u32| (0..100).map(move |id| (id, Vec2::splat((id + tick) as f32)));
        for tick in 0..4 {
            h.push(tick, entities(tick));
        }
        let buffers = |h: &History| -> Vec<*const (u32, Vec2)> {
            h.frames.iter().map(|f| f.positions.as_ptr()).collect()
        };
        let mut expected = buffers(&h);
        for tick in 4..40 {
            h.push(tick, entities(tick));
            // The oldest frame's buffer became the newest one's.
            expected.rotate_left(1);
            assert_eq!(buffers(&h), expected);
        }
    }

    #[test]
    fn a_few_more_entities_grow_each_frame_by_an_eighth_not_double() {
        let mut h = History::new(30);
        let entities = |n: u32| (0..n).map(|id| (id, Vec2::splat(id as f32)));
        for tick in 0..30 {
            h.push(tick, entities(5_000));
        }
        // A hundred players join a world of 5,000: every frame, as it is reused, grows to
        // hold them with an eighth to spare, never to twice the world.
        for tick in 30..90 {
            h.push(tick, entities(5_100));
        }
        let bound = 5_100 + 5_100 / 8;
        for f in &h.frames {
            assert_eq!(f.positions.len(), 5_100);
            assert!(
                f.positions.capacity() <= bound,
                "a frame holds room for {} entities, bound {bound}",
                f.positions.capacity()
            );
        }
    }

    #[test]
    fn history_restarts_when_ticks_do_not_increase() {
        let mut h = History::new(8);
        h.push(10, [(1, Vec2::ZERO)]);
        h.push(11, [(1, Vec2::ZERO)]);
        h.push(11, [(1, Vec2::ONE)]);
        assert_eq!(h.len(), 1);
        assert_eq!(h.position_at(1, 11, 0.0), Some(Vec2::ONE));
        h.push(3, [(1, Vec2::X)]);
        assert_eq!((h.oldest_tick(), h.newest_tick()), (Some(3), Some(3)));
    }

    #[test]
    fn history_keeps_one_entry_per_id_whatever_the_order() {
        let mut a = History::new(2);
        let mut b = History::new(2);
        let dup = [
            (5, Vec2::new(3.0, 1.0)),
            (5, Vec2::new(2.0, 9.0)),
            (1, Vec2::ONE),
        ];
        a.push(0, dup);
        b.push(0, dup.into_iter().rev());
        assert_eq!(a.position_at(5, 0, 0.0), Some(Vec2::new(2.0, 9.0)));
        assert_eq!(b.position_at(5, 0, 0.0), Some(Vec2::new(2.0, 9.0)));
        assert_eq!(a.positions_at(0, 0.0).count(), 2);
    }

    // --- projectiles ---

    #[test]
    fn projectile_stops_at_the_obstacle_face_at_the_exact_contact_point() {
        let mut map = Map::open(1000.0, 1000.0);
        map.obstacles
            .push(Rect::new(Vec2::new(120.0, 400.0), Vec2::new(200.0, 600.0)));
        let vel = Vec2::new(ROCKET.speed, 0.0);
        let step = projectile_step(Vec2::new(100.0, 500.0), vel, DT, ROCKET.radius, &map, []);
        assert_eq!(step.hit, Some(Impact::Obstacle));
        assert_eq!(step.pos, Vec2::new(120.0 - ROCKET.radius, 500.0));
        // The world's edge too.
        let up = Vec2::new(0.0, ROCKET.speed);
        let step = projectile_step(Vec2::new(50.0, 990.0), up, DT, ROCKET.radius, &map, []);
        assert_eq!(step.hit, Some(Impact::Obstacle));
        assert_eq!(step.pos, Vec2::new(50.0, 1000.0 - ROCKET.radius));
        // Short of the face: the whole step, nothing hit.
        let step = projectile_step(Vec2::new(60.0, 500.0), vel, DT, ROCKET.radius, &map, []);
        assert_eq!(step.hit, None);
        assert_eq!(step.pos, Vec2::new(60.0, 500.0) + vel * DT);
    }

    #[test]
    fn projectile_hits_a_target_where_the_circles_touch() {
        let map = Map::open(1000.0, 1000.0);
        let target = [(7, Vec2::new(300.0, 500.0))];
        let vel = Vec2::new(ROCKET.speed, 0.0);
        let mut pos = Vec2::new(100.0, 500.0);
        for step_no in 0.. {
            let step = projectile_step(pos, vel, DT, ROCKET.radius, &map, target);
            pos = step.pos;
            if let Some(hit) = step.hit {
                assert_eq!(hit, Impact::Target(7));
                // 178 units to contact at 23.3 a step: during the 8th step.
                assert_eq!(step_no, 7);
                break;
            }
        }
        let contact = 300.0 - HIT_RADIUS - ROCKET.radius;
        assert!(close(pos, Vec2::new(contact, 500.0), 1e-3), "{pos}");
    }

    #[test]
    fn projectile_passes_between_two_targets_too_far_apart() {
        let map = Map::open(2000.0, 1000.0);
        let start = Vec2::new(100.0, 500.0);
        let vel = Vec2::new(ROCKET.speed, 0.0);
        let fly = |gap: f32| {
            let targets = [
                (1, Vec2::new(400.0, 500.0 + gap)),
                (2, Vec2::new(400.0, 500.0 - gap)),
            ];
            let mut pos = start;
            for _ in 0..ROCKET.lifetime_ticks {
                let step = projectile_step(pos, vel, DT, ROCKET.radius, &map, targets);
                pos = step.pos;
                if step.hit.is_some() {
                    return step.hit;
                }
            }
            None
        };
        let touch = HIT_RADIUS + ROCKET.radius;
        assert_eq!(fly(touch + 1.0), None);
        assert_eq!(fly(touch - 1.0), Some(Impact::Target(1)), "tie: lower id");
    }

    #[test]
    fn fast_projectile_does_not_tunnel_through_a_thin_obstacle() {
        let mut map = Map::open(2000.0, 1000.0);
        map.obstacles
            .push(Rect::new(Vec2::new(150.0, 0.0), Vec2::new(152.0, 1000.0)));
        // 200 units a step, a 2-unit wall.
        let vel = Vec2::new(6000.0, 0.0);
        let step = projectile_step(Vec2::new(100.0, 500.0), vel, DT, NPC_BOLT.radius, &map, []);
        assert_eq!(step.hit, Some(Impact::Obstacle));
        assert_eq!(step.pos, Vec2::new(150.0 - NPC_BOLT.radius, 500.0));
        // Same for a target the step jumps over.
        let target = [(3, Vec2::new(200.0, 500.0))];
        let open = Map::open(2000.0, 1000.0);
        let step = projectile_step(Vec2::new(100.0, 500.0), vel, DT, 1.0, &open, target);
        assert_eq!(step.hit, Some(Impact::Target(3)));
    }

    /// A rocket fired at an odd angle across a map with obstacles while three targets move.
    #[derive(Clone)]
    struct Flight {
        map: Map,
        pos: Vec2,
        vel: Vec2,
        targets: Vec<(u32, Vec2, Vec2)>,
    }

    impl Flight {
        fn new() -> Self {
            let mut map = Map::open(3000.0, 3000.0);
            map.obstacles.push(Rect::new(
                Vec2::new(1700.0, 900.0),
                Vec2::new(1760.0, 1300.0),
            ));
            Self {
                map,
                pos: Vec2::new(700.3, 810.7),
                vel: aim_dir(Aim(3001)) * ROCKET.speed,
                targets: vec![
                    (4, Vec2::new(1100.0, 1200.0), Vec2::new(-133.3, 71.9)),
                    (9, Vec2::new(1500.0, 700.0), Vec2::new(17.0, 241.7)),
                    (2, Vec2::new(900.0, 1000.0), Vec2::new(310.1, -5.5)),
                ],
            }
        }

        /// Steps until a hit or `steps` have passed; the position bits after each step.
        fn fly(&mut self, steps: u32) -> Vec<(u32, u32)> {
            let mut trail = Vec::new();
            for _ in 0..steps {
                let targets = self.targets.iter().map(|&(id, p, _)| (id, p));
                let step =
                    projectile_step(self.pos, self.vel, DT, ROCKET.radius, &self.map, targets);
                self.pos = step.pos;
                trail.push((step.pos.x.to_bits(), step.pos.y.to_bits()));
                for t in &mut self.targets {
                    t.1 += t.2 * DT;
                }
                if step.hit.is_some() {
                    break;
                }
            }
            trail
        }
    }

    #[test]
    fn projectile_flight_is_bit_identical_across_runs_and_clones() {
        let a = Flight::new().fly(ROCKET.lifetime_ticks);
        let b = Flight::new().fly(ROCKET.lifetime_ticks);
        assert!(a.len() > 20, "flew {} steps", a.len());
        assert_eq!(a, b);
        let mut first = Flight::new();
        let mut c = first.fly(20);
        let mut clone = first.clone();
        c.extend(clone.fly(ROCKET.lifetime_ticks - 20));
        assert_eq!(a, c);
    }

    fn finite() -> impl Strategy<Value = f32> {
        prop_oneof![
            -5000.0f32..5000.0,
            prop::num::f32::POSITIVE
                | prop::num::f32::NEGATIVE
                | prop::num::f32::NORMAL
                | prop::num::f32::SUBNORMAL
                | prop::num::f32::ZERO,
        ]
    }

    fn non_negative() -> impl Strategy<Value = f32> {
        prop_oneof![
            0.0f32..5000.0,
            prop::num::f32::POSITIVE
                | prop::num::f32::NORMAL
                | prop::num::f32::SUBNORMAL
                | prop::num::f32::ZERO,
        ]
    }

    fn vec2() -> impl Strategy<Value = Vec2> {
        (finite(), finite()).prop_map(|(x, y)| Vec2::new(x, y))
    }

    proptest! {
        #[test]
        fn ray_circle_is_never_nan_nor_outside_zero_to_max(
            origin in vec2(), dir in vec2(), aim in any::<u16>(), unit in any::<bool>(),
            center in vec2(), radius in finite(), max in non_negative(),
        ) {
            let dir = if unit { aim_dir(Aim(aim)) } else { dir };
            if let Some(t) = ray_circle(origin, dir, center, radius, max) {
                prop_assert!(t >= 0.0 && t <= max, "{t} outside [0, {max}]");
            }
        }

        #[test]
        fn ray_obstacle_is_never_nan_nor_outside_zero_to_max(
            origin in vec2(), dir in vec2(), aim in any::<u16>(), unit in any::<bool>(),
            size in (non_negative(), non_negative()),
            rects in proptest::collection::vec((vec2(), vec2()), 0..6),
            max in non_negative(), grow in finite(),
        ) {
            let dir = if unit { aim_dir(Aim(aim)) } else { dir };
            let map = Map {
                width: size.0,
                height: size.1,
                obstacles: rects.into_iter().map(|(a, b)| Rect::new(a, b)).collect(),
            };
            let t = ray_obstacle(&map, origin, dir, max);
            prop_assert!(t >= 0.0 && t <= max, "{t} outside [0, {max}]");
            let grown = first_block(&map, origin, dir, grow);
            prop_assert!(grown >= 0.0, "{grown}");
        }
    }
}
