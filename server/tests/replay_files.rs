//! Replay files are untrusted input: crafted files are refused by the real
//! `arena-server replay info` and `replay verify`, with a clear error, within a second and
//! 64 MB. Each tool runs as a child process; its peak resident memory is what the kernel
//! counted for it (`wait4`'s `ru_maxrss`), its time the wall clock around it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arena_server::config::Config;
use arena_server::recording::{sim_args, validate_sim_args};
use arena_shared::protocol::PROTOCOL_VERSION;
use arena_shared::replay::{
    self, FORMAT_VERSION, Header, MAGIC, Record, SimState, crc32, encode_record,
};
use clap::Parser;

const MAX_RSS_BYTES: u64 = 64 << 20;
const MAX_TIME: Duration = Duration::from_secs(1);

/// A directory of this test's own, emptied.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arena-replay-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a temporary directory");
    d
}

/// A small world's settings: what a crafted file's header claims.
fn config() -> Config {
    Config::parse_from([
        "arena-server",
        "--npcs",
        "0",
        "--world-size",
        "512",
        "--obstacles",
        "0",
    ])
}

fn header(sim_args: Vec<String>) -> Record {
    let c = config();
    Record::Header(Header {
        format_version: FORMAT_VERSION,
        protocol_version: PROTOCOL_VERSION,
        seed: c.seed,
        map: c.map(),
        tick_rate: c.tick_rate,
        start_unix_ms: 1,
        first_tick: 1,
        sim_args,
    })
}

fn keyframe(tick: u32) -> Record {
    Record::Keyframe {
        tick,
        entities: Vec::new(),
        state: SimState::default(),
    }
}

fn write(path: &Path, records: &[Record]) {
    let mut bytes = MAGIC.to_vec();
    for r in records {
        encode_record(r, &mut bytes);
    }
    std::fs::write(path, bytes).expect("writable");
}

/// A file of one framed record body.
fn write_body(path: &Path, body: &[u8]) {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32(body).to_le_bytes());
    bytes.extend_from_slice(body);
    std::fs::write(path, bytes).expect("writable");
}

/// The body of a header whose flags are `n` empty strings: the list's length as an unpacked
/// u64, then `n` zero lengths packed eight to a byte. bitcode would allocate 24 bytes for
/// each (100M of them: 2.4 GB, from 12.5 MB).
fn header_with_empty_flags(n: u64) -> Vec<u8> {
    let c = config();
    let mut b = vec![0u8]; // Record::Header
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&c.seed.to_le_bytes());
    b.extend_from_slice(&c.world_size.to_le_bytes());
    b.extend_from_slice(&c.world_size.to_le_bytes());
    b.push(0); // no obstacles
    b.extend_from_slice(&c.tick_rate.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&[255, 0]);
    b.extend_from_slice(&n.to_le_bytes());
    b.push(10);
    b.resize(b.len() + n.div_ceil(8) as usize, 0);
    b
}

/// The body of a keyframe of tick 1 with no entities and `n` empty history frames: their
/// ticks and position counts, all zero, one bit each (32 bytes each once decoded).
fn keyframe_with_empty_history(n: u64) -> Vec<u8> {
    let mut b = vec![6u8]; // Record::Keyframe
    b.push(0);
    b.extend_from_slice(&1u32.to_le_bytes()); // tick
    b.push(0); // no visible entities
    b.push(0);
    b.extend_from_slice(&0u32.to_le_bytes()); // last id
    b.push(0);
    b.extend_from_slice(&0u64.to_le_bytes()); // generator
    b.push(0); // no entity records
    b.extend_from_slice(&[255, 0]);
    b.extend_from_slice(&n.to_le_bytes());
    let zeros = n.div_ceil(8) as usize;
    // The frames' ticks: u32s packed as bytes, one bit each, all zero.
    b.extend_from_slice(&[4, 10]);
    b.resize(b.len() + zeros, 0);
    // Their position counts: one bit each, all zero.
    b.push(10);
    b.resize(b.len() + zeros, 0);
    b
}

struct Ran {
    ok: bool,
    stderr: String,
    took: Duration,
    peak_rss: u64,
}

/// Set in a copy of this test binary that runs one tool and reports on it.
const MEASURE: &str = "ARENA_REPLAY_FILES_MEASURE";
const MARK: &str = "measured:";

