//! Recording a run to `--replay-dir` (format: `arena_shared::replay`), off the tick thread.
//!
//! The simulation's systems hand records to a [`Recorder`] (a resource), which keeps a tick's
//! records and passes them at the tick's end, in one message ([`Recorder::flush`], from the
//! keyframe system), through a channel bounded in records (`--replay-queue`,
//! [`record_channel`]) to a writer thread. The tick never waits: a record that finds the
//! channel full is dropped and counted, and the next record that gets through is preceded by a
//! `Gap` saying how many were lost. Handed over one at a time as they were made, the records
//! woke the writer for nearly each one (it writes one faster than the tick makes the next, so
//! it was asleep again): at 400 players, ~120 futex calls a tick on the simulation thread, in
//! its receive phase, and as many wake-ups of the writer; now one of each a tick. Records held
//! at most: a tick's (`--replay-queue`: a tick that makes more hands them over early), those
//! waiting in the channel (as many), and the batch the writer is writing. The writer appends framed records
//! to the current file and starts a new file (header, then the keyframe that triggered it)
//! when the current one is over `--replay-rotate-mb` or `--replay-rotate-secs` old, so every
//! file starts from a full world. Files are flushed at every keyframe and when the run ends.
//!
//! A live handoff continues the run on the new server: the old one, frozen, waits for its
//! writer to have written every record it was given and gives the next file's number away
//! ([`RunFiles::hand_over`]); the new server's writer starts at that number under the same run
//! id ([`Continuation`]), its header's `first_tick` the tick after the handoff. Read in order,
//! the two servers' files are one run, as rotated files are.
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
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
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

/// The sending end of a channel of records, handed over in batches, with at most `bound`
/// records waiting in it ([`record_channel`]).
pub(crate) struct RecordSender {
    tx: SyncSender<Vec<Record>>,
    waiting: Arc<AtomicUsize>,
    bound: usize,
}

/// The receiving end: the writer's, or a re-simulation's, which compares the records with
/// the file.
pub(crate) struct RecordReceiver {
    rx: Receiver<Vec<Record>>,
    waiting: Arc<AtomicUsize>,
}

/// A channel that holds at most `bound` records (at least one), in batches.
pub(crate) fn record_channel(bound: usize) -> (RecordSender, RecordReceiver) {
    let bound = bound.max(1);
    // A batch holds at least one record, so `bound` batches is never the limit.
    let (tx, rx) = sync_channel(bound);
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        RecordSender {
            tx,
            waiting: waiting.clone(),
            bound,
        },
        RecordReceiver { rx, waiting },
    )
}

impl RecordReceiver {
    /// The next batch, waiting for one; `None` once the sender is gone and nothing is left.
    pub(crate) fn recv(&self) -> Option<Vec<Record>> {
        let batch = self.rx.recv().ok()?;
        self.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }

    /// Every record waiting now, in order.
    pub(crate) fn drain(&self) -> Vec<Record> {
        let mut all = Vec::new();
        for batch in self.rx.try_iter() {
            self.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
            all.extend(batch);
        }
        all
    }
}

/// The simulation's end of the recording.
#[derive(Resource)]
pub struct Recorder {
    tx: RecordSender,
    /// This tick's records, not yet handed to the channel; at most the channel's bound (a
    /// tick that makes more hands them over early).
    pending: Vec<Record>,
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
    /// The number the writer's next file takes.
    next_file: AtomicU32,
    /// Records the recorder handed to the writer, and those the writer has written (or given
    /// up on): equal once the writer has caught up.
    sent: AtomicU64,
    written: AtomicU64,
    /// Records dropped since the last one that got through (`Recorder::lost`): a handoff now
    /// would owe the run a `Gap`.
    lost: AtomicU64,
    /// The writer has stopped (a disk error): it will never catch up.
    stopped: std::sync::atomic::AtomicBool,
}

