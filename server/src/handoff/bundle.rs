//! The state a live handoff carries from the old server to the new one: the simulation at the
//! end of the last tick the old server ran, its seats, the next client id its HTTP side would
//! hand out, and where the replay run goes on.
//!
//! On the wire: [`MAGIC`], the format as a little-endian `u16`, then the bitcode of
//! [`Bundle`]. [`decode`] is total: any bytes give a bundle or a [`BundleError`], and the
//! length is checked against the caller's bound (`--handoff-max-bytes`) before anything is
//! decoded.

use arena_shared::replay::SimState;

use crate::config::Config;
use crate::net::registry::SeatRecord;
use crate::recording::Continuation;

/// First bytes of an encoded bundle.
pub const MAGIC: [u8; 8] = *b"ARNAHAND";
/// Bumped whenever the bundle's meaning or layout changes; a server reads only its own.
pub const FORMAT: u16 = 2;
/// Bytes before the bitcode body.
const PREFIX_LEN: usize = MAGIC.len() + 2;

/// Everything the new server needs to go on from the tick after `tick`.
#[derive(Debug, Clone, PartialEq, bitcode::Encode, bitcode::Decode)]
pub struct Bundle {
    pub format: u16,
    /// The last tick the old server ran; the new one runs `tick + 1` next.
    pub tick: u32,
    /// `game::state::capture` at the end of `tick`.
    pub sim: SimState,
    /// Every seat, live and lingering, by its resume token's hash (`Registry::export`).
    pub seats: Vec<SeatRecord>,
    /// The client id the old server's `/api/connect` would have handed out next, so the new
    /// one never gives a newcomer a seated player's id.
    pub next_client_id: u64,
    /// The replay run the new server continues; `None` when the old one recorded nothing.
    pub run: Option<RunLink>,
}

/// The replay run's identity and where it goes on. A run's files are
/// `arena-<run_start_unix_ms>-<n>.replay` (`recording::run_id`), and a re-simulation reads
/// files as one run when their headers agree on the seed, tick rate and simulation flags and
/// their first ticks follow on: a continuation file needs exactly these.
#[derive(Debug, Clone, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub struct RunLink {
    /// The run's id, as its file names carry it.
    pub run_start_unix_ms: u64,
    /// The number of the new server's first file: the old server gave it away
    /// (`RunFiles::hand_over`) and never opens it.
    pub first_file: u32,
    /// Records the old server dropped just before the freeze: the new server's first record
    /// is a `Gap` saying so.
    pub lost: u64,
    pub seed: u64,
    pub tick_rate: u16,
    /// The header's `sim_args`: the new server refuses a run its own flags would not continue.
    pub sim_args: Vec<String>,
}

impl RunLink {
    /// The run handed over as `continues`, recorded with `config`'s flags.
    pub fn of(config: &Config, continues: Continuation) -> Self {
        Self {
            run_start_unix_ms: continues.run_start_unix_ms,
            first_file: continues.first_file,
            lost: continues.lost,
            seed: config.seed,
            tick_rate: config.tick_rate,
            sim_args: crate::recording::sim_args(config),
        }
    }

    /// Where the new server's recording goes on.
    pub fn continuation(&self) -> Continuation {
        Continuation {
            run_start_unix_ms: self.run_start_unix_ms,
            first_file: self.first_file,
            lost: self.lost,
        }
    }

    /// Whether a server started with `config` records the same run (the check a
    /// re-simulation makes across files: seed, tick rate and simulation flags).
    pub fn continues_with(&self, config: &Config) -> bool {
        (self.seed, self.tick_rate, &self.sim_args)
            == (
                config.seed,
                config.tick_rate,
                &crate::recording::sim_args(config),
            )
    }
}

/// Why bytes are not a bundle this server can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the state is {len} bytes, more than the {max} allowed (--handoff-max-bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("the state ends after {len} bytes, inside its header")]
    Truncated { len: usize },
    #[error("not a handoff state (wrong magic)")]
    NotABundle,
    #[error("handoff state format {found}, this build reads {FORMAT}")]
    Format { found: u16 },
    #[error("the handoff state does not decode: {0}")]
    Malformed(String),
}

