//! What a bot does while it plays, and which bot does what.
//!
//! A swarm mixes behaviours by weight (`wander=6,chase=3,idle=1`); each bot's is drawn from
//! the swarm's seed and the bot's index alone, so the same command gives every bot the same
//! behaviour run after run, whatever the timing. Sans-IO: steering is plain functions of the
//! bot's view and position.

use std::fmt;
use std::str::FromStr;

use arena_shared::rng::SplitMix64;
use arena_shared::snapshot::View;
use glam::Vec2;

/// How a bot plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// A random walk: a direction (or standing still) held for 0.5–2 s, then another.
    Wander,
    /// Moves toward the nearest entity it sees, aims at it and holds fire; wanders while it
    /// sees nobody.
    Chase,
    /// Connected but sends nothing except acknowledgements of snapshots: no inputs, no pings
    /// (it measures what an idle client costs the server). Having no pings, it is left out of
    /// the RTT figures (`rtt_ms_*`, the live RTT) rather than mixed in with QUIC's own
    /// smoothed RTT, which leaves out the server's application time that pings include.
    Idle,
    /// Always push this way (tests use it to check the server moved the bot as asked).
    Heading(Vec2),
}

/// The behaviours a mix can name, in the order of [`Mix`]'s weights.
const NAMES: [(&str, Behaviour); 3] = [
    ("wander", Behaviour::Wander),
    ("chase", Behaviour::Chase),
    ("idle", Behaviour::Idle),
];

/// Relative weights of wander, chase and idle bots in a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 3],
}

impl Default for Mix {
    /// `wander=6,chase=3,idle=1`.
    fn default() -> Self {
        Self { weights: [6, 3, 1] }
    }
}

impl Mix {
    /// Every bot does `behaviour` (one of wander, chase, idle).
    pub fn only(behaviour: Behaviour) -> Self {
        let mut weights = [0; 3];
        if let Some(i) = NAMES.iter().position(|(_, b)| *b == behaviour) {
            weights[i] = 1;
        }
        Self { weights }
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }

    /// The behaviour of bot `index` in a swarm seeded with `seed`.
    pub fn pick(&self, seed: u64, index: u32) -> Behaviour {
        let total = self.total().max(1);
        let mut rng = SplitMix64::new(
            seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ u64::from(index) ^ 0xBE4A_B10B,
        );
        let mut roll = rng.next_u64() % total;
        for (&w, (_, behaviour)) in self.weights.iter().zip(NAMES) {
            if roll < u64::from(w) {
                return behaviour;
            }
            roll -= u64::from(w);
        }
        Behaviour::Wander
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("'{0}' is not NAME=WEIGHT")]
    MissingEquals(String),
    #[error("unknown behaviour '{0}' (known: wander, chase, idle)")]
    UnknownBehaviour(String),
    #[error("weight of {name} is not a whole number: '{value}'")]
    BadNumber { name: String, value: String },
    #[error("{0} is given twice")]
    Duplicate(String),
    #[error("the weights add up to zero: no bot would have a behaviour")]
    ZeroTotal,
}

impl FromStr for Mix {
    type Err = MixError;

