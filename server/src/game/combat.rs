//! Combat in the world: weapons, projectiles, damage, death, respawn, and the NPCs' brains.
//! The rules (damage, ranges, cooldowns, geometry, lag compensation) are
//! `arena_shared::combat`; these systems only apply them to entities.
//!
//! Per tick, in phase order:
//! - `ai`: [`npc_ai`] picks targets (the nearest living, unprotected player in range that
//!   fewer than `--npc-max-engaged` NPCs already chase), steers, queues bolts.
//! - `movement`: after bodies move, [`record_hittables`] files every living player and NPC in
//!   the [`HitGrid`] (for queries) and the lag-compensation [`LagComp`] history.
//! - `projectiles`: [`launch_projectiles`] spawns queued rockets and bolts, [`step_projectiles`]
//!   sweeps every projectile against the map and nearby targets.
//! - `hits`: [`fire_rifles`] tests each hitscan shot against the world as its shooter saw it,
//!   [`apply_damage`] turns blows into health, deaths, scores and events, [`respawn`] brings
//!   the dead back at a spawn point away from enemies.
//!
//! The dead are hidden: no movement, no shots, not hittable, not replicated (`Dead`).
//!
//! A newcomer's first seconds are a game, not an execution: a player who has just spawned is
//! protected ([`SpawnProtection`]: no damage, no NPC picks it) until `--spawn-protection` runs
//! out or it fires; at most `--npc-max-engaged` NPCs chase one player at a time, picked in id
//! order so a re-simulation picks the same ones; and an NPC that has just noticed a player
//! waits `--npc-reaction` before its first bolt.

// Systems name everything they touch in their parameters: long signatures and query types
// are the point, not a smell.
#![allow(clippy::type_complexity, clippy::too_many_arguments)]

use std::collections::HashMap;

use arena_shared::combat::{
    self, HIT_RADIUS, NPC_BOLT, NPC_FIRE_RANGE, NPC_FORGET_RANGE, NPC_KEEP_DISTANCE,
    NPC_LOOK_TICKS, NPC_NOTICE_RANGE, ProjectileParams, RIFLE, ROCKET,
};
use arena_shared::map::Map;
use arena_shared::protocol::{EntityKind, GameEvent};
use arena_shared::quant::{self, Aim, MoveDir};
use arena_shared::replay::Record;
use arena_shared::rng::SplitMix64;
use arena_shared::sim::{self, Body};
use bevy_ecs::prelude::*;
use glam::Vec2;

use super::components::*;
use crate::recording::Recorder;
use crate::stats::Stats;

/// Hit points left; at 0 or below the entity dies.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health(pub i32);

/// What a player's input of this tick asks its weapons to do.
#[derive(Component, Debug, Clone, Copy, Default)]
pub struct Trigger {
    pub rifle: bool,
    pub rocket: bool,
    pub aim: Aim,
    /// The shooter's view time (see `Input::view_tick`).
    pub view_tick: u32,
    pub view_frac: u8,
}

/// The tick at which each weapon may fire again (fire rates are the server's to enforce).
#[derive(Component, Debug, Clone, Copy, Default)]
pub struct Arsenal {
    pub rifle_ready: u32,
    pub rocket_ready: u32,
}

/// A flying rocket or bolt.
#[derive(Component, Debug, Clone, Copy)]
pub struct Projectile {
    pub owner: Entity,
    /// The owner's snapshot id: it never hits its owner.
    pub owner_id: u32,
    pub damage: i32,
    pub radius: f32,
    /// The tick it vanishes at if it has hit nothing.
    pub expires: u32,
}

/// Dead until `respawn_at`.
#[derive(Component, Debug, Clone, Copy)]
pub struct Dead {
    pub respawn_at: u32,
}

/// A player's kills and deaths.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    pub kills: u32,
    pub deaths: u32,
}

impl Score {
    /// What its player is told when it changes.
    pub fn event(&self) -> GameEvent {
        GameEvent::Score {
            kills: self.kills,
            deaths: self.deaths,
        }
    }
}

/// A player that has just (re)spawned takes no damage and is no NPC's target until `until`
/// (a tick), or until it fires: then `until` is set to 0.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnProtection {
    pub until: u32,
}

impl SpawnProtection {
    /// Protection from `tick` on, for `ticks` ticks.
    pub fn from(tick: u32, ticks: u32) -> Self {
        Self {
            until: tick.saturating_add(ticks),
        }
    }

    pub fn active(&self, tick: u32) -> bool {
        tick < self.until
    }
}

/// An NPC's state of mind: whom it chases, when it looks around next, when it may fire.
#[derive(Component, Debug, Clone, Copy, Default)]
pub struct NpcBrain {
    pub target: Option<u32>,
    pub next_look: u32,
    pub bolt_ready: u32,
}

/// Ticks derived from the config.
#[derive(Resource, Debug, Clone, Copy)]
pub struct CombatSettings {
    pub respawn_ticks: u32,
    pub max_rewind_ticks: u32,
    /// `--npc-combat`: NPCs notice, chase and shoot (else they only wander).
    pub npc_combat: bool,
    /// `--spawn-protection`, in ticks.
    pub spawn_protection_ticks: u32,
    /// `--npc-max-engaged`: NPCs chasing one player at most.
    pub npc_max_engaged: u32,
    /// `--npc-reaction`, in ticks: from noticing a player to the first bolt.
    pub npc_reaction_ticks: u32,
}

/// Where every hittable entity was over the last `--lag-comp-history`.
#[derive(Resource, Debug)]
pub struct LagComp(pub combat::History);

