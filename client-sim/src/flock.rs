//! Flocks: a swarm's bots driven a flock at a time, each flock one task over one UDP socket
//! that runs its bots' QUIC connections as quinn-proto state machines. Every bot is still its
//! own QUIC connection, WebTransport session and player; what a flock shares is the socket,
//! the wake-up and the loop.
//!
//! With a task per bot over quinn's and wtransport's async layers, each datagram woke the
//! endpoint's driver, the connection's driver and the bot's task in turn, through channels and
//! a lock, and each input went back the same way: at 400 bots the bots' process spent more on
//! that machinery than on QUIC itself. A flock's task wakes when its socket has datagrams or
//! its earliest timer is due; one `recvmmsg` reads every bot's snapshot of a tick, each
//! connection touched is stepped once (its events read, its bot's frame run, its packets
//! written), and nothing else runs (BENCHMARKS.md, "Issue 21: bots as flocks").
//!
//! A bot's task ([`crate::bot`]) still owns its life between sessions: the HTTP fetch of
//! `/api/connect`, the backoff, the route after a move. For each session it hands its
//! [`Player`] and [`BotOutcome`] to its flock ([`Flock::session`]) and gets them back when the
//! session ends; it sleeps meanwhile.
//!
//! The WebTransport client is the minimum a WebTransport server needs, from
//! `wtransport-proto`'s sans-IO frames: HTTP/3 SETTINGS on a control stream, the extended
//! CONNECT on a bidirectional stream, its `200` awaited, then the session's one bidirectional
//! stream (its `WEBTRANSPORT_STREAM` header first) and datagrams prefixed with the session's
//! quarter stream id. Streams the server opens (its control stream) are read and dropped.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arena_shared::client_session::Transmit;
use arena_shared::protocol::CLOSE_CLIENT_LEFT;
use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event,
    StreamEvent, StreamId,
};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wtransport::VarInt;
use wtransport::proto::bytes::BufferReader;
use wtransport::proto::datagram::Datagram;
use wtransport::proto::frame::{Frame, FrameKind};
use wtransport::proto::headers::Headers;
use wtransport::proto::ids::{QStreamId, SessionId, StatusCode, StreamId as WtStreamId};
use wtransport::proto::session::{SessionRequest, SessionResponse};
use wtransport::proto::settings::Settings;
use wtransport::proto::stream_header::StreamHeader;
use wtransport::quinn::udp::{RecvMeta, Transmit as UdpTransmit, UdpSockRef, UdpSocketState};
use wtransport::tls::Sha256Digest;

use crate::connect::{self, ClientError, ConnectInfo, STEP_TIMEOUT};
use crate::endpoints::RECV_BUFFER_PER_BOT;
use crate::impair::{DelayLine, Direction, ImpairConfig, Impairment};
use crate::live::LiveStats;
use crate::outcome::BotOutcome;
use crate::player::{Player, Welcomed};

/// Bytes taken from a stream at a time: one packet's worth (the welcome, with the map, takes a
/// few).
const READ_MAX: usize = 1200;

/// Datagrams of the session kept while its `Welcome` is still being read: the server's first
/// snapshots follow the `Welcome` at once, and may be read first.
const EARLY_DATAGRAMS: usize = 4;

/// What a bot hands its flock for one session.
pub struct Dial {
    pub info: ConnectInfo,
    pub player: Player,
    pub out: BotOutcome,
    pub idle_timeout: Duration,
    /// An idle bot runs no frames; it only acknowledges what it receives.
    pub idle: bool,
    pub impair: ImpairConfig,
    pub impair_seed: u64,
    pub live: Arc<LiveStats>,
    /// The player's clock counts from here.
    pub origin: tokio::time::Instant,
    /// The bot leaves at this instant, connecting or playing.
    pub deadline: tokio::time::Instant,
    /// Cancelled: the bot leaves now.
    pub stop: CancellationToken,
    /// When this attempt began (its `GET /api/connect`): the session's connect time counts
    /// from it.
    pub attempt: tokio::time::Instant,
    /// When this attempt was due ([`crate::outcome::Session::due_at`]).
    pub due: tokio::time::Instant,
    /// The swarm's start: a session's `welcomed_at` counts from it.
    pub swarm_start: tokio::time::Instant,
}

/// How a session handed to a flock ended.
#[derive(Debug)]
pub enum Ended {
    /// Its deadline (or the stop) came before a `Welcome`.
    OutOfTime,
    /// It never got a `Welcome`.
    Failed(ClientError),
    /// It was welcomed, then played until its deadline or the stop (`Ok`), or until the
    /// session was lost.
    Played {
        welcome: Welcomed,
        welcomed: tokio::time::Instant,
        ended: Result<(), ClientError>,
    },
}

/// A session's player and outcome, given back, and how it ended.
pub struct Played {
    pub player: Player,
    pub out: BotOutcome,
    pub ended: Ended,
}

/// A flock, as a bot holds it.
#[derive(Clone)]
pub struct Flock {
    tx: mpsc::UnboundedSender<(Box<Dial>, oneshot::Sender<Played>)>,
}

impl Flock {
    /// Plays one session of a bot on this flock: connects, plays until the deadline, the stop
    /// or the session's loss, and gives the player and outcome back. `None`: the flock's task
    /// is gone (the runtime shutting down, or a panic in it) and took them with it.
    pub async fn session(&self, dial: Dial) -> Option<Played> {
        let (reply, played) = oneshot::channel();
        if let Err(mpsc::error::SendError((dial, _))) = self.tx.send((Box::new(dial), reply)) {
            let dial = *dial;
            return Some(Played {
                player: dial.player,
                out: dial.out,
                ended: Ended::Failed(ClientError::Closed("the bot's flock has ended".into())),
            });
        }
        played.await.ok()
    }
}

