//! The browser's side of the game: what the page shows, over the client session.
//!
//! The netcode (the handshake and resume token, the codec, delta snapshots and their acks,
//! the server-tick clock, prediction of the own player, interpolation of the others, pings,
//! fire cooldowns, respawns, `WhoIs`) is [`arena_shared::client_session`], the same session
//! the server's virtual-clock harness drives. This module keeps what is the browser's: the
//! page's controls turned into the session's, the HUD's numbers ([`Screen::stats_json`]),
//! what to draw ([`Screen::render_json`], [`Screen::map_json`]), players' names and the kill
//! feed. Time is always a parameter (`now_ms`, the page's `performance.now()`), so this is
//! tested natively without a browser.
//!
//! Per session: [`Screen::hello`] gives the first frame; [`Screen::on_stream`] and
//! [`Screen::on_datagram`] take what arrives; [`Screen::frame`] (called at about twice the tick
//! rate, and on every animation frame) returns what the session sends: one input per server
//! tick that became due, pings, and the acknowledgement of the snapshots received since the
//! last frame ([`AckTiming::NextFrame`], the soonest the page can).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use arena_shared::client_session::{
    self, AckTiming, ClientSession, Event, SessionConfig, Stage, Weapon,
};
use arena_shared::combat::{self, RIFLE, ROCKET};
use arena_shared::predict::Predictor;
use arena_shared::protocol::{EntityKind, MovedTo};
use arena_shared::sim;
use glam::Vec2;

/// Snapshot rate and bandwidth are averaged over this window.
const RATE_WINDOW_MS: f64 = 2000.0;
/// Kill-feed lines stay this long, at most this many.
const FEED_MS: f64 = 5000.0;
const FEED_LINES: usize = 6;
/// Rifle tracers are drawn this long, at most this many.
const TRACER_MS: f64 = 120.0;
const TRACERS: usize = 8;
/// Others' health as last heard in `Hit` events, for at most this many entities.
const MAX_KNOWN_HEALTH: usize = 512;

