//! Recording a run to `--replay-dir` (format: `arena_shared::replay`), off the tick thread.
//!
//! The simulation hands records to a [`Recorder`] (a resource), which passes them through a
//! bounded channel (`--replay-queue`) to a writer thread. The tick never waits: a record that
//! finds the channel full is dropped and counted, and the next record that gets through is
//! preceded by a `Gap` saying how many were lost. The writer appends framed records to the
//! current file and starts a new file (header, then the keyframe that triggered it) when the
//! current one is over `--replay-rotate-mb` or `--replay-rotate-secs` old, so every file
//! starts from a full world. Files are flushed at every keyframe and when the run ends.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arena_shared::map::Map;
use arena_shared::protocol::PROTOCOL_VERSION;
use arena_shared::replay::{self, FORMAT_VERSION, Header, MAGIC, Record};
use bevy_ecs::prelude::Resource;
use tracing::{info, warn};

use crate::config::Config;
use crate::stats::Stats;

/// The simulation's end of the recording.
#[derive(Resource)]
pub struct Recorder {
    tx: SyncSender<Record>,
    /// Records dropped since the last one that got through.
    lost: u64,
    /// A keyframe every this many ticks.
    pub keyframe_ticks: u32,
    /// No keyframe written yet: the first tick recorded gets one, so playback can start there.
    first_keyframe: bool,
    stats: Arc<Stats>,
}

impl Recorder {
    /// Whether the end of `tick` gets a keyframe.
    pub fn keyframe_due(&mut self, tick: u32) -> bool {
        std::mem::take(&mut self.first_keyframe) || tick.is_multiple_of(self.keyframe_ticks)
    }

