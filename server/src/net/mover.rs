//! Moving every live session to another server at once (a live handoff's last step).
//!
//! A [`Mover`] is a cheap handle, taken from the server before it runs
//! ([`Server::mover`](crate::server::Server::mover)). [`Mover::move_everyone`] publishes one
//! [`Move`]; every live session sees it, says `Disconnect(Moved)` with the destination and a
//! `reconnect_after_ms` spread over the move's window as the drain spreads its hints, and ends
//! as lost, so its seat lingers for `--resume-grace`. From then on admission takes back only
//! those lingering seats (by their resume tokens); anyone else is refused as at shutdown. A move
//! is not undone: the server's players are elsewhere.

use std::sync::Arc;
use std::time::Duration;

use arena_shared::protocol::MovedTo;
use tokio::sync::watch;

/// Where every session goes, and the window their reconnects are spread over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub to: MovedTo,
    pub spread: Duration,
}

/// A handle that moves every live session of one server; clones share it.
#[derive(Clone)]
pub struct Mover {
    moves: Arc<watch::Sender<Option<Arc<Move>>>>,
}

impl Mover {
    pub(crate) fn new() -> Self {
        Self {
            moves: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Tells every live session to reconnect to `to` after a delay drawn uniformly over
    /// `spread` (each its own), and closes admission to everyone but the seats it leaves
    /// lingering. Sessions act on it within a moment, each on its own task; a session whose
    /// admission was decided before the move and which had not started playing yet is moved
    /// as soon as it starts. A session admitted after it (a lingering seat taken back) is not
    /// moved by it; a second call moves every session live then, and replaces the destination
    /// for those that have not gone yet.
    pub fn move_everyone(&self, to: MovedTo, spread: Duration) {
        self.moves.send_replace(Some(Arc::new(Move { to, spread })));
    }

    /// Whether [`move_everyone`](Self::move_everyone) was called.
    pub fn moved(&self) -> bool {
        self.moves.borrow().is_some()
    }

    /// What each session watches.
    pub(crate) fn watch(&self) -> watch::Receiver<Option<Arc<Move>>> {
        self.moves.subscribe()
    }
}
