//! Interpolation of remote entities: they are shown at `render tick = estimated server tick −
//! delay`, blended between the two snapshots around it.
//!
//! The delay starts at two snapshot intervals and adapts to the jitter and loss of snapshot
//! arrivals (two intervals plus twice the mean deviation of arrival gaps from one interval,
//! capped). When the buffer runs
//! dry (render time past the newest snapshot) an entity is extrapolated along its velocity for
//! at most [`MAX_EXTRAPOLATE_TICKS`], then held; each dry spell counts one underrun.

use std::collections::VecDeque;
use std::sync::Arc;

use glam::Vec2;

use crate::snapshot::{Receiver, View};

/// Most snapshots kept: the render tick is at most [`MAX_DELAY_TICKS`] behind the server-tick
/// estimate, which runs a little ahead of the newest snapshot; four more cover the bracketing
/// snapshot and an estimate running early. (Each view is an entity list: at thousands of bots
/// in one process, every view kept per bot counts.) Usually far fewer are kept: each frame
/// lets go of the views its render tick has passed ([`Interpolator::frame`]).
pub const BUFFER: usize = MAX_DELAY_TICKS as usize + 4;
/// How far, in ticks, the render tick may step back and still find the views it was drawn
/// from: views older than the one bracketing `render tick - KEEP_BEHIND_TICKS` are let go.
/// The render tick moves back only when the round-trip estimate grows or the delay adapts
/// upwards (at most [`DELAY_SLEW`] a snapshot), a fraction of a tick at a time; further back
/// than this, entities are drawn where the oldest view kept has them.
pub const KEEP_BEHIND_TICKS: f64 = 2.0;
/// Longest extrapolation past the newest snapshot.
pub const MAX_EXTRAPOLATE_TICKS: f64 = 3.0;
/// Most the delay changes per snapshot, ticks.
const DELAY_SLEW: f64 = 0.02;
/// Largest adaptive delay, ticks.
pub const MAX_DELAY_TICKS: f64 = 8.0;

#[derive(Debug, Clone)]
pub struct Interpolator {
    tick_rate: u16,
    /// The receiver's views, shared: kept here without a copy.
    views: VecDeque<Arc<View>>,
    delay: f64,
    last_arrival: Option<f64>,
    gap_dev: f64,
    dry: bool,
    underruns: u64,
    /// Views let go of since the last [`Interpolator::recycle_into`], at most [`LET_GO`].
    let_go: Vec<Arc<View>>,
}

/// Views let go of that an interpolator keeps for [`Interpolator::recycle_into`]; more are
/// dropped.
const LET_GO: usize = 2;

impl Interpolator {
    pub fn new(tick_rate: u16) -> Self {
        Self {
            tick_rate,
            views: VecDeque::with_capacity(BUFFER),
            delay: 2.0,
            last_arrival: None,
            gap_dev: 0.0,
            dry: false,
            underruns: 0,
            let_go: Vec::new(),
        }
    }

    fn let_go(&mut self, view: Option<Arc<View>>) {
        if let Some(view) = view
            && self.let_go.len() < LET_GO
        {
            self.let_go.push(view);
        }
    }

    /// Hands the views let go of since the last call to `receiver` ([`Receiver::recycle`]): a
    /// view is usually the receiver's and this buffer's at once, and the last to let go of it
    /// is this buffer, so without this its allocation is freed and the next snapshot's view
    /// allocated afresh (~280 records, from malloc's slow path, at every snapshot).
    pub fn recycle_into(&mut self, receiver: &mut Receiver) {
        for view in self.let_go.drain(..) {
            receiver.recycle(view);
        }
    }

    /// A newly reconstructed view arrived at `now_ms`. Older-than-newest views are ignored.
    pub fn push(&mut self, view: &Arc<View>, now_ms: f64) {
        if self.views.back().is_some_and(|v| v.tick >= view.tick) {
            return;
        }
        let interval = 1000.0 / f64::from(self.tick_rate.max(1));
        if let Some(last) = self.last_arrival {
            // A lost snapshot widens the gap like jitter does: both call for more delay.
            let deviation = ((now_ms - last) - interval).abs();
            self.gap_dev = 0.9 * self.gap_dev + 0.1 * deviation;
            let target = (2.0 + 2.0 * self.gap_dev / interval).min(MAX_DELAY_TICKS);
            // Move slowly (2% of time per snapshot at most) so shown motion never jumps.
            self.delay += (target - self.delay).clamp(-DELAY_SLEW, DELAY_SLEW);
        }
        self.last_arrival = Some(now_ms);
        if self.views.len() == BUFFER {
            let old = self.views.pop_front();
            self.let_go(old);
        }
        self.views.push_back(Arc::clone(view));
    }

