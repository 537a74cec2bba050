//! One bot's life: connect, play until its time is up, reconnect when dropped, leave, and say
//! what it saw.
//!
//! While playing it sends one `Input` per server tick on its reliable stream, a `Ping` every
//! [`PING_INTERVAL`], and reads snapshot datagrams (an idle bot only acknowledges them). A
//! snapshot counts when every part of its tick arrived. It records where its own entity was
//! at the first and the last snapshot of its last session, and the sum of the movement it
//! asked for, so a test can check that the server moved it that way.
//!
//! A failed connect (HTTP, QUIC, `Reject`) or a lost session (`Disconnect`, connection lost)
//! is retried after a [`Backoff`] delay until the bot's deadline, its launch plus its play
//! time. Every attempt fetches a fresh token and certificate hash from `/api/connect` (a
//! restarted server has a new self-signed certificate) and presents the resume token of its
//! last session: within the server's grace period it gets its entity back
//! (`Welcome::resumed`), after it a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arena_shared::clock::ClockSync;
use arena_shared::combat;
use arena_shared::interp::Interpolator;
use arena_shared::map::Map;
use arena_shared::predict::Predictor;
use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{
    Buttons, CLOSE_CLIENT_LEFT, ClientDatagram, ClientMsg, GameEvent, Input, InputStatus, Ping,
    ResumeToken, ServerDatagram, ServerMsg, Welcome,
};
use arena_shared::quant::{Aim, MoveDir};
use arena_shared::rng::SplitMix64;
use arena_shared::sim::{self, Body};
use arena_shared::snapshot::DeltaSnapshot;
use arena_shared::snapshot::{ReceiveError, Receiver, View};
use glam::Vec2;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, STABLE_SESSION};
use crate::behaviour::{self, Behaviour, Walk};
use crate::client::{self, ClientError, Transport};
use crate::impair::{DelayLine, Direction, ImpairConfig, Impairment};
use crate::live::{self, Held, LiveStats};

/// Inputs a bot remembers having sent (a few round trips' worth at any tick rate it plays).
const SENT_LOG: usize = 128;

/// How often a bot measures its round trip.
pub const PING_INTERVAL: Duration = Duration::from_millis(250);
/// Pings older than this without a pong are forgotten (bounds the bot's memory).
const MAX_PINGS_IN_FLIGHT: usize = 64;
/// Mixed into a bot's seed for its backoff jitter, so the jitter is not its random walk.
pub const BACKOFF_SALT: u64 = 0xB4C0_FF5A_17E7_0001;

#[derive(Debug, Clone)]
pub struct BotConfig {
    /// The server's HTTP side, `http://HOST:PORT`.
    pub server: String,
    pub name: String,
    /// Its place in the swarm (0-based).
    pub index: u32,
    /// How long after its launch the bot leaves, however much of it was spent connecting.
    pub play_for: Duration,
    pub behaviour: Behaviour,
    pub seed: u64,
    pub idle_timeout: Duration,
    /// Network impairment applied to what this bot sends and receives (none by default).
    pub impair: ImpairConfig,
    /// The swarm's start: [`Session::welcomed_at`] counts from it.
    pub swarm_start: tokio::time::Instant,
    /// Counters for the progress line, shared by the swarm.
    pub live: Arc<LiveStats>,
    /// Cancelled: the bot leaves now, as if its time were up.
    pub stop: CancellationToken,
    /// Dial this address instead of the one `/api/connect` names (a proxy, a port forward, a
    /// test's relay).
    pub connect_via: Option<std::net::SocketAddr>,
}

/// One session of a bot: from its `Welcome` to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// When its `Welcome` arrived, counted from the swarm's start.
    pub welcomed_at: Duration,
    /// From the start of the attempt (`GET /api/connect`) to the `Welcome`.
    pub connect: Duration,
    pub played: Duration,
    /// Why it ended before the bot meant to leave, if it did.
    pub lost: Option<String>,
    /// Its entity in this session.
    pub entity: u32,
    /// The server handed back an earlier session's entity.
    pub resumed: bool,
}

