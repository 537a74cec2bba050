//! A client and the real simulation in memory, on a virtual clock: no sockets, no sleeping.
//!
//! The server side is the real [`Simulation`] (its inbox and a session's outbox), reached
//! through the same messages and bytes the server's network session handles: the `Hello`,
//! inputs and pings framed on the stream, acknowledgements as datagrams, the `Welcome`, pongs
//! and events framed back, snapshots (with the answers to snapshot pings) as datagrams. The
//! client side is the shared crate's [`ClientSession`], the one client wiring; this file adds
//! only the IO and the behaviour (a random walk). Between them, a seeded path with latency,
//! jitter and datagram loss (the stream is delayed, never lost, kept in order).
//!
//! It can also record what reached the client and what the client did ([`record`], a
//! [`Transcript`]), so that other drivers of the same session (the bots' player, the browser
//! module's C ABI) can be fed the same bytes at the same times and shown to answer the same,
//! byte for byte (`tests/e2e/three_drivers.rs`). That is why it is public, hidden from the
//! docs rather than behind a cargo feature: the root package's tests reach it with no flag to
//! remember, and it is only test code (nothing in the server calls it, so nothing of it is
//! linked into the binary).

use std::collections::BTreeMap;
use std::sync::Arc;

use arena_shared::client_session::{ClientSession, Controls, Event, SessionConfig, Transmit};
use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{ClientDatagram, ClientMsg, Pong, ResumeToken, ServerMsg, Welcome};
use arena_shared::rng::SplitMix64;
use glam::Vec2;
use tokio::sync::{mpsc, oneshot};

use clap::Parser;

use super::*;
use crate::game::names::{NameDirectory, Names};
use crate::game::{JoinAck, JoinRequest};
use crate::outbox::Outbox;

const RATE: u16 = 30;
const TICK_MS: f64 = 1000.0 / 30.0;
/// The harness's time step: the server handles what arrived and the client what reached it.
const STEP_US: u64 = 4_000;

/// The path between client and server, the same each way.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    /// Latency, and up to this much more at random, one way.
    pub latency_ms: f64,
    pub jitter_ms: f64,
    /// Datagrams lost, each way.
    pub loss: f64,
}

/// What the player holds for one frame (each input of the frame is built from it): a seeded
/// function of the frame's number, so that every driver of a recorded run computes the same.
/// Aim is not among them: every driver aims along +x, the browser's aim when the page gives
/// no point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameControls {
    /// Each axis in `[-1, 1]`.
    pub movement: Vec2,
    pub fire: bool,
    pub alt_fire: bool,
}

impl FrameControls {
    /// The session's controls for these.
    pub fn session(self) -> Controls {
        Controls {
            movement: self.movement,
            aim: Vec2::X,
            fire: self.fire,
            alt_fire: self.alt_fire,
        }
    }
}

/// The controls of frame `frame` of a recorded run: a new direction every 30 frames (about
/// half a second), the rifle held in bursts, now and then a rocket.
pub fn scripted_controls(seed: u64, frame: u32) -> FrameControls {
    let mut rng = SplitMix64::new(seed ^ u64::from(frame / 30).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    FrameControls {
        movement: rng.square(-1.0, 1.0),
        fire: frame % 90 < 20,
        alt_fire: frame % 200 == 7,
    }
}

/// Where the client had itself after a frame, as `f32` bits (x, y).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// The predictor's state.
    pub predicted: Option<[u32; 2]>,
    /// Where the browser draws the own player: the prediction with what is left of recent
    /// corrections, else where the server last had it; none while dead.
    pub drawn: Option<[u32; 2]>,
}

impl Positions {
    pub fn of(session: &ClientSession) -> Self {
        let bits = |v: Vec2| [v.x.to_bits(), v.y.to_bits()];
        let drawn = (!session.dead())
            .then(|| {
                session
                    .predictor()
                    .map(|p| p.render_pos())
                    .or(session.server_body().map(|b| b.pos))
            })
            .flatten();
        Self {
            predicted: session.predictor().map(|p| bits(p.body().pos)),
            drawn: drawn.map(bits),
        }
    }
}

/// One thing that happened at the client, in order.
#[derive(Debug)]
pub enum Step {
    /// Bytes of the server's stream reached it at `at_ms`.
    Stream { at_ms: f64, bytes: Vec<u8> },
    /// A datagram reached it at `at_ms`.
    Datagram { at_ms: f64, bytes: Vec<u8> },
    /// It ran a frame at `at_ms` with `controls`, then sent `sent` and had itself at `me`.
    Frame {
        at_ms: f64,
        controls: FrameControls,
        sent: Transmit,
        me: Positions,
    },
}

