//! What the server counts about itself. Shared by the network tasks, the simulation thread and
//! the HTTP side; everything is atomic or a watch channel, so nobody waits on anybody.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// Live counters. `sessions` is a watch channel so tests and drain logic can await a value
/// instead of polling.
#[derive(Debug)]
pub struct Stats {
    sessions: watch::Sender<usize>,
    /// Sessions' reliable-stream writer tasks alive (`net::writer`): each holds its stream,
    /// and with it its connection's whole QUIC state, until it ends.
    stream_writers: watch::Sender<usize>,
    pub sessions_opened: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub sessions_closed: AtomicU64,
    /// Sessions that took back an earlier session's seat and entity.
    pub sessions_resumed: AtomicU64,
    /// Times the Agones SDK sidecar stopped answering (`--agones`).
    pub agones_sidecar_lost: AtomicU64,
    /// Players whose connection was lost and whose entity waits out `--resume-grace`.
    pub lingering: AtomicU64,
    /// The WebTransport socket's receive buffer as the kernel granted it, bytes.
    pub udp_recv_buffer: AtomicU64,
    /// Heap trims done ([`crate::memory`]), the resident bytes they gave back (an estimate),
    /// and the last one's time in microseconds.
    pub memory_trims: AtomicU64,
    pub memory_trim_released_bytes: AtomicU64,
    pub memory_trim_last_us: AtomicU64,
    players: watch::Sender<u64>,
    entities: watch::Sender<u64>,
    pub tick: AtomicU64,
    pub inputs_dropped_inbox_full: AtomicU64,
    /// Inputs over a session's `--max-inputs-per-sec`.
    pub inputs_rate_limited: AtomicU64,
    /// Inputs for ticks already simulated.
    pub inputs_too_old: AtomicU64,
    /// Inputs more than `--input-window` ticks ahead.
    pub inputs_too_far: AtomicU64,
    /// Inputs with a movement axis out of range (`InputFault::MoveOutOfRange`).
    pub inputs_move_out_of_range: AtomicU64,
    /// Inputs with button bits the protocol does not define (`InputFault::UnknownButtons`).
    pub inputs_unknown_buttons: AtomicU64,
    /// Ticks a player's input had not arrived for (the last one was repeated).
    pub inputs_late: AtomicU64,
    pub snapshots_dropped_slow_consumer: AtomicU64,
    /// Snapshots of a tick still waiting for the network side when the next tick's came
    /// (`replication::post`).
    pub snapshots_superseded_unsent: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagram_bytes_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub datagram_bytes_received: AtomicU64,
    pub stream_bytes_sent: AtomicU64,
    pub stream_bytes_received: AtomicU64,
    pub tick_overruns: AtomicU64,
    /// Longest tick of the last complete window (`TICK_MAX_WINDOW`), microseconds.
    pub tick_max_us_recent: AtomicU64,
    /// Time spent in ticks and in replication, summed (divide by ticks for an average).
    pub tick_us: AtomicU64,
    pub ticks: AtomicU64,
    pub replication_us: AtomicU64,
    /// CPU time spent building snapshots, by the simulation thread and its helpers together
    /// (`replicate` above is the phase's wall time).
    pub replication_cpu_us: AtomicU64,
    pub snapshots_built: AtomicU64,
    /// Snapshots built without a baseline (full).
    pub snapshots_full: AtomicU64,
    /// Snapshots built between a client's rankings (`--rerank-ticks`): the next of its last
    /// ranking, its interest set not walked.
    pub snapshots_between_rankings: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    pub entities_sent: AtomicU64,
    pub entities_in_view: AtomicU64,
    /// Entities that needed sending but waited for budget.
    pub entities_deferred: AtomicU64,
    /// Snapshot encodings, summed: above `snapshots_built` when estimates ran short.
    pub encode_passes: AtomicU64,
    /// Replication's memory for its clients after the last tick (gauges): the bytes of
    /// records held for their views (baselines, views in flight, spares) and interest sets,
    /// and the views in flight held whole (see `replication::replicator`).
    pub replication_view_bytes: AtomicU64,
    pub replication_views_whole: AtomicU64,
    pub acks_received: AtomicU64,
    /// Acknowledgements for ticks the server has not reached (ignored).
    pub acks_ignored: AtomicU64,
    /// Names looked up for `WhoIs` requests, and requests over `--max-whois-per-sec` (dropped).
    pub whois_answered: AtomicU64,
    pub whois_rate_limited: AtomicU64,
    /// Players' rifle shots and rockets (after the fire-rate check).
    pub shots_fired: AtomicU64,
    /// Blows that took health (rifle hits and projectile impacts).
    pub hits: AtomicU64,
    /// Players and NPCs killed.
    pub kills: AtomicU64,
    /// Game events dropped because a session had `--event-queue` waiting.
    pub events_dropped: AtomicU64,
    /// Pongs left out because a session's reliable stream had half of `--max-send-backlog`
    /// waiting (pongs are best-effort; see `net::limits::judge_frame`).
    pub pongs_dropped: AtomicU64,
    /// Replay records handed to the writer, dropped because it was behind, and bytes written.
    pub replay_records: AtomicU64,
    pub replay_dropped: AtomicU64,
    pub replay_bytes: AtomicU64,
    /// Self-signed certificates replaced on the live endpoint (a watch, so a test can await
    /// a rotation).
    cert_rotations: watch::Sender<u64>,
    /// Histograms, labelled counters and the Prometheus rendering of all of the above.
    pub metrics: Metrics,
}

