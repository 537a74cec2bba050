//! A tick's snapshots handed to the network side in one batch, once the tick is done.
//!
//! Each snapshot used to go to its connection from the thread that built it
//! ([`crate::outbox::Outbox::deliver`]), and each hand-off woke that connection's driver. So
//! from the first client built, the runtime's workers were sending while the simulation thread
//! and its helpers were still building: on the 2-core machine they took the same cores, and
//! at 400 bots the `replicate` phase ran ~1.9x as long as it does now (BENCHMARKS.md, "Issue
//! 21: a tick's snapshots posted after the tick").
//!
//! Now the builders keep each snapshot on its [`super::Replica`]; once the tick's phases are
//! done, [`super::post_snapshots`] hands them all to one task on the runtime ([`SnapshotPost`]),
//! which gives each to its connection in the order they were built. The simulation wakes one
//! task a tick instead of a driver a client, and the sends follow the tick instead of
//! competing with it. A snapshot leaves later by what was left of the phase after it was
//! built: up to the phase's length for the first client, nothing for the last.
//!
//! Bounded: the post holds one batch waiting (the tick's) besides the one its task is
//! delivering. When a tick's batch arrives while the last one still waits (the runtime is more
//! than a tick behind), the waiting one is dropped: each of its snapshots is superseded by its
//! client's newer one, as a full outbox drops its oldest (`arena_snapshots_superseded_unsent_total`).
//! The simulation never waits for the network side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::outbox::Outbox;
use crate::stats::Stats;

/// One tick's snapshots: each client's outbox and its one datagram, in build order.
pub type Batch = Vec<(Arc<Outbox>, Vec<u8>)>;

/// The simulation's side: where a tick's batch is posted. Dropping it ends the task once the
/// batch it holds is delivered.
#[derive(Debug)]
pub struct SnapshotPost {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The newest batch not yet taken by the task.
    waiting: Mutex<Option<Batch>>,
    notify: Notify,
    closed: AtomicBool,
    stats: Arc<Stats>,
}

impl SnapshotPost {
    /// Starts the task that delivers posted batches on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle, stats: Arc<Stats>) -> Self {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(None),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            stats,
        });
        runtime.spawn(deliver_posted(shared.clone()));
        Self { shared }
    }

    /// Posts a tick's batch; returns how many snapshots of a batch still waiting it dropped.
    pub fn post(&self, batch: Batch) -> usize {
        let superseded = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(batch)
            .map_or(0, |old| old.len());
        self.shared.notify.notify_one();
        superseded
    }
}

impl Drop for SnapshotPost {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify.notify_one();
    }
}

/// The task: delivers each batch posted, until the post is dropped and nothing waits.
async fn deliver_posted(shared: Arc<Shared>) {
    loop {
        let batch = shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match batch {
            Some(batch) => deliver(batch, &shared.stats),
            None if shared.closed.load(Ordering::Acquire) => return,
            // `notify_one` keeps a permit when nobody waits: a post between the `take` and
            // this wait is not missed.
            None => shared.notify.notified().await,
        }
    }
}

/// Gives each snapshot of `batch` to its outbox, and counts what the outboxes did with them.
pub fn deliver(batch: Batch, stats: &Stats) {
    let (mut datagrams, mut bytes, mut dropped) = (0, 0, 0);
    for (outbox, datagram) in batch {
        let d = outbox.deliver(datagram);
        datagrams += d.datagrams;
        bytes += d.bytes;
        dropped += d.dropped;
    }
    Stats::add(&stats.datagrams_sent, datagrams as u64);
    Stats::add(&stats.datagram_bytes_sent, bytes as u64);
    Stats::add(&stats.snapshots_dropped_slow_consumer, dropped as u64);
}

#[cfg(test)]
impl SnapshotPost {
    /// The task's state, to see when the task let it go.
    fn shared_weak(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{DatagramSink, SinkError};

    /// A connection that keeps what it is given and says when.
    #[derive(Debug)]
    struct Conn(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

    impl DatagramSink for Conn {
        fn send(&self, datagram: &[u8]) -> Result<(), SinkError> {
            let _ = self.0.send(datagram.to_vec());
            Ok(())
        }
        fn max_datagram(&self) -> Option<usize> {
            Some(1200)
        }
    }

    fn client() -> (Arc<Outbox>, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox::new(4, 1200));
        outbox.attach(Box::new(Conn(tx)));
        (outbox, rx)
    }

    /// A runtime that runs nothing until the test drives it: what the task does between two
    /// posts is up to the test.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    }

    /// A post on a paused runtime, and the counters it keeps.
    fn paused_post() -> (tokio::runtime::Runtime, Arc<Stats>, SnapshotPost) {
        let rt = paused_runtime();
        let stats = Arc::new(Stats::default());
        let post = SnapshotPost::start(rt.handle(), stats.clone());
        (rt, stats, post)
    }

    #[test]
    fn each_snapshot_posted_reaches_its_connection_in_order_and_is_counted() {
        let (rt, stats, post) = paused_post();
        let (a, mut a_rx) = client();
        let (b, mut b_rx) = client();
        assert_eq!(
            post.post(vec![(a.clone(), vec![1; 10]), (b.clone(), vec![2; 20])]),
            0
        );
        rt.block_on(async {
            assert_eq!(a_rx.recv().await, Some(vec![1; 10]));
            assert_eq!(b_rx.recv().await, Some(vec![2; 20]));
        });
        // The next tick's, after the first was taken: delivered too, after it.
        assert_eq!(post.post(vec![(a.clone(), vec![3; 5])]), 0);
        rt.block_on(async { assert_eq!(a_rx.recv().await, Some(vec![3; 5])) });
        assert_eq!(Stats::get(&stats.datagrams_sent), 3);
        assert_eq!(Stats::get(&stats.datagram_bytes_sent), 35);
    }

    #[test]
    fn a_batch_still_waiting_when_the_next_comes_is_dropped_not_queued() {
        let (rt, stats, post) = paused_post();
        let (a, mut a_rx) = client();
        let (b, mut b_rx) = client();
        // The runtime is not running: the first tick's batch still waits when the second's
        // comes, and the third's when the fourth's does. At most one is held.
        assert_eq!(
            post.post(vec![(a.clone(), vec![1]), (b.clone(), vec![1])]),
            0
        );
        assert_eq!(
            post.post(vec![(a.clone(), vec![2]), (b.clone(), vec![2])]),
            2
        );
        assert_eq!(post.post(vec![(a.clone(), vec![3])]), 2);
        assert_eq!(
            post.post(vec![(a.clone(), vec![4]), (b.clone(), vec![4])]),
            1
        );
        rt.block_on(async {
            assert_eq!(a_rx.recv().await, Some(vec![4]));
            assert_eq!(b_rx.recv().await, Some(vec![4]));
        });
        assert!(a_rx.try_recv().is_err() && b_rx.try_recv().is_err());
        assert_eq!(Stats::get(&stats.datagrams_sent), 2);
    }

    #[test]
    fn dropping_the_post_delivers_what_waits_then_ends_the_task() {
        let rt = paused_runtime();
        let post = SnapshotPost::start(rt.handle(), Arc::new(Stats::default()));
        let task_state = post.shared_weak();
        let (a, mut a_rx) = client();
        post.post(vec![(a, vec![7])]);
        drop(post);
        rt.block_on(async {
            assert_eq!(a_rx.recv().await, Some(vec![7]));
            // The task lets its state go when it returns.
            while task_state.upgrade().is_some() {
                tokio::task::yield_now().await;
            }
        });
        assert!(task_state.upgrade().is_none());
    }
}
