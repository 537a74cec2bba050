//! The server as an Agones GameServer (`--agones`; cargo feature `agones`): the calls to the
//! SDK sidecar that carry out the rules in [`crate::fleet`].
//!
//! - At start ([`connect`]): reach the sidecar (a clear error naming `AGONES_SDK_GRPC_PORT`
//!   if it does not answer within `--agones-connect-timeout`), read the GameServer and take
//!   the public WebTransport URL from it, before the server binds (the URL is in every
//!   connect token and in the certificate's names).
//! - Running ([`Agones::run`]): `Ready` once the simulation ticks (the sockets are bound
//!   before [`crate::Server::run`] starts it); `Health` every `--agones-health-period` while
//!   the tick moves; the list `players` in step with the seats; an allocation logged and
//!   labelled; `--agones-shutdown-when-empty`. A lost sidecar is logged and reached again
//!   with jittered backoff while players keep playing (nothing here is on their path); once
//!   back, the server registers again: Ready unless it is Allocated, the list read and mended.
//! - Taking a live world over (`--take-over-from`): not Ready while the handoff is pending;
//!   once the old server confirms, `Ready` (if need be) and `Allocate`, since the server now
//!   holds the old server's players.
//! - At the end: `Shutdown`, once the drain is over and the last session has closed.
//!
//! Every call has a deadline ([`CALL_TIMEOUT`]): a sidecar that hangs counts as lost; it never
//! holds up the loop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use agones::Sdk;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{error, info, warn};

use crate::Config;
use crate::fleet::{
    ALLOCATED_LABEL, Backoff, CERT_ANNOTATION, EmptyShutdown, Health, HealthGate,
    MAX_LIST_CAPACITY, PLAYERS_LIST, PlayerList, Register, Takeover, public_url,
};
use crate::net::identity::CertHashes;
use crate::server::Seated;
use crate::stats::Stats;

/// The longest one SDK call may take before the sidecar counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the players list is compared with the seats.
const PLAYERS_SYNC: Duration = Duration::from_millis(200);
/// Backoff between attempts to reach a lost sidecar.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long `Shutdown` is tried at the end, the sidecar reached again if need be.
const SHUTDOWN_TRIES_FOR: Duration = Duration::from_secs(5);
/// The port the SDK uses when `AGONES_SDK_GRPC_PORT` is not set.
const DEFAULT_SDK_PORT: u16 = 9357;

/// A connected SDK, and what the server needs from the GameServer before it binds.
pub struct Agones {
    sdk: Sdk,
    port: u16,
    /// `https://<status.address>:<host port of "wt">/`.
    pub public_url: String,
    health_period: Duration,
    shutdown_when_empty: Option<Duration>,
    reservation_ttl: Option<Duration>,
    capacity: usize,
    /// Started with `--take-over-from`.
    taking_over: bool,
}

/// Why an SDK call failed: the sidecar is gone or hangs (try again later, elsewhere), or it
/// answered no (a status code: the call was wrong or not possible now).
enum Failure {
    Lost(String),
    Refused(Code, String),
}

impl Failure {
    fn into_lost(self) -> String {
        match self {
            Failure::Lost(why) | Failure::Refused(_, why) => why,
        }
    }
}

async fn call<T>(
    what: &str,
    f: impl Future<Output = agones::errors::Result<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Err(_) => Err(Failure::Lost(format!(
            "{what}: no answer within {CALL_TIMEOUT:?}"
        ))),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(agones::errors::Error::Rpc(status)))
            if !matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
            ) =>
        {
            Err(Failure::Refused(
                status.code(),
                format!("{what}: {}", status.message()),
            ))
        }
        Ok(Err(e)) => Err(Failure::Lost(format!("{what}: {e} ({e:?})"))),
    }
}

/// The sidecar's port: `AGONES_SDK_GRPC_PORT`, or the SDK's default.
fn sdk_port() -> Result<u16, String> {
    match std::env::var("AGONES_SDK_GRPC_PORT") {
        Err(_) => Ok(DEFAULT_SDK_PORT),
        Ok(v) => v.trim().parse().map_err(|_| {
            format!("AGONES_SDK_GRPC_PORT is {v:?}, not a port number (Agones sets it in the pod)")
        }),
    }
}

