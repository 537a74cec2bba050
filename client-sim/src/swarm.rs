//! Many bots on one tokio runtime, started at a steady rate, each playing for the same time.

use std::time::Duration;

use glam::Vec2;
use tokio::task::JoinSet;

use crate::bot::{self, Behaviour, BotConfig, BotOutcome};
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct SwarmConfig {
    pub server: String,
    pub bots: u32,
    /// New connections per second.
    pub ramp_per_s: f64,
    pub play_for: Duration,
    pub seed: u64,
    pub behaviour: SwarmBehaviour,
    pub idle_timeout: Duration,
    /// Network impairment applied to every bot (each with its own seed).
    pub impair: crate::impair::ImpairConfig,
}

/// What the bots do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwarmBehaviour {
    /// Every bot wanders (random walk seeded per bot).
    Wander,
    /// Bot `i` pushes in a fixed direction that turns by a golden angle per bot, so that a
    /// test can check that each moved the way it asked.
    Headings,
}

/// The merged report and every bot's own outcome.
pub struct SwarmResult {
    pub report: Report,
    pub bots: Vec<BotOutcome>,
}

/// The fixed direction of bot `i` under [`SwarmBehaviour::Headings`].
pub fn heading(i: u32) -> Vec2 {
    let angle = i as f32 * 2.399_963; // golden angle, radians
    Vec2::new(angle.cos(), angle.sin())
}

pub async fn run(config: SwarmConfig) -> SwarmResult {
    let mut set = JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / config.ramp_per_s.max(0.001));
    let start = tokio::time::Instant::now();
    for i in 0..config.bots {
        tokio::time::sleep_until(start + gap * i).await;
        let behaviour = match config.behaviour {
            SwarmBehaviour::Wander => Behaviour::Wander,
            SwarmBehaviour::Headings => Behaviour::Heading(heading(i)),
        };
        let bot = BotConfig {
            server: config.server.clone(),
            name: format!("bot-{i}"),
            play_for: config.play_for,
            behaviour,
            seed: config
                .seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(u64::from(i)),
            idle_timeout: config.idle_timeout,
            impair: config.impair,
        };
        set.spawn(bot::run(bot));
    }
    let mut bots = Vec::with_capacity(config.bots as usize);
    while let Some(done) = set.join_next().await {
        if let Ok(outcome) = done {
            bots.push(outcome);
        }
    }
    bots.sort_by_key(|b| {
        b.name
            .trim_start_matches("bot-")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    let report =
        Report::from_outcomes(u64::from(config.bots), config.play_for.as_secs_f64(), &bots);
    SwarmResult { report, bots }
}
