//! A seeded network impairment layer for bots and tests: loss, latency, jitter, duplication
//! and reordering, applied to what a bot sends and receives.
//!
//! Datagrams can be lost, duplicated, delayed and reordered. Reliable stream bytes are only
//! delayed (QUIC retransmits them): their order is kept, so a late chunk holds back the ones
//! behind it, as head-of-line blocking does on a real lossy path. Sans-IO: times are
//! passed in; [`DelayLine`] releases items when they are due.

use std::collections::BTreeMap;
use std::time::Duration;

use arena_shared::rng::SplitMix64;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImpairConfig {
    /// Probability a datagram is lost, each way.
    pub loss: f64,
    /// One-way delay added to everything.
    pub latency: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back one more latency (arrives after later ones).
    pub reorder: f64,
}

impl ImpairConfig {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone)]
pub struct Impairment {
    config: ImpairConfig,
    rng: SplitMix64,
    /// Release time of the last stream chunk each way (order is kept).
    stream_tail: [Option<Instant>; 2],
}

/// Which way a stream chunk travels.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Up = 0,
    Down = 1,
}

impl Impairment {
    pub fn new(config: ImpairConfig, seed: u64) -> Self {
        Self {
            config,
            rng: SplitMix64::new(seed),
            stream_tail: [None, None],
        }
    }

    fn delay(&mut self) -> Duration {
        self.config.latency + self.config.jitter.mul_f64(f64::from(self.rng.next_f32()))
    }

    /// When each copy of a datagram sent at `now` arrives: none if lost, two if duplicated.
    pub fn datagram(&mut self, now: Instant) -> Vec<Instant> {
        if f64::from(self.rng.next_f32()) < self.config.loss {
            return Vec::new();
        }
        let mut at = now + self.delay();
        if f64::from(self.rng.next_f32()) < self.config.reorder {
            at += self.config.latency.max(Duration::from_millis(1));
        }
        let mut copies = vec![at];
        if f64::from(self.rng.next_f32()) < self.config.duplicate {
            copies.push(now + self.delay());
        }
        copies
    }

    /// When stream bytes sent at `now` arrive: delayed, never before earlier bytes.
    pub fn stream(&mut self, now: Instant, dir: Direction) -> Instant {
        let at = now + self.delay();
        let tail = &mut self.stream_tail[dir as usize];
        let at = tail.map_or(at, |t| at.max(t));
        *tail = Some(at);
        at
    }
}

/// Items released at their due time, earliest first (ties in insertion order).
#[derive(Debug)]
pub struct DelayLine<T> {
    items: BTreeMap<(Instant, u64), T>,
    seq: u64,
}

impl<T> Default for DelayLine<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> DelayLine<T> {
    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.items.insert((at, self.seq), item);
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.items.keys().next().map(|k| k.0)
    }

    /// Removes and returns the earliest item if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? > now {
            return None;
        }
        self.items.pop_first().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_lost_duplicated_and_delayed_at_the_configured_rates() {
        let config = ImpairConfig {
            loss: 0.1,
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            duplicate: 0.05,
            reorder: 0.0,
        };
        let mut imp = Impairment::new(config, 1);
        let now = Instant::now();
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..10_000 {
            let copies = imp.datagram(now);
            lost += usize::from(copies.is_empty());
            dup += usize::from(copies.len() == 2);
            for at in copies {
                let d = at - now;
                assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(70));
            }
        }
        assert!((800..1200).contains(&lost), "{lost} lost of 10,000");
        assert!((300..700).contains(&dup), "{dup} duplicated");
    }

    #[test]
    fn stream_bytes_keep_their_order_and_the_delay_line_releases_in_time_order() {
        let config = ImpairConfig {
            latency: Duration::from_millis(30),
            jitter: Duration::from_millis(40),
            ..Default::default()
        };
        let mut imp = Impairment::new(config, 2);
        let start = Instant::now();
        let mut line = DelayLine::default();
        let mut last = start;
        for i in 0..200u32 {
            let at = imp.stream(start + Duration::from_millis(u64::from(i)), Direction::Up);
            assert!(at >= last, "chunk {i} would overtake");
            last = at;
            line.push(at, i);
        }
        let mut got = Vec::new();
        while let Some(i) = line.pop_due(last) {
            got.push(i);
        }
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert!(line.is_empty() && line.pop_due(last).is_none());
    }
}
