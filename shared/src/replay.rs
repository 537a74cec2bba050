//! The replay file format: what a server records of a run, and how any reader (the server's
//! `replay` tools, the browser viewer through wasm) reads it back. Sans-IO: bytes in, records
//! out.
//!
//! A file is [`MAGIC`], then records. Each record is framed as
//! `len: u32 LE | crc32: u32 LE | body` where `body` is the bitcode encoding of a [`Record`]
//! and `crc32` is the IEEE CRC-32 of the body. The first record is a [`Record::Header`].
//!
//! Crash safety: records are appended whole; a file cut off mid-record (killed process, full
//! disk) reads back up to its last whole record ([`End::Truncated`]), and a record whose
//! checksum does not match is reported ([`End::Corrupt`]) and nothing after it is trusted.
//!
//! Untrusted input: a replay file may come from anyone, so a [`Reader`] believes nothing it
//! declares beyond its [`Limits`]. It streams (one record in memory at a time, the file
//! never read whole) and stops at the file length limit. bitcode allocates whatever lengths a
//! body declares, and a list element can cost one bit of input (16 MiB of body can ask for
//! 128M empty strings, 3 GB), so before decoding, the reader walks the body's columns
//! ([`Shape`]) and refuses a record that would decode to more than
//! [`Limits::max_decoded_len`] or hold a string over [`Limits::max_string_len`]. A file starts
//! with its one header; ticks never go back, move at most [`Limits::max_tick_step`] from one
//! record to the next and at most [`Limits::max_file_ticks`] from the file's first tick, so a
//! re-simulation of a file has a bounded number of ticks to step. The format is unchanged:
//! every file a server writes obeys these rules.

use std::io::Read as _;

use bitcode::{Decode, Encode};

use glam::Vec2;

use crate::map::Map;
use crate::protocol::{EntityState, GameEvent, Input};
use crate::quant::MoveDir;

/// First bytes of every replay file.
pub const MAGIC: [u8; 8] = *b"ARNAREPL";
/// Bumped whenever a record's meaning changes. 2: keyframes carry the whole [`SimState`], so a
/// re-simulation can start at any keyframe. 3: a player's state carries its spawn protection
/// (`protected_until`). Files of older formats are not read.
pub const FORMAT_VERSION: u16 = 3;
/// Largest record body a reader accepts (a keyframe of a large world fits many times over);
/// a longer length prefix means a damaged file.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;
/// Bytes of a record's frame before its body.
pub const FRAME_LEN: usize = 8;

/// What a run is, written first.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Header {
    pub format_version: u16,
    pub protocol_version: u16,
    pub seed: u64,
    pub map: Map,
    pub tick_rate: u16,
    /// Wall-clock start of the recording, Unix milliseconds.
    pub start_unix_ms: u64,
    /// The first tick recorded.
    pub first_tick: u32,
    /// The server flags that shape the simulation (seed, world, NPCs, rates, combat
    /// settings), as `--flag value` pairs: a re-simulation starts from the same world.
    pub sim_args: Vec<String>,
}

/// One thing that happened, at a tick.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Record {
    Header(Header),
    /// A player entered the world (or took its entity back, `resumed`).
    Join {
        tick: u32,
        client_id: u64,
        entity: u32,
        name: String,
        resumed: bool,
    },
    /// A player's entity left the world.
    Leave {
        tick: u32,
        client_id: u64,
    },
    /// A player's connection was lost: its entity stays, still, for the grace period.
    Detach {
        tick: u32,
        client_id: u64,
    },
    /// An input as the server applied it at `tick` (a repeated input is not recorded again).
    Input {
        tick: u32,
        client_id: u64,
        input: Input,
    },
    /// A game event, as sent to `client_id`.
    Event {
        tick: u32,
        client_id: u64,
        event: GameEvent,
    },
    /// The world at the end of `tick`: `entities` is every living entity as a client would
    /// see it (sorted by id), `state` everything else a re-simulation needs to carry on from
    /// here.
    Keyframe {
        tick: u32,
        entities: Vec<EntityState>,
        state: SimState,
    },
    /// The recorder fell behind and dropped `dropped` records before `tick`: what lies around
    /// here is incomplete.
    Gap {
        tick: u32,
        dropped: u64,
    },
}