/// A flock and its task.
type Running = (Flock, tokio::task::JoinHandle<()>);

/// A swarm's flocks: bot `i` belongs to flock `i / per_flock`, made when its first bot needs
/// it, so that `n` bots use `ceil(n / per_flock)` sockets.
pub struct Flocks {
    per_flock: u32,
    bind: Option<IpAddr>,
    /// Flock `i`, with its task, until [`Flocks::wait_idle`] lets it end.
    flocks: Mutex<Vec<Option<Running>>>,
    /// Flocks made, ended ones included.
    made: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Flocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flocks")
            .field("per_flock", &self.per_flock)
            .field("bind", &self.bind)
            .field("flocks", &self.count())
            .finish()
    }
}

impl Flocks {
    /// At most `per_flock` bots (at least one) a flock, their sockets bound to `bind` (any
    /// free port) or to the wildcard address.
    pub fn new(per_flock: u32, bind: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            per_flock: per_flock.max(1),
            bind,
            flocks: Mutex::new(Vec::new()),
            made: Default::default(),
        })
    }

    /// Bot `index`'s flock, its task started if it is the flock's first bot. Must be called
    /// within a tokio runtime.
    pub fn of(&self, index: u32) -> Result<Flock, ClientError> {
        let slot = (index / self.per_flock) as usize;
        let mut flocks = self.flocks.lock().unwrap_or_else(|e| e.into_inner());
        if flocks.len() <= slot {
            flocks.resize_with(slot + 1, || None);
        }
        if let Some((flock, _)) = &flocks[slot] {
            return Ok(flock.clone());
        }
        let socket = bind(self.bind, self.per_flock as usize)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(socket, rx));
        let flock = Flock { tx };
        flocks[slot] = Some((flock.clone(), task));
        self.made.fetch_add(1, Relaxed);
        Ok(flock)
    }

    /// Flocks (sockets) made so far, ended ones included.
    pub fn count(&self) -> usize {
        self.made.load(Relaxed)
    }

    /// Lets every flock end once its connections have closed (their close frames sent), for
    /// at most `timeout`; `true` if all ended. The bots must be done.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let tasks: Vec<_> = {
            let mut flocks = self.flocks.lock().unwrap_or_else(|e| e.into_inner());
            flocks
                .iter_mut()
                .filter_map(Option::take)
                .map(|(_, t)| t)
                .collect()
        };
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}

fn bind(ip: Option<IpAddr>, bots: usize) -> Result<tokio::net::UdpSocket, ClientError> {
    let socket = match ip {
        Some(ip) => std::net::UdpSocket::bind(SocketAddr::new(ip, 0)),
        None => std::net::UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0))
            .or_else(|_| {
                std::net::UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))
            }),
    }
    .map_err(|e| ClientError::Connect(format!("binding a UDP socket: {e}")))?;
    crate::endpoints::size_recv_buffer(&socket, bots * RECV_BUFFER_PER_BOT);
    socket
        .set_nonblocking(true)
        .map_err(|e| ClientError::Connect(format!("socket: {e}")))?;
    tokio::net::UdpSocket::from_std(socket)
        .map_err(|e| ClientError::Connect(format!("socket: {e}")))
}

/// Where a WebTransport session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The QUIC handshake.
    Handshake,
    /// The CONNECT request sent; its response awaited.
    Connecting,
    /// The session's stream opened with the `Hello`; the `Welcome` awaited.
    Welcoming,
    Playing,
}

/// One bot's session on the flock.
struct Bot {
    dial: Box<Dial>,
    reply: oneshot::Sender<Played>,
    url: String,
    stage: Stage,
    /// The current step (handshake, welcome) fails at this instant.
    step_deadline: Instant,
    connect_stream: Option<StreamId>,
    game: Option<StreamId>,
    session: Option<SessionId>,
    /// The CONNECT stream's bytes not yet parsed.
    connect_buf: Vec<u8>,
    welcome: Option<(Welcomed, tokio::time::Instant)>,
    frame_at: Instant,
    /// Stream bytes the connection's flow control has not taken yet.
    unsent: Vec<u8>,
    /// The session's datagrams read before its `Welcome` ([`EARLY_DATAGRAMS`] at most).
    early: Vec<Bytes>,
    tx: Transmit,
    imp: Option<Impaired>,
}

/// What an impaired path holds back, each way.
struct Impaired {
    imp: Impairment,
    out_stream: DelayLine<Vec<u8>>,
    out_dgram: DelayLine<Vec<u8>>,
    in_stream: DelayLine<Bytes>,
    in_dgram: DelayLine<Bytes>,
}

