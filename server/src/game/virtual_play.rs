//! A client and the real simulation in memory, on a virtual clock: no sockets, no sleeping.
//!
//! The server side is the real [`Simulation`] (its inbox and a session's outbox), reached
//! through the same messages and bytes the server's network session handles: the `Hello`,
//! inputs and pings framed on the stream, acknowledgements as datagrams, the `Welcome`, pongs
//! and events framed back, snapshots as datagrams. The client side is the shared crate's
//! [`ClientSession`], the one client wiring; this file adds only the IO and the behaviour (a
//! random walk). Between them, a seeded path with latency, jitter and
//! datagram loss (the stream is delayed, never lost, kept in order).

use std::collections::BTreeMap;
use std::sync::Arc;

use arena_shared::client_session::{
    AckTiming, ClientSession, Controls, Event, SessionConfig, Transmit,
};
use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{ClientDatagram, ClientMsg, Pong, ResumeToken, ServerMsg, Welcome};
use arena_shared::rng::SplitMix64;
use arena_shared::sim;
use glam::Vec2;
use tokio::sync::{mpsc, oneshot};

use clap::Parser;

use super::*;
use crate::game::{JoinAck, JoinRequest};
use crate::net::outbox::Outbox;

const RATE: u16 = 30;
const TICK_MS: f64 = 1000.0 / 30.0;

#[derive(Clone, Copy)]
struct Path {
    latency_ms: f64,
    jitter_ms: f64,
    loss: f64,
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

/// Bytes one way: the stream's (reliable, in order) or one datagram.
enum Bytes {
    Stream(Vec<u8>),
    Datagram(Vec<u8>),
}

/// The server's end of the connection: what its network session does with the client's bytes.
struct ServerEnd {
    reader: FrameReader,
    /// The `Hello` was handled; the join's reply, until the `Welcome` went out.
    joined: Option<oneshot::Receiver<JoinAck>>,
    welcomed: bool,
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
    let mut end = ServerEnd {
        reader: FrameReader::new(),
        joined: None,
        welcomed: false,
    };