/// Runs `arena-server ARGS FILE` and says how it went. The kernel's peak resident memory of a
/// process (`wait4`'s `ru_maxrss`) counts the memory it had before `exec`, which for a child
/// of this test process is this process's own (it is spawned sharing or copying it), so the
/// tool is started from a fresh copy of this binary ([`measured_child`]), whose footprint
/// before `exec` is a few megabytes: the figure is the tool's, plus at most that.
fn run(args: &[&str], file: &Path) -> Ran {
    let mut spec: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    spec.push(file.display().to_string());
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "measured_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEASURE, spec.join("\u{1f}"))
        .output()
        .expect("a copy of this test binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ran = None;
    let mut stderr = String::new();
    for line in text.lines() {
        // libtest writes the test's name on the same line.
        if let Some((_, rest)) = line.split_once(MARK) {
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|w| w.parse().expect("a number"))
                .collect();
            ran = Some((v[0] == 1, v[1], Duration::from_micros(v[2])));
        } else if let Some(err) = line.strip_prefix("stderr: ") {
            stderr.push_str(err);
            stderr.push('\n');
        }
    }
    let (ok, peak_rss, took) = ran.unwrap_or_else(|| panic!("no measurement in {text}"));
    Ran {
        ok,
        stderr,
        took,
        peak_rss,
    }
}

/// Runs `arena-server ARGS` as a child of this process, its peak memory read from the
/// kernel as it is reaped. A child that is not done in 10 s is killed (and fails on time).
// Reaped with `wait4`, which `Child` does not offer, for the child's own resource usage.
#[allow(clippy::zombie_processes)]
fn run_here(args: &[String]) -> Ran {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("arena-server starts");
    let pid = child.id() as libc::pid_t;
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(10)).is_err() {
            // Still unreaped, so the pid is still this child's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut stderr = child.stderr.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    let _ = done.send(());
    watchdog.join().expect("watchdog");
    assert_eq!(reaped, pid, "wait4");
    Ran {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: reader.join().expect("stderr"),
        // Linux counts ru_maxrss in kilobytes.
        peak_rss: usage.ru_maxrss as u64 * 1024,
        took,
    }
}

/// In a copy of this binary started by [`run`]: runs the tool and reports. Run as a test of
/// its own: the measurement itself, on the smallest file the tools read (a header), which
/// both read and pass, in well under the bounds the refusals are held to.
#[test]
fn measured_child() {
    if let Ok(spec) = std::env::var(MEASURE) {
        let args: Vec<String> = spec.split('\u{1f}').map(String::from).collect();
        let ran = run_here(&args);
        println!(
            "{MARK} {} {} {}",
            u64::from(ran.ok),
            ran.peak_rss,
            ran.took.as_micros()
        );
        for line in ran.stderr.lines() {
            println!("stderr: {line}");
        }
        return;
    }
    let d = dir("baseline");
    let file = d.join("header.replay");
    write(&file, &[header(sim_args(&config()))]);
    let ran = run(&["replay", "info"], &file);
    assert!(ran.ok, "{}", ran.stderr);
    assert!(ran.took < MAX_TIME && ran.peak_rss > 0 && ran.peak_rss < MAX_RSS_BYTES / 4);
    let _ = std::fs::remove_dir_all(&d);
}

/// Both tools refuse `file`, saying `why`, fast and small.
fn refused(tools: &[&str], file: &Path, why: &str) {
    for tool in tools {
        let ran = run(&["replay", tool], file);
        assert!(!ran.ok, "replay {tool} accepted {}", file.display());
        assert!(
            ran.stderr.contains(why),
            "replay {tool}: {:?} does not say {why:?}",
            ran.stderr
        );
        assert!(
            ran.took < MAX_TIME,
            "replay {tool} took {:?} on {}",
            ran.took,
            file.display()
        );
        assert!(
            ran.peak_rss > 0 && ran.peak_rss < MAX_RSS_BYTES,
            "replay {tool} peaked at {} MB on {}",
            ran.peak_rss >> 20,
            file.display()
        );
    }
}

