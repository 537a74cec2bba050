//! Prometheus metrics, served by the HTTP side at `GET /metrics`.
//!
//! Each server owns its own [`PrometheusRecorder`] (nothing is installed globally), so several
//! servers in one process, as in the integration tests, never mix their numbers. Two kinds of
//! source feed it:
//! - Histograms and labelled counters are recorded where the event happens, through `metrics`
//!   handles registered once ([`Metrics::tick`], [`Metrics::session_ended`], ...).
//! - Plain counters and gauges stay the atomics of the server's `Stats` (the hot paths pay one
//!   relaxed add, and the periodic log line reads them too); `Stats::render_metrics` copies
//!   them in as absolute values ([`Metrics::set_counter`], [`Metrics::set_gauge`]) just before
//!   rendering. This module knows nothing of `Stats`: it is the recorder, `Stats` the numbers.
//!
//! Histograms keep their samples in lock-free buckets until drained: [`Metrics::upkeep`] must
//! run periodically (the server does it every few seconds), scraped or not, so memory stays
//! bounded.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// The phases of a tick, as the `phase` label of `arena_tick_phase_seconds`.
pub const PHASES: [&str; 7] = [
    "receive",
    "ai",
    "movement",
    "projectiles",
    "hits",
    "replicate",
    "end",
];

