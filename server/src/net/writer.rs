//! The writer of one session's reliable stream: its own task, fed through one byte buffer
//! bounded by `--max-send-backlog`, so the session loop never waits on a slow reader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arena_shared::protocol::ServerMsg;
use arena_shared::protocol::codec;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use wtransport::SendStream;

use super::limits::{Backlog, Delivery, judge_frame};
use crate::stats::Stats;

/// How long a refused or disconnected client gets to read the reason before the close, and
/// how long the writer may take to flush at the end.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// Bytes of a written batch's allocation the writer keeps for the next one. The frames of a
/// session in play (events, pongs, answers) are a few dozen bytes; the welcome, which carries
/// the map, is ~800, and a batch that held it would otherwise keep that room (and, swapped
/// with the queue, so would the queue) for the whole session.
const KEEP_BATCH_BYTES: usize = 256;

/// Empties a batch QUIC has taken; gives its allocation back when it is over
/// [`KEEP_BATCH_BYTES`].
fn written_out(batch: &mut Vec<u8>) {
    if batch.capacity() > KEEP_BATCH_BYTES {
        *batch = Vec::new();
    } else {
        batch.clear();
    }
}

/// Writes frames to the client's stream from its own task, so the session loop never waits on
/// a slow reader. What it holds is bounded in bytes, by `--max-send-backlog`, and by nothing
/// else: frames are appended to one buffer, which the task hands to QUIC whole (whose own share
/// is bounded by the stream's flow-control window and [`super::STREAM_WINDOW`] of send
/// buffer). A count of frames would be a second, hidden bound: answers to a burst of small
/// requests would hit it long before the bytes they take mattered, and end a session that
/// reads promptly. See [`judge_frame`] for which frames may be left out.
pub(super) struct Writer {
    pending: Arc<Pending>,
    task: JoinHandle<()>,
    max_backlog: usize,
    /// Best-effort frames (pongs) left out because the backlog was over their share.
    dropped: u64,
    stats: Arc<Stats>,
}