impl Bundle {
    /// The magic, the format and the body.
    pub fn encode(&self) -> Vec<u8> {
        let body = bitcode::encode(self);
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.format.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// The bundle in `bytes`, refused when longer than `max_bytes`, cut short, of another format,
/// or not a bundle at all.
pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Bundle, BundleError> {
    if bytes.len() > max_bytes {
        return Err(BundleError::TooLarge {
            len: bytes.len(),
            max: max_bytes,
        });
    }
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(BundleError::NotABundle);
    }
    if bytes.len() < PREFIX_LEN {
        return Err(BundleError::Truncated { len: bytes.len() });
    }
    let found = u16::from_le_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
    if found != FORMAT {
        return Err(BundleError::Format { found });
    }
    let bundle: Bundle =
        bitcode::decode(&bytes[PREFIX_LEN..]).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if bundle.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "the body says format {}, the header {FORMAT}",
            bundle.format
        )));
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use arena_shared::protocol::{Input, ResumeToken};
    use arena_shared::replay::{EntityRecord, HistoryFrame, Role};
    use glam::Vec2;
    use proptest::prelude::*;

    use super::*;
    use crate::net::registry::{Held, TokenHash};

    fn sample() -> Bundle {
        let player = EntityRecord {
            id: 3,
            pos: Vec2::new(1.5, -2.0),
            vel: Vec2::new(0.25, 0.0),
            health: 80,
            respawn_at: None,
            role: Role::Player {
                client_id: 42,
                name: "alice".into(),
                lingering: false,
                last_input: Input::default(),
                rifle_ready: 7,
                rocket_ready: 9,
                kills: 2,
                deaths: 1,
                protected_until: 0,
            },
        };
        Bundle {
            format: FORMAT,
            tick: 1_234,
            sim: SimState {
                last_id: 3,
                rng: 99,
                entities: vec![player],
                history: vec![HistoryFrame {
                    tick: 1_234,
                    positions: vec![(3, Vec2::new(1.5, -2.0))],
                }],
            },
            seats: vec![SeatRecord {
                client_id: 42,
                name: "alice".into(),
                token_hash: TokenHash::of(&ResumeToken([5; 16])),
                address: [0; 16],
                held: Held::Lingering { remaining_ms: 300 },
            }],
            next_client_id: 43,
            run: Some(RunLink {
                run_start_unix_ms: 1_700_000_000_000,
                first_file: 3,
                lost: 1,
                seed: 7,
                tick_rate: 30,
                sim_args: vec!["--npcs".into(), "10".into()],
            }),
        }
    }

    #[test]
    fn a_bundle_comes_back_as_it_went() {
        let bytes = sample().encode();
        assert_eq!(bytes[..8], MAGIC);
        assert_eq!(decode(&bytes, bytes.len()), Ok(sample()));
    }

    #[test]
    fn too_long_cut_short_foreign_or_garbled_bytes_are_refused_with_their_reason() {
        let bytes = sample().encode();
        assert_eq!(
            decode(&bytes, bytes.len() - 1),
            Err(BundleError::TooLarge {
                len: bytes.len(),
                max: bytes.len() - 1
            })
        );
        assert_eq!(decode(&[], 100), Err(BundleError::Truncated { len: 0 }));
        assert_eq!(
            decode(&bytes[..9], 100),
            Err(BundleError::Truncated { len: 9 })
        );
        assert_eq!(decode(b"GET / HTTP/1.1", 100), Err(BundleError::NotABundle));
        let mut other = bytes.clone();
        other[8] = 1;
        assert_eq!(
            decode(&other, other.len()),
            Err(BundleError::Format { found: 1 })
        );
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], bytes.len()),
            Err(BundleError::Malformed(_))
        ));
        let mut body_says_other = sample();
        body_says_other.format = 9;
        let b = body_says_other.encode();
        let mut relabelled = b.clone();
        relabelled[8..10].copy_from_slice(&FORMAT.to_le_bytes());
        assert!(matches!(
            decode(&relabelled, b.len()),
            Err(BundleError::Malformed(_))
        ));
    }

    #[test]
    fn a_run_link_names_the_run_and_continues_only_under_the_same_simulation_flags() {
        use clap::Parser;
        let config = Config::try_parse_from(["arena-server", "--npcs", "10"]).unwrap();
        let continues = Continuation {
            run_start_unix_ms: 5,
            first_file: 4,
            lost: 0,
        };
        let link = RunLink::of(&config, continues);
        assert_eq!(link.continuation(), continues);
        assert_eq!(link.sim_args, crate::recording::sim_args(&config));
        assert!(link.continues_with(&config));
        let other = Config::try_parse_from(["arena-server", "--npcs", "11"]).unwrap();
        assert!(!link.continues_with(&other));
        let reseeded = Config::try_parse_from(["arena-server", "--npcs", "10", "--seed", "2"]);
        assert!(!link.continues_with(&reseeded.unwrap()));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_give_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let decoded = decode(&bytes, 1 << 20);
            prop_assert!(decoded.is_err() || bytes.starts_with(&MAGIC));
        }

        #[test]
        fn any_bytes_after_a_valid_prefix_decode_or_give_an_error(
            body in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&FORMAT.to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode(&bytes, 1 << 20);
        }

        #[test]
        fn any_cut_or_flipped_bundle_decodes_or_gives_an_error(cut in 0usize..400, flip in 0usize..400, bit in 0u8..8) {
            let mut bytes = sample().encode();
            let at = flip % bytes.len();
            bytes[at] ^= 1 << bit;
            bytes.truncate(cut.min(bytes.len()));
            let _ = decode(&bytes, 1 << 20);
        }
    }
}
