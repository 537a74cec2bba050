//! One client's session: handshake, then the play loop.
//!
//! Handshake (bounded by `--handshake-timeout` from the first packet, and counted among the
//! handshakes in flight until admitted or refused): QUIC + HTTP/3 CONNECT (its path and
//! origin checked), the client opens one bidirectional stream and sends `Hello`. The server
//! checks it ([`admission`](super::admission)), in order: magic, protocol version and a
//! `Hello` that decodes (no rate spent); that the connection carries datagrams, the server is
//! not shutting down and there was randomness for a resume token; a resume token it knows
//! (admitted at once); the address's handshake bucket, the global one; the token (present,
//! signature, expiry, audience, not used before) and room to remember it; then, in the
//! registry, a live session with the same client id, the per-address seat limit, capacity.
//! Only then does it allocate anything for the client: a session slot, an outbox, a player
//! entity. A refused client gets `Reject` and a connection close whose code says the same.
//!
//! Play: frames in (inputs to the simulation inbox, pings answered best-effort), snapshots
//! out (one datagram per part), reliable frames out through a writer bounded in bytes
//! (`--max-send-backlog`). What each frame and datagram gets is decided by
//! [`FramePolicy`](super::frame_policy); this loop only reads and acts. Any malformed frame,
//! oversized frame or client datagram ends the session with a `Disconnect` naming the reason;
//! it never panics and never reaches the world.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{
    CLOSE_CLIENT_LEFT, Disconnect, DisconnectReason, GameEvent, Pong, Reject, RejectReason,
    ResumeToken, ServerMsg, Welcome,
};
use arena_shared::rng::SplitMix64;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info, info_span, warn};
use wtransport::endpoint::IncomingSession;
use wtransport::error::SendDatagramError;
use wtransport::{Connection, RecvStream};

use super::admission::{Arrival, Gate, Refusal};
use super::frame_policy::{self, Close, Datagram, Dropped, FramePolicy, Verdict};
use super::mover::Move;
use super::registry::{Ended, RETRY_AFTER_MS, Seat};
use super::wake_gate::WakeGate;
use super::writer::{LINGER, Writer};
use super::{HandshakeSlot, NetContext, request};
use crate::config::ReplicationMode;
use crate::game::{JoinAck, JoinRequest, SimCommand};
use crate::outbox::{DatagramSink, Outbox, SinkError};
use crate::stats::Stats;

/// Bytes read from the stream at a time before the session is admitted (the Hello, which
/// carries a token), into a buffer that lives only while the first frame is read.
const READ_CHUNK: usize = 1024;

/// Bytes read from the stream at a time while playing, into a buffer the session keeps: a few
/// ticks of inputs (~30 bytes each); a longer burst takes another read.
const PLAY_READ_CHUNK: usize = 256;

