//! What a bot saw: its sessions, its counts and its histograms ([`BotOutcome`]), which the
//! swarm merges into its report. [`crate::player`] fills it from the session's events,
//! [`crate::bot`] from the transport (bytes, sessions, errors).

use std::collections::BTreeMap;
use std::time::Duration;

use arena_shared::snapshot::View;
use glam::Vec2;
use hdrhistogram::Histogram;

use crate::behaviour::Behaviour;
use crate::connect::ClientError;

/// One session of a bot: from its `Welcome` to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// When its `Welcome` arrived, counted from the swarm's start.
    pub welcomed_at: Duration,
    /// From the start of the attempt (`GET /api/connect`) to the `Welcome`.
    pub connect: Duration,
    /// When its attempt was due, counted from the swarm's start: the end of the bot's wait
    /// before it (what the drain's hint and the backoff decided), or its start where it did
    /// not wait. Its start can be later, by as long as the bot's runtime took to wake it.
    pub due_at: Duration,
    pub played: Duration,
    /// Why it ended before the bot meant to leave, if it did.
    pub lost: Option<String>,
    /// Its entity in this session.
    pub entity: u32,
    /// The server handed back an earlier session's entity.
    pub resumed: bool,
}

/// What one bot saw, over all its sessions.
///
/// Memory: a [`Session`] record per session, and sessions are either at least
/// [`STABLE_SESSION`](crate::backoff::STABLE_SESSION) long or separated by growing backoff
/// delays (see [`crate::backoff`]), so a bot keeps at most about one record per
/// `STABLE_SESSION` of play time.
#[derive(Debug, Clone)]
pub struct BotOutcome {
    pub name: String,
    pub index: u32,
    pub behaviour: Behaviour,
    /// The first successful connect's time, or `Err` with the last failure if it never got a
    /// `Welcome`.
    pub connect: Result<Duration, String>,
    /// Every session, in order.
    pub sessions: Vec<Session>,
    /// Failed connects and lost sessions, by kind (`ClientError::kind`), each counted.
    pub errors: BTreeMap<String, u64>,
    /// The last of them in full (what the kind does not say: the transport's own message).
    pub last_error: Option<String>,
    /// Why its last lost session ended; `Some` if it lost any session before it meant to leave.
    pub disconnected: Option<String>,
    /// Times the server moved it to another server (`Disconnect(Moved)`): not a lost session
    /// and not an error; the bot followed.
    pub moves: u64,
    /// Time played, all sessions together.
    pub played: Duration,
    /// Its entity in its last session.
    pub entity: Option<u32>,
    pub tick_rate: u16,
    /// Ticks for which every part arrived.
    pub snapshots: u64,
    pub datagrams: u64,
    pub down_bytes: u64,
    pub up_bytes: u64,
    /// UDP datagrams (QUIC packets, coalesced ones counted once) the bot's connections read
    /// and sent, handshakes included: what each side's kernel and QUIC stack handle.
    pub packets_down: u64,
    pub packets_up: u64,
    pub inputs_sent: u64,
    /// Inputs sent with the fire button held (a chaser that sees someone).
    pub fire_inputs: u64,
    /// Rifle shots and rockets fired (fire held on a tick its weapon was ready, counted with
    /// the server's fire rates).
    pub shots_fired: u64,
    /// `Hit` events naming this bot as the attacker.
    pub hits_confirmed: u64,
    /// `Killed` events naming it as the killer, and as the victim.
    pub kills: u64,
    pub deaths: u64,
    /// Round trips in microseconds (pings; an idle bot sends none).
    pub rtt_us: BotHistogram,
    /// Its own position at the first and the last snapshot of its last session.
    pub first_pos: Option<Vec2>,
    pub last_pos: Option<Vec2>,
    /// Sum of the movement directions sent in its last session.
    pub input_sum: Vec2,
    /// Sizes of snapshot datagrams (delta mode) or of whole snapshots (full mode), bytes.
    pub snapshot_bytes: BotHistogram,
    /// Entities in the bot's view, one sample per snapshot.
    pub in_view: BotHistogram,
    /// Delta snapshots that could not be decoded for want of their baseline.
    pub baseline_misses: u64,
    /// The newest view the bot reconstructed (delta mode), in the session it ended by leaving.
    pub last_view: Option<View>,
    /// Predictions the server's state corrected, after each session's warm-up.
    pub prediction_corrections: u64,
    /// Largest of those corrections, world units.
    pub prediction_max_error: f32,
    /// The server's count of this bot's inputs that arrived too late, after each session's
    /// warm-up, all sessions together.
    pub inputs_late: u64,
    /// Times the interpolation buffer ran dry, all sessions together.
    pub interp_underruns: u64,
    /// Error of the server-tick estimate at each snapshot after the warm-up, microseconds.
    pub clock_error_us: BotHistogram,
    /// The longest time between two whole snapshots, across its sessions: what a stall, a
    /// reconnect or a move to another server cost it in snapshots (zero before its second).
    pub longest_snapshot_gap: Duration,
}

