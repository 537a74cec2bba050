//! A session's outbox: snapshots the simulation has built and game events it raised, which the
//! session task has not yet sent. Both bounded; when full the oldest snapshot is dropped (a
//! newer one supersedes it), and events beyond `--event-queue` are dropped and counted (the
//! client is not reading; the reliable stream's backlog limit ends it soon after), so a slow
//! client costs the server a fixed amount of memory and the simulation never waits.
//!
//! Once the session plays it attaches a [`DatagramSink`]: a client's own snapshot then goes to
//! its connection from the task the simulation posts each tick's snapshots to
//! ([`Outbox::deliver`], `replication::post`), and the session's task is not woken for it (it
//! was, ~30 times a second a client, only to pass the bytes on). QUIC bounds the datagrams it
//! holds and drops the oldest, as the queue does. What the sink cannot take for a reason the
//! session must act on (the connection is lost, the peer refuses datagrams) is queued as
//! before, and the session sees the error when it sends it.
//!
//! It also holds the newest ping the client asked to have answered in a snapshot
//! ([`Outbox::ping`]): the replication worker that builds the client's next snapshot takes
//! it, with how long it waited ([`Outbox::take_pong`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use arena_shared::protocol::{GameEvent, SnapshotPong};
use tokio::sync::Notify;

/// One tick's snapshot for one client: the datagrams to send, in order.
pub type SnapshotDatagrams = Arc<Vec<Vec<u8>>>;

/// Pending events per session when no `--event-queue` is given.
pub use crate::config::DEFAULT_EVENT_CAPACITY;

/// A client's connection as replication sends to it (see the module's comment).
pub trait DatagramSink: Send + Sync + std::fmt::Debug {
    /// Hands one datagram to the transport.
    fn send(&self, datagram: &[u8]) -> Result<(), SinkError>;
    /// The path's largest datagram now, if the connection knows it.
    fn max_datagram(&self) -> Option<usize>;
}

/// Why a [`DatagramSink`] did not take a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkError {
    /// Larger than the path takes now (it shrank under a snapshot built for the old size): the
    /// snapshot is dropped, and the next one is built for the new size.
    TooLarge,
    /// The session must act (the connection is lost, or the peer refuses datagrams).
    Session,
}

/// What [`Outbox::deliver`] did with a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Datagrams and bytes handed to the transport now (none when queued).
    pub datagrams: usize,
    pub bytes: usize,
    /// Queued snapshots dropped to make room for it.
    pub dropped: usize,
}

/// [`Outbox::max_datagram`] asks the attached sink once in this many calls.
pub const MAX_DATAGRAM_ASK_EVERY: u32 = 32;

#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<SnapshotDatagrams>>,
    capacity: usize,
    events: Mutex<Vec<GameEvent>>,
    event_capacity: usize,
    notify: Notify,
    /// The connection's current maximum datagram size, kept fresh by the session task so the
    /// simulation sizes snapshots for this path; once a sink is attached, the sink's last
    /// answer ([`Self::max_datagram`]).
    max_datagram: AtomicUsize,
    /// Calls of [`Self::max_datagram`] since the sink was last asked (0: ask at the next).
    max_asks: AtomicU32,
    /// Newest snapshot tick the client acknowledged (0: none yet).
    acked: AtomicU32,
    /// Set by the session once it plays: where [`Self::deliver`] sends.
    sink: OnceLock<Box<dyn DatagramSink>>,
    /// The newest ping to answer in a snapshot, and when it was read (microseconds on
    /// `clock`). Only the newest: a client that floods pings holds one.
    ping: Mutex<Option<(u32, u64)>>,
    /// Set after a ping is stored: every build asks, and only one in ~8 finds one, so the
    /// others take no lock.
    ping_waiting: AtomicBool,
    clock: Clock,
}