    /// Hands a record to the writer, or counts it lost if the writer is behind.
    pub fn record(&mut self, record: Record) {
        if self.lost > 0 {
            let gap = Record::Gap {
                tick: record.tick(),
                dropped: self.lost,
            };
            match self.tx.try_send(gap) {
                Ok(()) => self.lost = 0,
                Err(_) => {
                    self.lose();
                    return;
                }
            }
        }
        match self.tx.try_send(record) {
            Ok(()) => Stats::add(&self.stats.replay_records, 1),
            Err(TrySendError::Full(_)) => self.lose(),
            // The writer stopped (a disk error, logged there): nothing more is recorded.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn lose(&mut self) {
        self.lost += 1;
        Stats::add(&self.stats.replay_dropped, 1);
    }
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub dir: PathBuf,
    pub rotate_bytes: u64,
    pub rotate_after: Duration,
    pub header: Header,
}

/// Starts the writer thread; the returned [`Recorder`] goes to the simulation, the handle is
/// joined once the simulation has stopped (the recorder dropped), which flushes the file.
pub fn start(
    config: &Config,
    map: &Map,
    stats: Arc<Stats>,
) -> std::io::Result<(Recorder, JoinHandle<()>)> {
    std::fs::create_dir_all(&config.replay_dir)?;
    let settings = WriterSettings {
        dir: config.replay_dir.clone(),
        rotate_bytes: config.replay_rotate_mb.saturating_mul(1024 * 1024),
        rotate_after: Duration::from_secs(config.replay_rotate_secs.max(1)),
        header: Header {
            format_version: FORMAT_VERSION,
            protocol_version: PROTOCOL_VERSION,
            seed: config.seed,
            map: map.clone(),
            tick_rate: config.tick_rate,
            start_unix_ms: 0,
            first_tick: 1,
            sim_args: sim_args(config),
        },
    };
    let (tx, rx) = sync_channel(config.replay_queue.max(1));
    let writer_stats = stats.clone();
    let handle = std::thread::Builder::new()
        .name("arena-replay".into())
        .spawn(move || write_loop(rx, settings, writer_stats))?;
    Ok((
        Recorder {
            tx,
            lost: 0,
            keyframe_ticks: config.replay_keyframe_ticks.max(1),
            first_keyframe: true,
            stats,
        },
        handle,
    ))
}

/// The flags that decide what the simulation does with the same inputs: a re-simulation
/// parses them to build the same world.
pub fn sim_args(config: &Config) -> Vec<String> {
    let d = |d: Duration| format!("{}ms", d.as_millis());
    [
        ("--seed", config.seed.to_string()),
        ("--npcs", config.npcs.to_string()),
        ("--world-size", config.world_size.to_string()),
        ("--obstacles", config.obstacles.to_string()),
        ("--tick-rate", config.tick_rate.to_string()),
        ("--input-window", config.input_window.to_string()),
        ("--inbox-capacity", config.inbox_capacity.to_string()),
        ("--npc-combat", config.npc_combat.to_string()),
        ("--respawn-delay", d(config.respawn_delay)),
        ("--spawn-protection", d(config.spawn_protection)),
        ("--npc-max-engaged", config.npc_max_engaged.to_string()),
        ("--npc-reaction", d(config.npc_reaction)),
        ("--lag-comp-history", d(config.lag_comp_history)),
        ("--max-rewind", d(config.max_rewind)),
        (
            "--replay-keyframe-ticks",
            config.replay_keyframe_ticks.to_string(),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// The bounds a replayed header's flags must keep: what a real server could have been run
/// with, no more. A replay file is untrusted input, and these flags size the world a
/// re-simulation builds (NPCs, obstacles the map generator tries to place, history it keeps)
/// and how long its ticks take.
mod sim_bounds {
    use std::time::Duration;
    pub const NPCS: u32 = 100_000;
    pub const WORLD_SIZE: std::ops::RangeInclusive<f32> = 64.0..=65_536.0;
    pub const OBSTACLES: u32 = 10_000;
    pub const INPUT_WINDOW: u32 = 1024;
    pub const INBOX_CAPACITY: usize = 1 << 20;
    pub const NPC_MAX_ENGAGED: u32 = 1000;
    pub const RESPAWN_DELAY: Duration = Duration::from_secs(3600);
    pub const SPAWN_PROTECTION: Duration = Duration::from_secs(3600);
    pub const NPC_REACTION: Duration = Duration::from_secs(60);
    pub const LAG_COMP_HISTORY: Duration = Duration::from_secs(10);
    /// A keyframe at least this often: the reader's largest tick step
    /// ([`arena_shared::replay::Limits::max_tick_step`]).
    pub const KEYFRAME_TICKS: u32 = 1 << 16;
}

/// Parses a recording header's `sim_args` into the settings a re-simulation runs with, as
/// untrusted input: only the flags [`sim_args`] writes (no `--replay-dir`, `--log` or any
/// other), each at most once and given as `--flag=value` so a value is never read as a flag,
/// every value within what a server could really have used ([`sim_bounds`]), and the
/// header's own seed and tick rate.
pub fn validate_sim_args(header: &Header) -> Result<Config, String> {
    use clap::Parser;
    let allowed: Vec<String> = sim_args(&Config::default())
        .into_iter()
        .step_by(2)
        .collect();
    let args = &header.sim_args;
    // Each flag at most once, from the list: that bounds the count too.
    if !args.len().is_multiple_of(2) {
        return Err(format!("{} words are not --flag value pairs", args.len()));
    }

    let mut seen = Vec::new();
    let mut parse = vec!["arena-server".to_string(), "--no-replays".to_string()];
    for pair in args.chunks_exact(2) {
        let (flag, value) = (&pair[0], &pair[1]);
        if !allowed.contains(flag) {
            return Err(format!("{flag:?} is not a flag a recording carries"));
        }
        if seen.contains(&flag) {
            return Err(format!("{flag} is given twice"));
        }
        seen.push(flag);
        parse.push(format!("{flag}={value}"));
    }
    let c = Config::try_parse_from(parse).map_err(|e| e.to_string())?;
    let out_of_range = |flag: &str, value: String, bound: String| {
        Err(format!("--{flag} {value} is out of range ({bound})"))
    };
    use sim_bounds as b;
    if !b::WORLD_SIZE.contains(&c.world_size) {
        return out_of_range(
            "world-size",
            c.world_size.to_string(),
            format!("{:?}", b::WORLD_SIZE),
        );
    }
    // Counts: (flag, value, least, most).
    for (flag, value, least, most) in [
        ("npcs", u64::from(c.npcs), 0, u64::from(b::NPCS)),
        (
            "obstacles",
            u64::from(c.obstacles),
            0,
            u64::from(b::OBSTACLES),
        ),
        (
            "input-window",
            u64::from(c.input_window),
            1,
            u64::from(b::INPUT_WINDOW),
        ),
        (
            "inbox-capacity",
            c.inbox_capacity as u64,
            1,
            b::INBOX_CAPACITY as u64,
        ),
        (
            "npc-max-engaged",
            u64::from(c.npc_max_engaged),
            0,
            u64::from(b::NPC_MAX_ENGAGED),
        ),
        (
            "replay-keyframe-ticks",
            u64::from(c.replay_keyframe_ticks),
            1,
            u64::from(b::KEYFRAME_TICKS),
        ),
    ] {
        if !(least..=most).contains(&value) {
            let bound = if least == 0 {
                format!("at most {most}")
            } else {
                format!("{least}..={most}")
            };
            return out_of_range(flag, value.to_string(), bound);
        }
    }
    for (flag, value, max) in [
        ("respawn-delay", c.respawn_delay, b::RESPAWN_DELAY),
        ("spawn-protection", c.spawn_protection, b::SPAWN_PROTECTION),
        ("npc-reaction", c.npc_reaction, b::NPC_REACTION),
        ("lag-comp-history", c.lag_comp_history, b::LAG_COMP_HISTORY),
        ("max-rewind", c.max_rewind, c.lag_comp_history),
    ] {
        if value > max {
            return out_of_range(flag, format!("{value:?}"), format!("at most {max:?}"));
        }
    }
    if (c.seed, c.tick_rate) != (header.seed, header.tick_rate) {
        return Err(format!(
            "seed {} at {} Hz, where the header says seed {} at {} Hz",
            c.seed, c.tick_rate, header.seed, header.tick_rate
        ));
    }
    Ok(c)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One open replay file.
struct Current {
    out: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
}

/// The files of a run are `arena-<run start, Unix ms>-<n>.replay`, n from 1: the run's id is
/// the part before the last dash.
fn open(dir: &Path, header: &Header, run: u64, seq: u32) -> std::io::Result<Current> {
    let path = dir.join(format!("{}-{seq:04}.replay", run_id(run)));
    let mut out = BufWriter::new(File::create(&path)?);
    let mut bytes = MAGIC.to_vec();
    replay::encode_record(&Record::Header(header.clone()), &mut bytes);
    out.write_all(&bytes)?;
    info!(path = %path.display(), "recording replay");
    Ok(Current {
        out,
        path,
        bytes: bytes.len() as u64,
        opened: Instant::now(),
    })
}

/// The id of the run that started at `start_unix_ms`.
pub fn run_id(start_unix_ms: u64) -> String {
    format!("arena-{start_unix_ms}")
}

/// The files of run `id` in `dir`, in order.
pub fn run_files(dir: &Path, id: &str) -> std::io::Result<Vec<PathBuf>> {
    let prefix = format!("{id}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "replay")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The ids of the runs recorded in `dir`, newest first.
pub fn run_ids(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".replay")?;
            Some(stem.rsplit_once('-')?.0.to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids.reverse();
    Ok(ids)
}

fn write_loop(rx: Receiver<Record>, settings: WriterSettings, stats: Arc<Stats>) {
    let mut header = settings.header.clone();
    let run = unix_ms();
    let mut current: Option<Current> = None;
    let mut seq = 0u32;
    let mut buf = Vec::new();
    while let Ok(record) = rx.recv() {
        let due = current.as_ref().is_none_or(|c| {
            matches!(record, Record::Keyframe { .. })
                && (c.bytes >= settings.rotate_bytes || c.opened.elapsed() >= settings.rotate_after)
        });
        if due {
            if let Some(mut old) = current.take() {
                let _ = old.out.flush();
                info!(path = %old.path.display(), bytes = old.bytes, "replay file complete");
            }
            header.start_unix_ms = unix_ms();
            header.first_tick = record.tick();
            seq += 1;
            match open(&settings.dir, &header, run, seq) {
                Ok(c) => current = Some(c),
                Err(e) => {
                    warn!(error = %e, dir = %settings.dir.display(), "cannot write replays; recording stops");
                    return;
                }
            }
        }
        let Some(c) = current.as_mut() else {
            return;
        };
        buf.clear();
        replay::encode_record(&record, &mut buf);
        let keyframe = matches!(record, Record::Keyframe { .. });
        if let Err(e) = c
            .out
            .write_all(&buf)
            .and_then(|()| if keyframe { c.out.flush() } else { Ok(()) })
        {
            warn!(error = %e, path = %c.path.display(), "replay write failed; recording stops");
            return;
        }
        c.bytes += buf.len() as u64;
        Stats::add(&stats.replay_bytes, buf.len() as u64);
    }
    if let Some(mut c) = current {
        let _ = c.out.flush();
        info!(path = %c.path.display(), bytes = c.bytes, "replay file complete");
    }
}

/// What `replay verify` found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verified {
    /// Stretches re-simulated, each from a keyframe (or the run's start) to the next keyframe
    /// (or the recording's end).
    pub segments: u64,
    pub ticks: u32,
    pub records: u64,
    pub keyframes: u64,
    /// Stretches `(from tick, to tick)` that could not be checked: the recorder fell behind
    /// and dropped records there (a `Gap`).
    pub skipped: Vec<(u32, u32)>,
}

/// Why a replay does not verify.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Unreadable(String),
    #[error(
        "the recording holds no keyframe to start from (and does not start at the run's first tick)"
    )]
    NoStart,
    #[error(
        "the recording lost {dropped} records before tick {tick}: it cannot be replayed past there"
    )]
    Gap { tick: u32, dropped: u64 },
    #[error("tick {tick}: entity {entity} differs: recorded {recorded}, re-simulated {replayed}")]
    Entity {
        tick: u32,
        entity: u32,
        recorded: String,
        replayed: String,
    },
    #[error(
        "tick {tick}: the keyframe's {what} differs: recorded {recorded}, re-simulated {replayed}"
    )]
    State {
        tick: u32,
        what: String,
        recorded: String,
        replayed: String,
    },
    #[error("tick {tick}: recorded {recorded}, re-simulated {replayed}")]
    Record {
        tick: u32,
        recorded: String,
        replayed: String,
    },
}