/// Reaches the sidecar and reads the GameServer's address; waits (within
/// `--agones-connect-timeout`) for the address if the GameServer has none yet.
pub async fn connect(config: &Config) -> Result<Agones, String> {
    let port = sdk_port()?;
    let timeout = config.agones_connect_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let unreachable = |why: String| {
        let env = std::env::var("AGONES_SDK_GRPC_PORT")
            .unwrap_or_else(|_| format!("not set, so {DEFAULT_SDK_PORT}"));
        format!(
            "no Agones SDK sidecar answered on localhost:{port} within {} \
             (AGONES_SDK_GRPC_PORT: {env}; {why}). --agones runs the server as an Agones \
             GameServer, in a pod with the SDK sidecar; leave it out to run without Agones",
            humantime::format_duration(timeout)
        )
    };
    let mut sdk = match tokio::time::timeout_at(deadline, Sdk::new(Some(port), None)).await {
        Err(_) => return Err(unreachable("timed out".into())),
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(sdk)) => sdk,
    };
    let mut gs = call("GetGameServer", sdk.get_gameserver())
        .await
        .map_err(|f| unreachable(f.into_lost()))?;
    let mut watch = None;
    let public_url = loop {
        let status = gs.status.clone().unwrap_or_default();
        let found = public_url(
            &status.address,
            status.ports.iter().map(|p| (p.name.as_str(), p.port)),
        );
        match found {
            Ok(url) => break url,
            Err(why) => {
                info!(%why, "waiting for the GameServer's address and ports");
                if watch.is_none() {
                    watch = Some(
                        call("WatchGameServer", sdk.watch_gameserver())
                            .await
                            .map_err(|f| unreachable(f.into_lost()))?,
                    );
                }
                let next =
                    tokio::time::timeout_at(deadline, watch.as_mut().expect("set above").message())
                        .await;
                gs = match next {
                    Ok(Ok(Some(gs))) => gs,
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        return Err(unreachable("the GameServer watch ended".into()));
                    }
                    Err(_) => {
                        return Err(format!(
                            "the GameServer got no usable address within {}: {why}",
                            humantime::format_duration(timeout)
                        ));
                    }
                };
            }
        }
    };
    let name = gs.object_meta.as_ref().map_or("", |m| m.name.as_str());
    info!(
        game_server = name,
        port,
        public_url = public_url.as_str(),
        "Agones SDK sidecar reached"
    );
    Ok(Agones {
        sdk,
        port,
        public_url,
        health_period: config.agones_health_period,
        shutdown_when_empty: config.agones_shutdown_when_empty,
        reservation_ttl: Some(config.agones_reservation_ttl).filter(|d| !d.is_zero()),
        capacity: config.max_clients,
        taking_over: config.take_over_from.is_some(),
    })
}

/// What the loop keeps across reconnections to the sidecar.
struct Run {
    stats: Arc<Stats>,
    seated: Seated,
    /// The hashes `/api/connect` hands out, published as [`CERT_ANNOTATION`].
    certs: tokio::sync::watch::Receiver<CertHashes>,
    /// Cancelled on SIGTERM, or here to drain an empty allocated server.
    shutdown: CancellationToken,
    health_period: Duration,
    capacity: usize,
    list: PlayerList,
    /// Whether the fleet has the list (a GameServer without it answers NotFound).
    list_kept: bool,
    gate: HealthGate,
    empty: EmptyShutdown,
    allocated: bool,
    /// The GameServer's `status.state`, as last read or watched.
    state: String,
    /// Started with `--take-over-from`.
    taking_over: bool,
    /// Whether the old server confirmed the takeover (set by [`crate::takeover::run`]).
    confirmed: tokio::sync::watch::Receiver<bool>,
    started: Instant,
}

