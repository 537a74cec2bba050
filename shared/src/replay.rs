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

/// How reading a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every byte was part of a whole record.
    Clean,
    /// The file stops inside the record starting at `offset` (cut off while being written).
    Truncated { offset: usize },
    /// The record at `offset` is damaged; nothing after it is trusted.
    Corrupt { offset: usize, why: Corruption },
    /// Not a replay file (wrong magic).
    NotReplay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    ChecksumMismatch,
    TooLarge,
    Undecodable,
}

/// Records read from a file's bytes, and how the reading ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub records: Vec<Record>,
    pub end: End,
}

/// Reads every whole, intact record of `bytes` (a whole file, or what exists of it so far).
pub fn read(bytes: &[u8]) -> Read {
    let mut records = Vec::new();
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        let end = if MAGIC.starts_with(bytes) {
            End::Truncated { offset: 0 }
        } else {
            End::NotReplay
        };
        return Read { records, end };
    }
    let mut at = MAGIC.len();
    let end = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break End::Clean;
        }
        if rest.len() < FRAME_LEN {
            break End::Truncated { offset: at };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let sum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD_LEN {
            break End::Corrupt {
                offset: at,
                why: Corruption::TooLarge,
            };
        }
        let Some(body) = rest.get(FRAME_LEN..FRAME_LEN + len) else {
            break End::Truncated { offset: at };
        };
        if crc32(body) != sum {
            break End::Corrupt {
                offset: at,
                why: Corruption::ChecksumMismatch,
            };
        }
        match bitcode::decode::<Record>(body) {
            Ok(r) => records.push(r),
            Err(_) => {
                break End::Corrupt {
                    offset: at,
                    why: Corruption::Undecodable,
                };
            }
        }
        at += FRAME_LEN + len;
    };
    Read { records, end }
}

/// What `arena-server replay info` prints: the shape of a recording.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub header: Option<Header>,
    pub first_tick: u32,
    pub last_tick: u32,
    /// Distinct client ids that joined.
    pub players: usize,
    pub joins: u64,
    pub leaves: u64,
    pub detaches: u64,
    pub inputs: u64,
    pub events: u64,
    pub keyframes: u64,
    /// `(tick, records dropped)` of every gap.
    pub gaps: Vec<(u32, u64)>,
}

impl Summary {
    pub fn of(records: &[Record]) -> Self {
        let mut s = Summary::default();
        let mut players = std::collections::BTreeSet::new();
        for (i, r) in records.iter().enumerate() {
            let tick = r.tick();
            if i == 0 {
                s.first_tick = tick;
            }
            s.last_tick = s.last_tick.max(tick);
            match r {
                Record::Header(h) => s.header = Some(h.clone()),
                Record::Join { client_id, .. } => {
                    s.joins += 1;
                    players.insert(*client_id);
                }
                Record::Leave { .. } => s.leaves += 1,
                Record::Detach { .. } => s.detaches += 1,
                Record::Input { .. } => s.inputs += 1,
                Record::Event { .. } => s.events += 1,
                Record::Keyframe { .. } => s.keyframes += 1,
                Record::Gap { tick, dropped } => s.gaps.push((*tick, *dropped)),
            }
        }
        s.players = players.len();
        s
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
                offset: MAGIC.len() + first.len(),
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
}
