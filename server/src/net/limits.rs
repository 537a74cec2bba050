//! Rate limits, sans-IO: time is a parameter (seconds on any monotonic clock), so the tests
//! drive them without sleeping.

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

#[cfg(test)]
mod tests {
    use super::TokenBucket;

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
