//! Recording a run to `--replay-dir` (format: `arena_shared::replay`), off the tick thread.
//!
//! The simulation's systems hand records to a [`Recorder`] (a resource), which passes them
//! through a bounded channel (`--replay-queue`) to a writer thread. The tick never waits: a
//! record that finds the channel full is dropped and counted, and the next record that gets
//! through is preceded by a `Gap` saying how many were lost. The writer appends framed records
//! to the current file and starts a new file (header, then the keyframe that triggered it)
//! when the current one is over `--replay-rotate-mb` or `--replay-rotate-secs` old, so every
//! file starts from a full world. Files are flushed at every keyframe and when the run ends.
//!
//! A leaf: it knows the settings and the counters, nothing of the game, the tick or
//! re-simulation (`crate::replay`), so the game's systems can hold a recorder without the
//! game depending on what reads the files back.
//!
//! - this file: the recorder, the writer thread and the run's files;
//! - [`args`]: the simulation's flags in the header, written here and range-checked when a
//!   run is re-simulated.

pub mod args;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
pub use args::{sim_args, validate_sim_args};

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
    /// The run's files as the writer names them (`None`: records go to a re-simulation).
    files: Option<Arc<RunFiles>>,
}

/// Which run the writer records and the number of the file it writes now: what a live
/// handoff tells the new server so its files continue the same run.
#[derive(Debug, Default)]
pub struct RunFiles {
    start_unix_ms: AtomicU64,
    last_file: AtomicU32,
}

impl RunFiles {
    /// The run's id as its file names carry it ([`run_id`]).
    pub fn run_start_unix_ms(&self) -> u64 {
        self.start_unix_ms.load(Ordering::Acquire)
    }

    /// The number of the newest file opened (0: none yet).
    pub fn last_file(&self) -> u32 {
        self.last_file.load(Ordering::Acquire)
    }
}

impl Recorder {
    /// A recorder that hands its records to `tx` (the writer's channel, or a re-simulation's
    /// own, which compares them with the file).
    pub(crate) fn to(
        tx: SyncSender<Record>,
        keyframe_ticks: u32,
        first_keyframe: bool,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            tx,
            lost: 0,
            keyframe_ticks,
            first_keyframe,
            stats,
            files: None,
        }
    }

    /// The run's files, when this recorder writes them.
    pub fn files(&self) -> Option<Arc<RunFiles>> {
        self.files.clone()
    }

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
    let files = Arc::new(RunFiles {
        start_unix_ms: AtomicU64::new(unix_ms()),
        last_file: AtomicU32::new(0),
    });
    let writer_files = files.clone();
    let handle = std::thread::Builder::new()
        .name("arena-replay".into())
        .spawn(move || write_loop(rx, settings, writer_stats, writer_files))?;
    Ok((
        Recorder {
            tx,
            lost: 0,
            keyframe_ticks: config.replay_keyframe_ticks.max(1),
            first_keyframe: true,
            stats,
            files: Some(files),
        },
        handle,
    ))
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

fn write_loop(
    rx: Receiver<Record>,
    settings: WriterSettings,
    stats: Arc<Stats>,
    files: Arc<RunFiles>,
) {
    let mut header = settings.header.clone();
    let run = files.run_start_unix_ms();
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
                Ok(c) => {
                    current = Some(c);
                    files.last_file.store(seq, Ordering::Release);
                }
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
            files: None,
        };
        (r, rx, stats)
    }

    fn run_files_named(dir: &Path, run_start_unix_ms: u64) -> Vec<PathBuf> {
        run_files(dir, &run_id(run_start_unix_ms)).unwrap()
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
        let run_files = Arc::new(RunFiles {
            start_unix_ms: AtomicU64::new(1_700_000_000_000),
            last_file: AtomicU32::new(0),
        });
        let writer = std::thread::spawn({
            let (stats, run_files) = (stats.clone(), run_files.clone());
            move || write_loop(rx, settings, stats, run_files)
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
        // What a handoff carries names the newest of them.
        assert_eq!(run_files.last_file(), 3);
        assert_eq!(run_files_named(&dir, run_files.run_start_unix_ms()), files);
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