impl Agones {
    /// Keeps the GameServer in step with the server until `drained` fires (after
    /// [`crate::Server::run`] returned), then calls `Shutdown`. Cancels `shutdown` itself when
    /// `--agones-shutdown-when-empty` says the match is over. `confirmed` turns true when a
    /// takeover (`--take-over-from`) is confirmed; the server then allocates itself.
    pub async fn run(
        self,
        stats: Arc<Stats>,
        seated: Seated,
        certs: tokio::sync::watch::Receiver<CertHashes>,
        confirmed: tokio::sync::watch::Receiver<bool>,
        shutdown: CancellationToken,
        drained: CancellationToken,
    ) {
        let mut sdk = self.sdk;
        let mut run = Run {
            stats,
            seated,
            certs,
            shutdown,
            health_period: self.health_period,
            capacity: self.capacity,
            list: PlayerList::new(self.reservation_ttl),
            list_kept: true,
            gate: HealthGate::default(),
            empty: EmptyShutdown::new(self.shutdown_when_empty),
            allocated: false,
            state: String::new(),
            taking_over: self.taking_over,
            confirmed,
            started: Instant::now(),
        };
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        'linked: loop {
            let why = tokio::select! {
                _ = drained.cancelled() => break 'linked,
                why = run.linked(&mut sdk) => why,
            };
            Stats::add(&run.stats.agones_sidecar_lost, 1);
            warn!(
                %why,
                "lost the Agones SDK sidecar; players keep playing; reaching it again"
            );
            loop {
                let wait = backoff.next(getrandom::u64().unwrap_or(u64::MAX / 2));
                tokio::select! {
                    _ = drained.cancelled() => break 'linked,
                    _ = tokio::time::sleep(wait) => {}
                }
                if let Ok(Ok(again)) =
                    tokio::time::timeout(CALL_TIMEOUT, Sdk::new(Some(self.port), None)).await
                {
                    sdk = again;
                    backoff.reset();
                    info!("Agones SDK sidecar reached again; registering");
                    break;
                }
            }
        }
        shut_down(sdk, self.port).await;
    }
}

