//! A future polled again only when it woke its task itself.
//!
//! `tokio::select!` polls every branch each time its task wakes, whichever branch woke it, and
//! a branch written as a call (`token.cancelled()`) is a new future each turn of a loop: made,
//! polled, dropped. A session's loop wakes two or three times a tick (an input, an
//! acknowledgement, a game event), and its rare branches (the server shutting down, the
//! session superseded, a move) each took the lock of a waiter list on every turn to join it
//! and again to leave it; two of those lists (the shutdown token's and the moves' channel)
//! are shared by every session, so the network threads contended on them. `perf` of the
//! server at 400 bots put 29% of the session task's samples in `tokio::sync::Notify`'s
//! registrations and the cancellation token's lock (BENCHMARKS.md, "a session's rare
//! branches polled when woken").
//!
//! A [`WakeGate`] made once, before the loop, keeps its future (and the future's place in
//! those lists) across turns, hands it a waker of its own, and polls it only after that waker
//! fired; any other turn costs an atomic swap. It is how `FuturesUnordered` avoids polling
//! children that were not woken, for one future.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// A future (`fut`) polled only when it was woken, and the first time.
pub(super) struct WakeGate<F> {
    fut: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// `signal` as a waker: the one `fut` is polled with.
    inner: Waker,
    /// The task's waker last stored in `signal`, so that it is stored again (under the lock)
    /// only when the task's waker changes, which a tokio task's does not.
    outer: Option<Waker>,
}

/// Whether the gated future woke, and whom to wake when it does.
struct Signal {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let outer = self.outer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(w) = outer {
            w.wake();
        }
    }
}

impl<F: Future> WakeGate<F> {
    pub(super) fn new(fut: F) -> Self {
        let signal = Arc::new(Signal {
            // The first poll polls the future: nothing has registered a wake yet.
            woken: AtomicBool::new(true),
            outer: Mutex::new(None),
        });
        Self {
            fut: Box::pin(fut),
            inner: Waker::from(signal.clone()),
            signal,
            outer: None,
        }
    }
}

impl<F: Future> Future for WakeGate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // The task's waker is stored before the flag is read: a wake after the read finds it
        // and wakes the task, which then finds the flag set.
        if !this.outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *this.signal.outer.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            this.outer = Some(cx.waker().clone());
        }
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.inner))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Waker;

    use tokio::sync::Notify;

    use super::*;

    /// A future that counts its polls and is ready once `notify` has fired.
    fn counted(notify: Arc<Notify>, polls: Arc<AtomicUsize>) -> impl Future<Output = ()> {
        let mut notified = Box::pin(async move { notify.notified().await });
        std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        })
    }

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_gated_future_is_polled_the_first_time_and_after_its_own_wake_only() {
        let notify = Arc::new(Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let mut gate = WakeGate::new(counted(notify.clone(), polls.clone()));
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(Pin::new(&mut gate).poll(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "the first poll reaches the future"
        );
        // The task woken by something else, a hundred times: the future is not polled.
        for _ in 0..100 {
            assert!(Pin::new(&mut gate).poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "polls not woken by it pass it by"
        );
        assert_eq!(task.0.load(Ordering::Relaxed), 0);

        // Its own wake wakes the task, and the next poll reaches it and finds it ready.
        notify.notify_waiters();
        assert_eq!(
            task.0.load(Ordering::Relaxed),
            1,
            "its wake reaches the task"
        );
        assert!(Pin::new(&mut gate).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_wake_reaches_the_task_whose_waker_changed() {
        let notify = Arc::new(Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let mut gate = WakeGate::new(counted(notify.clone(), polls));
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let w1 = Waker::from(first.clone());
        let w2 = Waker::from(second.clone());
        assert!(
            Pin::new(&mut gate)
                .poll(&mut Context::from_waker(&w1))
                .is_pending()
        );
        // Moved to another task (another waker) between polls.
        assert!(
            Pin::new(&mut gate)
                .poll(&mut Context::from_waker(&w2))
                .is_pending()
        );
        notify.notify_waiters();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(
            second.0.load(Ordering::Relaxed),
            1,
            "the task polling last is woken"
        );
        assert!(
            Pin::new(&mut gate)
                .poll(&mut Context::from_waker(&w2))
                .is_ready()
        );
    }

    #[tokio::test]
    async fn in_a_select_loop_the_gated_branch_still_ends_the_loop_when_its_event_comes() {
        let token = tokio_util::sync::CancellationToken::new();
        let mut stop = WakeGate::new(token.clone().cancelled_owned());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = token.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                let _ = tx.send(i);
                tokio::task::yield_now().await;
            }
            cancel.cancel();
            // The sender is kept until the loop has ended, so only the token can end it.
            std::future::pending::<()>().await;
        });
        let mut seen = 0;
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    biased;
                    Some(_) = rx.recv() => seen += 1,
                    _ = &mut stop => break,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the cancellation's wake was not lost");
        assert_eq!(seen, 50, "every message before the cancellation was read");
    }
}
