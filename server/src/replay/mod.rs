//! Recording a run to `--replay-dir` (format: `arena_shared::replay`), off the tick thread.
//!
//! The simulation hands records to a [`Recorder`] (a resource), which passes them through a
//! bounded channel (`--replay-queue`) to a writer thread. The tick never waits: a record that
//! finds the channel full is dropped and counted, and the next record that gets through is
//! preceded by a `Gap` saying how many were lost. The writer appends framed records to the
//! current file and starts a new file (header, then the keyframe that triggered it) when the
//! current one is over `--replay-rotate-mb` or `--replay-rotate-secs` old, so every file
//! starts from a full world. Files are flushed at every keyframe and when the run ends.

//!
//! - `record`: the recorder and the writer (a leaf the simulation's systems use);
//! - `args`: the simulation's flags in the header, written and checked;
//! - `resim`: re-simulation and `replay verify`;
//! - `info`: `replay info`.

mod args;
mod info;
mod record;
mod resim;

pub use args::*;
pub use info::*;
pub use record::*;
pub use resim::*;