    /// `wander=6,chase=3,idle=1`; behaviours left out weigh 0.
    fn from_str(s: &str) -> Result<Self, MixError> {
        let mut weights = [0u32; 3];
        let mut seen = [false; 3];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| MixError::MissingEquals(part.into()))?;
            let (name, value) = (name.trim(), value.trim());
            let i = NAMES
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| MixError::UnknownBehaviour(name.into()))?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(MixError::Duplicate(NAMES[i].0.into()));
            }
            weights[i] = value.parse().map_err(|_| MixError::BadNumber {
                name: NAMES[i].0.into(),
                value: value.into(),
            })?;
        }
        let mix = Self { weights };
        if mix.total() == 0 {
            return Err(MixError::ZeroTotal);
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (&w, (name, _)) in self.weights.iter().zip(NAMES) {
            if w > 0 {
                write!(f, "{}{name}={w}", if first { "" } else { "," })?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The random walk of [`Behaviour::Wander`].
#[derive(Debug, Default)]
pub struct Walk {
    dir: Vec2,
    ticks_left: u32,
}

impl Walk {
    /// The direction for the next tick.
    pub fn next(&mut self, rng: &mut SplitMix64, tick_rate: u16) -> Vec2 {
        if self.ticks_left == 0 {
            let rate = u32::from(tick_rate.max(1));
            self.ticks_left = rate / 2 + rng.below(rate * 3 / 2 + 1);
            self.dir = if rng.below(6) == 0 {
                Vec2::ZERO
            } else {
                rng.square(-1.0, 1.0).normalize_or_zero()
            };
        }
        self.ticks_left -= 1;
        self.dir
    }
}

/// The nearest player or NPC of `view` other than `me_id`, seen from `me`: its id and where
/// the view has it (linear in the view's size: one pass, no allocation). Projectiles are not
/// targets.
pub fn nearest_other(view: &View, me_id: u32, me: Vec2) -> Option<(u32, Vec2)> {
    view.entities
        .iter()
        .filter(|e| e.id != me_id && e.kind != arena_shared::protocol::EntityKind::Projectile)
        .map(|e| (e.id, e.pos()))
        .min_by(|a, b| {
            a.1.distance_squared(me)
                .total_cmp(&b.1.distance_squared(me))
        })
}

#[cfg(test)]
mod tests {
    use arena_shared::protocol::EntityKind;
    use arena_shared::quant::quantize_pos;
    use arena_shared::snapshot::{EntityRecord, FIELDS};

    use super::*;

    #[test]
    fn a_mix_parses_with_missing_names_at_zero_and_prints_back() {
        let mix: Mix = "wander=6,chase=3,idle=1".parse().unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!(mix.to_string(), "wander=6,chase=3,idle=1");
        let mix: Mix = " chase = 2 ".parse().unwrap();
        assert_eq!(mix, Mix { weights: [0, 2, 0] });
        assert_eq!(mix.to_string(), "chase=2");
        assert_eq!(Mix::only(Behaviour::Idle).to_string(), "idle=1");
    }

    #[test]
    fn a_bad_mix_says_what_is_wrong() {
        let err = |s: &str| s.parse::<Mix>().unwrap_err();
        assert_eq!(
            err("wander=1,fly=2"),
            MixError::UnknownBehaviour("fly".into())
        );
        assert_eq!(err("wander=0,idle=0"), MixError::ZeroTotal);
        assert_eq!(err(""), MixError::ZeroTotal);
        assert_eq!(
            err("chase=lots"),
            MixError::BadNumber {
                name: "chase".into(),
                value: "lots".into()
            }
        );
        assert!(matches!(err("idle=-1"), MixError::BadNumber { .. }));
        assert_eq!(err("wander"), MixError::MissingEquals("wander".into()));
        assert_eq!(err("idle=1,idle=2"), MixError::Duplicate("idle".into()));
        assert!(
            err("fly=2")
                .to_string()
                .contains("known: wander, chase, idle")
        );
    }

    #[test]
    fn each_bot_gets_its_behaviour_from_the_seed_and_the_mix_weights_hold() {
        let mix = Mix::default();
        let picks: Vec<Behaviour> = (0..10_000).map(|i| mix.pick(1, i)).collect();
        let count = |b| picks.iter().filter(|&&p| p == b).count();
        let (wander, chase, idle) = (
            count(Behaviour::Wander),
            count(Behaviour::Chase),
            count(Behaviour::Idle),
        );
        assert_eq!(wander + chase + idle, 10_000);
        // 6:3:1 within ±2 points (a binomial's sd here is under 0.5 points).
        assert!((5800..=6200).contains(&wander), "wander {wander}");
        assert!((2800..=3200).contains(&chase), "chase {chase}");
        assert!((800..=1200).contains(&idle), "idle {idle}");
        // Deterministic per (seed, index), and the seed matters.
        assert!((0..10_000).all(|i| mix.pick(1, i) == picks[i as usize]));
        assert!((0..100).any(|i| mix.pick(2, i) != picks[i as usize]));
        // Behaviours weighted 0 are never picked.
        let only = Mix::only(Behaviour::Chase);
        assert!((0..1000).all(|i| only.pick(9, i) == Behaviour::Chase));
    }

    #[test]
    fn the_random_walk_is_seeded_and_bounded() {
        let walk = |seed| {
            let mut rng = SplitMix64::new(seed);
            let mut w = Walk::default();
            (0..300).map(|_| w.next(&mut rng, 30)).collect::<Vec<_>>()
        };
        let a = walk(1);
        assert_eq!(a, walk(1));
        assert_ne!(a, walk(2));
        assert!(a.iter().all(|d| d.length() <= 1.0 + 1e-6));
    }

    fn at(id: u32, x: f32, y: f32) -> EntityRecord {
        let mut fields = [0; FIELDS];
        fields[0] = quantize_pos(x);
        fields[1] = quantize_pos(y);
        EntityRecord {
            id,
            kind: EntityKind::Npc,
            fields,
            tick: 1,
        }
    }

    #[test]
    fn a_chaser_targets_the_nearest_entity_that_is_not_itself() {
        let view = View {
            tick: 1,
            entities: vec![
                at(1, 100.0, 100.0),
                at(2, 400.0, 100.0),
                at(3, 120.0, 300.0),
            ],
        };
        // Bot 1 stands on its own record: the nearest other is 3.
        let (id, target) = nearest_other(&view, 1, Vec2::new(100.0, 100.0)).unwrap();
        assert_eq!(id, 3);
        assert!(
            (target - Vec2::new(120.0, 300.0)).length() < 1.0,
            "{target:?}"
        );
        let mut rocket = at(4, 101.0, 101.0);
        rocket.kind = EntityKind::Projectile;
        let with_rocket = View {
            tick: 1,
            entities: vec![at(1, 100.0, 100.0), rocket, at(3, 120.0, 300.0)],
        };
        assert_eq!(
            nearest_other(&with_rocket, 1, Vec2::new(100.0, 100.0)).map(|t| t.0),
            Some(3),
            "projectiles are not targets"
        );
        assert_eq!(
            nearest_other(
                &View {
                    tick: 1,
                    entities: vec![at(1, 0.0, 0.0)]
                },
                1,
                Vec2::ZERO
            ),
            None,
            "alone, nothing to chase"
        );
    }
}
