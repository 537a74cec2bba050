//! Many bots on one tokio runtime, launched at a steady rate, each playing (and reconnecting
//! when dropped) until its own deadline: its launch plus the play time. The bots' sessions run
//! on flocks, a bounded number of bots' connections over each socket ([`crate::flock`]).

use std::sync::Arc;
use std::time::Duration;

use glam::Vec2;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::behaviour::{Behaviour, Mix};
use crate::bot::{self, BotConfig};
use crate::endpoints::DEFAULT_BOTS_PER_ENDPOINT;
use crate::flock::Flocks;
use crate::live::{self, LiveStats};
use crate::outcome::BotOutcome;
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The server's HTTP side, `http://HOST:PORT`.
    pub server: String,
    pub bots: u32,
    /// New connections per second.
    pub ramp_per_s: f64,
    /// How long each bot stays, from its launch (connecting and reconnecting included).
    pub play_for: Duration,
    pub seed: u64,
    pub behaviour: SwarmBehaviour,
    pub idle_timeout: Duration,
    /// Network impairment applied to every bot (each with its own seed).
    pub impair: crate::impair::ImpairConfig,
    /// Dial this WebTransport address instead of the one `/api/connect` names.
    pub connect_via: Option<std::net::SocketAddr>,
    /// At most this many bots share one flock (one UDP socket, one task); 1: a socket each.
    pub bots_per_endpoint: u32,
    /// Bind the bots' sockets to this local address (any free port) rather than the wildcard
    /// address: a test's swarm acting as another host.
    pub bind: Option<std::net::IpAddr>,
    /// Draw the live progress line on stderr (only where stderr is a terminal; never in tests).
    pub progress: bool,
    /// Cancelled: every bot leaves now, as if its time were up, and the swarm reports. Bots
    /// not launched yet count as failed.
    pub stop: CancellationToken,
    /// The counters the bots bump as they play; keep a clone to watch the run from outside
    /// (a test awaits [`LiveStats::watch_welcomes`]).
    pub live: Arc<LiveStats>,
}

impl Default for SwarmConfig {
    /// Ten bots of the default mix against a local server for 30 s, like `arena-bots` with
    /// no flags.
    fn default() -> Self {
        Self {
            server: "http://127.0.0.1:8080".into(),
            bots: 10,
            ramp_per_s: 100.0,
            play_for: Duration::from_secs(30),
            seed: 1,
            behaviour: SwarmBehaviour::default(),
            idle_timeout: Duration::from_secs(10),
            impair: Default::default(),
            connect_via: None,
            bots_per_endpoint: DEFAULT_BOTS_PER_ENDPOINT,
            bind: None,
            progress: false,
            stop: CancellationToken::new(),
            live: Arc::default(),
        }
    }
}

/// What the bots do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwarmBehaviour {
    /// Each bot's behaviour is drawn from these weights, by the seed and its index.
    Mix(Mix),
    /// Every bot wanders (random walk seeded per bot): `Mix(wander=1)`.
    Wander,
    /// Bot `i` pushes in a fixed direction that turns by a golden angle per bot, so that a
    /// test can check that each moved the way it asked.
    Headings,
}

impl Default for SwarmBehaviour {
    /// `wander=6,chase=3,idle=1`.
    fn default() -> Self {
        Self::Mix(Mix::default())
    }
}

impl SwarmBehaviour {
    /// The behaviour of bot `index`.
    pub fn of(&self, seed: u64, index: u32) -> Behaviour {
        match self {
            Self::Mix(mix) => mix.pick(seed, index),
            Self::Wander => Behaviour::Wander,
            Self::Headings => Behaviour::Heading(heading(index)),
        }
    }
}

/// The merged report and every bot's own outcome (sorted by index).
pub struct SwarmResult {
    pub report: Report,
    pub bots: Vec<BotOutcome>,
    /// How many flocks (UDP sockets) the bots' connections went through.
    pub endpoints: usize,
}

/// The fixed direction of bot `i` under [`SwarmBehaviour::Headings`].
pub fn heading(i: u32) -> Vec2 {
    let angle = i as f32 * 2.399_963; // golden angle, radians
    Vec2::new(angle.cos(), angle.sin())
}

/// The seed of bot `i` (its walk; its impairment and backoff derive from it).
pub fn bot_seed(seed: u64, i: u32) -> u64 {
    seed.wrapping_mul(0x9E37_79B9).wrapping_add(u64::from(i))
}

pub async fn run(config: SwarmConfig) -> SwarmResult {
    let live = config.live.clone();
    let progress_done = CancellationToken::new();
    let progress = config
        .progress
        .then(|| tokio::spawn(live::show(live.clone(), config.bots, progress_done.clone())));
    let flocks = Flocks::new(config.bots_per_endpoint, config.bind);
    let mut set = JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / config.ramp_per_s.max(0.001));
    let start = tokio::time::Instant::now();
    for i in 0..config.bots {
        tokio::select! {
            _ = tokio::time::sleep_until(start + gap * i) => {}
            _ = config.stop.cancelled() => break,
        }
        let bot = BotConfig {
            server: config.server.clone(),
            name: format!("bot-{i}"),
            index: i,
            play_for: config.play_for,
            behaviour: config.behaviour.of(config.seed, i),
            seed: bot_seed(config.seed, i),
            idle_timeout: config.idle_timeout,
            impair: config.impair,
            connect_via: config.connect_via,
            flocks: flocks.clone(),
            swarm_start: start,
            live: live.clone(),
            stop: config.stop.clone(),
        };
        set.spawn(bot::run(bot));
    }
    let mut bots = Vec::with_capacity(config.bots as usize);
    while let Some(done) = set.join_next().await {
        if let Ok(outcome) = done {
            bots.push(outcome);
        }
    }
    // The bots' close frames leave before the swarm reports (and its process may exit).
    if !flocks.wait_idle(Duration::from_secs(1)).await {
        tracing::debug!("some bots' connections were still closing when the swarm ended");
    }
    progress_done.cancel();
    if let Some(task) = progress {
        let _ = task.await;
    }
    bots.sort_by_key(|b| b.index);
    let report =
        Report::from_outcomes(u64::from(config.bots), config.play_for.as_secs_f64(), &bots);
    SwarmResult {
        report,
        bots,
        endpoints: flocks.count(),
    }
}
