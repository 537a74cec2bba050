//! The swarm's report: flat JSON for scripts, a table for people.
//!
//! Keys are stable: scripts and CI gate on them. Per-bot rates are averaged over the bots
//! that connected, each over the time it actually played.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bot::{BotOutcome, new_count_histogram, new_rtt_histogram};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub bots_requested: u64,
    pub bots_connected: u64,
    /// Never got a `Welcome`.
    pub bots_failed: u64,
    /// Got a `Welcome`, then lost the session before the end of the run.
    pub bots_disconnected: u64,
    /// How long each bot was asked to play, seconds.
    pub duration_s: f64,
    /// Complete snapshots per second per connected bot.
    pub snapshots_per_bot_hz: f64,
    pub down_bytes_per_bot_per_s: f64,
    pub up_bytes_per_bot_per_s: f64,
    pub rtt_ms_p50: f64,
    pub rtt_ms_p99: f64,
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    pub datagrams_per_bot_hz: f64,
    pub inputs_per_bot_hz: f64,
    pub snapshot_bytes_p50: f64,
    pub snapshot_bytes_p99: f64,
    pub entities_in_view_p50: f64,
    /// Delta snapshots bots could not decode for want of a baseline (0 without loss).
    pub baseline_misses: u64,
    /// Prediction corrections after each bot's first second (0 without impairment).
    pub prediction_corrections: u64,
    /// Largest correction, world units.
    pub prediction_max_error: f64,
    /// Inputs the server found late, after each bot's first second (0 without impairment).
    pub inputs_late: u64,
    pub interp_underruns: u64,
    /// 99th percentile of the server-tick estimate's error, milliseconds.
    pub clock_offset_ms_p99: f64,
    /// Failures and disconnects by kind (e.g. `rejected_server_full`).
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    pub fn from_outcomes(requested: u64, duration_s: f64, bots: &[BotOutcome]) -> Self {
        let connected: Vec<&BotOutcome> = bots.iter().filter(|b| b.connected()).collect();
        let mut rtt = new_rtt_histogram();
        let mut connect = new_rtt_histogram();
        let mut errors = BTreeMap::new();
        let (mut sizes, mut in_view) = (new_count_histogram(), new_count_histogram());
        let mut clock = new_rtt_histogram();
        for b in bots {
            let _ = clock.add(&b.clock_error_us);
            let _ = sizes.add(&b.snapshot_bytes);
            let _ = in_view.add(&b.in_view);
            // Histograms of equal bounds always add.
            let _ = rtt.add(&b.rtt_us);
            if let Ok(d) = b.connect {
                connect.saturating_record(d.as_micros().max(1) as u64);
            }
            if let Some(kind) = &b.error_kind {
                *errors.entry(kind.clone()).or_insert(0) += 1;
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
            duration_s,
            snapshots_per_bot_hz: per_bot(&|b| b.snapshots),
            down_bytes_per_bot_per_s: per_bot(&|b| b.down_bytes),
            up_bytes_per_bot_per_s: per_bot(&|b| b.up_bytes),
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
            prediction_corrections: bots.iter().map(|b| b.prediction_corrections).sum(),
            prediction_max_error: bots
                .iter()
                .map(|b| f64::from(b.prediction_max_error))
                .fold(0.0, f64::max),
            inputs_late: bots.iter().map(|b| b.inputs_late).sum(),
            interp_underruns: bots.iter().map(|b| b.interp_underruns).sum(),
            clock_offset_ms_p99: ms(&clock, 0.99),
            errors,
        }
    }

    /// A table a person reads at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rows: [(&str, String); 19] = [
            (
                "bots connected",
                format!("{} / {}", self.bots_connected, self.bots_requested),
            ),
            ("bots failed", self.bots_failed.to_string()),
            ("bots disconnected", self.bots_disconnected.to_string()),
            ("duration", format!("{:.1} s", self.duration_s)),
            (
                "snapshots / bot",
                format!("{:.1} Hz", self.snapshots_per_bot_hz),
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
    use super::*;

    #[test]
    fn the_json_has_the_documented_flat_keys() {
        let r = Report::from_outcomes(3, 1.0, &[]);
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "bots_requested",
            "bots_connected",
            "bots_failed",
            "bots_disconnected",
            "duration_s",
            "snapshots_per_bot_hz",
            "down_bytes_per_bot_per_s",
            "up_bytes_per_bot_per_s",
            "rtt_ms_p50",
            "rtt_ms_p99",
            "connect_ms_p50",
            "connect_ms_p99",
            "snapshot_bytes_p50",
            "snapshot_bytes_p99",
            "entities_in_view_p50",
            "baseline_misses",
            "prediction_corrections",
            "prediction_max_error",
            "inputs_late",
            "interp_underruns",
            "clock_offset_ms_p99",
        ] {
            assert!(v.get(key).is_some_and(|x| x.is_number()), "missing {key}");
        }
        assert_eq!(r.bots_failed, 3, "bots that never reported count as failed");
    }
}
