//! Every message Arena puts on the wire, and the rules around them.
//!
//! - One bidirectional QUIC stream per session, opened by the client, carries length-prefixed
//!   frames both ways: the client's `Hello`, then [`ClientMsg`]s; the server's [`ServerMsg`]s.
//! - Unreliable QUIC datagrams carry [`ServerDatagram`]s (snapshots) from server to client,
//!   and [`ClientDatagram`]s (snapshot acknowledgements) from client to server.
//! - [`codec`] is the only module that turns these types into bytes or back.
//!
//! PROTOCOL.md at the repository root is the specification; this module must agree with it.

pub mod codec;

use bitcode::{Decode, Encode};
use glam::Vec2;

use crate::map::Map;
use crate::quant::{Aim, MoveDir};
use crate::snapshot::{Ack, DeltaSnapshot};

/// Bumped whenever a byte on the wire changes meaning (a new bitcode version counts). 8: the
/// QUIC close codes moved out of HTTP/3's error space (see [`close_code`]). 9: `Disconnect`
/// carries where a moved player goes ([`MovedTo`], [`DisconnectReason::Moved`]). 10: a ping
/// answered in the snapshot ([`ClientMsg::SnapshotPing`], [`InputStatus::pong`]).
pub const PROTOCOL_VERSION: u16 = 10;

/// First bytes of a client's `Hello` frame: lets the server tell "not an Arena client" apart
/// from "an Arena client of another version".
pub const HELLO_MAGIC: [u8; 4] = *b"ARNA";

/// Hard maximum of one reliable frame's body, both directions. A peer announcing more is
/// closed at once, before anything is buffered.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Longest player name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 32;

/// Most entities one [`WhoIs`] may ask about; a client asking about more is disconnected
/// (`MalformedFrame`).
pub const MAX_WHOIS: usize = 64;

/// Longest [`MovedTo::url`] and [`MovedTo::http`], in bytes: a client follows these, so it
/// takes none it would not send on itself.
pub const MAX_MOVED_URL_LEN: usize = 512;
/// Most certificate hashes one [`MovedTo`] may name (the current certificate and the next
/// one during a rotation need two).
pub const MAX_MOVED_CERT_HASHES: usize = 4;
/// Longest certificate hash in a [`MovedTo`], in bytes (base64 of a SHA-256 is 44).
pub const MAX_CERT_HASH_LEN: usize = 64;

/// The client's first frame. Encoded specially (see [`codec::encode_hello`]): the version is
/// read before anything else, so any server can tell an old client why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u16,
    /// A connect token (see [`crate::token`]). May be empty when `resume` is given: a resume
    /// token the server still knows admits by itself.
    pub token: String,
    pub name: String,
    /// The resume token of an earlier session (from its `Welcome`), to take back that
    /// session's client id and entity within the server's grace period.
    pub resume: Option<ResumeToken>,
}

/// A secret the server hands each session in `Welcome`: presented in a later `Hello`, it
/// resumes that session (same client id, same entity) while the server keeps its entity,
/// during the grace period after the connection was lost. Single use: each session gets a
/// new one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ResumeToken(pub [u8; 16]);

impl std::fmt::Debug for ResumeToken {
    /// Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeToken(..)")
    }
}

/// Client → server, on the reliable stream, after `Hello`.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ClientMsg {
    Input(Input),
    /// Answered on the stream with a [`ServerMsg::Pong`], after every frame sent before it.
    Ping(Ping),
    WhoIs(WhoIs),
    /// Answered in the next snapshot ([`InputStatus::pong`]) with how long the server held
    /// it, so the answer costs no packet of its own; on the stream as a [`ServerMsg::Pong`]
    /// where snapshots carry no status (`--replication full`). What the client session sends.
    SnapshotPing(Ping),
}

/// Asks for the names of players the client sees in its snapshots (which carry ids only, to
/// keep them small). Answered with [`ServerMsg::Names`]. At most [`MAX_WHOIS`] entities.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WhoIs {
    pub entities: Vec<u32>,
}

/// A player entity's name, as its `Hello` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PlayerName {
    pub entity: u32,
    pub name: String,
}

/// Buttons held during an input, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub struct Buttons(pub u8);