/// Where a new server's recording goes on with a run another server began (a live handoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuation {
    /// The run's id ([`run_id`]).
    pub run_start_unix_ms: u64,
    /// The number of this server's first file.
    pub first_file: u32,
    /// Records the old server dropped just before the handoff: this server's first record is
    /// preceded by a `Gap` saying so, as the old one's next record would have been.
    pub lost: u64,
}

impl RunFiles {
    fn new(start_unix_ms: u64, next_file: u32) -> Self {
        Self {
            start_unix_ms: AtomicU64::new(start_unix_ms),
            next_file: AtomicU32::new(next_file.max(1)),
            ..Self::default()
        }
    }

    /// The run's id as its file names carry it ([`run_id`]).
    pub fn run_start_unix_ms(&self) -> u64 {
        self.start_unix_ms.load(Ordering::Acquire)
    }

    /// The number of the newest file opened (0: none yet).
    pub fn last_file(&self) -> u32 {
        self.last_file.load(Ordering::Acquire)
    }

    /// Whether the writer has written every record it was handed.
    pub fn caught_up(&self) -> bool {
        self.written.load(Ordering::Acquire) >= self.sent.load(Ordering::Acquire)
    }

    /// For a live handoff, with the simulation frozen (no record on its way): waits up to
    /// `within` for the writer to catch up, then gives the next file's number away, so that
    /// this server's writer never opens it (if the handoff fails and this server carries on,
    /// its files skip it). `None` if the writer did not catch up in time or has stopped (a disk
    /// error): the new server then starts a run of its own.
    pub async fn hand_over(&self, within: Duration) -> Option<Continuation> {
        let deadline = Instant::now() + within;
        // Nothing announces a write: the writer is polled, at most `within` (a bound in the
        // handoff's own time); nothing more is written once it stopped.
        while !self.caught_up() && !self.stopped.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        Some(Continuation {
            run_start_unix_ms: self.run_start_unix_ms(),
            first_file: self.next_file.fetch_add(1, Ordering::AcqRel),
            lost: self.lost.load(Ordering::Acquire),
        })
    }
}

impl Recorder {
    /// A recorder that hands its records to `tx` (the writer's channel, or a re-simulation's
    /// own, which compares them with the file).
    pub(crate) fn to(
        tx: RecordSender,
        keyframe_ticks: u32,
        first_keyframe: bool,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            tx,
            pending: Vec::new(),
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

    /// The end of the next tick gets a keyframe, due or not (a re-simulation matching a
    /// recording's keyframe off the interval: the first of a run continued after a handoff).
    pub fn force_keyframe(&mut self) {
        self.first_keyframe = true;
    }

    /// Whether the end of `tick` gets a keyframe.
    pub fn keyframe_due(&mut self, tick: u32) -> bool {
        std::mem::take(&mut self.first_keyframe) || tick.is_multiple_of(self.keyframe_ticks)
    }

    /// Keeps a record for the writer, handed over at the tick's end ([`Recorder::flush`]), or
    /// now with those kept before it if the tick has made as many as the channel holds.
    pub fn record(&mut self, record: Record) {
        if self.pending.len() >= self.tx.bound {
            self.flush();
        }
        self.pending.push(record);
    }

    /// Hands the records kept to the writer, in order and in one message; those that find
    /// its channel full are counted lost, and the next that gets through is preceded by a
    /// `Gap`. Called at the end of every tick, and when the recorder is dropped.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lost_before = self.lost;
        let mut room = self
            .tx
            .bound
            .saturating_sub(self.tx.waiting.load(Ordering::Acquire));
        let mut batch = Vec::with_capacity(self.pending.len() + 1);
        let mut records = 0;
        let mut pending = std::mem::take(&mut self.pending);
        for record in pending.drain(..) {
            if self.lost > 0 && room > 0 {
                batch.push(Record::Gap {
                    tick: record.tick(),
                    dropped: self.lost,
                });
                room -= 1;
                self.lost = 0;
            }
            if room == 0 {
                self.lost += 1;
                Stats::add(&self.stats.replay_dropped, 1);
                continue;
            }
            batch.push(record);
            room -= 1;
            records += 1;
        }
        // The allocation is kept for the next tick.
        self.pending = pending;
        if !batch.is_empty() {
            let len = batch.len();
            // Counted before it is sent, so that the writer never takes more off than is on.
            self.tx.waiting.fetch_add(len, Ordering::AcqRel);
            match self.tx.tx.try_send(batch) {
                Ok(()) => {
                    Stats::add(&self.stats.replay_records, records);
                    if let Some(files) = &self.files {
                        files.sent.fetch_add(len as u64, Ordering::Release);
                    }
                }
                // Not while the count of records waiting is kept (a batch holds at least one),
                // but if so, the batch is lost as the records that found no room were.
                Err(TrySendError::Full(batch)) => {
                    self.tx.waiting.fetch_sub(len, Ordering::AcqRel);
                    let gap = match batch.first() {
                        Some(Record::Gap { dropped, .. }) => *dropped,
                        _ => 0,
                    };
                    self.lost += gap + records;
                    Stats::add(&self.stats.replay_dropped, records);
                }
                // The writer stopped (a disk error, logged there): nothing more is recorded.
                Err(TrySendError::Disconnected(_)) => {
                    self.tx.waiting.fetch_sub(len, Ordering::AcqRel);
                }
            }
        }
        // A handoff now owes the run a `Gap` for these (stored only when it changes).
        if self.lost != lost_before
            && let Some(files) = &self.files
        {
            files.lost.store(self.lost, Ordering::Release);
        }
    }
}

