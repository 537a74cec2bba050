//! One bot's client, sans-IO: the shared [`ClientSession`] (the netcode, written once for the
//! bots, the browser and the virtual-clock harness) plus what makes it a bot: what it presses
//! (a heading, a random walk, chase steering) and what it counts ([`BotOutcome`] and the
//! swarm's live counters, from the session's events). It is fed bytes and times and hands
//! back bytes to send; [`crate::bot`] owns the sockets, the timers, the impairment's delay
//! lines and reconnecting.
//!
//! The session's settings for a bot: acknowledgements leave with the next input
//! ([`AckTiming::WithNextInput`], one packet up per tick), no names are asked for, and an idle
//! bot only watches ([`ClientSession::watch_only`]: acks half a tick after a snapshot, no
//! frames, no clock, prediction or interpolation to keep), as before the session existed. Only
//! a chaser interpolates: it aims where its interpolation draws its target, while a wanderer
//! never looks at anyone, so its session keeps no views
//! ([`ClientSession::without_interpolation`]; twelve views of everything in sight were a third
//! of a bot's memory) and interpolation underruns are the chasers'.
//!
//! What the figures mean, unchanged by the move onto the session:
//! - A snapshot counts when the bot has it whole: a delta snapshot (one datagram) when it was
//!   applied, a full snapshot (the server's comparison mode, one tick in several datagrams)
//!   when every part of its tick arrived ([`Assembly`]), its bytes being all its parts'. The
//!   session itself follows every part (its clock takes the first part's arrival, the best
//!   sample of when the tick left); counting whole ticks stays here, because a snapshot rate
//!   is a rate of ticks a player could draw.
//! - Round trips come from the session's pings, sent from its frames every
//!   [`PING_INTERVAL_MS`](arena_shared::client_session::PING_INTERVAL_MS) (at the first frame
//!   due, so at most one frame, about 17 ms at 30 Hz, later than a timer of its own would):
//!   a bot runs no ping timer beside its frame timer.
//! - Corrections, late inputs and the clock's error count after the session's warm-up
//!   ([`WARM_UP_MS`](arena_shared::client_session::WARM_UP_MS) after the first snapshot).

use std::sync::Arc;
use std::time::Duration;

use arena_shared::client_session::{
    AckTiming, ClientSession, Controls, Event, SessionConfig, SnapshotApplied, Transmit,
};
use arena_shared::combat;
use arena_shared::protocol::{DisconnectReason, Snapshot};
use arena_shared::quant::MoveDir;
use arena_shared::rng::SplitMix64;
use arena_shared::snapshot::ReceiveError;
use glam::Vec2;

use crate::behaviour::{self, Behaviour, Walk};
use crate::connect::ClientError;
use crate::live::{self, LiveStats};
use crate::outcome::{self, BotOutcome};

/// A welcomed connection, as the runtime records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcomed {
    pub entity: u32,
    pub tick_rate: u16,
    /// It took back an earlier session's entity.
    pub resumed: bool,
}

/// One bot's client over all its connections (the session keeps the resume token between
/// them).
pub struct Player {
    session: ClientSession,
    steer: Steer,
    live: Arc<LiveStats>,
    /// Full snapshots' parts, to count whole ticks, and the bytes of the tick being assembled.
    assembly: Assembly,
    part_bytes: u64,
    /// The server's late count at the first snapshot after the warm-up, this connection.
    late_base: Option<u32>,
    /// Late inputs and interpolation underruns of the connections before this one.
    late_before: u64,
    underruns_before: u64,
    welcomed: Option<Welcomed>,
    /// When the last whole snapshot arrived, on the player's clock (it runs across sessions).
    last_snapshot_ms: Option<f64>,
}