/// Bytes waiting for the client's stream, shared by the session (which appends whole frames)
/// and the writer task (which takes them all at once).
#[derive(Debug, Default)]
struct Pending {
    state: Mutex<Queued>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Queued {
    /// Frames not yet taken by the writer task. Its capacity never exceeds the cap: frames
    /// are admitted against the whole backlog first.
    bytes: Vec<u8>,
    /// Bytes the writer task took and QUIC has not accepted yet.
    writing: usize,
    /// No more frames will come: write what is queued, then finish the stream.
    finished: bool,
    /// The stream failed; nothing more will be written.
    failed: bool,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Writer {
    pub(super) fn spawn(mut send: SendStream, stats: Arc<Stats>, max_backlog: usize) -> Self {
        let pending = Arc::new(Pending::default());
        let shared = pending.clone();
        let task_stats = stats.clone();
        stats.writer_started();
        let task = tokio::spawn(async move {
            // Counted down however the task ends: done, failed or aborted.
            let _alive = WriterAlive(task_stats.clone());
            // The batch being written; swapped with the queue, so the two allocations are
            // reused and neither outgrows the cap.
            let mut batch = Vec::new();
            loop {
                let finished = {
                    let mut q = shared.lock();
                    std::mem::swap(&mut q.bytes, &mut batch);
                    q.writing = batch.len();
                    q.finished
                };
                if batch.is_empty() {
                    if finished {
                        break;
                    }
                    // A notification sent since the queue was looked at is kept as a permit.
                    shared.wake.notified().await;
                    continue;
                }
                let written = send.write_all(&batch).await;
                let failed = written.is_err();
                {
                    let mut q = shared.lock();
                    q.writing = 0;
                    q.failed = failed;
                }
                if failed {
                    return;
                }
                Stats::add(&task_stats.stream_bytes_sent, batch.len() as u64);
                written_out(&mut batch);
            }
            let _ = send.finish().await;
        });
        Self {
            pending,
            task,
            max_backlog,
            dropped: 0,
            stats,
        }
    }

    /// Queues a message the client must get. `Err` when the client has let more than
    /// `--max-send-backlog` pile up (it is not reading its stream), or the stream is gone.
    pub(super) fn send(&mut self, msg: &ServerMsg) -> Result<(), Backlogged> {
        self.offer(msg, Delivery::Required)
    }

    /// Queues a pong if the backlog leaves room for one; otherwise it is left out and counted.
    pub(super) fn send_best_effort(&mut self, msg: &ServerMsg) {
        // A best-effort frame never overflows (see `judge_frame`).
        let _ = self.offer(msg, Delivery::BestEffort);
    }

    fn offer(&mut self, msg: &ServerMsg, delivery: Delivery) -> Result<(), Backlogged> {
        let mut frame = Vec::new();
        if codec::encode_server(msg, &mut frame).is_err() {
            warn!("server message over the frame limit was not sent");
            return Ok(());
        }
        let mut q = self.pending.lock();
        if q.failed {
            return Err(Backlogged);
        }
        match judge_frame(
            q.bytes.len() + q.writing,
            frame.len(),
            self.max_backlog,
            delivery,
        ) {
            Backlog::Queue => {}
            Backlog::Drop => {
                self.dropped += 1;
                Stats::add(&self.stats.pongs_dropped, 1);
                return Ok(());
            }
            Backlog::Overflow => return Err(Backlogged),
        }
        // Admitted bytes fit under the cap: grow as a Vec does, but stop at the cap.
        let need = q.bytes.len() + frame.len();
        if need > q.bytes.capacity() {
            let grown = (2 * q.bytes.capacity()).clamp(need, self.max_backlog.max(need));
            let len = q.bytes.len();
            q.bytes.reserve_exact(grown - len);
        }
        q.bytes.extend_from_slice(&frame);
        drop(q);
        self.pending.wake.notify_one();
        Ok(())
    }

    /// Bytes queued that the writer task has not taken yet.
    pub(super) fn queued(&self) -> usize {
        self.pending.lock().bytes.len()
    }

    /// Flushes what is queued and finishes the stream, waiting at most `LINGER`.
    pub(super) async fn finish(mut self) {
        self.pending.lock().finished = true;
        self.pending.wake.notify_one();
        let _ = tokio::time::timeout(LINGER, &mut self.task).await;
    }
}

/// Counts a writer task down when the task's future is dropped.
struct WriterAlive(Arc<Stats>);

impl Drop for WriterAlive {
    fn drop(&mut self) {
        self.0.writer_ended();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Every session that ends on purpose has `finish`ed the stream (its task is done or
        // past `LINGER`); one dropped without it ended because its connection did. Either way
        // nothing more is worth writing, and a task left waiting for frames would hold the
        // stream, and through it the connection's whole QUIC state (~24 KiB), for the
        // server's life.
        self.task.abort();
        if self.dropped > 0 {
            info!(
                pongs_dropped = self.dropped,
                "pongs left out: the reliable stream was backed up"
            );
        }
    }
}

/// The client's reliable stream is backed up past `--max-send-backlog`.
#[derive(Debug)]
pub(super) struct Backlogged;

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn a_written_batch_keeps_a_small_allocation_and_gives_back_a_large_one() {
        let mut small = Vec::with_capacity(100);
        small.extend_from_slice(&[1; 100]);
        written_out(&mut small);
        assert!(small.is_empty());
        assert_eq!(small.capacity(), 100, "a small batch's room is reused");

        let mut welcome = vec![2u8; 794];
        written_out(&mut welcome);
        assert!(welcome.is_empty());
        assert!(
            welcome.capacity() <= KEEP_BATCH_BYTES,
            "a large batch's room is given back, not kept for the session: {}",
            welcome.capacity()
        );
    }
}