/// Runs one session from its first packet to its end, in a span naming the peer. `in_flight`
/// is its place among the handshakes in flight, given back once it is admitted or refused.
///
/// A task's allocation is as large as the largest state of its future and lasts the whole
/// session, so the future is kept small:
/// - every step before the play loop, and every way out of it, is awaited boxed: those steps
///   (wtransport's request and stream futures, the first read's buffer, the goodbye) hold
///   their memory only while they run;
/// - the play loop is awaited boxed too, and its session is boxed: the loop's own state is
///   then held once, not beside the larger states of the steps before it;
/// - what the future captures lives for all of it, whatever state it is in, so the request
///   (wtransport's `IncomingSession`, ~400 bytes) is captured boxed, and it is a plain `fn`
///   returning the future, not an `async fn` (whose body would keep a second copy of each
///   argument).
pub fn run(
    incoming: IncomingSession,
    in_flight: HandshakeSlot,
    ctx: Arc<NetContext>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> {
    let remote = incoming.remote_address();
    let span = info_span!("session", %remote, client_id = field::Empty);
    let incoming = Box::new(incoming);
    async move {
        let deadline = Instant::now() + ctx.config.handshake_timeout;
        let conn = match tokio::time::timeout_at(deadline, Box::pin(accept(*incoming, &ctx))).await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return debug!(error = %e, "handshake failed"),
            Err(_) => return debug!("QUIC/HTTP3 handshake timed out"),
        };
        let stream = tokio::time::timeout_at(deadline, Box::pin(conn.accept_bi())).await;
        let (send, mut recv) = match stream {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return debug!(error = %e, "connection ended before its stream opened"),
            Err(_) => {
                ctx.stats
                    .metrics
                    .session_rejected(RejectReason::HandshakeTimeout.as_str());
                conn.close(
                    super::close_varint(RejectReason::HandshakeTimeout.code()),
                    b"no stream opened",
                );
                return debug!("no stream opened in time");
            }
        };
        let mut moves = ctx.moves.clone();
        let mut reader = FrameReader::new();
        let mut writer = Writer::spawn(send, ctx.stats.clone(), ctx.config.max_send_backlog);
        let checked =
            match tokio::time::timeout_at(deadline, Box::pin(read_frame(&mut recv, &mut reader)))
                .await
            {
                Err(_) => Err(Refusal::from((
                    RejectReason::HandshakeTimeout,
                    "no Hello in time".to_string(),
                    0,
                ))),
                Ok(Err(ReadEnd::TooLarge)) => Err(Refusal::from((
                    RejectReason::NotArena,
                    "first frame too large".to_string(),
                    0,
                ))),
                Ok(Err(_)) => {
                    ctx.stats
                        .metrics
                        .session_rejected(RejectReason::MalformedHello.as_str());
                    conn.close(
                        super::close_varint(RejectReason::MalformedHello.code()),
                        b"stream ended before Hello",
                    );
                    return debug!("stream ended before Hello");
                }
                Ok(Ok(body)) => {
                    // The moves this session is subject to are those published after its
                    // admission was decided: one published before it has already shaped it
                    // (only a seat it left lingering is taken back), and the session that
                    // takes that seat back is not moved again.
                    let moved = moves.borrow_and_update().is_some();
                    admit(&ctx, &conn, remote.ip(), &body, &shutdown, moved)
                }
            };
        drop(in_flight);
        let slot = match checked {
            Ok(slot) => slot,
            Err(Refusal {
                reason,
                message,
                retry_after_ms,
                metric,
            }) => {
                Stats::add(&ctx.stats.sessions_rejected, 1);
                ctx.stats.metrics.session_rejected(metric);
                // At debug: whoever connects decides how many of these there are, and the
                // counter above is the signal.
                debug!(reason = metric, %message, retry_after_ms, "session rejected");
                // Best effort: the close code says the same if the stream cannot.
                let _ = writer.send(&ServerMsg::Reject(Reject {
                    reason,
                    message: message.clone(),
                    retry_after_ms,
                }));
                Box::pin(close(&conn, writer, reason.code(), &message)).await;
                return;
            }
        };
        tracing::Span::current().record("client_id", slot.seat.client_id);
        let outbox = Arc::new(
            Outbox::new(ctx.config.outbox_snapshots, slot.max_datagram)
                .with_event_capacity(ctx.config.event_queue),
        );
        let Some(ack) = Box::pin(join(&ctx, &slot, outbox.clone())).await else {
            let reason = DisconnectReason::SimulationUnavailable;
            let _ = writer.send(&ServerMsg::Disconnect(Disconnect {
                reason,
                message: "try again".into(),
                reconnect_after_ms: RETRY_AFTER_MS,
                moved_to: None,
            }));
            Box::pin(close(
                &conn,
                writer,
                reason.code(),
                "simulation unavailable",
            ))
            .await;
            ctx.stats.metrics.session_ended(reason.as_str());
            Box::pin(slot.end(false)).await;
            return;
        };
        if ack.resumed {
            Stats::add(&ctx.stats.sessions_resumed, 1);
        }
        info!(
            entity = ack.entity,
            resumed = ack.resumed,
            "session started"
        );
        let _ = writer.send(&ServerMsg::Welcome(Welcome {
            client_id: slot.seat.client_id,
            entity: ack.entity,
            tick_rate: ctx.config.tick_rate,
            server_tick: ack.server_tick,
            map: (*ctx.map).clone(),
            resume_token: slot.seat.resume_token,
            resumed: ack.resumed,
        }));
        let session = Session {
            ctx: ctx.clone(),
            conn,
            recv,
            reader,
            writer,
            outbox,
            client_id: slot.seat.client_id,
            policy: FramePolicy::new(ctx.config.max_inputs_per_sec, ctx.config.max_whois_per_sec),
            events: Vec::new(),
        };
        let end =
            Box::pin(Box::new(session).play(&shutdown, &slot.seat.superseded, &mut moves)).await;
        info!(reason = end.reason, lost = end.lost, "session ended");
        ctx.stats.metrics.session_ended(end.reason);
        Box::pin(slot.end(end.lost)).await;
    }
    .instrument(span)
}

