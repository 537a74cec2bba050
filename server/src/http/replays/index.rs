//! A run's index: its files, and in each the byte offset and tick of every keyframe, so the
//! viewer opens a run where it is asked to (the keyframe before the tick, in its file) and
//! reads no more of it than it shows. An index is built by reading each record once and
//! grows with a run still being recorded: a refresh reads only what was written since.
//!
//! Invariant: `scanned` is a record boundary of the last file (or its end), and every
//! keyframe before it is listed; the files are the run's, in order, and each starts with its
//! header.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arena_shared::replay::{End, Header, Limits, Reader, Record};

/// Players listed by `meta` (each join); beyond, they are left out of the list, not of the
/// run.
const MAX_PLAYERS_LISTED: usize = 10_000;
/// Keyframes one run's index holds (16 bytes each).
const MAX_KEYFRAMES: usize = 1 << 20;

/// Where a re-simulation can begin: before the run's first tick (its first file's first
/// record after the header) or at a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The last tick already simulated there (0: the run's start).
    pub tick: u32,
    pub file: usize,
    /// The byte offset of the first record to read.
    pub offset: u64,
}

/// A position in a run's files: the record that starts at `offset` in file `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub file: usize,
    pub offset: u64,
}

#[derive(Debug)]
struct FileIndex {
    path: PathBuf,
    /// The end of the last whole record read (a record boundary).
    scanned: u64,
    /// `(tick, offset)` of every keyframe.
    keyframes: Vec<(u32, u64)>,
    /// Where the records after the header start, and the header's first tick.
    body: u64,
    first_tick: u32,
}

/// One run's files and where its keyframes are.
#[derive(Debug)]
pub struct RunIndex {
    /// The first file's header (what the run is: map, tick rate, flags).
    pub header: Header,
    files: Vec<FileIndex>,
    /// `(entity, name)` of each join, in order.
    pub players: Vec<(u32, String)>,
    /// The last tick any record reaches, and whether that record is a keyframe.
    last_record_tick: u32,
    ends_on_keyframe: bool,
    keyframes: usize,
}

impl RunIndex {
    /// Reads `paths` (a run's files, in order) once.
    pub fn build(paths: &[PathBuf]) -> Result<Self, String> {
        let first = paths.first().ok_or("the run has no files")?;
        let mut index = Self {
            header: read_header(first)?,
            files: Vec::new(),
            players: Vec::new(),
            last_record_tick: 0,
            ends_on_keyframe: false,
            keyframes: 0,
        };
        index.refresh(paths)?;
        Ok(index)
    }

    /// Takes what was written since: new files, and the records appended to the last one.
    /// `paths` are the run's files as listed now; if they no longer begin with the files
    /// indexed (a file removed), the index is built again.
    pub fn refresh(&mut self, paths: &[PathBuf]) -> Result<(), String> {
        let known = self.files.iter().map(|f| &f.path);
        if !known.zip(paths).all(|(a, b)| a == b) || paths.len() < self.files.len() {
            *self = Self::build(paths)?;
            return Ok(());
        }
        if let Some(last) = self.files.len().checked_sub(1) {
            self.scan(last)?;
        }
        for path in &paths[self.files.len()..] {
            let header = read_header(path)?;
            self.files.push(FileIndex {
                path: path.clone(),
                scanned: 0,
                keyframes: Vec::new(),
                body: 0,
                first_tick: header.first_tick,
            });
            self.scan(self.files.len() - 1)?;
        }
        Ok(())
    }