impl Buttons {
    /// The hitscan rifle (`combat::RIFLE`), lag compensated.
    pub const FIRE: u8 = 1 << 0;
    /// A rocket (`combat::ROCKET`), a projectile entity.
    pub const ALT_FIRE: u8 = 1 << 1;
    /// Every bit this protocol version defines.
    pub const ALL: u8 = Self::FIRE | Self::ALT_FIRE;

    pub fn fire(self) -> bool {
        self.0 & Self::FIRE != 0
    }

    pub fn alt_fire(self) -> bool {
        self.0 & Self::ALT_FIRE != 0
    }
}

/// One tick's worth of player intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct Input {
    /// Increases by one per input a client sends; the server echoes the newest it applied.
    pub seq: u32,
    /// The client's estimate of the server tick this input is meant for.
    pub tick: u32,
    pub movement: MoveDir,
    pub aim: Aim,
    pub buttons: Buttons,
    /// The server tick at which the client was drawing other entities when it made this input
    /// (its interpolation time), and the fraction of a tick past it in 1/256: a hitscan shot is
    /// tested against the world as the shooter saw it (lag compensation), no further back
    /// than the server's rewind cap.
    pub view_tick: u32,
    pub view_frac: u8,
}

impl Input {
    /// Why this input is one no conforming client sends, if it is: the server drops it and
    /// counts the reason. Every field is an integer on the wire, so there is no NaN or
    /// infinity to catch; what remains is values outside their documented range. The tick is
    /// judged by the simulation against its own clock (too old, too far ahead).
    pub fn fault(&self) -> Option<InputFault> {
        let axis = -(MoveDir::STEPS as i16)..=MoveDir::STEPS as i16;
        if !axis.contains(&i16::from(self.movement.x))
            || !axis.contains(&i16::from(self.movement.y))
        {
            return Some(InputFault::MoveOutOfRange);
        }
        if self.buttons.0 & !Buttons::ALL != 0 {
            return Some(InputFault::UnknownButtons);
        }
        None
    }
}

/// Why an input was refused before it reached the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFault {
    /// A movement axis of -128 (the range is -127..=127).
    MoveOutOfRange,
    /// A button bit this protocol version does not define.
    UnknownButtons,
}

impl InputFault {
    pub const ALL: [InputFault; 2] = [InputFault::MoveOutOfRange, InputFault::UnknownButtons];

    /// A stable snake_case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MoveOutOfRange => "move_out_of_range",
            Self::UnknownButtons => "unknown_buttons",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Ping {
    /// Echoed in the `Pong` (or the [`SnapshotPong`]), so the client can match them up.
    pub nonce: u32,
}

/// The answer to a [`ClientMsg::SnapshotPing`], in a snapshot: its nonce, and how long the
/// server held the ping before the snapshot left (microseconds, from when the ping was read
/// to when the snapshot was built). The round trip is the time from sending the ping to
/// reading the snapshot, less `held_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct SnapshotPong {
    pub nonce: u32,
    pub held_us: u32,
}

/// Server → client, on the reliable stream.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ServerMsg {
    Welcome(Welcome),
    Reject(Reject),
    Disconnect(Disconnect),
    Pong(Pong),
    Event(GameEvent),
    /// The answer to a [`WhoIs`]: the names of those of its entities that are players now,
    /// in its order; entities that are not (NPCs, projectiles, gone) are left out.
    Names(Vec<PlayerName>),
}