/// Accepts the WebTransport request if its path and origin pass [`request::Rules`]; a
/// refused one is answered 404 (path) or 403 (origin) and counted.
async fn accept(incoming: IncomingSession, ctx: &NetContext) -> Result<Connection, String> {
    let request = incoming.await.map_err(|e| e.to_string())?;
    let verdict = ctx
        .request_rules
        .check(request.path(), request.authority(), request.origin());
    let Err(refused) = verdict else {
        return request.accept().await.map_err(|e| e.to_string());
    };
    ctx.stats.metrics.handshake_rejected(refused.as_str());
    let why = format!(
        "request refused ({}): path {:?}, origin {:?}",
        refused.as_str(),
        request.path(),
        request.origin()
    );
    match refused {
        request::Refused::WrongPath => request.not_found().await,
        request::Refused::Origin => request.forbidden().await,
    }
    Err(why)
}

/// Reads until one whole frame is buffered. `Err` when the stream ends or fails first.
async fn read_frame(recv: &mut RecvStream, reader: &mut FrameReader) -> Result<Vec<u8>, ReadEnd> {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        match reader.next_frame() {
            Ok(Some(body)) => return Ok(body),
            Ok(None) => {}
            Err(_) => return Err(ReadEnd::TooLarge),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => reader.push(&buf[..n]),
            Ok(None) => return Err(ReadEnd::Finished),
            Err(_) => return Err(ReadEnd::Failed),
        }
    }
}

#[derive(Debug)]
enum ReadEnd {
    TooLarge,
    Finished,
    Failed,
}

/// A seat in the registry, held from admission until the session ends. [`Slot::end`] gives it
/// back (or leaves it lingering) and tells the simulation; dropping a slot that was not ended
/// (a path that returned early) frees the seat.
struct Slot {
    ctx: Arc<NetContext>,
    seat: Seat,
    max_datagram: usize,
    ended: bool,
}

impl Slot {
    /// Ends the session in the registry. `lost`: the connection went without a goodbye, so the
    /// entity lingers for the grace period; otherwise it is removed now.
    async fn end(mut self, lost: bool) {
        // The player leaves the world before anyone could take its client id again: the
        // registry refuses a new session for it until then... except by resuming, which the
        // simulation orders by session.
        if let Some(cmd) = self.finish(lost) {
            let _ = self.ctx.inbox.send(cmd).await;
        }
    }

    /// Gives the seat back to the registry (once): what the simulation must then do with the
    /// player's entity, unless a newer session of the same client has taken it over.
    fn finish(&mut self, lost: bool) -> Option<SimCommand> {
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        let (client_id, session) = (self.seat.client_id, self.seat.session);
        let now = self.ctx.now_ms();
        match self
            .ctx
            .with_registry(|r| r.end(client_id, session, lost, now))
        {
            Ended::Freed => Some(SimCommand::Leave { client_id, session }),
            Ended::Lingering { .. } => Some(SimCommand::Detach { client_id, session }),
            Ended::Superseded => None,
        }
    }
}

impl Drop for Slot {
    /// A session task that ended without [`Slot::end`] (a panic, a cancelled task): its seat
    /// is freed as if the player had left.
    fn drop(&mut self) {
        if let Some(cmd) = self.finish(false) {
            let _ = self.ctx.inbox.try_send(cmd);
        }
        self.ctx.stats.close_session();
    }
}

