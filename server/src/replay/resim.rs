//! Re-simulation: a [`Replayer`] rebuilds the world from a file's keyframes and inputs and
//! steps it (the viewer's frames), and [`verify`] checks a whole run bit for bit.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arena_shared::replay::{self, FORMAT_VERSION, Header, Record};

use crate::config::Config;
use crate::game::{JoinRequest, SimCommand};
use crate::outbox::Outbox;
use crate::recording::{RecordReceiver, Recorder, record_channel, validate_sim_args};
use crate::stats::Stats;
use crate::tick::Simulation;
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
    sim: Simulation,
    inbox: tokio::sync::mpsc::Sender<SimCommand>,
    out: RecordReceiver,
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
    Simulation,
    tokio::sync::mpsc::Sender<SimCommand>,
    RecordReceiver,
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
    let mut sim = Simulation::new(config, map, rx, stats.clone(), None);
    sim.without_replication();
    // `step` drains it every tick: it needs room for one tick's records, which the recording
    // itself could not exceed without a gap (the live recorder's queue is as long).
    let (out_tx, out) = record_channel(config.replay_queue.clamp(1, MAX_TICK_RECORDS));
    sim.set_recorder(Recorder::to(
        out_tx,
        config.replay_keyframe_ticks.max(1),
        first_keyframe,
        stats,
    ));
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
        // A keyframe off the interval (a file that continues a run handed over opens with
        // one) is re-simulated too, so it is checked like any other.
        if self.records[start..self.next]
            .iter()
            .any(|r| matches!(r, Record::Keyframe { .. }))
        {
            self.sim
                .world_mut()
                .resource_mut::<Recorder>()
                .force_keyframe();
        }
        self.sim.tick();
        self.tick = tick;
        Ok(Stepped {
            tick,
            recorded: start..self.next,
            replayed: self.out.drain(),
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

#[cfg(test)]
#[path = "resim_tests.rs"]
mod resim_tests;
