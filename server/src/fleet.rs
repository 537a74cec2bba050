//! The rules of running as one GameServer of a fleet, sans-IO: what the Agones integration
//! (`agones.rs`, cargo feature `agones`) decides, apart from the gRPC calls that carry it out.
//! Times and randomness are passed in, so every rule is tested here without a sidecar.
//!
//! - [`public_url`]: the WebTransport URL players are handed, from the GameServer's
//!   `status.address` and the host port of the port named [`WT_PORT`].
//! - [`PlayerList`]: which client ids to add to and remove from the list [`PLAYERS_LIST`] so
//!   it holds the seats (live and lingering), without touching the ids a matchmaker put there
//!   for players who have not arrived yet.
//! - [`HealthGate`]: a Health ping only when the simulation has ticked since the last one.
//! - [`EmptyShutdown`]: the rule of `--agones-shutdown-when-empty`.
//! - [`register`]: Ready, Allocate or neither, for a fresh server and for one that takes a
//!   live world over (`--take-over-from`).
//! - [`Backoff`]: jittered, growing waits between attempts to reach a lost sidecar.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The GameServer port (in the Fleet's template) that carries WebTransport (UDP).
pub const WT_PORT: &str = "wt";
/// The GameServer port that carries the HTTP side (TCP): the page, `/api/connect`, `/healthz`.
pub const HTTP_PORT: &str = "http";
/// The Agones list (Counters and Lists) that holds the client id of every seat.
pub const PLAYERS_LIST: &str = "players";
/// Agones refuses a list capacity above this.
pub const MAX_LIST_CAPACITY: usize = 1000;
/// The label a server sets on itself when it becomes Allocated (the SDK prefixes it with
/// `agones.dev/sdk-`); its value is the allocation's time, Unix seconds.
pub const ALLOCATED_LABEL: &str = "arena-allocated-at";

/// The annotation that carries the hashes of the server's self-signed certificates (base64
/// SHA-256, comma-separated, the current one first; the SDK prefixes the key with
/// `agones.dev/sdk-`), kept current across rotations. A matchmaker reads it from the
/// allocation's answer (`status.metadata.annotations`) and hands it to the player with the
/// URL and the token: with `--no-guest-tokens` nothing else tells a browser what to pin. With
/// `--cert`/`--key` (a certificate the browser trusts) it is not set.
pub const CERT_ANNOTATION: &str = "arena-cert-sha256";

/// The value of [`CERT_ANNOTATION`] for these hashes (`None`: nothing to pin).
pub fn cert_annotation(pinnable: &[String]) -> Option<String> {
    (!pinnable.is_empty()).then(|| pinnable.join(","))
}

/// `https://<address>:<host port of WT_PORT>/`, with an IPv6 address in brackets.
pub fn public_url<'a>(
    address: &str,
    ports: impl IntoIterator<Item = (&'a str, i32)>,
) -> Result<String, String> {
    if address.is_empty() {
        return Err("the GameServer has no status.address yet".into());
    }
    let port = ports
        .into_iter()
        .find(|(name, _)| *name == WT_PORT)
        .map(|(_, port)| port)
        .ok_or_else(|| format!("the GameServer has no port named {WT_PORT:?}"))?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("the GameServer's port {WT_PORT:?} is {port}"))?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(format!("https://{host}:{port}/"))
}

/// The list [`PLAYERS_LIST`] as this server knows it, and the changes that bring it in step
/// with the seats.
///
/// The list may hold ids this server did not put there: a `GameServerAllocation` with a list
/// action adds the player it allocated for, before the player connects, so that two
/// allocations cannot both count the same free place. Such a reservation stays until its
/// player has held a seat here and left, or, if the player never comes, until it has been
/// listed for `--agones-reservation-ttl` (its token has expired by then). Values that are not
/// client ids are left alone.
#[derive(Debug, Default)]
pub struct PlayerList {
    /// What the sidecar's list holds, as read at (re)registration and changed since by us.
    known: BTreeSet<String>,
    /// Every client id that has held a seat on this server, for as long as it is listed.
    seen: BTreeSet<u64>,
    /// Listed client ids that have not held a seat here, with when they were first seen listed.
    reserved: BTreeMap<u64, Duration>,
    /// How long a reservation may wait for its player (`None`: for ever).
    reservation_ttl: Option<Duration>,
}