/// Reads what admission needs from the connection, the clocks and the system's randomness,
/// and runs it (see [`admission`](super::admission) for the checks and their order).
fn admit(
    ctx: &Arc<NetContext>,
    conn: &Connection,
    ip: IpAddr,
    body: &[u8],
    shutdown: &CancellationToken,
    moved: bool,
) -> Result<Slot, Refusal> {
    let mut key = [0u8; 16];
    let new_key = match getrandom::fill(&mut key) {
        Ok(()) => Some(ResumeToken(key)),
        Err(e) => {
            warn!(error = %e, "no randomness for a resume token");
            None
        }
    };
    let arrival = Arrival {
        body,
        ip,
        max_datagram: conn.max_datagram_size(),
        shutting_down: shutdown.is_cancelled()
            || ctx.frozen.load(std::sync::atomic::Ordering::Relaxed),
        moved,
        now_s: ctx.now_s(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        new_key,
    };
    let gate = Gate {
        token_secret: &ctx.token_secret,
        token_audience: &ctx.token_audience,
        exempt_loopback: ctx.config.exempt_loopback,
        per_address: &ctx.handshakes_per_address,
        global: &ctx.handshakes,
        used_tokens: &ctx.used_tokens,
    };
    let admitted = gate.admit(&arrival, |claim, ip, key| {
        ctx.with_registry(|r| r.admit(claim, ip, key))
    })?;
    Ok(Slot::new(ctx, admitted.seat, admitted.max_datagram))
}

impl Slot {
    /// A slot for an admitted seat; counts the session open.
    fn new(ctx: &Arc<NetContext>, seat: Seat, max_datagram: usize) -> Self {
        ctx.stats.open_session();
        Self {
            ctx: ctx.clone(),
            seat,
            max_datagram,
            ended: false,
        }
    }
}

/// Asks the simulation for an entity. `None` if it is gone or does not answer in time.
async fn join(ctx: &NetContext, slot: &Slot, outbox: Arc<Outbox>) -> Option<JoinAck> {
    let (reply, ack) = oneshot::channel();
    let request = JoinRequest {
        client_id: slot.seat.client_id,
        session: slot.seat.session,
        name: slot.seat.name.clone(),
        outbox,
        resume: slot.seat.resumed,
        reply,
    };
    let wait = ctx.config.handshake_timeout;
    tokio::time::timeout(wait, ctx.inbox.send(SimCommand::Join(request)))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(wait, ack).await.ok()?.ok()
}

/// Flushes the writer, gives the client `LINGER` to read and close on its own, then closes
/// the connection with `code` (which any client version can read) and `reason`.
async fn close(conn: &Connection, writer: Writer, code: u32, reason: &str) {
    writer.finish().await;
    let _ = tokio::time::timeout(LINGER, conn.closed()).await;
    conn.close(super::close_varint(code), reason.as_bytes());
}

/// Why a connection ended, when the client ended it. Only a connection that went silent or
/// broke counts as lost (its player may resume); a client that closed it meant to.
async fn ended(conn: &Connection) -> Outcome {
    use wtransport::error::ConnectionError as E;
    let (reason, lost) = match conn.closed().await {
        E::ApplicationClosed(c) if left_on_purpose(c.code().into_inner()) => ("client_left", false),
        E::ApplicationClosed(_) => ("client_closed_with_error", false),
        E::TimedOut => ("idle_timeout", true),
        E::LocallyClosed => ("closed_by_server", false),
        _ => ("connection_lost", true),
    };
    Outcome { reason, lost }
}

/// Whether a client's close code says it left on purpose: Arena's [`CLOSE_CLIENT_LEFT`] as a
/// QUIC close, a WebTransport session closed with code 0 (a browser's `WebTransport.close()`
/// sends that capsule; wtransport reports its code unmapped) or HTTP/3's `H3_NO_ERROR`.
fn left_on_purpose(wire: u64) -> bool {
    const H3_NO_ERROR: u64 = 0x100;
    wire == u64::from(CLOSE_CLIENT_LEFT)
        || wire == H3_NO_ERROR
        || arena_shared::protocol::arena_code(wire) == Some(CLOSE_CLIENT_LEFT)
}

/// A welcomed session.
struct Session {
    ctx: Arc<NetContext>,
    conn: Connection,
    recv: RecvStream,
    reader: FrameReader,
    writer: Writer,
    outbox: Arc<Outbox>,
    client_id: u64,
    /// What to do with each frame and datagram the client sends.
    policy: FramePolicy,
    /// Game events taken from the outbox, reused.
    events: Vec<GameEvent>,
}

/// The client's connection as replication sends to it ([`Outbox::attach`], `replication::post`).
#[derive(Debug)]
struct ConnSink(wtransport::connection::DatagramSender);

impl DatagramSink for ConnSink {
    fn send(&self, datagram: &[u8]) -> Result<(), SinkError> {
        match self.0.send_datagram(datagram) {
            Ok(()) => Ok(()),
            Err(SendDatagramError::TooLarge) => Err(SinkError::TooLarge),
            // Lost, or refused by the peer: the session's own send finds out and ends it.
            Err(SendDatagramError::NotConnected | SendDatagramError::UnsupportedByPeer) => {
                Err(SinkError::Session)
            }
        }
    }

    fn max_datagram(&self) -> Option<usize> {
        self.0.max_datagram_size()
    }
}

/// How a session ended: the `reason` label of `arena_sessions_closed_total`, and whether the
/// connection was lost (the entity lingers for the grace period) rather than ended on purpose.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    reason: &'static str,
    lost: bool,
}