impl Drop for Recorder {
    /// A simulation that stops mid-tick still hands over what it recorded.
    fn drop(&mut self) {
        self.flush();
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
/// With `continues`, the files go on with a run another server began (a live handoff),
/// starting at the number it gave away; otherwise a new run starts now.
pub fn start(
    config: &Config,
    map: &Map,
    stats: Arc<Stats>,
    continues: Option<Continuation>,
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
    let (tx, rx) = record_channel(config.replay_queue);
    let writer_stats = stats.clone();
    let files = Arc::new(match continues {
        Some(c) => RunFiles::new(c.run_start_unix_ms, c.first_file),
        None => RunFiles::new(unix_ms(), 1),
    });
    let writer_files = files.clone();
    let handle = std::thread::Builder::new()
        .name("arena-replay".into())
        .spawn(move || write_loop(rx, settings, writer_stats, writer_files))?;
    Ok((
        Recorder {
            tx,
            pending: Vec::new(),
            lost: continues.map_or(0, |c| c.lost),
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
    rx: RecordReceiver,
    settings: WriterSettings,
    stats: Arc<Stats>,
    files: Arc<RunFiles>,
) {
    let mut header = settings.header.clone();
    let run = files.run_start_unix_ms();
    let mut current: Option<Current> = None;
    let mut buf = Vec::new();
    // Counts the record as written however its write ends (a failed write stops the
    // recording, and a handoff must not wait for it).
    struct Written<'a>(&'a RunFiles);
    impl Drop for Written<'_> {
        fn drop(&mut self) {
            self.0.written.fetch_add(1, Ordering::AcqRel);
        }
    }
    struct Stopped<'a>(&'a RunFiles);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.stopped.store(true, Ordering::Release);
        }
    }
    let _stopped = Stopped(&files);
    for record in std::iter::from_fn(|| rx.recv()).flatten() {
        let _written = Written(&files);
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
            let seq = files.next_file.fetch_add(1, Ordering::AcqRel);
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

    fn recorder(capacity: usize) -> (Recorder, RecordReceiver, Arc<Stats>) {
        let (tx, rx) = record_channel(capacity);
        let stats = Arc::new(Stats::default());
        let r = Recorder::to(tx, 300, true, stats.clone());
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
        r.flush();
        assert_eq!(
            Stats::get(&stats.replay_dropped),
            3,
            "the tick never waited"
        );
        let got = rx.drain();
        assert_eq!(got, [leave(1), leave(2)]);
        r.record(leave(6));
        r.flush();
        let got = rx.drain();
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
    fn a_ticks_records_reach_the_writer_together_at_its_end_and_never_more_than_the_bound_wait() {
        let (mut r, rx, stats) = recorder(4);
        for t in 1..=3 {
            r.record(leave(t));
        }
        assert_eq!(rx.drain(), [], "kept until the tick's end");
        r.flush();
        assert_eq!(rx.drain(), [leave(1), leave(2), leave(3)]);
        // A tick that makes more than the channel holds hands them over as it goes: the
        // fifth record hands over the first four, which the channel takes.
        for t in 4..=8 {
            r.record(leave(t));
        }
        assert_eq!(r.pending, [leave(8)]);
        assert_eq!(rx.drain(), [leave(4), leave(5), leave(6), leave(7)]);
        // The bound counts records waiting, whatever the batches: two ticks of three (the
        // first with the 8 kept above) with the writer not reading leave room for one of the
        // second's.
        for t in [9, 10] {
            r.record(leave(t));
        }
        r.flush();
        for t in [11, 12, 13] {
            r.record(leave(t));
        }
        r.flush();
        assert_eq!(Stats::get(&stats.replay_dropped), 2);
        assert_eq!(
            rx.drain(),
            [leave(8), leave(9), leave(10), leave(11)],
            "four waiting at most"
        );
        // A recorder dropped mid-tick hands over what it kept, after the gap it owes.
        r.record(leave(14));
        drop(r);
        assert_eq!(
            rx.drain(),
            [
                Record::Gap {
                    tick: 14,
                    dropped: 2
                },
                leave(14)
            ]
        );
    }

    fn settings(dir: &Path) -> WriterSettings {
        WriterSettings {
            dir: dir.to_path_buf(),
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
        }
    }

    /// A writer thread for `files` and the recorder that feeds it.
    fn writing(dir: &Path, files: &Arc<RunFiles>, lost: u64) -> (Recorder, JoinHandle<()>) {
        let (tx, rx) = record_channel(1024);
        let stats = Arc::new(Stats::default());
        let writer = std::thread::spawn({
            let (settings, stats, files) = (settings(dir), stats.clone(), files.clone());
            move || write_loop(rx, settings, stats, files)
        });
        let mut recorder = Recorder::to(tx, 10, true, stats);
        recorder.lost = lost;
        recorder.files = Some(files.clone());
        (recorder, writer)
    }

    /// Records of `ticks`, handed over at each one's end as the simulation does.
    fn ticks(r: &mut Recorder, ticks: std::ops::RangeInclusive<u32>) {
        for t in ticks {
            if r.keyframe_due(t) {
                r.record(keyframe(t));
            } else {
                r.record(leave(t));
            }
            r.flush();
        }
    }

    /// The file numbers of `dir`'s replays, in order.
    fn numbers(dir: &Path) -> Vec<u32> {
        let mut n: Vec<u32> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".replay")?
                    .rsplit_once('-')?
                    .1
                    .parse()
                    .ok()
            })
            .collect();
        n.sort();
        n
    }

    #[tokio::test]
    async fn a_handoff_gives_the_next_file_away_once_the_writer_caught_up() {
        let base = std::env::temp_dir().join(format!("arena-handover-unit-{}", std::process::id()));
        let (a_dir, b_dir) = (base.join("a"), base.join("b"));
        for d in [&a_dir, &b_dir] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
        }
        let run = 1_700_000_000_000;
        let a_files = Arc::new(RunFiles::new(run, 1));
        let (mut a, a_writer) = writing(&a_dir, &a_files, 0);
        ticks(&mut a, 1..=40);
        // Frozen after tick 40: the file number goes once every record before it is written.
        let c = a_files
            .hand_over(Duration::from_secs(10))
            .await
            .expect("the writer catches up");
        assert!(a_files.caught_up());
        let written = a_files.last_file();
        assert!(written >= 2, "rotated at least once: {written}");
        assert_eq!(
            c,
            Continuation {
                run_start_unix_ms: run,
                first_file: written + 1,
                lost: 0
            }
        );

        // The new server's files go on from there under the same run id.
        let b_files = Arc::new(RunFiles::new(c.run_start_unix_ms, c.first_file));
        let (mut b, b_writer) = writing(&b_dir, &b_files, c.lost);
        ticks(&mut b, 41..=60);
        drop(b);
        b_writer.join().unwrap();
        let b_numbers = numbers(&b_dir);
        assert_eq!(b_numbers[0], c.first_file, "{b_numbers:?}");
        let b_first = &run_files_named(&b_dir, run)[0];
        let read = arena_shared::replay::read(&std::fs::read(b_first).unwrap());
        let Record::Header(h) = &read.records[0] else {
            panic!("no header")
        };
        assert_eq!(h.first_tick, 41, "its header says where it goes on");

        // Had the handoff failed, the old server carries on and skips the number given away.
        ticks(&mut a, 41..=80);
        drop(a);
        a_writer.join().unwrap();
        let a_numbers = numbers(&a_dir);
        assert!(!a_numbers.contains(&c.first_file), "{a_numbers:?}");
        assert_eq!(a_numbers.last(), Some(&a_files.last_file()));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[tokio::test]
    async fn a_writer_behind_gives_no_number_and_records_lost_before_a_handoff_open_the_next_file_with_a_gap()
     {
        // A writer that never catches up (nothing reads its channel): no continuation.
        let (tx, _rx) = record_channel(1);
        let files = Arc::new(RunFiles::new(5, 1));
        let mut r = Recorder::to(tx, 10, false, Arc::new(Stats::default()));
        r.files = Some(files.clone());
        ticks(&mut r, 1..=3);
        assert!(!files.caught_up());
        assert_eq!(files.hand_over(Duration::from_millis(20)).await, None);
        // Two records found the channel full: a handoff owes the run a Gap for them.
        assert_eq!(files.lost.load(Ordering::Acquire), 2);

        let dir = std::env::temp_dir().join(format!("arena-gap-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let b_files = Arc::new(RunFiles::new(5, 7));
        let (mut b, writer) = writing(&dir, &b_files, 2);
        ticks(&mut b, 4..=4);
        drop(b);
        writer.join().unwrap();
        let read =
            arena_shared::replay::read(&std::fs::read(&run_files_named(&dir, 5)[0]).unwrap());
        assert_eq!(
            read.records[1],
            Record::Gap {
                tick: 4,
                dropped: 2
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_writer_that_stopped_on_a_disk_error_gives_no_number_at_once() {
        // A "directory" that is a file: the writer cannot open its first file and stops.
        let not_a_dir =
            std::env::temp_dir().join(format!("arena-stopped-unit-{}", std::process::id()));
        std::fs::write(&not_a_dir, b"").unwrap();
        let files = Arc::new(RunFiles::new(9, 1));
        let (mut r, writer) = writing(&not_a_dir, &files, 0);
        ticks(&mut r, 1..=1);
        writer.join().unwrap();
        ticks(&mut r, 2..=3);
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            files.hand_over(Duration::from_secs(3600)),
        )
        .await;
        assert_eq!(answer, Ok(None), "no wait for a writer that is gone");
        let _ = std::fs::remove_file(&not_a_dir);
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
        let settings = settings(&dir);
        let (tx, rx) = record_channel(1024);
        let stats = Arc::new(Stats::default());
        let run_files = Arc::new(RunFiles::new(1_700_000_000_000, 1));
        let writer = std::thread::spawn({
            let (stats, run_files) = (stats.clone(), run_files.clone());
            move || write_loop(rx, settings, stats, run_files)
        });
        let mut r = Recorder::to(tx, 10, false, stats.clone());
        for t in 1..=60 {
            r.record(if t % 20 == 1 { keyframe(t) } else { leave(t) });
            r.flush();
        }
        drop(r);
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
