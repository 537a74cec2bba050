//! A client and the real simulation in memory, on a virtual clock: no sockets, no sleeping.
//!
//! The server side is the real [`Simulation`] (its inbox and a session's outbox); the client
//! side is the shared crate's clock, snapshot receiver, predictor and interpolator, wired the
//! way `arena-bots` wires them. Between them, a seeded path with latency, jitter and datagram
//! loss (inputs and pings ride the reliable stream: delayed, never lost, kept in order).

use std::collections::BTreeMap;
use std::sync::Arc;

use arena_shared::clock::ClockSync;
use arena_shared::interp::Interpolator;
use arena_shared::predict::Predictor;
use arena_shared::protocol::codec::decode_datagram;
use arena_shared::protocol::{Input, ServerDatagram};
use arena_shared::quant::MoveDir;
use arena_shared::rng::SplitMix64;
use arena_shared::sim::{self, Body};
use arena_shared::snapshot::Receiver;
use glam::Vec2;
use tokio::sync::{mpsc, oneshot};

use clap::Parser;

use super::*;
use crate::net::outbox::Outbox;

const RATE: u16 = 30;
const TICK_MS: f64 = 1000.0 / 30.0;

#[derive(Clone, Copy)]
struct Path {
    latency_ms: f64,
    jitter_ms: f64,
    loss: f64,
}

enum Up {
    Input(Input),
    Ack(u32),
    Ping(f64),
}

enum Down {
    Snapshot(Vec<u8>),
    Pong(f64),
}

/// Things in flight, by arrival time (ties in send order).
struct Wire<T> {
    items: BTreeMap<(u64, u64), T>,
    seq: u64,
    stream_tail: u64,
}

impl<T> Wire<T> {
    fn new() -> Self {
        Self {
            items: BTreeMap::new(),
            seq: 0,
            stream_tail: 0,
        }
    }

    fn send(&mut self, at_us: u64, reliable: bool, item: T) {
        let at = if reliable {
            at_us.max(self.stream_tail)
        } else {
            at_us
        };
        if reliable {
            self.stream_tail = at;
        }
        self.seq += 1;
        self.items.insert((at, self.seq), item);
    }

    fn due(&mut self, now_us: u64) -> Vec<T> {
        let later = self.items.split_off(&(now_us + 1, 0));
        std::mem::replace(&mut self.items, later)
            .into_values()
            .collect()
    }
}

struct Outcome {
    /// Snapshots the predictor was reconciled against.
    reconciled: u32,
    corrections: u64,
    max_error: f32,
    late: u32,
    inputs: u32,
}

