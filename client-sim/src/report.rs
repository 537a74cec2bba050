//! The swarm's report: flat JSON for scripts, a table for people.
//!
//! Keys are stable: scripts and CI gate on them (`--fail-under`, `--fail-over`). A bot may
//! have several sessions (it reconnects when dropped): per-bot rates are averaged over the
//! bots that connected, each over the time it actually played, all its sessions together;
//! connect times count every successful connect; a bot that failed at first and then
//! connected is not failed. Percentiles come from merged hdrhistograms, never from averages.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::outcome::{BotOutcome, merge, new_rtt_histogram, new_swarm_histogram};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub bots_requested: u64,
    /// Got a `Welcome` at least once.
    pub bots_connected: u64,
    /// Never got a `Welcome`, however often they tried.
    pub bots_failed: u64,
    /// Lost a session before they meant to leave, at least once (whether or not they
    /// reconnected).
    pub bots_disconnected: u64,
    /// Sessions after each bot's first, all bots together (0 when reading an older report).
    #[serde(default)]
    pub reconnects: u64,
    /// Of those, sessions that took back the bot's entity (the server still kept it).
    #[serde(default)]
    pub resumes: u64,
    /// Times a server moved a bot to another (`Disconnect(Moved)`), all bots together; not
    /// counted as lost sessions (0 when reading an older report).
    #[serde(default)]
    pub moves: u64,
    /// How long each bot was asked to play, seconds.
    pub duration_s: f64,
    /// Complete snapshots per second per connected bot.
    pub snapshots_per_bot_hz: f64,
    /// The lowest of those rates, over the connected bots: "every bot got >= X Hz".
    #[serde(default)]
    pub snapshots_per_bot_hz_min: f64,
    pub down_bytes_per_bot_per_s: f64,
    pub up_bytes_per_bot_per_s: f64,
    /// UDP datagrams a connected bot read and sent a second (QUIC packets; a snapshot takes
    /// one, an input with its acknowledgement one): the per-packet work on both sides (0 when
    /// reading an older report).
    #[serde(default)]
    pub packets_down_per_bot_hz: f64,
    #[serde(default)]
    pub packets_up_per_bot_hz: f64,
    pub rtt_ms_p50: f64,
    pub rtt_ms_p99: f64,
    /// From `GET /api/connect` to `Welcome`, every successful connect.
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    pub datagrams_per_bot_hz: f64,
    pub inputs_per_bot_hz: f64,
    pub snapshot_bytes_p50: f64,
    pub snapshot_bytes_p99: f64,
    pub entities_in_view_p50: f64,
    /// Delta snapshots bots could not decode for want of a baseline (0 without loss).
    pub baseline_misses: u64,
    /// Rifle shots and rockets the bots fired, `Hit` events naming a bot as the attacker,
    /// and `Killed` events naming a bot as the killer and as the victim, all bots together.
    #[serde(default)]
    pub shots_fired: u64,
    #[serde(default)]
    pub hits_confirmed: u64,
    #[serde(default)]
    pub kills: u64,
    #[serde(default)]
    pub deaths: u64,
    /// Prediction corrections after each bot's first second (0 without impairment).
    pub prediction_corrections: u64,
    /// Largest correction, world units.
    pub prediction_max_error: f64,
    /// Inputs the server found late, after each bot's first second (0 without impairment).
    pub inputs_late: u64,
    pub interp_underruns: u64,
    /// 99th percentile of the server-tick estimate's error, milliseconds.
    pub clock_offset_ms_p99: f64,
    /// Each bot's longest time between two whole snapshots (a stall, a reconnect, a move),
    /// milliseconds: the median bot's, the 99th percentile's and the worst's.
    #[serde(default)]
    pub snapshot_gap_ms_p50: f64,
    #[serde(default)]
    pub snapshot_gap_ms_p99: f64,
    #[serde(default)]
    pub snapshot_gap_ms_max: f64,
    /// Failed connects and lost sessions by kind (e.g. `rejected_server_full`), each
    /// occurrence counted (a bot that retried five times against a stopped server counts five).
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    pub fn from_outcomes(requested: u64, duration_s: f64, bots: &[BotOutcome]) -> Self {
        let connected: Vec<&BotOutcome> = bots.iter().filter(|b| b.connected()).collect();
        // The bots' own histograms grow to what they recorded; these grow with them.
        let mut rtt = new_swarm_histogram();
        let mut connect = new_rtt_histogram();
        let mut errors = BTreeMap::new();
        let (mut sizes, mut in_view) = (new_swarm_histogram(), new_swarm_histogram());
        let mut clock = new_swarm_histogram();
        let mut gaps = new_rtt_histogram();
        for b in bots {
            if b.snapshots > 1 {
                gaps.saturating_record(b.longest_snapshot_gap.as_micros().max(1) as u64);
            }
            merge(&mut clock, &b.clock_error_us);
            merge(&mut sizes, &b.snapshot_bytes);
            merge(&mut in_view, &b.in_view);
            merge(&mut rtt, &b.rtt_us);
            for s in &b.sessions {
                connect.saturating_record(s.connect.as_micros().max(1) as u64);
            }
            for (kind, n) in &b.errors {
                *errors.entry(kind.clone()).or_insert(0) += n;
            }
        }
        let per_bot = |f: &dyn Fn(&BotOutcome) -> u64| -> f64 {
            if connected.is_empty() {
                return 0.0;
            }
            let sum: f64 = connected
                .iter()
                .map(|b| f(b) as f64 / b.played.as_secs_f64().max(1e-3))
                .sum();
            sum / connected.len() as f64
        };
        let at = |h: &hdrhistogram::Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64
            }
        };
        let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| at(h, q) / 1000.0;
        Self {
            bots_requested: requested,
            bots_connected: connected.len() as u64,
            bots_failed: bots.iter().filter(|b| !b.connected()).count() as u64
                + requested.saturating_sub(bots.len() as u64),
            bots_disconnected: connected
                .iter()
                .filter(|b| b.disconnected.is_some())
                .count() as u64,
            reconnects: bots.iter().map(|b| b.reconnects()).sum(),
            resumes: bots.iter().map(|b| b.resumes()).sum(),
            moves: bots.iter().map(|b| b.moves).sum(),
            duration_s,
            snapshots_per_bot_hz: per_bot(&|b| b.snapshots),
            snapshots_per_bot_hz_min: connected
                .iter()
                .map(|b| b.snapshots as f64 / b.played.as_secs_f64().max(1e-3))
                .reduce(f64::min)
                .unwrap_or(0.0),
            down_bytes_per_bot_per_s: per_bot(&|b| b.down_bytes),
            up_bytes_per_bot_per_s: per_bot(&|b| b.up_bytes),
            packets_down_per_bot_hz: per_bot(&|b| b.packets_down),
            packets_up_per_bot_hz: per_bot(&|b| b.packets_up),
            rtt_ms_p50: ms(&rtt, 0.5),
            rtt_ms_p99: ms(&rtt, 0.99),
            connect_ms_p50: ms(&connect, 0.5),
            connect_ms_p99: ms(&connect, 0.99),
            datagrams_per_bot_hz: per_bot(&|b| b.datagrams),
            inputs_per_bot_hz: per_bot(&|b| b.inputs_sent),
            snapshot_bytes_p50: at(&sizes, 0.5),
            snapshot_bytes_p99: at(&sizes, 0.99),
            entities_in_view_p50: at(&in_view, 0.5),
            baseline_misses: bots.iter().map(|b| b.baseline_misses).sum(),
            shots_fired: bots.iter().map(|b| b.shots_fired).sum(),
            hits_confirmed: bots.iter().map(|b| b.hits_confirmed).sum(),
            kills: bots.iter().map(|b| b.kills).sum(),
            deaths: bots.iter().map(|b| b.deaths).sum(),
            prediction_corrections: bots.iter().map(|b| b.prediction_corrections).sum(),
            prediction_max_error: bots
                .iter()
                .map(|b| f64::from(b.prediction_max_error))
                .fold(0.0, f64::max),
            inputs_late: bots.iter().map(|b| b.inputs_late).sum(),
            interp_underruns: bots.iter().map(|b| b.interp_underruns).sum(),
            clock_offset_ms_p99: ms(&clock, 0.99),
            snapshot_gap_ms_p50: ms(&gaps, 0.5),
            snapshot_gap_ms_p99: ms(&gaps, 0.99),
            snapshot_gap_ms_max: ms(&gaps, 1.0),
            errors,
        }
    }

    /// A table a person reads at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rows: [(&str, String); 23] = [
            (
                "bots connected",
                format!("{} / {}", self.bots_connected, self.bots_requested),
            ),
            ("bots failed", self.bots_failed.to_string()),
            ("bots disconnected", self.bots_disconnected.to_string()),
            (
                "reconnects",
                format!(
                    "{} ({} resumed, {} moved)",
                    self.reconnects, self.resumes, self.moves
                ),
            ),
            ("duration", format!("{:.1} s", self.duration_s)),
            (
                "snapshots / bot",
                format!(
                    "{:.1} Hz (worst bot {:.1})",
                    self.snapshots_per_bot_hz, self.snapshots_per_bot_hz_min
                ),
            ),
            (
                "datagrams / bot",
                format!("{:.1} Hz", self.datagrams_per_bot_hz),
            ),
            (
                "down / bot",
                format!("{:.1} kB/s", self.down_bytes_per_bot_per_s / 1000.0),
            ),
            (
                "packets / bot",
                format!(
                    "{:.1} down, {:.1} up a second",
                    self.packets_down_per_bot_hz, self.packets_up_per_bot_hz
                ),
            ),
            (
                "up / bot",
                format!("{:.2} kB/s", self.up_bytes_per_bot_per_s / 1000.0),
            ),
            ("inputs / bot", format!("{:.1} Hz", self.inputs_per_bot_hz)),
            (
                "snapshot p50 / p99",
                format!(
                    "{:.0} / {:.0} B",
                    self.snapshot_bytes_p50, self.snapshot_bytes_p99
                ),
            ),
            (
                "entities in view p50",
                format!("{:.0}", self.entities_in_view_p50),
            ),
            ("baseline misses", self.baseline_misses.to_string()),
            (
                "combat",
                format!(
                    "{} shots, {} hits, {} kills, {} deaths",
                    self.shots_fired, self.hits_confirmed, self.kills, self.deaths
                ),
            ),
            (
                "corrections",
                format!(
                    "{} (max {:.2} u)",
                    self.prediction_corrections, self.prediction_max_error
                ),
            ),
            ("inputs late", self.inputs_late.to_string()),
            ("interp underruns", self.interp_underruns.to_string()),
            (
                "clock error p99",
                format!("{:.2} ms", self.clock_offset_ms_p99),
            ),
            (
                "longest snapshot gap",
                format!(
                    "{:.0} / {:.0} / {:.0} ms (p50 / p99 / worst bot)",
                    self.snapshot_gap_ms_p50, self.snapshot_gap_ms_p99, self.snapshot_gap_ms_max
                ),
            ),
            (
                "RTT p50 / p99",
                format!("{:.2} / {:.2} ms", self.rtt_ms_p50, self.rtt_ms_p99),
            ),
            (
                "connect p50 / p99",
                format!("{:.1} / {:.1} ms", self.connect_ms_p50, self.connect_ms_p99),
            ),
            (
                "errors",
                if self.errors.is_empty() {
                    "none".into()
                } else {
                    format!("{:?}", self.errors)
                },
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<20} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::behaviour::Behaviour;
    use crate::outcome::Session;

    #[test]
    fn the_json_has_the_documented_flat_keys() {
        let r = Report::from_outcomes(3, 1.0, &[]);
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "bots_requested",
            "bots_connected",
            "bots_failed",
            "bots_disconnected",
            "reconnects",
            "resumes",
            "moves",
            "duration_s",
            "snapshots_per_bot_hz",
            "snapshots_per_bot_hz_min",
            "down_bytes_per_bot_per_s",
            "up_bytes_per_bot_per_s",
            "packets_down_per_bot_hz",
            "packets_up_per_bot_hz",
            "rtt_ms_p50",
            "rtt_ms_p99",
            "connect_ms_p50",
            "connect_ms_p99",
            "snapshot_bytes_p50",
            "snapshot_bytes_p99",
            "entities_in_view_p50",
            "baseline_misses",
            "shots_fired",
            "hits_confirmed",
            "kills",
            "deaths",
            "prediction_corrections",
            "prediction_max_error",
            "inputs_late",
            "interp_underruns",
            "clock_offset_ms_p99",
            "snapshot_gap_ms_p50",
            "snapshot_gap_ms_p99",
            "snapshot_gap_ms_max",
        ] {
            assert!(v.get(key).is_some_and(|x| x.is_number()), "missing {key}");
        }
        assert_eq!(r.bots_failed, 3, "bots that never reported count as failed");
    }

    fn session(at_ms: u64, connect_ms: u64, played_s: u64, lost: Option<&str>) -> Session {
        Session {
            welcomed_at: Duration::from_millis(at_ms),
            connect: Duration::from_millis(connect_ms),
            due_at: Duration::from_millis(at_ms.saturating_sub(connect_ms)),
            played: Duration::from_secs(played_s),
            lost: lost.map(String::from),
            entity: 1,
            // A session after a lost one took its entity back.
            resumed: at_ms == 3_000,
        }
    }

    /// A bot with these sessions, 30 snapshots a second played, and these failures.
    fn bot(index: u32, sessions: Vec<Session>, errors: &[(&str, u64)]) -> BotOutcome {
        let mut b = BotOutcome::new(format!("bot-{index}"), index, Behaviour::Wander);
        b.played = sessions.iter().map(|s| s.played).sum();
        b.snapshots = 30 * b.played.as_secs();
        b.connect = match sessions.first() {
            Some(s) => Ok(s.connect),
            None => Err("refused".into()),
        };
        b.disconnected = sessions.iter().rev().find_map(|s| s.lost.clone());
        b.sessions = sessions;
        b.errors = errors.iter().map(|&(k, n)| (k.to_string(), n)).collect();
        b
    }

    #[test]
    fn bots_with_several_sessions_aggregate_per_bot_and_per_connect() {
        let bots = [
            // Played 10 s in one session.
            bot(0, vec![session(100, 10, 10, None)], &[]),
            // Dropped after 2 s, back after two refused attempts, then 6 s more.
            bot(
                1,
                vec![
                    session(200, 20, 2, Some("disconnected: ServerShutdown")),
                    session(3_000, 30, 6, None),
                ],
                &[("disconnected_server_shutdown", 1), ("http", 2)],
            ),
            // Failed at first, then connected: not failed.
            bot(2, vec![session(900, 40, 4, None)], &[("http", 3)]),
            // Never connected.
            bot(3, vec![], &[("http", 7)]),
        ];
        let r = Report::from_outcomes(5, 10.0, &bots);
        assert_eq!(r.bots_connected, 3);
        assert_eq!(r.bots_failed, 2, "bot 3, and one bot that never reported");
        assert_eq!(r.bots_disconnected, 1);
        assert_eq!((r.reconnects, r.resumes), (1, 1));
        // Each connected bot's rate is over the time it played, all sessions together.
        assert!(
            (r.snapshots_per_bot_hz - 30.0).abs() < 1e-9,
            "{}",
            r.snapshots_per_bot_hz
        );
        assert!((r.snapshots_per_bot_hz_min - 30.0).abs() < 1e-9);
        // One bot that saw 24 Hz sets the worst-bot rate; the mean moves by a quarter of that.
        let mut slow = bots.clone();
        slow[0].snapshots = 24 * 10;
        let r = Report::from_outcomes(5, 10.0, &slow);
        assert!((r.snapshots_per_bot_hz_min - 24.0).abs() < 1e-9);
        assert!((r.snapshots_per_bot_hz - 28.0).abs() < 1e-9);
        let r = Report::from_outcomes(5, 10.0, &bots);
        // Every successful connect counts: 10, 20, 30 and 40 ms (histograms keep 1%).
        assert!(
            (r.connect_ms_p50 - 20.0).abs() < 0.2,
            "{}",
            r.connect_ms_p50
        );
        assert!(
            (r.connect_ms_p99 - 40.0).abs() < 0.4,
            "{}",
            r.connect_ms_p99
        );
        assert_eq!(r.errors.get("http"), Some(&12));
        assert_eq!(r.errors.get("disconnected_server_shutdown"), Some(&1));
        assert!(r.table().contains("reconnects"), "{}", r.table());
        let welcomes: Vec<_> = bots[1].welcome_times().collect();
        assert_eq!(
            welcomes,
            [Duration::from_millis(200), Duration::from_millis(3_000)]
        );
    }
}
