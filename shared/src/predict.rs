//! Client-side prediction of the client's own entity, and reconciliation with the server.
//!
//! The client applies each of its inputs at once through the same rules as the server
//! ([`crate::sim::tick_body`]: step, then snap to the wire grid), and keeps the inputs the
//! server has not yet confirmed. When a snapshot says which input the server applied last and
//! where the entity then was, [`Predictor::reconcile`] drops the confirmed inputs, restarts
//! from the server's state and replays the rest.
//!
//! Invariants:
//! - The simulation state is never smoothed: after a reconcile it is exactly what the server
//!   will compute from the same inputs. Only the rendered position carries a decaying offset,
//!   so a small correction is blended out over a few frames; a large one snaps.
//! - When the server applied exactly the inputs the client predicted, the state it reports
//!   equals the prediction bit for bit, and reconciling costs no replay and no correction.

use std::collections::VecDeque;

use glam::Vec2;

use crate::obstacle_grid::ObstacleGrid;
use crate::quant::MoveDir;
use crate::sim::{self, Body, MoveParams};

/// Inputs kept for replay; older unconfirmed ones are forgotten (a client this far ahead of
/// the server's acknowledgements has lost its connection in all but name).
pub const MAX_PENDING: usize = 128;
/// Corrections larger than this (world units) snap instead of blending.
pub const SNAP_DISTANCE: f32 = 64.0;
/// Fraction of the visual offset removed per second (blends a correction out in ~0.2 s).
pub const SMOOTHING_PER_SECOND: f32 = 12.0;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Pending {
    seq: u32,
    movement: MoveDir,
    /// The predicted state right after this input was applied.
    after: Body,
}

/// A correction found by [`Predictor::reconcile`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correction {
    /// Distance between the old prediction and the new one, world units.
    pub error: f32,
    /// True when the error was too large to blend.
    pub snapped: bool,
}

#[derive(Debug, Clone)]
pub struct Predictor {
    body: Body,
    pending: VecDeque<Pending>,
    params: MoveParams,
    dt: f32,
    offset: Vec2,
    corrections: u64,
    max_error: f32,
}

impl Predictor {
    /// Starts from the entity's state as the server last reported it.
    pub fn new(body: Body, params: MoveParams, tick_rate: u16) -> Self {
        Self {
            body,
            pending: VecDeque::new(),
            params,
            dt: 1.0 / f32::from(tick_rate.max(1)),
            offset: Vec2::ZERO,
            corrections: 0,
            max_error: 0.0,
        }
    }

    /// Predicts one tick with this input (the same input the client sends as `seq`).
    pub fn apply(&mut self, seq: u32, movement: MoveDir, map: &ObstacleGrid) -> Body {
        self.body = sim::tick_body(self.body, movement, map, &self.params, self.dt);
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            seq,
            movement,
            after: self.body,
        });
        self.body
    }

    /// The server applied inputs up to `acked_seq` and its entity was then `server`.
    /// Returns the correction, if the prediction was wrong.
    pub fn reconcile(
        &mut self,
        acked_seq: u32,
        server: Body,
        map: &ObstacleGrid,
    ) -> Option<Correction> {
        let mut predicted_then = None;
        while self
            .pending
            .front()
            .is_some_and(|p| seq_le(p.seq, acked_seq))
        {
            predicted_then = self.pending.pop_front().map(|p| p.after);
        }
        if predicted_then == Some(server) {
            return None;
        }
        // The prediction diverged (a lost or late input, a collision the client could not
        // know, or no input confirmed yet): restart from the server's state and replay.
        let before = self.body.pos;
        let mut body = server;
        for p in &mut self.pending {
            body = sim::tick_body(body, p.movement, map, &self.params, self.dt);
            p.after = body;
        }
        self.body = body;
        let error = before.distance(body.pos);
        if error == 0.0 {
            return None;
        }
        let snapped = error > SNAP_DISTANCE;
        self.offset = if snapped {
            Vec2::ZERO
        } else {
            self.offset + (before - body.pos)
        };
        self.corrections += 1;
        self.max_error = self.max_error.max(error);
        Some(Correction { error, snapped })
    }

    /// Decays the visual offset over `frame_dt` seconds of rendering.
    pub fn advance_render(&mut self, frame_dt: f32) {
        let keep = (1.0 - SMOOTHING_PER_SECOND * frame_dt).max(0.0);
        self.offset *= keep;
        // Below 1/64 unit (a quarter of a wire step) nobody sees it.
        if self.offset.length_squared() < 1.0 / (64.0 * 64.0) {
            self.offset = Vec2::ZERO;
        }
    }

    /// The simulation state (never smoothed).
    pub fn body(&self) -> Body {
        self.body
    }

    /// Where to draw the entity: the state plus what is left of recent corrections.
    pub fn render_pos(&self) -> Vec2 {
        self.body.pos + self.offset
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// Largest correction so far, world units.
    pub fn max_error(&self) -> f32 {
        self.max_error
    }
}