/// Plays `seconds` of virtual time: one client wandering among NPCs and obstacles.
fn play(path: Path, seconds: f64, seed: u64) -> Outcome {
    let config = Config::try_parse_from([
        "arena-server",
        // Peaceful NPCs: a death would teleport the player and void its prediction.
        "--npc-combat",
        "false",
        "--npcs",
        "20",
        "--world-size",
        "1500",
        "--obstacles",
        "12",
    ])
    .unwrap();
    let map = Arc::new(config.map());
    let (tx, rx) = mpsc::channel(4096);
    let mut server = Simulation::new(&config, map.clone(), rx, Arc::new(Stats::default()), None);
    let outbox = Arc::new(Outbox::new(64, 1200));
    let (reply, mut ack_rx) = oneshot::channel();
    tx.try_send(SimCommand::Join(JoinRequest {
        client_id: 1,
        session: 1,
        name: "v".into(),
        outbox: outbox.clone(),
        resume: false,
        reply,
    }))
    .unwrap();

    let mut rng = SplitMix64::new(seed);
    let delay_us = |rng: &mut SplitMix64| {
        ((path.latency_ms + path.jitter_ms * f64::from(rng.next_f32())) * 1000.0) as u64
    };
    let (mut up, mut down) = (Wire::<Up>::new(), Wire::<Down>::new());
    let mut clock = ClockSync::new(RATE);
    let mut receiver = Receiver::new(RATE);
    let mut interp = Interpolator::new(RATE);
    let mut predictor: Option<Predictor> = None;
    let mut entity = None;
    let (mut seq, mut walk_left, mut dir) = (0u32, 0u32, MoveDir::default());
    let mut next_tick_ms = 0.0;
    let mut next_ping_ms = 0.0;
    let mut out = Outcome {
        reconciled: 0,
        corrections: 0,
        max_error: 0.0,
        late: 0,
        inputs: 0,
    };
    let end_us = (seconds * 1e6) as u64;
    let mut now_us = 0u64;
    while now_us < end_us {
        let now_ms = now_us as f64 / 1000.0;
        // Server: deliver what arrived, run due ticks, ship snapshots.
        for item in up.due(now_us) {
            match item {
                Up::Input(input) => drop(tx.try_send(SimCommand::Input {
                    client_id: 1,
                    input,
                })),
                Up::Ack(tick) => outbox.record_ack(tick),
                Up::Ping(sent) => {
                    let at = now_us + delay_us(&mut rng);
                    down.send(at, true, Down::Pong(sent));
                }
            }
        }
        while now_ms >= next_tick_ms {
            server.tick();
            next_tick_ms += TICK_MS;
            if entity.is_none() {
                entity = ack_rx.try_recv().ok().map(|a| a.entity);
            }
            for snapshot in outbox.drain() {
                for datagram in snapshot.iter() {
                    if f64::from(rng.next_f32()) >= path.loss {
                        let at = now_us + delay_us(&mut rng);
                        down.send(at, false, Down::Snapshot(datagram.clone()));
                    }
                }
            }
        }
        // Client: receive, then run its frame.
        for item in down.due(now_us) {
            match item {
                Down::Pong(sent) => clock.on_rtt(now_ms - sent),
                Down::Snapshot(bytes) => {
                    let Ok(ServerDatagram::Delta(status, snap)) = decode_datagram(&bytes) else {
                        continue;
                    };
                    let Ok(view) = receiver.receive(&snap).cloned() else {
                        continue;
                    };
                    let newest = receiver.latest().is_some_and(|l| l.tick == view.tick);
                    if newest {
                        clock.on_server_tick(view.tick, now_ms);
                        clock.on_input_report(status.late, status.lead, now_ms);
                        interp.push(&view, now_ms);
                        out.late = status.late;
                    }
                    if let Some(ack) = receiver.ack()
                        && f64::from(rng.next_f32()) >= path.loss
                    {
                        let at = now_us + delay_us(&mut rng);
                        up.send(at, false, Up::Ack(ack.newest));
                    }
                    let Some(me) = entity.and_then(|e| view.get(e)) else {
                        continue;
                    };
                    let body = Body {
                        pos: me.pos_at(view.tick, RATE),
                        vel: me.vel(),
                    };
                    match &mut predictor {
                        None => predictor = Some(Predictor::new(body, sim::PLAYER, RATE)),
                        Some(p) if newest && status.last_seq != 0 => {
                            out.reconciled += 1;
                            if let Some(c) = p.reconcile(status.last_seq, body, &map) {
                                out.corrections += 1;
                                out.max_error = out.max_error.max(c.error);
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if now_ms >= next_ping_ms {
            up.send(now_us + delay_us(&mut rng), true, Up::Ping(now_ms));
            next_ping_ms += 250.0;
        }
        for tick in clock.advance(now_ms) {
            if walk_left == 0 {
                walk_left = 15 + rng.below(45);
                dir = MoveDir::from_vec2(Vec2::new(
                    rng.range_f32(-1.0, 1.0),
                    rng.range_f32(-1.0, 1.0),
                ));
            }
            walk_left -= 1;
            seq += 1;
            if let Some(p) = &mut predictor {
                p.apply(seq, dir, &map);
            }
            let input = Input {
                seq,
                tick,
                movement: dir,
                ..Default::default()
            };
            up.send(now_us + delay_us(&mut rng), true, Up::Input(input));
            out.inputs += 1;
        }
        if let Some(p) = &mut predictor {
            p.advance_render(0.004);
        }
        if let Some(render) = clock.render_tick(now_ms, interp.delay_ticks()) {
            interp.frame(render);
        }
        now_us += 4_000;
    }
    out
}

#[test]
fn sixty_seconds_on_a_clean_path_need_no_correction_at_all() {
    let out = play(
        Path {
            latency_ms: 1.0,
            jitter_ms: 0.0,
            loss: 0.0,
        },
        60.0,
        1,
    );
    assert!(
        out.inputs > 1700,
        "the client played: {} inputs",
        out.inputs
    );
    assert!(
        out.reconciled > 1700,
        "and reconciled every snapshot: {}",
        out.reconciled
    );
    assert_eq!(
        (out.corrections, out.late),
        (0, 0),
        "max error {}",
        out.max_error
    );
}

#[test]
fn at_five_percent_loss_100_ms_rtt_and_20_ms_jitter_corrections_follow_late_inputs_only() {
    let out = play(
        Path {
            latency_ms: 50.0,
            jitter_ms: 20.0,
            loss: 0.05,
        },
        60.0,
        2,
    );
    assert!(out.inputs > 1700);
    assert!(
        out.reconciled > 1500,
        "reconciled {} snapshots through the loss",
        out.reconciled
    );
    eprintln!(
        "5% loss, 100 ms RTT, 20 ms jitter: {} corrections, {} late inputs, max error {}",
        out.corrections, out.late, out.max_error
    );
    // Inputs ride the reliable stream: they are never lost, only late when jitter outruns the
    // clock's margin, and every correction follows such a late input.
    assert!(
        out.corrections <= u64::from(out.late),
        "{} corrections, {} late inputs",
        out.corrections,
        out.late
    );
    let step = sim::PLAYER.max_speed / f32::from(RATE);
    assert!(
        out.max_error < step,
        "max error {} over one player step ({step})",
        out.max_error
    );
}