/// A recorded run, from the client's side: its `Hello`, then every arrival and frame.
#[derive(Debug)]
pub struct Transcript {
    pub hello: Vec<u8>,
    pub steps: Vec<Step>,
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

/// What the client's session reported over a run.
#[derive(Debug)]
pub struct Outcome {
    /// Snapshots the predictor was reconciled against.
    pub reconciled: u32,
    pub corrections: u64,
    pub max_error: f32,
    pub late: u32,
    pub inputs: u32,
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

/// Records `seconds` of virtual time on `path` (seeded by `seed`): one client set up with
/// `config`, running a frame every `frame_ms` (a multiple of 4) with [`scripted_controls`],
/// among NPCs and obstacles and one other player standing still (a name to ask for: its
/// `WhoIs` is answered as the server's session answers it, from the names directory). Its
/// bytes must leave at frames (acks at the next frame or with the next input, not on
/// receipt), where the transcript has them.
pub fn record(
    path: Path,
    seconds: f64,
    seed: u64,
    config: SessionConfig,
    frame_ms: u32,
) -> (Transcript, Outcome) {
    let mut transcript = Transcript {
        hello: Vec::new(),
        steps: Vec::new(),
    };
    let frame_every = (u64::from(frame_ms) * 1000 / STEP_US).max(1);
    let out = run(
        path,
        seconds,
        seed,
        config,
        frame_every,
        |_, frame| scripted_controls(seed, frame),
        Some(&mut transcript),
        true,
    );
    (transcript, out)
}

/// Plays `seconds` of virtual time: one client set up with `session` among NPCs and
/// obstacles (and another player standing still if `other`), running a frame every
/// `frame_every` steps with `controls(rng, frame)` for each input of the frame (`rng`: the
/// run's, shared with the path), recording into `transcript` if given.
#[allow(clippy::too_many_arguments)]
fn run(
    path: Path,
    seconds: f64,
    seed: u64,
    session: SessionConfig,
    frame_every: u64,
    mut controls: impl FnMut(&mut SplitMix64, u32) -> FrameControls,
    mut transcript: Option<&mut Transcript>,
    other: bool,
) -> Outcome {
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
    let names = Arc::new(Names::default());
    server
        .world_mut()
        .insert_resource(NameDirectory(names.clone()));
    // The outbox times a snapshot ping's wait on the harness's clock.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let outbox = Arc::new(Outbox::new(64, 1200).with_clock(clock.clone()));
    // The other player: joined before the client, never sends anything; its outbox only
    // fills (bounded, oldest dropped) and its join's reply is kept so the join stands.
    let other_outbox = Arc::new(Outbox::new(4, 1200));
    let mut _other_joined = None;
    if other {
        let (reply, joined) = oneshot::channel();
        tx.try_send(SimCommand::Join(JoinRequest {
            client_id: 2,
            session: 2,
            name: "other".into(),
            outbox: other_outbox.clone(),
            resume: false,
            reply,
        }))
        .unwrap();
        _other_joined = Some(joined);
    }
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
    let mut client = ClientSession::new(session);
    client.connect("");
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
    let (mut step, mut frame) = (0u64, 0u32);
    let hello = client.poll_transmit();
    if let Some(t) = &mut transcript {
        t.hello.clone_from(&hello.stream);
    }
    ship(&mut up, &mut rng, now_us, hello);
    while now_us < end_us {
        clock.store(now_us, std::sync::atomic::Ordering::Relaxed);
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
                            ClientMsg::SnapshotPing(p) => outbox.ping(p.nonce),
                            ClientMsg::WhoIs(who) => {
                                let mut frame = Vec::new();
                                let answer = ServerMsg::Names(names.lookup(&who.entities));
                                codec::encode_server(&answer, &mut frame).unwrap();
                                send(&mut down, &mut rng, now_us, Bytes::Stream(frame));
                            }
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
            let at_ms = now_ms;
            match bytes {
                Bytes::Stream(bytes) => {
                    client.on_stream(&bytes, now_ms);
                    if let Some(t) = &mut transcript {
                        t.steps.push(Step::Stream { at_ms, bytes });
                    }
                }
                Bytes::Datagram(bytes) => {
                    client.on_datagram(&bytes, now_ms);
                    if let Some(t) = &mut transcript {
                        t.steps.push(Step::Datagram { at_ms, bytes });
                    }
                }
            }
        }
        let framed = step % frame_every == 0;
        let mut frame_controls = None;
        if framed {
            client.frame(now_ms, |_, _| {
                let c = controls(&mut rng, frame);
                frame_controls.get_or_insert(c);
                c.session()
            });
        }
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
        let sent = client.poll_transmit();
        if let Some(t) = &mut transcript {
            if framed {
                t.steps.push(Step::Frame {
                    at_ms: now_ms,
                    // A frame with no input due presses nothing the server sees.
                    controls: frame_controls.unwrap_or_else(|| scripted_controls(seed, frame)),
                    sent: Transmit {
                        stream: sent.stream.clone(),
                        datagrams: sent.datagrams.clone(),
                    },
                    me: Positions::of(&client),
                });
            } else {
                assert!(sent.is_empty(), "bytes left between frames: {sent:?}");
            }
        }
        if framed {
            frame += 1;
        }
        ship(&mut up, &mut rng, now_us, sent);
        now_us += STEP_US;
        step += 1;
    }
    out.inputs = client.inputs_sent();
    out
}

#[cfg(test)]
mod tests {
    use arena_shared::client_session::AckTiming;
    use arena_shared::sim;

    use super::*;

    /// Plays `seconds` of virtual time: one client wandering among NPCs and obstacles, acking
    /// as the bots do (with the next input), a frame every step.
    fn play(path: Path, seconds: f64, seed: u64) -> Outcome {
        let config = SessionConfig {
            name: "v".into(),
            ack: AckTiming::WithNextInput,
            ask_names: false,
        };
        let (mut walk_left, mut dir) = (0u32, Vec2::ZERO);
        run(
            path,
            seconds,
            seed,
            config,
            1,
            |rng, _| {
                if walk_left == 0 {
                    walk_left = 15 + rng.below(45);
                    dir = rng.square(-1.0, 1.0);
                }
                walk_left -= 1;
                FrameControls {
                    movement: dir,
                    fire: false,
                    alt_fire: false,
                }
            },
            None,
            false,
        )
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
}
