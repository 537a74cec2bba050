//! The client's end of a session, sans-IO: one state machine for every client, so the wiring
//! of the netcode is written once.
//!
//! Named `client_session`, not `client`: files called `client.rs` already mean other things
//! (the bots' transport, the browser module, the end-to-end tests' helpers), and this is the
//! client's half of what the server's `net::session` drives from its side.
//!
//! The server's virtual-clock harness (`server/src/game/virtual_play.rs`), the browser module
//! (`web/src/screen.rs`, which keeps only what the page shows) and the bots
//! (`client-sim/src/player.rs`, which keeps only their behaviour and accounting) run it. They
//! differ only where [`AckTiming`] and [`ClientSession::watch_only`] say.
//!
//! It owns the handshake (`Hello`, `Welcome` or `Reject`, the resume token kept across
//! connections), the stream's framing, the datagram decode, the snapshot [`Receiver`] and its
//! acknowledgements, [`ClockSync`], the [`Predictor`] with its log of sent inputs, the
//! [`Interpolator`], pings, fire cooldowns, respawns and `WhoIs`. The caller owns the sockets
//! and the behaviour (what to press):
//! - bytes in: [`ClientSession::on_stream`], [`ClientSession::on_datagram`],
//!   [`ClientSession::on_closed`];
//! - controls in: [`ClientSession::frame`], called at about twice the tick rate, asks for one
//!   [`Controls`] per server tick that became due;
//! - bytes out: [`ClientSession::poll_transmit`] (stream bytes in order, datagrams each whole);
//! - events out: [`ClientSession::poll_event`].
//!
//! Time is always a parameter (`now_ms`, any monotonic origin), so it runs on a virtual clock in
//! tests and builds for `wasm32`.
//!
//! The invariant it keeps: a predictor always holds every input sent after the one the server
//! last reported applied. A predictor started mid-session (the first snapshot that shows the
//! own entity, or after a respawn) replays the inputs still in flight from the sent-input log,
//! or the next reconcile would see them as an error.

use std::collections::{HashMap, VecDeque};

use glam::Vec2;

use crate::clock::{self, ClockSync};
use crate::combat::{RIFLE, ROCKET};
use crate::interp::Interpolator;
use crate::map::Map;
use crate::obstacle_grid::ObstacleGrid;
use crate::predict::{Correction, Predictor};
use crate::protocol::codec::{self, FrameReader};
use crate::protocol::{
    Buttons, ClientDatagram, ClientMsg, Disconnect, EntityKind, GameEvent, Hello, Input,
    InputStatus, MAX_WHOIS, PROTOCOL_VERSION, Ping, PlayerName, Reject, RejectReason, ResumeToken,
    ServerDatagram, ServerMsg, Snapshot, Welcome, WhoIs,
};
use crate::quant::{Aim, MoveDir};
use crate::sim::{self, Body};
use crate::snapshot::{DeltaSnapshot, ReceiveError, Receiver, View};

/// Inputs remembered after sending: a few round trips' worth at any tick rate a client plays.
pub const SENT_LOG: usize = 128;
/// How often the round trip is measured.
pub const PING_INTERVAL_MS: f64 = 250.0;
/// Pings without a pong past this many are forgotten (bounds the session's memory).
pub const MAX_PINGS_IN_FLIGHT: usize = 64;
/// After the first snapshot, corrections and clock figures count only once the clock has had
/// this long (a few round trips) to settle.
pub const WARM_UP_MS: f64 = 1000.0;
/// How often the players in view without a known name are asked about (`WhoIs`).
pub const WHOIS_INTERVAL_MS: f64 = 250.0;
/// A player asked about and still unnamed (the request was dropped by the server's rate
/// limit, or the player left) is asked about again after this long.
pub const WHOIS_RETRY_MS: f64 = 5000.0;
/// Names kept; past this, the names of players out of view are forgotten.
pub const MAX_KNOWN_NAMES: usize = 512;
/// Frames an acknowledgement waits for an input to ride with ([`AckTiming::WithNextInput`]).
pub const ACK_WAIT_FRAMES: u8 = 2;

