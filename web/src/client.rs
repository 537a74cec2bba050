//! The browser client's netcode, sans-IO: bytes and the time in, bytes out and what to draw.
//!
//! The page owns the WebTransport session (one bidirectional stream, datagrams) and the
//! canvas; everything that is a game rule or netcode lives here and in `arena_shared`, the same
//! code the bots and the server run: the handshake and the codec, delta snapshots against
//! acknowledged baselines, the server-tick clock, prediction and reconciliation of the own
//! player, interpolation of the others. Time is always a parameter (`now_ms`, the page's
//! `performance.now()`), so this is tested natively without a browser.
//!
//! Per session: [`Client::hello`] gives the first frame; [`Client::on_stream`] and
//! [`Client::on_datagram`] take what arrives; [`Client::frame`] (called at about twice the tick
//! rate, and on every animation frame) sends one input per server tick that became due (the
//! clock decides), pings, and acknowledges snapshots; [`Client::render`] says what to draw.
//! The resume token of the last session is kept, so a reconnect resumes within the server's
//! grace period.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use arena_shared::clock::ClockSync;
use arena_shared::combat::{self, RIFLE, ROCKET};
use arena_shared::interp::Interpolator;
use arena_shared::map::Map;
use arena_shared::predict::Predictor;
use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{
    Buttons, ClientDatagram, ClientMsg, EntityKind, GameEvent, Hello, Input, InputStatus,
    MAX_WHOIS, PROTOCOL_VERSION, Ping, PlayerName, RejectReason, ResumeToken, ServerDatagram,
    ServerMsg, WhoIs,
};
use arena_shared::quant::{Aim, MoveDir};
use arena_shared::sim::{self, Body};
use arena_shared::snapshot::{DeltaSnapshot, Receiver};
use glam::Vec2;

/// How often the round trip is measured.
pub const PING_INTERVAL_MS: f64 = 250.0;
/// Inputs remembered after sending: a predictor started mid-session (after a respawn) replays
/// those the server has not applied yet.
const SENT_LOG: usize = 128;
/// Pings older than this many without a pong are forgotten.
const MAX_PINGS_IN_FLIGHT: usize = 64;
/// Snapshot rate and bandwidth are averaged over this window.
const RATE_WINDOW_MS: f64 = 2000.0;
/// Kill-feed lines stay this long, at most this many.
const FEED_MS: f64 = 5000.0;
const FEED_LINES: usize = 6;
/// Rifle tracers are drawn this long.
const TRACER_MS: f64 = 120.0;
/// Others' health as last heard in `Hit` events, for at most this many entities.
const MAX_KNOWN_HEALTH: usize = 512;
/// How often the players in view without a known name are asked about (`WhoIs`).
const WHOIS_INTERVAL_MS: f64 = 250.0;
/// A player asked about and still unnamed (the request was dropped by the server's rate
/// limit, or the player left) is asked about again after this long.
const WHOIS_RETRY_MS: f64 = 5000.0;
/// Names kept; past this, the names of players out of view are forgotten.
const MAX_KNOWN_NAMES: usize = 512;
/// After the first snapshot, corrections count only once the clock has settled.
const WARM_UP_MS: f64 = 1000.0;

/// Where the session stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// No session yet.
    Idle,
    /// `Hello` sent, waiting for `Welcome`.
    Handshaking,
    Playing,
    /// The server refused the handshake; `permanent` when retrying the same way cannot help
    /// (another protocol version, a malformed hello).
    Rejected {
        reason: String,
        message: String,
        retry_after_ms: u32,
        permanent: bool,
    },
    /// The server ended the session.
    Disconnected {
        reason: String,
        message: String,
        reconnect_after_ms: u32,
    },
    /// The connection ended without a word from the server (network lost, server gone), or
    /// the server sent something that does not decode.
    Closed {
        message: String,
    },
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Handshaking => "connecting",
            Phase::Playing => "playing",
            Phase::Rejected { .. } => "rejected",
            Phase::Disconnected { .. } => "disconnected",
            Phase::Closed { .. } => "closed",
        }
    }

    /// Whether the session is over.
    pub fn ended(&self) -> bool {
        matches!(
            self,
            Phase::Rejected { .. } | Phase::Disconnected { .. } | Phase::Closed { .. }
        )
    }
}

/// What the player holds this frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Controls {
    /// Movement axes in `[-1, 1]` (WASD: x right, y down, as the world's).
    pub move_x: f32,
    pub move_y: f32,
    /// The world point the mouse is over, if known.
    pub aim_at: Option<Vec2>,
    pub fire: bool,
    pub alt_fire: bool,
}