/// Where the session stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
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
    /// The server ended the session; `moved_to`: it handed the session to another server,
    /// where the page reconnects with its resume token (`Disconnect(Moved)`).
    Disconnected {
        reason: String,
        message: String,
        reconnect_after_ms: u32,
        moved_to: Option<MovedTo>,
    },
    /// The connection ended without a word from the server (network lost, server gone), or
    /// the server sent something that does not decode.
    Closed {
        message: String,
    },
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Handshaking => "connecting",
            Status::Playing => "playing",
            Status::Rejected { .. } => "rejected",
            Status::Disconnected { .. } => "disconnected",
            Status::Closed { .. } => "closed",
        }
    }

    /// Whether the session is over.
    pub fn ended(&self) -> bool {
        matches!(
            self,
            Status::Rejected { .. } | Status::Disconnected { .. } | Status::Closed { .. }
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

pub struct Screen {
    name: String,
    session: ClientSession,
    status: Status,
    /// Sessions welcomed, and whether the last one resumed an earlier one's entity.
    sessions: u32,
    resumed: bool,
    /// What the page shows of the welcomed session (kept after it ends, for the HUD).
    hud: Option<Hud>,
}

/// What the page counts and shows of one welcomed session, from the session's events.
struct Hud {
    health: i16,
    kills: u32,
    deaths: u32,
    known_health: HashMap<u32, i16>,
    /// Corrections after the clock settled, and the largest of them.
    corrections: u64,
    max_error: f32,
    snapshots: u64,
    snapshot_times: VecDeque<f64>,
    down: VecDeque<(f64, usize)>,
    feed: VecDeque<(f64, String)>,
    tracers: VecDeque<(f64, Vec2, Vec2)>,
}

impl Hud {
    fn new() -> Self {
        Self {
            health: combat::PLAYER_HEALTH as i16,
            kills: 0,
            deaths: 0,
            known_health: HashMap::new(),
            corrections: 0,
            max_error: 0.0,
            snapshots: 0,
            snapshot_times: VecDeque::new(),
            down: VecDeque::new(),
            feed: VecDeque::new(),
            tracers: VecDeque::new(),
        }
    }

    fn say(&mut self, now_ms: f64, line: String) {
        if self.feed.len() >= FEED_LINES {
            self.feed.pop_front();
        }
        self.feed.push_back((now_ms + FEED_MS, line));
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
}

/// How the kill feed names an entity.
fn label(session: &ClientSession, id: u32) -> String {
    if session.entity() == Some(id) {
        return "you".into();
    }
    let kind = session.latest().and_then(|v| v.get(id)).map(|e| e.kind);
    match (kind, session.name_of(id)) {
        (Some(EntityKind::Npc), _) => format!("npc {id}"),
        (_, Some(name)) => name.to_string(),
        _ => format!("#{id}"),
    }
}

/// The own entity where the page draws it: predicted with what is left of corrections blended
/// in, else as the server last had it; `None` while dead. Aim is taken from here too, as the
/// player sees it.
fn drawn_me(session: &ClientSession) -> Option<Vec2> {
    if session.dead() {
        return None;
    }
    session
        .predictor()
        .map(Predictor::render_pos)
        .or(session.server_body().map(|b| b.pos))
}

impl Screen {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            session: ClientSession::new(SessionConfig {
                name: name.to_string(),
                ack: AckTiming::NextFrame,
                ask_names: true,
            }),
            status: Status::Idle,
            sessions: 0,
            resumed: false,
            hud: None,
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Starts a session: the `Hello` frame to write first on the stream. It presents the
    /// last session's resume token, if any (the server ignores one it no longer knows).
    pub fn hello(&mut self, token: &str) -> Result<Vec<u8>, String> {
        self.status = Status::Handshaking;
        self.hud = None;
        self.session.connect(token);
        self.drain(0.0, &[]);
        if let Status::Closed { message } = &self.status {
            return Err(format!("hello: {message}"));
        }
        Ok(self.session.poll_transmit().stream)
    }

    /// Bytes from the server's stream.
    pub fn on_stream(&mut self, bytes: &[u8], now_ms: f64) {
        if self.session.stage() == Stage::Playing
            && let Some(h) = &mut self.hud
        {
            h.count_down(now_ms, bytes.len());
        }
        self.session.on_stream(bytes, now_ms);
        self.drain(now_ms, &[]);
    }

    /// One datagram from the server.
    pub fn on_datagram(&mut self, bytes: &[u8], now_ms: f64) {
        if self.session.stage() == Stage::Playing
            && let Some(h) = &mut self.hud
        {
            h.count_down(now_ms, bytes.len());
        }
        self.session.on_datagram(bytes, now_ms);
        self.drain(now_ms, &[]);
    }

    /// The transport closed (`message`: what the browser said). A session that had not
    /// already ended for a stated reason is `Closed`.
    pub fn on_closed(&mut self, message: &str) {
        self.session.on_closed(message);
        self.drain(0.0, &[]);
    }

    /// Sends what is due at `now_ms` (see [`ClientSession::frame`]): an input for every server
    /// tick that became due, aimed from where the own player is drawn at the mouse, pings,
    /// names asked for, and the acknowledgement of the newest snapshot. Returns the bytes to
    /// send.
    pub fn frame(&mut self, now_ms: f64, controls: Controls) -> Outgoing {
        // Where each input of this frame was aimed from, for the tracers of the shots it fires.
        let mut aimed_from: Vec<(u32, Vec2)> = Vec::new();
        self.session.frame(now_ms, |s, tick| {
            let me = drawn_me(s).unwrap_or(Vec2::ZERO);
            aimed_from.push((tick, me));
            client_session::Controls {
                movement: Vec2::new(controls.move_x, controls.move_y),
                aim: controls.aim_at.map_or(Vec2::X, |at| at - me),
                fire: controls.fire,
                alt_fire: controls.alt_fire,
            }
        });
        let sent = self.session.poll_transmit();
        self.drain(now_ms, &aimed_from);
        Outgoing {
            stream: sent.stream,
            datagrams: sent.datagrams,
        }
    }

    /// Takes the session's events into the status, the HUD's numbers, the kill feed and the
    /// tracers. `aimed_from`: where the inputs of this frame were aimed from, by tick.
    fn drain(&mut self, now_ms: f64, aimed_from: &[(u32, Vec2)]) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Welcomed { resumed, .. } => {
                    self.sessions += 1;
                    self.resumed = resumed;
                    self.hud = Some(Hud::new());
                    self.status = Status::Playing;
                }
                Event::Rejected { reject, permanent } => {
                    self.status = Status::Rejected {
                        reason: reject.reason.as_str().to_string(),
                        message: reject.message,
                        retry_after_ms: reject.retry_after_ms,
                        permanent,
                    };
                }
                Event::Disconnected(d) => {
                    self.status = Status::Disconnected {
                        reason: d.reason.as_str().to_string(),
                        message: d.message,
                        reconnect_after_ms: d.reconnect_after_ms,
                        moved_to: d.moved_to,
                    };
                }
                Event::Closed { message } => self.status = Status::Closed { message },
                event => {
                    if let Some(h) = &mut self.hud {
                        on_game_event(h, &self.session, event, now_ms, aimed_from);
                    }
                }
            }
        }
    }

    /// The map of the session and the sizes to draw things at, as JSON: `{"width",
    /// "height", "obstacles": [[x0, y0, x1, y1]], "player_radius", "npc_radius",
    /// "projectile_radius", "player_health", "npc_health"}`.
    pub fn map_json(&self) -> String {
        let mut s = String::new();
        if let Some(map) = self.session.map() {
            let _ = write!(
                s,
                "{{\"width\":{},\"height\":{},\"player_radius\":{},\"npc_radius\":{},\"projectile_radius\":{},\"player_health\":{},\"npc_health\":{},\"obstacles\":[",
                map.width,
                map.height,
                sim::PLAYER.radius,
                sim::NPC.radius,
                ROCKET.radius,
                combat::PLAYER_HEALTH,
                combat::NPC_HEALTH,
            );
            for (i, o) in map.obstacles.iter().enumerate() {
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
        let _ = write!(s, "\"state\":\"{}\"", self.status.name());
        let message = match &self.status {
            Status::Rejected {
                reason, message, ..
            }
            | Status::Disconnected {
                reason, message, ..
            } => format!("{reason}: {message}"),
            Status::Closed { message } => message.clone(),
            _ => String::new(),
        };
        let _ = write!(s, ",\"message\":{}", json_string(&message));
        let hint = match &self.status {
            Status::Rejected { retry_after_ms, .. } => *retry_after_ms,
            Status::Disconnected {
                reconnect_after_ms, ..
            } => *reconnect_after_ms,
            _ => 0,
        };
        let permanent = matches!(
            self.status,
            Status::Rejected {
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
        if let Status::Disconnected {
            moved_to: Some(to), ..
        } = &self.status
        {
            let hashes: Vec<String> = to.cert_sha256.iter().map(|h| json_string(h)).collect();
            let _ = write!(
                s,
                ",\"moved_to\":{{\"url\":{},\"cert_sha256s\":[{}],\"http\":{}}}",
                json_string(&to.url),
                hashes.join(","),
                json_string(&to.http)
            );
        }
        let session = &self.session;
        if let (Some(h), Some(entity), Some(tick_rate), Some(clock), Some(interp)) = (
            &self.hud,
            session.entity(),
            session.tick_rate(),
            session.clock(),
            session.interp(),
        ) {
            let window_s = RATE_WINDOW_MS / 1000.0;
            let rate = h.snapshot_times.len() as f64 / window_s;
            let kbps = h.down.iter().map(|(_, b)| *b).sum::<usize>() as f64 / window_s / 1000.0;
            let ping = clock.rtt_ms().unwrap_or(-1.0);
            let server_tick = clock.server_tick(now_ms).unwrap_or(0.0);
            let _ = write!(
                s,
                ",\"entity\":{entity},\"tick_rate\":{tick_rate},\"ping_ms\":{ping:.1},\"server_tick\":{server_tick:.1},\"snapshot_tick\":{},\"snapshot_rate\":{rate:.1},\"kbps_down\":{kbps:.2},\"corrections\":{},\"max_error\":{},\"snapshots\":{},\"inputs_sent\":{},\"late_inputs\":{},\"interp_delay_ticks\":{:.2},\"underruns\":{},\"health\":{},\"dead\":{},\"kills\":{},\"deaths\":{},\"warm\":{}",
                session.latest().map_or(0, |v| v.tick),
                h.corrections,
                h.max_error,
                h.snapshots,
                session.inputs_sent(),
                session.input_status().unwrap_or_default().late,
                interp.delay_ticks(),
                interp.underruns(),
                h.health,
                session.dead(),
                h.kills,
                h.deaths,
                session.warm(now_ms),
            );
            let pos =
                |b: Option<Vec2>| b.map_or("null".to_string(), |p| format!("[{},{}]", p.x, p.y));
            let predicted = session.predictor().map(|p| p.body().pos);
            let _ = write!(
                s,
                ",\"predicted\":{},\"server\":{},\"pending_inputs\":{}",
                pos(predicted),
                pos(session.server_body().map(|b| b.pos)),
                session.predictor().map_or(0, Predictor::pending)
            );
        }
        s.push('}');
        s
    }

    /// What to draw at `now_ms`, as JSON: the own player (`me`: `[x, y]` or null when dead),
    /// every other entity interpolated (`e`: `[id, kind, x, y, health or -1, name]`, kind 0
    /// player, 1 NPC, 2 projectile, the name only for a player whose name is known), rifle
    /// tracers (`t`: `[x0, y0, x1, y1]`) and the kill feed (`f`).
    pub fn render_json(&mut self, now_ms: f64) -> String {
        let mut s = String::from("{");
        let (Some(h), Some(entity), Some(interp)) = (
            self.hud.as_mut(),
            self.session.entity(),
            self.session.interp(),
        ) else {
            s.push_str("\"me\":null,\"e\":[],\"t\":[],\"f\":[]}");
            return s;
        };
        let session = &self.session;
        while h.feed.front().is_some_and(|(until, _)| *until < now_ms) {
            h.feed.pop_front();
        }
        while h.tracers.front().is_some_and(|(until, ..)| *until < now_ms) {
            h.tracers.pop_front();
        }
        match drawn_me(session) {
            Some(p) => {
                let _ = write!(s, "\"me\":[{},{}]", p.x, p.y);
            }
            None => s.push_str("\"me\":null"),
        }
        s.push_str(",\"e\":[");
        let mut first = true;
        if let (Some(r), Some(view)) = (session.render_tick(now_ms), session.latest()) {
            for rec in &view.entities {
                if rec.id == entity {
                    continue;
                }
                let Some(p) = interp.position(rec.id, r) else {
                    continue;
                };
                let kind = match rec.kind {
                    EntityKind::Player => 0,
                    EntityKind::Npc => 1,
                    EntityKind::Projectile => 2,
                };
                let hp = h.known_health.get(&rec.id).map_or(-1, |&h| i32::from(h));
                let sep = if first { "" } else { "," };
                first = false;
                let _ = write!(s, "{sep}[{},{kind},{},{},{hp}", rec.id, p.x, p.y);
                if let Some(name) = session.name_of(rec.id) {
                    let _ = write!(s, ",{}", json_string(name));
                }
                s.push(']');
            }
        }
        s.push_str("],\"t\":[");
        for (i, (_, a, b)) in h.tracers.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}[{},{},{},{}]", a.x, a.y, b.x, b.y);
        }
        s.push_str("],\"f\":[");
        for (i, (_, line)) in h.feed.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}{}", json_string(line));
        }
        s.push_str("]}");
        s
    }
}

