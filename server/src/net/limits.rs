//! Rate limits and the reliable stream's backlog rule, sans-IO: time and sizes are
//! parameters (seconds on any monotonic clock, bytes), so the tests drive them without
//! sleeping or sockets.

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    /// Starts full. A rate of 0 means unlimited.
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: 0.0,
        }
    }

    /// Takes one token at `now`, or says how long until one is there (milliseconds, >= 1).
    pub fn take(&mut self, now: f64) -> Result<(), u32> {
        if self.rate == 0.0 {
            return Ok(());
        }
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * self.rate).min(self.burst);
            self.last = now;
        }
        // A hair of tolerance: a third of a token added three times is a whole one.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            Err(((wait * 1000.0).ceil() as u32).max(1))
        }
    }
}

/// Whether a frame for the reliable stream must reach the client or may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Welcome, events, names, the reason for a disconnect: the client needs every one.
    Required,
    /// A pong: the answer to a clock probe, which the client can do without.
    BestEffort,
}

/// What becomes of one frame offered to the reliable stream's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    Queue,
    /// Left out (a best-effort frame over its share), the session unharmed.
    Drop,
    /// Over `--max-send-backlog`: the client is not reading its stream.
    Overflow,
}

/// Judges a frame of `len` bytes against a backlog of `queued` bytes the stream has not yet
/// taken and the cap `max` (`--max-send-backlog`).
///
/// Required frames may fill the backlog up to the cap; one that would go past it means the
/// client has let that much pile up (QUIC's flow-control window is full), which ends the
/// session. Best-effort frames (pongs) may only use the first half: a pong queued behind other
/// bytes times the queue rather than the path, and the client's clock estimate tolerates a
/// missing one (it keeps a bounded set of pings in flight and forgets the unanswered). So a
/// burst of pings costs the server at most half the backlog and never ends a session by
/// itself, and the other half stays free for what the client must get. (Shedding pongs under
/// backlog rather than limiting the ping rate: no second knob, every ping answered while the
/// stream keeps up, and a burst bounded by the bytes it would cost, which is what matters.)
pub fn judge_frame(queued: usize, len: usize, max: usize, delivery: Delivery) -> Backlog {
    let limit = match delivery {
        Delivery::Required => max,
        Delivery::BestEffort => max / 2,
    };
    if queued + len <= limit {
        Backlog::Queue
    } else if delivery == Delivery::BestEffort {
        Backlog::Drop
    } else {
        Backlog::Overflow
    }
}

#[cfg(test)]
mod tests {
    use super::{Backlog, Delivery, TokenBucket, judge_frame};

    #[test]
    fn pongs_use_half_the_backlog_and_are_dropped_beyond_it_while_required_frames_overflow_the_cap()
    {
        use Delivery::{BestEffort, Required};
        let max = 4096;
        assert_eq!(judge_frame(0, 9, max, BestEffort), Backlog::Queue);
        assert_eq!(judge_frame(2039, 9, max, BestEffort), Backlog::Queue);
        assert_eq!(judge_frame(2040, 9, max, BestEffort), Backlog::Drop);
        // What a pong may not take, a required frame may...
        assert_eq!(judge_frame(2040, 9, max, Required), Backlog::Queue);
        assert_eq!(judge_frame(4000, 96, max, Required), Backlog::Queue);
        // ...up to the cap, and past it the client is too slow.
        assert_eq!(judge_frame(4000, 97, max, Required), Backlog::Overflow);
        // A backlog full of anything drops pongs, never overflows with them.
        assert_eq!(judge_frame(1_000_000, 9, max, BestEffort), Backlog::Drop);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_and_says_when_to_come_back() {
        let mut b = TokenBucket::new(10.0, 5.0);
        for _ in 0..5 {
            assert_eq!(b.take(0.0), Ok(()));
        }
        assert_eq!(b.take(0.0), Err(100), "one token every 100 ms");
        assert_eq!(b.take(0.05), Err(50));
        assert_eq!(b.take(0.1), Ok(()));
        // A long quiet spell refills only up to the burst.
        let allowed = (0..20).filter(|_| b.take(100.0).is_ok()).count();
        assert_eq!(allowed, 5);
        // Over a second at a steady 30 a second, 10 a second get through.
        let mut b = TokenBucket::new(10.0, 1.0);
        let passed = (0..30)
            .filter(|i| b.take(200.0 + f64::from(*i) / 30.0).is_ok())
            .count();
        assert!((9..=11).contains(&passed), "{passed}");
        let mut unlimited = TokenBucket::new(0.0, 1.0);
        assert!((0..1000).all(|_| unlimited.take(0.0).is_ok()));
    }
}