/// What one bot saw, over all its sessions.
///
/// Memory: a [`Session`] record per session, and sessions are either at least
/// [`STABLE_SESSION`] long or separated by growing backoff delays (see [`crate::backoff`]), so
/// a bot keeps at most about one record per `STABLE_SESSION` of play time.
#[derive(Debug, Clone)]
pub struct BotOutcome {
    pub name: String,
    pub index: u32,
    pub behaviour: Behaviour,
    /// The first successful connect's time, or `Err` with the last failure if it never got a
    /// `Welcome`.
    pub connect: Result<Duration, String>,
    /// Every session, in order.
    pub sessions: Vec<Session>,
    /// Failed connects and lost sessions, by kind (`ClientError::kind`), each counted.
    pub errors: BTreeMap<String, u64>,
    /// Why its last lost session ended; `Some` if it lost any session before it meant to leave.
    pub disconnected: Option<String>,
    /// Time played, all sessions together.
    pub played: Duration,
    /// Its entity in its last session.
    pub entity: Option<u32>,
    pub tick_rate: u16,
    /// Ticks for which every part arrived.
    pub snapshots: u64,
    pub datagrams: u64,
    pub down_bytes: u64,
    pub up_bytes: u64,
    pub inputs_sent: u64,
    /// Inputs sent with the fire button held (a chaser that sees someone).
    pub fire_inputs: u64,
    /// Rifle shots and rockets fired (fire held on a tick its weapon was ready, counted with
    /// the server's fire rates).
    pub shots_fired: u64,
    /// `Hit` events naming this bot as the attacker.
    pub hits_confirmed: u64,
    /// `Killed` events naming it as the killer, and as the victim.
    pub kills: u64,
    pub deaths: u64,
    /// Round trips in microseconds (pings; an idle bot sends none).
    pub rtt_us: Histogram<u64>,
    /// Its own position at the first and the last snapshot of its last session.
    pub first_pos: Option<Vec2>,
    pub last_pos: Option<Vec2>,
    /// Sum of the movement directions sent in its last session.
    pub input_sum: Vec2,
    /// Sizes of snapshot datagrams (delta mode) or of whole snapshots (full mode), bytes.
    pub snapshot_bytes: Histogram<u64>,
    /// Entities in the bot's view, one sample per snapshot.
    pub in_view: Histogram<u64>,
    /// Delta snapshots that could not be decoded for want of their baseline.
    pub baseline_misses: u64,
    /// The newest view the bot reconstructed (delta mode), in the session it ended by leaving.
    pub last_view: Option<View>,
    /// Predictions the server's state corrected, after each session's warm-up.
    pub prediction_corrections: u64,
    /// Largest of those corrections, world units.
    pub prediction_max_error: f32,
    /// The server's count of this bot's inputs that arrived too late, after each session's
    /// warm-up, all sessions together.
    pub inputs_late: u64,
    /// Times the interpolation buffer ran dry, all sessions together.
    pub interp_underruns: u64,
    /// Error of the server-tick estimate at each snapshot after the warm-up, microseconds.
    pub clock_error_us: Histogram<u64>,
}

impl BotOutcome {
    pub(crate) fn new(name: String, index: u32, behaviour: Behaviour) -> Self {
        Self {
            name,
            index,
            behaviour,
            connect: Err("not attempted".into()),
            sessions: Vec::new(),
            errors: BTreeMap::new(),
            disconnected: None,
            played: Duration::ZERO,
            entity: None,
            tick_rate: 0,
            snapshots: 0,
            datagrams: 0,
            down_bytes: 0,
            up_bytes: 0,
            inputs_sent: 0,
            fire_inputs: 0,
            shots_fired: 0,
            hits_confirmed: 0,
            kills: 0,
            deaths: 0,
            rtt_us: new_rtt_histogram(),
            first_pos: None,
            last_pos: None,
            input_sum: Vec2::ZERO,
            snapshot_bytes: new_count_histogram(),
            in_view: new_count_histogram(),
            baseline_misses: 0,
            last_view: None,
            prediction_corrections: 0,
            prediction_max_error: 0.0,
            inputs_late: 0,
            interp_underruns: 0,
            clock_error_us: new_rtt_histogram(),
        }
    }

    /// Got a `Welcome` at least once.
    pub fn connected(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// Sessions after its first.
    pub fn reconnects(&self) -> u64 {
        self.sessions.len().saturating_sub(1) as u64
    }

    /// Sessions that took back an earlier session's entity.
    pub fn resumes(&self) -> u64 {
        self.sessions.iter().filter(|s| s.resumed).count() as u64
    }

    /// When each of its sessions got its `Welcome`, from the swarm's start.
    pub fn welcome_times(&self) -> impl Iterator<Item = Duration> + '_ {
        self.sessions.iter().map(|s| s.welcomed_at)
    }

    fn count_error(&mut self, e: &ClientError) {
        *self.errors.entry(e.kind()).or_insert(0) += 1;
    }
}