impl Impaired {
    fn next_due(&self) -> Option<tokio::time::Instant> {
        [
            self.out_stream.next_due(),
            self.out_dgram.next_due(),
            self.in_stream.next_due(),
            self.in_dgram.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// One QUIC connection of the flock: a bot's, or one closing after its bot left.
struct Conn {
    handle: ConnectionHandle,
    conn: quinn_proto::Connection,
    bot: Option<Bot>,
    /// Something happened to it since its last step.
    dirty: bool,
    /// Its next timer, as of its last step.
    timeout: Option<Instant>,
    /// When its bot must be stepped next (its frame, its deadline, what the impairment
    /// releases), as of its last step: only a step changes it.
    bot_wake: Option<Instant>,
}

/// The flock's socket and what it reads and writes with.
struct Io {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// The socket is IPv6 dual-stack: IPv4 peers are dialled as mapped addresses.
    v6: bool,
    transmit: Vec<u8>,
    max_gso: usize,
}

impl Io {
    fn send(&self, contents: &[u8], t: &quinn_proto::Transmit) {
        let tx = UdpTransmit {
            destination: t.destination,
            ecn: t
                .ecn
                .and_then(|e| wtransport::quinn::udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        // A datagram the socket cannot take now is lost, as on the path: QUIC resends what
        // needs it.
        let _ = self.socket.try_io(Interest::WRITABLE, || {
            self.state.send(UdpSockRef::from(&self.socket), &tx)
        });
    }
}

fn std_instant(t: tokio::time::Instant) -> Instant {
    t.into_std()
}

fn now_ms(origin: tokio::time::Instant) -> f64 {
    origin.elapsed().as_secs_f64() * 1000.0
}

/// A flock's task: takes bots' sessions from `dials` until every sender is gone, and ends
/// when its last connection has closed.
async fn run(
    socket: tokio::net::UdpSocket,
    mut dials: mpsc::UnboundedReceiver<(Box<Dial>, oneshot::Sender<Played>)>,
) {
    let state = match UdpSocketState::new(UdpSockRef::from(&socket)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, "a flock's socket cannot be used");
            return;
        }
    };
    let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let max_gso = state.max_gso_segments();
    let gro = state.gro_segments().max(1);
    let mut io = Io {
        socket,
        state,
        v6,
        transmit: Vec::with_capacity(1500),
        max_gso,
    };
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
    let mut configs = Configs::default();
    let mut conns: Vec<Conn> = Vec::new();
    let slot = 1500 * gro;
    let batch = wtransport::quinn::udp::BATCH_SIZE;
    let mut rbuf = vec![0u8; slot * batch];
    let mut metas = vec![RecvMeta::default(); batch];
    let mut response: Vec<u8> = Vec::new();
    let mut pending: VecDeque<(ConnectionHandle, quinn_proto::ConnectionEvent)> = VecDeque::new();
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut open = true;
    // Any bot's stop token: a swarm's bots share one. Each bot's own is also checked at
    // every step.
    let mut stop: Option<CancellationToken> = None;

    loop {
        let now = Instant::now();
        loop {
            while let Some((h, ev)) = pending.pop_front() {
                if let Some(c) = conns.iter_mut().find(|c| c.handle == h) {
                    c.conn.handle_event(ev);
                    c.dirty = true;
                }
            }
            for c in conns.iter_mut() {
                if c.timeout.is_some_and(|t| t <= now) {
                    c.conn.handle_timeout(now);
                    c.dirty = true;
                }
                if c.bot_wake.is_some_and(|t| t <= now) {
                    c.dirty = true;
                }
                if c.dirty {
                    c.dirty = false;
                    step(c, now, &mut io, &mut endpoint, &mut pending);
                    c.timeout = c.conn.poll_timeout();
                    c.bot_wake = c.bot.as_ref().map(Bot::next_wake);
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        conns.retain(|c| !(c.bot.is_none() && c.conn.is_drained()));
        if !open && conns.is_empty() {
            return;
        }
        let mut next = now + Duration::from_secs(1);
        for c in &conns {
            next = [c.timeout, c.bot_wake]
                .into_iter()
                .flatten()
                .fold(next, Instant::min);
        }
        sleep.as_mut().reset(tokio::time::Instant::from_std(next));
        let stopping = stop.clone();
        let stopped = async {
            match &stopping {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stopped, if conns.iter().any(|c| c.bot.is_some()) => {
                for c in conns.iter_mut() {
                    c.dirty = true;
                }
                // Checked at each bot's step; taken so that this branch fires once.
                stop = None;
            }
            r = io.socket.readable() => {
                if r.is_err() {
                    continue;
                }
                receive(&mut io, &mut endpoint, &mut rbuf, slot, &mut metas, &mut response, &mut pending);
            }
            _ = &mut sleep => {}
            d = dials.recv(), if open => match d {
                None => open = false,
                Some((dial, reply)) => {
                    if stop.is_none() && !dial.stop.is_cancelled() {
                        stop = Some(dial.stop.clone());
                    }
                    match dial_one(&mut endpoint, &mut configs, &io, dial, reply) {
                        Ok(c) => conns.push(c),
                        Err((played, reply)) => drop(reply.send(played)),
                    }
                }
            },
        }
    }
}

/// Reads every datagram the socket holds and hands each to its connection.
fn receive(
    io: &mut Io,
    endpoint: &mut Endpoint,
    rbuf: &mut [u8],
    slot: usize,
    metas: &mut [RecvMeta],
    response: &mut Vec<u8>,
    pending: &mut VecDeque<(ConnectionHandle, quinn_proto::ConnectionEvent)>,
) {
    // Made once a wake, not once a read: a wake reads until the socket is empty.
    let mut iovs: Vec<std::io::IoSliceMut> = rbuf
        .chunks_mut(slot)
        .map(std::io::IoSliceMut::new)
        .collect();
    loop {
        let n = match io.socket.try_io(Interest::READABLE, || {
            io.state
                .recv(UdpSockRef::from(&io.socket), &mut iovs, metas)
        }) {
            Ok(n) => n,
            Err(_) => return,
        };
        let now = Instant::now();
        for (meta, buf) in metas.iter().zip(iovs.iter()).take(n) {
            let mut data: &[u8] = &buf[..meta.len];
            while !data.is_empty() {
                let (d, rest) = data.split_at(data.len().min(meta.stride.max(1)));
                data = rest;
                let ecn = meta
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                match endpoint.handle(
                    now,
                    meta.addr,
                    meta.dst_ip,
                    ecn,
                    BytesMut::from(d),
                    response,
                ) {
                    Some(DatagramEvent::ConnectionEvent(h, ev)) => pending.push_back((h, ev)),
                    Some(DatagramEvent::Response(t)) => io.send(&response[..t.size], &t),
                    // A client endpoint accepts no connection: quinn-proto refuses it.
                    Some(DatagramEvent::NewConnection(_)) | None => {}
                }
                response.clear();
            }
        }
    }
}

/// The QUIC client configurations a flock's bots have dialled with, by what they pin and their
/// idle timeout: each made once (a TLS configuration) and shared by the connections that pin
/// the same, as a swarm's bots all do. A handful at most: one more for each certificate a
/// server rotated to, or a server a move named.
#[derive(Default)]
struct Configs(Vec<(Vec<Sha256Digest>, Duration, quinn_proto::ClientConfig)>);

impl Configs {
    fn get(
        &mut self,
        hashes: Vec<Sha256Digest>,
        idle_timeout: Duration,
    ) -> Result<quinn_proto::ClientConfig, ClientError> {
        if let Some((_, _, config)) = self
            .0
            .iter()
            .find(|(h, t, _)| *h == hashes && *t == idle_timeout)
        {
            return Ok(config.clone());
        }
        let config = crate::endpoints::quic_client_config(&hashes, idle_timeout)?;
        // The oldest goes first: bots dial a server's newest certificate.
        if self.0.len() >= MAX_CONFIGS {
            self.0.remove(0);
        }
        self.0.push((hashes, idle_timeout, config.clone()));
        Ok(config)
    }
}

/// Client configurations a flock keeps ([`Configs`]).
const MAX_CONFIGS: usize = 4;

/// Starts a bot's connection, or gives its session back at once when it cannot.
#[allow(clippy::result_large_err)]
fn dial_one(
    endpoint: &mut Endpoint,
    configs: &mut Configs,
    io: &Io,
    dial: Box<Dial>,
    reply: oneshot::Sender<Played>,
) -> Result<Conn, (Played, oneshot::Sender<Played>)> {
    let started = (|| {
        let hashes = connect::pinned_hashes(&dial.info)?;
        let config = configs.get(hashes, dial.idle_timeout)?;
        let request = SessionRequest::new(&dial.info.url)
            .map_err(|e| ClientError::Connect(format!("bad URL {}: {e:?}", dial.info.url)))?;
        let authority = request.authority();
        let addr: SocketAddr = authority.parse().map_err(|_| {
            ClientError::Connect(format!(
                "{authority} is not an address (bots dial by address)"
            ))
        })?;
        let host = addr.ip().to_string();
        let addr = match (addr, io.v6) {
            (SocketAddr::V4(a), true) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
            (a, _) => a,
        };
        endpoint
            .connect(Instant::now(), config, addr, &host)
            .map_err(|e| ClientError::Connect(e.to_string()))
    })();
    match started {
        Ok((handle, conn)) => {
            let imp = (!dial.impair.is_none()).then(|| Impaired {
                imp: Impairment::new(dial.impair, dial.impair_seed),
                out_stream: DelayLine::default(),
                out_dgram: DelayLine::default(),
                in_stream: DelayLine::default(),
                in_dgram: DelayLine::default(),
            });
            let now = Instant::now();
            Ok(Conn {
                handle,
                conn,
                bot: Some(Bot {
                    url: dial.info.url.clone(),
                    dial,
                    reply,
                    stage: Stage::Handshake,
                    step_deadline: now + STEP_TIMEOUT,
                    connect_stream: None,
                    game: None,
                    session: None,
                    connect_buf: Vec::new(),
                    welcome: None,
                    frame_at: now,
                    unsent: Vec::new(),
                    early: Vec::new(),
                    tx: Transmit::default(),
                    imp,
                }),
                dirty: true,
                timeout: None,
                bot_wake: Some(now),
            })
        }
        Err(e) => {
            let dial = *dial;
            Err((
                Played {
                    player: dial.player,
                    out: dial.out,
                    ended: Ended::Failed(e),
                },
                reply,
            ))
        }
    }
}

impl Bot {
    /// When it must be stepped next: its deadline, its step's deadline, its next frame, or
    /// when the impairment releases something.
    fn next_wake(&self) -> Instant {
        let mut next = std_instant(self.dial.deadline);
        if self.stage != Stage::Playing {
            next = next.min(self.step_deadline);
        } else if !self.dial.idle {
            next = next.min(self.frame_at);
        } else if let Some(due) = self.dial.player.session().ack_due_ms() {
            // Its held acknowledgement (a tenth of a millisecond past it).
            next = next.min(
                std_instant(self.dial.origin)
                    + Duration::from_secs_f64((due + 0.1).max(0.0) / 1000.0),
            );
        }
        if let Some(due) = self.imp.as_ref().and_then(Impaired::next_due) {
            next = next.min(std_instant(due));
        }
        next
    }
}

/// One turn of a connection: its events read, its bot's frame run if due, its packets sent.
fn step(
    c: &mut Conn,
    now: Instant,
    io: &mut Io,
    endpoint: &mut Endpoint,
    pending: &mut VecDeque<(ConnectionHandle, quinn_proto::ConnectionEvent)>,
) {
    if let Some(bot) = &mut c.bot
        && let Some(ended) = turn(bot, &mut c.conn, now)
    {
        let bot = c.bot.take().expect("a bot");
        leave(bot, &mut c.conn, now, ended);
    }
    if c.bot.is_none() {
        // Events of a connection whose bot has left are read and dropped.
        while c.conn.poll().is_some() {}
    }
    while let Some(ev) = c.conn.poll_endpoint_events() {
        if let Some(cev) = endpoint.handle_event(c.handle, ev) {
            pending.push_back((c.handle, cev));
        }
    }
    loop {
        io.transmit.clear();
        match c.conn.poll_transmit(now, io.max_gso, &mut io.transmit) {
            Some(t) => io.send(&io.transmit[..t.size], &t),
            None => break,
        }
    }
}

/// Closes the bot's connection (unless it is lost already) and gives its session back.
fn leave(
    bot: Bot,
    conn: &mut quinn_proto::Connection,
    now: Instant,
    ended: Result<(), ClientError>,
) {
    let Bot {
        mut dial,
        reply,
        welcome,
        ..
    } = bot;
    let code = quinn_proto::VarInt::from_u64(arena_shared::protocol::close_code(CLOSE_CLIENT_LEFT))
        .expect("WebTransport's application codes are below 2^62");
    conn.close(now, code, Bytes::from_static(b"bot done"));
    // The connection's packets so far (its close, sent after this, is not counted).
    let stats = conn.stats();
    dial.out.packets_down += stats.udp_rx.datagrams;
    dial.out.packets_up += stats.udp_tx.datagrams;
    let ended = match welcome {
        Some((welcome, welcomed)) => {
            dial.live.connected.fetch_sub(1, Relaxed);
            Ended::Played {
                welcome,
                welcomed,
                ended,
            }
        }
        None => match ended {
            Ok(()) => Ended::OutOfTime,
            Err(e) => Ended::Failed(e),
        },
    };
    let Dial {
        player, mut out, ..
    } = *dial;
    if matches!(ended, Ended::Played { ended: Ok(()), .. }) {
        player.leave(&mut out);
    }
    let _ = reply.send(Played { player, out, ended });
}

/// The bot's part of a step. `Some`: its session is over (`Ok`: its time is up).
fn turn(
    bot: &mut Bot,
    conn: &mut quinn_proto::Connection,
    now: Instant,
) -> Option<Result<(), ClientError>> {
    if let Err(e) = events(bot, conn, now) {
        return Some(Err(e));
    }
    if now >= std_instant(bot.dial.deadline) || bot.dial.stop.is_cancelled() {
        return Some(Ok(()));
    }
    if bot.stage != Stage::Playing && now >= bot.step_deadline {
        return Some(Err(ClientError::Timeout(match bot.stage {
            Stage::Handshake | Stage::Connecting => "connect",
            Stage::Welcoming | Stage::Playing => "welcome",
        })));
    }
    if let Err(e) = release_due(bot, conn) {
        return Some(Err(e));
    }
    if bot.stage == Stage::Playing
        && bot.dial.idle
        && bot.dial.player.release_ack(now_ms(bot.dial.origin))
        && let Err(e) = flush(bot, conn)
    {
        return Some(Err(e));
    }
    if bot.stage == Stage::Playing && !bot.dial.idle && bot.frame_at <= now {
        let origin = bot.dial.origin;
        let Dial { player, out, .. } = &mut *bot.dial;
        if let Err(e) = player.frame(now_ms(origin), out) {
            return Some(Err(e));
        }
        if let Err(e) = flush(bot, conn) {
            return Some(Err(e));
        }
        // The next frame when the clock says the next input is due (a tenth of a millisecond
        // past it); half a tick before the clock runs; never more than a tick away.
        let tick = Duration::from_secs_f64(
            1.0 / f64::from(bot.dial.player.session().tick_rate().unwrap_or(1).max(1)),
        );
        let at = Instant::now();
        let next = bot
            .dial
            .player
            .session()
            .next_input_due_ms()
            .map_or(at + tick / 2, |due| {
                std_instant(origin) + Duration::from_secs_f64((due + 0.1).max(0.0) / 1000.0)
            });
        bot.frame_at = next.min(at + tick);
    }
    None
}

/// The bot's bytes to send, sent (or handed to the impairment).
fn flush(bot: &mut Bot, conn: &mut quinn_proto::Connection) -> Result<(), ClientError> {
    let Dial { player, out, .. } = &mut *bot.dial;
    player.transmit(&mut bot.tx);
    let now = tokio::time::Instant::now();
    for bytes in bot.tx.datagrams.drain(..) {
        out.up_bytes += bytes.len() as u64;
        match &mut bot.imp {
            Some(imp) => {
                for at in imp.imp.datagram(now) {
                    imp.out_dgram.push(at, bytes.clone());
                }
            }
            None => send_datagram(conn, bot.session, &bytes),
        }
    }
    if !bot.tx.stream.is_empty() {
        out.up_bytes += bot.tx.stream.len() as u64;
        match &mut bot.imp {
            Some(imp) => {
                let at = imp.imp.stream(now, Direction::Up);
                imp.out_stream.push(at, std::mem::take(&mut bot.tx.stream));
            }
            None => {
                bot.unsent.extend_from_slice(&bot.tx.stream);
                bot.tx.stream.clear();
                write_unsent(bot, conn)?;
            }
        }
    }
    Ok(())
}

/// Sends what the impairment held back and is now due, both ways.
fn release_due(bot: &mut Bot, conn: &mut quinn_proto::Connection) -> Result<(), ClientError> {
    let Some(imp) = &mut bot.imp else {
        return Ok(());
    };
    let now = tokio::time::Instant::now();
    while let Some(frame) = imp.out_stream.pop_due(now) {
        bot.unsent.extend_from_slice(&frame);
    }
    while let Some(bytes) = imp.out_dgram.pop_due(now) {
        send_datagram(conn, bot.session, &bytes);
    }
    let mut down = Vec::new();
    while let Some(bytes) = imp.in_stream.pop_due(now) {
        down.push((true, bytes));
    }
    while let Some(bytes) = imp.in_dgram.pop_due(now) {
        down.push((false, bytes));
    }
    write_unsent(bot, conn)?;
    let origin = bot.dial.origin;
    for (stream, bytes) in down {
        let Dial { player, out, .. } = &mut *bot.dial;
        if stream {
            player.on_stream(&bytes, now_ms(origin), out)?;
        } else {
            player.on_datagram(&bytes, now_ms(origin), out)?;
        }
    }
    flush(bot, conn)
}

/// A datagram of the session: its quarter stream id, then the payload. One the connection
/// cannot take is dropped, like a lost one (a lost acknowledgement costs an older baseline).
fn send_datagram(conn: &mut quinn_proto::Connection, session: Option<SessionId>, payload: &[u8]) {
    let Some(session) = session else { return };
    let d = Datagram::new(QStreamId::from_session_id(session), payload);
    let mut buf = vec![0u8; d.write_size()];
    if let Ok(n) = d.write(&mut buf) {
        buf.truncate(n);
        let _ = conn.datagrams().send(Bytes::from(buf), true);
    }
}

/// Writes as much of the unsent stream bytes as flow control takes now; the rest waits for
/// the stream to become writable.
fn write_unsent(bot: &mut Bot, conn: &mut quinn_proto::Connection) -> Result<(), ClientError> {
    let Some(id) = bot.game else { return Ok(()) };
    if bot.unsent.is_empty() {
        return Ok(());
    }
    let mut stream = conn.send_stream(id);
    let mut at = 0;
    while at < bot.unsent.len() {
        match stream.write(&bot.unsent[at..]) {
            Ok(0) | Err(quinn_proto::WriteError::Blocked) => break,
            Ok(n) => at += n,
            Err(e) => return Err(ClientError::Closed(format!("writing the stream: {e}"))),
        }
    }
    bot.unsent.drain(..at);
    Ok(())
}

/// Writes all of `bytes` on a stream the handshake opened (a few hundred bytes, well inside
/// any window QUIC starts with).
fn write_all(
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    bytes: &[u8],
) -> Result<(), ClientError> {
    let mut stream = conn.send_stream(id);
    let mut at = 0;
    while at < bytes.len() {
        match stream.write(&bytes[at..]) {
            Ok(0) => {
                return Err(ClientError::Connect(
                    "the server's stream window is shut".into(),
                ));
            }
            Ok(n) => at += n,
            Err(e) => return Err(ClientError::Connect(format!("writing the handshake: {e}"))),
        }
    }
    Ok(())
}

/// quinn-proto's stream id as HTTP/3's.
fn h3_id(id: StreamId) -> WtStreamId {
    WtStreamId::new(
        VarInt::try_from_u64(u64::from(quinn_proto::VarInt::from(id)))
            .expect("a QUIC stream id is a varint"),
    )
}

/// What a lost connection says, as an error: the Arena code when its close carries one.
fn lost(e: &ConnectionError, stage: Stage) -> ClientError {
    let text = match e {
        ConnectionError::ApplicationClosed(close) => {
            connect::close_text(close.error_code.into_inner(), &close.reason)
        }
        other => other.to_string(),
    };
    match stage {
        Stage::Handshake | Stage::Connecting => ClientError::Connect(text),
        Stage::Welcoming | Stage::Playing => ClientError::Closed(text),
    }
}

/// Reads everything `id` holds: `Ok(true)` when the peer has finished it.
fn read_stream(
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    f: &mut dyn FnMut(Bytes),
) -> Result<bool, String> {
    let mut recv = conn.recv_stream(id);
    let mut chunks = match recv.read(true) {
        Ok(c) => c,
        Err(quinn_proto::ReadableError::ClosedStream) => return Ok(true),
        Err(e) => return Err(e.to_string()),
    };
    let finished = loop {
        match chunks.next(READ_MAX) {
            Ok(Some(chunk)) => f(chunk.bytes),
            Ok(None) => break true,
            Err(quinn_proto::ReadError::Blocked) => break false,
            Err(e) => {
                let _ = chunks.finalize();
                return Err(e.to_string());
            }
        }
    };
    let _ = chunks.finalize();
    Ok(finished)
}

/// The connection's events, as far as the bot is concerned.
fn events(
    bot: &mut Bot,
    conn: &mut quinn_proto::Connection,
    now: Instant,
) -> Result<(), ClientError> {
    while let Some(ev) = conn.poll() {
        match ev {
            Event::Connected => open_session(bot, conn)?,
            Event::ConnectionLost { reason } => {
                // What the server said before it closed comes first (a `Reject`, a
                // `Disconnect` with its reason).
                if let Some(id) = bot.game {
                    read_game(bot, conn, id, now)?;
                }
                return Err(lost(&reason, bot.stage));
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                while let Some(id) = conn.streams().accept(dir) {
                    let _ = read_stream(conn, id, &mut |_| {});
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                if Some(id) == bot.connect_stream {
                    read_connect(bot, conn, id)?;
                } else if Some(id) == bot.game {
                    if read_game(bot, conn, id, now)? {
                        return Err(ClientError::Closed("server finished its stream".into()));
                    }
                } else {
                    let _ = read_stream(conn, id, &mut |_| {});
                }
            }
            Event::Stream(StreamEvent::Writable { .. }) => write_unsent(bot, conn)?,
            Event::DatagramReceived => {
                while let Some(d) = conn.datagrams().recv() {
                    on_datagram(bot, conn, d)?;
                }
            }
            Event::HandshakeDataReady | Event::Stream(_) | Event::DatagramsUnblocked => {}
        }
    }
    Ok(())
}

/// The QUIC handshake is done: SETTINGS on a control stream, then the CONNECT request.
fn open_session(bot: &mut Bot, conn: &mut quinn_proto::Connection) -> Result<(), ClientError> {
    let no_stream = || ClientError::Connect("the server allows no stream".into());
    let control = conn.streams().open(Dir::Uni).ok_or_else(no_stream)?;
    let mut bytes = Vec::new();
    StreamHeader::new_control()
        .write(&mut bytes)
        .expect("a Vec takes any write");
    let settings = Settings::builder()
        .qpack_max_table_capacity(VarInt::from_u32(0))
        .qpack_blocked_streams(VarInt::from_u32(0))
        .enable_webtransport()
        .enable_h3_datagrams()
        .webtransport_max_sessions(VarInt::from_u32(1))
        .build();
    settings
        .generate_frame()
        .write(&mut bytes)
        .expect("a Vec takes any write");
    write_all(conn, control, &bytes)?;
    let request = SessionRequest::new(&bot.url)
        .map_err(|e| ClientError::Connect(format!("bad URL {}: {e:?}", bot.url)))?;
    let stream = conn.streams().open(Dir::Bi).ok_or_else(no_stream)?;
    let mut bytes = Vec::new();
    request
        .headers()
        .generate_frame()
        .write(&mut bytes)
        .expect("a Vec takes any write");
    write_all(conn, stream, &bytes)?;
    bot.session = Some(
        SessionId::try_from_session_stream(h3_id(stream))
            .map_err(|_| ClientError::Connect("the CONNECT stream is no session's".into()))?,
    );
    bot.connect_stream = Some(stream);
    bot.stage = Stage::Connecting;
    Ok(())
}

/// The CONNECT stream: its response, once; after it nothing the bot needs.
fn read_connect(
    bot: &mut Bot,
    conn: &mut quinn_proto::Connection,
    id: StreamId,
) -> Result<(), ClientError> {
    let mut buf = std::mem::take(&mut bot.connect_buf);
    let finished = read_stream(conn, id, &mut |c| {
        if bot.stage == Stage::Connecting {
            buf.extend_from_slice(&c);
        }
    })
    .map_err(|e| ClientError::Connect(format!("the CONNECT stream: {e}")))?;
    if bot.stage != Stage::Connecting {
        return Ok(());
    }
    let status = connect_response(&mut buf, finished)?;
    bot.connect_buf = buf;
    match status {
        None => return Ok(()),
        Some(code) if code.is_successful() => {}
        Some(code) => return Err(ClientError::Connect(format!("session refused: {code}"))),
    }
    let session = bot.session.expect("set with the CONNECT stream");
    let game = conn
        .streams()
        .open(Dir::Bi)
        .ok_or_else(|| ClientError::Connect("the server allows no second stream".into()))?;
    let mut bytes = Vec::new();
    Frame::new_webtransport(session)
        .write(&mut bytes)
        .expect("a Vec takes any write");
    let Dial { player, out, .. } = &mut *bot.dial;
    player.transmit(&mut bot.tx);
    out.up_bytes += bot.tx.stream.len() as u64;
    bytes.extend_from_slice(&bot.tx.stream);
    bot.tx.stream.clear();
    write_all(conn, game, &bytes)?;
    bot.game = Some(game);
    bot.stage = Stage::Welcoming;
    bot.step_deadline = Instant::now() + STEP_TIMEOUT;
    Ok(())
}

/// The status of the CONNECT response `buf` begins with (grease before it skipped), taking
/// what it read from `buf`; `None` while the response is not all there.
fn connect_response(buf: &mut Vec<u8>, finished: bool) -> Result<Option<StatusCode>, ClientError> {
    let mut reader = BufferReader::new(buf);
    let mut response = None;
    loop {
        match Frame::read_from_buffer(&mut reader) {
            Ok(Some(frame)) if matches!(frame.kind(), FrameKind::Headers) => {
                response = Some(
                    Headers::with_frame(&frame)
                        .map_err(|e| ClientError::Connect(format!("CONNECT response: {e:?}")))?,
                );
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(ClientError::Connect(format!("CONNECT response: {e:?}"))),
        }
    }
    let used = reader.offset();
    buf.drain(..used);
    match response {
        Some(headers) => SessionResponse::try_from(headers)
            .map(|r| Some(r.code()))
            .map_err(|_| ClientError::Connect("CONNECT response without a status".into())),
        None if finished => Err(ClientError::Connect(
            "the server ended the CONNECT stream".into(),
        )),
        None => Ok(None),
    }
}

/// The session's stream: the `Welcome`, then the server's events. `Ok(true)`: the server has
/// finished it.
fn read_game(
    bot: &mut Bot,
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    now: Instant,
) -> Result<bool, ClientError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let finished = read_stream(conn, id, &mut |c| chunks.push(c))
        .map_err(|e| ClientError::Closed(format!("the session's stream: {e}")))?;
    for chunk in chunks {
        let origin = bot.dial.origin;
        bot.dial.out.down_bytes += chunk.len() as u64;
        if bot.stage == Stage::Playing {
            bot.dial
                .live
                .down_bytes
                .fetch_add(chunk.len() as u64, Relaxed);
            if let Some(imp) = &mut bot.imp {
                let at = imp.imp.stream(tokio::time::Instant::now(), Direction::Down);
                imp.in_stream.push(at, chunk);
                continue;
            }
        }
        {
            let Dial {
                player,
                out,
                live,
                attempt,
                due,
                swarm_start,
                ..
            } = &mut *bot.dial;
            player.on_stream(&chunk, now_ms(origin), out)?;
            if bot.stage == Stage::Welcoming
                && let Some(welcome) = player.take_welcome()
            {
                let welcomed = tokio::time::Instant::now();
                live.connected.fetch_add(1, Relaxed);
                crate::bot::welcomed(
                    out,
                    live,
                    &welcome,
                    (*attempt, *due),
                    welcomed,
                    *swarm_start,
                );
                bot.welcome = Some((welcome, welcomed));
                bot.stage = Stage::Playing;
                bot.frame_at = now;
            }
        }
        if bot.stage == Stage::Playing {
            for datagram in std::mem::take(&mut bot.early) {
                on_datagram(bot, conn, datagram)?;
            }
        }
        flush(bot, conn)?;
    }
    Ok(finished)
}

/// A datagram from the server: the session's are the player's; any other is dropped.
fn on_datagram(
    bot: &mut Bot,
    conn: &mut quinn_proto::Connection,
    datagram: Bytes,
) -> Result<(), ClientError> {
    let Ok(d) = Datagram::read(&datagram) else {
        return Ok(());
    };
    if bot.session != Some(d.qstream_id().into_session_id()) {
        return Ok(());
    }
    if bot.stage != Stage::Playing {
        // Snapshots sent right after the `Welcome` can be read before it: kept for the
        // player, a few at most.
        if bot.early.len() < EARLY_DATAGRAMS {
            bot.early.push(datagram);
        }
        return Ok(());
    }
    let payload = d.payload();
    let origin = bot.dial.origin;
    let Dial {
        player, out, live, ..
    } = &mut *bot.dial;
    out.datagrams += 1;
    out.down_bytes += payload.len() as u64;
    live.down_bytes.fetch_add(payload.len() as u64, Relaxed);
    if let Some(imp) = &mut bot.imp {
        let now = tokio::time::Instant::now();
        for at in imp.imp.datagram(now) {
            imp.in_dgram.push(at, datagram.slice_ref(payload));
        }
        return Ok(());
    }
    player.on_datagram(payload, now_ms(origin), out)?;
    flush(bot, conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(code: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        SessionResponse::with_status_code(StatusCode::try_from_u32(code.into()).unwrap())
            .headers()
            .generate_frame()
            .write(&mut bytes)
            .unwrap();
        bytes
    }

    #[test]
    fn a_connect_response_is_read_across_reads_and_after_grease() {
        let whole = response(200);
        // In two reads: nothing yet, then the status, with the buffer left empty.
        let mut buf = whole[..whole.len() / 2].to_vec();
        assert!(connect_response(&mut buf, false).unwrap().is_none());
        assert_eq!(buf.len(), whole.len() / 2, "a partial frame is kept");
        buf.extend_from_slice(&whole[whole.len() / 2..]);
        let code = connect_response(&mut buf, false).unwrap().unwrap();
        assert!(code.is_successful());
        assert!(buf.is_empty());
        // A grease frame first is skipped.
        let mut buf = Vec::new();
        Frame::new_exercise(VarInt::from_u32(0x21), std::borrow::Cow::Borrowed(b"x"))
            .write(&mut buf)
            .unwrap();
        buf.extend_from_slice(&whole);
        assert!(
            connect_response(&mut buf, false)
                .unwrap()
                .unwrap()
                .is_successful()
        );
        // A refusal is a status, for the caller to refuse; a stream that ends first is an error.
        let mut buf = response(429);
        assert!(
            !connect_response(&mut buf, false)
                .unwrap()
                .unwrap()
                .is_successful()
        );
        let mut buf = whole[..3].to_vec();
        assert!(connect_response(&mut buf, true).is_err());
    }

    #[test]
    fn a_flock_makes_a_client_configuration_once_for_what_its_bots_pin() {
        let hash = |b: u8| vec![Sha256Digest::new([b; 32])];
        let idle = Duration::from_secs(10);
        let mut configs = Configs::default();
        for _ in 0..3 {
            configs.get(hash(1), idle).unwrap();
        }
        assert_eq!(configs.0.len(), 1, "bots pinning the same share one");
        configs.get(hash(1), idle * 2).unwrap();
        configs.get(hash(2), idle).unwrap();
        assert_eq!(configs.0.len(), 3, "another pin or timeout is another");
        for b in 3..=6 {
            configs.get(hash(b), idle).unwrap();
        }
        assert_eq!(configs.0.len(), MAX_CONFIGS);
        assert_eq!(configs.0[0].0, hash(3), "the oldest went first");
    }

    #[tokio::test]
    async fn bots_fill_a_flock_before_the_next_and_keep_it() {
        let flocks = Flocks::new(3, Some(std::net::Ipv4Addr::LOCALHOST.into()));
        for i in 0..7 {
            flocks.of(i).unwrap();
            assert_eq!(flocks.count(), i as usize / 3 + 1, "bot {i}");
        }
        // A bot asking again (its next session) gets the flock it had.
        let a = flocks.of(4).unwrap();
        let b = flocks.of(5).unwrap();
        assert!(a.tx.same_channel(&b.tx));
        assert!(!a.tx.same_channel(&flocks.of(6).unwrap().tx));
        assert_eq!(flocks.count(), 3);
        drop((a, b));
        assert!(
            flocks.wait_idle(Duration::from_secs(10)).await,
            "every flock ends once its bots are gone"
        );
    }
}
