//! When a bot tries again after a failed connect or a lost session: exponential backoff with
//! full jitter.
//!
//! The n-th retry (n counted from 0) waits `uniform(0, min(cap, base * 2^n))`. The jitter is
//! what keeps a swarm from reconnecting in lockstep when a server restarts: thousands of bots
//! that lost their sessions in the same millisecond come back spread over the whole window
//! instead of in waves at `base`, `2 * base`, ... Sans-IO: the caller sleeps; the schedule has
//! its own seeded generator, so it is deterministic for a seed.
//!
//! The attempt count goes back to 0 only through [`Backoff::reset`], which the bot calls after
//! a session that lasted at least [`STABLE_SESSION`]. A bot that is welcomed and then dropped
//! at once keeps backing off further, so a server that accepts and immediately kicks (or
//! crashes) is not hammered at `base`; and a bot's sessions are then either at least
//! `STABLE_SESSION` long or separated by growing delays, which bounds how many one bot can have.

use std::time::Duration;

use arena_shared::rng::SplitMix64;

/// First retry window.
pub const BASE: Duration = Duration::from_millis(250);
/// Largest retry window.
pub const CAP: Duration = Duration::from_secs(30);
/// A session at least this long resets the attempt count.
pub const STABLE_SESSION: Duration = Duration::from_secs(5);

/// A retry schedule: exponential windows, full jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// [`BASE`] and [`CAP`], jitter seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with(BASE, CAP, seed)
    }

    pub fn with(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Retries drawn since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The window of the next retry: `min(cap, base * 2^attempt)`.
    pub fn window(&self) -> Duration {
        // 2^31 * base overflows nothing that matters: saturate, then cap.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next retry, uniform in `[0, window)`; counts the attempt.
    #[must_use = "the caller must wait this long before retrying"]
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window();
        self.attempt = self.attempt.saturating_add(1);
        // 53 random bits give a uniform fraction in [0, 1) with no float rounding up to 1.
        let fraction = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        window.mul_f64(fraction)
    }

    /// Back to the first window (after a session that lasted).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(seed: u64, n: usize) -> Vec<Duration> {
        let mut b = Backoff::new(seed);
        (0..n).map(|_| b.next_delay()).collect()
    }

    #[test]
    fn each_delay_is_within_its_window_and_the_window_is_capped() {
        for seed in 0..200 {
            let mut b = Backoff::new(seed);
            for n in 0..40u32 {
                let window = BASE.saturating_mul(1 << n.min(20)).min(CAP);
                assert_eq!(b.window(), window, "window of attempt {n}");
                let d = b.next_delay();
                assert!(d < window, "attempt {n}: {d:?} not below {window:?}");
                assert!(d <= CAP);
            }
            assert_eq!(b.window(), CAP, "the window stops growing at the cap");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_others_differ() {
        assert_eq!(delays(7, 20), delays(7, 20));
        assert_ne!(delays(7, 20), delays(8, 20));
        // Jittered: across seeds the first delays are all different, not one fixed value.
        let firsts: std::collections::BTreeSet<_> =
            (0..100).map(|s| Backoff::new(s).next_delay()).collect();
        assert_eq!(firsts.len(), 100);
    }

    #[test]
    fn delays_cover_the_window_rather_than_sitting_at_its_edge() {
        // Full jitter: uniform over [0, window). Over many draws at the cap the mean is near
        // half the cap and both the low and the high tenth are visited.
        let mut b = Backoff::new(3);
        for _ in 0..10 {
            let _ = b.next_delay();
        }
        assert_eq!(b.window(), CAP);
        let draws: Vec<f64> = (0..2000)
            .map(|_| b.next_delay().as_secs_f64() / CAP.as_secs_f64())
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert!(draws.iter().any(|&x| x < 0.1) && draws.iter().any(|&x| x > 0.9));
    }

    #[test]
    fn a_reset_starts_again_from_the_first_window() {
        let mut b = Backoff::new(1);
        for _ in 0..5 {
            let _ = b.next_delay();
        }
        assert_eq!(b.attempt(), 5);
        assert_eq!(b.window(), BASE * 32);
        b.reset();
        assert_eq!(b.window(), BASE);
        assert!(b.next_delay() < BASE);
    }

    #[test]
    fn a_huge_attempt_count_saturates_at_the_cap() {
        let mut b = Backoff::with(Duration::from_secs(1), Duration::from_secs(3600), 1);
        b.attempt = u32::MAX;
        assert_eq!(b.window(), Duration::from_secs(3600));
        assert!(b.next_delay() < Duration::from_secs(3600));
        assert_eq!(b.attempt(), u32::MAX);
    }

    /// The property the swarm needs: many bots dropped in the same instant by a restart do not
    /// come back together. 1,000 bots, seeded the way the swarm seeds them, retry every delay
    /// against a server that is down for 1.5 or 2 s. In lockstep all 1,000 would return in the
    /// same instant; with full jitter no 100 ms window sees more than about a tenth of them.
    #[test]
    fn bots_dropped_together_come_back_spread_out() {
        for down in [1.5, 2.0] {
            let mut back: Vec<f64> = (0..1000)
                .map(|i| {
                    let seed = crate::swarm::bot_seed(1, i) ^ crate::bot::BACKOFF_SALT;
                    let mut b = Backoff::new(seed);
                    let mut t = 0.0;
                    loop {
                        t += b.next_delay().as_secs_f64();
                        if t >= down {
                            return t;
                        }
                    }
                })
                .collect();
            back.sort_by(f64::total_cmp);
            let most = max_in_window(&back, 0.1);
            assert!(
                most <= 130,
                "down {down} s: {most} of 1000 came back within 100 ms"
            );
            assert!(
                back[999] - back[0] > 2.0,
                "spread over {:.2} s",
                back[999] - back[0]
            );
        }
    }

    /// The most values of sorted `times` within any window of `width`.
    pub(crate) fn max_in_window(times: &[f64], width: f64) -> usize {
        let mut most = 0;
        let mut from = 0;
        for (i, &t) in times.iter().enumerate() {
            while t - times[from] >= width {
                from += 1;
            }
            most = most.max(i + 1 - from);
        }
        most
    }
}