/// Everything the simulation carries from the end of one tick into the next, beyond the
/// settings in the header's `sim_args`: restored into a fresh world, the next tick comes out
/// as it did in the recorded run. Floats are the simulation's own bits.
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub struct SimState {
    /// The last snapshot id handed out.
    pub last_id: u32,
    /// The world generator's state (spawn points).
    pub rng: u64,
    /// Every entity, living or dead, sorted by id.
    pub entities: Vec<EntityRecord>,
    /// Lag compensation: the frames a shot in the coming ticks may rewind to (the newest is
    /// this tick's, which is also what the next tick's NPCs see), oldest first.
    pub history: Vec<HistoryFrame>,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct EntityRecord {
    pub id: u32,
    pub pos: Vec2,
    pub vel: Vec2,
    /// Hit points (0 for a projectile).
    pub health: i32,
    /// Dead, and respawns at this tick.
    pub respawn_at: Option<u32>,
    pub role: Role,
}

/// What kind of entity, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Role {
    Npc {
        /// The direction it holds.
        intent: MoveDir,
        /// Its own generator, and ticks before it picks another direction.
        rng: u64,
        wander_ticks: u32,
        target: Option<u32>,
        next_look: u32,
        bolt_ready: u32,
    },
    Player {
        client_id: u64,
        name: String,
        /// Connection lost, in its grace period.
        lingering: bool,
        /// The input it repeats when none arrives for a tick.
        last_input: Input,
        rifle_ready: u32,
        rocket_ready: u32,
        kills: u32,
        deaths: u32,
        /// Under spawn protection until this tick (0: not protected).
        protected_until: u32,
    },
    Projectile {
        owner: u32,
        damage: i32,
        radius: f32,
        expires: u32,
    },
}

/// Positions of every hittable entity after one tick's movement, sorted by id.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct HistoryFrame {
    pub tick: u32,
    pub positions: Vec<(u32, Vec2)>,
}

impl Record {
    /// The tick it belongs to (a header: its first tick).
    pub fn tick(&self) -> u32 {
        match self {
            Record::Header(h) => h.first_tick,
            Record::Join { tick, .. }
            | Record::Leave { tick, .. }
            | Record::Detach { tick, .. }
            | Record::Input { tick, .. }
            | Record::Event { tick, .. }
            | Record::Keyframe { tick, .. }
            | Record::Gap { tick, .. } => *tick,
        }
    }
}

/// Whether two values encode to the same bytes: equality to the bit, where `==` on floats
/// would call `-0.0` and `0.0` equal (a re-simulation must reproduce either exactly).
pub fn same_bits<T: Encode + ?Sized>(a: &T, b: &T) -> bool {
    bitcode::encode(a) == bitcode::encode(b)
}

/// Appends one framed record.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let body = bitcode::encode(record);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// How much a reader believes of a file, whatever its bytes declare. The defaults pass every
/// recording a server writes with flags that `arena-server replay verify` accepts (a
/// 5,000-NPC keyframe at 240 Hz with a second of lag-compensation history holds 240 frames of
/// 5,000 positions, 12 bytes each: 14 MiB) and keep what one crafted record can make a reader
/// allocate to
/// `max_decoded_len` plus bitcode's own column buffers (under half as much again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file, in bytes. A server starts a new file at the first keyframe after
    /// `--replay-rotate-mb` (256 by default).
    pub max_file_len: u64,
    /// The largest record body.
    pub max_record_len: usize,
    /// The most heap one record may decode to: list elements at their in-memory size plus
    /// string bytes, as declared by its body (counted before decoding: see [`Shape`]).
    pub max_decoded_len: usize,
    /// The longest string in a record (names are at most
    /// [`MAX_NAME_LEN`](crate::protocol::MAX_NAME_LEN) bytes; flags are short).
    pub max_string_len: usize,
    /// The most ticks from one record to the next. A server writes a keyframe at least every
    /// `--replay-keyframe-ticks`, which a replayed header may set to at most this.
    pub max_tick_step: u32,
    /// The most ticks a file may cover from its first tick. A file covers at most
    /// `--replay-rotate-secs` (an hour by default) and one keyframe interval: 2^25 ticks is
    /// more than a day at the highest tick rate (240 Hz) and over 12 days at 30 Hz.
    pub max_file_ticks: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_len: 4 << 30,
            max_record_len: MAX_RECORD_LEN,
            max_decoded_len: 64 << 20,
            max_string_len: 4096,
            max_tick_step: 1 << 16,
            max_file_ticks: 1 << 25,
        }
    }
}

/// How reading a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every byte was part of a whole record.
    Clean,
    /// The file stops inside the record starting at `offset` (cut off while being written).
    Truncated { offset: u64 },
    /// The record at `offset` is damaged; nothing after it is trusted.
    Corrupt { offset: u64, why: Corruption },
    /// Not a replay file (wrong magic).
    NotReplay,
    /// The record at `offset` asks for more than the reader's [`Limits`] allow; nothing after
    /// it is read.
    LimitExceeded { offset: u64, limit: Limit },
    /// Reading the source failed at `offset`.
    Unreadable {
        offset: u64,
        kind: std::io::ErrorKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    ChecksumMismatch,
    /// A length prefix over [`Limits::max_record_len`].
    TooLarge,
    Undecodable,
    /// The first record is not a header, or a header comes after the first record.
    MisplacedHeader,
    /// A record's tick is before the previous record's.
    TickBackwards {
        tick: u32,
        previous: u32,
    },
    /// A record's tick is more than [`Limits::max_tick_step`] past the previous record's, or
    /// more than [`Limits::max_file_ticks`] past the file's first tick.
    TickJump {
        tick: u32,
        previous: u32,
    },
}