/// Damage dealt this tick, applied in order by [`apply_damage`].
#[derive(Resource, Debug, Default)]
pub struct Blows(pub Vec<Blow>);

#[derive(Debug, Clone, Copy)]
pub struct Blow {
    pub attacker: Entity,
    pub attacker_id: u32,
    pub target: Entity,
    pub amount: i32,
}

/// Projectiles to spawn this tick.
#[derive(Resource, Debug, Default)]
pub struct Launches(pub Vec<Launch>);

#[derive(Debug, Clone, Copy)]
pub struct Launch {
    pub owner: Entity,
    pub owner_id: u32,
    pub from: Vec2,
    /// Unit direction.
    pub dir: Vec2,
    pub params: ProjectileParams,
}

/// A living player or NPC, as of this tick's movement.
#[derive(Debug, Clone, Copy)]
pub struct Hittable {
    pub id: u32,
    pub entity: Entity,
    pub pos: Vec2,
    pub player: bool,
}

/// Living players and NPCs by grid cell, rebuilt after movement each tick: what shots,
/// projectiles, NPC eyes and spawn points ask "who is near here?". Allocations are kept
/// across ticks.
#[derive(Resource, Debug)]
pub struct HitGrid {
    cell: f32,
    cols: usize,
    cells: Vec<Vec<u32>>,
    /// The players of each cell alone: what an NPC looking for a target searches
    /// ([`HitGrid::nearest_player`]), without stepping over the NPCs around it.
    player_cells: Vec<Vec<u32>>,
    /// Sorted by id: [`HitGrid::get`] is a binary search.
    items: Vec<Hittable>,
}

impl HitGrid {
    /// Cells of this side, world units: about a shot's reach in a few cells.
    pub const CELL: f32 = 128.0;

    pub fn new(world_size: f32) -> Self {
        let cols = ((world_size / Self::CELL).ceil() as usize).clamp(1, 1024);
        Self {
            cell: Self::CELL,
            cols,
            cells: vec![Vec::new(); cols * cols],
            player_cells: vec![Vec::new(); cols * cols],
            items: Vec::new(),
        }
    }

    fn cell_of(&self, p: Vec2) -> (usize, usize) {
        let c = |v: f32| ((v / self.cell).max(0.0) as usize).min(self.cols - 1);
        (c(p.x), c(p.y))
    }

    pub fn rebuild(&mut self, items: impl Iterator<Item = Hittable>) {
        for c in self.cells.iter_mut().chain(&mut self.player_cells) {
            c.clear();
        }
        self.items.clear();
        self.items.extend(items);
        // Ids order the cells' contents, so every query sees targets in the same order.
        self.items.sort_unstable_by_key(|h| h.id);
        for (i, h) in self.items.iter().enumerate() {
            let (x, y) = self.cell_of(h.pos);
            self.cells[y * self.cols + x].push(i as u32);
            if h.player {
                self.player_cells[y * self.cols + x].push(i as u32);
            }
        }
    }

    pub fn get(&self, id: u32) -> Option<&Hittable> {
        self.items
            .binary_search_by_key(&id, |h| h.id)
            .ok()
            .map(|i| &self.items[i])
    }