    /// Ticks behind the server estimate that entities are shown.
    pub fn delay_ticks(&self) -> f64 {
        self.delay
    }

    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// Where entity `id` is drawn at `render_tick` (fractional server tick), if known.
    pub fn position(&self, id: u32, render_tick: f64) -> Option<Vec2> {
        let rate = self.tick_rate;
        let newest = self.views.back()?;
        if render_tick >= f64::from(newest.tick) {
            let rec = newest.get(id)?;
            let ahead = (render_tick - f64::from(newest.tick)).min(MAX_EXTRAPOLATE_TICKS);
            let at = rec.pos_at(newest.tick, rate);
            return Some(at + rec.vel() * (ahead / f64::from(rate)) as f32);
        }
        // The newest view at or before the render tick, and the one after it; before the
        // oldest view kept (the render tick stepped back further than the views let go
        // allow), where that view has it.
        let Some(i) = self
            .views
            .iter()
            .rposition(|v| f64::from(v.tick) <= render_tick)
        else {
            let oldest = self.views.front()?;
            return oldest.get(id).map(|r| r.pos_at(oldest.tick, rate));
        };
        let (a, b) = (&self.views[i], &self.views[i + 1]);
        let (pa, pb) = (
            a.get(id)?.pos_at(a.tick, rate),
            b.get(id).map(|r| r.pos_at(b.tick, rate)),
        );
        let Some(pb) = pb else { return Some(pa) };
        let t = ((render_tick - f64::from(a.tick)) / f64::from(b.tick - a.tick)) as f32;
        Some(pa.lerp(pb, t))
    }

    /// Call once per rendered frame: notes whether the buffer ran dry at `render_tick`, and
    /// lets go of the views no render tick from `render_tick - KEEP_BEHIND_TICKS` on needs
    /// (those older than the one bracketing it).
    pub fn frame(&mut self, render_tick: f64) {
        let dry = self
            .views
            .back()
            .is_none_or(|v| render_tick > f64::from(v.tick));
        if dry && !self.dry {
            self.underruns += 1;
        }
        self.dry = dry;
        let keep_from = render_tick - KEEP_BEHIND_TICKS;
        while self.views.len() > 1 && f64::from(self.views[1].tick) <= keep_from {
            let old = self.views.pop_front();
            self.let_go(old);
        }
    }

    /// Views held now (at most [`BUFFER`]).
    pub fn views_held(&self) -> usize {
        self.views.len()
    }

