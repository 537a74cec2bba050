//! The old server's side of a handoff, sans-IO (times are milliseconds passed in):
//!
//! ```text
//! Serving --request--> Freezing --handed_out(t)--> Frozen { at: t } --confirm--> Confirmed
//!    ^                    |                            |
//!    +---- freeze_failed -+                            | no confirmation by t + --handoff-timeout
//!    +------------------------ poll: Expired ----------+
//! ```
//!
//! One handoff at a time: a second request while one is under way (or after the world was
//! handed over) is refused with the reason. `Confirmed` is final: the caller moves every
//! player to the new server and drains. `Expired` is the safety net: the new server died or
//! never answered, so the caller unfreezes the simulation and carries on; nothing was lost,
//! because no player was sent away before a confirmation.

use std::time::Duration;

/// Where the handoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No handoff: the world runs and admits.
    Serving,
    /// A request was accepted; the simulation is being frozen and captured.
    Freezing,
    /// The state went out at `at_ms`; the simulation waits for the new server's word.
    Frozen { at_ms: u64 },
    /// The new server runs the world: move everyone there and drain.
    Confirmed,
}

/// Why a step of the handoff was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a handoff is already under way")]
    InProgress,
    #[error("this server has handed its world over already")]
    HandedOver,
    #[error("no handed-out state is waiting for a confirmation")]
    NothingToConfirm,
    #[error("the confirmation came after the handoff timed out; this server carries on")]
    TooLate,
}

/// What the caller must do after [`Handover::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Expired {
    /// No confirmation in time: unfreeze the simulation and serve again.
    Unfreeze,
}

#[derive(Debug)]
pub struct Handover {
    stage: Stage,
    timeout_ms: u64,
    /// Handoffs that expired or failed to freeze: the server carried on each time.
    failed: u64,
}