/// Something that happened in the game to this client's entity or by it, on the reliable
/// stream (snapshots show where things are; events say what happened to whom). Entities are
/// named by their snapshot ids.
#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode)]
pub enum GameEvent {
    /// `attacker` hit `target` for `damage`; `health` is what the target has left. Sent to the
    /// attacker (a hit confirmation) and to the target.
    Hit {
        attacker: u32,
        target: u32,
        damage: u16,
        health: i16,
    },
    /// `victim` died of `killer`'s damage. Sent to both.
    Killed { killer: u32, victim: u32 },
    /// This client's entity is alive again at `pos`, with `health`, after the respawn delay
    /// (a client resets its prediction there).
    Respawned { entity: u32, pos: Vec2, health: i16 },
    /// This client's score changed.
    Score { kills: u32, deaths: u32 },
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Welcome {
    pub client_id: u64,
    /// The client's own entity in snapshots.
    pub entity: u32,
    pub tick_rate: u16,
    pub server_tick: u32,
    pub map: Map,
    /// Present it in the next `Hello` to resume this session if the connection is lost.
    pub resume_token: ResumeToken,
    /// Whether this session took back an earlier one's client id and entity (its `Hello`
    /// carried a resume token the server still knew, or a connect token for a client id whose
    /// entity was waiting out its grace period).
    pub resumed: bool,
}

/// The handshake failed; the server closes the session after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Reject {
    pub reason: RejectReason,
    /// For people reading logs; clients act on `reason`.
    pub message: String,
    /// Where waiting helps (server full, rate limited, too many from an address): try again no
    /// sooner than this. 0: no hint (retrying the same way will not help, or nothing is known).
    pub retry_after_ms: u32,
}

/// The server ends a session that had been welcomed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Disconnect {
    pub reason: DisconnectReason,
    pub message: String,
    /// Reconnect no sooner than this (0: no hint). On `ServerShutdown` each client gets a
    /// different value, spread over the server's `--drain-secs`, so they do not all come back
    /// (to this server restarted, or another) at once; on `Moved`, spread over the move's
    /// window the same way.
    pub reconnect_after_ms: u32,
    /// With `Moved`: the server that now holds this client's session. `None` otherwise.
    pub moved_to: Option<MovedTo>,
}

impl Disconnect {
    /// Whether a client may act on this message: a [`MovedTo`] within its bounds, and only on
    /// `Moved`. A client treats any other as a malformed frame.
    pub fn well_formed(&self) -> bool {
        match (&self.moved_to, self.reason) {
            (Some(to), DisconnectReason::Moved) => to.within_bounds(),
            (Some(_), _) => false,
            (None, _) => true,
        }
    }
}

/// Where a moved player reconnects: the server its session (client id, entity, resume token)
/// was handed to.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MovedTo {
    /// The new server's WebTransport URL, `https://host:port/`.
    pub url: String,
    /// Base64 SHA-256 hashes of the certificates to pin for `url` (as `/api/connect`'s
    /// `cert_sha256s`); empty when the new server's certificate is trusted by a CA.
    pub cert_sha256: Vec<String>,
    /// The new server's HTTP base (`http://host:port`), for `/api/connect` if the resume is
    /// refused there; empty when there is none to ask.
    pub http: String,
}

impl MovedTo {
    /// At most [`MAX_MOVED_URL_LEN`] bytes of `url` and of `http`, at most
    /// [`MAX_MOVED_CERT_HASHES`] hashes of at most [`MAX_CERT_HASH_LEN`] bytes each, and a
    /// `url` to go to.
    pub fn within_bounds(&self) -> bool {
        !self.url.is_empty()
            && self.url.len() <= MAX_MOVED_URL_LEN
            && self.http.len() <= MAX_MOVED_URL_LEN
            && self.cert_sha256.len() <= MAX_MOVED_CERT_HASHES
            && self
                .cert_sha256
                .iter()
                .all(|h| h.len() <= MAX_CERT_HASH_LEN)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Pong {
    pub nonce: u32,
    pub server_tick: u32,
}

/// Why a handshake was refused. The code is also the QUIC application close code, which any
/// client version can read even if it cannot decode this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum RejectReason {
    /// The client speaks another protocol version; `server` is the one this server speaks.
    ProtocolVersion {
        server: u16,
    },
    /// The first frame was not an Arena `Hello`.
    NotArena,
    /// The `Hello` did not decode, or its name is empty, too long or not printable.
    MalformedHello,
    TokenMissing,
    TokenMalformed,
    TokenForged,
    TokenExpired,
    TokenWrongServer,
    /// `--max-clients` sessions are already playing.
    ServerFull,
    /// No `Hello` arrived in time.
    HandshakeTimeout,
    /// The server is shutting down and admits no one.
    ShuttingDown,
    /// The token admitted a session before (tokens are single-use), or a session with its
    /// client id is playing now.
    TokenInUse,
    /// The client's QUIC stack does not accept datagrams, which carry every snapshot.
    DatagramsUnsupported,
    /// `--max-per-ip` sessions from this address are playing already.
    TooManyFromAddress,
    /// Handshakes arrive faster than `--handshakes-per-sec`.
    RateLimited,
}

impl RejectReason {
    /// Arena's number for the reason (PROTOCOL.md, "Errors and close codes"); the QUIC close
    /// code carries it as [`close_code`]`(code)`.
    pub fn code(self) -> u32 {
        match self {
            Self::ProtocolVersion { .. } => 0x101,
            Self::NotArena => 0x102,
            Self::MalformedHello => 0x103,
            Self::TokenMissing => 0x104,
            Self::TokenMalformed => 0x105,
            Self::TokenForged => 0x106,
            Self::TokenExpired => 0x107,
            Self::TokenWrongServer => 0x108,
            Self::ServerFull => 0x109,
            Self::HandshakeTimeout => 0x10A,
            Self::ShuttingDown => 0x10B,
            Self::TokenInUse => 0x10C,
            Self::DatagramsUnsupported => 0x10D,
            Self::TooManyFromAddress => 0x10E,
            Self::RateLimited => 0x10F,
        }
    }