/// Bytes the page must send.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// For the reliable stream, in order.
    pub stream: Vec<u8>,
    /// Each its own datagram.
    pub datagrams: Vec<Vec<u8>>,
}

pub struct Client {
    name: String,
    phase: Phase,
    resume: Option<ResumeToken>,
    reader: FrameReader,
    game: Option<Game>,
    out: Outgoing,
    /// Sessions welcomed, and whether the last one resumed an earlier one's entity.
    sessions: u32,
    resumed: bool,
}

/// One welcomed session.
struct Game {
    entity: u32,
    tick_rate: u16,
    map: Map,
    /// `now_ms` of the first snapshot.
    first_snapshot_ms: Option<f64>,
    clock: ClockSync,
    receiver: Receiver,
    interp: Interpolator,
    predictor: Option<Predictor>,
    sent: VecDeque<(u32, MoveDir)>,
    seq: u32,
    pings: HashMap<u32, f64>,
    nonce: u32,
    next_ping_ms: f64,
    ack_pending: bool,
    last_frame_ms: Option<f64>,
    health: i16,
    dead: bool,
    kills: u32,
    deaths: u32,
    known_health: HashMap<u32, i16>,
    /// Other players' names by entity, from `Names` answers; and when each unnamed player in
    /// view was last asked about.
    names: HashMap<u32, String>,
    asked: HashMap<u32, f64>,
    next_whois_ms: f64,
    corrections: u64,
    max_error: f32,
    snapshots: u64,
    inputs_sent: u64,
    snapshot_times: VecDeque<f64>,
    down: VecDeque<(f64, usize)>,
    /// The own entity as the newest snapshot has it.
    server_body: Option<Body>,
    newest_tick: u32,
    status: InputStatus,
    feed: VecDeque<(f64, String)>,
    tracers: VecDeque<(f64, Vec2, Vec2)>,
    rifle_ready: u32,
    rocket_ready: u32,
}

impl Game {
    fn new(welcome: &arena_shared::protocol::Welcome) -> Self {
        let tick_rate = welcome.tick_rate.max(1);
        Self {
            entity: welcome.entity,
            tick_rate,
            map: welcome.map.clone(),
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
            ack_pending: false,
            last_frame_ms: None,
            health: combat::PLAYER_HEALTH as i16,
            dead: false,
            kills: 0,
            deaths: 0,
            known_health: HashMap::new(),
            names: HashMap::new(),
            asked: HashMap::new(),
            next_whois_ms: 0.0,
            corrections: 0,
            max_error: 0.0,
            snapshots: 0,
            inputs_sent: 0,
            snapshot_times: VecDeque::new(),
            down: VecDeque::new(),
            server_body: None,
            newest_tick: 0,
            status: InputStatus::default(),
            feed: VecDeque::new(),
            tracers: VecDeque::new(),
            rifle_ready: 0,
            rocket_ready: 0,
        }
    }

    /// How the kill feed names an entity.
    fn label(&self, id: u32) -> String {
        if id == self.entity {
            return "you".into();
        }
        let kind = self
            .receiver
            .latest()
            .and_then(|v| v.get(id))
            .map(|e| e.kind);
        match (kind, self.names.get(&id)) {
            (Some(EntityKind::Npc), _) => format!("npc {id}"),
            (_, Some(name)) => name.clone(),
            _ => format!("#{id}"),
        }
    }

