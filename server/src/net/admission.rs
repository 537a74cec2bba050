//! Admission: every check on a client's `Hello`, from its bytes to a seat in the registry.
//!
//! Sans-IO: the caller passes in what it knows of the connection (address, datagram size,
//! whether the server is shutting down), both clocks (the limiters' seconds, the wall clock's
//! Unix milliseconds for token expiry) and a fresh random resume token; the registry is
//! reached through a closure, so the caller decides how it is locked and what is published.
//!
//! Checks, in this order, cheapest first; the first that fails refuses:
//! 1. magic, protocol version and a `Hello` that decodes (no rate spent: junk spends no one's
//!    budget);
//! 2. the connection carries datagrams; the server is not shutting down; there was
//!    randomness for a resume token;
//! 3. a resume token the registry knows admits at once, before any rate (it is 16 random
//!    bytes, so only the player who lost its connection has it); an unknown one falls through
//!    to the connect token and its limits, unless the server has moved its sessions away
//!    (then only those resumes are admitted);
//! 4. the address's handshake bucket (spared for loopback under `--exempt-loopback`), so one
//!    address cannot spend the shared one; then the shared bucket;
//! 5. the connect token: present, its signature, expiry and audience, not used before;
//! 6. room to remember it as used (otherwise a forgotten token could be replayed);
//! 7. the registry's claim: no live session with the same client id, the per-address seat
//!    limit, capacity.
//!
//! Only a session admitted by a connect token marks that token used, so a client refused for
//! a reason that waiting cures (server full) may retry with it.

use std::net::IpAddr;
use std::sync::Mutex;

use arena_shared::protocol::codec::{self, HelloError};
use arena_shared::protocol::{PROTOCOL_VERSION, RejectReason, ResumeToken};
use arena_shared::token::{self, TokenError};

use super::UsedTokens;
use super::limits::{AddressBuckets, AddressKey, TokenBucket, exempt};
use super::registry::{Claim, RETRY_AFTER_MS, Refused, Seat};

/// What the caller knows about one handshake when its `Hello` has arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The first frame's body.
    pub body: &'a [u8],
    pub ip: IpAddr,
    /// The largest datagram the connection carries now; `None`: the peer refused datagrams.
    pub max_datagram: Option<usize>,
    pub shutting_down: bool,
    /// The server moved its sessions to another ([`Mover`](super::mover::Mover)): it takes
    /// back only seats lingering here, by their resume tokens.
    pub moved: bool,
    /// The limiters' clock: seconds since the server started.
    pub now_s: f64,
    /// The wall clock: milliseconds since the Unix epoch, which tokens' expiries count in.
    pub unix_ms: u64,
    /// The admitted session's resume token, random; `None`: no randomness was to be had.
    pub new_key: Option<ResumeToken>,
}

/// The shared state admission reads and spends, each behind its own lock (`used_tokens` is
/// locked before the registry when both are held).
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    pub token_secret: &'a [u8],
    /// The `server` claim a token must carry to be accepted here.
    pub token_audience: &'a str,
    /// `--exempt-loopback`: loopback addresses do not spend a per-address bucket.
    pub exempt_loopback: bool,
    /// `--handshakes-per-sec-per-address`.
    pub per_address: &'a Mutex<AddressBuckets>,
    /// `--handshakes-per-sec`.
    pub global: &'a Mutex<TokenBucket>,
    pub used_tokens: &'a Mutex<UsedTokens>,
}

/// An admitted handshake: its seat, and the datagram size the session starts with.
#[derive(Debug)]
pub struct Admitted {
    pub seat: Seat,
    pub max_datagram: usize,
}

/// Why a handshake was refused: the reason, a message for logs, how long to wait before
/// trying again (0: no hint), and the `reason` label of `arena_sessions_rejected_total` (the
/// reason's own name, except where one reason has two causes worth telling apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub message: String,
    pub retry_after_ms: u32,
    pub metric: &'static str,
}

