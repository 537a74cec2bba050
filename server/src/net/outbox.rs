//! A session's outbox: snapshots the simulation has built and the session task has not yet
//! sent. Bounded; when full the oldest snapshot is dropped (a newer one supersedes it), so a
//! slow client costs the server a fixed amount of memory and the simulation never waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// One tick's snapshot for one client: the datagrams to send, in order.
pub type SnapshotDatagrams = Arc<Vec<Vec<u8>>>;

#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<SnapshotDatagrams>>,
    capacity: usize,
    notify: Notify,
    /// The connection's current maximum datagram size, kept fresh by the session task so the
    /// simulation sizes snapshots for this path.
    max_datagram: AtomicUsize,
    /// Newest snapshot tick the client acknowledged (0: none yet).
    acked: AtomicU32,
}

impl Outbox {
    pub fn new(capacity: usize, max_datagram: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            capacity: capacity.max(1),
            notify: Notify::new(),
            max_datagram: AtomicUsize::new(max_datagram),
            acked: AtomicU32::new(0),
        }
    }

    /// Queues a snapshot; returns how many older snapshots were dropped to make room.
    pub fn push(&self, snapshot: SnapshotDatagrams) -> usize {
        let mut dropped = 0;
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            while q.len() >= self.capacity {
                q.pop_front();
                dropped += 1;
            }
            q.push_back(snapshot);
        }
        self.notify.notify_one();
        dropped
    }

    /// Takes everything queued, oldest first.
    pub fn drain(&self) -> Vec<SnapshotDatagrams> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Resolves when something was pushed since the last drain (or is still queued).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    pub fn max_datagram(&self) -> usize {
        self.max_datagram.load(Ordering::Relaxed)
    }

    pub fn set_max_datagram(&self, size: usize) {
        self.max_datagram.store(size, Ordering::Relaxed);
    }

    /// Records an acknowledgement (the newest wins; acks can arrive out of order).
    pub fn record_ack(&self, tick: u32) {
        self.acked.fetch_max(tick, Ordering::Relaxed);
    }

    pub fn acked(&self) -> Option<u32> {
        match self.acked.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(tag: u8) -> SnapshotDatagrams {
        Arc::new(vec![vec![tag]])
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let o = Outbox::new(2, 1200);
        assert_eq!(o.push(snap(1)), 0);
        assert_eq!(o.push(snap(2)), 0);
        assert_eq!(o.push(snap(3)), 1);
        let got: Vec<u8> = o.drain().iter().map(|s| s[0][0]).collect();
        assert_eq!(got, vec![2, 3]);
        assert!(o.drain().is_empty());
    }

    #[tokio::test]
    async fn ready_fires_for_a_push_made_before_waiting() {
        let o = Outbox::new(2, 1200);
        o.push(snap(1));
        let ready = tokio::time::timeout(std::time::Duration::from_secs(5), o.ready()).await;
        assert!(ready.is_ok(), "the permit from notify_one is kept");
    }
}
