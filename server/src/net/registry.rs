//! Who holds a seat: live sessions, and players whose connection was lost and whose entity
//! waits out the grace period (`--resume-grace`) for them to come back.
//!
//! Sans-IO: times are milliseconds passed in, resume tokens are made by the caller. One
//! `Registry` behind one lock answers every admission question that involves other sessions
//! (capacity, per-address limit, a second session for one client id, resume), so they cannot
//! disagree.
//!
//! Rules:
//! - A seat is live or lingering. `--max-clients` counts both: a player who lost their
//!   connection keeps their place until the grace period ends.
//! - A session ends in one of three ways ([`Registry::end`]): the player left or was sent away
//!   (the seat is freed), the connection was lost (the seat lingers), or a newer session of the
//!   same player replaced it (nothing to do: the seat is the newer session's now).
//! - A resume token admits once: the resumed session gets a new one.
//! - A resume token presented while its session still looks live (the server has not noticed
//!   the loss yet: a phone changing networks reconnects long before the idle timeout) replaces
//!   that session: the holder of the secret is the player, and the old connection is a
//!   zombie. The old session is told through its `superseded` token.
//! - A seat keeps the name its connect token vouched for: resuming by resume token brings it
//!   back whatever name the new `Hello` carries.
//! - `--max-per-ip` counts seats per [`AddressKey`] (an IPv4 address, an IPv6 /64); loopback
//!   is spared under `--exempt-loopback`.
//! - The registry keeps the SHA-256 of each resume token ([`TokenHash`]), never the token: a
//!   memory dump of the server holds no token that works, and a live handoff can carry the
//!   seats ([`Registry::export`], [`Registry::import`]) without carrying secrets.
//! - An imported seat lingers until the grace it had left (a live one: the full grace), held
//!   as any lingering seat, so its player can resume on this server with the token they hold.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use arena_shared::protocol::{RejectReason, ResumeToken};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::limits::{AddressKey, exempt};

/// A held seat, as the session that holds it sees it.
#[derive(Debug, Clone)]
pub struct Seat {
    pub client_id: u64,
    /// Unique per admitted session; commands to the simulation carry it, so a late message
    /// about a replaced session never touches its successor.
    pub session: u64,
    /// For this session's `Welcome`.
    pub resume_token: ResumeToken,
    /// The seat (and so the entity) was taken over from an earlier session of this client.
    pub resumed: bool,
    /// The player's name: the one its connect token vouched for, kept across resumes.
    pub name: String,
    /// Cancelled when a newer session of the same player takes the seat.
    pub superseded: CancellationToken,
}

/// How a session ended, as the registry saw it; says what the simulation must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The seat is free: remove the entity.
    Freed,
    /// The seat and entity wait until `until_ms` for the player to resume.
    Lingering { until_ms: u64 },
    /// A newer session holds the seat: leave the entity alone.
    Superseded,
}

/// What admission needs from the caller, after the token checks that do not involve other
/// sessions.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// A verified connect token for this client id, and the name it vouches for.
    Token { client_id: u64, name: &'a str },
    /// A resume token the registry may know.
    Resume(ResumeToken),
}

/// SHA-256 of a resume token: what the registry keeps and a handoff carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, bitcode::Encode, bitcode::Decode)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &ResumeToken) -> Self {
        Self(Sha256::digest(token.0).into())
    }
}

/// One seat as a handoff carries it ([`Registry::export`]).
#[derive(Debug, Clone, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub struct SeatRecord {
    pub client_id: u64,
    /// The name the seat's connect token vouched for.
    pub name: String,
    pub token_hash: TokenHash,
    /// The player's address (IPv4 as mapped IPv6): the per-address limit counts the seat there.
    pub address: [u8; 16],
    pub held: Held,
}

fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl SeatRecord {
    pub fn ip(&self) -> IpAddr {
        IpAddr::V6(self.address.into()).to_canonical()
    }
}

