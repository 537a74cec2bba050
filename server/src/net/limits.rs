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

    /// Starts full at `now` (a bucket made later than the clock's origin).
    pub fn starting_at(rate: f64, burst: f64, now: f64) -> Self {
        let mut b = Self::new(rate, burst);
        b.last = now;
        b
    }

    /// Whether the bucket would be back at its burst at `now` (nothing owed: forgetting it
    /// loses nothing).
    pub fn is_full(&self, now: f64) -> bool {
        self.rate == 0.0 || self.tokens + (now - self.last).max(0.0) * self.rate >= self.burst
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

/// Who a per-address limit counts: an IPv4 address, or an IPv6 address's /64 (one customer
/// line or data-centre host holds a whole /64, so counting single IPv6 addresses would give one
/// attacker 2^64 budgets). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    V4(u32),
    /// The first 64 bits.
    V6(u64),
}

impl AddressKey {
    pub fn of(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Whether per-address limits spare `ip` under `--exempt-loopback`: loopback addresses
/// (127.0.0.0/8, ::1, and ::ffff:127.0.0.0/104) are the host's own tools (the bot swarm, a
/// health check), not strangers.
pub fn exempt(ip: std::net::IpAddr, exempt_loopback: bool) -> bool {
    exempt_loopback && ip.to_canonical().is_loopback()
}

/// A [`TokenBucket`] per [`AddressKey`], in bounded memory: at most `max_addresses` buckets.
/// A bucket that has refilled to its burst holds nothing worth keeping (a fresh one is the
/// same), so those are forgotten first; when every tracked address is still owed tokens and
/// the table is full, a new address is refused until one refills (a flood from more addresses
/// than the table holds is then limited as a whole, which is what the global limit behind it
/// does anyway).
#[derive(Debug)]
pub struct AddressBuckets {
    rate: f64,
    burst: f64,
    max_addresses: usize,
    buckets: std::collections::HashMap<AddressKey, TokenBucket>,
}

impl AddressBuckets {
    /// `rate` tokens a second for each address, `burst` saved up; a rate of 0 means unlimited.
    pub fn new(rate: f64, burst: f64, max_addresses: usize) -> Self {
        Self {
            rate,
            burst,
            max_addresses: max_addresses.max(1),
            buckets: std::collections::HashMap::new(),
        }
    }

    /// Takes one of `key`'s tokens at `now` (seconds), or says how long until one is there
    /// (milliseconds, >= 1).
    pub fn take(&mut self, key: AddressKey, now: f64) -> Result<(), u32> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_addresses {
            self.forget_refilled(now);
            if self.buckets.len() >= self.max_addresses {
                // Told to come back when a tracked address has had time to refill.
                return Err(((self.burst / self.rate * 1000.0).ceil() as u32).max(1));
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::starting_at(rate, burst, now))
            .take(now)
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn forget_refilled(&mut self, now: f64) {
        self.buckets.retain(|_, b| !b.is_full(now));
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
    use super::{AddressBuckets, AddressKey, Backlog, Delivery, TokenBucket, exempt, judge_frame};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv6_address_counts_as_its_64_and_a_mapped_ipv4_as_itself() {
        let k = |s| AddressKey::of(ip(s));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        assert_ne!(k("10.0.0.1"), k("10.0.0.2"));
        assert!(exempt(ip("127.0.0.2"), true) && exempt(ip("::1"), true));
        assert!(exempt(ip("::ffff:127.0.0.1"), true));
        assert!(!exempt(ip("127.0.0.1"), false) && !exempt(ip("10.0.0.1"), true));
    }

    #[test]
    fn each_address_has_its_own_bucket_and_the_table_stays_bounded() {
        let mut t = AddressBuckets::new(1.0, 2.0, 2);
        let (a, b, c) = (
            AddressKey::of(ip("10.0.0.1")),
            AddressKey::of(ip("10.0.0.2")),
            AddressKey::of(ip("10.0.0.3")),
        );
        assert_eq!((t.take(a, 0.0), t.take(a, 0.0)), (Ok(()), Ok(())));
        assert_eq!(t.take(a, 0.0), Err(1000), "a's burst is spent");
        assert_eq!(t.take(b, 0.0), Ok(()), "b is not a");
        // Full of addresses still owed tokens: a third waits for one of them to refill...
        assert_eq!(t.take(c, 0.5), Err(2000));
        assert_eq!(t.len(), 2);
        // ...and once b has refilled it is forgotten and c gets a bucket of its own.
        assert_eq!(t.take(c, 1.0), Ok(()));
        assert_eq!(t.len(), 2);
        assert_eq!(t.take(a, 1.0), Ok(()), "a refilled one token in a second");
        let mut off = AddressBuckets::new(0.0, 1.0, 1);
        assert!((0..100).all(|i| off.take(AddressKey::V4(i), 0.0).is_ok()));
        assert!(off.is_empty());
    }

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
