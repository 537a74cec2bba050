//! `arena-server replay info`: what a file holds, read with the streaming reader.

use std::fs::File;
use std::path::Path;

use arena_shared::replay::{self};

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