    /// Reads file `i` on from where the last scan stopped.
    fn scan(&mut self, i: usize) -> Result<(), String> {
        let file = &mut self.files[i];
        let mut reader = open_at(&file.path, file.scanned)?;
        loop {
            match reader.next_record() {
                Ok(Some((offset, record))) => {
                    file.scanned = reader.offset();
                    match &record {
                        Record::Header(_) => file.body = reader.offset(),
                        Record::Keyframe { tick, .. } => {
                            if self.keyframes >= MAX_KEYFRAMES {
                                return Err(format!(
                                    "{}: more than {MAX_KEYFRAMES} keyframes in one run",
                                    file.path.display()
                                ));
                            }
                            self.keyframes += 1;
                            file.keyframes.push((*tick, offset));
                        }
                        Record::Join { entity, name, .. }
                            if self.players.len() < MAX_PLAYERS_LISTED =>
                        {
                            self.players.push((*entity, name.clone()));
                        }
                        _ => {}
                    }
                    self.last_record_tick = self.last_record_tick.max(record.tick());
                    self.ends_on_keyframe = matches!(record, Record::Keyframe { .. });
                }
                Ok(None) => return Ok(()),
                // A file still being written ends inside its last record: the next refresh
                // reads it from its start.
                Err(End::Truncated { .. }) => return Ok(()),
                Err(end) => return Err(format!("{}: {end}", file.path.display())),
            }
        }
    }

    /// Where the re-simulation begins for a frame of `tick`: the last entry before it, or
    /// the first there is.
    pub fn entry_for(&self, tick: u32) -> Option<Entry> {
        let mut best = None;
        for e in self.entries() {
            if best.is_none() || e.tick < tick {
                best = Some(e);
            }
            if e.tick >= tick {
                break;
            }
        }
        best
    }

    /// Every place a re-simulation can begin, in tick order.
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let start = self
            .files
            .first()
            .filter(|f| f.first_tick == 1)
            .map(|f| Entry {
                tick: 0,
                file: 0,
                offset: f.body,
            });
        start
            .into_iter()
            .chain(self.files.iter().enumerate().flat_map(|(file, f)| {
                f.keyframes
                    .iter()
                    .map(move |&(tick, offset)| Entry { tick, file, offset })
            }))
    }

    /// The last tick a frame can show: the last tick recorded, if a keyframe (the last
    /// record of its tick) closed it; else the one before, since the end of what is on disk
    /// may hold only part of a tick (the writer flushes at keyframes, and when its buffer
    /// fills).
    pub fn last_tick(&self) -> u32 {
        if self.ends_on_keyframe {
            self.last_record_tick
        } else {
            self.last_record_tick.saturating_sub(1)
        }
    }

    /// The first tick a frame can show.
    pub fn first_tick(&self) -> u32 {
        self.entries().next().map_or(1, |e| e.tick + 1)
    }

    /// Whether a keyframe lies strictly between ticks `a` and `b`: a re-simulation at `a`
    /// would then do better to start over there than to step on to `b`.
    pub fn keyframe_between(&self, a: u32, b: u32) -> bool {
        self.files
            .iter()
            .flat_map(|f| &f.keyframes)
            .any(|&(t, _)| a < t && t < b)
    }

    /// The run's files, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Reads the records from `from` up to and including those of tick `until`, skipping
    /// the headers of later files, at most `max_records` of them: a stretch too long to read
    /// whole ends before the tick it could not finish, which the next read starts with.
    pub fn read(&self, from: Position, until: u32, max_records: usize) -> Result<Window, String> {
        let mut records: Vec<Record> = Vec::new();
        let mut next = from;
        // Where the records of the last tick read begin, and that tick.
        let mut tick_start = (from, 0);
        'files: while next.file < self.files.len() {
            let file = &self.files[next.file];
            let mut reader = open_at(&file.path, next.offset)?;
            loop {
                let (offset, record) = match reader.next_record() {
                    Ok(Some(found)) => found,
                    Ok(None) => break,
                    // The end of what is written so far of a run being recorded.
                    Err(End::Truncated { .. }) if next.file + 1 == self.files.len() => {
                        break 'files;
                    }
                    Err(end) => return Err(format!("{}: {end}", file.path.display())),
                };
                let tick = record.tick();
                if matches!(record, Record::Header(_)) {
                    next.offset = reader.offset();
                    continue;
                }
                if tick > until {
                    return Ok(Window {
                        records,
                        next,
                        through: until,
                    });
                }
                let here = Position {
                    file: next.file,
                    offset,
                };
                if records.is_empty() || tick != tick_start.1 {
                    tick_start = (here, tick);
                }
                if records.len() >= max_records {
                    records.retain(|r| r.tick() < tick);
                    if records.is_empty() {
                        return Err(format!("more than {max_records} records in tick {tick}"));
                    }
                    return Ok(Window {
                        records,
                        next: tick_start.0,
                        through: tick - 1,
                    });
                }
                records.push(record);
                next.offset = reader.offset();
            }
            if next.file + 1 == self.files.len() {
                break;
            }
            next = Position {
                file: next.file + 1,
                offset: 0,
            };
        }
        // At the end of what is written, the last tick may be only partly on disk: it is left
        // for the next read, unless a keyframe closed it (as in `last_tick`).
        let through = match records.last() {
            Some(r @ Record::Keyframe { .. }) => r.tick(),
            Some(r) => r.tick().saturating_sub(1),
            None => 0,
        }
        .min(until);
        Ok(Window {
            records,
            next,
            through,
        })
    }
}