/// How often the server drains histogram samples into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Histogram bucket edges as fractions of the tick interval: fine below a third of the budget
/// (the capacity benchmark's "held" line), coarse above a whole tick.
const BUCKETS_OF_TICK: [f64; 22] = [
    1.0 / 256.0,
    1.0 / 128.0,
    1.0 / 96.0,
    1.0 / 64.0,
    1.0 / 48.0,
    1.0 / 32.0,
    3.0 / 64.0,
    1.0 / 16.0,
    5.0 / 64.0,
    3.0 / 32.0,
    1.0 / 8.0,
    5.0 / 32.0,
    3.0 / 16.0,
    1.0 / 4.0,
    1.0 / 3.0,
    1.0 / 2.0,
    2.0 / 3.0,
    1.0,
    1.5,
    2.0,
    4.0,
    16.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Wall time of whole ticks.
    pub tick: Histogram,
    /// Wall time of each phase of a tick, indexed like [`PHASES`]; `replicate` is the
    /// replication time.
    pub phases: [Histogram; PHASES.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Metrics {
    /// A recorder whose duration histograms have buckets cut for this tick interval.
    pub fn new(tick_interval: Duration) -> Self {
        let tick = tick_interval.as_secs_f64();
        let buckets: Vec<f64> = BUCKETS_OF_TICK.iter().map(|f| f * tick).collect();
        let recorder = match PrometheusBuilder::new().set_buckets(&buckets) {
            Ok(builder) => builder,
            Err(_) => unreachable!("the bucket list is not empty"),
        }
        .build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_histogram(KeyName::from_const_str(name), unit, help.into());
        };
        describe(
            "arena_tick_duration_seconds",
            Some(Unit::Seconds),
            "Wall time of one simulation tick.",
        );
        describe(
            "arena_tick_phase_seconds",
            Some(Unit::Seconds),
            "Wall time of one phase of a tick (replicate is the replication time).",
        );
        for (name, help) in LABELLED {
            recorder.describe_counter(KeyName::from_const_str(name), None, (*help).into());
        }
        let meta = metadata();
        let tick_hist = recorder
            .register_histogram(&Key::from_static_name("arena_tick_duration_seconds"), &meta);
        let phases = PHASES.map(|p| {
            recorder.register_histogram(
                &Key::from_parts("arena_tick_phase_seconds", vec![Label::new("phase", p)]),
                &meta,
            )
        });
        Self {
            recorder,
            handle,
            tick: tick_hist,
            phases,
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &metadata())
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_static_name(name), &metadata())
    }

    /// A session refused at admission, by its `Reject` reason.
    pub fn session_rejected(&self, reason: &'static str) {
        self.counter(
            "arena_sessions_rejected_total",
            vec![Label::new("reason", reason)],
        )
        .increment(1);
    }

    /// A connection or request an HTTP listener refused (`listener`: "game", ...), by why
    /// (see [`crate::http::serve`]).
    pub fn http_rejected(&self, listener: &'static str, reason: &'static str) {
        self.counter(
            "arena_http_rejected_total",
            vec![
                Label::new("listener", listener),
                Label::new("reason", reason),
            ],
        )
        .increment(1);
    }

    /// A live handoff asked of this server, by how it ended: `confirmed` (the world moved),
    /// `expired` (no confirmation in time, or the freeze failed: the server carried on) or
    /// `refused` (a bad signature, or one already under way).
    pub fn handoff(&self, outcome: &'static str) {
        self.counter("arena_handoffs_total", vec![Label::new("outcome", outcome)])
            .increment(1);
    }

    /// An `/api/connect` request refused, by why.
    pub fn connect_rejected(&self, reason: &'static str) {
        self.counter(
            "arena_connect_rejected_total",
            vec![Label::new("reason", reason)],
        )
        .increment(1);
    }

    /// A connection refused before its `Hello` was read (in-flight caps, a QUIC Retry asked
    /// for, the WebTransport request's path or origin), by reason.
    pub fn handshake_rejected(&self, reason: &'static str) {
        self.counter(
            "arena_handshakes_rejected_total",
            vec![Label::new("reason", reason)],
        )
        .increment(1);
    }

    /// A replay viewer request refused or cut short, by why.
    pub fn viewer_rejected(&self, reason: &'static str) {
        self.counter(
            "arena_viewer_rejected_total",
            vec![Label::new("reason", reason)],
        )
        .increment(1);
    }

    /// A welcomed session ended, by why.
    pub fn session_ended(&self, reason: &'static str) {
        self.counter(
            "arena_sessions_closed_total",
            vec![Label::new("reason", reason)],
        )
        .increment(1);
    }

    /// Describes a counter whose value is set at each render ([`Metrics::set_counter`]).
    pub fn describe_counter(&self, name: &'static str, help: &'static str) {
        self.recorder
            .describe_counter(KeyName::from_const_str(name), None, help.into());
    }

    /// Describes a gauge ([`Metrics::set_gauge`]).
    pub fn describe_gauge(&self, name: &'static str, help: &'static str) {
        self.recorder
            .describe_gauge(KeyName::from_const_str(name), None, help.into());
    }

    /// Sets a counter to a total kept elsewhere (an atomic of the server's `Stats`), with at
    /// most one label.
    pub fn set_counter(
        &self,
        name: &'static str,
        label: Option<(&'static str, &'static str)>,
        value: u64,
    ) {
        let labels = label.map_or_else(Vec::new, |(k, v)| vec![Label::new(k, v)]);
        self.counter(name, labels).absolute(value);
    }

    pub fn set_gauge(&self, name: &'static str, value: f64) {
        self.gauge(name).set(value);
    }

    /// The Prometheus text exposition of everything recorded and set so far.
    pub fn render_text(&self) -> String {
        self.handle.render()
    }

    /// Moves histogram samples into their buckets; bounded memory needs this periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

const LABELLED: &[(&str, &str)] = &[
    (
        "arena_sessions_rejected_total",
        "Sessions refused at admission, by reason.",
    ),
    (
        "arena_handshakes_rejected_total",
        "Connections refused or sent a QUIC Retry before their Hello was read, by reason.",
    ),
    (
        "arena_sessions_closed_total",
        "Welcomed sessions that ended, by reason.",
    ),
    (
        "arena_inputs_rejected_total",
        "Inputs dropped before the simulation used them, by reason.",
    ),
    (
        "arena_viewer_rejected_total",
        "Replay viewer requests refused or cut short, by reason.",
    ),
    (
        "arena_http_rejected_total",
        "HTTP connections closed at accept (over a cap), closed to make room for a newcomer (evicted while waiting for a head), or requests refused (too slow, too large), by listener and reason.",
    ),
    (
        "arena_connect_rejected_total",
        "/api/connect requests refused (no token issued), by reason.",
    ),
];

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, None)
}

/// This process's resident set size, from `/proc/self/status` (Linux only).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > 1 << 20));
        }
    }
}
