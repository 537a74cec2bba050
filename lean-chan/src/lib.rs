//! Multi-producer, single-consumer channels that hold nothing but a small shared state until a
//! value waits in them.
//!
//! A server keeps a few channels per QUIC connection for its whole life: quinn's endpoint hands
//! each connection its datagrams through one, wtransport's driver hands its session the peer's
//! settings, the session and its streams through seven more. `tokio::sync::mpsc` allocates a
//! channel's first block of 32 slots, and a cache-padded shared state (128-byte aligned), when
//! the channel is made: ~800 bytes a bounded channel and ~3 KiB for quinn's unbounded one
//! (which keeps a second block once it has wrapped), ~9 KiB a connection in all, for channels
//! that carry a handful of values in a session's life (BENCHMARKS.md, "Issue 21: the
//! transport's channels made lean"). Here a channel is one allocation of ~120 bytes: a mutex
//! over a `VecDeque` that grows to what waits in it, and is let go again once it empties after
//! holding more than [`KEEP_BYTES`].
//!
//! The API is the part of tokio's that those crates use, with the same meaning:
//! - [`channel`]`(capacity)`: a bounded channel. [`Sender::send`] waits for room;
//!   [`Sender::try_send`] does not; [`Sender::reserve_owned`] waits for room and returns an
//!   [`OwnedPermit`], which holds one slot until it sends or is dropped. Room is counted as
//!   values queued plus permits held, never more than the capacity.
//! - [`unbounded_channel`]: [`UnboundedSender::send`] never waits.
//! - [`Receiver::recv`] / [`Receiver::poll_recv`] (and the unbounded ones) take values in the
//!   order they were sent; `None` once every sender (permits included) is gone and the queue
//!   is empty. Dropping the receiver fails every later send and drops what was queued.
//!
//! Every future here is cancel safe: a `recv` dropped before it completes loses no value, a
//! `reserve_owned` or `send` dropped while waiting holds no slot. Wakers are called outside the
//! lock. The lock is a `std::sync::Mutex` held for a few instructions, never across an await.
//!
//! What it does not do: tokio's fairness among waiting senders (here every waiting sender is
//! woken when room appears, and the first to come takes it), cooperative budgeting, or
//! `loom` checking. Its users have at most a few senders a channel.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A queue's buffer is let go when it empties while holding more than this many bytes of
/// slots; a smaller one is kept for the next value (no allocation per value on a busy
/// channel that rarely holds more than a few).
pub const KEEP_BYTES: usize = 256;

/// The receiver is gone: the value comes back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Why [`Sender::try_send`] did not queue its value, which comes back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// As many values queued and permits held as the capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Closed(_) => "Closed(..)",
        })
    }
}