/// Which of the [`Limits`] a record went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    FileLen,
    DecodedLen,
    StringLen,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            End::Clean => write!(f, "read to its end"),
            End::Truncated { offset } => {
                write!(f, "cut off inside the record at byte {offset}")
            }
            End::NotReplay => write!(f, "not a replay file"),
            End::Unreadable { offset, kind } => write!(f, "unreadable at byte {offset}: {kind}"),
            End::Corrupt { offset, why } => {
                write!(f, "the record at byte {offset} is damaged: ")?;
                match why {
                    Corruption::ChecksumMismatch => write!(f, "its checksum does not match"),
                    Corruption::TooLarge => write!(f, "its length is past the record limit"),
                    Corruption::Undecodable => write!(f, "it does not decode"),
                    Corruption::MisplacedHeader => {
                        write!(f, "a file holds one header, as its first record")
                    }
                    Corruption::TickBackwards { tick, previous } => {
                        write!(f, "its tick {tick} comes after tick {previous}")
                    }
                    Corruption::TickJump { tick, previous } => write!(
                        f,
                        "its tick {tick} jumps too far past tick {previous} (or past the file's first tick)"
                    ),
                }
            }
            End::LimitExceeded { offset, limit } => {
                let what = match limit {
                    Limit::FileLen => "the file goes on past the file length limit",
                    Limit::DecodedLen => "it would decode to more than the memory limit",
                    Limit::StringLen => "it holds a string longer than the limit",
                };
                write!(f, "the record at byte {offset} is refused: {what}")
            }
        }
    }
}

/// What a record body declares it decodes to, counted without decoding it.
pub use shape::Shape;

pub(crate) mod shape;

/// Reads records one at a time from a file (or any byte source), checking each frame, its
/// checksum, what it would decode to ([`Limits`]) and its tick before handing it out: memory
/// stays bounded by the limits, whatever the file holds. A header comes first, ticks never go
/// back, and they never jump further than the limits say.
pub struct Reader<R: std::io::Read> {
    src: R,
    limits: Limits,
    /// Where the next frame starts.
    at: u64,
    /// Whether the magic is still to be read.
    magic: bool,
    /// Whether the next record is the first this reader reads.
    first: bool,
    /// Whether it reads from the file's first byte (so the first record is its header).
    whole: bool,
    /// The first tick of the file (from its header) or of the stretch read (resumed).
    base: Option<u32>,
    /// The last record's tick.
    last: Option<u32>,
    body: Vec<u8>,
    ended: Option<End>,
}

impl<R: std::io::Read> Reader<R> {
    /// A reader of a whole file from its first byte; the magic is checked by the first
    /// [`next_record`](Self::next_record) call. Wrap a file in a `BufReader`: frames are read
    /// in small pieces.
    pub fn new(src: R, limits: Limits) -> Self {
        Self {
            src,
            limits,
            at: 0,
            magic: true,
            first: true,
            whole: true,
            base: None,
            last: None,
            body: Vec::new(),
            ended: None,
        }
    }

    /// A reader that continues at a record boundary `offset` bytes into the file (the caller
    /// has seeked `src` there), without a magic check: to open a run at a keyframe from an
    /// index. Ticks are checked from the first record read on; a header may come first.
    pub fn resume(src: R, offset: u64, limits: Limits) -> Self {
        Self {
            at: offset,
            magic: false,
            whole: false,
            ..Self::new(src, limits)
        }
    }

    /// Where the next frame starts (after a clean end: the file's length).
    pub fn offset(&self) -> u64 {
        self.at
    }