    let mut rng = SplitMix64::new(seed);
    let delay_us = |rng: &mut SplitMix64| {
        ((path.latency_ms + path.jitter_ms * f64::from(rng.next_f32())) * 1000.0) as u64
    };
    // Datagrams are lost on the path; the stream's bytes only wait.
    let send = |wire: &mut Wire<Bytes>, rng: &mut SplitMix64, now_us: u64, bytes: Bytes| {
        let reliable = matches!(bytes, Bytes::Stream(_));
        if reliable || f64::from(rng.next_f32()) >= path.loss {
            let at = now_us + delay_us(rng);
            wire.send(at, reliable, bytes);
        }
    };
    let ship = |wire: &mut Wire<Bytes>, rng: &mut SplitMix64, now_us: u64, t: Transmit| {
        if !t.stream.is_empty() {
            send(wire, rng, now_us, Bytes::Stream(t.stream));
        }
        for d in t.datagrams {
            send(wire, rng, now_us, Bytes::Datagram(d));
        }
    };
    let (mut up, mut down) = (Wire::<Bytes>::new(), Wire::<Bytes>::new());
    let mut client = ClientSession::new(SessionConfig {
        name: "v".into(),
        // As the bots send it: with the next input.
        ack: AckTiming::WithNextInput,
        ask_names: false,
    });
    client.connect("");
    let (mut walk_left, mut dir) = (0u32, Vec2::ZERO);
    let mut next_tick_ms = 0.0;
    let mut server_tick = 0u32;
    let mut game_events = Vec::new();
    let mut out = Outcome {
        reconciled: 0,
        corrections: 0,
        max_error: 0.0,
        late: 0,
        inputs: 0,
    };
    let end_us = (seconds * 1e6) as u64;
    let mut now_us = 0u64;
    ship(&mut up, &mut rng, now_us, client.poll_transmit());
    while now_us < end_us {
        let now_ms = now_us as f64 / 1000.0;
        // Server: handle what arrived, run due ticks, ship snapshots.
        for bytes in up.due(now_us) {
            match bytes {
                Bytes::Stream(bytes) => {
                    end.reader.push(&bytes);
                    while let Some(body) = end.reader.next_frame().unwrap() {
                        if end.joined.is_none() && !end.welcomed {
                            let hello = codec::decode_hello(&body).unwrap();
                            let (reply, joined) = oneshot::channel();
                            tx.try_send(SimCommand::Join(JoinRequest {
                                client_id: 1,
                                session: 1,
                                name: hello.name,
                                outbox: outbox.clone(),
                                resume: false,
                                reply,
                            }))
                            .unwrap();
                            end.joined = Some(joined);
                            continue;
                        }
                        match codec::decode_client(&body).unwrap() {
                            ClientMsg::Input(input) => {
                                drop(tx.try_send(SimCommand::Input {
                                    client_id: 1,
                                    input,
                                }));
                            }
                            ClientMsg::Ping(p) => {
                                let mut frame = Vec::new();
                                let pong = Pong {
                                    nonce: p.nonce,
                                    server_tick,
                                };
                                codec::encode_server(&ServerMsg::Pong(pong), &mut frame).unwrap();
                                send(&mut down, &mut rng, now_us, Bytes::Stream(frame));
                            }
                            ClientMsg::WhoIs(_) => {}
                        }
                    }
                }
                Bytes::Datagram(bytes) => {
                    let ClientDatagram::Ack(ack) = codec::decode_client_datagram(&bytes).unwrap();
                    outbox.record_ack(ack.newest);
                }
            }
        }
        while now_ms >= next_tick_ms {
            server.tick();
            server_tick += 1;
            next_tick_ms += TICK_MS;
            if let Some(ack) = end.joined.as_mut().and_then(|j| j.try_recv().ok()) {
                end.joined = None;
                end.welcomed = true;
                let welcome = ServerMsg::Welcome(Welcome {
                    client_id: 1,
                    entity: ack.entity,
                    tick_rate: RATE,
                    server_tick: ack.server_tick,
                    map: (*map).clone(),
                    resume_token: ResumeToken([1; 16]),
                    resumed: ack.resumed,
                });
                let mut frame = Vec::new();
                codec::encode_server(&welcome, &mut frame).unwrap();
                send(&mut down, &mut rng, now_us, Bytes::Stream(frame));
            }
            outbox.drain_events(&mut game_events);
            for event in game_events.drain(..) {
                let mut frame = Vec::new();
                codec::encode_server(&ServerMsg::Event(event), &mut frame).unwrap();
                send(&mut down, &mut rng, now_us, Bytes::Stream(frame));
            }
            for snapshot in outbox.drain() {
                for datagram in snapshot.iter() {
                    send(
                        &mut down,
                        &mut rng,
                        now_us,
                        Bytes::Datagram(datagram.clone()),
                    );
                }
            }
        }
        // Client: receive, then run its frame.
        for bytes in down.due(now_us) {
            match bytes {
                Bytes::Stream(bytes) => client.on_stream(&bytes, now_ms),
                Bytes::Datagram(bytes) => client.on_datagram(&bytes, now_ms),
            }
        }
        client.frame(now_ms, |_, _| {
            if walk_left == 0 {
                walk_left = 15 + rng.below(45);
                dir = Vec2::new(rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0));
            }
            walk_left -= 1;
            Controls {
                movement: dir,
                aim: dir,
                ..Controls::default()
            }
        });
        while let Some(event) = client.poll_event() {
            match event {
                Event::SnapshotApplied(applied) => {
                    if applied.newest {
                        out.late = applied.status.late;
                    }
                    if applied.reconciled {
                        out.reconciled += 1;
                    }
                    if let Some(c) = applied.correction {
                        out.corrections += 1;
                        out.max_error = out.max_error.max(c.error);
                    }
                }
                Event::Rejected { .. } | Event::Disconnected(_) | Event::Closed { .. } => {
                    panic!("the session ended: {event:?}")
                }
                _ => {}
            }
        }
        ship(&mut up, &mut rng, now_us, client.poll_transmit());
        now_us += 4_000;
    }
    out.inputs = client.inputs_sent();
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
