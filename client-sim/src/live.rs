//! What the swarm is doing right now: counters every bot bumps as it plays, and the progress
//! line a person watches on stderr while a run goes on.
//!
//! Thousands of bots share one [`LiveStats`], so bumping it must stay cheap: relaxed atomic
//! adds (no ordering is needed between counters that are only ever summed and displayed) and
//! one short-held lock per RTT sample. The display reads it once a second and turns the
//! difference between two readings into rates ([`line`], sans-IO).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::outcome::new_rtt_histogram;

/// How often the progress line is redrawn (and the live RTT window reset).
pub const REFRESH: Duration = Duration::from_secs(1);

/// Counters shared by every bot of a swarm.
#[derive(Debug)]
pub struct LiveStats {
    /// Sessions open now.
    pub connected: AtomicU64,
    /// Bots waiting out a backoff delay now.
    pub retrying: AtomicU64,
    /// Connect attempts that failed so far (each retry counts).
    pub failed: AtomicU64,
    /// Sessions after a bot's first.
    pub reconnects: AtomicU64,
    /// Sessions that took back an earlier session's entity.
    pub resumes: AtomicU64,
    /// Complete snapshots received, all bots.
    pub snapshots: AtomicU64,
    /// Bytes received (datagrams and stream), all bots.
    pub down_bytes: AtomicU64,
    /// Prediction corrections counted (after each session's warm-up).
    pub corrections: AtomicU64,
    /// Round trips since the last reading, microseconds.
    rtt_us: Mutex<Histogram<u64>>,
    /// `Welcome`s received, all bots, all sessions: a watch, so that a caller can await a
    /// count (rare enough that a watch costs nothing here).
    welcomes: watch::Sender<u64>,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self {
            connected: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            corrections: AtomicU64::new(0),
            rtt_us: Mutex::new(new_rtt_histogram()),
            welcomes: watch::Sender::new(0),
        }
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Holds a gauge up by one while alive (a session open, a backoff being waited out), so that
/// every path out of the scope, a cancelled future included, takes it down again.
pub struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    pub fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Relaxed);
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub connected: u64,
    pub retrying: u64,
    pub failed: u64,
    pub reconnects: u64,
    pub resumes: u64,
    pub snapshots: u64,
    pub down_bytes: u64,
    pub corrections: u64,
    /// p50 and p99 of the round trips since the previous reading, microseconds.
    pub rtt_us: Option<(u64, u64)>,
}

impl LiveStats {
    /// A bot got a `Welcome`.
    pub fn welcomed(&self) {
        self.welcomes.send_modify(|n| *n += 1);
    }

    /// The count of `Welcome`s, all bots together, to await (e.g. every bot's second one).
    pub fn watch_welcomes(&self) -> watch::Receiver<u64> {
        self.welcomes.subscribe()
    }

    pub fn record_rtt(&self, rtt: Duration) {
        if let Ok(mut h) = self.rtt_us.lock() {
            h.saturating_record(rtt.as_micros().max(1) as u64);
        }
    }

    /// Reads every counter, and takes (and resets) the RTT window.
    pub fn read(&self) -> Reading {
        let rtt_us = self.rtt_us.lock().ok().and_then(|mut h| {
            let window =
                (!h.is_empty()).then(|| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)));
            h.reset();
            window
        });
        Reading {
            connected: self.connected.load(Relaxed),
            retrying: self.retrying.load(Relaxed),
            failed: self.failed.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            resumes: self.resumes.load(Relaxed),
            snapshots: self.snapshots.load(Relaxed),
            down_bytes: self.down_bytes.load(Relaxed),
            corrections: self.corrections.load(Relaxed),
            rtt_us,
        }
    }
}

/// The progress line for `now`, with rates over the `dt` since `before`.
pub fn line(before: &Reading, now: &Reading, dt: Duration, bots: u32) -> String {
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt.as_secs_f64().max(1e-3);
    let rtt = match now.rtt_us {
        Some((p50, p99)) => format!("{:.1}/{:.1} ms", p50 as f64 / 1000.0, p99 as f64 / 1000.0),
        None => "-".into(),
    };
    format!(
        "connected {}/{bots}  retrying {}  failed {}  reconnects {} (resumed {})  snapshots {:.0}/s  down {:.0} kB/s  RTT p50/p99 {rtt}  corrections {}",
        now.connected,
        now.retrying,
        now.failed,
        now.reconnects,
        now.resumes,
        per_s(before.snapshots, now.snapshots),
        per_s(before.down_bytes, now.down_bytes) / 1000.0,
        now.corrections,
    )
}

/// Redraws the progress line on stderr every [`REFRESH`] until `done` fires, then clears it.
/// Draws nothing when stderr is not a terminal (indicatif hides its stderr target then).
pub async fn show(stats: std::sync::Arc<LiveStats>, bots: u32, done: CancellationToken) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut timer = tokio::time::interval(REFRESH);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before = stats.read();
    let mut at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            _ = done.cancelled() => break,
        }
        let now = stats.read();
        bar.set_message(line(&before, &now, at.elapsed(), bots));
        bar.tick();
        (before, at) = (now, tokio::time::Instant::now());
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_gauges_and_rates_over_the_interval() {
        let stats = LiveStats::default();
        let before = stats.read();
        {
            let _session = Held::new(&stats.connected);
            let _a = Held::new(&stats.connected);
            bump(&stats.failed);
            stats.snapshots.fetch_add(60, Relaxed);
            stats.down_bytes.fetch_add(20_000, Relaxed);
            for ms in 1..=100 {
                stats.record_rtt(Duration::from_millis(ms));
            }
            let now = stats.read();
            let text = line(&before, &now, Duration::from_secs(2), 5);
            assert!(text.contains("connected 2/5"), "{text}");
            assert!(text.contains("failed 1"), "{text}");
            assert!(text.contains("snapshots 30/s"), "{text}");
            assert!(text.contains("down 10 kB/s"), "{text}");
            // Within the histograms' 1%.
            assert!(
                text.contains("RTT p50/p99 50.") && text.contains("/99."),
                "{text}"
            );
        }
        let after = stats.read();
        assert_eq!(after.connected, 0, "held gauges come down when dropped");
        assert_eq!(after.rtt_us, None, "each reading starts a new RTT window");
        assert!(line(&after, &after, REFRESH, 5).contains("RTT p50/p99 -"));
    }
}