    /// The views held, oldest first.
    pub fn views(&self) -> impl Iterator<Item = &Arc<View>> + '_ {
        self.views.iter()
    }

    /// Ids in the newest view.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.views
            .back()
            .into_iter()
            .flat_map(|v| v.entities.iter().map(|e| e.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EntityKind;
    use crate::quant::{quantize_pos, quantize_vel};
    use crate::rng::SplitMix64;
    use crate::snapshot::EntityRecord;

    const RATE: u16 = 30;
    const TICK_MS: f64 = 1000.0 / 30.0;

    /// A remote entity circling at 200 u/s, as the server would send it each tick.
    fn view(tick: u32) -> View {
        let t = f64::from(tick) / f64::from(RATE);
        let (s, c) = ((t * 0.8).sin() as f32, (t * 0.8).cos() as f32);
        let pos = Vec2::new(1000.0 + 250.0 * c, 1000.0 + 250.0 * s);
        let vel = Vec2::new(-200.0 * s, 200.0 * c);
        let fields = [
            quantize_pos(pos.x),
            quantize_pos(pos.y),
            quantize_vel(vel.x),
            quantize_vel(vel.y),
        ];
        View {
            tick,
            entities: vec![EntityRecord {
                id: 7,
                kind: EntityKind::Npc,
                fields,
                tick,
            }],
        }
    }

    #[test]
    fn the_views_let_go_of_go_back_to_the_receiver_and_no_more_are_kept_meanwhile() {
        let mut interp = Interpolator::new(RATE);
        let mut rx = Receiver::new(RATE);
        // Views only this buffer holds, let go of as the render tick passes them.
        for tick in 1..=20u32 {
            interp.push(&Arc::new(view(tick)), f64::from(tick) * TICK_MS);
            interp.frame(f64::from(tick) - 1.5);
            assert!(interp.let_go.len() <= LET_GO, "tick {tick}");
        }
        assert_eq!(interp.let_go.len(), LET_GO);
        assert_eq!(rx.held(), 0);
        interp.recycle_into(&mut rx);
        assert_eq!(rx.held(), LET_GO, "the receiver's spares");
        assert!(interp.let_go.is_empty());
        // A full buffer lets go of its oldest on a push, too.
        let mut full = Interpolator::new(RATE);
        for tick in 1..=BUFFER as u32 + 1 {
            full.push(&Arc::new(view(tick)), f64::from(tick) * TICK_MS);
        }
        assert_eq!(full.views_held(), BUFFER);
        assert_eq!(full.let_go.len(), 1);
    }

    #[test]
    fn positions_stay_continuous_through_ten_percent_snapshot_loss() {
        let mut rng = SplitMix64::new(8);
        let mut interp = Interpolator::new(RATE);
        let frame_ms = 1000.0 / 60.0;
        let max_step = (200.0 * frame_ms / 1000.0) as f32;
        let mut last: Option<Vec2> = None;
        let mut worst = 0.0f32;
        let mut next_tick = 0u32;
        // Snapshots arrive 40 ms after their tick, ±10 ms; 10% are lost.
        let mut now = 0.0;
        while now < 20_000.0 {
            while f64::from(next_tick) * TICK_MS + 50.0 <= now {
                if rng.below(10) != 0 {
                    let jitter = 10.0 * f64::from(rng.next_f32());
                    interp.push(
                        &Arc::new(view(next_tick)),
                        f64::from(next_tick) * TICK_MS + 40.0 + jitter,
                    );
                }
                next_tick += 1;
            }
            let server_now = now / TICK_MS;
            let render = server_now - interp.delay_ticks() - 40.0 / TICK_MS;
            interp.frame(render);
            if let Some(p) = interp.position(7, render) {
                if let Some(l) = last {
                    worst = worst.max(p.distance(l));
                }
                last = Some(p);
            }
            now += frame_ms;
        }
        // Quantization (1/16 unit) and lerp between quantized points add a hair.
        assert!(
            worst <= max_step * 1.05 + 0.1,
            "jump of {worst:.2} > {max_step:.2} per frame"
        );
        // Two losses in a row (1% of ticks) can still run the buffer dry for a moment.
        assert!(
            interp.underruns() < 20,
            "{} underruns in 600 snapshots",
            interp.underruns()
        );
    }

    #[test]
    fn views_the_render_tick_has_passed_are_let_go_and_draw_nothing_differently() {
        let mut rng = SplitMix64::new(9);
        // `trimmed` is told of every frame and lets go of views; `full` never is, so it keeps
        // the last BUFFER views: every position asked within KEEP_BEHIND_TICKS behind the
        // render tick must come out the same from both.
        let (mut trimmed, mut full) = (Interpolator::new(RATE), Interpolator::new(RATE));
        let frame_ms = 1000.0 / 60.0;
        let (mut next_tick, mut now, mut most_held, mut frames) = (0u32, 0.0, 0, 0);
        while now < 20_000.0 {
            while f64::from(next_tick) * TICK_MS + 50.0 <= now {
                if rng.below(10) != 0 {
                    let at =
                        f64::from(next_tick) * TICK_MS + 40.0 + 10.0 * f64::from(rng.next_f32());
                    let v = Arc::new(view(next_tick));
                    trimmed.push(&v, at);
                    full.push(&v, at);
                }
                next_tick += 1;
            }
            // The render tick wanders back and forth a little, as the round-trip estimate does.
            let wobble = 0.3 * (now / 700.0).sin();
            let render = now / TICK_MS - trimmed.delay_ticks() - 40.0 / TICK_MS + wobble;
            trimmed.frame(render);
            for back in [0.0, 0.5, 1.0, 1.5, KEEP_BEHIND_TICKS] {
                let r = render - back;
                assert_eq!(trimmed.position(7, r), full.position(7, r), "at {r}");
            }
            if now > 1_000.0 {
                most_held = most_held.max(trimmed.views_held());
                frames += 1;
            }
            now += frame_ms;
        }
        assert!(frames > 1000);
        eprintln!("most views held: {most_held}");
        // The render tick is ~3.5 ticks behind the newest view here (delay, latency and
        // jitter): that, the bracket and KEEP_BEHIND_TICKS, not BUFFER.
        assert!(
            most_held <= 8,
            "{most_held} views held, of {BUFFER} at most"
        );
    }

    #[test]
    fn a_render_tick_behind_every_view_kept_draws_the_oldest() {
        let mut interp = Interpolator::new(RATE);
        for t in 10..=16 {
            interp.push(&Arc::new(view(t)), f64::from(t) * TICK_MS);
        }
        interp.frame(15.0);
        assert_eq!(
            interp.views_held(),
            4,
            "13 brackets 15 - 2, then 14, 15 and 16"
        );
        let oldest = view(13).entities[0].pos_at(13, RATE);
        assert_eq!(interp.position(7, 11.0), Some(oldest));
        assert_eq!(interp.position(7, 13.0), Some(oldest));
    }

    #[test]
    fn a_dry_buffer_extrapolates_a_little_then_holds_and_counts_one_underrun() {
        let mut interp = Interpolator::new(RATE);
        interp.push(&Arc::new(view(10)), 0.0);
        interp.push(&Arc::new(view(11)), TICK_MS);
        let at = |t: f64, i: &Interpolator| i.position(7, t).unwrap();
        let p11 = at(11.0, &interp);
        let p12 = at(12.0, &interp);
        assert!(p12.distance(p11) > 5.0, "extrapolates along velocity");
        assert_eq!(
            at(20.0, &interp),
            at(11.0 + MAX_EXTRAPOLATE_TICKS, &interp),
            "then holds"
        );
        interp.frame(12.0);
        interp.frame(13.0);
        assert_eq!(interp.underruns(), 1);
        interp.push(&Arc::new(view(14)), 4.0 * TICK_MS);
        interp.frame(13.5);
        interp.frame(14.5);
        assert_eq!(interp.underruns(), 2);
    }
}