impl Run {
    /// Registers and keeps the GameServer in step while the sidecar answers; says why it
    /// stopped answering.
    async fn linked(&mut self, sdk: &mut Sdk) -> String {
        let gs = match call("GetGameServer", sdk.get_gameserver()).await {
            Ok(gs) => gs,
            Err(f) => return f.into_lost(),
        };
        self.state = gs.status.map(|s| s.state).unwrap_or_default();
        self.allocated = self.state == "Allocated";
        if let Err(why) = self.publish_certs(sdk).await {
            return why;
        }
        if let Err(why) = self.register(sdk).await {
            return why;
        }
        let mut beta = sdk.beta().clone();
        if self.list_kept {
            let capacity = self.capacity.min(MAX_LIST_CAPACITY);
            if self.capacity > MAX_LIST_CAPACITY {
                warn!(
                    max_clients = self.capacity,
                    "an Agones list holds at most {MAX_LIST_CAPACITY} values: the list \
                     {PLAYERS_LIST:?} says the server is full at {MAX_LIST_CAPACITY} players"
                );
            }
            match call(
                "UpdateList(capacity)",
                beta.set_list_capacity(PLAYERS_LIST, capacity as i64),
            )
            .await
            {
                Ok(()) => {}
                Err(Failure::Refused(Code::NotFound, _)) => {
                    warn!(
                        "the GameServer has no list {PLAYERS_LIST:?} (Fleet: spec.template.spec.lists): \
                         the players are not listed, and allocations cannot see the room left"
                    );
                    self.list_kept = false;
                }
                Err(Failure::Refused(_, why)) => warn!(%why, "the players list's capacity"),
                Err(Failure::Lost(why)) => return why,
            }
        }
        if self.list_kept {
            match call("GetList", beta.get_list_values(PLAYERS_LIST)).await {
                Ok(values) => self.list.reset(values, self.started.elapsed()),
                Err(Failure::Refused(_, why)) => warn!(%why, "reading the players list"),
                Err(Failure::Lost(why)) => return why,
            }
        }
        let mut watch = match call("WatchGameServer", sdk.watch_gameserver()).await {
            Ok(w) => w,
            Err(f) => return f.into_lost(),
        };
        let health = sdk.health_check();
        let mut health_timer = tokio::time::interval(self.health_period);
        let mut sync_timer = tokio::time::interval(PLAYERS_SYNC);
        sync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A confirmation that came after `register` read it above is still unseen here.
        let mut awaiting_confirmation = self.taking_over;
        loop {
            tokio::select! {
                changed = self.confirmed.changed(), if awaiting_confirmation => {
                    // Closed: the takeover is over (the server runs on, or exits 1 if it was
                    // not confirmed).
                    awaiting_confirmation = changed.is_ok();
                    if changed.is_ok()
                        && let Err(why) = self.register(sdk).await
                    {
                        return why;
                    }
                }
                _ = health_timer.tick() => {
                    let tick = self.stats.tick.load(Relaxed);
                    match self.gate.period(tick) {
                        Health::Ping => {}
                        Health::Recovered => info!(tick, "the simulation ticks again: Health pings resume"),
                        Health::Stalled { first } => {
                            if first {
                                error!(
                                    tick,
                                    "the simulation has not ticked for {}: Health pings stop \
                                     until it does (Agones marks the server Unhealthy after the \
                                     fleet's failureThreshold)",
                                    humantime::format_duration(self.health_period)
                                );
                            }
                            continue;
                        }
                    }
                    if health.send(()).await.is_err() {
                        return "the Health stream closed".into();
                    }
                }
                _ = sync_timer.tick() => {
                    let seats = self.seated.client_ids();
                    if self.list_kept
                        && let Err(why) = self.sync_players(&mut beta, &seats).await
                    {
                        return why;
                    }
                    if !self.shutdown.is_cancelled()
                        && self.empty.observe(self.started.elapsed(), self.allocated, seats.len())
                    {
                        info!(
                            "allocated and without a player for {}: draining, then Shutdown \
                             (--agones-shutdown-when-empty)",
                            humantime::format_duration(
                                self.empty.after().unwrap_or_default()
                            )
                        );
                        self.shutdown.cancel();
                    }
                }
                changed = self.certs.changed() => {
                    // A rotation made or installed a certificate. (A closed channel: the
                    // server is going; nothing more to publish.)
                    if changed.is_ok()
                        && let Err(why) = self.publish_certs(sdk).await
                    {
                        return why;
                    }
                }
                update = watch.message() => {
                    let gs = match update {
                        Ok(Some(gs)) => gs,
                        Ok(None) => return "the GameServer watch ended".into(),
                        Err(status) => return format!("the GameServer watch: {status}"),
                    };
                    let status = gs.status.unwrap_or_default();
                    if let Some(players) = status.lists.get(PLAYERS_LIST) {
                        self.list.observe(&players.values, self.started.elapsed());
                    }
                    self.state = status.state;
                    let allocated = self.state == "Allocated";
                    if allocated && !self.allocated {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        info!(players = self.seated.client_ids().len(), "Agones: Allocated");
                        if let Err(f) = call(
                            "SetLabel",
                            sdk.set_label(ALLOCATED_LABEL, now.to_string()),
                        )
                        .await
                        {
                            return f.into_lost();
                        }
                    }
                    self.allocated = allocated;
                }
            }
        }
    }

    /// The takeover as it stands, the confirmation marked seen.
    fn takeover(&mut self) -> Takeover {
        match (self.taking_over, *self.confirmed.borrow_and_update()) {
            (false, _) => Takeover::Fresh,
            (true, false) => Takeover::Pending,
            (true, true) => Takeover::Confirmed,
        }
    }