impl Handover {
    /// `timeout`: `--handoff-timeout`, how long a handed-out state waits for its confirmation.
    pub fn new(timeout: Duration) -> Self {
        Self {
            stage: Stage::Serving,
            timeout_ms: timeout.as_millis() as u64,
            failed: 0,
        }
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether new players may be admitted: only while no handoff is under way.
    pub fn admitting(&self) -> bool {
        self.stage == Stage::Serving
    }

    /// Handoffs that did not complete (the server carried on).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// An authenticated request to hand over: freeze next.
    pub fn request(&mut self) -> Result<(), Refused> {
        match self.stage {
            Stage::Serving => {
                self.stage = Stage::Freezing;
                Ok(())
            }
            Stage::Freezing | Stage::Frozen { .. } => Err(Refused::InProgress),
            Stage::Confirmed => Err(Refused::HandedOver),
        }
    }

    /// The frozen state was handed out at `now_ms`: the confirmation is due by
    /// [`Handover::deadline`].
    pub fn handed_out(&mut self, now_ms: u64) {
        if self.stage == Stage::Freezing {
            self.stage = Stage::Frozen { at_ms: now_ms };
        }
    }

    /// The simulation could not be frozen or the state not sent: serve again (counted).
    pub fn freeze_failed(&mut self) {
        if matches!(self.stage, Stage::Freezing | Stage::Frozen { .. }) {
            self.stage = Stage::Serving;
            self.failed += 1;
        }
    }

    /// When a frozen handoff expires unless confirmed.
    pub fn deadline(&self) -> Option<u64> {
        match self.stage {
            Stage::Frozen { at_ms } => Some(at_ms.saturating_add(self.timeout_ms)),
            _ => None,
        }
    }

    /// The new server confirms it runs the world. A confirmation at or after the deadline is
    /// refused (and expires the handoff): the caller may have unfrozen already, and the
    /// world has moved on since the state was taken.
    pub fn confirm(&mut self, now_ms: u64) -> Result<(), Refused> {
        match self.stage {
            Stage::Frozen { .. } => {
                if self.poll(now_ms).is_some() {
                    return Err(Refused::TooLate);
                }
                self.stage = Stage::Confirmed;
                Ok(())
            }
            Stage::Confirmed => Err(Refused::HandedOver),
            Stage::Serving | Stage::Freezing => Err(Refused::NothingToConfirm),
        }
    }

    /// Expires a frozen handoff whose confirmation is overdue at `now_ms`: the caller unfreezes.
    pub fn poll(&mut self, now_ms: u64) -> Option<Expired> {
        let deadline = self.deadline()?;
        if now_ms < deadline {
            return None;
        }
        self.stage = Stage::Serving;
        self.failed += 1;
        Some(Expired::Unfreeze)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_seconds() -> Handover {
        Handover::new(Duration::from_secs(2))
    }

    #[test]
    fn a_confirmed_handoff_goes_serving_freezing_frozen_confirmed_and_stays_there() {
        let mut h = two_seconds();
        assert!(h.admitting());
        assert_eq!(h.request(), Ok(()));
        assert_eq!(h.stage(), Stage::Freezing);
        assert!(!h.admitting(), "no one is admitted once a handoff starts");
        h.handed_out(1_000);
        assert_eq!(h.stage(), Stage::Frozen { at_ms: 1_000 });
        assert_eq!(h.deadline(), Some(3_000));
        assert_eq!(h.poll(2_999), None);
        assert_eq!(h.confirm(2_999), Ok(()));
        assert_eq!(h.stage(), Stage::Confirmed);
        assert_eq!(h.poll(u64::MAX), None, "a confirmed handoff never expires");
        assert_eq!(h.request(), Err(Refused::HandedOver));
        assert_eq!(h.confirm(3_000), Err(Refused::HandedOver));
        assert_eq!(h.failed(), 0);
    }

    #[test]
    fn a_second_request_is_refused_while_one_is_under_way() {
        let mut h = two_seconds();
        h.request().unwrap();
        assert_eq!(h.request(), Err(Refused::InProgress));
        h.handed_out(0);
        assert_eq!(h.request(), Err(Refused::InProgress));
        assert_eq!(h.stage(), Stage::Frozen { at_ms: 0 });
    }

    #[test]
    fn without_a_confirmation_in_time_the_server_unfreezes_and_counts_it() {
        let mut h = two_seconds();
        h.request().unwrap();
        h.handed_out(1_000);
        assert_eq!(h.poll(3_000), Some(Expired::Unfreeze));
        assert_eq!((h.stage(), h.failed()), (Stage::Serving, 1));
        assert!(h.admitting());
        assert_eq!(h.confirm(3_001), Err(Refused::NothingToConfirm));
        // And a later handoff can still happen.
        assert_eq!(h.request(), Ok(()));
    }

    #[test]
    fn a_confirmation_at_the_deadline_is_too_late_and_expires_the_handoff() {
        let mut h = two_seconds();
        h.request().unwrap();
        h.handed_out(1_000);
        assert_eq!(h.confirm(3_000), Err(Refused::TooLate));
        assert_eq!((h.stage(), h.failed()), (Stage::Serving, 1));
    }

    #[test]
    fn a_failed_freeze_serves_again_and_confirming_before_a_state_went_out_is_refused() {
        let mut h = two_seconds();
        assert_eq!(h.confirm(0), Err(Refused::NothingToConfirm));
        h.request().unwrap();
        assert_eq!(h.confirm(0), Err(Refused::NothingToConfirm));
        assert_eq!(h.deadline(), None);
        assert_eq!(
            h.poll(u64::MAX),
            None,
            "nothing handed out, nothing to expire"
        );
        h.freeze_failed();
        assert_eq!((h.stage(), h.failed()), (Stage::Serving, 1));
        h.freeze_failed();
        assert_eq!(h.failed(), 1, "serving already: nothing to count");
        h.handed_out(5);
        assert_eq!(h.stage(), Stage::Serving, "no request, nothing handed out");
    }
}