    fn on_names(&mut self, names: Vec<PlayerName>) {
        if self.names.len() + names.len() > MAX_KNOWN_NAMES {
            // Keep the players in view; the others are asked about again if they come back.
            let latest = self.receiver.latest();
            self.names
                .retain(|id, _| latest.is_some_and(|v| v.get(*id).is_some()));
        }
        for PlayerName { entity, name } in names {
            self.asked.remove(&entity);
            if self.names.len() < MAX_KNOWN_NAMES {
                self.names.insert(entity, name);
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

    fn say(&mut self, now_ms: f64, line: String) {
        if self.feed.len() >= FEED_LINES {
            self.feed.pop_front();
        }
        self.feed.push_back((now_ms + FEED_MS, line));
    }

    fn warm(&self, now_ms: f64) -> bool {
        self.first_snapshot_ms
            .is_some_and(|t| now_ms - t >= WARM_UP_MS)
    }

    fn count_down(&mut self, now_ms: f64, bytes: usize) {
        self.down.push_back((now_ms, bytes));
        while self
            .down
            .front()
            .is_some_and(|(t, _)| now_ms - t > RATE_WINDOW_MS)
        {
            self.down.pop_front();
        }
    }

    fn on_event(&mut self, event: GameEvent, now_ms: f64) {
        match event {
            GameEvent::Hit {
                attacker,
                target,
                damage,
                health,
            } => {
                if target == self.entity {
                    self.health = health;
                } else {
                    if self.known_health.len() >= MAX_KNOWN_HEALTH {
                        self.known_health.clear();
                    }
                    self.known_health.insert(target, health);
                }
                if attacker == self.entity && target != self.entity {
                    let line = format!("you hit {} for {damage}", self.label(target));
                    self.say(now_ms, line);
                }
            }
            GameEvent::Killed { killer, victim } => {
                if victim == self.entity {
                    self.dead = true;
                    self.predictor = None;
                }
                let line = format!("{} killed {}", self.label(killer), self.label(victim));
                self.say(now_ms, line);
            }
            GameEvent::Respawned { pos, health, .. } => {
                // Prediction starts again from the snapshot that shows the new position.
                self.predictor = None;
                self.dead = false;
                self.health = health;
                self.server_body = Some(Body {
                    pos,
                    vel: Vec2::ZERO,
                });
                self.say(now_ms, "you respawned".into());
            }
            GameEvent::Score { kills, deaths } => {
                self.kills = kills;
                self.deaths = deaths;
            }
        }
    }

    fn on_delta(&mut self, status: InputStatus, snap: &DeltaSnapshot, now_ms: f64) {
        let Ok(view) = self.receiver.receive(snap) else {
            // A missing baseline or a stale duplicate: the next one will do.
            return;
        };
        let tick = view.tick;
        self.snapshots += 1;
        self.snapshot_times.push_back(now_ms);
        while self
            .snapshot_times
            .front()
            .is_some_and(|t| now_ms - t > RATE_WINDOW_MS)
        {
            self.snapshot_times.pop_front();
        }
        self.first_snapshot_ms.get_or_insert(now_ms);
        self.ack_pending = true;
        let Some(view) = self.receiver.view(tick) else {
            return;
        };
        let newest = self.receiver.latest().is_some_and(|l| l.tick == tick);
        if !newest {
            return;
        }
        self.newest_tick = tick;
        self.status = status;
        self.clock.on_server_tick(tick, now_ms);
        self.clock.on_input_report(status.late, status.lead, now_ms);
        self.interp.push(view, now_ms);
        let Some(me) = view.get(self.entity) else {
            // Dead: hidden until it respawns.
            self.predictor = None;
            return;
        };
        let server = Body {
            pos: me.pos_at(tick, self.tick_rate),
            vel: me.vel(),
        };
        self.server_body = Some(server);
        match &mut self.predictor {
            None => {
                // The server's state includes inputs up to `last_seq`; later ones are in
                // flight and are predicted on top.
                let mut p = Predictor::new(server, sim::PLAYER, self.tick_rate);
                for &(seq, movement) in &self.sent {
                    if seq > status.last_seq {
                        p.apply(seq, movement, &self.map);
                    }
                }
                self.predictor = Some(p);
            }
            Some(p) if status.last_seq != 0 => {
                if let Some(c) = p.reconcile(status.last_seq, server, &self.map)
                    && self
                        .first_snapshot_ms
                        .is_some_and(|t| now_ms - t >= WARM_UP_MS)
                {
                    self.corrections += 1;
                    self.max_error = self.max_error.max(c.error);
                }
            }
            Some(_) => {}
        }
    }

    /// The own entity: predicted (drawn with what is left of corrections), else as the server
    /// last had it.
    fn me(&self) -> Option<Vec2> {
        if self.dead {
            return None;
        }
        self.predictor
            .as_ref()
            .map(Predictor::render_pos)
            .or(self.server_body.map(|b| b.pos))
    }
}

impl Client {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            phase: Phase::Idle,
            resume: None,
            reader: FrameReader::new(),
            game: None,
            out: Outgoing::default(),
            sessions: 0,
            resumed: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Starts a session: the `Hello` frame to write first on the stream. It presents the
    /// last session's resume token, if any (the server ignores one it no longer knows).
    pub fn hello(&mut self, token: &str) -> Result<Vec<u8>, String> {
        self.phase = Phase::Handshaking;
        self.reader = FrameReader::new();
        self.game = None;
        self.out = Outgoing::default();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_string(),
            name: self.name.clone(),
            resume: self.resume,
        };
        let mut frame = Vec::new();
        codec::encode_hello(&hello, &mut frame).map_err(|e| format!("hello: {e:?}"))?;
        Ok(frame)
    }

    /// Bytes from the server's stream.
    pub fn on_stream(&mut self, bytes: &[u8], now_ms: f64) {
        if self.phase.ended() {
            return;
        }
        if let Some(g) = &mut self.game {
            g.count_down(now_ms, bytes.len());
        }
        self.reader.push(bytes);
        loop {
            let body = match self.reader.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(e) => return self.fail(format!("the server sent a bad frame: {e:?}")),
            };
            let msg = match codec::decode_server(&body) {
                Ok(msg) => msg,
                Err(e) => return self.fail(format!("the server sent an unknown message: {e:?}")),
            };
            self.on_message(msg, now_ms);
            if self.phase.ended() {
                return;
            }
        }
    }

    fn on_message(&mut self, msg: ServerMsg, now_ms: f64) {
        match (msg, &mut self.game) {
            (ServerMsg::Welcome(w), None) if self.phase == Phase::Handshaking => {
                self.resume = Some(w.resume_token);
                self.resumed = w.resumed;
                self.sessions += 1;
                self.game = Some(Game::new(&w));
                self.phase = Phase::Playing;
            }
            (ServerMsg::Reject(r), None) => {
                let permanent = matches!(
                    r.reason,
                    RejectReason::ProtocolVersion { .. } | RejectReason::NotArena
                );
                self.phase = Phase::Rejected {
                    reason: r.reason.as_str().to_string(),
                    message: r.message,
                    retry_after_ms: r.retry_after_ms,
                    permanent,
                };
            }
            (ServerMsg::Disconnect(d), _) => {
                self.phase = Phase::Disconnected {
                    reason: d.reason.as_str().to_string(),
                    message: d.message,
                    reconnect_after_ms: d.reconnect_after_ms,
                };
            }
            (ServerMsg::Pong(p), Some(g)) => {
                if let Some(sent) = g.pings.remove(&p.nonce) {
                    g.clock.on_rtt((now_ms - sent).max(0.0));
                }
            }
            (ServerMsg::Event(e), Some(g)) => g.on_event(e, now_ms),
            (ServerMsg::Names(names), Some(g)) => g.on_names(names),
            (msg, _) => self.fail(format!("unexpected {msg:?} while {}", self.phase.name())),
        }
    }

    fn fail(&mut self, message: String) {
        self.phase = Phase::Closed { message };
    }

    /// One datagram from the server.
    pub fn on_datagram(&mut self, bytes: &[u8], now_ms: f64) {
        let Some(g) = self.game.as_mut().filter(|_| self.phase == Phase::Playing) else {
            return;
        };
        g.count_down(now_ms, bytes.len());
        match codec::decode_datagram(bytes) {
            Ok(ServerDatagram::Delta(status, snap)) => g.on_delta(status, &snap, now_ms),
            // Full snapshots are the server's comparison mode: the clock follows them.
            Ok(ServerDatagram::Snapshot(s)) => g.clock.on_server_tick(s.tick, now_ms),
            // A datagram that does not decode is dropped, like a lost one.
            Err(_) => {}
        }
    }

    /// The transport closed (`message`: what the browser said). A session that had not
    /// already ended for a stated reason is `Closed`.
    pub fn on_closed(&mut self, message: &str) {
        if !self.phase.ended() {
            self.phase = Phase::Closed {
                message: message.to_string(),
            };
        }
    }

    /// Sends what is due at `now_ms`: an input for every server tick that became due (predicted
    /// at once), a ping every [`PING_INTERVAL_MS`], and the acknowledgement of the newest
    /// snapshot. Returns the bytes to send.
    pub fn frame(&mut self, now_ms: f64, controls: Controls) -> Outgoing {
        let mut out = std::mem::take(&mut self.out);
        let Some(g) = self.game.as_mut().filter(|_| self.phase == Phase::Playing) else {
            return out;
        };
        let frame_dt = g.last_frame_ms.map_or(0.0, |t| (now_ms - t).max(0.0)) as f32 / 1000.0;
        g.last_frame_ms = Some(now_ms);
        if g.ack_pending {
            g.ack_pending = false;
            if let Some(ack) = g.receiver.ack() {
                out.datagrams
                    .push(codec::encode_client_datagram(&ClientDatagram::Ack(ack)));
            }
        }
        let render = g.clock.render_tick(now_ms, g.interp.delay_ticks());
        let movement = MoveDir::from_vec2(Vec2::new(controls.move_x, controls.move_y));
        for tick in g.clock.advance(now_ms) {
            let me = g.me().unwrap_or(Vec2::ZERO);
            let aim = controls.aim_at.map_or(Vec2::X, |at| at - me);
            let mut buttons = 0;
            if !g.dead && controls.fire {
                buttons |= Buttons::FIRE;
            }
            if !g.dead && controls.alt_fire {
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
            let (view_tick, view_frac) = match render {
                Some(r) if r > 0.0 => (r.floor() as u32, ((r - r.floor()) * 256.0) as u8),
                _ => (tick, 0),
            };
            let aim = Aim::from_radians(aim.y.atan2(aim.x));
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
            let _ = codec::encode_client(&ClientMsg::Input(input), &mut out.stream);
            g.inputs_sent += 1;
            if buttons & Buttons::FIRE != 0 && tick >= g.rifle_ready {
                g.rifle_ready = tick + RIFLE.cooldown_ticks;
                let dir = combat::aim_dir(aim);
                let reach = combat::ray_obstacle(&g.map, me, dir, RIFLE.range);
                if g.tracers.len() >= 8 {
                    g.tracers.pop_front();
                }
                g.tracers
                    .push_back((now_ms + TRACER_MS, me, me + dir * reach));
            }
            if buttons & Buttons::ALT_FIRE != 0 && tick >= g.rocket_ready {
                g.rocket_ready = tick + ROCKET.cooldown_ticks;
            }
        }
        if now_ms >= g.next_ping_ms {
            g.next_ping_ms = now_ms + PING_INTERVAL_MS;
            g.nonce = g.nonce.wrapping_add(1);
            if g.pings.len() >= MAX_PINGS_IN_FLIGHT {
                g.pings.clear();
            }
            g.pings.insert(g.nonce, now_ms);
            let _ =
                codec::encode_client(&ClientMsg::Ping(Ping { nonce: g.nonce }), &mut out.stream);
        }
        if let Some(who) = g.whois(now_ms) {
            // At most MAX_WHOIS ids: far under a frame.
            let _ = codec::encode_client(&ClientMsg::WhoIs(who), &mut out.stream);
        }
        if let Some(p) = &mut g.predictor {
            p.advance_render(frame_dt);
        }
        if let Some(r) = render {
            g.interp.frame(r);
        }
        out
    }

    /// The map of the session and the sizes to draw things at, as JSON: `{"width",
    /// "height", "obstacles": [[x0, y0, x1, y1]], "player_radius", "npc_radius",
    /// "projectile_radius", "player_health", "npc_health"}`.
    pub fn map_json(&self) -> String {
        let mut s = String::new();
        if let Some(g) = &self.game {
            let _ = write!(
                s,
                "{{\"width\":{},\"height\":{},\"player_radius\":{},\"npc_radius\":{},\"projectile_radius\":{},\"player_health\":{},\"npc_health\":{},\"obstacles\":[",
                g.map.width,
                g.map.height,
                sim::PLAYER.radius,
                sim::NPC.radius,
                ROCKET.radius,
                combat::PLAYER_HEALTH,
                combat::NPC_HEALTH,
            );
            for (i, o) in g.map.obstacles.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(s, "{sep}[{},{},{},{}]", o.min.x, o.min.y, o.max.x, o.max.y);
            }
            s.push_str("]}");
        } else {
            s.push_str("null");
        }
        s
    }

    /// What the HUD shows, as JSON (also `window.arena.stats()`).
    pub fn stats_json(&self, now_ms: f64) -> String {
        let mut s = String::from("{");
        let _ = write!(s, "\"state\":\"{}\"", self.phase.name());
        let message = match &self.phase {
            Phase::Rejected {
                reason, message, ..
            }
            | Phase::Disconnected {
                reason, message, ..
            } => format!("{reason}: {message}"),
            Phase::Closed { message } => message.clone(),
            _ => String::new(),
        };
        let _ = write!(s, ",\"message\":{}", json_string(&message));
        let hint = match &self.phase {
            Phase::Rejected { retry_after_ms, .. } => *retry_after_ms,
            Phase::Disconnected {
                reconnect_after_ms, ..
            } => *reconnect_after_ms,
            _ => 0,
        };
        let permanent = matches!(
            self.phase,
            Phase::Rejected {
                permanent: true,
                ..
            }
        );
        let _ = write!(
            s,
            ",\"retry_after_ms\":{hint},\"permanent\":{permanent},\"sessions\":{},\"resumed\":{},\"name\":{}",
            self.sessions,
            self.resumed,
            json_string(&self.name)
        );
        if let Some(g) = &self.game {
            let window_s = RATE_WINDOW_MS / 1000.0;
            let rate = g.snapshot_times.len() as f64 / window_s;
            let kbps = g.down.iter().map(|(_, b)| *b).sum::<usize>() as f64 / window_s / 1000.0;
            let ping = g.clock.rtt_ms().unwrap_or(-1.0);
            let server_tick = g.clock.server_tick(now_ms).unwrap_or(0.0);
            let _ = write!(
                s,
                ",\"entity\":{},\"tick_rate\":{},\"ping_ms\":{ping:.1},\"server_tick\":{server_tick:.1},\"snapshot_tick\":{},\"snapshot_rate\":{rate:.1},\"kbps_down\":{kbps:.2},\"corrections\":{},\"max_error\":{},\"snapshots\":{},\"inputs_sent\":{},\"late_inputs\":{},\"interp_delay_ticks\":{:.2},\"underruns\":{},\"health\":{},\"dead\":{},\"kills\":{},\"deaths\":{},\"warm\":{}",
                g.entity,
                g.tick_rate,
                g.newest_tick,
                g.corrections,
                g.max_error,
                g.snapshots,
                g.inputs_sent,
                g.status.late,
                g.interp.delay_ticks(),
                g.interp.underruns(),
                g.health,
                g.dead,
                g.kills,
                g.deaths,
                g.warm(now_ms),
            );
            let pos =
                |b: Option<Vec2>| b.map_or("null".to_string(), |p| format!("[{},{}]", p.x, p.y));
            let predicted = g.predictor.as_ref().map(|p| p.body().pos);
            let _ = write!(
                s,
                ",\"predicted\":{},\"server\":{},\"pending_inputs\":{}",
                pos(predicted),
                pos(g.server_body.map(|b| b.pos)),
                g.predictor.as_ref().map_or(0, Predictor::pending)
            );
        }
        s.push('}');
        s
    }

    /// What to draw at `now_ms`, as JSON: the own player (`me`: `[x, y]` or null when dead),
    /// every other entity interpolated (`e`: `[id, kind, x, y, health or -1, name]`, kind 0
    /// player, 1 NPC, 2 projectile, the name only for a player whose name is known), rifle tracers (`t`: `[x0, y0, x1, y1]`) and the kill feed (`f`).
    pub fn render_json(&mut self, now_ms: f64) -> String {
        let mut s = String::from("{");
        let Some(g) = self.game.as_mut() else {
            s.push_str("\"me\":null,\"e\":[],\"t\":[],\"f\":[]}");
            return s;
        };
        while g.feed.front().is_some_and(|(until, _)| *until < now_ms) {
            g.feed.pop_front();
        }
        while g.tracers.front().is_some_and(|(until, ..)| *until < now_ms) {
            g.tracers.pop_front();
        }
        match g.me() {
            Some(p) => {
                let _ = write!(s, "\"me\":[{},{}]", p.x, p.y);
            }
            None => s.push_str("\"me\":null"),
        }
        s.push_str(",\"e\":[");
        let render = g.clock.render_tick(now_ms, g.interp.delay_ticks());
        let mut first = true;
        if let (Some(r), Some(view)) = (render, g.receiver.latest()) {
            for rec in &view.entities {
                if rec.id == g.entity {
                    continue;
                }
                let Some(p) = g.interp.position(rec.id, r) else {
                    continue;
                };
                let kind = match rec.kind {
                    EntityKind::Player => 0,
                    EntityKind::Npc => 1,
                    EntityKind::Projectile => 2,
                };
                let hp = g.known_health.get(&rec.id).map_or(-1, |&h| i32::from(h));
                let sep = if first { "" } else { "," };
                first = false;
                let _ = write!(s, "{sep}[{},{kind},{},{},{hp}", rec.id, p.x, p.y);
                if let Some(name) = g.names.get(&rec.id) {
                    let _ = write!(s, ",{}", json_string(name));
                }
                s.push(']');
            }
        }
        s.push_str("],\"t\":[");
        for (i, (_, a, b)) in g.tracers.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}[{},{},{},{}]", a.x, a.y, b.x, b.y);
        }
        s.push_str("],\"f\":[");
        for (i, (_, line)) in g.feed.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}{}", json_string(line));
        }
        s.push_str("]}");
        s
    }
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests;