impl Default for Stats {
    /// Counters for a 30 Hz server.
    fn default() -> Self {
        Self::new(Duration::from_secs(1) / 30)
    }
}

impl Stats {
    /// Zeroed counters; histogram buckets are cut for `tick_interval`.
    pub fn new(tick_interval: Duration) -> Self {
        let stats = Self {
            sessions: watch::Sender::new(0),
            stream_writers: watch::Sender::new(0),
            sessions_opened: AtomicU64::new(0),
            sessions_rejected: AtomicU64::new(0),
            sessions_closed: AtomicU64::new(0),
            sessions_resumed: AtomicU64::new(0),
            agones_sidecar_lost: AtomicU64::new(0),
            lingering: AtomicU64::new(0),
            udp_recv_buffer: AtomicU64::new(0),
            memory_trims: AtomicU64::new(0),
            memory_trim_released_bytes: AtomicU64::new(0),
            memory_trim_last_us: AtomicU64::new(0),
            players: watch::Sender::new(0),
            entities: watch::Sender::new(0),
            tick: AtomicU64::new(0),
            inputs_dropped_inbox_full: AtomicU64::new(0),
            inputs_rate_limited: AtomicU64::new(0),
            inputs_too_old: AtomicU64::new(0),
            inputs_too_far: AtomicU64::new(0),
            inputs_move_out_of_range: AtomicU64::new(0),
            inputs_unknown_buttons: AtomicU64::new(0),
            inputs_late: AtomicU64::new(0),
            snapshots_dropped_slow_consumer: AtomicU64::new(0),
            snapshots_superseded_unsent: AtomicU64::new(0),
            datagrams_sent: AtomicU64::new(0),
            datagram_bytes_sent: AtomicU64::new(0),
            datagrams_received: AtomicU64::new(0),
            datagram_bytes_received: AtomicU64::new(0),
            stream_bytes_sent: AtomicU64::new(0),
            stream_bytes_received: AtomicU64::new(0),
            tick_overruns: AtomicU64::new(0),
            tick_max_us_recent: AtomicU64::new(0),
            tick_us: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            replication_us: AtomicU64::new(0),
            replication_cpu_us: AtomicU64::new(0),
            snapshots_built: AtomicU64::new(0),
            snapshots_full: AtomicU64::new(0),
            snapshots_between_rankings: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            entities_sent: AtomicU64::new(0),
            entities_in_view: AtomicU64::new(0),
            entities_deferred: AtomicU64::new(0),
            encode_passes: AtomicU64::new(0),
            replication_view_bytes: AtomicU64::new(0),
            replication_views_whole: AtomicU64::new(0),
            acks_received: AtomicU64::new(0),
            acks_ignored: AtomicU64::new(0),
            whois_answered: AtomicU64::new(0),
            whois_rate_limited: AtomicU64::new(0),
            shots_fired: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            pongs_dropped: AtomicU64::new(0),
            replay_records: AtomicU64::new(0),
            replay_dropped: AtomicU64::new(0),
            replay_bytes: AtomicU64::new(0),
            cert_rotations: watch::Sender::new(0),
            metrics: Metrics::new(tick_interval),
        };
        for (name, help, _) in COUNTERS {
            stats.metrics.describe_counter(name, help);
        }
        stats.metrics.describe_counter(
            "arena_cert_rotations_total",
            "Self-signed certificates replaced on the live endpoint before they expired.",
        );
        for (name, help) in GAUGES {
            stats.metrics.describe_gauge(name, help);
        }
        stats
    }