    /// Everything in the cells the box `[min, max]` touches (a superset of what is inside).
    pub fn near(&self, min: Vec2, max: Vec2) -> impl Iterator<Item = &Hittable> + '_ {
        let (x0, y0) = self.cell_of(min);
        let (x1, y1) = self.cell_of(max);
        (y0..=y1).flat_map(move |y| {
            (x0..=x1).flat_map(move |x| {
                self.cells[y * self.cols + x]
                    .iter()
                    .map(|&i| &self.items[i as usize])
            })
        })
    }

    /// Everything in the cells that pass within `pad` of the segment `a`–`b`: a ray's
    /// neighbourhood, without the whole of its bounding box (a diagonal shot's box is mostly
    /// far from it).
    pub fn near_segment(&self, a: Vec2, b: Vec2, pad: f32) -> impl Iterator<Item = &Hittable> + '_ {
        let p = Vec2::splat(pad);
        let (x0, y0) = self.cell_of(a.min(b) - p);
        let (x1, y1) = self.cell_of(a.max(b) + p);
        let (cell, cols) = (self.cell, self.cols);
        let half = Vec2::splat(cell / 2.0);
        // A cell is kept when the segment comes within pad of its centre's square, i.e. within
        // pad + half a diagonal of the centre.
        let reach = pad + half.length();
        let ab = b - a;
        let len2 = ab.length_squared().max(f32::MIN_POSITIVE);
        (y0..=y1).flat_map(move |y| {
            (x0..=x1)
                .filter(move |&x| {
                    let c = Vec2::new(x as f32, y as f32) * cell + half;
                    segment_distance_squared(a, ab, len2, c) <= reach * reach
                })
                .flat_map(move |x| {
                    self.cells[y * cols + x]
                        .iter()
                        .map(|&i| &self.items[i as usize])
                })
        })
    }

    /// The nearest item within `range` of `pos` that `keep` accepts (ties: lower id).
    ///
    /// Searched ring by ring of cells outward from `pos`'s own, stopping once no cell further
    /// out can hold anything nearer than the best found, or anything within `range`: a spawn
    /// point's clearance (800 units) or an NPC's look (400) is mostly settled in the first
    /// rings, where the whole box is up to 13 x 13 cells. The answer is the box search's
    /// (`nearest_in_box`, kept for the tests), within the same box. The bound holds off the
    /// grid too: what lies beyond an
    /// edge is filed in the edge cell and is further from anything than that cell is, and a
    /// `pos` beyond an edge is further from every cell than its clamped place says.
    pub fn nearest(
        &self,
        pos: Vec2,
        range: f32,
        keep: impl Fn(&Hittable) -> bool,
    ) -> Option<&Hittable> {
        self.nearest_in(&self.cells, pos, range, keep)
    }

    /// [`HitGrid::nearest`] among the players alone: the same answer as `nearest` with
    /// `keep` asked only of players, searched through the cells' players (an NPC's look, where
    /// most of what lies around are other NPCs).
    pub fn nearest_player(
        &self,
        pos: Vec2,
        range: f32,
        keep: impl Fn(&Hittable) -> bool,
    ) -> Option<&Hittable> {
        self.nearest_in(&self.player_cells, pos, range, keep)
    }

    /// The ring search of [`HitGrid::nearest`] over `cells` (the grid's, or its players').
    fn nearest_in<'a>(
        &'a self,
        cells: &[Vec<u32>],
        pos: Vec2,
        range: f32,
        keep: impl Fn(&Hittable) -> bool,
    ) -> Option<&'a Hittable> {
        let (cx, cy) = self.cell_of(pos);
        // Every cell `r` rings out is at least `r - 1` cells plus the distance from `pos` to
        // the border of its own cell away (0 when `pos` is off the grid).
        let (fx, fy) = (pos.x - cx as f32 * self.cell, pos.y - cy as f32 * self.cell);
        let border = fx.min(self.cell - fx).min(fy).min(self.cell - fy).max(0.0);
        let range2 = range * range;
        let mut best: Option<(f32, &Hittable)> = None;
        // The cells the box of `range` around `pos` touches, as the box search has them:
        // nothing outside it is within range.
        let (lo, hi) = (
            self.cell_of(pos - Vec2::splat(range)),
            self.cell_of(pos + Vec2::splat(range)),
        );
        let (lo, hi) = (
            (lo.0 as isize, lo.1 as isize),
            (hi.0 as isize, hi.1 as isize),
        );
        let (cx, cy) = (cx as isize, cy as isize);
        for r in 0..=self.cols as isize {
            if r > 0 {
                // A hair under the bound, for rounding: a tie further out is still looked at.
                let bound = ((r - 1) as f32 * self.cell + border) * (1.0 - 1e-5) - 1e-3;
                if bound > range || best.is_some_and(|(d2, _)| d2 < bound * bound) {
                    break;
                }
            }
            let (x0, x1, y0, y1) = (cx - r, cx + r, cy - r, cy + r);
            if x0 < lo.0 && y0 < lo.1 && x1 > hi.0 && y1 > hi.1 {
                break;
            }
            for y in y0.max(lo.1)..=y1.min(hi.1) {
                let row = y as usize * self.cols;
                let mut visit = |x: isize| {
                    for &i in &cells[row + x as usize] {
                        let h = &self.items[i as usize];
                        if !keep(h) {
                            continue;
                        }
                        let d2 = h.pos.distance_squared(pos);
                        if d2 <= range2
                            && best.is_none_or(|(b, bh)| d2 < b || (d2 == b && h.id < bh.id))
                        {
                            best = Some((d2, h));
                        }
                    }
                };
                if y == y0 || y == y1 {
                    // The ring's top and bottom rows whole.
                    (x0.max(lo.0)..=x1.min(hi.0)).for_each(&mut visit);
                } else {
                    // Between them, its two end cells.
                    if x0 >= lo.0 {
                        visit(x0);
                    }
                    if x1 <= hi.0 {
                        visit(x1);
                    }
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// [`HitGrid::nearest`] by a search of every cell the box around `pos` touches: the
    /// reference the ring search is tested against.
    #[cfg(test)]
    fn nearest_in_box(
        &self,
        pos: Vec2,
        range: f32,
        keep: impl Fn(&Hittable) -> bool,
    ) -> Option<&Hittable> {
        let r = Vec2::splat(range);
        self.near(pos - r, pos + r)
            .filter(|h| keep(h))
            .map(|h| (h.pos.distance_squared(pos), h))
            .filter(|(d2, _)| *d2 <= range * range)
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.id.cmp(&b.1.id)))
            .map(|(_, h)| h)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Files every living player and NPC, as they stand after this tick's movement, for the
/// queries of this tick and the lag compensation of later ones.
pub fn record_hittables(
    bodies: Query<(Entity, &NetId, &Kind, &Motion), (Without<Dead>, Without<Projectile>)>,
    mut grid: ResMut<HitGrid>,
    mut lag: ResMut<LagComp>,
    tick: Res<Tick>,
) {
    grid.rebuild(bodies.iter().map(|(entity, id, kind, m)| Hittable {
        id: id.0,
        entity,
        pos: m.0.pos,
        player: kind.0 == EntityKind::Player,
    }));
    let grid = &*grid;
    lag.0.push(tick.0, grid.items.iter().map(|h| (h.id, h.pos)));
}

/// What [`npc_ai`] keeps between ticks only to spare allocations.
#[derive(Default)]
pub struct AiScratch {
    /// Player id -> NPCs chasing it this tick.
    engaged: HashMap<u32, u32>,
    /// Ids of the players under spawn protection, sorted.
    protected: Vec<u32>,
    /// NPCs without a target that look around this tick: (id, entity).
    looking: Vec<(u32, Entity)>,
}

/// NPCs: look for a target now and then (each on its own phase of [`NPC_LOOK_TICKS`]): the
/// nearest living player in range that is not under spawn protection and that fewer than
/// `npc_max_engaged` NPCs already chase. Chase it and, once the reaction delay has passed,
/// fire a bolt when it is in range and in sight; without one, wander (a direction held for
/// 0.5–3 s).
///
/// Three passes, so that the cap holds and the result does not depend on the order the query
/// stores NPCs in: keep or drop each current target and count the chasers per player; let
/// the NPCs that look around pick, in id order; then steer and fire.
pub fn npc_ai(
    mut npcs: Query<
        (
            Entity,
            &NetId,
            &Motion,
            &mut Wander,
            &mut MoveIntent,
            &mut NpcBrain,
        ),
        Without<Dead>,
    >,
    players: Query<(&NetId, &SpawnProtection), Without<Dead>>,
    grid: Res<HitGrid>,
    map: Res<MapRes>,
    tick: Res<Tick>,
    (settings, combat_settings): (Res<SimSettings>, Res<CombatSettings>),
    mut launches: ResMut<Launches>,
    mut scratch: Local<AiScratch>,
) {
    let rate = u32::from(settings.tick_rate);
    if !combat_settings.npc_combat {
        for (_, _, _, mut wander, mut intent, _) in &mut npcs {
            wander_step(&mut wander, &mut intent, rate);
        }
        return;
    }
    let AiScratch {
        engaged,
        protected,
        looking,
    } = &mut *scratch;
    engaged.clear();
    looking.clear();
    protected.clear();
    protected.extend(
        players
            .iter()
            .filter(|(_, p)| p.active(tick.0))
            .map(|(id, _)| id.0),
    );
    protected.sort_unstable();
    let is_protected = |id: u32| protected.binary_search(&id).is_ok();

    // 1. Keep a target that is alive, near enough and unprotected; count who chases whom.
    for (entity, id, motion, _, _, mut brain) in &mut npcs {
        let pos = motion.0.pos;
        let keep = brain.target.is_some_and(|t| {
            !is_protected(t)
                && grid.get(t).is_some_and(|h| {
                    h.pos.distance_squared(pos) <= NPC_FORGET_RANGE * NPC_FORGET_RANGE
                })
        });
        match brain.target {
            Some(t) if keep => *engaged.entry(t).or_default() += 1,
            _ => brain.target = None,
        }
        if tick.0 >= brain.next_look {
            brain.next_look = tick.0 + NPC_LOOK_TICKS;
            if brain.target.is_none() {
                looking.push((id.0, entity));
            }
        }
    }
    // 2. Those looking around pick, in id order, among the players not yet fully engaged.
    looking.sort_unstable_by_key(|&(id, _)| id);
    for &(_, entity) in looking.iter() {
        let Ok((_, _, motion, _, _, mut brain)) = npcs.get_mut(entity) else {
            continue;
        };
        let max = combat_settings.npc_max_engaged;
        let picked = grid.nearest_player(motion.0.pos, NPC_NOTICE_RANGE, |h| {
            !is_protected(h.id) && engaged.get(&h.id).copied().unwrap_or(0) < max
        });
        if let Some(h) = picked {
            *engaged.entry(h.id).or_default() += 1;
            brain.target = Some(h.id);
            brain.bolt_ready = brain
                .bolt_ready
                .max(tick.0 + combat_settings.npc_reaction_ticks);
        }
    }
    // 3. Chase and fire, or wander.
    for (entity, id, motion, mut wander, mut intent, mut brain) in &mut npcs {
        let pos = motion.0.pos;
        let Some(target) = brain.target.and_then(|t| grid.get(t)) else {
            wander_step(&mut wander, &mut intent, rate);
            continue;
        };
        let to = target.pos - pos;
        let dist = to.length();
        let dir = if dist > 0.0 { to / dist } else { Vec2::X };
        intent.0 = if dist > NPC_KEEP_DISTANCE {
            MoveDir::from_vec2(dir)
        } else {
            MoveDir::default()
        };
        if dist <= NPC_FIRE_RANGE
            && tick.0 >= brain.bolt_ready
            && combat::ray_obstacle(&map.0, pos, dir, dist) >= dist
        {
            brain.bolt_ready = tick.0 + NPC_BOLT.cooldown_ticks;
            launches.0.push(Launch {
                owner: entity,
                owner_id: id.0,
                from: pos,
                dir,
                params: NPC_BOLT,
            });
        }
    }
}

/// A wandering NPC holds a random direction (or stands still) for 0.5–3 s, then picks another.
fn wander_step(wander: &mut Wander, intent: &mut MoveIntent, rate: u32) {
    if wander.ticks_left > 0 {
        wander.ticks_left -= 1;
        return;
    }
    wander.ticks_left = rate / 2 + wander.rng.below(rate * 5 / 2 + 1);
    intent.0 = if wander.rng.below(5) == 0 {
        MoveDir::default()
    } else {
        MoveDir::from_vec2(wander.rng.square(-1.0, 1.0))
    };
}

/// Players' rockets (fire rate enforced here), then every queued launch, become projectile
/// entities just outside their shooter. They first move next tick.
pub fn launch_projectiles(
    mut commands: Commands,
    mut shooters: Query<(Entity, &NetId, &Motion, &Trigger, &mut Arsenal), Without<Dead>>,
    mut launches: ResMut<Launches>,
    mut ids: ResMut<NetIds>,
    tick: Res<Tick>,
    stats: Res<StatsRes>,
) {
    for (entity, id, motion, trigger, mut arsenal) in &mut shooters {
        if trigger.rocket && tick.0 >= arsenal.rocket_ready {
            arsenal.rocket_ready = tick.0 + ROCKET.cooldown_ticks;
            Stats::add(&stats.0.shots_fired, 1);
            launches.0.push(Launch {
                owner: entity,
                owner_id: id.0,
                from: motion.0.pos,
                dir: combat::aim_dir(trigger.aim),
                params: ROCKET,
            });
        }
    }
    // Ids are handed out in owner order (each fires at most one projectile a tick), not in the
    // order the queries met the shooters: a world restored from a keyframe numbers the same.
    launches.0.sort_by_key(|l| l.owner_id);
    for launch in launches.0.drain(..) {
        let p = launch.params;
        let pos = quant::snap_pos(launch.from + launch.dir * (HIT_RADIUS + p.radius + 1.0));
        commands.spawn((
            ids.allocate(),
            Kind(EntityKind::Projectile),
            Motion(Body {
                pos,
                vel: quant::snap_vel(launch.dir * p.speed),
            }),
            Projectile {
                owner: launch.owner,
                owner_id: launch.owner_id,
                damage: p.damage,
                radius: p.radius,
                expires: tick.0 + p.lifetime_ticks,
            },
        ));
    }
}

/// Moves every projectile one tick along its velocity, swept against the map and the living
/// players and NPCs near its path (never its owner). The first thing touched takes the blow;
/// the projectile is gone. Positions snap to the wire grid, so a client stepping the
/// replicated state with the same function sees the same flight.
pub fn step_projectiles(
    mut commands: Commands,
    mut projectiles: Query<(Entity, &NetId, &mut Motion, &Projectile)>,
    grid: Res<HitGrid>,
    map: Res<MapRes>,
    tick: Res<Tick>,
    settings: Res<SimSettings>,
    mut blows: ResMut<Blows>,
) {
    // Blows land in projectile id order (two rockets on one target: the older first).
    let mut landed = Vec::new();
    for (entity, id, mut motion, p) in &mut projectiles {
        if tick.0 >= p.expires {
            commands.entity(entity).despawn();
            continue;
        }
        let Body { pos, vel } = motion.0;
        let end = pos + vel * settings.dt;
        let reach = Vec2::splat(HIT_RADIUS + p.radius);
        let targets = grid
            .near(pos.min(end) - reach, pos.max(end) + reach)
            .filter(|h| h.id != p.owner_id)
            .map(|h| (h.id, h.pos));
        let step = combat::projectile_step(pos, vel, settings.dt, p.radius, &map.0, targets);
        match step.hit {
            None => motion.0.pos = quant::snap_pos(step.pos),
            Some(impact) => {
                if let combat::Impact::Target(hit) = impact
                    && let Some(target) = grid.get(hit)
                {
                    landed.push((
                        id.0,
                        Blow {
                            attacker: p.owner,
                            attacker_id: p.owner_id,
                            target: target.entity,
                            amount: p.damage,
                        },
                    ));
                }
                commands.entity(entity).despawn();
            }
        }
    }
    landed.sort_unstable_by_key(|&(id, _)| id);
    blows.0.extend(landed.into_iter().map(|(_, blow)| blow));
}

/// Each player's rifle shot (fire rate enforced here) is tested against the world as its
/// shooter saw it: targets where they were at the shooter's view time, clamped to the rewind
/// cap, from the lag-compensation history; obstacles as they are. Live entities are never
/// moved, so there is nothing to restore.
pub fn fire_rifles(
    mut shooters: Query<(Entity, &NetId, &Motion, &Trigger, &mut Arsenal), Without<Dead>>,
    grid: Res<HitGrid>,
    lag: Res<LagComp>,
    map: Res<MapRes>,
    tick: Res<Tick>,
    (settings, combat_settings): (Res<SimSettings>, Res<CombatSettings>),
    mut blows: ResMut<Blows>,
    stats: Res<StatsRes>,
) {
    // How far a target can be from where it is now at the rewound time: candidates are
    // gathered around the ray by that much.
    let slack = sim::PLAYER.max_speed.max(sim::NPC.max_speed)
        * combat_settings.max_rewind_ticks as f32
        / f32::from(settings.tick_rate.max(1))
        + HIT_RADIUS;
    let first = blows.0.len();
    for (entity, id, motion, trigger, mut arsenal) in &mut shooters {
        if !trigger.rifle || tick.0 < arsenal.rifle_ready {
            continue;
        }
        arsenal.rifle_ready = tick.0 + RIFLE.cooldown_ticks;
        Stats::add(&stats.0.shots_fired, 1);
        let origin = motion.0.pos;
        let dir = combat::aim_dir(trigger.aim);
        let at = combat::rewind_target(
            tick.0,
            trigger.view_tick,
            f32::from(trigger.view_frac) / 256.0,
            combat_settings.max_rewind_ticks,
        );
        if let Some(hit) = rifle_target(&grid, &lag.0, &map.0, origin, dir, id.0, at, slack)
            && let Some(target) = grid.get(hit)
        {
            blows.0.push(Blow {
                attacker: entity,
                attacker_id: id.0,
                target: target.entity,
                amount: RIFLE.damage,
            });
        }
    }
    // Shots land in shooter id order (one shot each a tick), after this tick's projectiles.
    blows.0[first..].sort_by_key(|b| b.attacker_id);
}

/// What a rifle shot from `origin` along `dir` by `shooter` hits, tested against the targets
/// where `history` has them at `at` (a tick and a fraction): [`combat::hitscan`] over every
/// entity but the shooter, with only those that could be hit looked up. The ray stops at the
/// first obstacle, so targets are gathered only that far; the grid gives whole cells near the
/// ray, and a target whose position now is further than `slack` (its furthest move over the
/// rewind, plus its radius) from it was out of reach at the rewound time too, so its history
/// (two searches of a frame) is not read.
#[expect(
    clippy::too_many_arguments,
    reason = "a shot's own inputs and the three structures it is tested against"
)]
pub fn rifle_target(
    grid: &HitGrid,
    history: &combat::History,
    map: &Map,
    origin: Vec2,
    dir: Vec2,
    shooter: u32,
    (t, f): (u32, f32),
    slack: f32,
) -> Option<u32> {
    let limit = combat::ray_obstacle(map, origin, dir, RIFLE.range);
    let end = origin + dir * limit;
    let ab = end - origin;
    let len2 = ab.length_squared().max(f32::MIN_POSITIVE);
    // A unit to spare over the speed bound, for rounding.
    let reach2 = (slack + 1.0) * (slack + 1.0);
    let within = |p: Vec2| segment_distance_squared(origin, ab, len2, p) <= reach2;
    let targets = grid
        .near_segment(origin, end, slack)
        .filter(|h| h.id != shooter && within(h.pos))
        .filter_map(|h| history.position_at(h.id, t, f).map(|p| (h.id, p)));
    combat::hitscan_within(origin, dir, limit, targets).map(|(hit, _)| hit)
}