/// Significant figures of every histogram a bot keeps (values within 1%). Each bot keeps
/// four, so this is most of a bot's own memory: ~17 KB a histogram at 2 figures, ~140 KB at 3
/// (half a megabyte a bot, gigabytes for a swarm of thousands).
pub const HISTOGRAM_SIGFIG: u8 = 2;

/// RTTs from 1 µs to 60 s.
pub fn new_rtt_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, HISTOGRAM_SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// Counts and sizes from 1 to 10^7.
pub fn new_count_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000, HISTOGRAM_SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// Runs one bot to its deadline (or until `stop`), reconnecting as needed. Never panics on
/// anything the server sends.
pub async fn run(config: BotConfig) -> BotOutcome {
    let mut out = BotOutcome::new(config.name.clone(), config.index, config.behaviour);
    let deadline = tokio::time::Instant::now() + config.play_for;
    let mut backoff = Backoff::new(config.seed ^ BACKOFF_SALT);
    let live = config.live.clone();
    // The last session's, presented at every reconnect: the server ignores one it no longer
    // knows.
    let mut resume = None;
    loop {
        let attempt = tokio::time::Instant::now();
        let connected = tokio::select! {
            c = connect(&config, resume, &mut out) => Some(c),
            _ = tokio::time::sleep_until(deadline) => None,
            _ = config.stop.cancelled() => None,
        };
        let Some(connected) = connected else {
            // Its time ran out mid-attempt: a failure only if it never had a session and
            // nothing else went wrong before (a slow server that never answered).
            if !out.connected() && out.errors.is_empty() {
                out.connect = Err("still connecting when its time was up".into());
                out.count_error(&ClientError::Timeout("connect"));
            }
            break;
        };
        // The server's hint, when it refused us for a reason that waiting cures.
        let mut hint = Duration::ZERO;
        match connected {
            Err(e) => {
                if let ClientError::Rejected { retry_after_ms, .. } = &e {
                    hint = Duration::from_millis(u64::from(*retry_after_ms));
                }
                live::bump(&live.failed);
                out.count_error(&e);
                if !out.connected() {
                    out.connect = Err(e.to_string());
                }
            }
            Ok((mut transport, mut reader, welcome)) => {
                let welcomed = tokio::time::Instant::now();
                let connect = welcomed - attempt;
                live.welcomed();
                if out.connected() {
                    live::bump(&live.reconnects);
                } else {
                    out.connect = Ok(connect);
                }
                if welcome.resumed {
                    live::bump(&live.resumes);
                }
                resume = Some(welcome.resume_token);
                out.sessions.push(Session {
                    welcomed_at: welcomed.saturating_duration_since(config.swarm_start),
                    connect,
                    played: Duration::ZERO,
                    lost: None,
                    entity: welcome.entity,
                    resumed: welcome.resumed,
                });
                let ended = {
                    let _open = Held::new(&live.connected);
                    play(
                        &config,
                        &mut transport,
                        &mut reader,
                        welcome,
                        &mut out,
                        deadline,
                    )
                    .await
                };
                let played = welcomed.elapsed();
                out.played += played;
                transport
                    .conn
                    .close(crate::client::close_varint(CLOSE_CLIENT_LEFT), b"bot done");
                // Let the close frame leave before the endpoint is dropped.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), transport.endpoint.wait_idle())
                        .await;
                let lost = ended.err();
                if let Some(ClientError::Disconnected {
                    reconnect_after_ms, ..
                }) = &lost
                {
                    hint = Duration::from_millis(u64::from(*reconnect_after_ms));
                }
                if let Some(e) = &lost {
                    out.count_error(e);
                    out.disconnected = Some(e.to_string());
                }
                if let Some(session) = out.sessions.last_mut() {
                    session.played = played;
                    session.lost = lost.as_ref().map(ToString::to_string);
                }
                if lost.is_none() {
                    break; // its time is up
                }
                if played >= STABLE_SESSION {
                    backoff.reset();
                }
            }
        }
        // Never sooner than the server asked; jitter still spreads the bots it refused.
        let delay = backoff.next_delay().max(hint);
        if tokio::time::Instant::now() + delay >= deadline {
            break;
        }
        let _waiting = Held::new(&live.retrying);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = config.stop.cancelled() => break,
        }
    }
    out
}