    /// The next whole record and the byte offset its frame starts at; `Ok(None)` at a clean
    /// end; otherwise how the reading ended (every later call says the same).
    pub fn next_record(&mut self) -> Result<Option<(u64, Record)>, End> {
        if let Some(end) = self.ended {
            return if end == End::Clean {
                Ok(None)
            } else {
                Err(end)
            };
        }
        match self.advance() {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) => {
                self.ended = Some(End::Clean);
                Ok(None)
            }
            Err(end) => {
                self.ended = Some(end);
                Err(end)
            }
        }
    }

    /// Fills `buf` as far as the source goes; says how many bytes it got.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(End::Unreadable {
                        offset: self.at + got as u64,
                        kind: e.kind(),
                    });
                }
            }
        }
        Ok(got)
    }

    fn advance(&mut self) -> Result<Option<(u64, Record)>, End> {
        if std::mem::take(&mut self.magic) {
            let mut magic = [0u8; MAGIC.len()];
            let got = self.fill(&mut magic)?;
            if magic[..got] != MAGIC[..got] {
                return Err(End::NotReplay);
            }
            if got < MAGIC.len() {
                return Err(End::Truncated { offset: 0 });
            }
            self.at = MAGIC.len() as u64;
        }
        let offset = self.at;
        let mut frame = [0u8; FRAME_LEN];
        match self.fill(&mut frame)? {
            0 => return Ok(None),
            FRAME_LEN => {}
            _ => return Err(End::Truncated { offset }),
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let sum = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let corrupt = |why| End::Corrupt { offset, why };
        let refused = |limit| End::LimitExceeded { offset, limit };
        if len > self.limits.max_record_len {
            return Err(corrupt(Corruption::TooLarge));
        }
        let next = offset + (FRAME_LEN + len) as u64;
        if next > self.limits.max_file_len {
            return Err(refused(Limit::FileLen));
        }
        // Read through `take`, so a file cut short costs what it holds, not what it declares.
        self.body.clear();
        let got = (&mut self.src)
            .take(len as u64)
            .read_to_end(&mut self.body)
            .map_err(|e| End::Unreadable {
                offset,
                kind: e.kind(),
            })?;
        if got < len {
            return Err(End::Truncated { offset });
        }
        if crc32(&self.body) != sum {
            return Err(corrupt(Corruption::ChecksumMismatch));
        }
        let shape = match shape::of(&self.body, self.limits.max_decoded_len) {
            Ok(shape) => shape,
            Err(shape::Malformed::OverBudget) => return Err(refused(Limit::DecodedLen)),
            Err(shape::Malformed::Layout) => return Err(corrupt(Corruption::Undecodable)),
        };
        if shape.longest_string > self.limits.max_string_len {
            return Err(refused(Limit::StringLen));
        }
        let record =
            bitcode::decode::<Record>(&self.body).map_err(|_| corrupt(Corruption::Undecodable))?;
        self.check_tick(&record).map_err(corrupt)?;
        self.at = next;
        // A large record's buffer is not kept for the small ones after it.
        if self.body.capacity() > 1 << 20 {
            self.body = Vec::new();
        }
        Ok(Some((offset, record)))
    }

    fn check_tick(&mut self, record: &Record) -> Result<(), Corruption> {
        let first = std::mem::take(&mut self.first);
        // A file starts with its header, and holds no other; a resumed reader may start at it.
        let misplaced = match record {
            Record::Header(_) => !first,
            _ => first && self.whole,
        };
        if misplaced {
            return Err(Corruption::MisplacedHeader);
        }
        let tick = record.tick();
        let base = *self.base.get_or_insert(tick);
        if let Some(previous) = self.last {
            if tick < previous {
                return Err(Corruption::TickBackwards { tick, previous });
            }
            if tick - previous > self.limits.max_tick_step
                || tick - base > self.limits.max_file_ticks
            {
                return Err(Corruption::TickJump { tick, previous });
            }
        }
        self.last = Some(tick);
        Ok(())
    }
}

/// Records read from a file's bytes, and how the reading ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub records: Vec<Record>,
    pub end: End,
}

/// Reads every whole, intact record of `bytes` (a whole file, or what exists of it so far)
/// with the default [`Limits`].
pub fn read(bytes: &[u8]) -> Read {
    let mut reader = Reader::new(bytes, Limits::default());
    let mut records = Vec::new();
    let end = loop {
        match reader.next_record() {
            Ok(Some((_, r))) => records.push(r),
            Ok(None) => break End::Clean,
            Err(end) => break end,
        }
    };
    Read { records, end }
}

/// What `arena-server replay info` prints: the shape of a recording. Built a record at a time
/// ([`Summary::add`]) in bounded memory: past [`Summary::MAX_LISTED`] distinct players or gaps
/// it counts on without listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub header: Option<Header>,
    pub first_tick: u32,
    pub last_tick: u32,
    /// Distinct client ids that joined (at most [`Summary::MAX_LISTED`] are told apart).
    pub players: usize,
    pub joins: u64,
    pub leaves: u64,
    pub detaches: u64,
    pub inputs: u64,
    pub events: u64,
    pub keyframes: u64,
    /// `(tick, records dropped)` of the first [`Summary::MAX_LISTED`] gaps.
    pub gaps: Vec<(u32, u64)>,
    /// Every gap, and the records they lost.
    pub gap_count: u64,
    pub dropped: u64,
    records: u64,
    player_ids: std::collections::BTreeSet<u64>,
}

impl Summary {
    /// Players told apart and gaps listed, at most.
    pub const MAX_LISTED: usize = 1 << 16;

    pub fn of(records: &[Record]) -> Self {
        let mut s = Summary::default();
        records.iter().for_each(|r| s.add(r));
        s
    }

