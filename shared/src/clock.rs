//! Clock synchronisation: the client's estimate of the server's tick, the round-trip time,
//! and the client's own simulation tick, kept just far enough ahead of the server that its
//! input for tick T arrives before the server simulates T.
//!
//! Inputs (all with `now` in milliseconds of the client's monotonic clock, passed in):
//! - [`ClockSync::on_rtt`]: a round trip measured with ping/pong;
//! - [`ClockSync::on_server_tick`]: a snapshot of server tick T arrived now;
//! - [`ClockSync::on_input_report`]: the server's count of this client's late inputs.
//!
//! The server-tick estimate takes, over the last second of snapshots, the sample that arrived
//! with the least delay (a max filter: a late packet looks older, never newer), then follows it
//! smoothly. The client tick targets `estimate + one-way delay + margin`, where the margin is
//! [`BASE_MARGIN_TICKS`] plus twice the RTT variation (the jitter) plus an adaptive extra that grows when the
//! server reports late inputs and shrinks slowly while none are. That lead is then raised, by
//! less than a tick, so that each input arrives a little before the server's snapshot leaves
//! (see "Inputs timed to the snapshots" below). Once synced, a client tick that
//! is ahead is slowed by at most 10% (never jumps unless [`SNAP_TICKS`] ahead); one that falls
//! more than [`CATCH_UP_TICKS`] behind catches up at once, producing every tick it skipped,
//! because its inputs are then arriving late and each late input costs a correction.
//!
//! Inputs timed to the snapshots. A QUIC receiver acknowledges a packet that needs it within
//! its `max_ack_delay` ([`ACK_DELAY_MS`], RFC 9000's default, which quinn keeps and does not
//! let a peer change), on the next packet it sends if one leaves by then, else in a packet of
//! its own. Each side sends one packet a tick: the server a snapshot, the client an input
//! (with its snapshot acknowledgement). Both acknowledgements ride those packets only if an
//! input arrives less than 25 ms before the snapshot leaves (else the server acknowledges it
//! alone) and more than a tick less 25 ms before it (8.3 ms at 30 Hz; else the snapshot
//! reaches the client more than 25 ms before its next input, and the client acknowledges it
//! alone). With the client tick a whole number of ticks ahead, as on loopback, each input
//! left just before a snapshot arrived, and the client sent an acknowledgement of its own
//! 25 ms later, 8 ms before its next input: a bot sent 57 packets a second at 100 bots for
//! 30 inputs (35 with the inputs timed; BENCHMARKS.md, "inputs timed to the snapshots"), and
//! the inputs arrived while the server built its snapshots. The estimate puts server tick `k`
//! where snapshot `k` leaves (its earliest arrival less a one-way delay), so an input for
//! tick `T` arrives `x` ticks of the server's before snapshot `T - x` leaves, where `x` is the
//! lead less the one-way delay: its part of a tick is how long before the next snapshot the
//! input arrives. [`ClockSync::lead_ticks`] raises `x` to the next point where that part is
//! [`INPUT_EARLY_MS`]'s first figure when it is outside that window: at 30 Hz by 0.24 of a
//! tick on average over every lead (8 ms; at most 0.7, 23 ms), never lowered. At tick rates
//! whose tick is no longer than [`ACK_DELAY_MS`] each side's next packet always leaves in
//! time, and the lead is left as it is.

use std::collections::VecDeque;

/// An error larger than this (ticks) is corrected by a jump, not by speeding up or slowing down.
pub const SNAP_TICKS: f64 = 8.0;
/// Behind by more than this (ticks), the client's inputs are already arriving late: it catches
/// up at once instead of by speeding up.
pub const CATCH_UP_TICKS: f64 = 2.0;
/// Ticks of margin beyond one-way delay and jitter: one for the client's frame loop (an input
/// leaves up to a frame after its tick comes due) and scheduling hiccups, one for safety.
pub const BASE_MARGIN_TICKS: f64 = 2.0;
/// How long a QUIC receiver may hold the acknowledgement of a packet that needs one
/// (RFC 9000's default `max_ack_delay`; quinn's, fixed): see the module's comment.
pub const ACK_DELAY_MS: f64 = 25.0;
/// How long before the server's first snapshot of a tick leaves an input is timed to arrive,
/// in milliseconds (see the module's comment): more than a tick less [`ACK_DELAY_MS`] (8.3
/// ms at 30 Hz), with room for an input sent a few ms late; less than [`ACK_DELAY_MS`], with
/// room for the snapshots that leave a few ms after the first (they are built in turn). With
/// 200 bots on loopback the packets fell from 92 a second a bot (both ways) to 73 with this
/// window, and to 83 with 5-15 ms (BENCHMARKS.md, "inputs timed to the snapshots").
pub const INPUT_EARLY_MS: (f64, f64) = (10.0, 20.0);
/// How long the max filter remembers a server-tick sample.
pub const WINDOW_MS: f64 = 1000.0;
/// Most the client clock runs fast or slow to converge.
pub const MAX_SKEW: f64 = 0.10;