/// A run's records as read from its files, in order.
struct Run {
    /// The first file's header.
    header: Header,
    /// Every record but the headers.
    records: Vec<Record>,
    /// Whether the last file ended on a whole record (a file still being written, or cut off,
    /// may end inside its last tick).
    clean: bool,
}

/// Reads the records of a run's files, in order: the first header, and every other record.
/// Each file is streamed through a [`replay::Reader`] with the default limits, so no file is
/// held whole and no record decodes past the memory limit; a file cut off inside a record
/// ends there (a file still being written, or a killed server's), anything else a file's
/// bytes get wrong refuses the run. The files must continue one another: the same run's
/// header, and ticks that go on from where the previous file stopped.
fn read_run(paths: &[PathBuf]) -> Result<Run, VerifyError> {
    let limits = replay::Limits::default();
    let mut header: Option<Header> = None;
    let mut records = Vec::new();
    let mut clean = true;
    let mut last_tick = None;
    for path in paths {
        let unreadable =
            |what: String| VerifyError::Unreadable(format!("{}: {what}", path.display()));
        let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
        let mut reader = replay::Reader::new(std::io::BufReader::new(file), limits);
        clean = true;
        loop {
            match reader.next_record() {
                Ok(Some((_, Record::Header(h)))) => {
                    if h.format_version != FORMAT_VERSION {
                        return Err(unreadable(format!(
                            "replay format {}, this build reads {FORMAT_VERSION}",
                            h.format_version
                        )));
                    }
                    if let Some(first) = &header
                        && (first.seed, first.tick_rate, &first.sim_args)
                            != (h.seed, h.tick_rate, &h.sim_args)
                    {
                        return Err(unreadable("a file of another run".into()));
                    }
                    if let Some(last) = last_tick
                        && (h.first_tick < last || h.first_tick - last > limits.max_tick_step)
                    {
                        return Err(unreadable(format!(
                            "starts at tick {}, which does not follow tick {last} where the file before it stops",
                            h.first_tick
                        )));
                    }
                    header.get_or_insert(h);
                }
                Ok(Some((_, r))) => {
                    last_tick = Some(r.tick());
                    records.push(r);
                }
                Ok(None) => break,
                Err(replay::End::Truncated { .. }) => {
                    clean = false;
                    break;
                }
                Err(end) => return Err(unreadable(end.to_string())),
            }
        }
    }
    let header = header.ok_or_else(|| VerifyError::Unreadable("no header".into()))?;
    Ok(Run {
        header,
        records,
        clean,
    })
}

