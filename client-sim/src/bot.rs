//! One bot's life, the IO half: connect, play until its time is up, reconnect when dropped,
//! leave. What it sends and how it counts what it sees is [`crate::player`] (sans-IO, over the
//! shared client session); this file owns the sockets, the frame timer, the impairment's delay
//! lines and the reconnect backoff.
//!
//! While playing it runs a frame at twice the tick rate (the session sends an input per server
//! tick that became due, and a ping every 250 ms) and hands the player every datagram and
//! every byte of the stream as they arrive (an idle bot runs no frames and only acknowledges
//! snapshots). It records where its own entity was at the first and the last snapshot of its
//! last session, and the sum of the movement it asked for, so a test can check that the server
//! moved it that way.
//!
//! A failed connect (HTTP, QUIC, `Reject`) or a lost session (`Disconnect`, connection lost)
//! is retried after a [`Backoff`] delay until the bot's deadline, its launch plus its play
//! time. Every attempt fetches a fresh token and certificate hash from `/api/connect` (a
//! restarted server has a new self-signed certificate) and presents the resume token of its
//! last session: within the server's grace period it gets its entity back
//! (`Welcome::resumed`), after it a new one. A move (`Disconnect(Moved)`) is no failure: the
//! bot waits the server's hint and goes straight to the new server ([`Route`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use arena_shared::client_session::Transmit;
use arena_shared::protocol::CLOSE_CLIENT_LEFT;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, STABLE_SESSION};
use crate::behaviour::Behaviour;
use crate::connect::{self, ClientError, STEP_TIMEOUT, Transport};
use crate::endpoints::EndpointPool;
use crate::impair::{DelayLine, Direction, ImpairConfig, Impairment};
use crate::live::{self, Held, LiveStats};
use crate::outcome::{BotOutcome, Session};
use crate::player::{Player, Welcomed};
use crate::route::{Attempt, Route};

/// Bytes a bot reads from its stream at a time. The buffer lives in the bot's task, thousands
/// of them in a swarm: one packet's worth, as the stream carries small events after the
/// welcome (which takes a few reads).
const STREAM_READ_BYTES: usize = 1200;

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
    /// The swarm's endpoints, which this bot's connections share with other bots'.
    pub endpoints: Arc<EndpointPool>,
}

