//! Where a bot's next connection goes, sans-IO: to its server's `/api/connect`, or, after the
//! server moved it (`Disconnect(Moved)`), straight to the new server with its resume token.
//!
//! A move is not a failure: the bot waits the server's `reconnect_after_ms` and nothing more
//! (no backoff grows), then connects to `moved_to.url` pinning `moved_to.cert_sha256`, with an
//! empty connect token (a resume token the new server knows admits by itself). If that resume
//! is refused, the bot asks `/api/connect` at once, on `moved_to.http` when the move named one,
//! and comes in as a new player. From the move on, its server base is `moved_to.http` (when
//! named) for the rest of its life: the old server is not where its players are any more.

use std::time::Duration;

use arena_shared::protocol::{MovedTo, RejectReason};

use crate::connect::ClientError;

/// The next connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// `GET /api/connect` on this HTTP base, then connect with the token it gives.
    Connect { server: String },
    /// Straight to the server a move named, presenting the resume token alone.
    Resume { to: MovedTo },
}

/// A bot's way to its server, across moves.
#[derive(Debug, Clone)]
pub struct Route {
    server: String,
    moved: Option<MovedTo>,
}

impl Route {
    /// A bot whose server's HTTP side is `server` (`http://HOST:PORT`).
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            moved: None,
        }
    }

    /// The HTTP base `/api/connect` is asked on.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The next attempt: a pending move's resume first (once), else `/api/connect`.
    pub fn next_attempt(&mut self) -> Attempt {
        match self.moved.take() {
            Some(to) => Attempt::Resume { to },
            None => Attempt::Connect {
                server: self.server.clone(),
            },
        }
    }

    /// The server moved the bot: the next attempt goes to `to`, after `reconnect_after_ms`
    /// exactly (the delay to wait, which no backoff lengthens).
    pub fn moved(&mut self, to: MovedTo, reconnect_after_ms: u32) -> Duration {
        if !to.http.is_empty() {
            self.server = to.http.clone();
        }
        self.moved = Some(to);
        Duration::from_millis(u64::from(reconnect_after_ms))
    }

    /// Whether a failed [`Attempt::Resume`] is the new server not knowing the bot (then it
    /// asks `/api/connect` at once, as a new player, and counts nothing) rather than a failure
    /// to count and back off from.
    pub fn resume_refused(e: &ClientError) -> bool {
        matches!(
            e,
            ClientError::Rejected {
                reason: RejectReason::TokenMissing
                    | RejectReason::TokenMalformed
                    | RejectReason::TokenForged
                    | RejectReason::TokenWrongServer,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(http: &str) -> MovedTo {
        MovedTo {
            url: "https://b:4433/".into(),
            cert_sha256: vec!["aGFzaA==".into()],
            http: http.into(),
        }
    }

    #[test]
    fn a_move_resumes_once_at_the_new_server_then_asks_its_http_side() {
        let mut r = Route::new("http://a:8080");
        assert_eq!(
            r.next_attempt(),
            Attempt::Connect {
                server: "http://a:8080".into()
            }
        );
        let wait = r.moved(to("http://b:8080"), 750);
        assert_eq!(wait, Duration::from_millis(750), "the hint, no more");
        assert_eq!(
            r.next_attempt(),
            Attempt::Resume {
                to: to("http://b:8080")
            }
        );
        // Refused there (or lost later): the new server's HTTP side, for good.
        assert_eq!(
            r.next_attempt(),
            Attempt::Connect {
                server: "http://b:8080".into()
            }
        );
        assert_eq!(r.server(), "http://b:8080");
    }

    #[test]
    fn a_move_without_an_http_side_keeps_the_old_one() {
        let mut r = Route::new("http://a:8080");
        r.moved(to(""), 0);
        assert_eq!(r.next_attempt(), Attempt::Resume { to: to("") });
        assert_eq!(
            r.next_attempt(),
            Attempt::Connect {
                server: "http://a:8080".into()
            }
        );
    }

    #[test]
    fn only_a_refused_token_sends_a_moved_bot_to_connect_at_once() {
        let rejected = |reason| ClientError::Rejected {
            reason,
            message: String::new(),
            retry_after_ms: 0,
        };
        assert!(Route::resume_refused(&rejected(RejectReason::TokenMissing)));
        assert!(!Route::resume_refused(&rejected(RejectReason::ServerFull)));
        assert!(!Route::resume_refused(&ClientError::Connect("no".into())));
    }
}