    /// Counts one more record.
    pub fn add(&mut self, r: &Record) {
        let tick = r.tick();
        if self.records == 0 {
            self.first_tick = tick;
        }
        self.records += 1;
        self.last_tick = self.last_tick.max(tick);
        match r {
            Record::Header(h) => {
                self.header.get_or_insert_with(|| h.clone());
            }
            Record::Join { client_id, .. } => {
                self.joins += 1;
                if self.player_ids.len() < Self::MAX_LISTED {
                    self.player_ids.insert(*client_id);
                }
                self.players = self.player_ids.len();
            }
            Record::Leave { .. } => self.leaves += 1,
            Record::Detach { .. } => self.detaches += 1,
            Record::Input { .. } => self.inputs += 1,
            Record::Event { .. } => self.events += 1,
            Record::Keyframe { .. } => self.keyframes += 1,
            Record::Gap { tick, dropped } => {
                self.gap_count += 1;
                self.dropped = self.dropped.saturating_add(*dropped);
                if self.gaps.len() < Self::MAX_LISTED {
                    self.gaps.push((*tick, *dropped));
                }
            }
        }
    }

    /// Ticks covered, first to last.
    pub fn ticks(&self) -> u32 {
        self.last_tick.saturating_sub(self.first_tick) + 1
    }

    /// Duration in seconds at the header's tick rate (0 without a header).
    pub fn duration_s(&self) -> f64 {
        match &self.header {
            Some(h) if h.tick_rate > 0 => f64::from(self.ticks()) / f64::from(h.tick_rate),
            _ => 0.0,
        }
    }
}