/// The squared distance from `p` to the segment from `a` along `ab` (`len2`: `ab`'s squared
/// length, kept above zero by the caller, which tests many points against one segment).
fn segment_distance_squared(a: Vec2, ab: Vec2, len2: f32, p: Vec2) -> f32 {
    let t = ((p - a).dot(ab) / len2).clamp(0.0, 1.0);
    (a + ab * t).distance_squared(p)
}

/// Applies this tick's blows in order: health, and for a kill, death (hidden until respawn),
/// scores and events to the players concerned. A target already dead this tick takes no more.
pub fn apply_damage(
    mut commands: Commands,
    mut blows: ResMut<Blows>,
    mut targets: Query<(
        &NetId,
        &mut Health,
        Option<&Player>,
        Option<&mut Score>,
        Has<Dead>,
        Option<&SpawnProtection>,
    )>,
    clients: Res<Clients>,
    tick: Res<Tick>,
    settings: Res<CombatSettings>,
    stats: Res<StatsRes>,
    mut recorder: Option<ResMut<Recorder>>,
) {
    let mut told = Vec::new();
    // Who hears of it: a player's client id (an NPC hears nothing).
    let mut tell = |client: Option<u64>, event: GameEvent| {
        if let Some(client_id) = client {
            told.push((client_id, event));
        }
    };
    for blow in blows.0.drain(..) {
        let Ok((victim_id, mut health, victim_player, victim_score, dead, protection)) =
            targets.get_mut(blow.target)
        else {
            continue;
        };
        if dead || health.0 <= 0 || protection.is_some_and(|p| p.active(tick.0)) {
            continue;
        }
        health.0 -= blow.amount;
        Stats::add(&stats.0.hits, 1);
        let hit = GameEvent::Hit {
            attacker: blow.attacker_id,
            target: victim_id.0,
            damage: blow.amount.clamp(0, i32::from(u16::MAX)) as u16,
            health: health.0.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16,
        };
        let victim = victim_player.map(|p| p.client_id);
        tell(victim, hit);
        let killed = (health.0 <= 0).then_some(GameEvent::Killed {
            killer: blow.attacker_id,
            victim: victim_id.0,
        });
        if let Some(killed) = killed {
            Stats::add(&stats.0.kills, 1);
            commands.entity(blow.target).insert(Dead {
                respawn_at: tick.0 + settings.respawn_ticks,
            });
            if let Some(mut score) = victim_score {
                score.deaths += 1;
                tell(victim, score.event());
            }
            tell(victim, killed);
        }
        // The attacker hears of it too, and scores, even if it has died since it fired (a
        // rocket outlives its shooter).
        let Ok((_, _, attacker_player, attacker_score, ..)) = targets.get_mut(blow.attacker) else {
            continue;
        };
        let attacker = attacker_player.map(|p| p.client_id);
        tell(attacker, hit);
        if let Some(killed) = killed {
            tell(attacker, killed);
            if let Some(mut score) = attacker_score {
                score.kills += 1;
                tell(attacker, score.event());
            }
        }
    }
    deliver(told, &clients, &stats, recorder.as_deref_mut(), tick.0);
}