/// What to change in the list: ids to add, ids to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub add: Vec<u64>,
    pub remove: Vec<u64>,
}

impl PlayerList {
    pub fn new(reservation_ttl: Option<Duration>) -> Self {
        Self {
            reservation_ttl,
            ..Self::default()
        }
    }

    /// The list as the sidecar holds it now (after a (re)connection), at `now`.
    pub fn reset(&mut self, values: impl IntoIterator<Item = String>, now: Duration) {
        self.known = values.into_iter().collect();
        self.note_reservations(now);
    }

    /// The list as the GameServer showed it (a watch update): ids we did not know are
    /// reservations from now on; reservations no longer listed are gone. An update may lag
    /// our own calls by the sidecar's batching; what that costs is a call answered
    /// AlreadyExists or NotFound, which counts as done.
    pub fn observe(&mut self, values: &[String], now: Duration) {
        self.known = values.iter().cloned().collect();
        let known = &self.known;
        self.reserved
            .retain(|id, _| known.contains(&id.to_string()));
        self.note_reservations(now);
    }

    fn note_reservations(&mut self, now: Duration) {
        for id in self.known.iter().filter_map(|v| v.parse::<u64>().ok()) {
            if !self.seen.contains(&id) {
                self.reserved.entry(id).or_insert(now);
            }
        }
    }

    /// The changes that make the list hold `seats` at `now`.
    pub fn changes(&mut self, seats: &BTreeSet<u64>, now: Duration) -> Changes {
        self.seen.extend(seats.iter().copied());
        // A reservation whose player arrived is a seat like any other.
        self.reserved.retain(|id, _| !seats.contains(id));
        let add = seats
            .iter()
            .filter(|id| !self.known.contains(&id.to_string()))
            .copied()
            .collect();
        let ttl = self.reservation_ttl;
        let expired = self
            .reserved
            .iter()
            .filter(|(_, since)| ttl.is_some_and(|ttl| now.saturating_sub(**since) >= ttl))
            .map(|(id, _)| *id);
        let remove = self
            .seen
            .iter()
            .filter(|id| !seats.contains(id))
            .copied()
            .chain(expired)
            .filter(|id| self.known.contains(&id.to_string()))
            .collect();
        Changes { add, remove }
    }

    /// `id` is in the list now (added, or it was there already).
    pub fn added(&mut self, id: u64) {
        self.known.insert(id.to_string());
    }

    /// `id` is not in the list now (removed, or it was not there).
    pub fn removed(&mut self, id: u64) {
        self.known.remove(&id.to_string());
        self.seen.remove(&id);
        self.reserved.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Health pings follow the simulation: each period, a ping only if the tick moved since the
/// period before. A simulation thread that is stuck (a deadlock, an endless loop, a tick
/// that takes seconds) stops the pings, and Agones marks the server Unhealthy after its
/// failure threshold; the async runtime alone being alive proves nothing.
#[derive(Debug, Default)]
pub struct HealthGate {
    last_tick: Option<u64>,
    stalled: bool,
}

/// What one health period decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    Ping,
    /// No tick since the last period: no ping. `first` the first period of a stall (to log).
    Stalled {
        first: bool,
    },
    /// The simulation ticks again after a stall: ping (and log).
    Recovered,
}

impl HealthGate {
    pub fn period(&mut self, tick: u64) -> Health {
        let moved = self.last_tick.is_none_or(|last| tick > last);
        self.last_tick = Some(tick);
        match (moved, self.stalled) {
            (true, false) => Health::Ping,
            (true, true) => {
                self.stalled = false;
                Health::Recovered
            }
            (false, stalled) => {
                self.stalled = true;
                Health::Stalled { first: !stalled }
            }
        }
    }
}

/// `--agones-shutdown-when-empty`: Shutdown once the server has been Allocated and then
/// without a player for the whole delay. A server that was never allocated waits in the
/// fleet's pool however long it is empty; a player arriving restarts the delay.
#[derive(Debug)]
pub struct EmptyShutdown {
    after: Option<Duration>,
    /// Since when the allocated server has had no player (`None`: not allocated, or a player
    /// is there).
    empty_since: Option<Duration>,
}

impl EmptyShutdown {
    pub fn new(after: Option<Duration>) -> Self {
        Self {
            after,
            empty_since: None,
        }
    }

