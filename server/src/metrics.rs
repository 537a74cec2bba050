//! Prometheus metrics, served by the HTTP side at `GET /metrics`.
//!
//! Each server owns its own [`PrometheusRecorder`] (nothing is installed globally), so several
//! servers in one process, as in the integration tests, never mix their numbers. Two kinds of
//! source feed it:
//! - Histograms and labelled counters are recorded where the event happens, through `metrics`
//!   handles registered once ([`Metrics::tick`], [`Metrics::session_ended`], ...).
//! - Plain counters and gauges stay the atomics of [`Stats`] (the hot paths pay one relaxed
//!   add, and the periodic log line reads them too); [`Metrics::render`] copies them into the
//!   recorder as absolute values just before rendering.
//!
//! Histograms keep their samples in lock-free buckets until drained: [`Metrics::upkeep`] must
//! run periodically (the server does it every few seconds), scraped or not, so memory stays
//! bounded.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::stats::Stats;

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

/// Counters copied from [`Stats`] at each render: name, help, field.
type Source = (&'static str, &'static str, Field);
/// Where a counter's value lives in [`Stats`].
type Field = fn(&Stats) -> &AtomicU64;

const COUNTERS: &[Source] = &[
    ("arena_ticks_total", "Ticks simulated.", |s| &s.ticks),
    (
        "arena_tick_overruns_total",
        "Times the simulation fell more than its catch-up limit behind and skipped ahead.",
        |s| &s.tick_overruns,
    ),
    (
        "arena_sessions_opened_total",
        "Sessions admitted (Welcome sent).",
        |s| &s.sessions_opened,
    ),
    (
        "arena_sessions_resumed_total",
        "Sessions that took back an earlier session's seat and entity (resume).",
        |s| &s.sessions_resumed,
    ),
    (
        "arena_agones_sidecar_lost_total",
        "Times the Agones SDK sidecar stopped answering (--agones); each is retried with backoff.",
        |s| &s.agones_sidecar_lost,
    ),
    (
        "arena_datagrams_sent_total",
        "Snapshot datagrams handed to QUIC.",
        |s| &s.datagrams_sent,
    ),
    (
        "arena_datagram_bytes_sent_total",
        "Payload bytes of snapshot datagrams handed to QUIC.",
        |s| &s.datagram_bytes_sent,
    ),
    (
        "arena_datagrams_received_total",
        "Datagrams received from clients.",
        |s| &s.datagrams_received,
    ),
    (
        "arena_datagram_bytes_received_total",
        "Payload bytes of datagrams received from clients.",
        |s| &s.datagram_bytes_received,
    ),
    (
        "arena_stream_bytes_sent_total",
        "Bytes written to clients' reliable streams.",
        |s| &s.stream_bytes_sent,
    ),
    (
        "arena_stream_bytes_received_total",
        "Bytes read from clients' reliable streams.",
        |s| &s.stream_bytes_received,
    ),
    (
        "arena_snapshots_built_total",
        "Snapshots built for clients.",
        |s| &s.snapshots_built,
    ),
    (
        "arena_snapshots_full_total",
        "Snapshots built without a baseline.",
        |s| &s.snapshots_full,
    ),
    (
        "arena_snapshot_bytes_total",
        "Encoded snapshot bytes.",
        |s| &s.snapshot_bytes,
    ),
    (
        "arena_snapshots_dropped_slow_consumer_total",
        "Snapshots dropped from a full outbox (the client's datagrams could not keep up).",
        |s| &s.snapshots_dropped_slow_consumer,
    ),
    (
        "arena_entities_sent_total",
        "Entity records sent in snapshots.",
        |s| &s.entities_sent,
    ),
    (
        "arena_entities_deferred_total",
        "Entity records that needed sending but waited for byte budget.",
        |s| &s.entities_deferred,
    ),
    (
        "arena_inputs_late_total",
        "Player ticks whose input had not arrived in time (the previous input was repeated).",
        |s| &s.inputs_late,
    ),
    (
        "arena_acks_received_total",
        "Snapshot acknowledgements accepted.",
        |s| &s.acks_received,
    ),
    (
        "arena_acks_ignored_total",
        "Snapshot acknowledgements for ticks not yet reached (ignored).",
        |s| &s.acks_ignored,
    ),
    (
        "arena_whois_answered_total",
        "WhoIs requests answered with player names.",
        |s| &s.whois_answered,
    ),
    (
        "arena_whois_rate_limited_total",
        "WhoIs requests over a session's --max-whois-per-sec (dropped unanswered).",
        |s| &s.whois_rate_limited,
    ),
    (
        "arena_shots_fired_total",
        "Players' rifle shots and rockets fired (after the fire-rate check).",
        |s| &s.shots_fired,
    ),
    (
        "arena_hits_total",
        "Blows that took health (rifle hits and projectile impacts).",
        |s| &s.hits,
    ),
    ("arena_kills_total", "Players and NPCs killed.", |s| {
        &s.kills
    }),
    (
        "arena_replay_records_total",
        "Replay records handed to the writer.",
        |s| &s.replay_records,
    ),
    (
        "arena_replay_records_dropped_total",
        "Replay records dropped because the writer was behind (the file has a Gap there).",
        |s| &s.replay_dropped,
    ),
    (
        "arena_replay_bytes_total",
        "Bytes written to replay files.",
        |s| &s.replay_bytes,
    ),
    (
        "arena_events_dropped_total",
        "Game events dropped because a session had --event-queue events waiting.",
        |s| &s.events_dropped,
    ),
    (
        "arena_pongs_dropped_total",
        "Pongs left out because a session's reliable stream had half of --max-send-backlog waiting.",
        |s| &s.pongs_dropped,
    ),
];