/// IEEE 802.3 CRC-32 (the one zip and PNG use), bytewise with a table built at compile time.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Buttons, EntityKind, PROTOCOL_VERSION};
    use crate::quant::{Aim, MoveDir};

    fn sample() -> Vec<Record> {
        vec![
            Record::Header(Header {
                format_version: FORMAT_VERSION,
                protocol_version: PROTOCOL_VERSION,
                seed: 7,
                map: Map::open(100.0, 100.0),
                tick_rate: 30,
                start_unix_ms: 1,
                first_tick: 1,
                sim_args: vec!["--npcs".into(), "3".into()],
            }),
            Record::Join {
                tick: 2,
                client_id: 9,
                entity: 3,
                name: "ana".into(),
                resumed: false,
            },
            Record::Input {
                tick: 3,
                client_id: 9,
                input: Input {
                    seq: 1,
                    tick: 3,
                    movement: MoveDir { x: 5, y: -5 },
                    aim: Aim(9),
                    buttons: Buttons(Buttons::FIRE),
                    view_tick: 1,
                    view_frac: 2,
                },
            },
            Record::Event {
                tick: 3,
                client_id: 9,
                event: GameEvent::Score {
                    kills: 1,
                    deaths: 0,
                },
            },
            Record::Keyframe {
                tick: 4,
                entities: vec![EntityState {
                    id: 3,
                    kind: EntityKind::Player,
                    pos: Vec2::new(1.0, 2.0),
                    vel: Vec2::ZERO,
                }],
                state: SimState {
                    last_id: 4,
                    rng: 99,
                    entities: vec![
                        EntityRecord {
                            id: 3,
                            pos: Vec2::new(1.0, 2.0),
                            vel: Vec2::ZERO,
                            health: 100,
                            respawn_at: None,
                            role: Role::Player {
                                client_id: 9,
                                name: "ana".into(),
                                lingering: false,
                                last_input: Input::default(),
                                rifle_ready: 3,
                                rocket_ready: 0,
                                kills: 1,
                                deaths: 0,
                                protected_until: 40,
                            },
                        },
                        EntityRecord {
                            id: 4,
                            pos: Vec2::new(-0.0, 2.5),
                            vel: Vec2::new(300.0, 0.0),
                            health: 0,
                            respawn_at: None,
                            role: Role::Projectile {
                                owner: 3,
                                damage: 40,
                                radius: 6.0,
                                expires: 60,
                            },
                        },
                    ],
                    history: vec![HistoryFrame {
                        tick: 4,
                        positions: vec![(3, Vec2::new(1.0, 2.0))],
                    }],
                },
            },
            Record::Gap {
                tick: 5,
                dropped: 12,
            },
            Record::Leave {
                tick: 6,
                client_id: 9,
            },
        ]
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            encode_record(r, &mut out);
        }
        out
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_and_summarise() {
        let records = sample();
        let read = read(&file(&records));
        assert_eq!(read.end, End::Clean);
        assert_eq!(read.records, records);
        let s = Summary::of(&read.records);
        assert_eq!((s.first_tick, s.last_tick, s.ticks()), (1, 6, 6));
        assert_eq!(
            (
                s.players,
                s.joins,
                s.leaves,
                s.inputs,
                s.events,
                s.keyframes
            ),
            (1, 1, 1, 1, 1, 1)
        );
        assert_eq!(s.gaps, [(5, 12)]);
        assert!((s.duration_s() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_file_cut_anywhere_reads_back_up_to_its_last_whole_record() {
        let records = sample();
        let bytes = file(&records);
        let mut whole = MAGIC.len();
        let mut boundaries = vec![whole];
        for r in &records {
            let mut one = Vec::new();
            encode_record(r, &mut one);
            whole += one.len();
            boundaries.push(whole);
        }
        for cut in 0..bytes.len() {
            let read = read(&bytes[..cut]);
            let complete = boundaries
                .iter()
                .filter(|&&b| b <= cut)
                .count()
                .saturating_sub(1);
            assert_eq!(read.records, records[..complete], "cut at {cut}");
            if boundaries.contains(&cut) {
                assert_eq!(read.end, End::Clean, "cut at {cut}");
            } else {
                assert!(
                    matches!(read.end, End::Truncated { .. }),
                    "cut at {cut}: {:?}",
                    read.end
                );
            }
        }
    }

    #[test]
    fn a_damaged_record_is_reported_and_nothing_after_it_is_trusted() {
        let records = sample();
        let mut bytes = file(&records);
        let mut first = Vec::new();
        encode_record(&records[0], &mut first);
        // Flip a bit in the second record's body.
        let second_body = MAGIC.len() + first.len() + FRAME_LEN;
        bytes[second_body] ^= 0x10;
        let read = read(&bytes);
        assert_eq!(read.records, records[..1]);
        assert_eq!(
            read.end,
            End::Corrupt {
                offset: (MAGIC.len() + first.len()) as u64,
                why: Corruption::ChecksumMismatch
            }
        );
        // An absurd length is not believed either.
        let mut huge = file(&records[..1]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 8]);
        assert!(matches!(
            read_again(&huge),
            End::Corrupt {
                why: Corruption::TooLarge,
                ..
            }
        ));
        assert_eq!(super::read(b"not a replay").end, End::NotReplay);
    }

    fn read_again(bytes: &[u8]) -> End {
        super::read(bytes).end
    }

    /// A keyframe of `npcs` NPCs and `players` players with `frames` ticks of history of all
    /// of them, with values spread so that every packing bitcode picks shows up.
    pub(super) fn keyframe(tick: u32, npcs: u32, players: u32, frames: u32) -> Record {
        let n = npcs + players;
        let entities = (1..=n)
            .map(|id| EntityState {
                id: id * 7,
                kind: if id <= players {
                    EntityKind::Player
                } else {
                    EntityKind::Npc
                },
                pos: Vec2::new(id as f32, -(id as f32)),
                vel: Vec2::ZERO,
            })
            .collect();
        let records = (1..=n)
            .map(|id| EntityRecord {
                id: id * 7,
                pos: Vec2::new(id as f32, 3.0),
                vel: Vec2::new(0.5, -0.5),
                health: 100 - (id % 200) as i32,
                respawn_at: (id % 3 == 0).then_some(tick + id),
                role: if id <= players {
                    Role::Player {
                        client_id: u64::from(id) << 40,
                        name: "p".repeat((id % 40) as usize),
                        lingering: id % 2 == 0,
                        last_input: Input {
                            seq: id * 1000,
                            tick,
                            movement: MoveDir { x: -3, y: 127 },
                            aim: Aim((id as u16).wrapping_mul(300)),
                            buttons: Buttons(Buttons::FIRE),
                            view_tick: tick - 3,
                            view_frac: 200,
                        },
                        rifle_ready: tick + 5,
                        rocket_ready: 0,
                        kills: id,
                        deaths: 1,
                        protected_until: 0,
                    }
                } else {
                    Role::Npc {
                        intent: MoveDir { x: 1, y: -1 },
                        rng: u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        wander_ticks: id % 90,
                        target: (id % 5 == 0).then_some(1),
                        next_look: tick + id % 30,
                        bolt_ready: 0,
                    }
                },
            })
            .collect();
        let history = (0..frames)
            .map(|f| HistoryFrame {
                tick: tick - f,
                positions: (1..=n)
                    .map(|id| (id * 7, Vec2::new(f as f32, 1.0)))
                    .collect(),
            })
            .collect();
        Record::Keyframe {
            tick,
            entities,
            state: SimState {
                last_id: n * 7,
                rng: 5,
                entities: records,
                history,
            },
        }
    }

    fn header(first_tick: u32, sim_args: Vec<String>) -> Record {
        Record::Header(Header {
            format_version: FORMAT_VERSION,
            protocol_version: PROTOCOL_VERSION,
            seed: u64::MAX - 3,
            map: Map::generate(crate::map::MapParams {
                seed: 3,
                width: 2000.0,
                height: 2000.0,
                obstacles: 40,
            }),
            tick_rate: 30,
            start_unix_ms: 1_700_000_000_000,
            first_tick,
            sim_args,
        })
    }

    fn walk(r: &Record) -> Result<Shape, shape::Malformed> {
        shape::of(&bitcode::encode(r), usize::MAX)
    }

    #[test]
    fn the_walk_counts_what_decoding_allocates() {
        let mut records = sample();
        records.push(keyframe(900, 300, 40, 3));
        records.push(keyframe(70_000, 2, 300, 300));
        records.push(keyframe(1, 0, 0, 0));
        records.push(header(7, (0..300).map(|i| "x".repeat(i % 7)).collect()));
        records.push(header(7, vec!["y".repeat(70_000)]));
        records.push(Record::Join {
            tick: 4,
            client_id: u64::MAX,
            entity: 70_000,
            name: "é".repeat(16),
            resumed: true,
        });
        for event in [
            GameEvent::Hit {
                attacker: 1,
                target: 2,
                damage: 40,
                health: -5,
            },
            GameEvent::Killed {
                killer: 1,
                victim: 70_000,
            },
            GameEvent::Respawned {
                entity: 3,
                pos: Vec2::ONE,
                health: 100,
            },
        ] {
            records.push(Record::Event {
                tick: 9,
                client_id: 1 << 50,
                event,
            });
        }
        for r in &records {
            let shape = walk(r).unwrap_or_else(|_| panic!("{r:?} walks"));
            assert_eq!(shape, shape::of_record(r), "{r:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_walk_agrees_with_decoding_any_keyframe(
            tick in 300u32..,
            npcs in 0u32..400,
            players in 0u32..300,
            frames in 0u32..40,
        ) {
            let r = keyframe(tick, npcs, players, frames);
            proptest::prop_assert_eq!(walk(&r), Ok(shape::of_record(&r)));
        }
    }

    #[test]
    fn a_five_thousand_npc_keyframe_fits_the_default_limits() {
        // A second of lag-compensation history at 30 Hz, as a server keeps by default.
        let r = keyframe(30_000, 5000, 50, 30);
        let bytes = file(&[header(30_000, Vec::new()), r.clone()]);
        let body = bytes.len() - MAGIC.len();
        let shape = walk(&r).expect("walks");
        let limits = Limits::default();
        assert!(body < limits.max_record_len / 8, "{body} bytes");
        assert!(
            shape.decoded_len < limits.max_decoded_len / 8,
            "{} bytes decoded",
            shape.decoded_len
        );
        let read = read(&bytes);
        assert_eq!((read.end, read.records.len()), (End::Clean, 2));
    }

    /// The body of a header whose flags are `n` empty strings, written out column by column
    /// (the length of the list as a u64, then `n` zero lengths packed eight to a byte): what
    /// an attacker writes to make bitcode allocate `n` strings from `n / 8` bytes.
    pub(crate) fn header_with_empty_flags(n: u64) -> Vec<u8> {
        let mut b = vec![0u8]; // Record::Header
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b.push(0); // seed: one u64, unpacked
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&100f32.to_le_bytes());
        b.extend_from_slice(&100f32.to_le_bytes());
        b.push(0); // no obstacles
        b.extend_from_slice(&30u16.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[255, 0]); // a large length, an unpacked u64
        b.extend_from_slice(&n.to_le_bytes());
        b.push(10); // n lengths, one bit each
        b.resize(b.len() + n.div_ceil(8) as usize, 0);
        b
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn declared_lengths_past_the_limits_are_refused_before_decoding() {
        // The crafted layout is real: bitcode decodes it to that many strings.
        let Ok(Record::Header(h)) = bitcode::decode::<Record>(&header_with_empty_flags(1000))
        else {
            panic!("the crafted header decodes");
        };
        assert_eq!(h.sim_args, vec![String::new(); 1000]);

        let limits = Limits {
            max_decoded_len: 1 << 20,
            ..Limits::default()
        };
        let first = |bytes: &[u8]| {
            Reader::new(bytes, limits)
                .next_record()
                .map(|r| r.map(|r| r.1))
        };
        assert!(matches!(
            first(&framed(&header_with_empty_flags(1000))),
            Ok(Some(_))
        ));
        let refused = Err(End::LimitExceeded {
            offset: 8,
            limit: Limit::DecodedLen,
        });
        // 100,000 strings: 2.4 MB decoded from 12.5 kB.
        assert_eq!(first(&framed(&header_with_empty_flags(100_000))), refused);
        // The same for a keyframe's history: empty frames cost two bits each.
        let mut frames = file(&[header(1, Vec::new())]);
        let Record::Keyframe { mut state, .. } = keyframe(1, 0, 0, 0) else {
            unreachable!()
        };
        state.history = vec![
            HistoryFrame {
                tick: 1,
                positions: Vec::new(),
            };
            40_000
        ];
        encode_record(
            &Record::Keyframe {
                tick: 1,
                entities: Vec::new(),
                state,
            },
            &mut frames,
        );
        let mut reader = Reader::new(&frames[..], limits);
        assert!(matches!(
            reader.next_record(),
            Ok(Some((8, Record::Header(_))))
        ));
        assert!(matches!(
            reader.next_record(),
            Err(End::LimitExceeded {
                limit: Limit::DecodedLen,
                ..
            })
        ));
        // And a string longer than the limit.
        let long = file(&[header(1, vec!["z".repeat(limits.max_string_len + 1)])]);
        assert_eq!(
            first(&long),
            Err(End::LimitExceeded {
                offset: 8,
                limit: Limit::StringLen
            })
        );
    }

    fn leave(tick: u32) -> Record {
        Record::Leave { tick, client_id: 1 }
    }

    fn end_of(records: &[Record], limits: Limits) -> (usize, End) {
        let bytes = file(records);
        let mut reader = Reader::new(&bytes[..], limits);
        let mut n = 0;
        loop {
            match reader.next_record() {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, End::Clean),
                Err(end) => return (n, end),
            }
        }
    }

    #[test]
    fn ticks_never_go_back_and_never_jump_past_the_limits() {
        let limits = Limits {
            max_tick_step: 10,
            max_file_ticks: 25,
            ..Limits::default()
        };
        let h = || header(10, Vec::new());
        let ok = [h(), leave(10), leave(10), leave(20), leave(30), leave(35)];
        assert_eq!(end_of(&ok, limits), (6, End::Clean));
        let why = |records: &[Record]| match end_of(records, limits).1 {
            End::Corrupt { why, .. } => why,
            end => panic!("{end:?}"),
        };
        assert_eq!(
            why(&[h(), leave(12), leave(11)]),
            Corruption::TickBackwards {
                tick: 11,
                previous: 12
            }
        );
        assert_eq!(
            why(&[h(), leave(9)]),
            Corruption::TickBackwards {
                tick: 9,
                previous: 10
            }
        );
        assert_eq!(
            why(&[h(), leave(21)]),
            Corruption::TickJump {
                tick: 21,
                previous: 10
            }
        );
        assert_eq!(
            why(&[h(), leave(20), leave(30), leave(36)]),
            Corruption::TickJump {
                tick: 36,
                previous: 30
            }
        );
        // With the default limits too: a tick cannot run off to the end of time.
        assert!(matches!(
            end_of(&[h(), leave(11), leave(u32::MAX)], Limits::default()),
            (
                2,
                End::Corrupt {
                    why: Corruption::TickJump { .. },
                    ..
                }
            )
        ));
    }

    #[test]
    fn a_file_holds_one_header_and_starts_with_it() {
        let limits = Limits::default();
        let misplaced = |records: &[Record]| {
            matches!(
                end_of(records, limits).1,
                End::Corrupt {
                    why: Corruption::MisplacedHeader,
                    ..
                }
            )
        };
        assert!(misplaced(&[leave(1)]));
        assert!(misplaced(&[
            header(1, Vec::new()),
            leave(1),
            header(1, Vec::new())
        ]));
        assert!(!misplaced(&[header(1, Vec::new()), leave(1)]));
    }

    #[test]
    fn a_reader_resumes_at_a_record_boundary_and_reports_offsets() {
        let records = sample();
        let bytes = file(&records);
        let mut reader = Reader::new(&bytes[..], Limits::default());
        let mut offsets = Vec::new();
        while let Some((offset, _)) = reader.next_record().expect("clean") {
            offsets.push(offset);
        }
        assert_eq!(reader.offset(), bytes.len() as u64);
        // Resumed at the keyframe: it and what follows, no header needed.
        let at = offsets[4];
        let mut resumed = Reader::resume(&bytes[at as usize..], at, Limits::default());
        let mut got = Vec::new();
        while let Some((offset, r)) = resumed.next_record().expect("clean") {
            got.push((offset, r));
        }
        let want: Vec<(u64, Record)> = offsets[4..]
            .iter()
            .copied()
            .zip(records[4..].iter().cloned())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_file_longer_than_the_limit_is_refused_at_the_record_that_crosses_it() {
        let records = sample();
        let bytes = file(&records);
        let limits = Limits {
            max_file_len: bytes.len() as u64 - 1,
            ..Limits::default()
        };
        let (n, end) = end_of(&records, limits);
        assert_eq!(n, records.len() - 1);
        assert!(matches!(
            end,
            End::LimitExceeded {
                limit: Limit::FileLen,
                ..
            }
        ));
        assert_eq!(
            end_of(&records, Limits::default()),
            (records.len(), End::Clean)
        );
    }
}