impl Outcome {
    fn on_purpose(reason: &'static str) -> Self {
        Self {
            reason,
            lost: false,
        }
    }
}

/// Why a playing session ends other than by its client: what [`control`] waits for.
enum Control {
    Shutdown,
    Superseded,
    Moved(Arc<Move>),
}

/// Resolves when the server shuts down, the session is superseded (resumed on another
/// connection) or a move is published.
async fn control(
    shutdown: &CancellationToken,
    superseded: &CancellationToken,
    moves: &mut watch::Receiver<Option<Arc<Move>>>,
) -> Control {
    let mut moves_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Control::Shutdown,
            changed = moves.changed(), if moves_open => {
                // The mover is gone (the server was made without one kept): nothing moves.
                moves_open = changed.is_ok();
                let pending = moves.borrow_and_update().clone();
                if let Some(to) = pending {
                    return Control::Moved(to);
                }
            }
            _ = superseded.cancelled() => return Control::Superseded,
        }
    }
}

impl Session {
    /// Runs until the client leaves, misbehaves, or the server shuts down.
    async fn play(
        mut self: Box<Self>,
        shutdown: &CancellationToken,
        superseded: &CancellationToken,
        moves: &mut watch::Receiver<Option<Arc<Move>>>,
    ) -> Outcome {
        let mut buf = vec![0u8; PLAY_READ_CHUNK];
        // From here replication sends this client's snapshots itself; what it
        // queued before (from the join to now) is sent by the loop's first turn, a tick at most
        // behind the first sent directly (the client takes snapshots in any order).
        self.outbox
            .attach(Box::new(ConnSink(self.conn.datagram_sender())));
        // A snapshot leaves every tick from here, so what the session writes to the stream
        // (events, pongs, names) waits for it and shares its packet, rather than taking a
        // packet of its own a few milliseconds earlier (and the client's acknowledgement of
        // it, one more). At most a tick late; sooner if the client's next packet comes first.
        // Uncorked for the goodbye.
        self.conn.quic_connection().set_stream_cork(true);
        // A move published while this session was being admitted is acted on at once.
        if moves.has_changed().unwrap_or(false) {
            let pending = moves.borrow_and_update().clone();
            if let Some(to) = pending {
                return Box::pin(self.moved(&to)).await;
            }
        }
        // The rare reasons to end, one future for the session's life, polled only when one of
        // them woke the task (the loop wakes a few times a tick for the others).
        let mut control = WakeGate::new(control(shutdown, superseded, moves));
        loop {
            tokio::select! {
                end = &mut control => {
                    return match end {
                        Control::Shutdown => Box::pin(self.disconnect(DisconnectReason::ServerShutdown, "server shutting down")).await,
                        Control::Superseded => Box::pin(self.disconnect(DisconnectReason::Superseded, "this session was resumed on another connection")).await,
                        Control::Moved(to) => Box::pin(self.moved(&to)).await,
                    };
                }
                _ = self.outbox.ready() => {
                    if let Err(outcome) = self.send_snapshots() {
                        // A lost connection says why (timed out, reset) once it is closed.
                        return if outcome.lost { Box::pin(ended(&self.conn)).await } else { outcome };
                    }
                    if let Err((reason, message)) = self.send_events() {
                        return Box::pin(self.disconnect(reason, &message)).await;
                    }
                }
                read = self.recv.read(&mut buf) => match read {
                    Ok(Some(n)) => {
                        Stats::add(&self.ctx.stats.stream_bytes_received, n as u64);
                        self.reader.push(&buf[..n]);
                        if let Err((reason, message)) = self.handle_frames() {
                            return Box::pin(self.disconnect(reason, &message)).await;
                        }
                        // Answers were queued: let the writer hand them to QUIC before the
                        // next read. While a burst of requests sits in the stream every read
                        // is ready at once, and without this the loop would answer a whole
                        // window of them before its own writer got a turn.
                        if self.writer.queued() > 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    Ok(None) => {
                        let (reason, message) = frame_policy::stream_ended(self.reader.pending());
                        return Box::pin(self.disconnect(reason, &message)).await;
                    }
                    Err(_) => return Box::pin(ended(&self.conn)).await,
                },
                datagram = self.conn.receive_datagram() => match datagram {
                    Ok(d) => {
                        let payload = d.payload();
                        Stats::add(&self.ctx.stats.datagrams_received, 1);
                        Stats::add(&self.ctx.stats.datagram_bytes_received, payload.len() as u64);
                        let server_tick = self.ctx.stats.tick.load(Ordering::Relaxed) as u32;
                        match frame_policy::datagram(&payload, server_tick) {
                            Datagram::Ack(tick) => {
                                Stats::add(&self.ctx.stats.acks_received, 1);
                                self.outbox.record_ack(tick);
                            }
                            Datagram::AckIgnored => Stats::add(&self.ctx.stats.acks_ignored, 1),
                            Datagram::Close((reason, message)) => {
                                return Box::pin(self.disconnect(reason, &message)).await;
                            }
                        }
                    }
                    Err(_) => return Box::pin(ended(&self.conn)).await,
                },
            }
        }
    }

    /// Acts on every whole frame buffered, as the [`FramePolicy`] says.
    fn handle_frames(&mut self) -> Result<(), Close> {
        loop {
            let body = match self.reader.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(e) => return Err(frame_policy::too_large(e)),
            };
            let stats = &self.ctx.stats;
            match self.policy.frame(&body, self.ctx.now_s()) {
                Verdict::Forward(input) => {
                    let cmd = SimCommand::Input {
                        client_id: self.client_id,
                        input,
                    };
                    if self.ctx.inbox.try_send(cmd).is_err() {
                        Stats::add(&stats.inputs_dropped_inbox_full, 1);
                    }
                }
                // Answered in the next snapshot where snapshots say how inputs were used
                // (the delta mode); where they do not, on the stream.
                Verdict::SnapshotPong { nonce }
                    if self.ctx.config.replication == ReplicationMode::Delta =>
                {
                    self.outbox.ping(nonce);
                }
                Verdict::Pong { nonce } | Verdict::SnapshotPong { nonce } => {
                    let server_tick = stats.tick.load(Ordering::Relaxed) as u32;
                    self.writer
                        .send_best_effort(&ServerMsg::Pong(Pong { nonce, server_tick }));
                }
                Verdict::Names(entities) => {
                    Stats::add(&stats.whois_answered, 1);
                    let names = self.ctx.names.lookup(&entities);
                    if self.writer.send(&ServerMsg::Names(names)).is_err() {
                        return Err(self.backlogged());
                    }
                }
                Verdict::Drop(dropped) => Stats::add(
                    match dropped {
                        Dropped::InputOverRate => &stats.inputs_rate_limited,
                        Dropped::MoveOutOfRange => &stats.inputs_move_out_of_range,
                        Dropped::UnknownButtons => &stats.inputs_unknown_buttons,
                        Dropped::WhoIsOverRate => &stats.whois_rate_limited,
                    },
                    1,
                ),
                Verdict::Flood(close) => {
                    Stats::add(&stats.inputs_rate_limited, 1);
                    return Err(close);
                }
                Verdict::Close(close) => return Err(close),
            }
        }
    }

