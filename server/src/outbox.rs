//! A session's outbox: snapshots the simulation has built and game events it raised, which the
//! session task has not yet sent. Both bounded; when full the oldest snapshot is dropped (a
//! newer one supersedes it), and events beyond `--event-queue` are dropped and counted (the
//! client is not reading; the reliable stream's backlog limit ends it soon after), so a slow
//! client costs the server a fixed amount of memory and the simulation never waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use arena_shared::protocol::GameEvent;
use tokio::sync::Notify;

/// One tick's snapshot for one client: the datagrams to send, in order.
pub type SnapshotDatagrams = Arc<Vec<Vec<u8>>>;

/// Pending events per session when no `--event-queue` is given.
pub use crate::config::DEFAULT_EVENT_CAPACITY;

#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<SnapshotDatagrams>>,
    capacity: usize,
    events: Mutex<Vec<GameEvent>>,
    event_capacity: usize,
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
            events: Mutex::new(Vec::new()),
            event_capacity: DEFAULT_EVENT_CAPACITY,
            notify: Notify::new(),
            max_datagram: AtomicUsize::new(max_datagram),
            acked: AtomicU32::new(0),
        }
    }

    /// The same outbox holding at most `events` pending game events.
    pub fn with_event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events.max(1);
        self
    }

    /// Queues a game event for the reliable stream; `false` (and nothing queued) when
    /// `--event-queue` events are waiting already.
    pub fn push_event(&self, event: GameEvent) -> bool {
        {
            let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.event_capacity {
                return false;
            }
            q.push(event);
        }
        self.notify.notify_one();
        true
    }

    /// Takes the pending events into `out` (cleared first), oldest first.
    pub fn drain_events(&self, out: &mut Vec<GameEvent>) {
        out.clear();
        std::mem::swap(
            &mut *self.events.lock().unwrap_or_else(|e| e.into_inner()),
            out,
        );
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

    #[test]
    fn events_are_bounded_and_drained_in_order() {
        use arena_shared::protocol::GameEvent;
        let o = Outbox::new(2, 1200).with_event_capacity(2);
        let ev = |kills| GameEvent::Score { kills, deaths: 0 };
        assert!(o.push_event(ev(1)) && o.push_event(ev(2)));
        assert!(!o.push_event(ev(3)), "over the bound: refused");
        let mut out = vec![ev(9)];
        o.drain_events(&mut out);
        assert_eq!(out, [ev(1), ev(2)]);
        o.drain_events(&mut out);
        assert!(out.is_empty());
        assert!(o.push_event(ev(4)), "room again");
    }
}