/// Where a re-simulation can begin: before the run's first tick (a fresh world from the
/// header's flags), or at the end of a keyframe's tick (its state restored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The last tick already simulated there: the next step simulates `tick + 1`.
    pub tick: u32,
    /// The keyframe's index in [`Replayer::records`] (`None`: the run's start).
    pub keyframe: Option<usize>,
}

impl Start {
    /// Index of the first record the next step consumes.
    fn next_record(&self) -> usize {
        self.keyframe.map_or(0, |k| k + 1)
    }
}

/// A run re-simulated tick by tick through the server's own systems, fed the recorded joins,
/// leaves, detaches and inputs, from its start or from any keyframe: what `replay verify`
/// checks and what the viewer draws.
pub struct Replayer {
    paths: Vec<PathBuf>,
    pub header: Header,
    /// `records` begin at the run's first tick: a fresh world can start there.
    from_zero: bool,
    records: Vec<Record>,
    clean: bool,
    /// Index of the first record of the next tick.
    next: usize,
    /// The last tick simulated.
    tick: u32,
    sim: crate::game::Simulation,
    inbox: tokio::sync::mpsc::Sender<crate::game::SimCommand>,
    out: Receiver<Record>,
    /// The session number the re-simulation gave each client's current session.
    sessions: std::collections::HashMap<u64, u64>,
    pub config: Config,
}

/// One re-simulated tick: what the recording says happened, and what the re-simulation did.
pub struct Stepped {
    pub tick: u32,
    pub recorded: std::ops::Range<usize>,
    pub replayed: Vec<Record>,
}

/// Most records one re-simulated tick may leave for [`Replayer::step`] (the channel's slots
/// are allocated when a world is made, so this is a cost of every open).
const MAX_TICK_RECORDS: usize = 1 << 16;

/// A fresh simulation for the header's flags, recording into a channel.
type Fresh = (
    crate::game::Simulation,
    tokio::sync::mpsc::Sender<crate::game::SimCommand>,
    Receiver<Record>,
);