    /// Writes every pending game event to the reliable stream.
    fn send_events(&mut self) -> Result<(), Close> {
        self.outbox.drain_events(&mut self.events);
        for event in &self.events {
            if self.writer.send(&ServerMsg::Event(*event)).is_err() {
                return Err(self.backlogged());
            }
        }
        Ok(())
    }

    fn backlogged(&self) -> Close {
        (
            DisconnectReason::SlowConsumer,
            format!(
                "stream backed up past {} bytes",
                self.ctx.config.max_send_backlog
            ),
        )
    }

    /// Sends every queued snapshot, one datagram per part.
    fn send_snapshots(&mut self) -> Result<(), Outcome> {
        if let Some(max) = self.conn.max_datagram_size() {
            self.outbox.set_max_datagram(max);
        }
        let (mut count, mut bytes) = (0u64, 0u64);
        for snapshot in self.outbox.drain() {
            for datagram in snapshot.iter() {
                match self.conn.send_datagram(datagram) {
                    Ok(()) => {
                        count += 1;
                        bytes += datagram.len() as u64;
                    }
                    // The path shrank under a snapshot built for the old size: the next one is
                    // built for the new size.
                    Err(SendDatagramError::TooLarge) => {}
                    Err(SendDatagramError::NotConnected) => {
                        return Err(Outcome {
                            reason: "connection_lost",
                            lost: true,
                        });
                    }
                    Err(SendDatagramError::UnsupportedByPeer) => {
                        return Err(Outcome::on_purpose("datagrams_refused"));
                    }
                }
            }
        }
        Stats::add(&self.ctx.stats.datagrams_sent, count);
        Stats::add(&self.ctx.stats.datagram_bytes_sent, bytes);
        Ok(())
    }