    /// The delay (`None`: the rule is off).
    pub fn after(&self) -> Option<Duration> {
        self.after
    }

    /// Whether to shut down now. `now` is any monotonic clock's reading.
    pub fn observe(&mut self, now: Duration, allocated: bool, players: usize) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        if !allocated || players > 0 {
            self.empty_since = None;
            return false;
        }
        let since = *self.empty_since.get_or_insert(now);
        now.saturating_sub(since) >= after
    }
}

/// Where a server stands in taking a live world over (`--take-over-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Not a takeover: the server starts a world of its own.
    Fresh,
    /// The world is asked for, restored or ticking here, but the old server has not confirmed:
    /// it is still the old server's, and this process exits if the handoff fails.
    Pending,
    /// The old server confirmed: this server runs the world, and the old server's players
    /// are on their way here.
    Confirmed,
}

/// What registering with the sidecar asks of the GameServer.
#[derive(Debug, PartialEq, Eq)]
pub enum Register {
    /// Nothing: it is Allocated or Shutdown already, a Reserved server is left to its
    /// reservation, or the server is draining and must not be handed out.
    Keep,
    /// Nothing yet: a takeover waits for its confirmation. Ready now would put a server into
    /// the pool that is about to hold someone else's players.
    Wait,
    /// Into the pool: a fresh server, once its simulation ticks.
    Ready,
    /// A confirmed takeover: the server holds a world with players, so it allocates itself
    /// and the fleet neither scales it down nor hands it to a new match. `ready_first` when
    /// the GameServer is not Ready yet (Agones allocates from Ready).
    Allocate { ready_first: bool },
}

/// What to ask of the GameServer in `state` (its `status.state`), the server `draining` or
/// not, its takeover as it stands. Asked at every (re)registration and again when a takeover
/// is confirmed.
pub fn register(state: &str, draining: bool, takeover: Takeover) -> Register {
    if draining || matches!(state, "Allocated" | "Shutdown") {
        return Register::Keep;
    }
    match takeover {
        Takeover::Pending => Register::Wait,
        Takeover::Confirmed => Register::Allocate {
            ready_first: !matches!(state, "Ready" | "Reserved"),
        },
        Takeover::Fresh if state == "Reserved" => Register::Keep,
        Takeover::Fresh => Register::Ready,
    }
}