    /// Ready, Allocate or neither, as [`crate::fleet::register`] says for the GameServer's
    /// state as last seen. Ready on an Allocated (or Reserved) server would put it back in the
    /// pool with its players on it; a draining server must not be handed out again.
    async fn register(&mut self, sdk: &mut Sdk) -> Result<(), String> {
        let draining = self.shutdown.is_cancelled();
        let takeover = self.takeover();
        let (ready, allocate) = match crate::fleet::register(&self.state, draining, takeover) {
            Register::Keep => return Ok(()),
            Register::Wait => {
                info!("Agones: not Ready until the takeover is confirmed");
                return Ok(());
            }
            Register::Ready => (true, false),
            Register::Allocate { ready_first } => (ready_first, true),
        };
        if ready {
            // The sockets are bound; Ready once the simulation ticks.
            while Stats::get(&self.stats.ticks) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            call("Ready", sdk.ready())
                .await
                .map_err(Failure::into_lost)?;
            info!(previous_state = self.state.as_str(), "Agones: Ready");
        }
        if allocate {
            call("Allocate", sdk.allocate())
                .await
                .map_err(Failure::into_lost)?;
            info!(
                "Agones: Allocate (by itself: this server runs the world it took over, and \
                 its players are moving here)"
            );
        }
        Ok(())
    }

    /// Sets [`CERT_ANNOTATION`] to the hashes to pin now (nothing with a real certificate).
    async fn publish_certs(&mut self, sdk: &mut Sdk) -> Result<(), String> {
        let hashes = self.certs.borrow_and_update().pinnable();
        let Some(value) = crate::fleet::cert_annotation(&hashes) else {
            return Ok(());
        };
        match call("SetAnnotation", sdk.set_annotation(CERT_ANNOTATION, value)).await {
            Ok(()) => Ok(()),
            Err(Failure::Refused(_, why)) => {
                warn!(%why, "publishing the certificate hashes");
                Ok(())
            }
            Err(Failure::Lost(why)) => Err(why),
        }
    }

    /// Adds the new seats to the list and removes the ones that have ended.
    async fn sync_players(
        &mut self,
        beta: &mut agones::beta::Beta,
        seats: &std::collections::BTreeSet<u64>,
    ) -> Result<(), String> {
        let changes = self.list.changes(seats, self.started.elapsed());
        for id in changes.add {
            match call(
                "AddListValue",
                beta.append_list_value(PLAYERS_LIST, &id.to_string()),
            )
            .await
            {
                Ok(()) | Err(Failure::Refused(Code::AlreadyExists, _)) => {}
                // Full (a matchmaker's reservations and the seats together), or refused for
                // another reason: counted as listed, so it is not asked again every round.
                Err(Failure::Refused(_, why)) => warn!(client_id = id, %why, "listing a player"),
                Err(Failure::Lost(why)) => return Err(why),
            }
            self.list.added(id);
        }
        for id in changes.remove {
            match call(
                "RemoveListValue",
                beta.delete_list_value(PLAYERS_LIST, &id.to_string()),
            )
            .await
            {
                Ok(()) | Err(Failure::Refused(Code::NotFound, _)) => {}
                Err(Failure::Refused(_, why)) => warn!(client_id = id, %why, "unlisting a player"),
                Err(Failure::Lost(why)) => return Err(why),
            }
            self.list.removed(id);
        }
        Ok(())
    }
}

/// `Shutdown`: Agones deletes the GameServer. Tried for [`SHUTDOWN_TRIES_FOR`], the sidecar
/// reached again if it was lost; the server exits either way (its pod is going).
async fn shut_down(mut sdk: Sdk, port: u16) {
    let until = tokio::time::Instant::now() + SHUTDOWN_TRIES_FOR;
    let mut backoff = Backoff::new(RETRY_FIRST, Duration::from_secs(1));
    loop {
        match call("Shutdown", sdk.shutdown()).await {
            Ok(()) => {
                info!("Agones: Shutdown");
                return;
            }
            Err(f) => {
                let why = f.into_lost();
                if tokio::time::Instant::now() >= until {
                    error!(%why, "Agones: Shutdown failed; exiting anyway");
                    return;
                }
                tokio::time::sleep(backoff.next(getrandom::u64().unwrap_or(u64::MAX / 2))).await;
                if let Ok(Ok(again)) =
                    tokio::time::timeout_at(until, Sdk::new(Some(port), None)).await
                {
                    sdk = again;
                }
            }
        }
    }
}