impl Player {
    /// A bot's client: see the module docs for its session's settings.
    pub fn new(name: &str, behaviour: Behaviour, seed: u64, live: Arc<LiveStats>) -> Self {
        let session = ClientSession::new(SessionConfig {
            name: name.to_string(),
            // One packet up per tick: the ack rides with the input.
            ack: AckTiming::WithNextInput,
            ask_names: false,
        });
        let session = match behaviour {
            Behaviour::Idle => session.watch_only(),
            // Only a chaser aims where its interpolation draws others; the rest keep no views.
            Behaviour::Chase => session,
            Behaviour::Wander | Behaviour::Heading(_) => session.without_interpolation(),
        };
        Self::with_session(session, behaviour, seed, live)
    }

    /// A player over a session set up otherwise (the cross-driver test runs the bots' player
    /// with the browser's settings, so that all its drivers send the same bytes).
    pub fn with_session(
        session: ClientSession,
        behaviour: Behaviour,
        seed: u64,
        live: Arc<LiveStats>,
    ) -> Self {
        Self {
            session,
            steer: Steer::new(behaviour, seed),
            live,
            assembly: Assembly::default(),
            part_bytes: 0,
            late_base: None,
            late_before: 0,
            underruns_before: 0,
            welcomed: None,
            last_snapshot_ms: None,
        }
    }

    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// Starts a connection: the `Hello` is queued, for [`Player::transmit`].
    pub fn connect(&mut self, token: &str) {
        self.welcomed = None;
        self.session.connect(token);
    }

    /// The `Welcome` of this connection, once, when it has come.
    pub fn take_welcome(&mut self) -> Option<Welcomed> {
        self.welcomed.take()
    }

    /// Bytes of the server's stream at `now_ms`. `Err`: the session ended (refused,
    /// disconnected, or the server sent what does not decode).
    pub fn on_stream(
        &mut self,
        bytes: &[u8],
        now_ms: f64,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        self.session.on_stream(bytes, now_ms);
        self.drain(out, 0, None)
    }

    /// One datagram from the server at `now_ms`. One that does not decode is dropped, like a
    /// lost one.
    pub fn on_datagram(
        &mut self,
        bytes: &[u8],
        now_ms: f64,
        out: &mut BotOutcome,
    ) -> Result<(), ClientError> {
        // The clock's estimate before this datagram corrects it: what its error is measured
        // on (no clock runs before the warm-up's end that it is counted from).
        let estimate = self
            .session
            .clock()
            .filter(|_| self.session.warm(now_ms))
            .and_then(|c| c.server_tick(now_ms));
        let whole = out.snapshots;
        self.session.on_datagram(bytes, now_ms);
        let drained = self.drain(out, bytes.len(), estimate);
        if out.snapshots > whole {
            if let Some(last) = self.last_snapshot_ms {
                let gap = Duration::from_secs_f64((now_ms - last).max(0.0) / 1000.0);
                out.longest_snapshot_gap = out.longest_snapshot_gap.max(gap);
            }
            self.last_snapshot_ms = Some(now_ms);
        }
        drained
    }

    /// One frame at `now_ms`: an input for every server tick that became due, as the bot's
    /// behaviour says.
    pub fn frame(&mut self, now_ms: f64, out: &mut BotOutcome) -> Result<(), ClientError> {
        let steer = &mut self.steer;
        frame(&mut self.session, now_ms, out, |s, _| {
            steer.controls(s, now_ms)
        });
        self.after_frame(out)
    }

    /// [`Player::frame`] with the controls given rather than the behaviour's, counted the
    /// same way.
    pub fn frame_with(
        &mut self,
        now_ms: f64,
        out: &mut BotOutcome,
        controls: impl FnMut(&ClientSession, u32) -> Controls,
    ) -> Result<(), ClientError> {
        frame(&mut self.session, now_ms, out, controls);
        self.after_frame(out)
    }

    /// An idle bot's held acknowledgement, sent if due ([`ClientSession::release_ack`]).
    pub fn release_ack(&mut self, now_ms: f64) -> bool {
        self.session.release_ack(now_ms)
    }

    /// Bytes to send, swapped into `buf` (see [`ClientSession::swap_transmit`]).
    pub fn transmit(&mut self, buf: &mut Transmit) {
        self.session.swap_transmit(buf);
    }

    /// The bot leaves this connection by choice: its last view is kept for the report.
    pub fn leave(&self, out: &mut BotOutcome) {
        out.last_view = self.session.latest().cloned();
    }