/// Sends each event to its player's session (if it has one: a lingering player has none) and
/// records it.
fn deliver(
    told: Vec<(u64, GameEvent)>,
    clients: &Clients,
    stats: &StatsRes,
    mut recorder: Option<&mut Recorder>,
    tick: u32,
) {
    for (client_id, event) in told {
        if let Some(r) = recorder.as_mut() {
            r.record(Record::Event {
                tick,
                client_id,
                event,
            });
        }
        if let Some(link) = clients.0.get(&client_id)
            && !link.outbox.push_event(event)
        {
            Stats::add(&stats.0.events_dropped, 1);
        }
    }
}

/// The best of a few random free points for a body of `radius`: the one farthest from any
/// living player or NPC (farther than 800 units from everyone is as good as it gets). Where a
/// player joins and where the dead come back.
pub fn spawn_point(map: &Map, rng: &mut SplitMix64, grid: &HitGrid, radius: f32) -> Vec2 {
    const CLEAR: f32 = 800.0;
    const TRIES: usize = 8;
    let mut best = (f32::NEG_INFINITY, Vec2::ZERO);
    for _ in 0..TRIES {
        let p = map.random_free_point(rng, radius);
        let clearance = grid
            .nearest(p, CLEAR, |_| true)
            .map_or(CLEAR, |h| h.pos.distance(p));
        if clearance > best.0 {
            best = (clearance, p);
        }
    }
    quant::snap_pos(best.1)
}

