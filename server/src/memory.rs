//! Handing the heap that connections freed back to the kernel.
//!
//! glibc's malloc keeps freed memory in its arenas: only a free region at the top of an arena is
//! returned by `free` itself. A handshake (rustls, quinn's connection made whole, the session's
//! first frames) allocates and frees tens of KiB, in the arena of whichever runtime thread ran
//! it, between the long-lived state of other connections; a player who leaves frees their views
//! and the transport's state the same way. Those pages stay resident until something calls
//! `malloc_trim`, which walks every arena and gives back (`MADV_DONTNEED`) each whole free page,
//! wherever it lies. At 400 bots with 5,000 NPCs, trimming takes ~5 KiB of RSS a client away
//! (BENCHMARKS.md, "Issue 21: the heap handed back"), for ~0.5-1 ms of one blocking thread's
//! time a trim.
//!
//! Elsewhere (musl, as in the container image, or another OS) there is no such call; musl's
//! allocator gives freed memory back by itself, and [`trim`] does nothing.

use crate::metrics::resident_bytes;
use crate::stats::Stats;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Whether [`trim`] can give memory back on this build.
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// What one trim did.
#[derive(Clone, Copy, Debug)]
pub struct Trimmed {
    /// Wall time of the call.
    pub took: Duration,
    /// How much the resident set fell across the call (other threads keep allocating meanwhile,
    /// so this is an estimate; 0 where it rose or cannot be read).
    pub released: u64,
}

/// Gives every arena's free pages back to the kernel. Blocks for as long as the walk takes
/// (each arena is locked in turn, so a thread allocating in it waits): run it off the tick
/// thread and the runtime's workers.
pub fn trim() -> Trimmed {
    let before = resident_bytes();
    let start = Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and only walks the allocator's own state, under
    // the allocator's locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    let took = start.elapsed();
    let released = match (before, resident_bytes()) {
        (Some(b), Some(a)) => b.saturating_sub(a),
        _ => 0,
    };
    Trimmed { took, released }
}

/// Limits glibc's malloc to `arenas` arenas (`M_ARENA_MAX`), `0` meaning one per CPU. Call
/// it before the process makes its threads: a thread takes an arena at its first allocation.
/// Returns the limit set, or `None` where there is no such call (no glibc).
///
/// glibc makes up to eight arenas per CPU, one per thread that allocates while the others'
/// are locked. The server's threads (the runtime's workers, the tick, the replication workers,
/// the blocking pool) then each keep connections' blocks in their own arena, with free space
/// between them that a trim gives back only by whole pages. On two CPUs, one arena per CPU
/// held 98-104 KiB of RSS a client at 1,000 players against 110-121, and 68-71 against 71-72
/// at 400; a single arena held 64-66 at 400 but at 1,000, on saturated cores, its one lock
/// stalled the network threads (the server's UDP queue overflowed): BENCHMARKS.md, "the heap
/// handed back".
pub fn limit_arenas(arenas: usize) -> Option<usize> {
    let n = if arenas == 0 {
        std::thread::available_parallelism().map_or(1, |c| c.get())
    } else {
        arenas
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        // SAFETY: `mallopt` takes two integers and changes only the allocator's settings, under
        // its own lock.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, n) } == 1 {
            return usize::try_from(n).ok();
        }
        None
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = n;
        None
    }
}

/// The most of one thread's time trimming may take: after a trim that took `t`, the next waits
/// at least `t / TRIM_SHARE`. A trim walks every arena holding its lock, so its time grows with
/// the heap (~0.5-1 ms at 400 players, 3-25 ms at 1,000 on two saturated cores), and while it
/// holds an arena a thread allocating there waits: at 1,000 players a trim every second cost
/// the tick's workers about a hertz of snapshots (BENCHMARKS.md, "the heap handed back").
pub const TRIM_SHARE: f64 = 0.001;

/// When the next trim is due: `interval` after this one, or later if this one took more than
/// [`TRIM_SHARE`] of that.
pub fn next_trim_after(interval: Duration, took: Duration) -> Duration {
    interval.max(took.div_f64(TRIM_SHARE))
}

/// Trims every `interval` (or less often, [`next_trim_after`]) on the runtime's blocking pool
/// until `shutdown`, counting each trim and what it released in `stats`, and keeping the last
/// one's time. Does nothing where [`SUPPORTED`] is false.
pub async fn trim_periodically(interval: Duration, stats: Arc<Stats>, shutdown: CancellationToken) {
    if !SUPPORTED || interval.is_zero() {
        debug!("heap trimming off on this build or by --memory-trim-interval 0");
        return;
    }
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Ok(done) = tokio::task::spawn_blocking(trim).await else {
            return;
        };
        Stats::add(&stats.memory_trims, 1);
        Stats::add(&stats.memory_trim_released_bytes, done.released);
        stats.memory_trim_last_us.store(
            done.took.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        wait = next_trim_after(interval, done.took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_limited_to_one_per_cpu_by_default_on_glibc() {
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        // The limit only stops new arenas: the other tests' threads keep theirs.
        let set = limit_arenas(0);
        if SUPPORTED {
            assert_eq!(set, Some(cpus));
            assert_eq!(limit_arenas(64), Some(64));
        } else {
            assert_eq!(set, None);
        }
    }

    #[test]
    fn a_slow_trim_delays_the_next_to_keep_its_share_of_a_thread() {
        let second = Duration::from_secs(1);
        assert_eq!(next_trim_after(second, Duration::from_micros(500)), second);
        assert_eq!(next_trim_after(second, Duration::from_millis(1)), second);
        assert_eq!(
            next_trim_after(second, Duration::from_millis(20)),
            Duration::from_secs(20)
        );
        assert_eq!(
            next_trim_after(Duration::from_secs(60), Duration::from_millis(20)),
            Duration::from_secs(60)
        );
    }

    /// Frees 64 MiB of small blocks below one that stays, so `free` alone cannot shrink the
    /// arena's top: the pages stay resident until a trim gives them back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_gives_back_what_was_freed_in_the_middle_of_an_arena() {
        const BLOCK: usize = 4096;
        const BLOCKS: usize = 16 * 1024; // 64 MiB, each block well under the mmap threshold
        let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            blocks.push(vec![i as u8 | 1; BLOCK]); // written, so resident
        }
        // The last block stays: it lies against the arena's top, so what is freed below it is
        // not given back by `free` itself.
        let pin = blocks.pop();
        drop(blocks);
        let before = resident_bytes().expect("VmRSS");
        let done = trim();
        let after = resident_bytes().expect("VmRSS");
        assert!(
            before.saturating_sub(after) >= 32 << 20,
            "a trim released {} KiB of 64 MiB freed (RSS {} -> {} KiB, {:?})",
            done.released >> 10,
            before >> 10,
            after >> 10,
            done.took,
        );
        assert!(done.released >= 32 << 20, "{done:?}");
        drop(pin);
    }
}