/// Exponential backoff with full jitter (a wait drawn uniformly below a ceiling that doubles
/// from `first` up to `max`), so a fleet whose sidecars all restart at once does not call back
/// in step.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            ceiling: first,
        }
    }

    /// The next wait; `random` is any uniformly random u64.
    pub fn next(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        // At least a tenth of the ceiling: a zero wait would spin.
        let floor = ceiling / 10;
        floor + (ceiling - floor).mul_f64(random as f64 / u64::MAX as f64)
    }

    /// After a success: start again from `first`.
    pub fn reset(&mut self) {
        self.ceiling = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_address_with_the_host_port_of_the_port_named_wt() {
        let ports = [("http", 7001), ("wt", 7002)];
        assert_eq!(
            public_url("203.0.113.7", ports).as_deref(),
            Ok("https://203.0.113.7:7002/")
        );
        assert_eq!(
            public_url("2001:db8::7", ports).as_deref(),
            Ok("https://[2001:db8::7]:7002/")
        );
        assert_eq!(
            public_url("node-3.example.net", ports).as_deref(),
            Ok("https://node-3.example.net:7002/")
        );
        assert!(public_url("", ports).unwrap_err().contains("address"));
        assert!(
            public_url("203.0.113.7", [("http", 7001)])
                .unwrap_err()
                .contains("\"wt\"")
        );
        assert!(public_url("203.0.113.7", [("wt", 0)]).is_err());
        assert!(public_url("203.0.113.7", [("wt", 70000)]).is_err());
    }

    #[test]
    fn the_certificate_annotation_lists_every_hash_to_pin_current_first() {
        assert_eq!(cert_annotation(&[]), None);
        assert_eq!(cert_annotation(&["a+/=".into()]).as_deref(), Some("a+/="));
        assert_eq!(
            cert_annotation(&["now".into(), "next".into()]).as_deref(),
            Some("now,next")
        );
    }

    fn ids(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    /// Applies `changes` as the sidecar would.
    fn apply(list: &mut PlayerList, changes: &Changes) {
        for id in &changes.add {
            list.added(*id);
        }
        for id in &changes.remove {
            list.removed(*id);
        }
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn the_list_follows_the_seats() {
        let mut list = PlayerList::new(None);
        let c = list.changes(&ids(&[1, 2, 3]), T0);
        assert_eq!(c.add, [1, 2, 3]);
        assert!(c.remove.is_empty());
        apply(&mut list, &c);
        assert_eq!(list.changes(&ids(&[1, 2, 3]), T0), Changes::default());
        let c = list.changes(&ids(&[2, 4]), T0);
        assert_eq!(
            (c.add.as_slice(), c.remove.as_slice()),
            (&[4][..], &[1, 3][..])
        );
        apply(&mut list, &c);
        assert_eq!(list.len(), 2);
        let c = list.changes(&ids(&[]), T0);
        assert_eq!(c.remove, [2, 4]);
        apply(&mut list, &c);
        assert!(list.is_empty());
        assert!(
            list.seen.is_empty() && list.reserved.is_empty(),
            "the ids that left are forgotten: memory follows the seats, not the server's age"
        );
    }

    #[test]
    fn ids_a_matchmaker_listed_stay_until_their_player_has_come_and_gone() {
        let mut list = PlayerList::new(None);
        // An allocation reserved 7 (and someone listed a name that is not an id at all).
        list.reset(["7".to_string(), "lobby-host".to_string()], T0);
        assert_eq!(list.changes(&ids(&[]), T0), Changes::default());
        // 7 arrives: nothing to add, it is listed.
        assert_eq!(list.changes(&ids(&[7]), T0), Changes::default());
        // 7 leaves: now it goes.
        let c = list.changes(&ids(&[]), T0);
        assert_eq!((c.add.as_slice(), c.remove.as_slice()), (&[][..], &[7][..]));
        apply(&mut list, &c);
        assert_eq!(list.changes(&ids(&[]), T0), Changes::default());
        assert_eq!(list.len(), 1, "the foreign value is left alone");
    }

    #[test]
    fn a_reservation_whose_player_never_comes_is_removed_after_its_ttl() {
        let s = Duration::from_secs;
        let mut list = PlayerList::new(Some(s(60)));
        list.reset(["lobby-host".to_string()], s(0));
        // Allocations reserve 7 at 10 s and 8 at 30 s (seen on the watch).
        list.observe(&["lobby-host".into(), "7".into()], s(10));
        list.observe(&["lobby-host".into(), "7".into(), "8".into()], s(30));
        assert_eq!(list.changes(&ids(&[]), s(69)), Changes::default());
        // 7's player never came: gone at 70 s; 8's player arrives at 80 s and stays.
        let c = list.changes(&ids(&[]), s(70));
        assert_eq!((c.add.as_slice(), c.remove.as_slice()), (&[][..], &[7][..]));
        apply(&mut list, &c);
        assert_eq!(list.changes(&ids(&[8]), s(80)), Changes::default());
        assert_eq!(list.changes(&ids(&[8]), s(500)), Changes::default());
        // A reservation the matchmaker took back itself is forgotten.
        list.observe(&["lobby-host".into(), "8".into(), "9".into()], s(600));
        list.observe(&["lobby-host".into(), "8".into()], s(610));
        assert_eq!(list.changes(&ids(&[8]), s(1000)), Changes::default());
        // Never expiring without a TTL.
        let mut forever = PlayerList::new(None);
        forever.reset(["7".to_string()], s(0));
        assert_eq!(forever.changes(&ids(&[]), s(1_000_000)), Changes::default());
    }

    #[test]
    fn after_a_sidecar_comes_back_the_list_is_read_again_and_mended() {
        let mut list = PlayerList::new(None);
        let c = list.changes(&ids(&[1, 2]), T0);
        apply(&mut list, &c);
        let c = list.changes(&ids(&[1, 2, 9]), T0);
        apply(&mut list, &c);
        // The list came back without 2 and with 1 and 9 (9 left while the sidecar was away).
        list.reset(["1".to_string(), "9".to_string()], T0);
        let c = list.changes(&ids(&[1, 2]), T0);
        assert_eq!(
            (c.add.as_slice(), c.remove.as_slice()),
            (&[2][..], &[9][..])
        );
    }

    #[test]
    fn health_pings_stop_while_the_tick_stands_still_and_resume_after() {
        let mut gate = HealthGate::default();
        assert_eq!(gate.period(0), Health::Ping);
        assert_eq!(gate.period(60), Health::Ping);
        assert_eq!(gate.period(60), Health::Stalled { first: true });
        assert_eq!(gate.period(60), Health::Stalled { first: false });
        assert_eq!(gate.period(61), Health::Recovered);
        assert_eq!(gate.period(120), Health::Ping);
    }

    #[test]
    fn an_allocated_server_shuts_down_after_being_empty_for_the_delay() {
        let s = Duration::from_secs;
        let mut rule = EmptyShutdown::new(Some(s(2)));
        // Empty and not allocated: never.
        assert!(!rule.observe(s(0), false, 0));
        assert!(!rule.observe(s(100), false, 0));
        // Allocated and full: never.
        assert!(!rule.observe(s(101), true, 3));
        assert!(!rule.observe(s(200), true, 1));
        // Empty from 201: at 203, not before.
        assert!(!rule.observe(s(201), true, 0));
        assert!(!rule.observe(s(202), true, 0));
        // A player in between restarts the delay.
        assert!(!rule.observe(Duration::from_millis(202_500), true, 1));
        assert!(!rule.observe(s(203), true, 0));
        assert!(!rule.observe(Duration::from_millis(204_900), true, 0));
        assert!(rule.observe(s(205), true, 0));
        // Off: never.
        let mut off = EmptyShutdown::new(None);
        assert!(!off.observe(s(0), true, 0));
        assert!(!off.observe(s(10_000), true, 0));
    }

    #[test]
    fn a_fresh_server_is_ready_unless_it_is_allocated_reserved_going_or_draining() {
        for state in ["", "Scheduled", "RequestReady", "Ready"] {
            assert_eq!(register(state, false, Takeover::Fresh), Register::Ready);
        }
        for state in ["Allocated", "Reserved", "Shutdown"] {
            assert_eq!(register(state, false, Takeover::Fresh), Register::Keep);
        }
        assert_eq!(register("Scheduled", true, Takeover::Fresh), Register::Keep);
    }

    #[test]
    fn a_takeover_waits_for_its_confirmation_then_allocates_itself() {
        // Before the confirmation the world is not this server's: not in the pool.
        for state in ["Scheduled", "RequestReady", "Ready", "Reserved"] {
            assert_eq!(register(state, false, Takeover::Pending), Register::Wait);
        }
        // Confirmed: Ready first where Agones needs it, then Allocate.
        for state in ["Scheduled", "RequestReady"] {
            assert_eq!(
                register(state, false, Takeover::Confirmed),
                Register::Allocate { ready_first: true }
            );
        }
        // A sidecar lost between Ready and Allocate: Allocate on registering again.
        for state in ["Ready", "Reserved"] {
            assert_eq!(
                register(state, false, Takeover::Confirmed),
                Register::Allocate { ready_first: false }
            );
        }
        // Allocated already (by itself, or a matchmaker got there first), or going: nothing.
        for takeover in [Takeover::Pending, Takeover::Confirmed] {
            assert_eq!(register("Allocated", false, takeover), Register::Keep);
            assert_eq!(register("Shutdown", false, takeover), Register::Keep);
            assert_eq!(register("Ready", true, takeover), Register::Keep);
        }
    }

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter_and_starts_over_after_a_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(800));
        assert_eq!(b.next(u64::MAX), ms(100));
        assert_eq!(b.next(u64::MAX), ms(200));
        assert_eq!(b.next(0), ms(40), "a tenth of the ceiling at least");
        assert_eq!(b.next(u64::MAX), ms(800));
        assert_eq!(b.next(u64::MAX), ms(800), "capped");
        let mid = b.next(u64::MAX / 2);
        assert!(mid > ms(400) && mid < ms(480), "{mid:?}");
        b.reset();
        assert_eq!(b.next(u64::MAX), ms(100));
    }
}