/// Whether an exported seat had a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub enum Held {
    Live,
    /// Its connection was lost; the grace period has this long left.
    Lingering {
        remaining_ms: u64,
    },
}

/// The session number every imported seat has: the one `game::state::restore` gives the
/// players it restores, so the simulation's `Leave` for an expired seat names the same one.
pub const IMPORTED_SESSION: u64 = 1;

/// Why a seat was not imported (the rest were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotImported {
    pub client_id: u64,
    pub reason: RejectReason,
}

#[derive(Debug)]
struct Live {
    session: u64,
    ip: IpAddr,
    key: TokenHash,
    name: String,
    superseded: CancellationToken,
}

#[derive(Debug)]
struct Lingering {
    session: u64,
    ip: IpAddr,
    key: TokenHash,
    name: String,
    until_ms: u64,
}

#[derive(Debug)]
pub struct Registry {
    max_clients: usize,
    /// 0: no limit.
    max_per_ip: usize,
    /// `--exempt-loopback`: loopback addresses are not held to `max_per_ip`.
    exempt_loopback: bool,
    grace_ms: u64,
    live: HashMap<u64, Live>,
    lingering: HashMap<u64, Lingering>,
    /// `(until_ms, client_id)` of every lingering seat, soonest first.
    expiries: BTreeSet<(u64, u64)>,
    /// Resume token's hash → client id, for every live and lingering seat.
    keys: HashMap<TokenHash, u64>,
    /// Seats (live and lingering) per client address (IPv6 by /64).
    per_ip: HashMap<AddressKey, usize>,
    next_session: u64,
}

/// Why a seat was refused, and how long to wait (0: waiting will not help).
pub type Refused = (RejectReason, String, u32);

/// How long a client refused for a reason that passes is told to wait.
pub const RETRY_AFTER_MS: u32 = 5_000;

impl Registry {
    pub fn new(max_clients: usize, max_per_ip: usize, grace_ms: u64) -> Self {
        Self {
            max_clients,
            max_per_ip,
            exempt_loopback: false,
            grace_ms,
            live: HashMap::new(),
            lingering: HashMap::new(),
            expiries: BTreeSet::new(),
            keys: HashMap::new(),
            per_ip: HashMap::new(),
            next_session: 0,
        }
    }

    /// Spares loopback addresses from `max_per_ip` (`--exempt-loopback`).
    pub fn exempting_loopback(mut self, exempt_loopback: bool) -> Self {
        self.exempt_loopback = exempt_loopback;
        self
    }

    /// The client id a resume token would resume, if the registry knows it.
    pub fn resumable(&self, token: &ResumeToken) -> Option<u64> {
        self.keys.get(&TokenHash::of(token)).copied()
    }