impl From<Refused> for Refusal {
    fn from((reason, message, retry_after_ms): Refused) -> Self {
        Self {
            reason,
            message,
            retry_after_ms,
            metric: reason.as_str(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate<'_> {
    /// Runs every check on `arrival` in the order of the module's header. `registry` gives a
    /// seat for a claim from an address with a new resume token (as [`Registry::admit`]
    /// does); it is called at most twice: once for a resume token, once for a connect token.
    ///
    /// [`Registry::admit`]: super::registry::Registry::admit
    pub fn admit(
        &self,
        arrival: &Arrival<'_>,
        mut registry: impl FnMut(Claim<'_>, IpAddr, ResumeToken) -> Result<Seat, Refused>,
    ) -> Result<Admitted, Refusal> {
        let hello = codec::decode_hello(arrival.body).map_err(|e| match e {
            HelloError::NotArena => (RejectReason::NotArena, e.to_string(), 0),
            HelloError::Version(v) => (
                RejectReason::ProtocolVersion {
                    server: PROTOCOL_VERSION,
                },
                format!("client speaks protocol {v}, this server speaks {PROTOCOL_VERSION}"),
                0,
            ),
            HelloError::Malformed => (RejectReason::MalformedHello, e.to_string(), 0),
        })?;
        let Some(max_datagram) = arrival.max_datagram else {
            return Err((
                RejectReason::DatagramsUnsupported,
                "snapshots travel as datagrams".into(),
                0,
            )
                .into());
        };
        if arrival.shutting_down {
            return Err((
                RejectReason::ShuttingDown,
                "server is shutting down".into(),
                RETRY_AFTER_MS,
            )
                .into());
        }
        let Some(key) = arrival.new_key else {
            return Err((
                RejectReason::ServerFull,
                "server cannot admit now".to_string(),
                RETRY_AFTER_MS,
            )
                .into());
        };
        let ip = arrival.ip;
        let admitted = |seat| Admitted { seat, max_datagram };
        // A resume token the server still knows admits by itself, before any rate: its holder
        // is the player whose seat it names, and it keeps the name that seat was vouched for.
        // An unknown one (its grace ran out, or a guess) falls back to the connect token and
        // its limits.
        if let Some(resume) = hello.resume
            && let Ok(seat) = registry(Claim::Resume(resume), ip, key)
        {
            return Ok(admitted(seat));
        }
        if arrival.moved {
            return Err((
                RejectReason::ShuttingDown,
                "server is moving its players to another; it admits no new ones".into(),
                RETRY_AFTER_MS,
            )
                .into());
        }
        let now_s = arrival.now_s;
        if !exempt(ip, self.exempt_loopback)
            && let Err(wait_ms) = lock(self.per_address).take(AddressKey::of(ip), now_s)
        {
            return Err(Refusal {
                reason: RejectReason::RateLimited,
                message: "too many handshakes from this address; retry later".into(),
                retry_after_ms: wait_ms,
                metric: "rate_limited_address",
            });
        }
        if let Err(wait_ms) = lock(self.global).take(now_s) {
            return Err((
                RejectReason::RateLimited,
                "too many handshakes; retry later".into(),
                wait_ms,
            )
                .into());
        }
        if hello.token.is_empty() {
            return Err((
                RejectReason::TokenMissing,
                "Hello carries no token; get one from /api/connect".into(),
                0,
            )
                .into());
        }
        let now_ms = arrival.unix_ms;
        let claims = token::verify(self.token_secret, &hello.token, now_ms, self.token_audience)
            .map_err(|e| {
                let reason = match e {
                    TokenError::Malformed => RejectReason::TokenMalformed,
                    TokenError::Forged => RejectReason::TokenForged,
                    TokenError::Expired => RejectReason::TokenExpired,
                    TokenError::WrongServer => RejectReason::TokenWrongServer,
                };
                (reason, e.to_string(), 0)
            })?;
        // A token admits one session. It is marked used only once the session is admitted, so
        // a client refused for a reason that waiting cures (server full) may retry with it.
        let fingerprint = token::fingerprint(&hello.token);
        let mut used = lock(self.used_tokens);
        if used.was_used(&fingerprint, now_ms) {
            return Err((
                RejectReason::TokenInUse,
                "this token was used already; get a new one".into(),
                0,
            )
                .into());
        }
        // The token's name is the one the issuer vouched for; Hello's is a fallback.
        let name = if claims.name.is_empty() {
            hello.name.as_str()
        } else {
            claims.name.as_str()
        };
        // Every token that admits must be remembered until it expires; with the set full, the
        // session waits rather than a remembered token being forgotten (and so replayable).
        if let Err(wait_ms) = used.room(now_ms) {
            return Err((
                RejectReason::ServerFull,
                "too many recent sessions to remember their tokens; retry later".to_string(),
                wait_ms.min(u64::from(u32::MAX)) as u32,
            )
                .into());
        }
        let client_id = claims.client_id;
        let seat = registry(Claim::Token { client_id, name }, ip, key)?;
        let remembered = used.mark_used(fingerprint, claims.expires_at_ms);
        debug_assert!(remembered, "room was checked under the same lock");
        Ok(admitted(seat))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    use arena_shared::protocol::codec::{FRAME_HEADER_LEN, encode_hello};
    use arena_shared::protocol::{Hello, PROTOCOL_VERSION, RejectReason, ResumeToken};
    use arena_shared::token::{self, Claims};

    use super::{Admitted, Arrival, Gate, Refusal};
    use crate::net::UsedTokens;
    use crate::net::limits::{AddressBuckets, TokenBucket};
    use crate::net::registry::{RETRY_AFTER_MS, Registry};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 3));
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const SECRET: &[u8] = b"the server's secret";
    const AUDIENCE: &str = "https://arena.example:4433/";
    /// The wall clock in every test (Unix milliseconds).
    const NOW_MS: u64 = 1_800_000_000_000;
    const HOUR_MS: u64 = 3_600_000;

    /// Admission's shared state and a registry, with limits no test reaches unless it sets
    /// them lower.
    struct Server {
        exempt_loopback: bool,
        per_address: Mutex<AddressBuckets>,
        global: Mutex<TokenBucket>,
        used: Mutex<UsedTokens>,
        registry: Registry,
        /// Randomness for resume tokens: a counter, so each admitted seat gets its own.
        next_key: u8,
    }

    impl Server {
        fn new() -> Self {
            Self {
                exempt_loopback: false,
                per_address: Mutex::new(AddressBuckets::new(100.0, 100.0, 16)),
                global: Mutex::new(TokenBucket::new(100.0, 100.0)),
                used: Mutex::new(UsedTokens::new(100)),
                registry: Registry::new(100, 0, 10_000),
                next_key: 0,
            }
        }

        /// A handshake from `ip` whose `Hello` is `body`, at second `now_s`.
        fn admit_at(&mut self, body: &[u8], ip: IpAddr, now_s: f64) -> Result<Admitted, Refusal> {
            self.next_key += 1;
            let arrival = Arrival {
                body,
                ip,
                max_datagram: Some(1200),
                shutting_down: false,
                moved: false,
                now_s,
                unix_ms: NOW_MS,
                new_key: Some(ResumeToken([self.next_key; 16])),
            };
            self.admit_arrival(&arrival)
        }

        fn admit(&mut self, body: &[u8], ip: IpAddr) -> Result<Admitted, Refusal> {
            self.admit_at(body, ip, 0.0)
        }

        fn admit_arrival(&mut self, arrival: &Arrival<'_>) -> Result<Admitted, Refusal> {
            let gate = Gate {
                token_secret: SECRET,
                token_audience: AUDIENCE,
                exempt_loopback: self.exempt_loopback,
                per_address: &self.per_address,
                global: &self.global,
                used_tokens: &self.used,
            };
            let registry = &mut self.registry;
            gate.admit(arrival, |claim, ip, key| registry.admit(claim, ip, key))
        }

        fn used(&self) -> usize {
            self.used.lock().unwrap().len()
        }
    }

    fn claims(client_id: u64) -> Claims {
        Claims {
            client_id,
            name: "vouched".into(),
            expires_at_ms: NOW_MS + HOUR_MS,
            server: AUDIENCE.into(),
        }
    }

    fn token_for(client_id: u64) -> String {
        token::sign(SECRET, &claims(client_id))
    }

    /// A `Hello` body (no length prefix) with this token and resume token.
    fn hello_with(token: &str, resume: Option<ResumeToken>, version: u16, name: &str) -> Vec<u8> {
        let hello = Hello {
            protocol_version: version,
            token: token.into(),
            name: name.into(),
            resume,
        };
        let mut framed = Vec::new();
        encode_hello(&hello, &mut framed).unwrap();
        framed.split_off(FRAME_HEADER_LEN)
    }

    fn hello(token: &str) -> Vec<u8> {
        hello_with(token, None, PROTOCOL_VERSION, "from hello")
    }

    fn resume(key: ResumeToken) -> Vec<u8> {
        hello_with("", Some(key), PROTOCOL_VERSION, "from hello")
    }

    /// The refusal's reason, retry hint and metric label.
    fn refused(r: Result<Admitted, Refusal>) -> (RejectReason, u32, &'static str) {
        let e = r.expect_err("refused");
        (e.reason, e.retry_after_ms, e.metric)
    }

    fn reason(r: RejectReason) -> (RejectReason, u32, &'static str) {
        (r, 0, r.as_str())
    }

    #[test]
    fn a_hello_that_does_not_decode_is_refused_without_spending_any_rate() {
        let mut s = Server::new();
        s.global = Mutex::new(TokenBucket::new(1.0, 1.0));
        s.per_address = Mutex::new(AddressBuckets::new(1.0, 1.0, 16));
        let version = PROTOCOL_VERSION.wrapping_add(1);
        for _ in 0..3 {
            assert_eq!(
                refused(s.admit(b"GET / HTTP/1.1", A)),
                reason(RejectReason::NotArena)
            );
            let other = hello_with(&token_for(1), None, version, "x");
            assert_eq!(
                refused(s.admit(&other, A)),
                reason(RejectReason::ProtocolVersion {
                    server: PROTOCOL_VERSION
                })
            );
            let nameless = hello_with(&token_for(1), None, PROTOCOL_VERSION, "");
            assert_eq!(
                refused(s.admit(&nameless, A)),
                reason(RejectReason::MalformedHello)
            );
        }
        let seat = s
            .admit(&hello(&token_for(1)), A)
            .expect("both buckets untouched")
            .seat;
        assert_eq!((seat.client_id, seat.name.as_str()), (1, "vouched"));
    }

    #[test]
    fn a_connection_without_datagrams_is_refused_before_a_shutdown_says_so() {
        let mut s = Server::new();
        let body = hello(&token_for(1));
        let arrival = Arrival {
            body: &body,
            ip: A,
            max_datagram: None,
            shutting_down: true,
            moved: false,
            now_s: 0.0,
            unix_ms: NOW_MS,
            new_key: None,
        };
        assert_eq!(
            refused(s.admit_arrival(&arrival)),
            reason(RejectReason::DatagramsUnsupported)
        );
        let arrival = Arrival {
            max_datagram: Some(1200),
            ..arrival
        };
        assert_eq!(
            refused(s.admit_arrival(&arrival)),
            (
                RejectReason::ShuttingDown,
                RETRY_AFTER_MS,
                RejectReason::ShuttingDown.as_str()
            ),
            "checked before randomness"
        );
        let arrival = Arrival {
            shutting_down: false,
            ..arrival
        };
        assert_eq!(
            refused(s.admit_arrival(&arrival)),
            (
                RejectReason::ServerFull,
                RETRY_AFTER_MS,
                RejectReason::ServerFull.as_str()
            ),
            "no randomness for a resume token: come back later"
        );
        assert_eq!((s.registry.seats(), s.used()), (0, 0), "nothing taken");
        let arrival = Arrival {
            new_key: Some(ResumeToken([9; 16])),
            ..arrival
        };
        let admitted = s.admit_arrival(&arrival).unwrap();
        assert_eq!(admitted.max_datagram, 1200);
        assert_eq!(admitted.seat.resume_token, ResumeToken([9; 16]));
    }

    #[test]
    fn a_known_resume_token_admits_before_any_rate_and_keeps_the_vouched_name() {
        let mut s = Server::new();
        s.global = Mutex::new(TokenBucket::new(1.0, 1.0));
        s.per_address = Mutex::new(AddressBuckets::new(1.0, 1.0, 16));
        let first = s.admit(&hello(&token_for(7)), A).unwrap().seat;
        s.registry.end(7, first.session, true, 0);
        let back = s
            .admit(&resume(first.resume_token), A)
            .expect("no rate asked")
            .seat;
        assert!(back.resumed);
        assert_eq!((back.client_id, back.name.as_str()), (7, "vouched"));
        assert_ne!(
            back.resume_token, first.resume_token,
            "a resume token admits once"
        );
        assert_eq!(
            refused(s.admit(&resume(first.resume_token), A)),
            (RejectReason::RateLimited, 1000, "rate_limited_address"),
            "a spent resume token falls back to the connect token and its limits"
        );
    }

    #[test]
    fn after_a_move_only_a_lingering_seat_comes_back() {
        let mut s = Server::new();
        let first = s.admit(&hello(&token_for(7)), A).unwrap().seat;
        s.registry.end(7, first.session, true, 0);
        let moved = |s: &mut Server, body: &[u8]| {
            let arrival = Arrival {
                body,
                ip: A,
                max_datagram: Some(1200),
                shutting_down: false,
                moved: true,
                now_s: 0.0,
                unix_ms: NOW_MS,
                new_key: Some(ResumeToken([42; 16])),
            };
            s.admit_arrival(&arrival)
        };
        let back = moved(&mut s, &resume(first.resume_token)).expect("a resume");
        let shutting_down = (
            RejectReason::ShuttingDown,
            RETRY_AFTER_MS,
            RejectReason::ShuttingDown.as_str(),
        );
        assert!(back.seat.resumed);
        assert_eq!(back.seat.client_id, 7);
        assert_eq!(
            refused(moved(&mut s, &hello(&token_for(8)))),
            shutting_down,
            "a new player goes elsewhere"
        );
        assert_eq!(
            refused(moved(&mut s, &resume(ResumeToken([0xAB; 16])))),
            shutting_down,
            "an unknown resume token, too"
        );
    }

    #[test]
    fn an_unknown_resume_token_falls_back_to_the_connect_token() {
        let mut s = Server::new();
        let guess = ResumeToken([0xAB; 16]);
        assert_eq!(
            refused(s.admit(&resume(guess), A)),
            reason(RejectReason::TokenMissing)
        );
        let body = hello_with(&token_for(3), Some(guess), PROTOCOL_VERSION, "x");
        let seat = s.admit(&body, A).expect("the token admits").seat;
        assert!(!seat.resumed);
        assert_eq!(seat.client_id, 3);
    }

    #[test]
    fn the_addresss_bucket_is_spent_before_the_global_one_and_spares_the_others() {
        let mut s = Server::new();
        s.per_address = Mutex::new(AddressBuckets::new(1.0, 1.0, 16));
        s.global = Mutex::new(TokenBucket::new(1.0, 2.0));
        s.admit(&hello(&token_for(1)), A).unwrap();
        assert_eq!(
            refused(s.admit(&hello(&token_for(2)), A)),
            (RejectReason::RateLimited, 1000, "rate_limited_address")
        );
        s.admit(&hello(&token_for(3)), B)
            .expect("A's refusal spent none of the global bucket");
        assert_eq!(
            refused(s.admit(&hello(&token_for(4)), C)),
            (RejectReason::RateLimited, 1000, "rate_limited"),
        );
        let wait = refused(s.admit_at(&hello(&token_for(4)), C, 0.75));
        assert_eq!(wait.1, 250, "told how long until the next token");
        s.admit_at(&hello(&token_for(4)), C, 1.0)
            .expect("refilled a second later");
    }

    #[test]
    fn loopback_spends_no_address_bucket_under_exempt_loopback_only() {
        for exempt in [false, true] {
            let mut s = Server::new();
            s.exempt_loopback = exempt;
            s.per_address = Mutex::new(AddressBuckets::new(1.0, 1.0, 16));
            s.admit(&hello(&token_for(1)), LOOPBACK).unwrap();
            let second = s.admit(&hello(&token_for(2)), LOOPBACK);
            assert_eq!(second.is_ok(), exempt, "exempt_loopback {exempt}");
        }
    }

    #[test]
    fn each_fault_of_a_connect_token_has_its_own_reason() {
        let mut s = Server::new();
        let expired = Claims {
            expires_at_ms: NOW_MS - 1,
            ..claims(1)
        };
        let elsewhere = Claims {
            server: "https://other.example:4433/".into(),
            ..claims(1)
        };
        let cases = [
            ("".to_string(), RejectReason::TokenMissing),
            ("not a token".to_string(), RejectReason::TokenMalformed),
            (
                token::sign(b"another secret", &claims(1)),
                RejectReason::TokenForged,
            ),
            (token::sign(SECRET, &expired), RejectReason::TokenExpired),
            (
                token::sign(SECRET, &elsewhere),
                RejectReason::TokenWrongServer,
            ),
        ];
        for (token, why) in cases {
            assert_eq!(
                refused(s.admit(&hello(&token), A)),
                reason(why),
                "{token:?}"
            );
        }
        assert_eq!((s.registry.seats(), s.used()), (0, 0));
    }

    #[test]
    fn a_connect_token_admits_once() {
        let mut s = Server::new();
        let token = token_for(5);
        let seat = s.admit(&hello(&token), A).unwrap().seat;
        s.registry.end(5, seat.session, false, 0);
        assert_eq!(
            refused(s.admit(&hello(&token), A)),
            reason(RejectReason::TokenInUse)
        );
    }

    #[test]
    fn with_no_room_to_remember_a_token_the_client_waits_until_the_first_expires() {
        let mut s = Server::new();
        s.used = Mutex::new(UsedTokens::new(1));
        s.admit(&hello(&token_for(1)), A).unwrap();
        let full = refused(s.admit(&hello(&token_for(2)), A));
        assert_eq!(
            full,
            (
                RejectReason::ServerFull,
                HOUR_MS as u32,
                RejectReason::ServerFull.as_str()
            )
        );
        assert_eq!(s.registry.seats(), 1, "no seat taken for it");
    }

    #[test]
    fn the_registrys_refusals_pass_through_and_leave_the_token_unused() {
        let mut s = Server::new();
        s.registry = Registry::new(1, 0, 10_000);
        let first = s.admit(&hello(&token_for(1)), A).unwrap().seat;
        let again = token_for(1);
        let mut other = claims(1);
        other.expires_at_ms += 1;
        let other = token::sign(SECRET, &other);
        assert_eq!(
            refused(s.admit(&hello(&other), A)),
            (
                RejectReason::TokenInUse,
                RETRY_AFTER_MS,
                RejectReason::TokenInUse.as_str()
            ),
            "client 1 is playing"
        );
        let late = token_for(2);
        assert_eq!(
            refused(s.admit(&hello(&late), A)),
            (
                RejectReason::ServerFull,
                RETRY_AFTER_MS,
                RejectReason::ServerFull.as_str()
            )
        );
        assert_eq!(s.used(), 1, "only the admitting token is remembered");
        s.registry.end(1, first.session, false, 0);
        s.admit(&hello(&late), A)
            .expect("refused for a full server, the same token admits once there is room");
        assert_eq!(
            refused(s.admit(&hello(&again), A)),
            reason(RejectReason::TokenInUse),
            "while the admitting one stays used"
        );
    }

    #[test]
    fn the_seat_is_named_by_the_token_and_by_the_hello_when_the_token_names_no_one() {
        let mut s = Server::new();
        let nameless = token::sign(
            SECRET,
            &Claims {
                name: String::new(),
                ..claims(2)
            },
        );
        let seat = s.admit(&hello(&nameless), A).unwrap().seat;
        assert_eq!(seat.name, "from hello");
        let seat = s.admit(&hello(&token_for(3)), A).unwrap().seat;
        assert_eq!(seat.name, "vouched");
    }
}