impl BotOutcome {
    /// Nothing seen yet: a bot before its first connect, or a test driving a
    /// [`crate::player::Player`] by hand.
    pub fn new(name: String, index: u32, behaviour: Behaviour) -> Self {
        Self {
            name,
            index,
            behaviour,
            connect: Err("not attempted".into()),
            sessions: Vec::new(),
            errors: BTreeMap::new(),
            last_error: None,
            disconnected: None,
            moves: 0,
            played: Duration::ZERO,
            entity: None,
            tick_rate: 0,
            snapshots: 0,
            datagrams: 0,
            down_bytes: 0,
            packets_down: 0,
            packets_up: 0,
            up_bytes: 0,
            inputs_sent: 0,
            fire_inputs: 0,
            shots_fired: 0,
            hits_confirmed: 0,
            kills: 0,
            deaths: 0,
            rtt_us: new_bot_histogram(),
            first_pos: None,
            last_pos: None,
            input_sum: Vec2::ZERO,
            snapshot_bytes: new_bot_histogram(),
            in_view: new_bot_histogram(),
            baseline_misses: 0,
            last_view: None,
            prediction_corrections: 0,
            prediction_max_error: 0.0,
            inputs_late: 0,
            interp_underruns: 0,
            clock_error_us: new_bot_histogram(),
            longest_snapshot_gap: Duration::ZERO,
        }
    }

    /// Got a `Welcome` at least once.
    pub fn connected(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// Sessions after its first.
    pub fn reconnects(&self) -> u64 {
        self.sessions.len().saturating_sub(1) as u64
    }

    /// Sessions that took back an earlier session's entity.
    pub fn resumes(&self) -> u64 {
        self.sessions.iter().filter(|s| s.resumed).count() as u64
    }

    /// When each of its sessions got its `Welcome`, from the swarm's start.
    pub fn welcome_times(&self) -> impl Iterator<Item = Duration> + '_ {
        self.sessions.iter().map(|s| s.welcomed_at)
    }

    pub(crate) fn count_error(&mut self, e: &ClientError) {
        tracing::debug!(bot = %self.name, error = %e, "attempt failed");
        *self.errors.entry(e.kind()).or_insert(0) += 1;
        self.last_error = Some(e.to_string());
    }
}

/// A histogram of a bot's own ([`new_bot_histogram`]). Its counters are 32-bit: a bot records
/// a value a snapshot at most, so no counter nears 2^32 in years of play, and each counter
/// costs half a 64-bit one's memory. The swarm's merged histograms count in 64 bits
/// ([`merge`]).
pub type BotHistogram = Histogram<u32>;

/// Significant figures of every histogram a bot keeps (values within 1%). Each bot keeps
/// four: ~17 KB a histogram at 2 figures over a fixed range of 1 µs to 60 s, ~140 KB at 3.
pub const HISTOGRAM_SIGFIG: u8 = 2;