fn fresh_sim(config: &Config, first_keyframe: bool) -> Fresh {
    let map = Arc::new(config.map());
    let stats = Arc::new(Stats::default());
    let (inbox, rx) = tokio::sync::mpsc::channel(config.inbox_capacity.max(1));
    // Nothing is replicated, so no snapshot-building pool (one per CPU by default) is made
    // for each world opened.
    let config = &Config {
        replication_threads: 1,
        ..config.clone()
    };
    let mut sim = crate::game::Simulation::new(config, map, rx, stats.clone(), None);
    sim.without_replication();
    // `step` drains it every tick: it needs room for one tick's records, which the recording
    // itself could not exceed without a gap (the live recorder's queue is as long).
    let (out_tx, out) = sync_channel(config.replay_queue.clamp(1, MAX_TICK_RECORDS));
    sim.set_recorder(Recorder {
        tx: out_tx,
        lost: 0,
        keyframe_ticks: config.replay_keyframe_ticks.max(1),
        first_keyframe,
        stats,
    });
    (sim, inbox, out)
}

impl Replayer {
    /// The run in `paths` (its files in order, or any consecutive stretch of them), at its
    /// first [`Start`].
    pub fn open(paths: &[PathBuf]) -> Result<Self, VerifyError> {
        let Run {
            header,
            records,
            clean,
        } = read_run(paths)?;
        Self::from_records(paths, header, records, clean)
    }

    /// A run's records from `header` on, already read (a stretch of them, starting at the
    /// run's start or at a keyframe, is enough: the viewer reads no more than it shows), at
    /// its first [`Start`]. `paths` are the files [`refresh`](Self::refresh) reads again.
    pub fn from_records(
        paths: &[PathBuf],
        header: Header,
        records: Vec<Record>,
        clean: bool,
    ) -> Result<Self, VerifyError> {
        let config = validate_sim_args(&header)
            .map_err(|e| VerifyError::Unreadable(format!("the header's flags: {e}")))?;
        if config.map() != header.map {
            return Err(VerifyError::Unreadable(
                "the header's flags do not make the recorded map".into(),
            ));
        }
        let (sim, inbox, out) = fresh_sim(&config, true);
        let mut replayer = Self {
            paths: paths.to_vec(),
            from_zero: header.first_tick == 1,
            header,
            records,
            clean,
            next: 0,
            tick: 0,
            sim,
            inbox,
            out,
            sessions: Default::default(),
            config,
        };
        let first = replayer.starts().first().copied();
        replayer.start(first.ok_or(VerifyError::NoStart)?)?;
        Ok(replayer)
    }