    /// Gives a seat to a session from `ip`: the one its claim resumes, or a new one.
    /// `new_key` becomes the session's resume token. A `Claim::Resume` the registry does not
    /// know is refused; the caller decides first whether to fall back to the connect token.
    pub fn admit(
        &mut self,
        claim: Claim<'_>,
        ip: IpAddr,
        new_key: ResumeToken,
    ) -> Result<Seat, Refused> {
        let (client_id, vouched) = match claim {
            Claim::Resume(key) => (
                self.resumable(&key).ok_or((
                    RejectReason::TokenExpired,
                    "resume token unknown or past its grace period".to_string(),
                    0,
                ))?,
                None,
            ),
            Claim::Token { client_id, name } => {
                if self.live.contains_key(&client_id) {
                    return Err((
                        RejectReason::TokenInUse,
                        "a session with this client id is playing".into(),
                        RETRY_AFTER_MS,
                    ));
                }
                (client_id, Some(name))
            }
        };
        // The seat this player holds already, if any: taking it back needs no free seat.
        let held_ip = self
            .live
            .get(&client_id)
            .map(|l| l.ip)
            .or_else(|| self.lingering.get(&client_id).map(|l| l.ip));
        let address = AddressKey::of(ip);
        let from_ip = self.per_ip.get(&address).copied().unwrap_or(0);
        if self.max_per_ip > 0
            && !exempt(ip, self.exempt_loopback)
            && held_ip.map(AddressKey::of) != Some(address)
            && from_ip >= self.max_per_ip
        {
            return Err((
                RejectReason::TooManyFromAddress,
                format!("{from_ip} sessions from this address already"),
                RETRY_AFTER_MS,
            ));
        }
        if held_ip.is_none() && self.seats() >= self.max_clients {
            return Err((
                RejectReason::ServerFull,
                format!("{} players already", self.max_clients),
                RETRY_AFTER_MS,
            ));
        }
        let (resumed, held_name) = if let Some(old) = self.live.remove(&client_id) {
            old.superseded.cancel();
            self.keys.remove(&old.key);
            self.release_ip(old.ip);
            (true, Some(old.name))
        } else if let Some(old) = self.lingering.remove(&client_id) {
            self.expiries.remove(&(old.until_ms, client_id));
            self.keys.remove(&old.key);
            self.release_ip(old.ip);
            (true, Some(old.name))
        } else {
            (false, None)
        };
        // A connect token vouches anew; a resume token brings back the name it was issued with.
        let name = vouched.map(String::from).or(held_name).unwrap_or_default();
        self.next_session += 1;
        let superseded = CancellationToken::new();
        self.live.insert(
            client_id,
            Live {
                session: self.next_session,
                ip,
                key: TokenHash::of(&new_key),
                name: name.clone(),
                superseded: superseded.clone(),
            },
        );
        self.keys.insert(TokenHash::of(&new_key), client_id);
        *self.per_ip.entry(address).or_insert(0) += 1;
        Ok(Seat {
            client_id,
            session: self.next_session,
            resume_token: new_key,
            resumed,
            name,
            superseded,
        })
    }

    /// The session `session` of `client_id` ended. `lost`: the connection went without a
    /// goodbye, so the seat lingers for the grace period (if there is one).
    pub fn end(&mut self, client_id: u64, session: u64, lost: bool, now_ms: u64) -> Ended {
        // Only this session's seat: a newer session of the client keeps its own.
        let live = match self.live.entry(client_id) {
            Entry::Occupied(e) if e.get().session == session => e.remove(),
            _ => return Ended::Superseded,
        };
        if lost && self.grace_ms > 0 {
            let until_ms = now_ms.saturating_add(self.grace_ms);
            self.expiries.insert((until_ms, client_id));
            self.lingering.insert(
                client_id,
                Lingering {
                    session,
                    ip: live.ip,
                    key: live.key,
                    name: live.name,
                    until_ms,
                },
            );
            Ended::Lingering { until_ms }
        } else {
            self.keys.remove(&live.key);
            self.release_ip(live.ip);
            Ended::Freed
        }
    }