/// Records read for a re-simulation.
#[derive(Debug)]
pub struct Window {
    pub records: Vec<Record>,
    /// Where the next read goes on.
    pub next: Position,
    /// The last tick whose records are all in `records` (or all there are of it so far).
    pub through: u32,
}

/// A reader of `path` at record boundary `offset` (0: the file's start, magic first).
fn open_at(path: &Path, offset: u64) -> Result<Reader<BufReader<File>>, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if offset == 0 {
        return Ok(Reader::new(BufReader::new(file), Limits::default()));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Reader::resume(
        BufReader::new(file),
        offset,
        Limits::default(),
    ))
}

fn read_header(path: &Path) -> Result<Header, String> {
    match open_at(path, 0)?.next_record() {
        Ok(Some((_, Record::Header(h)))) => {
            if h.format_version != arena_shared::replay::FORMAT_VERSION {
                return Err(format!(
                    "{}: replay format {}, this build reads {}",
                    path.display(),
                    h.format_version,
                    arena_shared::replay::FORMAT_VERSION
                ));
            }
            Ok(h)
        }
        Ok(_) => Err(format!("{}: no header", path.display())),
        Err(end) => Err(format!("{}: {end}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arena_shared::map::Map;
    use arena_shared::replay::{FORMAT_VERSION, MAGIC, encode_record};

    use super::*;

    fn header(first_tick: u32) -> Record {
        Record::Header(Header {
            format_version: FORMAT_VERSION,
            protocol_version: 0,
            seed: 1,
            map: Map::open(10.0, 10.0),
            tick_rate: 30,
            start_unix_ms: 0,
            first_tick,
            sim_args: Vec::new(),
        })
    }

    fn keyframe(tick: u32) -> Record {
        Record::Keyframe {
            tick,
            entities: Vec::new(),
            state: Default::default(),
        }
    }

    fn leave(tick: u32) -> Record {
        Record::Leave { tick, client_id: 7 }
    }

    /// A file of `records` after its header (and the magic when `new`).
    fn append(path: &Path, records: &[Record], new: bool) {
        let mut bytes = if new { MAGIC.to_vec() } else { Vec::new() };
        for r in records {
            encode_record(r, &mut bytes);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("a file");
        file.write_all(&bytes).expect("written");
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("arena-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory");
        dir
    }

    /// Ticks 1..=40: a keyframe at 1 and 30, a leave every tick (two at 35).
    fn run(path: &Path) {
        let mut records = vec![header(1)];
        for t in 1..=40 {
            records.push(leave(t));
            if t == 35 {
                records.push(leave(t));
            }
            if t == 1 || t == 30 {
                records.push(keyframe(t));
            }
        }
        append(path, &records, true);
    }

    #[test]
    fn a_frame_starts_at_the_last_keyframe_before_it_or_the_runs_start() {
        let dir = dir("entry");
        let path = dir.join("arena-5-0001.replay");
        run(&path);
        let index = RunIndex::build(std::slice::from_ref(&path)).expect("an index");
        assert_eq!((index.first_tick(), index.last_tick()), (1, 39));
        let tick = |t| index.entry_for(t).map(|e| e.tick);
        assert_eq!(tick(1), Some(0), "the run's start");
        assert_eq!(tick(2), Some(1));
        assert_eq!(tick(30), Some(1));
        assert_eq!(tick(31), Some(30));
        assert_eq!(tick(400), Some(30));
        assert!(index.keyframe_between(2, 31) && !index.keyframe_between(30, 40));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_read_takes_whole_ticks_up_to_the_one_asked_and_goes_on_from_there() {
        let dir = dir("read");
        let path = dir.join("arena-5-0001.replay");
        run(&path);
        let index = RunIndex::build(std::slice::from_ref(&path)).expect("an index");
        let entry = index.entry_for(31).expect("an entry");
        let at = Position {
            file: entry.file,
            offset: entry.offset,
        };
        let w = index.read(at, 33, 1000).expect("a window");
        let ticks: Vec<u32> = w.records.iter().map(Record::tick).collect();
        assert_eq!((ticks, w.through), (vec![30, 31, 32, 33], 33));
        let rest = index.read(w.next, 36, 1000).expect("the rest");
        let ticks: Vec<u32> = rest.records.iter().map(Record::tick).collect();
        assert_eq!(ticks, [34, 35, 35, 36]);
        // Capped inside tick 35 (its second record): the window ends with tick 34, and the
        // next read takes tick 35 whole.
        let capped = index.read(w.next, 36, 2).expect("a capped window");
        let ticks: Vec<u32> = capped.records.iter().map(Record::tick).collect();
        assert_eq!((ticks, capped.through), (vec![34], 34));
        let after = index.read(capped.next, 35, 1000).expect("tick 35");
        assert_eq!(after.records, [leave(35), leave(35)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_run_being_recorded_is_read_on_from_where_the_index_stopped() {
        let dir = dir("live");
        let first = dir.join("arena-5-0001.replay");
        run(&first);
        // Half a record at the end: still being written.
        let mut partial = Vec::new();
        encode_record(&leave(41), &mut partial);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&first)
            .and_then(|mut f| f.write_all(&partial[..partial.len() / 2]))
            .expect("half a record");
        let mut index = RunIndex::build(std::slice::from_ref(&first)).expect("an index");
        assert_eq!(index.last_tick(), 39);
        let kf = index.entry_for(40).expect("an entry");
        let at = Position {
            file: kf.file,
            offset: kf.offset,
        };
        let w = index.read(at, 100, 1000).expect("a window");
        assert_eq!(w.through, 39, "tick 40 may not be whole yet");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&first)
            .and_then(|mut f| f.write_all(&partial[partial.len() / 2..]))
            .expect("the rest of it");
        // The writer rotates: a new file, its header, then the keyframe.
        let second = dir.join("arena-5-0002.replay");
        append(&second, &[header(60), keyframe(60), leave(61)], true);
        let both = [first.clone(), second.clone()];
        index.refresh(&both).expect("refreshed");
        assert_eq!(index.last_tick(), 60);
        let entry = index.entry_for(61).expect("an entry");
        assert_eq!((entry.tick, entry.file), (60, 1));
        // A read crosses into the next file, leaving its header out.
        let from = index.entry_for(40).expect("an entry");
        let w = index
            .read(
                Position {
                    file: from.file,
                    offset: from.offset,
                },
                60,
                1000,
            )
            .expect("a window");
        assert!(w.records.iter().all(|r| !matches!(r, Record::Header(_))));
        assert_eq!(w.records.last(), Some(&keyframe(60)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