/// One of the session's game events, into the HUD: health, score, the kill feed, tracers and
/// the counts of snapshots and corrections.
fn on_game_event(
    h: &mut Hud,
    session: &ClientSession,
    event: Event,
    now_ms: f64,
    aimed_from: &[(u32, Vec2)],
) {
    let me = session.entity();
    match event {
        Event::SnapshotApplied(a) => {
            h.snapshots += 1;
            h.snapshot_times.push_back(now_ms);
            while h
                .snapshot_times
                .front()
                .is_some_and(|t| now_ms - t > RATE_WINDOW_MS)
            {
                h.snapshot_times.pop_front();
            }
            if let Some(c) = a.correction.filter(|_| a.warm) {
                h.corrections += 1;
                h.max_error = h.max_error.max(c.error);
            }
        }
        Event::Fired {
            weapon: Weapon::Rifle,
            tick,
            from,
            aim,
        } => {
            let Some(map) = session.map() else { return };
            // Drawn from where the player saw itself when the input was made.
            let from = aimed_from
                .iter()
                .find(|(t, _)| *t == tick)
                .map_or(from, |&(_, p)| p);
            let dir = combat::aim_dir(aim);
            let reach = combat::ray_obstacle(map, from, dir, RIFLE.range);
            if h.tracers.len() >= TRACERS {
                h.tracers.pop_front();
            }
            h.tracers
                .push_back((now_ms + TRACER_MS, from, from + dir * reach));
        }
        Event::Hit {
            attacker,
            target,
            damage,
            health,
        } => {
            if Some(target) == me {
                h.health = health;
            } else {
                if h.known_health.len() >= MAX_KNOWN_HEALTH {
                    h.known_health.clear();
                }
                h.known_health.insert(target, health);
            }
            if Some(attacker) == me && Some(target) != me {
                let line = format!("you hit {} for {damage}", label(session, target));
                h.say(now_ms, line);
            }
        }
        Event::Killed { killer, victim } => {
            let line = format!(
                "{} killed {}",
                label(session, killer),
                label(session, victim)
            );
            h.say(now_ms, line);
        }
        Event::Respawned { health, .. } => {
            h.health = health;
            h.say(now_ms, "you respawned".into());
        }
        Event::Score { kills, deaths } => {
            h.kills = kills;
            h.deaths = deaths;
        }
        // Names are kept by the session; the rest is the session's own business.
        _ => {}
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