/// When the acknowledgement of a snapshot leaves.
///
/// A setting rather than one rule, because the clients differ for a reason: a bot sends it with
/// its next input, so the two leave in one QUIC packet (one packet up per tick instead of two,
/// for thousands of bots and for the server); the browser sends it at its next frame, the
/// soonest the page can; an idle bot, which runs no frames ([`ClientSession::watch_only`]),
/// holds it half a tick, so that it reaches the server shortly before the next snapshot
/// leaves and that snapshot's packet carries the server's QUIC acknowledgement of it. The ack
/// only chooses the server's next baseline, so the timing costs bytes, never correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckTiming {
    /// With the datagram's own call (clients that run no frames).
    OnReceipt,
    /// At the next [`ClientSession::frame`].
    NextFrame,
    /// With the next input, or after [`ACK_WAIT_FRAMES`] frames without one.
    WithNextInput,
}

/// What a session is set up with, for all its connections.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The name presented in `Hello`.
    pub name: String,
    pub ack: AckTiming,
    /// Ask the server for the names of players in view (`WhoIs`); only clients that show
    /// names need them.
    pub ask_names: bool,
}

/// What the player (or a bot's behaviour) holds for one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Controls {
    /// Movement, each axis in `[-1, 1]` (x right, y down, as the world's).
    pub movement: Vec2,
    /// Where to aim, as a direction from the own entity (any length; zero aims along +x).
    pub aim: Vec2,
    pub fire: bool,
    pub alt_fire: bool,
}

/// Bytes to send.
#[derive(Debug, Default, PartialEq)]
pub struct Transmit {
    /// For the reliable stream, in order, after everything taken before.
    pub stream: Vec<u8>,
    /// Each its own datagram.
    pub datagrams: Vec<Vec<u8>>,
}

impl Transmit {
    pub fn is_empty(&self) -> bool {
        self.stream.is_empty() && self.datagrams.is_empty()
    }
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No connection yet.
    Idle,
    /// `Hello` sent, waiting for `Welcome`.
    Handshaking,
    Playing,
    /// Rejected, disconnected or closed; the event said why. [`ClientSession::connect`] starts
    /// again.
    Ended,
}

/// A weapon the session saw fire (its cooldown had run out while the button was held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weapon {
    Rifle,
    Rocket,
}

/// What one delta snapshot did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotApplied {
    pub tick: u32,
    /// It is the newest view held (an older one, late, updates nothing but the baselines).
    pub newest: bool,
    pub status: InputStatus,
    /// Entities in the view.
    pub entities: usize,
    /// The datagram's size, bytes.
    pub bytes: usize,
    /// The own entity as this snapshot has it (absent: dead, hidden until it respawns).
    pub me: Option<Body>,
    /// The predictor was reconciled against it, and the correction that needed, if any.
    pub reconciled: bool,
    pub correction: Option<Correction>,
    /// The clock had settled ([`WARM_UP_MS`] after the first snapshot) when it arrived.
    pub warm: bool,
}

/// What happened, in order, for the caller to count, show or act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Welcomed {
        entity: u32,
        tick_rate: u16,
        /// It took back an earlier session's entity.
        resumed: bool,
    },
    SnapshotApplied(SnapshotApplied),
    /// A delta snapshot that could not be applied (its baseline is gone, or it is stale).
    SnapshotDropped {
        error: ReceiveError,
        bytes: usize,
    },
    /// A part of a full snapshot (the server's comparison mode): the clock follows it.
    FullSnapshot(Snapshot),
    /// A pong came back: the round trip it measured.
    Pong {
        rtt_ms: f64,
    },
    /// An input went out with a fire button held on a tick its weapon was ready: the server
    /// fires it, from where the session predicted itself, along `aim`.
    Fired {
        weapon: Weapon,
        tick: u32,
        from: Vec2,
        aim: Aim,
    },
    Hit {
        attacker: u32,
        target: u32,
        damage: u16,
        health: i16,
    },
    Killed {
        killer: u32,
        victim: u32,
    },
    /// The own entity is alive again at `pos`; prediction starts again from the next snapshot.
    Respawned {
        pos: Vec2,
        health: i16,
    },
    Score {
        kills: u32,
        deaths: u32,
    },
    /// Answers to `WhoIs` (also kept: [`ClientSession::name_of`]).
    Names(Vec<PlayerName>),
    /// The server refused the handshake; `permanent` when retrying the same way cannot help
    /// (another protocol version, not an Arena server).
    Rejected {
        reject: Reject,
        permanent: bool,
    },
    /// The server ended the session.
    Disconnected(Disconnect),
    /// The connection ended without a word from the server, or the server sent bytes that do
    /// not decode.
    Closed {
        message: String,
    },
}