async fn connect(
    config: &BotConfig,
    resume: Option<ResumeToken>,
    out: &mut BotOutcome,
) -> Result<(Transport, FrameReader, Welcome), ClientError> {
    let mut info = client::fetch_connect_info(&config.server, &config.name).await?;
    if let Some(addr) = config.connect_via {
        info.url = client::url_via(&info.url, addr);
    }
    let mut transport = client::open(&info, config.idle_timeout).await?;
    let mut reader = FrameReader::new();
    let welcome = transport
        .resume_handshake(&info.token, &config.name, resume, &mut reader)
        .await?;
    out.up_bytes += (info.token.len() + config.name.len() + 16) as u64;
    // The welcome (with the map) came on the stream before the play loop reads it.
    out.down_bytes += transport.handshake_bytes_read;
    Ok((transport, reader, welcome))
}

/// Tracks snapshot parts per tick, to count complete snapshots. Bounded: only the newest few
/// ticks are kept.
#[derive(Default)]
struct Assembly {
    ticks: HashMap<u32, (u16, u16)>,
    newest: u32,
}

impl Assembly {
    const WINDOW: u32 = 8;

    /// Returns true when this part completes its tick.
    fn part(&mut self, tick: u32, parts: u16) -> bool {
        if tick + Self::WINDOW < self.newest {
            return false;
        }
        self.newest = self.newest.max(tick);
        let newest = self.newest;
        self.ticks.retain(|t, _| t + Self::WINDOW >= newest);
        let entry = self.ticks.entry(tick).or_insert((0, parts));
        entry.0 += 1;
        entry.0 == entry.1
    }
}

/// Time after the first snapshot before prediction, lateness and clock figures count: the
/// clock needs a few round trips to settle.
pub const WARM_UP: Duration = Duration::from_secs(1);

/// Everything one bot tracks during one session.
struct Play<'a> {
    config: &'a BotConfig,
    /// Idle: no inputs, no pings, no prediction or interpolation; only acknowledgements.
    idle: bool,
    /// An acknowledgement waiting to leave with the next input (frames since it was due).
    ack_pending: Option<u32>,
    entity: u32,
    tick_rate: u16,
    map: Map,
    started: Instant,
    clock: ClockSync,
    receiver: Receiver,
    interp: Interpolator,
    predictor: Option<Predictor>,
    rng: SplitMix64,
    walk: Walk,
    /// A chaser's target, found once per view: (view tick, its id and where the view has it).
    target: Option<(u32, Option<(u32, Vec2)>)>,
    /// Client ticks at which the rifle and the rocket may fire again (the server's rates).
    rifle_ready: u32,
    rocket_ready: u32,
    /// Between its death and its respawn a bot holds its fire (the server would ignore it).
    dead: bool,
    /// The newest inputs sent, `(seq, movement)`: a predictor started mid-session (after a
    /// respawn) replays those the server had not applied yet, as if it had seen them sent.
    sent: std::collections::VecDeque<(u32, MoveDir)>,
    seq: u32,
    pings: HashMap<u32, Instant>,
    nonce: u32,
    assembly: Assembly,
    part_bytes: u64,
    /// When the first snapshot arrived, and the server's late count then.
    warm_from: Option<(Instant, Option<u32>)>,
    /// The bot's late inputs and interpolation underruns before this session.
    late_before: u64,
    underruns_before: u64,
    /// Impairment, when configured, and what it holds back each way.
    imp: Option<Impairment>,
    out_stream: DelayLine<Vec<u8>>,
    out_dgram: DelayLine<Vec<u8>>,
    in_stream: DelayLine<Vec<u8>>,
    in_dgram: DelayLine<Vec<u8>>,
}