    fn after_frame(&mut self, out: &mut BotOutcome) -> Result<(), ClientError> {
        if let Some(interp) = self.session.interp() {
            out.interp_underruns = self.underruns_before + interp.underruns();
        }
        self.drain(out, 0, None)
    }

    /// Counts the session's events. `datagram`: the size of the datagram that caused them
    /// (0 for stream bytes and frames); `estimate`: the clock's estimate before it.
    fn drain(
        &mut self,
        out: &mut BotOutcome,
        datagram: usize,
        estimate: Option<f64>,
    ) -> Result<(), ClientError> {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Welcomed {
                    entity,
                    tick_rate,
                    resumed,
                } => self.on_welcome(
                    Welcomed {
                        entity,
                        tick_rate,
                        resumed,
                    },
                    out,
                ),
                Event::SnapshotApplied(a) => self.on_snapshot(&a, estimate, out),
                Event::SnapshotDropped { error, bytes } => {
                    outcome::record(&mut out.snapshot_bytes, bytes as u64);
                    if matches!(error, ReceiveError::MissingBaseline(_)) {
                        out.baseline_misses += 1;
                    }
                }
                Event::FullSnapshot(snap) => self.on_full_part(&snap, datagram, out),
                Event::Pong { rtt_ms } => {
                    let rtt = Duration::from_secs_f64(rtt_ms / 1000.0);
                    outcome::record(&mut out.rtt_us, rtt.as_micros().max(1) as u64);
                    self.live.record_rtt(rtt);
                }
                Event::Fired { .. } => out.shots_fired += 1,
                Event::Hit { attacker, .. } => {
                    if Some(attacker) == self.session.entity() {
                        out.hits_confirmed += 1;
                    }
                }
                Event::Killed { killer, victim } => {
                    let me = self.session.entity();
                    if Some(killer) == me {
                        out.kills += 1;
                    }
                    if Some(victim) == me {
                        out.deaths += 1;
                    }
                }
                // The session restarts prediction itself; bots ask no names.
                Event::Respawned { .. } | Event::Score { .. } | Event::Names(_) => {}
                Event::Rejected { reject, .. } => {
                    return Err(ClientError::Rejected {
                        reason: reject.reason,
                        message: reject.message,
                        retry_after_ms: reject.retry_after_ms,
                    });
                }
                Event::Disconnected(d) => {
                    if let (DisconnectReason::Moved, Some(to)) = (d.reason, d.moved_to) {
                        out.moves += 1;
                        return Err(ClientError::Moved {
                            to,
                            reconnect_after_ms: d.reconnect_after_ms,
                        });
                    }
                    return Err(ClientError::Disconnected {
                        reason: d.reason,
                        message: d.message,
                        reconnect_after_ms: d.reconnect_after_ms,
                    });
                }
                // The runtime reports a closed transport itself: this is the server's bytes
                // not decoding, or a message out of place.
                Event::Closed { message } => {
                    tracing::debug!(%message, "session ended");
                    return Err(ClientError::BadFrame);
                }
            }
        }
        Ok(())
    }

    /// What describes "the last session" starts again, and the behaviour with it.
    fn on_welcome(&mut self, w: Welcomed, out: &mut BotOutcome) {
        out.entity = Some(w.entity);
        out.tick_rate = w.tick_rate;
        out.first_pos = None;
        out.last_pos = None;
        out.input_sum = Vec2::ZERO;
        out.last_view = None;
        self.steer.restart();
        self.assembly = Assembly::default();
        self.part_bytes = 0;
        self.late_base = None;
        self.late_before = out.inputs_late;
        self.underruns_before = out.interp_underruns;
        self.welcomed = Some(w);
    }

    fn on_snapshot(&mut self, a: &SnapshotApplied, estimate: Option<f64>, out: &mut BotOutcome) {
        outcome::record(&mut out.snapshot_bytes, a.bytes as u64);
        out.snapshots += 1;
        live::bump(&self.live.snapshots);
        outcome::record(&mut out.in_view, a.entities as u64);
        if let Some(me) = a.me {
            out.first_pos.get_or_insert(me.pos);
            out.last_pos = Some(me.pos);
        }
        let (Some(clock), Some(tick_rate)) = (self.session.clock(), self.session.tick_rate())
        else {
            return;
        };
        if a.newest
            && a.warm
            && let (Some(est), Some(rtt)) = (estimate, clock.rtt_ms())
        {
            // How far the estimate was from the tick this snapshot proves, one way later.
            let tick_ms = 1000.0 / f64::from(tick_rate);
            let truth = f64::from(a.tick) + rtt / 2.0 / tick_ms;
            let err_ms = (est - truth).abs() * tick_ms;
            outcome::record(&mut out.clock_error_us, (err_ms * 1000.0).max(1.0) as u64);
        }
        if a.warm {
            let base = *self.late_base.get_or_insert(a.status.late);
            out.inputs_late = self.late_before + u64::from(a.status.late.saturating_sub(base));
        }
        if let Some(c) = a.correction {
            tracing::debug!(
                seq = a.status.last_seq,
                tick = a.tick,
                client_tick = ?clock.client_tick(),
                error = c.error,
                "prediction corrected"
            );
            if a.warm {
                out.prediction_corrections += 1;
                live::bump(&self.live.corrections);
                out.prediction_max_error = out.prediction_max_error.max(c.error);
            }
        }
    }

    /// A part of a full snapshot (comparison mode: no prediction; the session's clock follows
    /// it).
    fn on_full_part(&mut self, snap: &Snapshot, bytes: usize, out: &mut BotOutcome) {
        self.part_bytes += bytes as u64;
        if self.assembly.part(snap.tick, snap.parts) {
            out.snapshots += 1;
            live::bump(&self.live.snapshots);
            outcome::record(&mut out.snapshot_bytes, self.part_bytes);
            self.part_bytes = 0;
        }
        if let Some(me) = snap
            .entities
            .iter()
            .find(|e| Some(e.id) == self.session.entity())
        {
            out.first_pos.get_or_insert(me.pos);
            out.last_pos = Some(me.pos);
        }
    }
}