struct State<T> {
    queue: VecDeque<T>,
    /// Slots held by permits (bounded channels): `queue.len() + reserved <= capacity`.
    reserved: usize,
    capacity: usize,
    /// Senders alive, permits included (a permit holds its sender).
    senders: usize,
    receiver_alive: bool,
    receiver_waker: Option<Waker>,
    /// Tasks waiting for room, each once (`Waker::will_wake`); all are woken when room appears.
    room_waiters: Vec<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                reserved: 0,
                capacity,
                senders: 1,
                receiver_alive: true,
                receiver_waker: None,
                room_waiters: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock is held leaves the state consistent (every critical section
        // is a few field updates), so a poisoned lock is taken as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one slot, or registers `cx` to be woken when one frees.
    fn poll_reserve(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let mut s = self.lock();
        if !s.receiver_alive {
            return Poll::Ready(Err(()));
        }
        if s.queue.len() + s.reserved < s.capacity {
            s.reserved += 1;
            return Poll::Ready(Ok(()));
        }
        if !s.room_waiters.iter().any(|w| w.will_wake(cx.waker())) {
            s.room_waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Queues `value` in a slot taken by [`Self::poll_reserve`] (dropped if the receiver went).
    fn push_reserved(&self, value: T) {
        let mut s = self.lock();
        s.reserved -= 1;
        if !s.receiver_alive {
            drop(s);
            drop(value);
            return;
        }
        s.queue.push_back(value);
        let waker = s.receiver_waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Gives back a slot taken by [`Self::poll_reserve`] and never used.
    fn release_reserved(&self) {
        let mut s = self.lock();
        s.reserved -= 1;
        let waiters = std::mem::take(&mut s.room_waiters);
        drop(s);
        waiters.into_iter().for_each(Waker::wake);
    }

    fn try_push(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut s = self.lock();
        if !s.receiver_alive {
            return Err(TrySendError::Closed(value));
        }
        if s.queue.len() + s.reserved >= s.capacity {
            return Err(TrySendError::Full(value));
        }
        s.queue.push_back(value);
        let waker = s.receiver_waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.lock();
        if let Some(value) = s.queue.pop_front() {
            if s.queue.is_empty() && s.queue.capacity() * size_of::<T>() > KEEP_BYTES {
                s.queue = VecDeque::new();
            }
            let waiters = std::mem::take(&mut s.room_waiters);
            drop(s);
            waiters.into_iter().for_each(Waker::wake);
            return Poll::Ready(Some(value));
        }
        if s.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut s.receiver_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn add_sender(&self) {
        self.lock().senders += 1;
    }

    fn drop_sender(&self) {
        let mut s = self.lock();
        s.senders -= 1;
        let waker = if s.senders == 0 {
            s.receiver_waker.take()
        } else {
            None
        };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn drop_receiver(&self) {
        let mut s = self.lock();
        s.receiver_alive = false;
        s.receiver_waker = None;
        let queued = std::mem::take(&mut s.queue);
        let waiters = std::mem::take(&mut s.room_waiters);
        drop(s);
        // Values' destructors and wakers run outside the lock.
        drop(queued);
        waiters.into_iter().for_each(Waker::wake);
    }

    fn is_closed(&self) -> bool {
        !self.lock().receiver_alive
    }

    fn room(&self) -> usize {
        let s = self.lock();
        s.capacity.saturating_sub(s.queue.len() + s.reserved)
    }

    fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn buffer_bytes(&self) -> usize {
        self.lock().queue.capacity() * size_of::<T>()
    }
}

/// A bounded channel of `capacity` slots (at least one).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "a bounded channel needs a slot");
    let shared = Shared::new(capacity);
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// A channel whose sends never wait.
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let shared = Shared::new(usize::MAX);
    (
        UnboundedSender(Sender {
            shared: shared.clone(),
        }),
        Receiver { shared },
    )
}

/// The sending side of a bounded [`channel`].
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Waits for room, then queues `value`; the value comes back if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        match poll_fn(|cx| self.shared.poll_reserve(cx)).await {
            // No await between taking the slot and filling it: a dropped `send` holds none.
            Ok(()) => {
                self.shared.push_reserved(value);
                Ok(())
            }
            Err(()) => Err(SendError(value)),
        }
    }

    /// Queues `value` if there is room now.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.shared.try_push(value)
    }

    /// Waits for room and holds one slot in the returned permit.
    pub async fn reserve_owned(self) -> Result<OwnedPermit<T>, SendError<()>> {
        match poll_fn(|cx| self.shared.poll_reserve(cx)).await {
            Ok(()) => Ok(OwnedPermit { sender: Some(self) }),
            Err(()) => Err(SendError(())),
        }
    }

    /// Free slots now: the capacity less the values queued and the permits held.
    pub fn capacity(&self) -> usize {
        self.shared.room()
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.add_sender();
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// One slot of a bounded channel, held until [`OwnedPermit::send`] fills it or the permit is
/// dropped.
pub struct OwnedPermit<T> {
    /// `None` only inside `send`, after the slot was filled.
    sender: Option<Sender<T>>,
}

impl<T> OwnedPermit<T> {
    /// Queues `value` in the held slot (dropped if the receiver is gone) and gives the sender
    /// back.
    pub fn send(mut self, value: T) -> Sender<T> {
        let sender = self
            .sender
            .take()
            .expect("a permit holds its sender until it sends");
        sender.shared.push_reserved(value);
        sender
    }
}

impl<T> Drop for OwnedPermit<T> {
    fn drop(&mut self) {
        if let Some(sender) = &self.sender {
            sender.shared.release_reserved();
        }
    }
}

impl<T> fmt::Debug for OwnedPermit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").finish_non_exhaustive()
    }
}

/// The receiving side of a [`channel`] or an [`unbounded_channel`].
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next value, or `None` once every sender is gone and nothing is queued.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.shared.poll_recv(cx)).await
    }

    /// [`Self::recv`] as a poll.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.shared.poll_recv(cx)
    }

    /// Values queued now.
    pub fn len(&self) -> usize {
        self.shared.queued()
    }

    /// Whether no value is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the queue's buffer now (what the channel holds beyond its fixed state).
    pub fn buffer_bytes(&self) -> usize {
        self.shared.buffer_bytes()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.drop_receiver();
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// The sending side of an [`unbounded_channel`]: a bounded channel's sender whose capacity is
/// never reached, so its sends need not wait.
pub struct UnboundedSender<T>(Sender<T>);

// By hand: a derive would ask `T: Clone`.
impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> UnboundedSender<T> {
    /// Queues `value`; it comes back if the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.try_send(value).map_err(|e| match e {
            TrySendError::Closed(v) | TrySendError::Full(v) => SendError(v),
        })
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedSender").finish_non_exhaustive()
    }
}

/// The receiving side of an [`unbounded_channel`]: the same as a bounded channel's.
pub type UnboundedReceiver<T> = Receiver<T>;

#[cfg(test)]
mod tests;