impl Play<'_> {
    fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn warm(&self) -> bool {
        self.warm_from.is_some_and(|(t, _)| t.elapsed() >= WARM_UP)
    }

    /// Where a chaser heads and aims: at the nearest player or NPC it sees (found once per new
    /// view), where its interpolation draws it now (what a player would aim at, and what the
    /// server's lag compensation rewinds to), from where it predicts itself to be.
    fn chase(&mut self, out: &BotOutcome, render: Option<f64>) -> Option<Vec2> {
        let me = self
            .predictor
            .as_ref()
            .map(|p| p.body().pos)
            .or(out.last_pos)?;
        let view = self.receiver.latest()?;
        let (id, seen) = match self.target {
            Some((tick, target)) if tick == view.tick => target,
            _ => {
                let target = behaviour::nearest_other(view, self.entity, me);
                self.target = Some((view.tick, target));
                target
            }
        }?;
        let drawn = render
            .and_then(|r| self.interp.position(id, r))
            .unwrap_or(seen);
        Some(drawn - me)
    }
    /// Acknowledges the newest view the receiver holds.
    fn send_ack(&mut self, t: &Transport, out: &mut BotOutcome) {
        self.ack_pending = None;
        if let Some(ack) = self.receiver.ack() {
            let bytes = codec::encode_client_datagram(&ClientDatagram::Ack(ack));
            self.send_datagram(t, bytes, out);
        }
    }

    /// Inputs for every client tick that became due: predicted at once, then sent, with the
    /// pending acknowledgement just before them (or alone, if no input was due for a tick).
    async fn frame(&mut self, t: &mut Transport, out: &mut BotOutcome) -> Result<(), ClientError> {
        let now = self.now_ms();
        let due = self.clock.advance(now);
        if let Some(waited) = self.ack_pending {
            if !due.is_empty() || waited >= 2 {
                self.send_ack(t, out);
            } else {
                self.ack_pending = Some(waited + 1);
            }
        }
        // The time the bot draws others at: what its shots are judged against.
        let render = self.clock.render_tick(now, self.interp.delay_ticks());
        for tick in due {
            let (dir, aim, buttons) = match self.config.behaviour {
                Behaviour::Heading(d) => (d, d, 0),
                Behaviour::Chase => match self.chase(out, render).filter(|_| !self.dead) {
                    Some(to) => {
                        // The rifle at anything in its reach, a rocket now and then at
                        // whatever is close.
                        let mut b = 0;
                        if to.length() <= combat::RIFLE.range {
                            b |= Buttons::FIRE;
                        }
                        if to.length() <= 500.0 && self.rng.below(4) == 0 {
                            b |= Buttons::ALT_FIRE;
                        }
                        (to.normalize_or_zero(), to, b)
                    }
                    None => {
                        let d = self.walk.next(&mut self.rng, self.tick_rate);
                        (d, d, 0)
                    }
                },
                Behaviour::Wander | Behaviour::Idle => {
                    let d = self.walk.next(&mut self.rng, self.tick_rate);
                    (d, d, 0)
                }
            };
            let movement = MoveDir::from_vec2(dir);
            out.input_sum += movement.to_vec2();
            self.seq = self.seq.wrapping_add(1);
            if self.sent.len() >= SENT_LOG {
                self.sent.pop_front();
            }
            self.sent.push_back((self.seq, movement));
            if let Some(p) = &mut self.predictor {
                p.apply(self.seq, movement, &self.map);
            }
            let (view_tick, view_frac) = match render {
                Some(r) if r > 0.0 => (r.floor() as u32, ((r - r.floor()) * 256.0) as u8),
                _ => (tick, 0),
            };
            let input = Input {
                seq: self.seq,
                tick,
                movement,
                aim: Aim::from_radians(aim.y.atan2(aim.x)),
                buttons: Buttons(buttons),
                view_tick,
                view_frac,
            };
            self.send_msg(t, &ClientMsg::Input(input), out).await?;
            out.inputs_sent += 1;
            if buttons & Buttons::FIRE != 0 {
                out.fire_inputs += 1;
                if tick >= self.rifle_ready {
                    self.rifle_ready = tick + combat::RIFLE.cooldown_ticks;
                    out.shots_fired += 1;
                }
            }
            if buttons & Buttons::ALT_FIRE != 0 && tick >= self.rocket_ready {
                self.rocket_ready = tick + combat::ROCKET.cooldown_ticks;
                out.shots_fired += 1;
            }
        }
        if let Some(p) = &mut self.predictor {
            p.advance_render(1.0 / (2.0 * f32::from(self.tick_rate)));
        }
        if let Some(render) = render {
            self.interp.frame(render);
            out.interp_underruns = self.underruns_before + self.interp.underruns();
        }
        Ok(())
    }

    /// Sends a reliable message now, or after the impairment's delay.
    async fn send_msg(
        &mut self,
        t: &mut Transport,
        msg: &ClientMsg,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        let mut frame = Vec::new();
        codec::encode_client(msg, &mut frame).map_err(|_| ClientError::BadFrame)?;
        out.up_bytes += frame.len() as u64;
        match &mut self.imp {
            Some(imp) => {
                let at = imp.stream(tokio::time::Instant::now(), Direction::Up);
                self.out_stream.push(at, frame);
                Ok(())
            }
            None => t.write_raw(&frame).await,
        }
    }

    /// Sends a datagram now, or as the impairment decides (maybe never, maybe twice).
    fn send_datagram(&mut self, t: &Transport, bytes: Vec<u8>, out: &mut BotOutcome) {
        out.up_bytes += bytes.len() as u64;
        match &mut self.imp {
            Some(imp) => {
                for at in imp.datagram(tokio::time::Instant::now()) {
                    self.out_dgram.push(at, bytes.clone());
                }
            }
            // A lost or refused ack costs only a slightly older baseline.
            None => drop(t.conn.send_datagram(bytes)),
        }
    }

    /// The earliest item any delay line holds.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        [
            &self.out_stream,
            &self.out_dgram,
            &self.in_stream,
            &self.in_dgram,
        ]
        .iter()
        .filter_map(|l| l.next_due())
        .min()
    }

    /// Bytes of the server's stream: frames decoded and handled.
    fn on_stream_bytes(
        &mut self,
        bytes: &[u8],
        reader: &mut FrameReader,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        reader.push(bytes);
        while let Some(body) = reader.next_frame().map_err(|_| ClientError::BadFrame)? {
            match codec::decode_server(&body).map_err(|_| ClientError::BadFrame)? {
                ServerMsg::Pong(p) => self.on_pong(p.nonce, out),
                ServerMsg::Disconnect(d) => {
                    return Err(ClientError::Disconnected {
                        reason: d.reason,
                        message: d.message,
                        reconnect_after_ms: d.reconnect_after_ms,
                    });
                }
                ServerMsg::Event(e) => self.on_event(e, out),
                // Bots do not ask who is who.
                ServerMsg::Names(_) => {}
                ServerMsg::Welcome(_) | ServerMsg::Reject(_) => return Err(ClientError::BadFrame),
            }
        }
        Ok(())
    }

    /// A game event about this bot.
    fn on_event(&mut self, event: GameEvent, out: &mut BotOutcome) {
        match event {
            GameEvent::Hit { attacker, .. } if attacker == self.entity => out.hits_confirmed += 1,
            GameEvent::Killed { killer, victim } => {
                if killer == self.entity {
                    out.kills += 1;
                }
                if victim == self.entity {
                    out.deaths += 1;
                    self.dead = true;
                }
            }
            // Prediction starts again from the new position (the snapshot that shows it may
            // come first or after; either way the old prediction is void).
            GameEvent::Respawned { .. } => {
                self.predictor = None;
                self.dead = false;
            }
            GameEvent::Hit { .. } | GameEvent::Score { .. } => {}
        }
    }

    /// One datagram from the server.
    fn on_datagram(
        &mut self,
        t: &Transport,
        payload: &[u8],
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        match codec::decode_datagram(payload).map_err(|_| ClientError::BadFrame)? {
            ServerDatagram::Delta(input, snap) => {
                self.on_delta(input, &snap, payload.len(), out);
                if self.idle {
                    self.send_ack(t, out);
                } else {
                    // It leaves with the next input, in the same QUIC packet: one packet up
                    // per tick instead of two, for the bot and for the server.
                    self.ack_pending.get_or_insert(0);
                }
            }
            ServerDatagram::Snapshot(snap) => {
                // Full mode (comparison only): no prediction; the clock still follows.
                self.part_bytes += payload.len() as u64;
                if self.assembly.part(snap.tick, snap.parts) {
                    out.snapshots += 1;
                    live::bump(&self.config.live.snapshots);
                    out.snapshot_bytes.saturating_record(self.part_bytes);
                    self.part_bytes = 0;
                    let now = self.now_ms();
                    self.clock.on_server_tick(snap.tick, now);
                }
                if let Some(me) = snap.entities.iter().find(|e| e.id == self.entity) {
                    out.first_pos.get_or_insert(me.pos);
                    out.last_pos = Some(me.pos);
                }
            }
        }
        Ok(())
    }

    /// Releases everything the impairment held back that is now due, both ways.
    async fn release_due(
        &mut self,
        t: &mut Transport,
        reader: &mut FrameReader,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        let now = tokio::time::Instant::now();
        while let Some(frame) = self.out_stream.pop_due(now) {
            t.write_raw(&frame).await?;
        }
        while let Some(bytes) = self.out_dgram.pop_due(now) {
            let _ = t.conn.send_datagram(bytes);
        }
        while let Some(bytes) = self.in_stream.pop_due(now) {
            self.on_stream_bytes(&bytes, reader, out)?;
        }
        while let Some(payload) = self.in_dgram.pop_due(now) {
            self.on_datagram(t, &payload, out)?;
        }
        Ok(())
    }

    fn on_pong(&mut self, nonce: u32, out: &mut BotOutcome) {
        if let Some(sent) = self.pings.remove(&nonce) {
            let rtt = sent.elapsed();
            out.rtt_us.saturating_record(rtt.as_micros().max(1) as u64);
            self.config.live.record_rtt(rtt);
            self.clock.on_rtt(rtt.as_secs_f64() * 1000.0);
        }
    }

    fn on_delta(
        &mut self,
        input: InputStatus,
        snap: &DeltaSnapshot,
        size: usize,
        out: &mut BotOutcome,
    ) {
        out.snapshot_bytes.saturating_record(size as u64);
        let now = self.now_ms();
        let (tick, in_view) = match self.receiver.receive(snap) {
            Ok(view) => (view.tick, view.entities.len()),
            Err(ReceiveError::MissingBaseline(_)) => {
                out.baseline_misses += 1;
                return;
            }
            Err(_) => return,
        };
        out.snapshots += 1;
        live::bump(&self.config.live.snapshots);
        out.in_view.saturating_record(in_view as u64);
        // Borrowed from the ring rather than copied: this runs for every snapshot of every bot.
        let Some(view) = self.receiver.view(tick) else {
            return;
        };
        let newest = self.receiver.latest().is_some_and(|l| l.tick == tick);
        if self.idle {
            if let Some(me) = view.get(self.entity) {
                let pos = me.pos_at(tick, self.tick_rate);
                out.first_pos.get_or_insert(pos);
                out.last_pos = Some(pos);
            }
            return;
        }
        if newest {
            if self.warm() {
                // How far the estimate was from the tick this snapshot proves, one way later.
                if let (Some(est), Some(rtt)) = (self.clock.server_tick(now), self.clock.rtt_ms()) {
                    let truth = f64::from(tick) + rtt / 2.0 / (1000.0 / f64::from(self.tick_rate));
                    let err_ms = (est - truth).abs() * 1000.0 / f64::from(self.tick_rate);
                    out.clock_error_us
                        .saturating_record((err_ms * 1000.0).max(1.0) as u64);
                }
            }
            self.clock.on_server_tick(tick, now);
            self.clock.on_input_report(input.late, input.lead, now);
            self.interp.push(view, now);
        }
        let warm_from = self.warm_from.get_or_insert((Instant::now(), None));
        if warm_from.0.elapsed() >= WARM_UP && warm_from.1.is_none() {
            warm_from.1 = Some(input.late);
        }
        if let Some(base) = warm_from.1 {
            out.inputs_late = self.late_before + u64::from(input.late.saturating_sub(base));
        }
        let Some(me) = view.get(self.entity) else {
            // Dead (hidden until it respawns elsewhere): nothing to reconcile with.
            self.predictor = None;
            return;
        };
        let pos = me.pos_at(tick, self.tick_rate);
        out.first_pos.get_or_insert(pos);
        out.last_pos = Some(pos);
        let server = Body { pos, vel: me.vel() };
        match &mut self.predictor {
            None => {
                // The server's state includes inputs up to `last_seq`; those sent after it are
                // in flight and must be predicted on top, or the next reconcile would see them
                // as an error.
                let mut p = Predictor::new(server, sim::PLAYER, self.tick_rate);
                for &(seq, movement) in &self.sent {
                    if seq > input.last_seq {
                        p.apply(seq, movement, &self.map);
                    }
                }
                self.predictor = Some(p);
            }
            Some(p) if input.last_seq != 0 && newest => {
                let pending = p.pending();
                let correction = p.reconcile(input.last_seq, server, &self.map);
                if let Some(c) = correction {
                    tracing::debug!(
                        seq = input.last_seq,
                        my_seq = self.seq,
                        pending,
                        tick,
                        client_tick = ?self.clock.client_tick(),
                        error = c.error,
                        "prediction corrected"
                    );
                }
                if let Some(c) = correction
                    .filter(|_| self.warm_from.is_some_and(|(t, _)| t.elapsed() >= WARM_UP))
                {
                    out.prediction_corrections += 1;
                    live::bump(&self.config.live.corrections);
                    out.prediction_max_error = out.prediction_max_error.max(c.error);
                }
            }
            Some(_) => {}
        }
    }
}