/// Runs the session's frame with `controls`, counting each input as it goes out.
fn frame(
    session: &mut ClientSession,
    now_ms: f64,
    out: &mut BotOutcome,
    mut controls: impl FnMut(&ClientSession, u32) -> Controls,
) {
    session.frame(now_ms, |s, tick| {
        let c = controls(s, tick);
        out.inputs_sent += 1;
        out.input_sum += MoveDir::from_vec2(c.movement).to_vec2();
        // The session holds fire while dead; count what leaves.
        if c.fire && !s.dead() {
            out.fire_inputs += 1;
        }
        c
    });
}

/// What a bot presses: its behaviour and the state it steers with.
struct Steer {
    behaviour: Behaviour,
    seed: u64,
    rng: SplitMix64,
    walk: Walk,
    /// A chaser's target, found once per view: (view tick, its id and where the view has it).
    target: Option<(u32, Option<(u32, Vec2)>)>,
}

impl Steer {
    fn new(behaviour: Behaviour, seed: u64) -> Self {
        Self {
            behaviour,
            seed,
            rng: SplitMix64::new(seed),
            walk: Walk::default(),
            target: None,
        }
    }

    /// Each connection walks the same way from its start, as the bot's seed says.
    fn restart(&mut self) {
        *self = Self::new(self.behaviour, self.seed);
    }

    /// The controls for one tick at `now_ms`.
    fn controls(&mut self, s: &ClientSession, now_ms: f64) -> Controls {
        let tick_rate = s.tick_rate().unwrap_or(1);
        let walk = |this: &mut Self| {
            let d = this.walk.next(&mut this.rng, tick_rate);
            Controls {
                movement: d,
                aim: d,
                ..Controls::default()
            }
        };
        match self.behaviour {
            Behaviour::Heading(d) => Controls {
                movement: d,
                aim: d,
                ..Controls::default()
            },
            Behaviour::Chase => match self.chase(s, now_ms) {
                Some(to) => Controls {
                    movement: to.normalize_or_zero(),
                    aim: to,
                    // The rifle at anything in its reach, a rocket now and then at whatever
                    // is close.
                    fire: to.length() <= combat::RIFLE.range,
                    alt_fire: to.length() <= 500.0 && self.rng.below(4) == 0,
                },
                None => walk(self),
            },
            Behaviour::Wander | Behaviour::Idle => walk(self),
        }
    }