#[derive(Debug, Clone)]
pub struct ClockSync {
    tick_ms: f64,
    srtt: Option<f64>,
    rttvar: f64,
    samples: VecDeque<(f64, f64)>,
    offset: Option<f64>,
    client_tick: Option<f64>,
    last_now: f64,
    extra_margin: f64,
    last_late: Option<u32>,
    calm_since: f64,
}

impl ClockSync {
    pub fn new(tick_rate: u16) -> Self {
        Self {
            tick_ms: 1000.0 / f64::from(tick_rate.max(1)),
            srtt: None,
            rttvar: 0.0,
            samples: VecDeque::new(),
            offset: None,
            client_tick: None,
            last_now: 0.0,
            extra_margin: 0.0,
            last_late: None,
            calm_since: 0.0,
        }
    }

    /// A round trip of `rtt_ms` (RFC 6298 smoothing).
    pub fn on_rtt(&mut self, rtt_ms: f64) {
        let rtt = rtt_ms.max(0.0);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - rtt).abs();
                self.srtt = Some(0.875 * s + 0.125 * rtt);
            }
        }
    }

    /// A snapshot of server tick `tick` arrived at `now_ms`.
    pub fn on_server_tick(&mut self, tick: u32, now_ms: f64) {
        let one_way = self.srtt.unwrap_or(0.0) / 2.0;
        let sample = f64::from(tick) + one_way / self.tick_ms - now_ms / self.tick_ms;
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t < now_ms - WINDOW_MS)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now_ms, sample));
        let best = self
            .samples
            .iter()
            .map(|&(_, s)| s)
            .fold(f64::MIN, f64::max);
        self.offset = Some(match self.offset {
            Some(o) if (best - o).abs() <= SNAP_TICKS => o + 0.2 * (best - o),
            _ => best,
        });
    }

    /// The server's cumulative count of this client's inputs that arrived too late, and how
    /// many ticks early the newest one arrived. More late inputs widen the margin at once; a
    /// calm second with more than two ticks of slack narrows it a little.
    pub fn on_input_report(&mut self, late_total: u32, lead: i8, now_ms: f64) {
        let before = self.last_late.replace(late_total);
        match before {
            Some(b) if late_total > b => {
                self.extra_margin = (self.extra_margin + 0.5).min(10.0);
                self.calm_since = now_ms;
            }
            _ if now_ms - self.calm_since > 1000.0 && lead > 2 => {
                self.extra_margin = (self.extra_margin - 0.1).max(0.0);
                self.calm_since = now_ms;
            }
            _ => {}
        }
    }

    pub fn rtt_ms(&self) -> Option<f64> {
        self.srtt
    }

    /// The server tick being simulated at `now_ms` (fractional), once a snapshot has arrived.
    pub fn server_tick(&self, now_ms: f64) -> Option<f64> {
        self.offset.map(|o| now_ms / self.tick_ms + o)
    }

    /// The tick to draw remote entities at: the newest snapshot the client can have (the
    /// server tick one one-way delay ago) minus the interpolation delay.
    pub fn render_tick(&self, now_ms: f64, interp_delay_ticks: f64) -> Option<f64> {
        let one_way = self.srtt.unwrap_or(0.0) / 2.0 / self.tick_ms;
        self.server_tick(now_ms)
            .map(|s| s - one_way - interp_delay_ticks)
    }

    /// Ticks the client runs ahead of the server: one-way delay, base margin, jitter, extra,
    /// the part past the one-way delay raised so that inputs arrive [`INPUT_EARLY_MS`] before
    /// a snapshot leaves (the module's comment, "Inputs timed to the snapshots").
    pub fn lead_ticks(&self) -> f64 {
        let one_way = self.srtt.unwrap_or(0.0) / 2.0 / self.tick_ms;
        one_way + self.timed(self.arrival_lead_ticks())
    }

    /// How many ticks before the server simulates its tick an input arrives, before the
    /// timing: base margin, jitter and extra.
    fn arrival_lead_ticks(&self) -> f64 {
        2.0 * self.rttvar / self.tick_ms + BASE_MARGIN_TICKS + self.extra_margin
    }

    /// `early` (ticks an input arrives ahead of its tick), raised to the next point whose part
    /// of a tick is [`INPUT_EARLY_MS`]'s first figure when its part is outside that window.
    fn timed(&self, early: f64) -> f64 {
        if self.tick_ms <= ACK_DELAY_MS {
            return early;
        }
        let (lo, hi) = (
            INPUT_EARLY_MS.0 / self.tick_ms,
            INPUT_EARLY_MS.1 / self.tick_ms,
        );
        let part = early - early.floor();
        if (lo..=hi).contains(&part) {
            early
        } else {
            (early - lo).ceil() + lo
        }
    }

    /// Where the client's simulation tick should be at `now_ms`.
    pub fn target_tick(&self, now_ms: f64) -> Option<f64> {
        self.server_tick(now_ms).map(|s| s + self.lead_ticks())
    }

    /// Advances the client clock to `now_ms`; returns the client ticks that became due, in
    /// order (usually zero or one per call; none before the first snapshot).
    pub fn advance(&mut self, now_ms: f64) -> std::ops::Range<u32> {
        let empty = 0..0;
        // Not before a snapshot and a round trip: without the RTT every input would be late.
        let Some(target) = self.target_tick(now_ms).filter(|_| self.srtt.is_some()) else {
            self.last_now = now_ms;
            return empty;
        };
        let elapsed = ((now_ms - self.last_now) / self.tick_ms).max(0.0);
        self.last_now = now_ms;
        let (old, new) = match self.client_tick {
            // Ahead, or behind by less than CATCH_UP_TICKS: converge by running a little slow or
            // fast.
            Some(c) if let Some(speed) = converging_speed(target - (c + elapsed)) => {
                (c, c + elapsed * speed)
            }
            // Further behind: inputs are arriving late, a large error, so catch up at once (the
            // caller sends an input for every tick in the range, so the server sees no gap).
            // Far ahead: jump back.
            Some(c) => (c, target),
            None => (target.floor() - 1.0, target),
        };
        self.client_tick = Some(new);
        let (from, to) = (old.floor() as i64 + 1, new.floor() as i64);
        if to < from || to < 1 {
            return empty;
        }
        (from.max(1) as u32)..(to as u32 + 1)
    }

    /// When [`Self::advance`] makes the next client tick due, if nothing moves the estimate
    /// before then: what a loop that wakes only to send inputs sleeps until. Between calls to
    /// `advance` the error it converges on stays the same (the target and the client tick
    /// both move with time), so the speed, and the instant the tick crosses the next whole
    /// number, are known. A snapshot or a round trip in between moves it a little; a loop that
    /// wakes then, or a moment early and finds nothing due, asks again.
    ///
    /// `None` until the clock runs (a snapshot and a round trip); the time of the last
    /// `advance` when the next one jumps (further off than converging allows).
    pub fn next_due_ms(&self) -> Option<f64> {
        let c = self.client_tick?;
        let target = self
            .target_tick(self.last_now)
            .filter(|_| self.srtt.is_some())?;
        let Some(speed) = converging_speed(target - c) else {
            return Some(self.last_now);
        };
        Some(self.last_now + (c.floor() + 1.0 - c) / speed * self.tick_ms)
    }

    /// The client's current simulation tick.
    pub fn client_tick(&self) -> Option<u32> {
        self.client_tick.map(|c| c.max(0.0).floor() as u32)
    }
}