/// One welcomed connection's state.
struct Game {
    entity: u32,
    tick_rate: u16,
    /// The welcome's map, with the grid movement reads it through.
    map: ObstacleGrid,
    first_snapshot_ms: Option<f64>,
    clock: ClockSync,
    receiver: Receiver,
    interp: Interpolator,
    predictor: Option<Predictor>,
    /// The newest inputs sent, `(seq, movement)`, at most [`SENT_LOG`].
    sent: VecDeque<(u32, MoveDir)>,
    seq: u32,
    pings: HashMap<u32, f64>,
    nonce: u32,
    next_ping_ms: f64,
    /// An acknowledgement is due, and frames it has waited.
    ack_due: Option<u8>,
    /// A watching session's acknowledgement, held until then (ms).
    watch_ack_at: Option<f64>,
    last_frame_ms: Option<f64>,
    /// Between its death and its respawn the session holds fire (the server would ignore it).
    dead: bool,
    rifle_ready: u32,
    rocket_ready: u32,
    /// The own entity as the newest snapshot (or respawn) has it.
    server_body: Option<Body>,
    status: InputStatus,
    names: HashMap<u32, String>,
    asked: HashMap<u32, f64>,
    next_whois_ms: f64,
}

impl Game {
    fn new(welcome: &Welcome) -> Self {
        let tick_rate = welcome.tick_rate.max(1);
        Self {
            entity: welcome.entity,
            tick_rate,
            map: ObstacleGrid::new(&welcome.map),
            first_snapshot_ms: None,
            clock: ClockSync::new(tick_rate),
            receiver: Receiver::new(tick_rate),
            interp: Interpolator::new(tick_rate),
            predictor: None,
            sent: VecDeque::with_capacity(SENT_LOG),
            seq: 0,
            pings: HashMap::new(),
            nonce: 0,
            next_ping_ms: 0.0,
            ack_due: None,
            watch_ack_at: None,
            last_frame_ms: None,
            dead: false,
            rifle_ready: 0,
            rocket_ready: 0,
            server_body: None,
            status: InputStatus::default(),
            names: HashMap::new(),
            asked: HashMap::new(),
            next_whois_ms: 0.0,
        }
    }

    fn warm(&self, now_ms: f64) -> bool {
        self.first_snapshot_ms
            .is_some_and(|t| now_ms - t >= WARM_UP_MS)
    }

    fn me(&self) -> Option<Vec2> {
        if self.dead {
            return None;
        }
        self.predictor
            .as_ref()
            .map(|p| p.body().pos)
            .or(self.server_body.map(|b| b.pos))
    }

    /// The answer to ping `nonce`, which the server held `held_ms` before answering: the
    /// round trip, if the ping is one this session sent and has not had answered.
    fn on_pong(&mut self, nonce: u32, held_ms: f64, now_ms: f64) -> Option<f64> {
        let sent = self.pings.remove(&nonce)?;
        let rtt_ms = (now_ms - sent - held_ms).max(0.0);
        self.clock.on_rtt(rtt_ms);
        Some(rtt_ms)
    }