#[test]
fn huge_declared_lengths_are_refused_before_they_are_allocated() {
    let d = dir("lengths");
    let flags = d.join("flags.replay");
    write_body(&flags, &header_with_empty_flags(100_000_000));
    refused(
        &["info", "verify"],
        &flags,
        "would decode to more than the memory limit",
    );

    let history = d.join("history.replay");
    let mut bytes = MAGIC.to_vec();
    encode_record(&header(sim_args(&config())), &mut bytes);
    let body = keyframe_with_empty_history(60_000_000);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(&history, bytes).expect("writable");
    refused(
        &["info", "verify"],
        &history,
        "would decode to more than the memory limit",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_crafted_layouts_are_what_bitcode_decodes() {
    // Small versions of the bodies above decode to what they claim: the refusals above stop
    // real allocations, not garbage.
    let d = dir("layouts");
    let flags = d.join("flags.replay");
    write_body(&flags, &header_with_empty_flags(1000));
    let read = replay::read(&std::fs::read(&flags).expect("readable"));
    let [Record::Header(h)] = &read.records[..] else {
        panic!("the crafted header reads: {:?}", read.end);
    };
    assert_eq!(h.sim_args.len(), 1000);
    let mut bytes = MAGIC.to_vec();
    encode_record(&header(sim_args(&config())), &mut bytes);
    let body = keyframe_with_empty_history(1000);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let read = replay::read(&bytes);
    let [_, Record::Keyframe { state, .. }] = &read.records[..] else {
        panic!("the crafted keyframe reads: {:?}", read.end);
    };
    assert_eq!(state.history.len(), 1000);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ticks_that_run_off_are_refused() {
    let d = dir("ticks");
    let jump = d.join("jump.replay");
    write(
        &jump,
        &[
            header(sim_args(&config())),
            keyframe(1),
            Record::Leave {
                tick: u32::MAX,
                client_id: 1,
            },
        ],
    );
    refused(&["info", "verify"], &jump, "jumps too far past tick 1");
    let back = d.join("back.replay");
    write(
        &back,
        &[header(sim_args(&config())), keyframe(5), keyframe(4)],
    );
    refused(&["info", "verify"], &back, "its tick 4 comes after tick 5");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_header_with_flags_no_recording_has_is_refused() {
    let d = dir("flags");
    let mut unknown = sim_args(&config());
    unknown.extend(["--replay-dir".into(), "/tmp/elsewhere".into()]);
    let mut npcs = sim_args(&config());
    let i = npcs.iter().position(|a| a == "--npcs").expect("--npcs");
    npcs[i + 1] = "4000000000".into();
    for (name, args, why) in [
        (
            "unknown",
            unknown,
            "\"--replay-dir\" is not a flag a recording carries",
        ),
        ("npcs", npcs, "--npcs 4000000000 is out of range"),
    ] {
        let file = d.join(format!("{name}.replay"));
        write(&file, &[header(args), keyframe(1)]);
        refused(&["verify"], &file, why);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_damaged_file_is_refused() {
    let d = dir("damaged");
    let file = d.join("damaged.replay");
    write(&file, &[header(sim_args(&config())), keyframe(1)]);
    let mut bytes = std::fs::read(&file).expect("readable");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, bytes).expect("writable");
    refused(&["info", "verify"], &file, "its checksum does not match");
    let not = d.join("not.replay");
    std::fs::write(&not, b"GIF89a, not a replay at all").expect("writable");
    refused(&["info", "verify"], &not, "not a replay file");
    let _ = std::fs::remove_dir_all(&d);
}

/// Every flag a recording carries is range-checked: each of these, alone, is refused, and
/// the flags a server with default settings records are accepted.
#[test]
fn recorded_flags_are_checked_like_command_line_flags() {
    let ok = sim_args(&Config::default());
    let h = |args: Vec<String>| {
        let c = Config::default();
        Header {
            format_version: FORMAT_VERSION,
            protocol_version: PROTOCOL_VERSION,
            seed: c.seed,
            map: c.map(),
            tick_rate: c.tick_rate,
            start_unix_ms: 1,
            first_tick: 1,
            sim_args: args,
        }
    };
    let parsed = validate_sim_args(&h(ok.clone())).expect("a server's own flags");
    assert_eq!(sim_args(&parsed), ok);
    let with = |flag: &str, value: &str| {
        let mut args = ok.clone();
        let i = args.iter().position(|a| a == flag).expect(flag);
        args[i + 1] = value.into();
        args
    };
    for (flag, value) in [
        ("--npcs", "100001"),
        ("--world-size", "1e30"),
        ("--world-size", "NaN"),
        ("--obstacles", "4000000000"),
        ("--tick-rate", "241"),
        ("--input-window", "0"),
        ("--inbox-capacity", "100000000"),
        ("--npc-max-engaged", "1000000"),
        ("--respawn-delay", "2h"),
        ("--spawn-protection", "2h"),
        ("--npc-reaction", "2min"),
        ("--lag-comp-history", "11s"),
        ("--max-rewind", "2s"),
        ("--replay-keyframe-ticks", "0"),
        ("--replay-keyframe-ticks", "70000"),
        ("--seed", "2"),
        ("--npcs", "--log=debug"),
    ] {
        let verdict = validate_sim_args(&h(with(flag, value)));
        assert!(verdict.is_err(), "{flag} {value} accepted");
    }
    let mut twice = ok.clone();
    twice.extend(["--npcs".into(), "3".into()]);
    let mut odd = ok.clone();
    odd.pop();
    let mut other = ok.clone();
    other[0] = "--log".into();
    for args in [twice, odd, other] {
        assert!(validate_sim_args(&h(args.clone())).is_err(), "{args:?}");
    }
}