    /// Where a re-simulation can begin, in order: the run's start if the recording has its
    /// first tick, then every keyframe.
    pub fn starts(&self) -> Vec<Start> {
        let from_zero = self.from_zero.then_some(Start {
            tick: 0,
            keyframe: None,
        });
        from_zero
            .into_iter()
            .chain(
                self.records
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| match r {
                        Record::Keyframe { tick, .. } => Some(Start {
                            tick: *tick,
                            keyframe: Some(i),
                        }),
                        _ => None,
                    }),
            )
            .collect()
    }

    /// Starts over at `start`: a fresh world, with the keyframe's state restored into it.
    pub fn start(&mut self, start: Start) -> Result<(), VerifyError> {
        let (mut sim, inbox, out) = fresh_sim(&self.config, start.keyframe.is_none());
        self.sessions.clear();
        if let Some(k) = start.keyframe {
            let Some(Record::Keyframe { tick, state, .. }) = self.records.get(k) else {
                return Err(VerifyError::Unreadable(format!(
                    "record {k} is no keyframe"
                )));
            };
            crate::game::state::restore(sim.world_mut(), *tick, state);
            for e in &state.entities {
                if let replay::Role::Player { client_id, .. } = e.role {
                    self.sessions.insert(client_id, 1);
                }
            }
        }
        (self.sim, self.inbox, self.out) = (sim, inbox, out);
        self.tick = start.tick;
        self.next = start.next_record();
        Ok(())
    }

    /// Positions the re-simulation so that its next step simulates `tick` (or the first tick
    /// it can, if the recording begins later): it goes on from where it is if that is on the
    /// way and no keyframe is nearer, else starts over from the last start before `tick`.
    pub fn seek(&mut self, tick: u32) -> Result<(), VerifyError> {
        let starts = self.starts();
        let best = starts
            .iter()
            .rev()
            .find(|s| s.tick < tick)
            .or(starts.first())
            .copied()
            .ok_or(VerifyError::NoStart)?;
        if self.tick >= tick || self.tick < best.tick {
            self.start(best)?;
        }
        while self.tick + 1 < tick && self.tick < self.last_tick() {
            self.step()?;
        }
        Ok(())
    }

    /// Reads the files again and takes the records written since (a run still recording).
    pub fn refresh(&mut self) -> Result<(), VerifyError> {
        let run = read_run(&self.paths)?;
        if run.records.len() > self.records.len() {
            self.records = run.records;
            self.clean = run.clean;
        }
        Ok(())
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Takes the records that follow the last one held (read from the files by the caller)
    /// and forgets those already simulated, so that playing a run forward holds no more than
    /// the stretch ahead.
    pub fn extend(&mut self, more: Vec<Record>) {
        if self.next > 0 {
            self.records.drain(..self.next);
            self.next = 0;
            self.from_zero = false;
        }
        self.records.extend(more);
    }

    /// The first tick a step can show (the one after the first start).
    pub fn first_tick(&self) -> u32 {
        self.starts().first().map_or(1, |s| s.tick + 1)
    }

    /// The last tick the recording reaches.
    pub fn last_tick(&self) -> u32 {
        self.records.last().map_or(1, Record::tick)
    }

    /// The last tick simulated.
    pub fn tick(&self) -> u32 {
        self.tick
    }

    pub fn world(&mut self) -> &mut bevy_ecs::world::World {
        self.sim.world_mut()
    }

    /// Simulates the next tick, fed what the recording says the network delivered before it.
    pub fn step(&mut self) -> Result<Stepped, VerifyError> {
        use crate::game::{JoinRequest, SimCommand};
        use crate::net::outbox::Outbox;
        let tick = self.tick + 1;
        let start = self.next;
        while self.next < self.records.len() && self.records[self.next].tick() <= tick {
            let cmd = match &self.records[self.next] {
                Record::Gap { tick, dropped } => {
                    return Err(VerifyError::Gap {
                        tick: *tick,
                        dropped: *dropped,
                    });
                }
                Record::Join {
                    client_id,
                    name,
                    resumed,
                    ..
                } => {
                    let session = self.sessions.entry(*client_id).or_insert(0);
                    *session += 1;
                    Some(SimCommand::Join(JoinRequest {
                        client_id: *client_id,
                        session: *session,
                        name: name.clone(),
                        outbox: Arc::new(Outbox::new(1, 1200)),
                        resume: *resumed,
                        reply: tokio::sync::oneshot::channel().0,
                    }))
                }
                Record::Leave { client_id, .. } => Some(SimCommand::Leave {
                    client_id: *client_id,
                    session: self.sessions.get(client_id).copied().unwrap_or(0),
                }),
                Record::Detach { client_id, .. } => Some(SimCommand::Detach {
                    client_id: *client_id,
                    session: self.sessions.get(client_id).copied().unwrap_or(0),
                }),
                Record::Input {
                    client_id, input, ..
                } => Some(SimCommand::Input {
                    client_id: *client_id,
                    input: *input,
                }),
                _ => None,
            };
            if let Some(cmd) = cmd {
                self.inbox.try_send(cmd).map_err(|_| {
                    VerifyError::Unreadable("more commands in a tick than the inbox holds".into())
                })?;
            }
            self.next += 1;
        }
        self.sim.tick();
        self.tick = tick;
        Ok(Stepped {
            tick,
            recorded: start..self.next,
            replayed: self.out.try_iter().collect(),
        })
    }
}

/// `arena-server replay verify FILE...` (consecutive files of one run, in order; one rotated
/// file alone will do): re-simulates every stretch between two keyframes (and from the run's
/// start to its first keyframe, when the files begin there) through the server's own
/// systems, starting from the first keyframe's recorded state and feeding the recorded joins,
/// leaves, detaches and inputs at their ticks, and checks that what the re-simulation records
/// (every input applied, every event, and the next keyframe: what clients see and the whole
/// state) is the recording, bit for bit. Since each stretch starts from a recorded state,
/// this also proves the keyframes hold everything the simulation carries. A stretch the
/// recorder dropped records in is skipped and reported. A mismatch names the first tick (and
/// entity) that differs.
pub fn verify(paths: &[PathBuf]) -> Result<Verified, VerifyError> {
    let mut replayer = Replayer::open(paths)?;
    let last = replayer.last_tick();
    let starts = replayer.starts();
    let mut checked = Verified::default();
    for (i, &start) in starts.iter().enumerate() {
        // The stretch ends with the next keyframe's record (or the recording).
        let (end_tick, end_record) = match starts.get(i + 1) {
            Some(Start {
                tick,
                keyframe: Some(k),
            }) => (*tick, *k + 1),
            _ => (last, replayer.records().len()),
        };
        if end_tick <= start.tick {
            continue;
        }
        let gap = replayer.records()[start.next_record()..end_record]
            .iter()
            .any(|r| matches!(r, Record::Gap { .. }));
        if gap {
            checked.skipped.push((start.tick + 1, end_tick));
            continue;
        }
        replayer.start(start)?;
        while replayer.tick() < end_tick {
            let Stepped {
                tick,
                recorded,
                replayed,
            } = replayer.step()?;
            checked.ticks += 1;
            let tail = if tick < last {
                Tail::Whole
            } else if replayer.clean {
                Tail::Rotated
            } else {
                Tail::Cut
            };
            let (records, keyframes) =
                compare_tick(tick, &replayer.records()[recorded], &replayed, tail)?;
            checked.records += records;
            checked.keyframes += keyframes;
        }
        checked.segments += 1;
    }
    Ok(checked)
}

