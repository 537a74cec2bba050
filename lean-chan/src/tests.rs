//! The channels' rules, polled by hand (a waker that counts its wakes) where the order of
//! events matters, and on a multi-threaded runtime for the many-senders case.

use super::*;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

/// A waker that counts how often it was woken.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

fn wakes(c: &Counter) -> usize {
    c.0.load(Ordering::SeqCst)
}

/// Polls `fut` once with `waker`.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

#[test]
fn values_come_out_in_the_order_they_went_in_and_none_after_the_last_sender() {
    let (tx, mut rx) = channel(4);
    let (_, w) = counter();
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    for i in 0..4 {
        assert_eq!(
            rx.poll_recv(&mut Context::from_waker(&w)),
            Poll::Ready(Some(i))
        );
    }
    assert_eq!(rx.poll_recv(&mut Context::from_waker(&w)), Poll::Pending);
    tx.try_send(9).unwrap();
    drop(tx);
    // Queued values outlive their senders.
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(Some(9))
    );
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(None)
    );
}

#[test]
fn queued_values_and_held_permits_together_never_exceed_the_capacity() {
    let (tx, mut rx) = channel::<u32>(2);
    let (_, w) = counter();
    let permit = {
        let mut f = pin!(tx.clone().reserve_owned());
        match poll_once(f.as_mut(), &w) {
            Poll::Ready(Ok(p)) => p,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(tx.capacity(), 1);
    tx.try_send(1).unwrap();
    assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    // A send waits while the slots are taken...
    let (woken, w2) = counter();
    let mut send = pin!(tx.send(3));
    assert_eq!(poll_once(send.as_mut(), &w2), Poll::Pending);
    // ...and is woken when the permit gives its slot back unused.
    drop(permit);
    assert_eq!(wakes(&woken), 1);
    assert_eq!(poll_once(send.as_mut(), &w2), Poll::Ready(Ok(())));
    assert_eq!(tx.capacity(), 0);
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(Some(1))
    );
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(Some(3))
    );
    assert_eq!(tx.capacity(), 2);
}

#[test]
fn a_permit_sends_into_its_slot_and_a_receive_wakes_a_waiting_sender() {
    let (tx, mut rx) = channel::<&str>(1);
    let (_, w) = counter();
    let mut reserve = pin!(tx.clone().reserve_owned());
    let permit = match poll_once(reserve.as_mut(), &w) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("{other:?}"),
    };
    let (woken, w2) = counter();
    let mut blocked = pin!(tx.clone().reserve_owned());
    assert!(poll_once(blocked.as_mut(), &w2).is_pending());
    let (rx_woken, rw) = counter();
    assert_eq!(rx.poll_recv(&mut Context::from_waker(&rw)), Poll::Pending);
    let back = permit.send("a");
    assert_eq!(wakes(&rx_woken), 1, "a sent value wakes the receiver");
    assert_eq!(wakes(&woken), 0, "the slot is still full");
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&rw)),
        Poll::Ready(Some("a"))
    );
    assert_eq!(wakes(&woken), 1, "a received value makes room");
    assert!(matches!(
        poll_once(blocked.as_mut(), &w2),
        Poll::Ready(Ok(_))
    ));
    drop(back);
}

#[test]
fn a_dropped_wait_holds_no_slot_and_a_waiting_task_is_listed_once() {
    let (tx, mut rx) = channel::<u8>(1);
    tx.try_send(0).unwrap();
    let (_, w) = counter();
    for _ in 0..100 {
        // The same task polling many short-lived waits (as a `select!` loop does).
        let mut f = pin!(tx.clone().reserve_owned());
        assert!(poll_once(f.as_mut(), &w).is_pending());
        let mut g = pin!(tx.send(1));
        assert!(poll_once(g.as_mut(), &w).is_pending());
    }
    assert_eq!(tx.shared.lock().room_waiters.len(), 1);
    assert_eq!(tx.shared.lock().reserved, 0);
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(Some(0))
    );
    assert_eq!(tx.capacity(), 1);
    assert!(tx.shared.lock().room_waiters.is_empty());
}