/// How fast the client tick runs to close `error` ticks to its target: a little slow when
/// ahead, a little fast when behind; `None` when the error is too large to converge on (a jump
/// instead: [`ClockSync::advance`]).
fn converging_speed(error: f64) -> Option<f64> {
    (-SNAP_TICKS..=CATCH_UP_TICKS)
        .contains(&error)
        .then(|| 1.0 + (error * 0.05).clamp(-MAX_SKEW, MAX_SKEW))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    const RATE: u16 = 30;
    const TICK_MS: f64 = 1000.0 / 30.0;

    /// A virtual server ticking at 30 Hz from time 0 and a client whose clock reads
    /// `skew_ms` ahead; snapshots and pings cross a path of `latency` ms ± `jitter` ms.
    /// Returns (error of the server-tick estimate after 2 s, fraction of inputs that arrive
    /// after the server simulated their tick, measured after 2 s).
    fn run(latency: f64, jitter: f64, skew_ms: f64, seconds: f64) -> (f64, f64) {
        let mut rng = SplitMix64::new(3);
        let delay = |rng: &mut SplitMix64| latency + jitter * f64::from(rng.next_f32());
        let mut clock = ClockSync::new(RATE);
        // Events: (arrival time at the client in true ms, kind).
        let mut arrivals: Vec<(f64, u32)> = Vec::new();
        let end = seconds * 1000.0;
        let mut tick = 0u32;
        while f64::from(tick) * TICK_MS < end {
            arrivals.push((f64::from(tick) * TICK_MS + delay(&mut rng), tick));
            tick += 1;
        }
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut late, mut sent) = (0u32, 0u32);
        let mut est_error = 0.0;
        let mut next_ping = 0.0;
        let mut a = 0;
        // The client wakes every 4 ms (a frame loop).
        let mut now = 0.0;
        while now < end {
            if now >= next_ping {
                let rtt = delay(&mut rng) + delay(&mut rng);
                clock.on_rtt(rtt);
                next_ping = now + 250.0;
            }
            while a < arrivals.len() && arrivals[a].0 <= now {
                clock.on_server_tick(arrivals[a].1, now + skew_ms);
                a += 1;
            }
            for t in clock.advance(now + skew_ms) {
                // The input for client tick t leaves now; the server simulates t at t * TICK_MS.
                if now >= 2000.0 {
                    sent += 1;
                    if now + delay(&mut rng) > f64::from(t) * TICK_MS {
                        late += 1;
                    }
                }
            }
            if (now - 2000.0).abs() < 2.0 {
                est_error = (clock.server_tick(now + skew_ms).unwrap() - now / TICK_MS).abs();
            }
            now += 4.0;
        }
        (est_error, f64::from(late) / f64::from(sent.max(1)))
    }

    #[test]
    fn converges_from_a_wrong_start_within_two_seconds_and_keeps_inputs_on_time() {
        // The first snapshot arrives 500 ms late (a stalled path), then the path is 50 ± 20 ms.
        let mut clock = ClockSync::new(RATE);
        clock.on_server_tick(0, 500.0);
        let wrong = clock.server_tick(500.0).unwrap() - 500.0 / TICK_MS;
        assert!(wrong.abs() > 10.0, "starts {wrong:.1} ticks off");
        let (error, late) = run(50.0, 20.0, 0.0, 10.0);
        assert!(error < 1.0, "estimate {error:.2} ticks off after 2 s");
        assert!(
            late < 0.01,
            "{:.1}% of inputs late at 20 ms jitter",
            late * 100.0
        );
    }

    #[test]
    fn a_client_clock_far_off_the_server_still_converges() {
        // The client's own clock reads 500 ms ahead: only differences matter.
        let (error, late) = run(50.0, 20.0, 500.0, 10.0);
        assert!(
            error < 1.0 && late < 0.01,
            "error {error:.2} ticks, {late:.3} late"
        );
    }

    #[test]
    fn the_client_tick_moves_smoothly_once_synced() {
        let mut clock = ClockSync::new(RATE);
        clock.on_rtt(100.0);
        let mut last = None;
        let mut now = 0.0;
        for tick in 0..300u32 {
            now = f64::from(tick) * TICK_MS + 50.0;
            clock.on_server_tick(tick, now);
            let due: Vec<u32> = clock.advance(now).collect();
            if let (Some(l), Some(&first)) = (last, due.first()) {
                assert_eq!(first, l + 1, "no tick skipped or repeated");
            }
            if let Some(&l) = due.last() {
                last = Some(l);
            }
            assert!(due.len() <= 2, "at most a small catch-up per frame");
        }
        let lead = f64::from(clock.client_tick().unwrap()) - clock.server_tick(now).unwrap();
        assert!(
            (1.0..8.0).contains(&lead),
            "client runs {lead:.1} ticks ahead"
        );
    }

    /// A loop that wakes for each snapshot and, otherwise, only when [`ClockSync::next_due_ms`]
    /// says (asked again after each frame, not after each snapshot): it sends every tick once,
    /// in order, on time, and about one frame an input (a loop on a fixed timer at twice the
    /// tick rate, as the bots had, makes two).
    #[test]
    fn a_loop_woken_when_the_next_input_is_due_sends_each_on_time_and_rarely_wakes_for_nothing() {
        let mut rng = SplitMix64::new(5);
        let (latency, jitter) = (40.0, 10.0);
        let delay = |rng: &mut SplitMix64| latency + jitter * f64::from(rng.next_f32());
        let mut clock = ClockSync::new(RATE);
        let mut arrivals: Vec<(f64, u32)> = (0..600u32)
            .map(|tick| (f64::from(tick) * TICK_MS + delay(&mut rng), tick))
            .collect();
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut frames, mut empty, mut late, mut sent) = (0u32, 0u32, 0u32, 0u32);
        let mut past = 0.0;
        let mut last: Option<u32> = None;
        let mut wake = 0.0;
        let mut next_ping = 0.0;
        let mut a = 0;
        while a < arrivals.len() {
            // The next event: a snapshot's arrival or the frame's wake, whichever is first.
            let now = arrivals[a].0.min(wake);
            if now >= next_ping {
                clock.on_rtt(delay(&mut rng) + delay(&mut rng));
                next_ping = now + 250.0;
            }
            if arrivals[a].0 <= now {
                clock.on_server_tick(arrivals[a].1, now);
                a += 1;
                if clock.next_due_ms().is_some() {
                    continue;
                }
            }
            // A frame (before the clock runs, a frame each 4 ms).
            let due: Vec<u32> = clock.advance(now).collect();
            if let (Some(l), Some(&first)) = (last, due.first()) {
                assert_eq!(first, l + 1, "no tick skipped or repeated");
            }
            last = due.last().copied().or(last);
            if now >= 2000.0 {
                frames += 1;
                empty += u32::from(due.is_empty());
                for &t in &due {
                    sent += 1;
                    late += u32::from(now + delay(&mut rng) > f64::from(t) * TICK_MS);
                }
                // How far past its input's tick the client tick is: woken when it came due,
                // a sliver.
                let c = clock.client_tick.unwrap();
                past += if due.is_empty() { 0.0 } else { c - c.floor() };
            }
            wake = clock.next_due_ms().map_or(now + 4.0, |d| d.max(now) + 0.01);
        }
        assert!(sent > 500, "{sent} inputs sent after the first 2 s");
        assert_eq!(late, 0, "inputs late");
        assert!(
            f64::from(frames) < f64::from(sent) * 1.1,
            "{frames} frames for {sent} inputs"
        );
        let past = past / f64::from(frames - empty);
        assert!(
            past < 0.02,
            "frames {past:.3} ticks after the input came due, on average"
        );
        // A snapshot or a round trip that moved the estimate after the wake was set leaves a
        // frame with nothing due now and then (~6% here).
        assert!(
            empty * 10 < frames,
            "{empty} of {frames} frames sent nothing"
        );
    }

    #[test]
    fn late_inputs_widen_the_margin_and_calm_narrows_it() {
        let mut clock = ClockSync::new(RATE);
        clock.on_rtt(20.0);
        let one_way = 10.0 / TICK_MS;
        let (base, timed) = (clock.arrival_lead_ticks(), clock.lead_ticks());
        clock.on_input_report(0, 5, 0.0);
        clock.on_input_report(3, 5, 100.0);
        assert!(clock.arrival_lead_ticks() > base);
        // Timed, the lead never falls short of the widened margin (it may already cover it:
        // here 2.6 ticks timed to 3.15, and 3.1 widened to 3.15 as well).
        assert!(clock.lead_ticks() >= timed);
        assert!(clock.lead_ticks() >= one_way + clock.arrival_lead_ticks());
        for s in 2..30 {
            clock.on_input_report(3, 5, f64::from(s) * 1000.0);
        }
        assert!(
            (clock.arrival_lead_ticks() - base).abs() < 1e-9
                && (clock.lead_ticks() - timed).abs() < 1e-9,
            "back to the base margin"
        );
    }

    /// A server whose snapshots leave 2-10 ms into each tick, over paths from loopback to 150
    /// ms with jitter: every input the client's clock makes due arrives before its tick, and
    /// 10-20 ms before the server's next snapshot leaves, so that the snapshot carries the
    /// server's acknowledgement of it and the next input the client's of the snapshot (each
    /// within QUIC's 25 ms); the lead is never below the untimed one,
    /// nor more than 0.7 of a tick above it. At 60 Hz the lead is the untimed one.
    #[test]
    fn inputs_arrive_shortly_before_a_snapshot_leaves() {
        let (lo, hi) = INPUT_EARLY_MS;
        for (latency, jitter) in [
            (0.1, 0.0),
            (0.5, 0.2),
            (12.0, 3.0),
            (40.0, 10.0),
            (150.0, 5.0),
        ] {
            let mut rng = SplitMix64::new(11);
            let mut clock = ClockSync::new(RATE);
            // The snapshot of tick k leaves at k * TICK_MS + 2..10 ms and arrives a path later.
            let leaves = |k: u32, rng: &mut SplitMix64| {
                f64::from(k) * TICK_MS + 2.0 + 8.0 * f64::from(rng.next_f32())
            };
            let mut arrivals: Vec<(f64, u32)> = (0..400u32)
                .map(|k| (leaves(k, &mut rng) + latency, k))
                .collect();
            arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut a = 0;
            let (mut now, mut checked) = (0.0, 0);
            let mut next_ping = 0.0;
            while now < 400.0 * TICK_MS {
                if now >= next_ping {
                    clock.on_rtt(2.0 * latency + jitter * f64::from(rng.next_f32()));
                    next_ping = now + 250.0;
                }
                while a < arrivals.len() && arrivals[a].0 <= now {
                    clock.on_server_tick(arrivals[a].1, now);
                    a += 1;
                }
                for t in clock.advance(now) {
                    // Once converged (a long path's first estimate is off by its jitter, and
                    // the client tick moves at most 10% off pace to correct it).
                    if now < 5000.0 {
                        continue;
                    }
                    // Arrives a path later; the first snapshot to leave after it, at the
                    // earliest 2 ms into its tick.
                    let arrives = now + latency;
                    let tick_start = (arrives / TICK_MS).floor() * TICK_MS;
                    let next = if arrives <= tick_start + 2.0 {
                        tick_start + 2.0
                    } else {
                        tick_start + TICK_MS + 2.0
                    };
                    let before = next - arrives;
                    assert!(
                        arrives < f64::from(t) * TICK_MS,
                        "{latency} ms: the input for tick {t} arrives late"
                    );
                    // Within the window, give or take the frame loop's 0.1 ms steps and
                    // the estimate's error (the path's jitter).
                    let slack = 1.0 + jitter;
                    assert!(
                        before >= lo - slack && before <= hi + slack,
                        "{latency} ms: the input for tick {t} arrives {before:.1} ms before a snapshot leaves"
                    );
                    checked += 1;
                }
                now += 0.1;
            }
            assert!(checked > 200, "{checked} inputs checked");
            let untimed = clock.srtt.unwrap() / 2.0 / TICK_MS + clock.arrival_lead_ticks();
            let added = clock.lead_ticks() - untimed;
            assert!(
                (0.0..=1.0 - (hi - lo) / TICK_MS + 1e-9).contains(&added),
                "{latency} ms: the timing added {added:.2} ticks"
            );
        }
        let mut fast = ClockSync::new(60);
        fast.on_rtt(33.0);
        assert_eq!(
            fast.lead_ticks(),
            fast.srtt.unwrap() / 2.0 / (1000.0 / 60.0) + fast.arrival_lead_ticks()
        );
    }
}