/// How much of a tick the recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// All of it.
    Whole,
    /// The recording's last tick, ending on a whole record: all of it, but its keyframe may
    /// have opened the next file.
    Rotated,
    /// The last tick of a recording that stops inside a record (still being written, or cut
    /// off): any part of it.
    Cut,
}

/// A record in an error message: a keyframe by its size, not its thousands of numbers.
fn brief(record: Option<&Record>) -> String {
    match record {
        Some(Record::Keyframe {
            tick,
            entities,
            state,
        }) => format!(
            "Keyframe {{ tick: {tick}, {} visible entities, {} in its state }}",
            entities.len(),
            state.entities.len()
        ),
        Some(r) => format!("{r:?}"),
        None => "nothing".into(),
    }
}

/// Compares one tick's recorded and re-simulated records; says how many records and
/// keyframes matched.
fn compare_tick(
    tick: u32,
    recorded: &[Record],
    replayed: &[Record],
    tail: Tail,
) -> Result<(u64, u64), VerifyError> {
    let mut keyframes = 0;
    for (i, want) in recorded.iter().enumerate() {
        let got = replayed.get(i);
        if let (
            Record::Keyframe {
                entities: a,
                state: sa,
                ..
            },
            Some(Record::Keyframe {
                entities: b,
                state: sb,
                ..
            }),
        ) = (want, got)
        {
            compare_keyframe(tick, (a, sa), (b, sb))?;
            keyframes += 1;
        } else if got != Some(want) {
            return Err(VerifyError::Record {
                tick,
                recorded: brief(Some(want)),
                replayed: brief(got),
            });
        }
    }
    let extra = &replayed[recorded.len().min(replayed.len())..];
    let allowed = match tail {
        Tail::Whole => extra.is_empty(),
        Tail::Rotated => extra.iter().all(|r| matches!(r, Record::Keyframe { .. })),
        Tail::Cut => true,
    };
    if !allowed {
        return Err(VerifyError::Record {
            tick,
            recorded: "nothing more".into(),
            replayed: brief(extra.first()),
        });
    }
    Ok((recorded.len() as u64, keyframes))
}

/// A keyframe reproduced bit for bit: what clients see, then the whole state.
fn compare_keyframe(
    tick: u32,
    (a, sa): (&[arena_shared::protocol::EntityState], &replay::SimState),
    (b, sb): (&[arena_shared::protocol::EntityState], &replay::SimState),
) -> Result<(), VerifyError> {
    if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| !replay::same_bits(*x, *y)) {
        return Err(VerifyError::Entity {
            tick,
            entity: x.id.min(y.id),
            recorded: format!("{x:?}"),
            replayed: format!("{y:?}"),
        });
    }
    if a.len() != b.len() {
        let n = a.len().min(b.len());
        let extra = a.get(n).or(b.get(n)).map_or(0, |e| e.id);
        return Err(VerifyError::Entity {
            tick,
            entity: extra,
            recorded: format!("{} entities", a.len()),
            replayed: format!("{} entities", b.len()),
        });
    }
    if replay::same_bits(sa, sb) {
        return Ok(());
    }
    let differs = |what: String, x: String, y: String| {
        Err(VerifyError::State {
            tick,
            what,
            recorded: x,
            replayed: y,
        })
    };
    let n = sa.entities.len().max(sb.entities.len());
    for i in 0..n {
        let (x, y) = (sa.entities.get(i), sb.entities.get(i));
        let same = match (x, y) {
            (Some(x), Some(y)) => replay::same_bits(x, y),
            _ => false,
        };
        if !same {
            let id = x.or(y).map_or(0, |e| e.id);
            return Err(VerifyError::Entity {
                tick,
                entity: id,
                recorded: format!("{x:?}"),
                replayed: format!("{y:?}"),
            });
        }
    }
    if sa.last_id != sb.last_id {
        return differs(
            "last id".into(),
            sa.last_id.to_string(),
            sb.last_id.to_string(),
        );
    }
    if sa.rng != sb.rng {
        return differs(
            "world generator".into(),
            sa.rng.to_string(),
            sb.rng.to_string(),
        );
    }
    differs(
        "lag-compensation history".into(),
        format!("{} frames", sa.history.len()),
        format!("{} frames", sb.history.len()),
    )
}

/// `arena-server replay info FILE`: what the file holds, as text (its last line says how the
/// reading ended).
pub fn info_text(path: &Path) -> std::io::Result<String> {
    info(path).map(|(text, _)| text)
}