    /// Where a chaser heads and aims: at the nearest player or NPC it sees (found once per new
    /// view), where its interpolation draws it now (what a player would aim at, and what the
    /// server's lag compensation rewinds to), from where it predicts itself to be. `None`
    /// while dead or seeing nobody.
    fn chase(&mut self, s: &ClientSession, now_ms: f64) -> Option<Vec2> {
        let me = s.me()?;
        let view = s.latest()?;
        let (id, seen) = match self.target {
            Some((tick, target)) if tick == view.tick => target,
            _ => {
                let target = behaviour::nearest_other(view, s.entity()?, me);
                self.target = Some((view.tick, target));
                target
            }
        }?;
        let drawn = s
            .render_tick(now_ms)
            .and_then(|r| s.interp()?.position(id, r))
            .unwrap_or(seen);
        Some(drawn - me)
    }
}

/// Tracks full snapshots' parts per tick, to count whole ticks. Bounded: only the newest few
/// ticks are kept.
#[derive(Default)]
struct Assembly {
    ticks: std::collections::HashMap<u32, (u16, u16)>,
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

    fn server_bytes(msg: &arena_shared::protocol::ServerMsg) -> Vec<u8> {
        let mut out = Vec::new();
        arena_shared::protocol::codec::encode_server(msg, &mut out).unwrap();
        out
    }

    fn welcome(token: u8, resumed: bool) -> Vec<u8> {
        server_bytes(&arena_shared::protocol::ServerMsg::Welcome(
            arena_shared::protocol::Welcome {
                client_id: 1,
                entity: 7,
                tick_rate: 30,
                server_tick: 1,
                map: arena_shared::map::Map::open(100.0, 100.0),
                resume_token: arena_shared::protocol::ResumeToken([token; 16]),
                resumed,
            },
        ))
    }

    /// The `Hello` the player queued, decoded.
    fn hello(p: &mut Player) -> arena_shared::protocol::Hello {
        let mut t = Transmit::default();
        p.transmit(&mut t);
        let mut r = arena_shared::protocol::codec::FrameReader::new();
        r.push(&t.stream);
        let body = r.next_frame().unwrap().expect("a frame");
        arena_shared::protocol::codec::decode_hello(&body).unwrap()
    }

    #[test]
    fn a_move_is_counted_not_lost_and_the_next_hello_resumes_with_no_token() {
        use arena_shared::protocol::{Disconnect, MovedTo, ResumeToken, ServerMsg};
        let live = Arc::new(LiveStats::default());
        let mut p = Player::new("bot", Behaviour::Idle, 1, live);
        let mut out = BotOutcome::new("bot".into(), 0, Behaviour::Idle);
        p.connect("tok");
        assert_eq!(hello(&mut p).resume, None);
        p.on_stream(&welcome(3, false), 0.0, &mut out).unwrap();
        assert!(p.take_welcome().is_some());
        let to = MovedTo {
            url: "https://b:4433/".into(),
            cert_sha256: vec!["aGFzaA==".into()],
            http: "http://b:8080".into(),
        };
        let moved = ServerMsg::Disconnect(Disconnect {
            reason: DisconnectReason::Moved,
            message: "moving".into(),
            reconnect_after_ms: 900,
            moved_to: Some(to.clone()),
        });
        let ended = p.on_stream(&server_bytes(&moved), 50.0, &mut out);
        match ended {
            Err(ClientError::Moved {
                to: got,
                reconnect_after_ms: 900,
            }) => assert_eq!(got, to),
            other => panic!("expected a move, got {other:?}"),
        }
        assert_eq!(out.moves, 1);
        assert!(out.errors.is_empty() && out.disconnected.is_none());

        // The next connection, to the new server, presents the token of the Welcome alone.
        let info = crate::connect::ConnectInfo::moved(&to);
        assert_eq!(
            (info.url.as_str(), info.token.as_str()),
            (to.url.as_str(), "")
        );
        assert_eq!(info.cert_sha256s, to.cert_sha256);
        p.connect(&info.token);
        let h = hello(&mut p);
        assert_eq!(h.resume, Some(ResumeToken([3; 16])));
        assert_eq!(h.token, "");
        p.on_stream(&welcome(4, true), 100.0, &mut out).unwrap();
        assert_eq!(
            p.take_welcome(),
            Some(Welcomed {
                entity: 7,
                tick_rate: 30,
                resumed: true
            })
        );
    }