    /// `watching`: the session runs no frames ([`ClientSession::watch_only`]), so the clock,
    /// the interpolator and the predictor are left alone. `interpolating`: false when the
    /// session keeps no views to draw others ([`ClientSession::without_interpolation`]).
    fn on_delta(
        &mut self,
        status: InputStatus,
        snap: &DeltaSnapshot,
        bytes: usize,
        now_ms: f64,
        watching: bool,
        interpolating: bool,
    ) -> Event {
        let tick = match self.receiver.receive(snap) {
            Ok(view) => view.tick,
            Err(error) => return Event::SnapshotDropped { error, bytes },
        };
        self.first_snapshot_ms.get_or_insert(now_ms);
        let warm = self.warm(now_ms);
        if self.ack_due.is_none() {
            self.ack_due = Some(0);
        }
        let newest = self.receiver.latest().is_some_and(|l| l.tick == tick);
        // Borrowed from the ring rather than copied: this runs for every snapshot.
        let Some(view) = self.receiver.shared(tick) else {
            unreachable!("a view just received is held")
        };
        let mut applied = SnapshotApplied {
            tick,
            newest,
            status,
            entities: view.entities.len(),
            bytes,
            me: None,
            reconciled: false,
            correction: None,
            warm,
        };
        if newest {
            self.status = status;
        }
        if newest && !watching {
            self.clock.on_server_tick(tick, now_ms);
            self.clock.on_input_report(status.late, status.lead, now_ms);
            if interpolating {
                // The same view, not a copy: a client holds each view once.
                self.interp.push(view, now_ms);
            }
        }
        let Some(me) = view.get(self.entity) else {
            // Dead (hidden until it respawns elsewhere): nothing to reconcile with.
            self.predictor = None;
            return Event::SnapshotApplied(applied);
        };
        let server = Body {
            pos: me.pos_at(tick, self.tick_rate),
            vel: me.vel(),
        };
        applied.me = Some(server);
        if newest {
            self.server_body = Some(server);
        }
        if watching {
            return Event::SnapshotApplied(applied);
        }
        match &mut self.predictor {
            None => {
                let mut p = Predictor::new(server, sim::PLAYER, self.tick_rate);
                for &(seq, movement) in &self.sent {
                    if seq > status.last_seq {
                        p.apply(seq, movement, &self.map);
                    }
                }
                self.predictor = Some(p);
            }
            Some(p) if newest && status.last_seq != 0 => {
                applied.reconciled = true;
                applied.correction = p.reconcile(status.last_seq, server, &self.map);
            }
            Some(_) => {}
        }
        Event::SnapshotApplied(applied)
    }

    fn on_names(&mut self, names: &[PlayerName]) {
        if self.names.len() + names.len() > MAX_KNOWN_NAMES {
            // Keep the players in view; the others are asked about again if they come back.
            let latest = self.receiver.latest();
            self.names
                .retain(|id, _| latest.is_some_and(|v| v.get(*id).is_some()));
        }
        for PlayerName { entity, name } in names {
            self.asked.remove(entity);
            if self.names.len() < MAX_KNOWN_NAMES {
                self.names.insert(*entity, name.clone());
            }
        }
    }

    /// A `WhoIs` for the players in the newest view whose names are not known and were not
    /// asked about in the last [`WHOIS_RETRY_MS`], at most [`MAX_WHOIS`] of them.
    fn whois(&mut self, now_ms: f64) -> Option<WhoIs> {
        if now_ms < self.next_whois_ms {
            return None;
        }
        self.next_whois_ms = now_ms + WHOIS_INTERVAL_MS;
        let view = self.receiver.latest()?;
        self.asked.retain(|_, at| now_ms - *at < WHOIS_RETRY_MS);
        let entities: Vec<u32> = view
            .entities
            .iter()
            .filter(|e| {
                e.kind == EntityKind::Player
                    && e.id != self.entity
                    && !self.names.contains_key(&e.id)
                    && !self.asked.contains_key(&e.id)
            })
            .map(|e| e.id)
            .take(MAX_WHOIS)
            .collect();
        if entities.is_empty() {
            return None;
        }
        for &id in &entities {
            self.asked.insert(id, now_ms);
        }
        Some(WhoIs { entities })
    }
}

/// The client's end of a session: see the module docs.
pub struct ClientSession {
    config: SessionConfig,
    /// [`ClientSession::watch_only`].
    watching: bool,
    /// Not [`ClientSession::without_interpolation`].
    interpolating: bool,
    stage: Stage,
    resume: Option<ResumeToken>,
    reader: FrameReader,
    game: Option<Game>,
    out: Transmit,
    events: VecDeque<Event>,
}