/// What the file holds, as text, and how its reading ended: streamed through a
/// [`replay::Reader`] with the default limits, so the text tells what comes before a record
/// the reader refuses, and the end says why.
pub fn info(path: &Path) -> std::io::Result<(String, replay::End)> {
    use std::fmt::Write as _;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = replay::Reader::new(std::io::BufReader::new(file), replay::Limits::default());
    let mut s = replay::Summary::default();
    let end = loop {
        match reader.next_record() {
            Ok(Some((_, r))) => s.add(&r),
            Ok(None) => break replay::End::Clean,
            Err(end) => break end,
        }
    };
    let mut t = String::new();
    let _ = writeln!(t, "file        {} ({len} bytes)", path.display());
    if let Some(h) = &s.header {
        let _ = writeln!(
            t,
            "format      {} (protocol {}), seed {}, {} Hz, map {}x{} with {} obstacles",
            h.format_version,
            h.protocol_version,
            h.seed,
            h.tick_rate,
            h.map.width,
            h.map.height,
            h.map.obstacles.len()
        );
    }
    let _ = writeln!(
        t,
        "ticks       {}..={} ({} ticks, {:.1} s)",
        s.first_tick,
        s.last_tick,
        s.ticks(),
        s.duration_s()
    );
    let capped = if s.players >= replay::Summary::MAX_LISTED {
        " or more"
    } else {
        ""
    };
    let _ = writeln!(t, "players     {}{capped}", s.players);
    let _ = writeln!(t, "joins       {}", s.joins);
    let _ = writeln!(t, "leaves      {}", s.leaves);
    let _ = writeln!(t, "inputs      {}", s.inputs);
    let _ = writeln!(t, "events      {}", s.events);
    let _ = writeln!(t, "keyframes   {}", s.keyframes);
    let _ = writeln!(
        t,
        "gaps        {} ({} records lost)",
        s.gap_count, s.dropped
    );
    let _ = writeln!(t, "end         {end:?}");
    if end != replay::End::Clean {
        let _ = writeln!(t, "            ({end})");
    }
    Ok((t, end))
}

#[cfg(test)]
mod resim_tests;

#[cfg(test)]
mod tests {
    use arena_shared::replay::{End, Summary};

    use super::*;

    fn recorder(capacity: usize) -> (Recorder, Receiver<Record>, Arc<Stats>) {
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(Stats::default());
        let r = Recorder {
            tx,
            lost: 0,
            keyframe_ticks: 300,
            first_keyframe: true,
            stats: stats.clone(),
        };
        (r, rx, stats)
    }

    fn leave(tick: u32) -> Record {
        Record::Leave { tick, client_id: 1 }
    }

    fn keyframe(tick: u32) -> Record {
        Record::Keyframe {
            tick,
            entities: Vec::new(),
            state: Default::default(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_next_record_says_so() {
        let (mut r, rx, stats) = recorder(2);
        for t in 1..=5 {
            r.record(leave(t));
        }
        assert_eq!(
            Stats::get(&stats.replay_dropped),
            3,
            "the tick never waited"
        );
        let got: Vec<Record> = rx.try_iter().collect();
        assert_eq!(got, [leave(1), leave(2)]);
        r.record(leave(6));
        let got: Vec<Record> = rx.try_iter().collect();
        assert_eq!(
            got,
            [
                Record::Gap {
                    tick: 6,
                    dropped: 3
                },
                leave(6)
            ]
        );
    }

    #[test]
    fn keyframes_come_first_then_every_interval() {
        let (mut r, _rx, _) = recorder(1);
        r.keyframe_ticks = 10;
        assert!(r.keyframe_due(7), "the first tick recorded");
        assert!(!r.keyframe_due(8));
        assert!(r.keyframe_due(10));
    }

    #[test]
    fn files_rotate_at_a_keyframe_once_over_their_size_and_each_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("arena-replay-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let settings = WriterSettings {
            dir: dir.clone(),
            rotate_bytes: 200,
            rotate_after: Duration::from_secs(3600),
            header: Header {
                format_version: FORMAT_VERSION,
                protocol_version: PROTOCOL_VERSION,
                seed: 1,
                map: Map::open(10.0, 10.0),
                tick_rate: 30,
                start_unix_ms: 0,
                first_tick: 1,
                sim_args: Vec::new(),
            },
        };
        let (tx, rx) = sync_channel(1024);
        let stats = Arc::new(Stats::default());
        let writer = std::thread::spawn({
            let stats = stats.clone();
            move || write_loop(rx, settings, stats)
        });
        for t in 1..=60 {
            let record = if t % 20 == 1 { keyframe(t) } else { leave(t) };
            tx.send(record).unwrap();
        }
        drop(tx);
        writer.join().unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        let mut total = 0;
        for f in &files {
            let read = arena_shared::replay::read(&std::fs::read(f).unwrap());
            assert_eq!(read.end, End::Clean);
            assert!(matches!(read.records[0], Record::Header(_)));
            assert!(matches!(read.records[1], Record::Keyframe { .. }), "{f:?}");
            total += Summary::of(&read.records).leaves;
        }
        assert_eq!(total, 57, "every record in exactly one file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