#[test]
fn a_dropped_receiver_fails_sends_wakes_waiters_and_drops_what_was_queued() {
    let (tx, rx) = channel::<Arc<()>>(1);
    let value = Arc::new(());
    tx.try_send(value.clone()).unwrap();
    let (woken, w) = counter();
    let mut waiting = pin!(tx.clone().reserve_owned());
    assert!(poll_once(waiting.as_mut(), &w).is_pending());
    drop(rx);
    assert_eq!(wakes(&woken), 1);
    assert!(matches!(
        poll_once(waiting.as_mut(), &w),
        Poll::Ready(Err(SendError(())))
    ));
    assert_eq!(Arc::strong_count(&value), 1, "the queued value was dropped");
    assert!(tx.is_closed());
    assert!(matches!(
        tx.try_send(value.clone()),
        Err(TrySendError::Closed(_))
    ));
    let mut send = pin!(tx.send(value.clone()));
    assert!(matches!(
        poll_once(send.as_mut(), &w),
        Poll::Ready(Err(SendError(_)))
    ));

    let (utx, urx) = unbounded_channel::<u8>();
    drop(urx);
    assert_eq!(utx.send(7), Err(SendError(7)));
}

#[test]
fn the_last_sender_gone_wakes_the_receiver_and_a_permit_counts_as_a_sender() {
    let (tx, mut rx) = channel::<u8>(1);
    let (woken, w) = counter();
    let mut reserve = pin!(tx.clone().reserve_owned());
    let permit = match poll_once(reserve.as_mut(), &w) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("{other:?}"),
    };
    drop(tx);
    assert_eq!(rx.poll_recv(&mut Context::from_waker(&w)), Poll::Pending);
    drop(permit);
    assert_eq!(wakes(&woken), 1);
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(None)
    );
}

#[test]
fn the_buffer_grows_to_what_waits_and_is_let_go_when_it_empties() {
    let (tx, mut rx) = unbounded_channel::<[u64; 8]>();
    let (_, w) = counter();
    assert_eq!(
        rx.buffer_bytes(),
        0,
        "nothing allocated before a value waits"
    );
    for i in 0..100 {
        tx.send([i; 8]).unwrap();
    }
    assert!(rx.buffer_bytes() >= 100 * 64);
    for i in 0..100 {
        assert_eq!(
            rx.poll_recv(&mut Context::from_waker(&w)),
            Poll::Ready(Some([i; 8]))
        );
    }
    assert_eq!(rx.buffer_bytes(), 0, "a large buffer goes once it is empty");
    // A small one stays, so a channel carrying one value at a time allocates once.
    let (tx, mut rx) = unbounded_channel::<u64>();
    tx.send(1).unwrap();
    let kept = rx.buffer_bytes();
    assert!(kept > 0 && kept <= KEEP_BYTES, "{kept}");
    assert_eq!(
        rx.poll_recv(&mut Context::from_waker(&w)),
        Poll::Ready(Some(1))
    );
    assert_eq!(rx.buffer_bytes(), kept);
}

#[test]
fn a_channel_is_one_small_allocation() {
    // What a connection keeps per channel: the shared state behind one `Arc`.
    let shared = size_of::<Shared<Box<u64>>>() + 2 * size_of::<usize>();
    assert!(shared <= 160, "{shared} bytes");
}

#[test]
fn many_senders_on_many_threads_deliver_every_value_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    const SENDERS: u64 = 8;
    const EACH: u64 = 2_000;
    let got = rt.block_on(async {
        let (tx, mut rx) = channel::<u64>(2);
        let (utx, mut urx) = unbounded_channel::<u64>();
        for s in 0..SENDERS {
            let tx = tx.clone();
            let utx = utx.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let v = s * EACH + i;
                    if i % 2 == 0 {
                        tx.send(v).await.unwrap();
                    } else {
                        tx.clone().reserve_owned().await.unwrap().send(v);
                    }
                    utx.send(v).unwrap();
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        drop((tx, utx));
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        let mut ugot = Vec::new();
        while let Some(v) = urx.recv().await {
            ugot.push(v);
        }
        // Each sender's values arrive in its order.
        for s in 0..SENDERS {
            let mine: Vec<u64> = got.iter().copied().filter(|v| v / EACH == s).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
        got.sort_unstable();
        ugot.sort_unstable();
        assert_eq!(got, ugot);
        got
    });
    assert_eq!(got, (0..SENDERS * EACH).collect::<Vec<_>>());
}