/// A histogram of a bot's own: it starts with a few hundred counters and grows only to the
/// largest value the bot records (a 100 ms round trip needs ~1,400 counters, a 1,300-byte
/// snapshot ~640), where one bounded for the worst value held ~2,300 counters each from the
/// start: 78 KB a bot in all, a fifth of its memory. The swarm's merged histograms grow too
/// ([`crate::report::Report::from_outcomes`]), so a bot's always adds.
pub fn new_bot_histogram() -> BotHistogram {
    Histogram::new(HISTOGRAM_SIGFIG).unwrap_or_else(|_| unreachable!("constant figures are valid"))
}

/// A swarm's histogram of what its bots recorded: it grows as [`new_bot_histogram`] does,
/// counting in 64 bits.
pub fn new_swarm_histogram() -> Histogram<u64> {
    Histogram::new(HISTOGRAM_SIGFIG).unwrap_or_else(|_| unreachable!("constant figures are valid"))
}

/// Adds a bot's histogram into a swarm's ([`new_swarm_histogram`]): every value it recorded,
/// as often as it recorded it (each lands in the bucket it had, the figures being the same).
pub fn merge(into: &mut Histogram<u64>, from: &BotHistogram) {
    for v in from.iter_recorded() {
        let _ = into.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
    }
}

/// The largest value a bot's histogram takes (60 s in microseconds); a larger one counts as it.
pub const BOT_HISTOGRAM_MAX: u64 = 60_000_000;

/// Records `value` in a bot's histogram ([`new_bot_histogram`]), growing it as far as needed
/// (`saturating_record` would clamp to its current range instead).
pub fn record(h: &mut BotHistogram, value: u64) {
    let _ = h.record(value.min(BOT_HISTOGRAM_MAX));
}

/// RTTs from 1 µs to 60 s.
pub fn new_rtt_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, HISTOGRAM_SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bots_histograms_stay_small() {
        // Four a bot, thousands of bots: each must stay in the tens of kilobytes; the swarm's
        // fixed-range ones (connect times, gaps, the live RTTs) too.
        let fixed = new_rtt_histogram().distinct_values() * std::mem::size_of::<u64>();
        assert!(fixed <= 24 * 1024, "{fixed} bytes");
        // A bot's own grow only as far as what it records: round trips up to 300
        // milliseconds, snapshots of a datagram, a few hundred entities in view.
        let bytes = |h: &BotHistogram| h.distinct_values() * std::mem::size_of::<u32>();
        let (mut rtt, mut sizes, mut in_view) = (
            new_bot_histogram(),
            new_bot_histogram(),
            new_bot_histogram(),
        );
        for i in 1..=1000u64 {
            record(&mut rtt, i * 300);
            record(&mut sizes, i * 14 / 10);
            record(&mut in_view, i % 400);
        }
        assert!(bytes(&rtt) <= 16 * 1024, "RTTs: {} bytes", bytes(&rtt));
        assert!(bytes(&sizes) <= 6 * 1024, "sizes: {} bytes", bytes(&sizes));
        assert!(
            bytes(&in_view) <= 4 * 1024,
            "in view: {} bytes",
            bytes(&in_view)
        );
        // And still tell the figures apart within 1%.
        let p50 = rtt.value_at_quantile(0.5);
        assert!((148_500..=151_500).contains(&p50), "RTT p50 {p50}");
    }

    #[test]
    fn bots_merged_into_a_swarm_give_what_one_64_bit_histogram_of_everything_gives() {
        let mut rng = arena_shared::rng::SplitMix64::new(5);
        let mut swarm = new_swarm_histogram();
        let mut all = new_swarm_histogram();
        for bot in 0..50u64 {
            let mut own = new_bot_histogram();
            for _ in 0..2_000 {
                // Round trips of 1 to ~300 ms, some bots far slower than others.
                let v = 1_000 + u64::from(rng.below(300_000)) * (1 + bot % 3);
                record(&mut own, v);
                let _ = all.record(v.min(BOT_HISTOGRAM_MAX));
            }
            merge(&mut swarm, &own);
        }
        assert_eq!(swarm.len(), all.len());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                swarm.value_at_quantile(q),
                all.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(swarm.max(), all.max());
        assert_eq!(swarm.min(), all.min());
    }
}