/// Brings back the dead whose delay is over: full health, standing still, at a
/// [`spawn_point`] away from everyone, under spawn protection if it is a player, and tells a
/// player where (its client resets its prediction there).
pub fn respawn(
    mut commands: Commands,
    mut dead: Query<(
        Entity,
        &NetId,
        &Dead,
        &Kind,
        &mut Motion,
        &mut Health,
        Option<&Player>,
        Option<&mut SpawnProtection>,
    )>,
    grid: Res<HitGrid>,
    map: Res<MapRes>,
    mut rng: ResMut<WorldRng>,
    clients: Res<Clients>,
    tick: Res<Tick>,
    settings: Res<CombatSettings>,
    stats: Res<StatsRes>,
    mut recorder: Option<ResMut<Recorder>>,
) {
    let mut told = Vec::new();
    // The world generator is drawn in id order, whatever order the query stores them in.
    let mut due: Vec<(u32, Entity)> = dead
        .iter()
        .filter(|(_, _, d, ..)| tick.0 >= d.respawn_at)
        .map(|(entity, id, ..)| (id.0, entity))
        .collect();
    due.sort_unstable_by_key(|&(id, _)| id);
    for (_, entity) in due {
        let Ok((entity, id, _, kind, mut motion, mut health, player, protection)) =
            dead.get_mut(entity)
        else {
            continue;
        };
        let (params, full) = match kind.0 {
            EntityKind::Player => (&sim::PLAYER, combat::PLAYER_HEALTH),
            _ => (&sim::NPC, combat::NPC_HEALTH),
        };
        let pos = spawn_point(&map.0, &mut rng.0, &grid, params.radius);
        motion.0 = Body {
            pos,
            vel: Vec2::ZERO,
        };
        health.0 = full;
        if let Some(mut protection) = protection {
            *protection = SpawnProtection::from(tick.0, settings.spawn_protection_ticks);
        }
        commands.entity(entity).remove::<Dead>();
        if let Some(p) = player {
            told.push((
                p.client_id,
                GameEvent::Respawned {
                    entity: id.0,
                    pos,
                    health: full as i16,
                },
            ));
        }
    }
    deliver(told, &clients, &stats, recorder.as_deref_mut(), tick.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_of(points: &[(u32, Vec2)]) -> HitGrid {
        let mut g = HitGrid::new(4096.0);
        g.rebuild(points.iter().map(|&(id, pos)| Hittable {
            id,
            entity: Entity::PLACEHOLDER,
            pos,
            player: id % 2 == 0,
        }));
        g
    }

    #[test]
    fn a_rifle_shot_hits_what_testing_every_entity_at_the_rewound_time_hits() {
        use arena_shared::map::MapParams;
        // Crowds around random shooters on a map with obstacles: every body moves at most a
        // player's top speed a tick over a rewind's worth of history. The shot's target from
        // the gathered few must be the one `hitscan` picks among every entity rewound.
        let rate = 30.0;
        let rewind = 10u32;
        let step = sim::PLAYER.max_speed.max(sim::NPC.max_speed) / rate;
        let slack = step * rewind as f32 + HIT_RADIUS;
        let mut rng = SplitMix64::new(21);
        let (mut shots, mut hits) = (0, 0);
        for world in 0..40u64 {
            let map = Map::generate(MapParams {
                seed: world,
                width: 2048.0,
                height: 2048.0,
                obstacles: 12,
            });
            let n = 300u32;
            let mut pos: Vec<Vec2> = (0..n).map(|_| rng.square(0.0, 2048.0)).collect();
            let mut vel: Vec<Vec2> = (0..n).map(|_| rng.square(-1.0, 1.0)).collect();
            let mut history = combat::History::new(rewind + 2);
            let now = 100 + rewind;
            for tick in 100..=now {
                if tick > 100 {
                    for (p, v) in pos.iter_mut().zip(&mut vel) {
                        if rng.below(8) == 0 {
                            *v = rng.square(-1.0, 1.0);
                        }
                        // Up to the top speed, and now and then exactly at it.
                        let len = if rng.below(4) == 0 {
                            step
                        } else {
                            rng.range_f32(0.0, step)
                        };
                        *p += v.normalize_or_zero() * len;
                    }
                }
                history.push(tick, (1..=n).map(|id| (id, pos[id as usize - 1])));
            }
            let grid = grid_of(
                &(1..=n)
                    .map(|id| (id, pos[id as usize - 1]))
                    .collect::<Vec<_>>(),
            );
            for _ in 0..50 {
                let shooter = 1 + rng.below(n);
                let origin = pos[shooter as usize - 1];
                let dir = Vec2::from_angle(rng.range_f32(0.0, std::f32::consts::TAU));
                let at = (now - rng.below(rewind + 1), rng.range_f32(0.0, 1.0));
                let every = (1..=n)
                    .filter(|&id| id != shooter)
                    .filter_map(|id| history.position_at(id, at.0, at.1).map(|p| (id, p)));
                let expected = combat::hitscan(&map, origin, dir, RIFLE.range, every);
                let got = rifle_target(&grid, &history, &map, origin, dir, shooter, at, slack);
                assert_eq!(got, expected.map(|(id, _)| id), "world {world}");
                shots += 1;
                hits += usize::from(got.is_some());
            }
        }
        // Most shots hit something in these crowds, some are stopped short or miss.
        assert!(hits > shots / 3 && hits < shots, "{hits} of {shots}");
    }

    #[test]
    fn the_ring_search_finds_what_the_box_search_finds() {
        // Crowds sparse and dense, clustered and on cell borders and corners (ties at equal
        // distances), queries from anywhere with ranges from under a cell to past the world
        // (and a negative one, and NaN), filters that take some or none; queries and items off the
        // grid (beyond every edge and corner, and a NaN). Each answer must be the box
        // search's, ties included.
        let mut rng = SplitMix64::new(8);
        let (mut found, mut found_players) = (0, 0);
        for world in 0..300u32 {
            let size = [512.0, 2048.0, 4096.0][world as usize % 3];
            let n = [0, 5, 60, 800][world as usize % 4];
            let mut g = HitGrid::new(size);
            let cell = HitGrid::CELL;
            let points: Vec<Vec2> = (0..n)
                .map(|_| match rng.below(4) {
                    // On a grid of half cells: many ties and points on cell borders.
                    0 => Vec2::new(
                        (rng.below((size / cell * 2.0) as u32) as f32) * cell / 2.0,
                        (rng.below((size / cell * 2.0) as u32) as f32) * cell / 2.0,
                    ),
                    1 => Vec2::splat(size / 2.0) + rng.square(-150.0, 150.0),
                    _ => rng.square(0.0, size - 0.01),
                })
                .collect();
            let mut items: Vec<(u32, Vec2)> = points
                .iter()
                .enumerate()
                .map(|(i, &p)| (i as u32 * 3 + 1, p))
                .collect();
            if world % 5 == 4 {
                // Beyond every edge and corner (filed in the edge cells), and one not finite.
                for (k, at) in [
                    Vec2::new(-40.0, size / 2.0),
                    Vec2::new(size + 30.0, size / 3.0),
                    Vec2::new(size / 4.0, -90.0),
                    Vec2::new(size / 2.0, size + 5.0),
                    Vec2::new(-60.0, -60.0),
                    Vec2::new(size + 70.0, size + 10.0),
                    Vec2::NAN,
                ]
                .into_iter()
                .enumerate()
                {
                    items.push((99_000 + k as u32, at));
                }
            }
            g.rebuild(items.iter().map(|&(id, pos)| Hittable {
                id,
                entity: Entity::PLACEHOLDER,
                pos,
                player: id % 2 == 0,
            }));
            for _ in 0..60 {
                let at = match rng.below(3) {
                    0 => items
                        .get(rng.below(items.len().max(1) as u32) as usize)
                        .map_or(Vec2::ZERO, |i| i.1),
                    1 => rng.square(-200.0, size + 200.0),
                    _ => rng.square(0.0, size),
                };
                let range =
                    [10.0, 100.0, 400.0, 800.0, 5000.0, -50.0, f32::NAN][rng.below(7) as usize];
                let m = rng.below(3);
                let keep = |h: &Hittable| match m {
                    0 => true,
                    1 => h.player,
                    _ => h.id % 7 == 1,
                };
                let ring = g.nearest(at, range, keep).map(|h| h.id);
                let boxed = g.nearest_in_box(at, range, keep).map(|h| h.id);
                assert_eq!(
                    ring, boxed,
                    "world {world} at {at} range {range} filter {m}"
                );
                found += usize::from(ring.is_some());
                // Among the players alone, through their own cells.
                let player = g.nearest_player(at, range, keep).map(|h| h.id);
                let boxed = g
                    .nearest_in_box(at, range, |h| h.player && keep(h))
                    .map(|h| h.id);
                assert_eq!(
                    player, boxed,
                    "players: world {world} at {at} range {range} filter {m}"
                );
                found_players += usize::from(player.is_some());
            }
        }
        assert!(found > 5_000, "{found}");
        assert!(found_players > 3_000, "{found_players}");
        // A negative range reads the one cell its inverted box touches, in both searches.
        let centre = Vec2::splat(HitGrid::CELL * 2.5);
        let g = grid_of(&[(1, centre)]);
        for range in [-50.0, -100.0, f32::NAN] {
            assert_eq!(
                g.nearest(centre, range, |_| true).map(|h| h.id),
                g.nearest_in_box(centre, range, |_| true).map(|h| h.id),
                "{range}"
            );
        }
    }

    #[test]
    fn a_segment_query_keeps_everything_near_the_segment_and_skips_the_far_corners() {
        // A diagonal shot across the map, and points on it, beside it, and far from it.
        let (a, b) = (Vec2::new(100.0, 100.0), Vec2::new(1000.0, 1000.0));
        let g = grid_of(&[
            (1, Vec2::new(500.0, 500.0)),
            (2, Vec2::new(540.0, 470.0)),
            (3, Vec2::new(1000.0, 120.0)),
            (4, Vec2::new(120.0, 1000.0)),
            (5, Vec2::new(990.0, 1010.0)),
        ]);
        let mut near: Vec<u32> = g.near_segment(a, b, 60.0).map(|h| h.id).collect();
        near.sort_unstable();
        assert_eq!(near, [1, 2, 5]);
        // The box query would have returned all five.
        assert_eq!(g.near(a, b).count(), 5);
    }

    #[test]
    fn nearest_respects_range_filter_and_ties() {
        let g = grid_of(&[
            (1, Vec2::new(100.0, 0.0)),
            (2, Vec2::new(0.0, 100.0)),
            (4, Vec2::new(0.0, 300.0)),
        ]);
        let at = Vec2::new(1.0, 1.0);
        assert_eq!(g.nearest(at, 150.0, |_| true).map(|h| h.id), Some(1));
        assert_eq!(g.nearest(at, 150.0, |h| h.player).map(|h| h.id), Some(2));
        assert_eq!(g.nearest(at, 50.0, |_| true).map(|h| h.id), None);
        assert_eq!(g.get(4).map(|h| h.pos), Some(Vec2::new(0.0, 300.0)));
    }
}