    /// A stable snake_case name, for logs, reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProtocolVersion { .. } => "protocol_version",
            Self::NotArena => "not_arena",
            Self::MalformedHello => "malformed_hello",
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::TokenForged => "token_forged",
            Self::TokenExpired => "token_expired",
            Self::TokenWrongServer => "token_wrong_server",
            Self::ServerFull => "server_full",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::TokenInUse => "token_in_use",
            Self::DatagramsUnsupported => "datagrams_unsupported",
            Self::TooManyFromAddress => "too_many_from_address",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Why a welcomed session ended. The code is also the QUIC application close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum DisconnectReason {
    ServerShutdown,
    /// A reliable frame's body did not decode as a `ClientMsg`.
    MalformedFrame,
    /// A reliable frame announced a body over [`MAX_FRAME_LEN`].
    FrameTooLarge,
    /// A client datagram did not decode as a `ClientDatagram`.
    MalformedDatagram,
    /// The client finished its stream in the middle of a frame, or before leaving.
    StreamClosed,
    /// The simulation could not take the client (it is shutting down).
    SimulationUnavailable,
    /// The client kept sending inputs faster than `--max-inputs-per-sec` allows.
    InputFlood,
    /// The client does not read its reliable stream: more than `--max-send-backlog` bytes
    /// waited for it.
    SlowConsumer,
    /// A newer connection presented this session's resume token and took the session over
    /// (this connection is presumed dead: the client changed networks).
    Superseded,
    /// The server handed this session to another server ([`Disconnect::moved_to`]): reconnect
    /// there after `reconnect_after_ms`, presenting the resume token. Not a failure.
    Moved,
}

impl DisconnectReason {
    /// Arena's number for the reason; the QUIC close code carries it as
    /// [`close_code`]`(code)`.
    pub fn code(self) -> u32 {
        match self {
            Self::ServerShutdown => 0x201,
            Self::MalformedFrame => 0x202,
            Self::FrameTooLarge => 0x203,
            Self::MalformedDatagram => 0x204,
            Self::StreamClosed => 0x205,
            Self::SimulationUnavailable => 0x206,
            Self::InputFlood => 0x207,
            Self::SlowConsumer => 0x208,
            Self::Superseded => 0x209,
            Self::Moved => 0x20A,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerShutdown => "server_shutdown",
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::MalformedDatagram => "malformed_datagram",
            Self::StreamClosed => "stream_closed",
            Self::SimulationUnavailable => "simulation_unavailable",
            Self::InputFlood => "input_flood",
            Self::SlowConsumer => "slow_consumer",
            Self::Superseded => "superseded",
            Self::Moved => "moved",
        }
    }
}

/// Arena code a client closes with when it leaves on purpose (on the wire:
/// `close_code(CLOSE_CLIENT_LEFT)`).
pub const CLOSE_CLIENT_LEFT: u32 = 0;

/// The first of the HTTP/3 error codes reserved for WebTransport applications
/// (draft-ietf-webtrans-http3, "WT_APPLICATION_ERROR"): 2^32 codes spread over
/// `0x52e4a40fa8db..=0x52e5ac983162`, skipping HTTP/3's reserved (greased) codepoints.
pub const WT_APPLICATION_ERROR_FIRST: u64 = 0x52e4_a40f_a8db;
/// The last of them (Arena code `u32::MAX`).
pub const WT_APPLICATION_ERROR_LAST: u64 = 0x52e5_ac98_3162;

/// The QUIC application close code that carries Arena code `code` (a [`RejectReason`] or
/// [`DisconnectReason`] code, or [`CLOSE_CLIENT_LEFT`]).
///
/// A WebTransport session over HTTP/3 shares its QUIC connection's error space with HTTP/3,
/// whose own codes (`H3_NO_ERROR` 0x100 to `H3_VERSION_FALLBACK` 0x110, and more) the same
/// close may carry: Arena's codes used to be sent as they are, so `Reject(TokenMalformed)`
/// (0x105) read the same as `H3_FRAME_UNEXPECTED`. Since protocol 8 they are mapped into the
/// range WebTransport reserves for applications, with its own mapping
/// (`first + n + n / 0x1e`), so nothing HTTP/3 or QUIC says can be taken for an Arena reason
/// and every Arena code can be read back ([`arena_code`]).
pub const fn close_code(code: u32) -> u64 {
    let n = code as u64;
    WT_APPLICATION_ERROR_FIRST + n + n / 0x1e
}

/// The Arena code a QUIC application close code carries, or `None` when it is not one of
/// WebTransport's application codes (an HTTP/3 or QUIC error, or a reserved codepoint).
pub const fn arena_code(wire: u64) -> Option<u32> {
    if wire < WT_APPLICATION_ERROR_FIRST || wire > WT_APPLICATION_ERROR_LAST {
        return None;
    }
    let shifted = wire - WT_APPLICATION_ERROR_FIRST;
    // Every 0x1f-th codepoint is one of HTTP/3's reserved `0x1f * N + 0x21` codes.
    if shifted % 0x1f == 0x1e {
        return None;
    }
    Some((shifted - shifted / 0x1f) as u32)
}

/// Server → client, as one QUIC datagram each.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ServerDatagram {
    /// The client's view at a tick, as a delta against a view it acknowledged, and how the
    /// server used the client's inputs up to that tick. The normal mode.
    Delta(InputStatus, DeltaSnapshot),
    /// Part of the full state of the world (`--replication full`, kept for comparison).
    Snapshot(Snapshot),
}

/// How the server used a client's inputs, as of a snapshot's tick: what prediction reconciles
/// against and what clock sync adjusts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct InputStatus {
    /// Seq of the input applied at the snapshot's tick (a repeated input keeps its seq);
    /// 0 before the first.
    pub last_seq: u32,
    /// Ticks, since the client's first input, for which its input had not arrived in time.
    pub late: u32,
    /// How many ticks before its tick the newest input arrived (negative: after), clamped.
    pub lead: i8,
    /// The answer to the newest [`ClientMsg::SnapshotPing`] read since the last snapshot, if
    /// any (only the newest is answered).
    pub pong: Option<SnapshotPong>,
}

/// Client → server, as one QUIC datagram each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ClientDatagram {
    /// The snapshots the client reconstructed: the server encodes the next one against the
    /// newest of them.
    Ack(Ack),
}

/// One part of the world at one tick (`--replication full`). The full state is split into
/// `parts` datagrams, each small enough for the connection's maximum datagram size and each
/// useful on its own.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Snapshot {
    pub tick: u32,
    pub part: u16,
    pub parts: u16,
    pub entities: Vec<EntityState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EntityKind {
    Player,
    Npc,
    /// A rocket or an NPC's bolt: flies straight (dead reckoning predicts it exactly) until it
    /// hits something or its lifetime ends.
    Projectile,
}

#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode)]
pub struct EntityState {
    pub id: u32,
    pub kind: EntityKind,
    pub pos: Vec2,
    pub vel: Vec2,
}
