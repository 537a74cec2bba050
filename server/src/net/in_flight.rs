//! Handshakes in flight: connections the endpoint accepted that have been neither admitted nor
//! refused yet. Each holds QUIC and TLS state for up to `--handshake-timeout` before the server
//! learns anything about it, so their number is bounded, all together and per address
//! ([`AddressKey`]), and above a threshold a new connection must first prove with a QUIC Retry
//! that it receives at the address it sends from (a spoofed source never gets that far).
//!
//! Sans-IO: the caller says whether QUIC has validated the address, and gives back every
//! handshake that entered with [`InFlight::leave`]. The per-address table holds only
//! addresses with a handshake in flight, so it is bounded by the total.

use std::collections::HashMap;
use std::net::IpAddr;

use super::limits::{AddressKey, exempt};

/// What becomes of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted in flight; go on with the handshake.
    Enter,
    /// Answer with a QUIC Retry (the `reason` label of `arena_handshakes_rejected_total`):
    /// the client comes back with its address validated.
    Retry(&'static str),
    /// Refuse it before any TLS work (the `reason` label).
    Refuse(&'static str),
}

#[derive(Debug)]
pub struct InFlight {
    max: usize,
    retry_above: usize,
    max_per_address: usize,
    exempt_loopback: bool,
    total: usize,
    per_address: HashMap<AddressKey, usize>,
}

impl InFlight {
    /// `max` handshakes at once (0: no limit), a Retry for unvalidated addresses with more
    /// than `retry_above` in flight, `max_per_address` from one address (0: no limit; loopback
    /// spared when `exempt_loopback`).
    pub fn new(
        max: usize,
        retry_above: usize,
        max_per_address: usize,
        exempt_loopback: bool,
    ) -> Self {
        Self {
            max: if max == 0 { usize::MAX } else { max },
            retry_above,
            max_per_address: if max_per_address == 0 {
                usize::MAX
            } else {
                max_per_address
            },
            exempt_loopback,
            total: 0,
            per_address: HashMap::new(),
        }
    }

    /// Judges a new connection from `ip`; `validated`: QUIC has proof that `ip` is real (the
    /// connection carries a Retry token).
    pub fn enter(&mut self, ip: IpAddr, validated: bool) -> Verdict {
        if self.total >= self.max {
            return Verdict::Refuse("in_flight_full");
        }
        let counted = !exempt(ip, self.exempt_loopback);
        let key = AddressKey::of(ip);
        if counted && self.per_address.get(&key).copied().unwrap_or(0) >= self.max_per_address {
            // An unvalidated source may be spoofed to shut out the address it names: it gets
            // a Retry, which only the address's real owner can answer.
            return if validated {
                Verdict::Refuse("in_flight_address")
            } else {
                Verdict::Retry("retry_address")
            };
        }
        if !validated && self.total >= self.retry_above {
            return Verdict::Retry("retry_busy");
        }
        self.total += 1;
        if counted {
            *self.per_address.entry(key).or_insert(0) += 1;
        }
        Verdict::Enter
    }

    /// A handshake from `ip` that entered has been admitted or refused.
    pub fn leave(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if exempt(ip, self.exempt_loopback) {
            return;
        }
        let key = AddressKey::of(ip);
        if let Some(n) = self.per_address.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&key);
            }
        }
    }

    /// Handshakes in flight now.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{InFlight, Verdict};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn above_the_threshold_unvalidated_addresses_get_a_retry_and_at_the_cap_everyone_is_refused() {
        let mut f = InFlight::new(4, 2, 0, true);
        let a = ip("10.0.0.1");
        assert_eq!(f.enter(a, false), Verdict::Enter);
        assert_eq!(f.enter(a, false), Verdict::Enter);
        assert_eq!(f.enter(a, false), Verdict::Retry("retry_busy"));
        assert_eq!(
            f.enter(a, true),
            Verdict::Enter,
            "the retried client comes back"
        );
        assert_eq!(f.enter(a, true), Verdict::Enter);
        assert_eq!(f.enter(a, true), Verdict::Refuse("in_flight_full"));
        assert_eq!(f.len(), 4);
        f.leave(a);
        assert_eq!(f.enter(a, true), Verdict::Enter, "a place freed");
        for _ in 0..4 {
            f.leave(a);
        }
        assert!(f.is_empty() && f.per_address.is_empty());
    }

    #[test]
    fn one_address_or_one_ipv6_64_has_its_own_cap_and_loopback_is_spared_when_exempt() {
        let mut f = InFlight::new(100, 100, 2, true);
        let (a, a2, b) = (ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8:0:1::1"));
        assert_eq!(f.enter(a, false), Verdict::Enter);
        assert_eq!(f.enter(a2, false), Verdict::Enter);
        assert_eq!(
            f.enter(a, false),
            Verdict::Retry("retry_address"),
            "the /64 is full; a spoofed source cannot answer a Retry"
        );
        assert_eq!(f.enter(a2, true), Verdict::Refuse("in_flight_address"));
        assert_eq!(f.enter(b, false), Verdict::Enter, "another /64");
        let lo = ip("127.0.0.2");
        assert!((0..10).all(|_| f.enter(lo, false) == Verdict::Enter));
        let mut strict = InFlight::new(100, 100, 2, false);
        assert_eq!(strict.enter(lo, true), Verdict::Enter);
        assert_eq!(strict.enter(lo, true), Verdict::Enter);
        assert_eq!(strict.enter(lo, true), Verdict::Refuse("in_flight_address"));
        strict.leave(lo);
        assert_eq!(strict.enter(lo, true), Verdict::Enter);
    }
}