/// Where an outbox reads the time a ping waited.
#[derive(Debug)]
enum Clock {
    /// Real time, counted from the outbox's making.
    Real(Instant),
    /// A harness's virtual clock, in microseconds (`game::virtual_play`).
    Virtual(Arc<AtomicU64>),
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
            max_asks: AtomicU32::new(0),
            acked: AtomicU32::new(0),
            sink: OnceLock::new(),
            ping: Mutex::new(None),
            ping_waiting: AtomicBool::new(false),
            clock: Clock::Real(Instant::now()),
        }
    }

    /// The same outbox measuring how long a ping waits on `clock` (microseconds), not in
    /// real time.
    pub fn with_clock(mut self, clock: Arc<AtomicU64>) -> Self {
        self.clock = Clock::Virtual(clock);
        self
    }

    fn now_us(&self) -> u64 {
        match &self.clock {
            Clock::Real(epoch) => u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX),
            Clock::Virtual(us) => us.load(Ordering::Relaxed),
        }
    }

    /// A ping to answer in the client's next snapshot, read now. It replaces one still
    /// waiting (that one goes unanswered, as if lost: the client pings again).
    pub fn ping(&self, nonce: u32) {
        let now = self.now_us();
        *self.ping.lock().unwrap_or_else(|e| e.into_inner()) = Some((nonce, now));
        self.ping_waiting.store(true, Ordering::Release);
    }

    /// The answer to the waiting ping, if any, for a snapshot built now: its nonce and how
    /// long it waited. Taken once.
    pub fn take_pong(&self) -> Option<SnapshotPong> {
        // A plain load first: most builds find nothing. A ping stored after the flag is
        // cleared sets it again, and is taken now or at the next build.
        if !self.ping_waiting.load(Ordering::Relaxed)
            || !self.ping_waiting.swap(false, Ordering::Acquire)
        {
            return None;
        }
        let (nonce, at) = self.ping.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let held = self.now_us().saturating_sub(at);
        Some(SnapshotPong {
            nonce,
            held_us: u32::try_from(held).unwrap_or(u32::MAX),
        })
    }

    /// From now on [`Self::deliver`] sends through `sink` (once: a later call is ignored).
    pub fn attach(&self, sink: Box<dyn DatagramSink>) {
        let _ = self.sink.set(sink);
    }

    /// One tick's snapshot, a single datagram: sent at once through the attached sink, else
    /// (none attached, or it says the session must act) queued as [`Self::push`] does.
    pub fn deliver(&self, datagram: Vec<u8>) -> Delivered {
        if let Some(sink) = self.sink.get() {
            match sink.send(&datagram) {
                Ok(()) => {
                    return Delivered {
                        datagrams: 1,
                        bytes: datagram.len(),
                        dropped: 0,
                    };
                }
                Err(SinkError::TooLarge) => {
                    // The path shrank: its size is asked again before the next snapshot.
                    self.max_asks.store(0, Ordering::Relaxed);
                    return Delivered::default();
                }
                Err(SinkError::Session) => {}
            }
        }
        Delivered {
            dropped: self.push(Arc::new(vec![datagram])),
            ..Delivered::default()
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

    /// The path's largest datagram: the attached sink's word when it has one, else the last
    /// the session set. The sink is asked once in [`MAX_DATAGRAM_ASK_EVERY`] calls (a call a
    /// tick: about a second) and at the first call after it refused a datagram as too large;
    /// in between, its last answer is kept. Asking takes the connection's lock, which its
    /// driver holds while it handles packets; the path's size grows by MTU discovery now and
    /// then and shrinks rarely, and a shrink is seen at the next snapshot either way.
    pub fn max_datagram(&self) -> usize {
        if let Some(sink) = self.sink.get()
            && self
                .max_asks
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(MAX_DATAGRAM_ASK_EVERY)
            && let Some(max) = sink.max_datagram()
        {
            self.max_datagram.store(max, Ordering::Relaxed);
        }
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
    fn the_newest_ping_is_answered_once_with_how_long_it_waited() {
        let clock = Arc::new(AtomicU64::new(1_000));
        let o = Outbox::new(2, 1200).with_clock(clock.clone());
        assert_eq!(o.take_pong(), None, "no ping, no answer");
        o.ping(7);
        clock.store(1_500, Ordering::Relaxed);
        o.ping(8);
        clock.store(21_500, Ordering::Relaxed);
        assert_eq!(
            o.take_pong(),
            Some(SnapshotPong {
                nonce: 8,
                held_us: 20_000
            }),
            "the newest, held from when it was read"
        );
        assert_eq!(o.take_pong(), None, "answered once");
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

    /// A connection as a sink: what it took, what it answers next, its path's size and how
    /// often it was asked.
    #[derive(Debug, Default)]
    struct Path {
        taken: Mutex<Vec<Vec<u8>>>,
        refuse: Mutex<Option<SinkError>>,
        max: Mutex<Option<usize>>,
        asked: AtomicU32,
    }

    impl DatagramSink for Arc<Path> {
        fn send(&self, datagram: &[u8]) -> Result<(), SinkError> {
            match *self.refuse.lock().unwrap() {
                Some(e) => Err(e),
                None => {
                    self.taken.lock().unwrap().push(datagram.to_vec());
                    Ok(())
                }
            }
        }

        fn max_datagram(&self) -> Option<usize> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            *self.max.lock().unwrap()
        }
    }

    /// Whether the session's wait would end now: one poll of [`Outbox::ready`], which takes
    /// the stored wake-up if there is one.
    fn woken(o: &Outbox) -> bool {
        let ready = std::pin::pin!(o.ready());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        ready.poll(&mut cx).is_ready()
    }

    #[test]
    fn an_attached_sink_takes_snapshots_without_the_session_and_hands_back_what_it_must_see() {
        let o = Outbox::new(2, 1200);
        // Before the session plays: queued, and the session is woken.
        assert_eq!(o.deliver(vec![1]), Delivered::default());
        let path = Arc::new(Path {
            max: Mutex::new(Some(1100)),
            ..Path::default()
        });
        o.attach(Box::new(path.clone()));
        assert_eq!(o.max_datagram(), 1100, "the path's size, from the sink");
        let got: Vec<u8> = o.drain().iter().map(|s| s[0][0]).collect();
        assert_eq!(got, [1]);
        assert!(woken(&o), "the queued snapshot woke the session");
        // Playing: straight to the connection; nothing queued, nobody woken.
        let sent = o.deliver(vec![2, 2]);
        assert_eq!((sent.datagrams, sent.bytes, sent.dropped), (1, 2, 0));
        assert_eq!(*path.taken.lock().unwrap(), [vec![2, 2]]);
        assert!(o.drain().is_empty());
        assert!(!woken(&o), "the session is not woken for a snapshot sent");
        // Too large for the path now: dropped, the next one is built for the new size.
        *path.refuse.lock().unwrap() = Some(SinkError::TooLarge);
        assert_eq!(o.deliver(vec![3]), Delivered::default());
        assert!(o.drain().is_empty());
        // The session must act (lost, refused): queued for it, bounded as ever.
        *path.refuse.lock().unwrap() = Some(SinkError::Session);
        for tag in 4..=6 {
            o.deliver(vec![tag]);
        }
        let got: Vec<u8> = o.drain().iter().map(|s| s[0][0]).collect();
        assert_eq!(got, [5, 6]);
        assert_eq!(path.taken.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_path_size_is_asked_once_a_second_of_ticks_and_after_a_datagram_too_large() {
        let o = Outbox::new(2, 1200);
        assert_eq!(o.max_datagram(), 1200, "no sink: the session's word");
        let path = Arc::new(Path {
            max: Mutex::new(Some(1100)),
            ..Path::default()
        });
        o.attach(Box::new(path.clone()));
        assert_eq!(o.max_datagram(), 1100, "asked at once");
        // It grew (MTU discovery): seen within MAX_DATAGRAM_ASK_EVERY calls, and the sink is
        // asked once in as many.
        *path.max.lock().unwrap() = Some(1400);
        let every = MAX_DATAGRAM_ASK_EVERY as usize;
        let sizes: Vec<usize> = (0..every).map(|_| o.max_datagram()).collect();
        assert_eq!(sizes[..every - 1], vec![1100; every - 1]);
        assert_eq!(sizes[every - 1], 1400);
        assert_eq!(path.asked.load(Ordering::Relaxed), 2);
        // It shrank under a snapshot: the next call asks.
        *path.max.lock().unwrap() = Some(900);
        *path.refuse.lock().unwrap() = Some(SinkError::TooLarge);
        assert_eq!(o.deliver(vec![0; 1000]), Delivered::default());
        assert_eq!(o.max_datagram(), 900, "asked again after the refusal");
        assert_eq!(path.asked.load(Ordering::Relaxed), 3);
        // A peer that stops saying (datagrams refused): the last size stands.
        *path.max.lock().unwrap() = None;
        *path.refuse.lock().unwrap() = Some(SinkError::TooLarge);
        o.deliver(vec![0; 1000]);
        assert_eq!(o.max_datagram(), 900);
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