    /// The Prometheus text exposition of everything: these counters and gauges copied into
    /// the recorder first, then the histograms and labelled counters recorded where they
    /// happen.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        for (name, _, field) in COUNTERS {
            m.set_counter(name, None, Stats::get(field(self)));
        }
        for (reason, field) in INPUTS_REJECTED {
            m.set_counter(
                "arena_inputs_rejected_total",
                Some(("reason", reason)),
                Stats::get(field(self)),
            );
        }
        m.set_counter("arena_cert_rotations_total", None, self.cert_rotations());
        m.set_gauge("arena_clients_connected", self.sessions() as f64);
        m.set_gauge("arena_players", self.players() as f64);
        m.set_gauge("arena_stream_writers", self.stream_writers() as f64);
        m.set_gauge(
            "arena_players_lingering",
            Stats::get(&self.lingering) as f64,
        );
        m.set_gauge("arena_entities", self.entities() as f64);
        m.set_gauge(
            "arena_udp_receive_buffer_bytes",
            Stats::get(&self.udp_recv_buffer) as f64,
        );
        m.set_gauge("arena_server_tick", Stats::get(&self.tick) as f64);
        m.set_gauge(
            "arena_replication_view_bytes",
            Stats::get(&self.replication_view_bytes) as f64,
        );
        m.set_gauge(
            "arena_replication_views_whole",
            Stats::get(&self.replication_views_whole) as f64,
        );
        m.set_gauge(
            "arena_tick_duration_max_seconds",
            Stats::get(&self.tick_max_us_recent) as f64 / 1e6,
        );
        m.set_gauge(
            "arena_memory_trim_last_seconds",
            Stats::get(&self.memory_trim_last_us) as f64 / 1e6,
        );
        if let Some(rss) = crate::metrics::resident_bytes() {
            m.set_gauge("process_resident_memory_bytes", rss as f64);
        }
        m.render_text()
    }

    /// Sessions that passed the handshake and have not yet ended.
    pub fn sessions(&self) -> usize {
        *self.sessions.borrow()
    }

    /// A receiver to await a session count (`wait_for(|n| *n == 0)`).
    pub fn watch_sessions(&self) -> watch::Receiver<usize> {
        self.sessions.subscribe()
    }

    /// Sessions' stream writer tasks alive.
    pub fn stream_writers(&self) -> usize {
        *self.stream_writers.borrow()
    }

    /// A receiver to await a writer count, e.g. zero once every session has ended.
    pub fn watch_stream_writers(&self) -> watch::Receiver<usize> {
        self.stream_writers.subscribe()
    }

    pub(crate) fn writer_started(&self) {
        self.stream_writers.send_modify(|n| *n += 1);
    }

    pub(crate) fn writer_ended(&self) {
        self.stream_writers
            .send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Player entities in the world at the end of the last tick.
    pub fn players(&self) -> u64 {
        *self.players.borrow()
    }

    /// A receiver to await a player count, e.g. zero once everyone has left.
    pub fn watch_players(&self) -> watch::Receiver<u64> {
        self.players.subscribe()
    }

    /// Entities in the world at the end of the last tick (players, NPCs, projectiles).
    pub fn entities(&self) -> u64 {
        *self.entities.borrow()
    }

    /// A receiver to await an entity count, e.g. back to the NPCs once projectiles expired.
    pub fn watch_entities(&self) -> watch::Receiver<u64> {
        self.entities.subscribe()
    }

    pub(crate) fn set_entities(&self, n: u64) {
        self.entities
            .send_if_modified(|e| std::mem::replace(e, n) != n);
    }

    pub(crate) fn set_players(&self, n: u64) {
        self.players
            .send_if_modified(|p| std::mem::replace(p, n) != n);
    }

    /// Counts an admitted session (the seat itself is bounded by `net::registry`).
    pub(crate) fn open_session(&self) {
        self.sessions.send_modify(|n| *n += 1);
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn close_session(&self) {
        self.sessions.send_modify(|n| *n = n.saturating_sub(1));
        self.sessions_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Certificate rotations so far.
    pub fn cert_rotations(&self) -> u64 {
        *self.cert_rotations.borrow()
    }

    /// A receiver to await a certificate rotation (`wait_for(|n| *n >= 1)`).
    pub fn watch_cert_rotations(&self) -> watch::Receiver<u64> {
        self.cert_rotations.subscribe()
    }

    pub(crate) fn count_cert_rotation(&self) {
        self.cert_rotations.send_modify(|n| *n += 1);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The counters that the periodic log line reports as rates.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    ticks: u64,
    tick_us: u64,
    replication_us: u64,
    snapshots: u64,
    full: u64,
    bytes: u64,
    sent: u64,
    in_view: u64,
    deferred: u64,
    passes: u64,
    dropped: u64,
    overruns: u64,
}

impl Sample {
    fn read(s: &Stats) -> Self {
        Self {
            ticks: Stats::get(&s.ticks),
            tick_us: Stats::get(&s.tick_us),
            replication_us: Stats::get(&s.replication_us),
            snapshots: Stats::get(&s.snapshots_built),
            full: Stats::get(&s.snapshots_full),
            bytes: Stats::get(&s.snapshot_bytes),
            sent: Stats::get(&s.entities_sent),
            in_view: Stats::get(&s.entities_in_view),
            deferred: Stats::get(&s.entities_deferred),
            passes: Stats::get(&s.encode_passes),
            dropped: Stats::get(&s.snapshots_dropped_slow_consumer),
            overruns: Stats::get(&s.tick_overruns),
        }
    }
}

/// Logs one line of server health every `every` until `shutdown`: tick and replication time,
/// bytes and entities per snapshot, full vs delta snapshots, drops. Prometheus has the same
/// numbers and more at `/metrics` ([`crate::metrics`]).
pub async fn log_periodically(stats: Arc<Stats>, every: Duration, shutdown: CancellationToken) {
    let mut prev = Sample::read(&stats);
    let mut timer = tokio::time::interval(every);
    timer.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {}
        }
        let now = Sample::read(&stats);
        let ticks = (now.ticks - prev.ticks).max(1) as f64;
        let snaps = (now.snapshots - prev.snapshots).max(1) as f64;
        let clients = stats.sessions();
        tracing::info!(
            clients,
            entities = stats.entities(),
            tick_ms = (now.tick_us - prev.tick_us) as f64 / ticks / 1e3,
            replication_ms = (now.replication_us - prev.replication_us) as f64 / ticks / 1e3,
            bytes_per_snapshot = (now.bytes - prev.bytes) as f64 / snaps,
            down_kbps_per_client = (now.bytes - prev.bytes) as f64 * 8.0
                / 1e3
                / every.as_secs_f64()
                / clients.max(1) as f64,
            entities_per_snapshot = (now.sent - prev.sent) as f64 / snaps,
            in_view_per_snapshot = (now.in_view - prev.in_view) as f64 / snaps,
            deferred_per_snapshot = (now.deferred - prev.deferred) as f64 / snaps,
            encode_passes_per_snapshot = (now.passes - prev.passes) as f64 / snaps,
            view_kib_per_client =
                Stats::get(&stats.replication_view_bytes) as f64 / 1024.0 / clients.max(1) as f64,
            views_whole = Stats::get(&stats.replication_views_whole),
            full_snapshots = now.full - prev.full,
            delta_snapshots = (now.snapshots - prev.snapshots) - (now.full - prev.full),
            dropped_slow_consumer = now.dropped - prev.dropped,
            tick_overruns = now.overruns - prev.overruns,
            "stats"
        );
        prev = now;
    }
}

/// Counters copied into the recorder at each render ([`Stats::render_metrics`]): name, help, field.
type Source = (&'static str, &'static str, Field);
/// Where a counter's value lives.
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
        "arena_memory_trims_total",
        "Heap trims done (--memory-trim-interval): glibc's malloc_trim, giving freed pages back to the kernel.",
        |s| &s.memory_trims,
    ),
    (
        "arena_memory_trim_released_bytes_total",
        "Resident bytes the heap trims gave back (the fall of the resident set across each; an estimate).",
        |s| &s.memory_trim_released_bytes,
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
        "arena_snapshots_between_rankings_total",
        "Snapshots built between a client's rankings (--rerank-ticks): the next of its last ranking.",
        |s| &s.snapshots_between_rankings,
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
        "arena_snapshots_superseded_unsent_total",
        "Snapshots dropped unsent because the next tick's came first (the network side was a tick behind).",
        |s| &s.snapshots_superseded_unsent,
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
        "arena_replication_cpu_microseconds_total",
        "CPU time spent building snapshots, by the simulation thread and its helper threads \
         together (--replication-threads); beside the replicate phase's wall time, it says how \
         long the builders waited for a core.",
        |s| &s.replication_cpu_us,
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

/// Gauges set at each render: name, help.
const GAUGES: &[(&str, &str)] = &[
    (
        "arena_clients_connected",
        "Sessions past the handshake and not yet ended.",
    ),
    ("arena_players", "Player entities in the world."),
    (
        "arena_stream_writers",
        "Sessions' reliable-stream writer tasks alive; each holds its connection's QUIC state, so this follows arena_clients_connected back down.",
    ),
    (
        "arena_players_lingering",
        "Players whose connection was lost, their entity and seat held for --resume-grace.",
    ),
    ("arena_entities", "Entities in the world."),
    (
        "arena_udp_receive_buffer_bytes",
        "The WebTransport UDP socket's receive buffer as the kernel granted it (--udp-recv-buffer, capped by net.core.rmem_max).",
    ),
    ("arena_server_tick", "The simulation's current tick."),
    (
        "arena_replication_view_bytes",
        "Bytes replication holds for its clients' views (baselines, views in flight as deltas or whole, spares) and interest sets.",
    ),
    (
        "arena_replication_views_whole",
        "Views in flight held whole rather than as deltas against the baseline (clients whose acknowledgements lag two ticks or more).",
    ),
    (
        "arena_tick_duration_max_seconds",
        "Longest tick in the last complete window of a few seconds.",
    ),
    (
        "arena_memory_trim_last_seconds",
        "Wall time of the last heap trim (--memory-trim-interval; 0 before the first or where glibc's malloc_trim is absent).",
    ),
    (
        "process_resident_memory_bytes",
        "Resident set size of the server process (Linux).",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = stats.render_metrics();
        for line in [
            "arena_datagrams_sent_total 7",
            "arena_inputs_rejected_total{reason=\"too_old\"} 3",
            "arena_sessions_closed_total{reason=\"client_left\"} 2",
            "arena_sessions_rejected_total{reason=\"token_forged\"} 1",
            "arena_clients_connected 0",
            "arena_stream_writers 0",
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
    fn sessions_are_counted_open_and_closed() {
        let s = Stats::default();
        let mut rx = s.watch_sessions();
        s.open_session();
        s.open_session();
        s.close_session();
        assert_eq!(s.sessions(), 1);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        assert_eq!(
            (
                Stats::get(&s.sessions_opened),
                Stats::get(&s.sessions_closed)
            ),
            (2, 1)
        );
    }
}