/// One session: plays until `deadline` or `stop` (`Ok`), or until the session is lost.
async fn play(
    config: &BotConfig,
    t: &mut Transport,
    reader: &mut FrameReader,
    welcome: Welcome,
    out: &mut BotOutcome,
    deadline: tokio::time::Instant,
) -> Result<(), ClientError> {
    let tick_rate = welcome.tick_rate.max(1);
    let idle = config.behaviour == Behaviour::Idle;
    // Frames at twice the tick rate: the clock decides which ticks are due.
    let mut frame_timer =
        tokio::time::interval(Duration::from_secs_f64(0.5 / f64::from(tick_rate)));
    frame_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_timer = tokio::time::interval(PING_INTERVAL);
    ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    out.entity = Some(welcome.entity);
    out.tick_rate = welcome.tick_rate;
    // What describes "the last session" starts again.
    out.first_pos = None;
    out.last_pos = None;
    out.input_sum = Vec2::ZERO;
    out.last_view = None;
    let mut s = Play {
        config,
        idle,
        ack_pending: None,
        entity: welcome.entity,
        tick_rate,
        map: welcome.map,
        started: Instant::now(),
        clock: ClockSync::new(tick_rate),
        receiver: Receiver::new(tick_rate),
        interp: Interpolator::new(tick_rate),
        predictor: None,
        rng: SplitMix64::new(config.seed),
        walk: Walk::default(),
        target: None,
        rifle_ready: 0,
        rocket_ready: 0,
        dead: false,
        sent: std::collections::VecDeque::with_capacity(SENT_LOG),
        seq: 0,
        pings: HashMap::new(),
        nonce: 0,
        assembly: Assembly::default(),
        part_bytes: 0,
        warm_from: None,
        late_before: out.inputs_late,
        underruns_before: out.interp_underruns,
        imp: (!config.impair.is_none())
            .then(|| Impairment::new(config.impair, config.seed ^ 0x1A9A_1A9A)),
        out_stream: DelayLine::default(),
        out_dgram: DelayLine::default(),
        in_stream: DelayLine::default(),
        in_dgram: DelayLine::default(),
    };
    let mut buf = [0u8; 4096];
    let live = &config.live;

    loop {
        let due = s.next_due();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = config.stop.cancelled() => break,
            _ = frame_timer.tick(), if !idle => s.frame(t, out).await?,
            _ = ping_timer.tick(), if !idle => {
                s.nonce = s.nonce.wrapping_add(1);
                if s.pings.len() >= MAX_PINGS_IN_FLIGHT {
                    s.pings.clear();
                }
                s.pings.insert(s.nonce, Instant::now());
                let nonce = s.nonce;
                s.send_msg(t, &ClientMsg::Ping(Ping { nonce }), out).await?;
            }
            _ = tokio::time::sleep_until(due.unwrap_or(deadline)), if due.is_some() => {
                s.release_due(t, reader, out).await?;
            }
            read = t.recv.read(&mut buf) => match read {
                Ok(Some(n)) => {
                    out.down_bytes += n as u64;
                    live.down_bytes.fetch_add(n as u64, Relaxed);
                    match &mut s.imp {
                        Some(imp) => {
                            let at = imp.stream(tokio::time::Instant::now(), Direction::Down);
                            s.in_stream.push(at, buf[..n].to_vec());
                        }
                        None => s.on_stream_bytes(&buf[..n], reader, out)?,
                    }
                }
                Ok(None) => return Err(ClientError::Closed("server finished its stream".into())),
                Err(_) => return Err(client::close_error(t.conn.closed().await)),
            },
            datagram = t.conn.receive_datagram() => {
                let datagram = datagram.map_err(client::close_error)?;
                let payload = datagram.payload();
                out.datagrams += 1;
                out.down_bytes += payload.len() as u64;
                live.down_bytes.fetch_add(payload.len() as u64, Relaxed);
                match &mut s.imp {
                    Some(imp) => {
                        for at in imp.datagram(tokio::time::Instant::now()) {
                            s.in_dgram.push(at, payload.to_vec());
                        }
                    }
                    None => s.on_datagram(t, &payload, out)?,
                }
            }
        }
    }
    out.last_view = s.receiver.latest().cloned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_counts_once_all_its_parts_arrive_and_old_ticks_are_forgotten() {
        let mut a = Assembly::default();
        assert!(!a.part(10, 2));
        assert!(a.part(10, 2));
        assert!(a.part(11, 1));
        assert!(!a.part(12, 3));
        assert!(!a.part(12, 3));
        assert!(a.part(12, 3));
        a.part(100, 2);
        assert!(!a.part(12, 3), "ticks far behind the newest are ignored");
        assert!(a.ticks.len() <= Assembly::WINDOW as usize + 1);
    }

    #[test]
    fn a_bots_histograms_stay_small() {
        // Four a bot, thousands of bots: each must stay in the tens of kilobytes.
        for h in [new_rtt_histogram(), new_count_histogram()] {
            let bytes = h.distinct_values() * std::mem::size_of::<u64>();
            assert!(bytes <= 24 * 1024, "{bytes} bytes");
        }
    }
}