/// Runs one bot to its deadline (or until `stop`), reconnecting as needed. Never panics on
/// anything the server sends.
pub async fn run(config: BotConfig) -> BotOutcome {
    let mut out = BotOutcome::new(config.name.clone(), config.index, config.behaviour);
    let deadline = tokio::time::Instant::now() + config.play_for;
    let mut backoff = Backoff::new(config.seed ^ BACKOFF_SALT);
    let live = config.live.clone();
    // One player for all its sessions: the session presents the last one's resume token at
    // every reconnect (the server ignores one it no longer knows).
    let mut player = Player::new(&config.name, config.behaviour, config.seed, live.clone());
    // The player's clock: any monotonic origin will do.
    let origin = Instant::now();
    let mut route = Route::new(config.server.clone());
    loop {
        let attempt = tokio::time::Instant::now();
        let next = route.next_attempt();
        let resuming = matches!(next, Attempt::Resume { .. });
        // The attempt and the play loop are awaited boxed: the bot's task then holds room for
        // the one running, not for the larger of the two all its life (8 KiB a bot unboxed).
        let connected = tokio::select! {
            c = Box::pin(connect(&config, next, &mut player, origin, &mut out)) => Some(c),
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
        // A move's wait: exactly the server's hint, no backoff.
        let mut moved_wait = None;
        match connected {
            // The new server does not know the bot: it asks for a token there at once.
            Err(e) if resuming && Route::resume_refused(&e) => continue,
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
            Ok((mut transport, welcome)) => {
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
                    Box::pin(play(
                        &config,
                        &mut transport,
                        &mut player,
                        origin,
                        &mut out,
                        deadline,
                    ))
                    .await
                };
                let played = welcomed.elapsed();
                out.played += played;
                // The close frame leaves from the shared endpoint, which outlives the bot (the
                // swarm waits for its endpoints to go idle before it reports).
                transport
                    .conn
                    .close(connect::close_varint(CLOSE_CLIENT_LEFT), b"bot done");
                let mut lost = ended.err();
                if let Some(ClientError::Moved {
                    to,
                    reconnect_after_ms,
                }) = lost.take_if(|e| matches!(e, ClientError::Moved { .. }))
                {
                    moved_wait = Some(route.moved(to, reconnect_after_ms));
                }
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
                if lost.is_none() && moved_wait.is_none() {
                    break; // its time is up
                }
                if played >= STABLE_SESSION {
                    backoff.reset();
                }
            }
        }
        // Never sooner than the server asked; jitter still spreads the bots it refused.
        let delay = moved_wait.unwrap_or_else(|| backoff.next_delay().max(hint));
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
    attempt: Attempt,
    player: &mut Player,
    origin: Instant,
    out: &mut BotOutcome,
) -> Result<(Transport, Welcomed), ClientError> {
    let mut info = match attempt {
        Attempt::Connect { server } => connect::fetch_connect_info(&server, &config.name).await?,
        Attempt::Resume { to } => connect::ConnectInfo::moved(&to),
    };
    if let Some(addr) = config.connect_via {
        info.url = connect::url_via(&info.url, addr);
    }
    let mut transport = connect::open_on(&config.endpoints, &info, config.idle_timeout).await?;
    player.connect(&info.token);
    let mut hello = Transmit::default();
    player.transmit(&mut hello);
    out.up_bytes += hello.stream.len() as u64;
    transport.write_raw(&hello.stream).await?;
    let welcome = tokio::time::timeout(STEP_TIMEOUT, async {
        let mut buf = [0u8; STREAM_READ_BYTES];
        loop {
            match transport.recv.read(&mut buf).await {
                // The welcome (with the map) comes on the stream before the play loop reads it.
                Ok(Some(n)) => {
                    out.down_bytes += n as u64;
                    player.on_stream(&buf[..n], now_ms(origin), out)?;
                    if let Some(w) = player.take_welcome() {
                        return Ok(w);
                    }
                }
                Ok(None) => return Err(ClientError::Closed("server finished its stream".into())),
                Err(_) => return Err(connect::close_error(transport.conn.closed().await)),
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout("welcome"))??;
    Ok((transport, welcome))
}

/// Milliseconds since `origin`, the player's clock.
fn now_ms(origin: Instant) -> f64 {
    origin.elapsed().as_secs_f64() * 1000.0
}

/// The bytes between the player and the transport: sent at once, or through the impairment's
/// delay lines when one is configured.
struct Io {
    /// Impairment, when configured, and what it holds back each way.
    imp: Option<Impairment>,
    out_stream: DelayLine<Vec<u8>>,
    out_dgram: DelayLine<Vec<u8>>,
    in_stream: DelayLine<Vec<u8>>,
    in_dgram: DelayLine<Vec<u8>>,
    /// The player's bytes to send, swapped in and out: reused, never reallocated per call.
    tx: Transmit,
}

impl Io {
    /// Sends what the player has to send: the acknowledgement first, so that it and the inputs
    /// after it leave in one packet.
    async fn flush(
        &mut self,
        t: &mut Transport,
        player: &mut Player,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        player.transmit(&mut self.tx);
        for bytes in self.tx.datagrams.drain(..) {
            out.up_bytes += bytes.len() as u64;
            match &mut self.imp {
                Some(imp) => {
                    for at in imp.datagram(Instant::now()) {
                        self.out_dgram.push(at, bytes.clone());
                    }
                }
                // A lost or refused ack costs only a slightly older baseline.
                None => drop(t.conn.send_datagram(bytes)),
            }
        }
        if !self.tx.stream.is_empty() {
            out.up_bytes += self.tx.stream.len() as u64;
            match &mut self.imp {
                Some(imp) => {
                    let at = imp.stream(Instant::now(), Direction::Up);
                    self.out_stream
                        .push(at, std::mem::take(&mut self.tx.stream));
                }
                None => t.write_raw(&self.tx.stream).await?,
            }
        }
        Ok(())
    }

    /// The earliest item any delay line holds.
    fn next_due(&self) -> Option<Instant> {
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

    /// Releases everything the impairment held back that is now due, both ways.
    async fn release_due(
        &mut self,
        t: &mut Transport,
        player: &mut Player,
        origin: Instant,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        let now = Instant::now();
        while let Some(frame) = self.out_stream.pop_due(now) {
            t.write_raw(&frame).await?;
        }
        while let Some(bytes) = self.out_dgram.pop_due(now) {
            let _ = t.conn.send_datagram(bytes);
        }
        while let Some(bytes) = self.in_stream.pop_due(now) {
            player.on_stream(&bytes, now_ms(origin), out)?;
        }
        while let Some(payload) = self.in_dgram.pop_due(now) {
            player.on_datagram(&payload, now_ms(origin), out)?;
        }
        self.flush(t, player, out).await
    }
}

/// One session: plays until `deadline` or `stop` (`Ok`), or until the session is lost.
async fn play(
    config: &BotConfig,
    t: &mut Transport,
    player: &mut Player,
    origin: Instant,
    out: &mut BotOutcome,
    deadline: Instant,
) -> Result<(), ClientError> {
    let tick_rate = player.session().tick_rate().unwrap_or(1);
    let idle = config.behaviour == Behaviour::Idle;
    // A frame when the clock says the next input is due (`ClientSession::next_input_due_ms`),
    // and none between: a bot draws nothing. Before the clock runs, a frame each half tick;
    // never more than a tick apart. (On a fixed timer at twice the tick rate, half the frames
    // found nothing due, and each wake cost the swarm as much as the frame.)
    let tick = Duration::from_secs_f64(1.0 / f64::from(tick_rate));
    let frame_at = tokio::time::sleep(Duration::ZERO);
    let mut io = Io {
        imp: (!config.impair.is_none())
            .then(|| Impairment::new(config.impair, config.seed ^ 0x1A9A_1A9A)),
        out_stream: DelayLine::default(),
        out_dgram: DelayLine::default(),
        in_stream: DelayLine::default(),
        in_dgram: DelayLine::default(),
        tx: Transmit::default(),
    };
    let mut buf = [0u8; STREAM_READ_BYTES];
    let live = &config.live;
    // Made once, not at every turn of the loop: a timer entry registered and dropped, and a
    // waiter on the stop token every bot shares, at each of ~100 turns a second cost the swarm
    // more than the frames did.
    let end = tokio::time::sleep_until(deadline);
    let stopped = config.stop.cancelled();
    tokio::pin!(end, stopped, frame_at);

    loop {
        let due = io.next_due();
        tokio::select! {
            _ = &mut end => break,
            _ = &mut stopped => break,
            _ = &mut frame_at, if !idle => {
                player.frame(now_ms(origin), out)?;
                io.flush(t, player, out).await?;
                let now = Instant::now();
                let next = player.session().next_input_due_ms().map_or(now + tick / 2, |due| {
                    // A tenth of a millisecond past the instant, so the tick has come due.
                    origin + Duration::from_secs_f64((due + 0.1).max(0.0) / 1000.0)
                });
                frame_at.as_mut().reset(next.min(now + tick));
            }
            _ = tokio::time::sleep_until(due.unwrap_or(deadline)), if due.is_some() => {
                io.release_due(t, player, origin, out).await?;
            }
            read = t.recv.read(&mut buf) => match read {
                Ok(Some(n)) => {
                    out.down_bytes += n as u64;
                    live.down_bytes.fetch_add(n as u64, Relaxed);
                    match &mut io.imp {
                        Some(imp) => {
                            let at = imp.stream(Instant::now(), Direction::Down);
                            io.in_stream.push(at, buf[..n].to_vec());
                        }
                        None => {
                            player.on_stream(&buf[..n], now_ms(origin), out)?;
                            io.flush(t, player, out).await?;
                        }
                    }
                }
                Ok(None) => return Err(ClientError::Closed("server finished its stream".into())),
                Err(_) => return Err(connect::close_error(t.conn.closed().await)),
            },
            datagram = t.conn.receive_datagram() => {
                let datagram = datagram.map_err(connect::close_error)?;
                let payload = datagram.payload();
                out.datagrams += 1;
                out.down_bytes += payload.len() as u64;
                live.down_bytes.fetch_add(payload.len() as u64, Relaxed);
                match &mut io.imp {
                    Some(imp) => {
                        for at in imp.datagram(Instant::now()) {
                            io.in_dgram.push(at, payload.to_vec());
                        }
                    }
                    None => {
                        player.on_datagram(&payload, now_ms(origin), out)?;
                        io.flush(t, player, out).await?;
                    }
                }
            }
        }
    }
    player.leave(out);
    Ok(())
}