/// `a <= b` for sequence numbers that may wrap.
fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < u32::MAX / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Map, MapParams};
    use proptest::prelude::*;

    const RATE: u16 = 30;

    fn map() -> ObstacleGrid {
        ObstacleGrid::new(&Map::generate(MapParams {
            seed: 3,
            width: 2048.0,
            height: 2048.0,
            obstacles: 16,
        }))
    }

    fn start(map: &ObstacleGrid) -> Body {
        let mut rng = crate::rng::SplitMix64::new(1);
        Body {
            pos: crate::quant::snap_pos(map.map().random_free_point(&mut rng, sim::PLAYER.radius)),
            vel: Vec2::ZERO,
        }
    }

    /// The server's side of one player: one input per tick, the last one repeated when the
    /// next has not arrived.
    fn server_run(map: &ObstacleGrid, from: Body, inputs: &[MoveDir]) -> Vec<Body> {
        let mut b = from;
        inputs
            .iter()
            .map(|&m| {
                b = sim::tick_body(b, m, map, &sim::PLAYER, 1.0 / f32::from(RATE));
                b
            })
            .collect()
    }

    fn arb_moves() -> impl Strategy<Value = Vec<MoveDir>> {
        // Fewer than MAX_PENDING in all, so every unconfirmed input is still held.
        proptest::collection::vec(
            (any::<i8>(), any::<i8>()).prop_map(|(x, y)| MoveDir { x, y }),
            1..60,
        )
    }

    proptest! {
        /// Whatever the server has confirmed so far, the client's state after reconciling
        /// equals the server's state after all the client's inputs, bit for bit.
        #[test]
        fn reconciled_prediction_equals_the_authoritative_state(moves in arb_moves(), confirmed in 0usize..120) {
            let map = map();
            let from = start(&map);
            let server = server_run(&map, from, &moves);
            let mut p = Predictor::new(from, sim::PLAYER, RATE);
            for (i, m) in moves.iter().enumerate() {
                p.apply(i as u32 + 1, *m, &map);
            }
            let k = confirmed.min(moves.len() - 1);
            prop_assert_eq!(p.reconcile(k as u32 + 1, server[k], &map), None, "no input was lost");
            prop_assert_eq!(p.body(), *server.last().unwrap());
            prop_assert_eq!(p.pending(), moves.len() - k - 1);
        }

        /// A lost input: the server repeats the previous one. The client corrects once, then
        /// agrees with the server again bit for bit.
        #[test]
        fn a_lost_input_is_corrected_to_the_server_state(first in arb_moves(), moves in arb_moves(), lost in 1usize..120) {
            let map = map();
            let from = start(&map);
            let moves: Vec<MoveDir> = first.into_iter().chain(moves).collect();
            let lost = lost.min(moves.len() - 1);
            let mut applied = moves.clone();
            applied[lost] = applied[lost - 1];
            let server = server_run(&map, from, &applied);
            let mut p = Predictor::new(from, sim::PLAYER, RATE);
            for (i, m) in moves.iter().enumerate() {
                p.apply(i as u32 + 1, *m, &map);
            }
            p.reconcile(lost as u32 + 1, server[lost], &map);
            // The remaining inputs replay from the server's state.
            let expected = server_run(&map, server[lost], &moves[lost + 1..]);
            prop_assert_eq!(p.body(), expected.last().copied().unwrap_or(server[lost]));
        }
    }

    #[test]
    fn small_corrections_blend_out_and_large_ones_snap() {
        let map = ObstacleGrid::new(&Map::open(4096.0, 4096.0));
        let from = Body {
            pos: Vec2::splat(2000.0),
            vel: Vec2::ZERO,
        };
        let mut p = Predictor::new(from, sim::PLAYER, RATE);
        for seq in 1..=10 {
            p.apply(seq, MoveDir { x: 127, y: 0 }, &map);
        }
        // The server says input 5 left us 3 units further left than predicted.
        let mut server = server_run(&map, from, &[MoveDir { x: 127, y: 0 }; 5])[4];
        server.pos.x -= 3.0;
        let c = p.reconcile(5, server, &map).expect("a correction");
        assert!(!c.snapped && (c.error - 3.0).abs() < 1e-3, "{c:?}");
        let shown = p.render_pos();
        assert!(
            (shown.x - (p.body().pos.x + 3.0)).abs() < 1e-3,
            "drawn where it was"
        );
        for _ in 0..30 {
            p.advance_render(1.0 / 60.0);
        }
        assert_eq!(
            p.render_pos(),
            p.body().pos,
            "blended out within half a second"
        );
        server.pos.x -= 500.0;
        let c = p.reconcile(6, server, &map).expect("a correction");
        assert!(c.snapped);
        assert_eq!(p.render_pos(), p.body().pos);
        assert_eq!(p.corrections(), 2);
        assert!(p.max_error() >= 500.0);
    }

    /// A player standing at (500, 500), in the middle of a 1000 x 1000 open map.
    fn at_rest_in_the_middle() -> Predictor {
        Predictor::new(
            Body {
                pos: Vec2::splat(500.0),
                vel: Vec2::ZERO,
            },
            sim::PLAYER,
            RATE,
        )
    }

    #[test]
    fn pending_inputs_are_bounded_and_sequence_numbers_may_wrap() {
        let map = ObstacleGrid::new(&Map::open(1000.0, 1000.0));
        let mut p = at_rest_in_the_middle();
        for i in 0..(MAX_PENDING as u32 + 50) {
            p.apply(i, MoveDir::default(), &map);
        }
        assert_eq!(p.pending(), MAX_PENDING, "bounded");
        let mut p = at_rest_in_the_middle();
        for i in 0..20 {
            p.apply((u32::MAX - 9).wrapping_add(i), MoveDir::default(), &map);
        }
        p.reconcile(3, p.body(), &map);
        assert_eq!(p.pending(), 6, "MAX-9 ..= 3 confirmed across the wrap");
        assert!(seq_le(u32::MAX, 3) && !seq_le(3, u32::MAX));
    }
}
