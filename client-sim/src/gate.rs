//! Pass/fail bounds on the report, for CI: `--fail-under KEY=VALUE` and `--fail-over
//! KEY=VALUE`.
//!
//! A gate names a numeric key of the flat JSON report ([`crate::report::Report`]) and a
//! bound. Under: the run fails when the value is below the bound; over: when it is above. A
//! key the report does not have is an error when the gate is parsed, before any bot starts,
//! so a typo cannot pass a run silently. Sans-IO: parsing and evaluation are plain functions.

use std::fmt;

use crate::report::Report;

/// Which side of the bound fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `--fail-under`: fails when the value is below the bound.
    Under,
    /// `--fail-over`: fails when the value is above the bound.
    Over,
}

impl Side {
    fn flag(self) -> &'static str {
        match self {
            Self::Under => "--fail-under",
            Self::Over => "--fail-over",
        }
    }
}

/// One bound on one report key.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub side: Side,
    pub key: String,
    pub bound: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("'{0}' is not KEY=VALUE")]
    MissingEquals(String),
    #[error("'{value}' is not a number (for {key})")]
    BadValue { key: String, value: String },
    #[error("the report has no numeric key '{key}' (keys: {known})")]
    UnknownKey { key: String, known: String },
}

/// The numeric keys of the report, sorted: what a gate may name.
pub fn numeric_keys() -> Vec<String> {
    let empty = Report::from_outcomes(0, 0.0, &[]);
    match serde_json::to_value(&empty) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

impl Gate {
    /// Parses `KEY=VALUE`, checking the key against the report's numeric keys.
    pub fn parse(side: Side, s: &str) -> Result<Self, GateError> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| GateError::MissingEquals(s.into()))?;
        let (key, value) = (key.trim(), value.trim());
        let keys = numeric_keys();
        if !keys.iter().any(|k| k == key) {
            return Err(GateError::UnknownKey {
                key: key.into(),
                known: keys.join(", "),
            });
        }
        let bound: f64 = value
            .parse()
            .ok()
            .filter(|b: &f64| b.is_finite())
            .ok_or_else(|| GateError::BadValue {
                key: key.into(),
                value: value.into(),
            })?;
        Ok(Self {
            side,
            key: key.into(),
            bound,
        })
    }

    /// For clap: a `--fail-under` value.
    pub fn under(s: &str) -> Result<Self, GateError> {
        Self::parse(Side::Under, s)
    }

    /// For clap: a `--fail-over` value.
    pub fn over(s: &str) -> Result<Self, GateError> {
        Self::parse(Side::Over, s)
    }

    /// Whether `value` crosses the bound (a missing value always does).
    fn fails(&self, value: Option<f64>) -> bool {
        match (value, self.side) {
            (None, _) => true,
            (Some(v), Side::Under) => v < self.bound,
            (Some(v), Side::Over) => v > self.bound,
        }
    }
}

/// A gate the report crossed, with the value it had.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub gate: Gate,
    /// `None` when the report had no number there (e.g. a rate that came out NaN).
    pub value: Option<f64>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.gate;
        let side = match g.side {
            Side::Under => "below",
            Side::Over => "above",
        };
        match self.value {
            Some(v) => write!(f, "{} = {v} is {side} {}", g.key, g.bound)?,
            None => write!(f, "{} has no value", g.key)?,
        }
        write!(f, " ({} {}={})", g.side.flag(), g.key, g.bound)
    }
}

/// Every gate `report` crosses, in the order given.
pub fn check(report: &Report, gates: &[Gate]) -> Vec<Violation> {
    let json = serde_json::to_value(report).unwrap_or_default();
    gates
        .iter()
        .filter_map(|g| {
            let value = json.get(&g.key).and_then(serde_json::Value::as_f64);
            g.fails(value).then(|| Violation {
                gate: g.clone(),
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_from_key_equals_value() {
        assert_eq!(
            Gate::under("snapshots_per_bot_hz=27.5").unwrap(),
            Gate {
                side: Side::Under,
                key: "snapshots_per_bot_hz".into(),
                bound: 27.5
            }
        );
        let g = Gate::over(" rtt_ms_p99 = 50 ").unwrap();
        assert_eq!(
            (g.side, g.key.as_str(), g.bound),
            (Side::Over, "rtt_ms_p99", 50.0)
        );
        assert_eq!(Gate::over("reconnects=0").unwrap().bound, 0.0);
    }

    #[test]
    fn a_bad_gate_is_refused_with_the_reason() {
        assert_eq!(
            Gate::over("rtt_ms_p99"),
            Err(GateError::MissingEquals("rtt_ms_p99".into()))
        );
        assert_eq!(
            Gate::over("rtt_ms_p99=fast"),
            Err(GateError::BadValue {
                key: "rtt_ms_p99".into(),
                value: "fast".into()
            })
        );
        assert!(matches!(
            Gate::under("rtt_ms_p99=NaN"),
            Err(GateError::BadValue { .. })
        ));
        assert!(matches!(
            Gate::under("rtt_ms_p99="),
            Err(GateError::BadValue { .. })
        ));
        match Gate::over("rtt_p99=5") {
            Err(e @ GateError::UnknownKey { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("'rtt_p99'") && text.contains("rtt_ms_p99"),
                    "{text}"
                );
            }
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        // `errors` is a map, not a number: nothing to compare.
        assert!(matches!(
            Gate::over("errors=0"),
            Err(GateError::UnknownKey { .. })
        ));
    }

    #[test]
    fn every_numeric_report_key_can_be_gated() {
        let keys = numeric_keys();
        for key in [
            "bots_failed",
            "reconnects",
            "rtt_ms_p99",
            "snapshots_per_bot_hz",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "errors"));
    }

    #[test]
    fn a_report_out_of_bounds_lists_each_crossed_gate() {
        let mut report = Report::from_outcomes(10, 5.0, &[]);
        report.snapshots_per_bot_hz = 29.0;
        report.rtt_ms_p99 = 12.0;
        report.bots_failed = 0;
        let gates = [
            Gate::under("snapshots_per_bot_hz=27").unwrap(), // 29 >= 27: passes
            Gate::under("snapshots_per_bot_hz=30").unwrap(), // 29 < 30: fails
            Gate::over("rtt_ms_p99=12").unwrap(),            // equal: passes
            Gate::over("rtt_ms_p99=10").unwrap(),            // 12 > 10: fails
            Gate::over("bots_failed=0").unwrap(),            // 0: passes
        ];
        let violations = check(&report, &gates);
        assert_eq!(
            violations
                .iter()
                .map(|v| v.gate.clone())
                .collect::<Vec<_>>(),
            vec![gates[1].clone(), gates[3].clone()]
        );
        assert_eq!(violations[0].value, Some(29.0));
        assert_eq!(
            violations[1].to_string(),
            "rtt_ms_p99 = 12 is above 10 (--fail-over rtt_ms_p99=10)"
        );
        assert!(check(&report, &gates[..1]).is_empty());
    }

    #[test]
    fn a_value_missing_from_the_report_fails_its_gate() {
        let mut report = Report::from_outcomes(1, 1.0, &[]);
        report.rtt_ms_p50 = f64::NAN; // serialises as null
        let v = check(&report, &[Gate::over("rtt_ms_p50=100").unwrap()]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].value, None);
        assert!(v[0].to_string().contains("has no value"));
    }
}