    /// A one-part full snapshot of `tick`, as a datagram.
    fn whole_snapshot(tick: u32) -> Vec<u8> {
        arena_shared::protocol::codec::encode_datagram(
            &arena_shared::protocol::ServerDatagram::Snapshot(arena_shared::protocol::Snapshot {
                tick,
                part: 0,
                parts: 1,
                entities: Vec::new(),
            }),
        )
    }

    #[test]
    fn the_longest_gap_between_whole_snapshots_spans_sessions() {
        let live = Arc::new(LiveStats::default());
        let mut p = Player::new("bot", Behaviour::Idle, 1, live);
        let mut out = BotOutcome::new("bot".into(), 0, Behaviour::Idle);
        p.connect("tok");
        p.on_stream(&welcome(3, false), 0.0, &mut out).unwrap();
        p.on_datagram(&whole_snapshot(2), 100.0, &mut out).unwrap();
        assert_eq!(
            out.longest_snapshot_gap,
            Duration::ZERO,
            "one snapshot: no gap"
        );
        p.on_datagram(&whole_snapshot(3), 133.0, &mut out).unwrap();
        p.on_datagram(&whole_snapshot(4), 166.0, &mut out).unwrap();
        assert_eq!(out.longest_snapshot_gap, Duration::from_millis(33));
        // A new connection (a move, a reconnect): the gap runs from the last snapshot of the
        // one before to the first of the next.
        p.connect("");
        p.on_stream(&welcome(4, true), 900.0, &mut out).unwrap();
        p.on_datagram(&whole_snapshot(30), 1_366.0, &mut out)
            .unwrap();
        assert_eq!(out.longest_snapshot_gap, Duration::from_millis(1_200));
        // Only whole snapshots count: a part of a two-part tick is not one.
        let half = arena_shared::protocol::codec::encode_datagram(
            &arena_shared::protocol::ServerDatagram::Snapshot(arena_shared::protocol::Snapshot {
                tick: 31,
                part: 0,
                parts: 2,
                entities: Vec::new(),
            }),
        );
        p.on_datagram(&half, 1_400.0, &mut out).unwrap();
        p.on_datagram(&whole_snapshot(32), 3_000.0, &mut out)
            .unwrap();
        assert_eq!(out.longest_snapshot_gap, Duration::from_millis(1_634));
    }

    #[test]
    fn a_plain_shutdown_is_still_a_lost_session() {
        use arena_shared::protocol::{Disconnect, ServerMsg};
        let live = Arc::new(LiveStats::default());
        let mut p = Player::new("bot", Behaviour::Idle, 1, live);
        let mut out = BotOutcome::new("bot".into(), 0, Behaviour::Idle);
        p.connect("tok");
        p.on_stream(&welcome(3, false), 0.0, &mut out).unwrap();
        let bye = ServerMsg::Disconnect(Disconnect {
            reason: DisconnectReason::ServerShutdown,
            message: "bye".into(),
            reconnect_after_ms: 900,
            moved_to: None,
        });
        let ended = p.on_stream(&server_bytes(&bye), 50.0, &mut out);
        assert!(matches!(ended, Err(ClientError::Disconnected { .. })));
        assert_eq!(out.moves, 0);
    }
}
