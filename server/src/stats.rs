//! What the server counts about itself. Shared by the network tasks, the simulation thread and
//! the HTTP side; everything is atomic or a watch channel, so nobody waits on anybody.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Live counters. `sessions` is a watch channel so tests and drain logic can await a value
/// instead of polling.
#[derive(Debug)]
pub struct Stats {
    sessions: watch::Sender<usize>,
    pub sessions_opened: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub sessions_closed: AtomicU64,
    players: watch::Sender<u64>,
    pub entities: AtomicU64,
    pub tick: AtomicU64,
    pub inputs_dropped_inbox_full: AtomicU64,
    pub inputs_dropped_queue_full: AtomicU64,
    pub snapshots_dropped_slow_consumer: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagram_bytes_sent: AtomicU64,
    pub tick_overruns: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            sessions: watch::Sender::new(0),
            sessions_opened: AtomicU64::new(0),
            sessions_rejected: AtomicU64::new(0),
            sessions_closed: AtomicU64::new(0),
            players: watch::Sender::new(0),
            entities: AtomicU64::new(0),
            tick: AtomicU64::new(0),
            inputs_dropped_inbox_full: AtomicU64::new(0),
            inputs_dropped_queue_full: AtomicU64::new(0),
            snapshots_dropped_slow_consumer: AtomicU64::new(0),
            datagrams_sent: AtomicU64::new(0),
            datagram_bytes_sent: AtomicU64::new(0),
            tick_overruns: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Sessions that passed the handshake and have not yet ended.
    pub fn sessions(&self) -> usize {
        *self.sessions.borrow()
    }

    /// A receiver to await a session count (`wait_for(|n| *n == 0)`).
    pub fn watch_sessions(&self) -> watch::Receiver<usize> {
        self.sessions.subscribe()
    }

    /// Player entities in the world at the end of the last tick.
    pub fn players(&self) -> u64 {
        *self.players.borrow()
    }

    /// A receiver to await a player count, e.g. zero once everyone has left.
    pub fn watch_players(&self) -> watch::Receiver<u64> {
        self.players.subscribe()
    }

    pub(crate) fn set_players(&self, n: u64) {
        self.players
            .send_if_modified(|p| std::mem::replace(p, n) != n);
    }

    /// Takes a session slot if fewer than `max` are in use.
    pub(crate) fn try_open_session(&self, max: usize) -> bool {
        let mut taken = false;
        self.sessions.send_if_modified(|n| {
            taken = *n < max;
            if taken {
                *n += 1;
            }
            taken
        });
        if taken {
            self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    pub(crate) fn close_session(&self) {
        self.sessions.send_modify(|n| *n = n.saturating_sub(1));
        self.sessions_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_slots_are_bounded_and_released() {
        let s = Stats::default();
        assert!(s.try_open_session(2));
        assert!(s.try_open_session(2));
        assert!(!s.try_open_session(2), "third session over max_clients");
        s.close_session();
        assert_eq!(s.sessions(), 1);
        assert!(s.try_open_session(2));
        assert_eq!(Stats::get(&s.sessions_opened), 3);
    }
}