    /// Frees every lingering seat whose grace period is over: `(client_id, session)` of each,
    /// whose entity the simulation must now remove.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(u64, u64)> {
        let mut freed = Vec::new();
        while let Some(&(until_ms, client_id)) = self.expiries.first() {
            if until_ms > now_ms {
                break;
            }
            self.expiries.pop_first();
            if let Some(old) = self.lingering.remove(&client_id) {
                self.keys.remove(&old.key);
                self.release_ip(old.ip);
                freed.push((client_id, old.session));
            }
        }
        freed
    }

    /// When the next lingering seat expires, if any does.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|&(until_ms, _)| until_ms)
    }

    /// The client id of every seat, live and lingering.
    pub fn client_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.keys().chain(self.lingering.keys()).copied()
    }

    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Every seat, for a handoff: sorted by client id, lingering ones with the grace they have
    /// left at `now_ms`.
    pub fn export(&self, now_ms: u64) -> Vec<SeatRecord> {
        let live = self.live.iter().map(|(&client_id, l)| SeatRecord {
            client_id,
            name: l.name.clone(),
            token_hash: l.key,
            address: address_bytes(l.ip),
            held: Held::Live,
        });
        let lingering = self.lingering.iter().map(|(&client_id, l)| SeatRecord {
            client_id,
            name: l.name.clone(),
            token_hash: l.key,
            address: address_bytes(l.ip),
            held: Held::Lingering {
                remaining_ms: l.until_ms.saturating_sub(now_ms),
            },
        });
        let mut seats: Vec<SeatRecord> = live.chain(lingering).collect();
        seats.sort_unstable_by_key(|s| s.client_id);
        seats
    }

    /// Takes over seats another server exported: each lingers here (session
    /// [`IMPORTED_SESSION`]) until `now_ms` plus the grace it had left, a live one the full
    /// grace, and is resumed by its player's token as any lingering seat. The seats count against
    /// `--max-clients` and, at the player's address, against `--max-per-ip`, as lingering seats
    /// do; one that does not fit, or whose client id or token already holds a seat here, is
    /// left out and named in the answer (its player, coming back, is a new player).
    pub fn import(&mut self, records: Vec<SeatRecord>, now_ms: u64) -> Vec<NotImported> {
        let mut refused = Vec::new();
        // Sessions admitted here from now on are numbered after the imported ones.
        self.next_session = self.next_session.max(IMPORTED_SESSION);
        for rec in records {
            let ip = rec.ip();
            let address = AddressKey::of(ip);
            let refuse = if self.live.contains_key(&rec.client_id)
                || self.lingering.contains_key(&rec.client_id)
                || self.keys.contains_key(&rec.token_hash)
            {
                Some(RejectReason::TokenInUse)
            } else if self.seats() >= self.max_clients {
                Some(RejectReason::ServerFull)
            } else if self.max_per_ip > 0
                && !exempt(ip, self.exempt_loopback)
                && self.per_ip.get(&address).copied().unwrap_or(0) >= self.max_per_ip
            {
                Some(RejectReason::TooManyFromAddress)
            } else {
                None
            };
            if let Some(reason) = refuse {
                refused.push(NotImported {
                    client_id: rec.client_id,
                    reason,
                });
                continue;
            }
            let remaining_ms = match rec.held {
                Held::Live => self.grace_ms,
                Held::Lingering { remaining_ms } => remaining_ms.min(self.grace_ms),
            };
            let until_ms = now_ms.saturating_add(remaining_ms);
            self.expiries.insert((until_ms, rec.client_id));
            self.keys.insert(rec.token_hash, rec.client_id);
            *self.per_ip.entry(address).or_insert(0) += 1;
            self.lingering.insert(
                rec.client_id,
                Lingering {
                    session: IMPORTED_SESSION,
                    ip,
                    key: rec.token_hash,
                    name: rec.name,
                    until_ms,
                },
            );
        }
        refused
    }

    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    /// Seats held, live and lingering: what `--max-clients` bounds.
    pub fn seats(&self) -> usize {
        self.live.len() + self.lingering.len()
    }

    fn release_ip(&mut self, ip: IpAddr) {
        let address = AddressKey::of(ip);
        if let Some(n) = self.per_ip.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn key(b: u8) -> ResumeToken {
        ResumeToken([b; 16])
    }

    fn token(client_id: u64) -> Claim<'static> {
        Claim::Token {
            client_id,
            name: "vouched",
        }
    }

    fn at(ip: IpAddr) -> AddressKey {
        AddressKey::of(ip)
    }

    #[test]
    fn a_lost_session_lingers_for_the_grace_period_then_frees_its_seat() {
        let mut r = Registry::new(10, 0, 1_000);
        let seat = r.admit(token(7), A, key(1)).unwrap();
        assert!(!seat.resumed);
        assert_eq!(
            r.end(7, seat.session, true, 5_000),
            Ended::Lingering { until_ms: 6_000 }
        );
        assert_eq!((r.live(), r.lingering(), r.seats()), (0, 1, 1));
        assert_eq!(r.next_expiry(), Some(6_000));
        assert!(r.expire(5_999).is_empty());
        assert_eq!(r.expire(6_000), vec![(7, seat.session)]);
        assert_eq!(r.seats(), 0);
        assert_eq!(r.resumable(&key(1)), None, "its resume token died with it");
        assert!(r.per_ip.is_empty());
    }

    #[test]
    fn a_goodbye_frees_the_seat_at_once_and_no_grace_means_no_lingering() {
        let mut r = Registry::new(10, 0, 1_000);
        let seat = r.admit(token(7), A, key(1)).unwrap();
        assert_eq!(r.end(7, seat.session, false, 0), Ended::Freed);
        assert_eq!(r.seats(), 0);
        let mut none = Registry::new(10, 0, 0);
        let seat = none.admit(token(7), A, key(1)).unwrap();
        assert_eq!(none.end(7, seat.session, true, 0), Ended::Freed);
    }

    #[test]
    fn a_resume_token_takes_back_a_lingering_seat_once() {
        let mut r = Registry::new(10, 0, 1_000);
        let first = r.admit(token(7), A, key(1)).unwrap();
        r.end(7, first.session, true, 0);
        let again = r.admit(Claim::Resume(key(1)), B, key(2)).unwrap();
        assert_eq!(again.client_id, 7);
        assert!(again.resumed);
        assert_ne!(again.session, first.session);
        assert_eq!((r.live(), r.lingering()), (1, 0));
        assert!(r.expire(u64::MAX).is_empty(), "no longer waiting to expire");
        assert_eq!(
            r.admit(Claim::Resume(key(1)), A, key(3)).unwrap_err().0,
            RejectReason::TokenExpired,
            "single use"
        );
        assert_eq!(
            r.per_ip.get(&at(A)),
            None,
            "the seat moved to the new address"
        );
        assert_eq!(r.per_ip.get(&at(B)), Some(&1));
    }

    #[test]
    fn a_connect_token_for_the_same_client_id_also_resumes() {
        let mut r = Registry::new(10, 0, 1_000);
        let first = r.admit(token(7), A, key(1)).unwrap();
        r.end(7, first.session, true, 0);
        let again = r.admit(token(7), A, key(2)).unwrap();
        assert!(again.resumed);
        assert_eq!(r.seats(), 1);
    }

    #[test]
    fn resuming_a_session_that_looks_live_supersedes_it() {
        let mut r = Registry::new(10, 0, 1_000);
        let zombie = r.admit(token(7), A, key(1)).unwrap();
        let fresh = r.admit(Claim::Resume(key(1)), A, key(2)).unwrap();
        assert!(fresh.resumed && zombie.superseded.is_cancelled());
        assert!(!fresh.superseded.is_cancelled());
        // The zombie's end, when it comes, leaves the new session alone.
        assert_eq!(r.end(7, zombie.session, true, 0), Ended::Superseded);
        assert_eq!((r.live(), r.lingering()), (1, 0));
        assert_eq!(r.per_ip.get(&at(A)), Some(&1));
        // But a connect token does not push a live session out.
        assert_eq!(
            r.admit(token(7), B, key(3)).unwrap_err().0,
            RejectReason::TokenInUse
        );
    }

    #[test]
    fn lingering_seats_count_against_max_clients_but_resuming_needs_no_free_seat() {
        let mut r = Registry::new(2, 0, 1_000);
        let a = r.admit(token(1), A, key(1)).unwrap();
        r.admit(token(2), A, key(2)).unwrap();
        r.end(1, a.session, true, 0);
        let full = r.admit(token(3), A, key(3)).unwrap_err();
        assert_eq!((full.0, full.2), (RejectReason::ServerFull, RETRY_AFTER_MS));
        assert!(r.admit(Claim::Resume(key(1)), A, key(4)).is_ok());
    }

    #[test]
    fn per_address_limit_counts_lingering_seats_and_lets_a_player_back() {
        let mut r = Registry::new(10, 1, 1_000);
        let a = r.admit(token(1), A, key(1)).unwrap();
        assert_eq!(
            r.admit(token(2), A, key(2)).unwrap_err().0,
            RejectReason::TooManyFromAddress
        );
        assert!(r.admit(token(2), B, key(2)).is_ok());
        r.end(1, a.session, true, 0);
        assert_eq!(
            r.admit(token(3), A, key(3)).unwrap_err().0,
            RejectReason::TooManyFromAddress
        );
        assert!(r.admit(Claim::Resume(key(1)), A, key(4)).is_ok());
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address_and_loopback_is_spared_only_when_exempt() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut r = Registry::new(10, 2, 1_000);
        r.admit(token(1), v6("2001:db8:1:1::1"), key(1)).unwrap();
        r.admit(token(2), v6("2001:db8:1:1::ffff:2"), key(2))
            .unwrap();
        assert_eq!(
            r.admit(token(3), v6("2001:db8:1:1:9::3"), key(3))
                .unwrap_err()
                .0,
            RejectReason::TooManyFromAddress,
            "a third address in the same /64"
        );
        assert!(r.admit(token(3), v6("2001:db8:1:2::1"), key(3)).is_ok());
        let lo = v6("127.0.0.2");
        let mut spared = Registry::new(10, 1, 1_000).exempting_loopback(true);
        assert!((1..=3).all(|id| spared.admit(token(id), lo, key(id as u8)).is_ok()));
        let mut strict = Registry::new(10, 1, 1_000).exempting_loopback(false);
        strict.admit(token(1), lo, key(1)).unwrap();
        assert_eq!(
            strict.admit(token(2), lo, key(2)).unwrap_err().0,
            RejectReason::TooManyFromAddress
        );
    }

    #[test]
    fn a_resume_token_brings_back_the_vouched_name_and_a_connect_token_vouches_anew() {
        let mut r = Registry::new(10, 0, 1_000);
        let first = r
            .admit(
                Claim::Token {
                    client_id: 7,
                    name: "alice",
                },
                A,
                key(1),
            )
            .unwrap();
        assert_eq!(first.name, "alice");
        r.end(7, first.session, true, 0);
        let back = r.admit(Claim::Resume(key(1)), B, key(2)).unwrap();
        assert_eq!(back.name, "alice", "whatever the new Hello says");
        let zombie_free = r.admit(Claim::Resume(key(2)), B, key(3)).unwrap();
        assert_eq!(zombie_free.name, "alice", "superseding keeps it too");
        r.end(7, zombie_free.session, true, 0);
        let renamed = r
            .admit(
                Claim::Token {
                    client_id: 7,
                    name: "alicia",
                },
                A,
                key(4),
            )
            .unwrap();
        assert!(renamed.resumed);
        assert_eq!(renamed.name, "alicia");
    }

    #[test]
    fn the_registry_keeps_each_resume_tokens_hash_and_never_the_token() {
        let mut r = Registry::new(10, 0, 1_000);
        r.admit(token(7), A, key(1)).unwrap();
        assert!(r.keys.contains_key(&TokenHash::of(&key(1))));
        assert!(!format!("{r:?}").contains(&format!("{:?}", key(1).0)));
        assert_eq!(
            r.resumable(&key(1)),
            Some(7),
            "the token presented is hashed"
        );
        assert_eq!(r.resumable(&key(2)), None);
    }

    /// A registry with 7 live at A and 8 lingering at B (500 ms left at t=1,500).
    fn exported() -> Vec<SeatRecord> {
        let mut r = Registry::new(10, 0, 1_000);
        r.admit(token(7), A, key(7)).unwrap();
        let s8 = r.admit(token(8), B, key(8)).unwrap();
        r.end(8, s8.session, true, 1_000);
        r.export(1_500)
    }

    #[test]
    fn export_carries_each_seat_with_its_hash_address_and_remaining_grace() {
        let seats = exported();
        assert_eq!(
            seats,
            vec![
                SeatRecord {
                    client_id: 7,
                    name: "vouched".into(),
                    token_hash: TokenHash::of(&key(7)),
                    address: address_bytes(A),
                    held: Held::Live,
                },
                SeatRecord {
                    client_id: 8,
                    name: "vouched".into(),
                    token_hash: TokenHash::of(&key(8)),
                    address: address_bytes(B),
                    held: Held::Lingering { remaining_ms: 500 },
                },
            ]
        );
        assert_eq!((seats[0].ip(), seats[1].ip()), (A, B));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(IpAddr::V6(address_bytes(v6).into()).to_canonical(), v6);
    }

    #[test]
    fn an_imported_seat_lingers_is_resumed_once_by_its_token_and_keeps_its_name() {
        let mut r = Registry::new(10, 0, 2_000);
        assert!(r.import(exported(), 10_000).is_empty());
        assert_eq!((r.live(), r.lingering()), (0, 2));
        // The live one gets the full grace, the lingering one what it had left.
        assert_eq!(r.next_expiry(), Some(10_500));
        assert_eq!(r.expiries.last(), Some(&(12_000, 7)));
        let back = r.admit(Claim::Resume(key(7)), A, key(17)).unwrap();
        assert!(back.resumed);
        assert_eq!((back.client_id, back.name.as_str()), (7, "vouched"));
        assert!(
            back.session > IMPORTED_SESSION,
            "new sessions follow the imported"
        );
        assert_eq!(
            r.admit(Claim::Resume(key(7)), A, key(27)).unwrap_err().0,
            RejectReason::TokenExpired,
            "single use"
        );
        // The imported session ends like any: its Leave names IMPORTED_SESSION.
        assert_eq!(r.expire(10_499), vec![]);
        assert_eq!(r.expire(10_500), vec![(8, IMPORTED_SESSION)]);
        assert_eq!(
            r.resumable(&key(8)),
            None,
            "expired like any lingering seat"
        );
        assert_eq!((r.live(), r.lingering()), (1, 0));
        assert_eq!(r.per_ip.get(&at(B)), None);
    }

    #[test]
    fn import_refuses_what_a_lingering_seat_could_not_hold_and_names_it() {
        // Capacity: one seat free.
        let mut full = Registry::new(1, 0, 1_000);
        assert_eq!(
            full.import(exported(), 0),
            vec![NotImported {
                client_id: 8,
                reason: RejectReason::ServerFull
            }]
        );
        assert_eq!(full.seats(), 1);
        // Per address: A already holds its one seat here.
        let mut one = Registry::new(10, 1, 1_000);
        one.admit(token(1), A, key(1)).unwrap();
        assert_eq!(
            one.import(exported(), 0),
            vec![NotImported {
                client_id: 7,
                reason: RejectReason::TooManyFromAddress
            }]
        );
        assert_eq!(one.per_ip.get(&at(B)), Some(&1));
        // A client id or a token already seated here.
        let mut taken = Registry::new(10, 0, 1_000);
        taken.admit(token(7), A, key(99)).unwrap();
        taken.admit(token(9), A, key(8)).unwrap();
        let refused: Vec<u64> = taken
            .import(exported(), 0)
            .iter()
            .map(|n| n.client_id)
            .collect();
        assert_eq!(refused, vec![7, 8]);
        assert_eq!(taken.seats(), 2);
    }

    #[test]
    fn an_imported_seat_never_lingers_longer_than_this_servers_grace() {
        let mut r = Registry::new(10, 0, 100);
        r.import(exported(), 0);
        assert_eq!(r.next_expiry(), Some(100));
        assert_eq!(r.expire(100).len(), 2);
        assert_eq!(r.seats(), 0);
        assert!(r.keys.is_empty() && r.per_ip.is_empty());
    }
}