impl ClientSession {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            watching: false,
            interpolating: true,
            stage: Stage::Idle,
            resume: None,
            reader: FrameReader::new(),
            game: None,
            out: Transmit::default(),
            events: VecDeque::new(),
        }
    }

    /// A session that only watches: it runs no frames ([`ClientSession::frame`] does nothing,
    /// so it sends no inputs and no pings) and acknowledges snapshots half a tick after one
    /// arrives (on receipt at tick rates whose tick is no longer than QUIC's 25 ms
    /// acknowledgement delay), whatever the config's [`AckTiming`]: its driver calls
    /// [`ClientSession::release_ack`] at [`ClientSession::ack_due_ms`]. Per snapshot it keeps
    /// the views and the own entity ([`SnapshotApplied::me`]) and skips the clock, the
    /// interpolator and the predictor that only frames use: an idle bot is one, and a load
    /// test runs thousands of them.
    #[must_use]
    pub fn watch_only(mut self) -> Self {
        self.watching = true;
        self
    }

    /// A session that draws no one but itself: it keeps no views for interpolation (twelve
    /// views of every entity in sight, most of a bot's memory) and [`ClientSession::interp`]
    /// is `None`; others' positions are read from [`ClientSession::latest`]. The render tick
    /// its inputs carry then assumes the interpolator's starting delay. Bots that never aim at
    /// anyone (a wanderer) are such sessions; everything else (inputs, prediction, the clock,
    /// acks) is as in any session.
    #[must_use]
    pub fn without_interpolation(mut self) -> Self {
        self.interpolating = false;
        self
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Starts a connection: queues the `Hello` frame, the first bytes of the stream. It
    /// presents the last session's resume token, if any (the server ignores one it no longer
    /// knows). What the last connection left unsent is dropped.
    pub fn connect(&mut self, token: &str) {
        self.stage = Stage::Handshaking;
        self.reader = FrameReader::new();
        self.game = None;
        self.out = Transmit::default();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_string(),
            name: self.config.name.clone(),
            resume: self.resume,
        };
        if let Err(e) = codec::encode_hello(&hello, &mut self.out.stream) {
            self.end(Event::Closed {
                message: format!("hello does not fit a frame: {e:?}"),
            });
        }
    }

    /// Bytes from the server's stream, in order.
    pub fn on_stream(&mut self, bytes: &[u8], now_ms: f64) {
        if matches!(self.stage, Stage::Idle | Stage::Ended) {
            return;
        }
        self.reader.push(bytes);
        while self.stage != Stage::Ended {
            let body = match self.reader.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(e) => {
                    return self.end(Event::Closed {
                        message: format!("the server sent a bad frame: {e:?}"),
                    });
                }
            };
            match codec::decode_server(&body) {
                Ok(msg) => self.on_message(msg, now_ms),
                Err(e) => {
                    return self.end(Event::Closed {
                        message: format!("the server sent an unknown message: {e:?}"),
                    });
                }
            }
        }
    }

    fn on_message(&mut self, msg: ServerMsg, now_ms: f64) {
        match (msg, &mut self.game) {
            (ServerMsg::Welcome(w), None) if self.stage == Stage::Handshaking => {
                self.resume = Some(w.resume_token);
                let game = Game::new(&w);
                self.events.push_back(Event::Welcomed {
                    entity: game.entity,
                    tick_rate: game.tick_rate,
                    resumed: w.resumed,
                });
                self.game = Some(game);
                self.stage = Stage::Playing;
            }
            (ServerMsg::Reject(reject), None) => {
                let permanent = matches!(
                    reject.reason,
                    RejectReason::ProtocolVersion { .. } | RejectReason::NotArena
                );
                self.end(Event::Rejected { reject, permanent });
            }
            // A destination past the protocol's bounds is not followed: the client does not
            // trust the sizes the server sends.
            (ServerMsg::Disconnect(d), _) if !d.well_formed() => self.end(Event::Closed {
                message: "the server sent a Disconnect whose destination breaks the bounds".into(),
            }),
            // `Moved` ends this connection like any goodbye; the resume token stays for the
            // next one, to the server named in `moved_to`.
            (ServerMsg::Disconnect(d), _) => self.end(Event::Disconnected(d)),
            (ServerMsg::Pong(p), Some(g)) => {
                if let Some(rtt_ms) = g.on_pong(p.nonce, 0.0, now_ms) {
                    self.events.push_back(Event::Pong { rtt_ms });
                }
            }
            (ServerMsg::Event(e), Some(g)) => {
                let event = match e {
                    GameEvent::Hit {
                        attacker,
                        target,
                        damage,
                        health,
                    } => Event::Hit {
                        attacker,
                        target,
                        damage,
                        health,
                    },
                    GameEvent::Killed { killer, victim } => {
                        if victim == g.entity {
                            g.dead = true;
                            g.predictor = None;
                        }
                        Event::Killed { killer, victim }
                    }
                    GameEvent::Respawned { pos, health, .. } => {
                        // Prediction starts again from the snapshot that shows the new
                        // position (it may come before this event or after; either way the old
                        // prediction is void).
                        g.predictor = None;
                        g.dead = false;
                        g.server_body = Some(Body {
                            pos,
                            vel: Vec2::ZERO,
                        });
                        Event::Respawned { pos, health }
                    }
                    GameEvent::Score { kills, deaths } => Event::Score { kills, deaths },
                };
                self.events.push_back(event);
            }
            (ServerMsg::Names(names), Some(g)) => {
                g.on_names(&names);
                self.events.push_back(Event::Names(names));
            }
            (msg, _) => self.end(Event::Closed {
                message: format!("unexpected {msg:?} while {:?}", self.stage),
            }),
        }
    }

    /// One datagram from the server. One that does not decode is dropped, like a lost one.
    pub fn on_datagram(&mut self, bytes: &[u8], now_ms: f64) {
        let Some(g) = self.game.as_mut().filter(|_| self.stage == Stage::Playing) else {
            return;
        };
        match codec::decode_datagram(bytes) {
            Ok(ServerDatagram::Delta(status, snap)) => {
                // A sample whatever becomes of the snapshot (late, or not decodable against
                // what this client holds): the round trip is the same.
                if let Some(p) = status.pong
                    && let Some(rtt_ms) = g.on_pong(p.nonce, f64::from(p.held_us) / 1000.0, now_ms)
                {
                    self.events.push_back(Event::Pong { rtt_ms });
                }
                let event = g.on_delta(
                    status,
                    &snap,
                    bytes.len(),
                    now_ms,
                    self.watching,
                    self.interpolating,
                );
                self.events.push_back(event);
                if self.watching {
                    // Held half a tick, where a tick is longer than QUIC's acknowledgement
                    // delay: the acknowledgement then arrives shortly before the next
                    // snapshot leaves, which carries the server's QUIC acknowledgement of
                    // it; sent on receipt, it arrived just after a snapshot had left and the
                    // server acknowledged it in a packet of its own, 25 ms later. It carries
                    // the client's QUIC acknowledgement of this snapshot either way.
                    let tick_ms = 1000.0 / f64::from(g.tick_rate);
                    if tick_ms > clock::ACK_DELAY_MS {
                        g.watch_ack_at.get_or_insert(now_ms + tick_ms / 2.0);
                    } else {
                        self.send_ack();
                    }
                } else if self.config.ack == AckTiming::OnReceipt {
                    self.send_ack();
                }
            }
            Ok(ServerDatagram::Snapshot(s)) => {
                // Every part moves the clock, not only the one that completes its tick: the
                // server sends a tick's parts together, so the first to arrive is the one
                // least delayed on the way, the best sample of when the server sent it.
                if !self.watching {
                    g.clock.on_server_tick(s.tick, now_ms);
                }
                self.events.push_back(Event::FullSnapshot(s));
            }
            Err(_) => {}
        }
    }

    /// The transport closed (`message`: what it said). A session that had not already ended
    /// for a stated reason ends `Closed`.
    pub fn on_closed(&mut self, message: &str) {
        if self.stage != Stage::Ended {
            self.end(Event::Closed {
                message: message.to_string(),
            });
        }
    }

    fn end(&mut self, event: Event) {
        self.stage = Stage::Ended;
        self.events.push_back(event);
    }

    /// When a watching session's held acknowledgement is due ([`ClientSession::watch_only`]),
    /// if it holds one.
    pub fn ack_due_ms(&self) -> Option<f64> {
        self.game.as_ref()?.watch_ack_at
    }

    /// Sends a watching session's held acknowledgement, if it is due at `now_ms`; whether it
    /// was.
    pub fn release_ack(&mut self, now_ms: f64) -> bool {
        let Some(g) = &mut self.game else {
            return false;
        };
        if !g.watch_ack_at.is_some_and(|at| at <= now_ms) {
            return false;
        }
        g.watch_ack_at = None;
        self.send_ack();
        true
    }

    fn send_ack(&mut self) {
        let Some(g) = &mut self.game else { return };
        if g.ack_due.take().is_some()
            && let Some(ack) = g.receiver.ack()
        {
            self.out
                .datagrams
                .push(codec::encode_client_datagram(&ClientDatagram::Ack(ack)));
        }
    }

    /// One frame at `now_ms`: an input for every server tick that became due (the clock
    /// decides), each predicted at once and built from what `controls` returns for it (it is
    /// given the session, for the own position, the view and the tick); a ping every
    /// [`PING_INTERVAL_MS`]; the acknowledgement, as [`AckTiming`] says; a `WhoIs` if names are
    /// asked for; then prediction smoothing and interpolation move on to `now_ms`.
    pub fn frame(&mut self, now_ms: f64, mut controls: impl FnMut(&Self, u32) -> Controls) {
        let interpolating = self.interpolating;
        let Some(g) = self
            .game
            .as_mut()
            .filter(|_| self.stage == Stage::Playing && !self.watching)
        else {
            return;
        };
        let frame_dt = g.last_frame_ms.map_or(0.0, |t| (now_ms - t).max(0.0)) as f32 / 1000.0;
        g.last_frame_ms = Some(now_ms);
        let due = g.clock.advance(now_ms);
        let ack_now = match (self.config.ack, g.ack_due) {
            (_, None) | (AckTiming::OnReceipt, _) => false,
            (AckTiming::NextFrame, Some(_)) => true,
            // Queued just before this frame's inputs, so both leave in one packet.
            (AckTiming::WithNextInput, Some(waited)) => {
                if due.is_empty() && waited < ACK_WAIT_FRAMES {
                    g.ack_due = Some(waited + 1);
                    false
                } else {
                    true
                }
            }
        };
        if ack_now {
            self.send_ack();
        }
        let render = self.render_tick(now_ms);
        for tick in due {
            let c = controls(self, tick);
            self.push_input(tick, c, render);
        }
        let Some(g) = &mut self.game else { return };
        if now_ms >= g.next_ping_ms {
            g.next_ping_ms = now_ms + PING_INTERVAL_MS;
            g.nonce = g.nonce.wrapping_add(1);
            if g.pings.len() >= MAX_PINGS_IN_FLIGHT {
                g.pings.clear();
            }
            g.pings.insert(g.nonce, now_ms);
            // Answered in the next snapshot, with how long the server held it: the answer
            // rides the snapshot's packet instead of one of its own (and the client's
            // acknowledgement of it, one more). A server in full-state mode answers on the
            // stream.
            let ping = ClientMsg::SnapshotPing(Ping { nonce: g.nonce });
            // A ping always fits a frame.
            let _ = codec::encode_client(&ping, &mut self.out.stream);
        }
        if self.config.ask_names
            && let Some(who) = g.whois(now_ms)
        {
            // At most MAX_WHOIS ids: far under a frame.
            let _ = codec::encode_client(&ClientMsg::WhoIs(who), &mut self.out.stream);
        }
        if let Some(p) = &mut g.predictor {
            p.advance_render(frame_dt);
        }
        if let Some(r) = render
            && interpolating
        {
            g.interp.frame(r);
            g.interp.recycle_into(&mut g.receiver);
        }
    }

    fn push_input(&mut self, tick: u32, c: Controls, render: Option<f64>) {
        let Some(g) = &mut self.game else { return };
        let from = g.me().unwrap_or(Vec2::ZERO);
        let movement = MoveDir::from_vec2(c.movement);
        let mut buttons = 0;
        if !g.dead && c.fire {
            buttons |= Buttons::FIRE;
        }
        if !g.dead && c.alt_fire {
            buttons |= Buttons::ALT_FIRE;
        }
        g.seq = g.seq.wrapping_add(1);
        if g.sent.len() >= SENT_LOG {
            g.sent.pop_front();
        }
        g.sent.push_back((g.seq, movement));
        if let Some(p) = &mut g.predictor {
            p.apply(g.seq, movement, &g.map);
        }
        let (view_tick, view_frac) = view_line(render, tick);
        let aim = Aim::from_radians(c.aim.y.atan2(c.aim.x));
        let input = Input {
            seq: g.seq,
            tick,
            movement,
            aim,
            buttons: Buttons(buttons),
            view_tick,
            view_frac,
        };
        // An input always fits a frame.
        let _ = codec::encode_client(&ClientMsg::Input(input), &mut self.out.stream);
        if buttons & Buttons::FIRE != 0 && tick >= g.rifle_ready {
            g.rifle_ready = tick + RIFLE.cooldown_ticks;
            self.events.push_back(Event::Fired {
                weapon: Weapon::Rifle,
                tick,
                from,
                aim,
            });
        }
        if buttons & Buttons::ALT_FIRE != 0 && tick >= g.rocket_ready {
            g.rocket_ready = tick + ROCKET.cooldown_ticks;
            self.events.push_back(Event::Fired {
                weapon: Weapon::Rocket,
                tick,
                from,
                aim,
            });
        }
    }

    /// Bytes to send now, taken.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Transmit {
        std::mem::take(&mut self.out)
    }

    /// Bytes to send now, swapped into `buf`; the session keeps `buf`'s buffers, emptied, to
    /// fill next. A caller that sends from `buf` and passes it back each time allocates nothing
    /// here once both buffers have grown ([`ClientSession::poll_transmit`] leaves the session
    /// new, empty buffers to grow again): the bots call this after every datagram.
    pub fn swap_transmit(&mut self, buf: &mut Transmit) {
        buf.stream.clear();
        buf.datagrams.clear();
        std::mem::swap(&mut self.out, buf);
    }

    /// The next event, in the order things happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The own entity in this connection.
    pub fn entity(&self) -> Option<u32> {
        self.game.as_ref().map(|g| g.entity)
    }

    pub fn tick_rate(&self) -> Option<u16> {
        self.game.as_ref().map(|g| g.tick_rate)
    }

    pub fn map(&self) -> Option<&Map> {
        self.game.as_ref().map(|g| g.map.map())
    }

    /// Whether the clock has settled: [`WARM_UP_MS`] since the first snapshot.
    pub fn warm(&self, now_ms: f64) -> bool {
        self.game.as_ref().is_some_and(|g| g.warm(now_ms))
    }

    /// Between the own entity's death and its respawn.
    pub fn dead(&self) -> bool {
        self.game.as_ref().is_some_and(|g| g.dead)
    }

    /// The own entity where the session predicts it (else where the server last had it);
    /// `None` while dead.
    pub fn me(&self) -> Option<Vec2> {
        self.game.as_ref()?.me()
    }

    /// The predictor, once a snapshot has shown the own entity.
    pub fn predictor(&self) -> Option<&Predictor> {
        self.game.as_ref()?.predictor.as_ref()
    }

    /// The own entity as the newest snapshot (or respawn) had it.
    pub fn server_body(&self) -> Option<Body> {
        self.game.as_ref()?.server_body
    }

    /// How the server used this client's inputs, as of the newest snapshot.
    pub fn input_status(&self) -> Option<InputStatus> {
        self.game.as_ref().map(|g| g.status)
    }

    pub fn clock(&self) -> Option<&ClockSync> {
        self.game.as_ref().map(|g| &g.clock)
    }

    /// The interpolator, unless the session keeps none
    /// ([`ClientSession::without_interpolation`]).
    pub fn interp(&self) -> Option<&Interpolator> {
        self.game
            .as_ref()
            .filter(|_| self.interpolating)
            .map(|g| &g.interp)
    }

    /// The newest view reconstructed.
    pub fn latest(&self) -> Option<&View> {
        self.game.as_ref()?.receiver.latest()
    }

    /// When [`Self::frame`] next has an input to send ([`ClockSync::next_due_ms`]): a client
    /// whose frames are not drawn (a bot) sleeps until then instead of waking on a fixed
    /// timer. `None` while the clock does not run yet, and while not playing (or watching).
    pub fn next_input_due_ms(&self) -> Option<f64> {
        let g = self
            .game
            .as_ref()
            .filter(|_| self.stage == Stage::Playing && !self.watching)?;
        g.clock.next_due_ms()
    }

    /// The server tick others are drawn at, at `now_ms`.
    pub fn render_tick(&self, now_ms: f64) -> Option<f64> {
        let g = self.game.as_ref()?;
        g.clock.render_tick(now_ms, g.interp.delay_ticks())
    }

    /// A player's name, from the server's answers to `WhoIs`.
    pub fn name_of(&self, entity: u32) -> Option<&str> {
        self.game.as_ref()?.names.get(&entity).map(String::as_str)
    }

    /// Inputs sent in this connection.
    pub fn inputs_sent(&self) -> u32 {
        self.game.as_ref().map_or(0, |g| g.seq)
    }
}

/// The view line an input carries: the server tick the client was drawing others at, and the
/// fraction of a tick past it in 1/256 (the input's own tick before anything is drawn).
pub fn view_line(render: Option<f64>, tick: u32) -> (u32, u8) {
    match render {
        Some(r) if r > 0.0 => (r.floor() as u32, ((r - r.floor()) * 256.0) as u8),
        _ => (tick, 0),
    }
}

#[cfg(test)]
mod tests;
