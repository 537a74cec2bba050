//! Freezing the running simulation for a live handoff: between two ticks the simulation
//! thread captures its whole state, hands it out, and waits to hear whether to carry on (the
//! handoff failed or was abandoned) or to stop (the new server runs the world now).
//!
//! The wait is on the simulation thread itself, so nothing can change the world between the
//! capture and the decision; it is bounded by the request's timeout, after which the thread
//! carries on by itself (a caller that vanished must not freeze the world forever). Time spent
//! frozen is not lag: the tick loop resumes from the time it was released, without running the
//! missed ticks back to back and without counting an overrun.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use arena_shared::replay::SimState;
use tokio::sync::{mpsc, oneshot};

/// The simulation's state between two ticks, and the handle that lets it go on.
#[derive(Debug)]
pub struct Frozen {
    /// The last tick run; a simulation restored from `state` runs `tick + 1` next.
    pub tick: u32,
    pub state: SimState,
    pub release: Release,
}

/// What the frozen simulation does next. Dropping it carries on at once.
#[derive(Debug)]
#[must_use = "a frozen simulation waits for its release (or its timeout)"]
pub struct Release(SyncSender<Thaw>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thaw {
    CarryOn,
    Stop,
}

impl Release {
    /// Unfreeze: the simulation ticks on from now.
    pub fn carry_on(self) {
        let _ = self.0.try_send(Thaw::CarryOn);
    }

    /// The world runs elsewhere now: the tick loop ends cleanly (its caller drains).
    pub fn stop(self) {
        let _ = self.0.try_send(Thaw::Stop);
    }
}

/// Why no state came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    #[error("a freeze is already pending")]
    Busy,
    #[error("the simulation is not running")]
    Stopped,
}

pub(super) struct FreezeRequest {
    reply: oneshot::Sender<Frozen>,
    timeout: Duration,
}

/// Asks a running simulation to freeze ([`super::Simulation::freezer`]).
#[derive(Debug, Clone)]
pub struct Freezer {
    pub(super) tx: mpsc::Sender<FreezeRequest>,
}

impl std::fmt::Debug for FreezeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreezeRequest")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Freezer {
    pub(super) fn new() -> (Self, mpsc::Receiver<FreezeRequest>) {
        // One freeze at a time: the handoff's state machine refuses a second request anyway.
        let (tx, rx) = mpsc::channel(1);
        (Self { tx }, rx)
    }

    /// Freezes the simulation at the end of the tick it is on: the state at that boundary,
    /// and the [`Release`]. Unreleased, the simulation carries on by itself after `timeout`.
    pub async fn freeze(&self, timeout: Duration) -> Result<Frozen, FreezeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(FreezeRequest { reply, timeout })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => FreezeError::Busy,
                mpsc::error::TrySendError::Closed(_) => FreezeError::Stopped,
            })?;
        rx.await.map_err(|_| FreezeError::Stopped)
    }
}

/// On the simulation thread: hands out the state and waits for the release. Returns whether
/// the tick loop must stop.
pub(super) fn hold(request: FreezeRequest, tick: u32, state: SimState) -> bool {
    let (tx, rx): (SyncSender<Thaw>, Receiver<Thaw>) = sync_channel(1);
    let frozen = Frozen {
        tick,
        state,
        release: Release(tx),
    };
    if request.reply.send(frozen).is_err() {
        // Whoever asked is gone (and the release with it): nothing to wait for.
        return false;
    }
    match rx.recv_timeout(request.timeout) {
        Ok(Thaw::Stop) => true,
        Ok(Thaw::CarryOn) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
            false
        }
    }
}