/// Inputs the server refused, by reason (`arena_inputs_rejected_total{reason}`).
const INPUTS_REJECTED: &[(&str, Field)] = &[
    ("inbox_full", |s| &s.inputs_dropped_inbox_full),
    ("rate_limited", |s| &s.inputs_rate_limited),
    ("too_old", |s| &s.inputs_too_old),
    ("too_far_ahead", |s| &s.inputs_too_far),
    ("move_out_of_range", |s| &s.inputs_move_out_of_range),
    ("unknown_buttons", |s| &s.inputs_unknown_buttons),
];

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
        for (name, help, _) in COUNTERS {
            recorder.describe_counter(KeyName::from_const_str(name), None, (*help).into());
        }
        for (name, help) in GAUGES {
            recorder.describe_gauge(KeyName::from_const_str(name), None, (*help).into());
        }
        for (name, help) in LABELLED {
            recorder.describe_counter(KeyName::from_const_str(name), None, (*help).into());
        }
        recorder.describe_counter(
            KeyName::from_const_str("arena_cert_rotations_total"),
            None,
            "Self-signed certificates replaced on the live endpoint before they expired.".into(),
        );
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

    /// Moves histogram samples into their buckets; bounded memory needs this periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition of everything, with `stats` copied in first.
    pub fn render(&self, stats: &Stats) -> String {
        for (name, _, field) in COUNTERS {
            self.counter(name, Vec::new())
                .absolute(Stats::get(field(stats)));
        }
        for (reason, field) in INPUTS_REJECTED {
            self.counter(
                "arena_inputs_rejected_total",
                vec![Label::new("reason", *reason)],
            )
            .absolute(Stats::get(field(stats)));
        }
        self.counter("arena_cert_rotations_total", Vec::new())
            .absolute(stats.cert_rotations());
        self.gauge("arena_clients_connected")
            .set(stats.sessions() as f64);
        self.gauge("arena_players").set(stats.players() as f64);
        self.gauge("arena_players_lingering")
            .set(Stats::get(&stats.lingering) as f64);
        self.gauge("arena_entities").set(stats.entities() as f64);
        self.gauge("arena_server_tick")
            .set(Stats::get(&stats.tick) as f64);
        self.gauge("arena_tick_duration_max_seconds")
            .set(Stats::get(&stats.tick_max_us_recent) as f64 / 1e6);
        if let Some(rss) = resident_bytes() {
            self.gauge("process_resident_memory_bytes").set(rss as f64);
        }
        self.handle.render()
    }
}

const GAUGES: &[(&str, &str)] = &[
    (
        "arena_clients_connected",
        "Sessions past the handshake and not yet ended.",
    ),
    ("arena_players", "Player entities in the world."),
    (
        "arena_players_lingering",
        "Players whose connection was lost, their entity and seat held for --resume-grace.",
    ),
    ("arena_entities", "Entities in the world."),
    ("arena_server_tick", "The simulation's current tick."),
    (
        "arena_tick_duration_max_seconds",
        "Longest tick in the last complete window of a few seconds.",
    ),
    (
        "process_resident_memory_bytes",
        "Resident set size of the server process (Linux).",
    ),
];

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
    use std::sync::atomic::Ordering;

    #[test]
    fn render_carries_stats_histograms_and_reasons() {
        let stats = Stats::default();
        stats.datagrams_sent.store(7, Ordering::Relaxed);
        stats.inputs_too_old.store(3, Ordering::Relaxed);
        stats.metrics.tick.record(0.004);
        stats.metrics.phases[5].record(0.003);
        stats.metrics.session_ended("client_left");
        stats.metrics.session_ended("client_left");
        stats.metrics.session_rejected("token_forged");
        stats.count_cert_rotation();
        let text = stats.metrics.render(&stats);
        for line in [
            "arena_datagrams_sent_total 7",
            "arena_inputs_rejected_total{reason=\"too_old\"} 3",
            "arena_sessions_closed_total{reason=\"client_left\"} 2",
            "arena_sessions_rejected_total{reason=\"token_forged\"} 1",
            "arena_clients_connected 0",
            "arena_cert_rotations_total 1",
            "arena_tick_duration_seconds_count 1",
            "arena_tick_phase_seconds_count{phase=\"replicate\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("# TYPE arena_tick_duration_seconds histogram"));
        // A third of a 30 Hz tick is a bucket edge: the capacity benchmark reads p99 against it.
        assert!(
            text.contains("arena_tick_duration_seconds_bucket{le=\"0.011111"),
            "{text}"
        );
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > 1 << 20));
        }
    }
}