    async fn disconnect(self, reason: DisconnectReason, message: &str) -> Outcome {
        let reconnect_after_ms = match reason {
            // Spread over the drain time, so the players do not all come back at once.
            DisconnectReason::ServerShutdown => {
                self.spread_ms(self.ctx.config.drain_secs.saturating_mul(1000))
            }
            _ => 0,
        };
        self.goodbye(
            Disconnect {
                reason,
                message: message.to_string(),
                reconnect_after_ms,
                moved_to: None,
            },
            message,
        )
        .await;
        Outcome::on_purpose(reason.as_str())
    }

    /// Sends the player to another server. The session ends as lost, not on purpose: its seat
    /// lingers for the grace period, so the player can also resume here.
    async fn moved(self, to: &Move) -> Outcome {
        let reason = DisconnectReason::Moved;
        let window_ms = u32::try_from(to.spread.as_millis()).unwrap_or(u32::MAX);
        let message = "the server moved; reconnect to the one named";
        let reconnect_after_ms = self.spread_ms(window_ms);
        self.goodbye(
            Disconnect {
                reason,
                message: message.to_string(),
                reconnect_after_ms,
                moved_to: Some(to.to.clone()),
            },
            message,
        )
        .await;
        Outcome {
            reason: reason.as_str(),
            lost: true,
        }
    }

    /// A reconnect delay drawn uniformly over `0..=window_ms`, each client its own, so that
    /// the players sent away together do not all come back at once.
    fn spread_ms(&self, window_ms: u32) -> u32 {
        let seed = self.client_id ^ self.ctx.started.elapsed().as_nanos() as u64;
        SplitMix64::new(seed).below(window_ms.saturating_add(1))
    }

    /// Sends `goodbye`, then closes with its reason's code.
    async fn goodbye(mut self, goodbye: Disconnect, message: &str) {
        self.conn.quic_connection().set_stream_cork(false);
        let code = goodbye.reason.code();
        let _ = self.writer.send(&ServerMsg::Disconnect(goodbye));
        close(&self.conn, self.writer, code, message).await;
    }
}

#[cfg(test)]
mod close_tests {
    use arena_shared::protocol::{CLOSE_CLIENT_LEFT, DisconnectReason, close_code};

    #[test]
    fn a_client_leaves_on_purpose_with_arenas_code_a_session_close_or_h3_no_error_only() {
        let left = super::left_on_purpose;
        assert!(left(close_code(CLOSE_CLIENT_LEFT)), "Arena's own code");
        assert!(left(0), "a WebTransport session closed with 0");
        assert!(left(0x100), "H3_NO_ERROR");
        assert!(!left(close_code(DisconnectReason::MalformedFrame.code())));
        assert!(!left(0x105), "H3_FRAME_UNEXPECTED is an error");
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The size of the future a four-argument function returns, named by the function alone.
    fn future_size<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A session's task is allocated once, at its largest state's size, for the whole session:
    /// a thousand players hold a thousand of them. The steps before play and the play loop are
    /// boxed (see [`run`]), so a step that grows, or an await left unboxed, fails here rather
    /// than adding to every player's memory unseen. (It was 3,312 bytes before the boxes.)
    #[test]
    fn a_sessions_task_stays_small_whatever_its_steps_hold() {
        let size = future_size(run);
        eprintln!("session task future: {size} bytes");
        assert!(
            size <= SESSION_TASK_MAX_BYTES,
            "{size} bytes, more than {SESSION_TASK_MAX_BYTES}"
        );
    }

    /// The bound, over the 736 bytes `run`'s future takes (debug and release builds alike).
    const SESSION_TASK_MAX_BYTES: usize = 1024;
}
