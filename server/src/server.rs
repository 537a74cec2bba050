//! Wiring: binds the sockets, starts the simulation thread, the WebTransport endpoint and the
//! HTTP side, and shuts them down in order.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arena_shared::map::Map;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wtransport::endpoint::endpoint_side::Server as ServerSide;
use wtransport::{Endpoint, Identity, ServerConfig};

use crate::config::Config;
use crate::http::{self, HttpState};
use crate::metrics::UPKEEP_INTERVAL;
use crate::net::identity::{self, CertHashes, Rotation};
use crate::net::mover::Mover;
use crate::net::{self, NetContext};
use crate::replication::frame::WorldFrame;
use crate::tick::Simulation;

/// Frames the tap holds for a slow subscriber before it starts skipping.
const FRAME_TAP_CAPACITY: usize = 256;
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("binding WebTransport on {addr}: {source}")]
    BindWt {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding HTTP on {addr}: {source}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding the replay viewer on {addr}: {source}")]
    BindViewer {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("viewer token file {0}")]
    ViewerToken(String),
    #[error("invalid idle timeout {0:?}")]
    IdleTimeout(std::time::Duration),
    #[error("token secret file {0}")]
    TokenSecret(String),
    #[error("no randomness for the token secret: {0}")]
    Random(String),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("replay directory {0}")]
    Replay(String),
    #[error("the simulation thread panicked")]
    SimulationPanicked,
    #[error("{0}")]
    Agones(String),
    #[error("taking over: {0}")]
    Takeover(String),
}

/// A server with its sockets bound, ready to [`run`](Server::run).
pub struct Server {
    config: Arc<Config>,
    endpoint: Arc<Endpoint<ServerSide>>,
    http: tokio::net::TcpListener,
    wt_addr: SocketAddr,
    http_addr: SocketAddr,
    /// The replay viewer's listener (`--viewer-bind`), and its token.
    viewer: Option<(tokio::net::TcpListener, SocketAddr)>,
    viewer_token: Option<Vec<u8>>,
    /// The hash of the certificate made at bind (self-signed only).
    cert_sha256: Option<String>,
    /// The hashes `/api/connect` hands out; the rotation task replaces them.
    certs: watch::Sender<CertHashes>,
    /// Self-signed only: when to rotate, the current certificate's expiry and the names the
    /// next one is made for.
    rotation: Option<(Rotation, SystemTime, Vec<String>)>,
    token_secret: Arc<[u8]>,
    token_audience: String,
    map: Arc<Map>,
    stats: Arc<Stats>,
    frame_tap: broadcast::Sender<Arc<WorldFrame>>,
    /// Live and lingering seats (the sessions' registry), made here so that a fleet
    /// integration can follow them before [`run`](Server::run) starts.
    registry: Arc<Mutex<net::registry::Registry>>,
    /// Moves every live session to another server ([`Server::mover`]).
    mover: Mover,
    /// `--take-over-from`: the world to run instead of a new one ([`Server::restore`]).
    restored: Option<crate::handoff::bundle::Bundle>,
    /// Told once the simulation ticks ([`Server::ticking`]).
    ticking: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Makes or loads the certificate and binds both sockets (port 0 picks free ports).
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let extra_names: Vec<String> = config
            .public_url
            .as_deref()
            .and_then(url_host)
            .into_iter()
            .collect();
        let (identity, cert_sha256, rotation) = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => (identity::load(cert, key).await?, None, None),
            _ => {
                let rotation = Rotation::new(
                    config.cert_validity,
                    config.cert_rotate_before,
                    config.token_ttl,
                )?;
                let made = identity::self_signed(&extra_names, config.cert_validity)?;
                info!(
                    cert_sha256 = made.cert_sha256.as_str(),
                    not_after = %humantime::format_rfc3339_seconds(made.not_after),
                    "self-signed certificate made; it is replaced {} before it expires",
                    humantime::format_duration(config.cert_rotate_before)
                );
                (
                    made.identity,
                    Some(made.cert_sha256),
                    Some((rotation, made.not_after, extra_names)),
                )
            }
        };
        let certs = watch::Sender::new(CertHashes {
            current: cert_sha256.clone(),
            next: None,
        });
        let (socket, udp_recv_buffer) = net::bind_udp(config.wt_bind, config.udp_recv_buffer)
            .map_err(|source| ServerError::BindWt {
                addr: config.wt_bind,
                source,
            })?;
        let wt_config = wt_server_config(&config, identity, Some(socket))?;
        let endpoint = Endpoint::server(wt_config).map_err(|source| ServerError::BindWt {
            addr: config.wt_bind,
            source,
        })?;
        let wt_addr = endpoint
            .local_addr()
            .map_err(|source| ServerError::BindWt {
                addr: config.wt_bind,
                source,
            })?;
        let http = tokio::net::TcpListener::bind(config.http_bind)
            .await
            .map_err(|source| ServerError::BindHttp {
                addr: config.http_bind,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| ServerError::BindHttp {
            addr: config.http_bind,
            source,
        })?;

        let viewer = match config.viewer_bind {
            Some(addr) => {
                let bind_error = |source| ServerError::BindViewer { addr, source };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                Some((listener, bound))
            }
            None => None,
        };
        let viewer_token = match &config.viewer_token_file {
            Some(path) => Some(read_viewer_token(path).await?),
            None => None,
        };

        let from_file = match &config.token_secret_file {
            Some(path) => Some(Arc::<[u8]>::from(
                crate::config::read_token_secret(path).map_err(ServerError::TokenSecret)?,
            )),
            None => None,
        };
        let token_secret: Arc<[u8]> = match (from_file, &config.token_secret) {
            (Some(secret), _) => secret,
            (None, Some(s)) => Arc::from(s.as_bytes()),
            (None, None) => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| ServerError::Random(e.to_string()))?;
                warn!(
                    "no token secret configured (--token-secret-file, ARENA_TOKEN_SECRET): using \
                     a random one for this run; tokens signed elsewhere or before are refused"
                );
                Arc::from(&secret[..])
            }
        };
        let token_audience = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://{wt_addr}/"));
        let map = Arc::new(config.map());
        let stats = Arc::new(Stats::new(Duration::from_secs_f64(
            1.0 / f64::from(config.tick_rate.max(1)),
        )));
        if let Some(bytes) = udp_recv_buffer {
            Stats::add(&stats.udp_recv_buffer, bytes as u64);
        }
        let registry = Arc::new(Mutex::new(
            net::registry::Registry::new(
                config.max_clients,
                config.max_per_ip,
                config.resume_grace.as_millis() as u64,
            )
            .exempting_loopback(config.exempt_loopback),
        ));
        Ok(Self {
            config: Arc::new(config),
            endpoint: Arc::new(endpoint),
            http,
            wt_addr,
            http_addr,
            viewer,
            viewer_token,
            cert_sha256,
            certs,
            rotation,
            token_secret,
            token_audience,
            map,
            stats,
            frame_tap: broadcast::channel(FRAME_TAP_CAPACITY).0,
            registry,
            mover: Mover::new(),
            restored: None,
            ticking: None,
        })
    }

    /// The flags it was started with.
    pub fn config(&self) -> Arc<Config> {
        self.config.clone()
    }

    pub fn wt_addr(&self) -> SocketAddr {
        self.wt_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The replay viewer's bound address (`None` with `--viewer-bind off`).
    pub fn viewer_addr(&self) -> Option<SocketAddr> {
        self.viewer.as_ref().map(|(_, addr)| *addr)
    }

    /// Base64 SHA-256 of the self-signed certificate made at bind, the one served when
    /// [`run`](Server::run) starts; `None` with `--cert`. Rotations replace it later
    /// ([`watch_cert_hashes`](Server::watch_cert_hashes) follows them).
    pub fn cert_sha256(&self) -> Option<&str> {
        self.cert_sha256.as_deref()
    }

    /// The certificate hashes `/api/connect` hands out, kept current by the rotation task.
    pub fn watch_cert_hashes(&self) -> watch::Receiver<CertHashes> {
        self.certs.subscribe()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn map(&self) -> Arc<Map> {
        self.map.clone()
    }

    /// The secret that signs connect tokens (for a login service, or a test minting its own).
    pub fn token_secret(&self) -> Arc<[u8]> {
        self.token_secret.clone()
    }

    /// Every tick's quantized world frame (delta mode), for tests and tools that compare what
    /// clients see with the truth. Costs a copy of the frame per tick only while subscribed.
    pub fn frame_tap(&self) -> broadcast::Receiver<Arc<WorldFrame>> {
        self.frame_tap.subscribe()
    }

    /// Who holds a seat, for a fleet's player list (see [`Seated`]).
    pub fn seated(&self) -> Seated {
        Seated(self.registry.clone())
    }

    /// A handle that sends every live session to another server (see [`Mover`]); take it
    /// before [`run`](Server::run), as [`seated`](Server::seated).
    pub fn mover(&self) -> Mover {
        self.mover.clone()
    }

    /// Where players moved here by a live handoff reconnect: the WebTransport URL tokens are
    /// made for, the certificate hashes to pin and the HTTP base.
    pub fn moved_to(&self) -> arena_shared::protocol::MovedTo {
        arena_shared::protocol::MovedTo {
            url: self.token_audience.clone(),
            cert_sha256: self.certs.borrow().pinnable(),
            http: format!("http://{}", self.http_addr),
        }
    }

    /// Runs the world in `bundle` (a live handoff's state) instead of a new one: the
    /// simulation restored at its tick, its seats imported, its next client id. Call before
    /// [`run`](Server::run).
    pub fn restore(&mut self, bundle: crate::handoff::bundle::Bundle) {
        self.restored = Some(bundle);
    }

    /// Resolves once [`run`](Server::run) has started the simulation thread.
    pub fn ticking(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ticking = Some(tx);
        rx
    }

    /// The `server` claim this server requires in tokens.
    pub fn token_audience(&self) -> &str {
        &self.token_audience
    }

    /// Serves until `shutdown` fires, then: stops accepting, tells every session why it ends,
    /// waits for them, stops the simulation, stops HTTP.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let (inbox_tx, inbox_rx) = mpsc::channel(self.config.inbox_capacity.max(1));
        let sim_stop = CancellationToken::new();
        let started = std::time::Instant::now();
        let restored = self.restored.take();
        let mut sim = match &restored {
            None => Simulation::new(
                &self.config,
                self.map.clone(),
                inbox_rx,
                self.stats.clone(),
                Some(self.frame_tap.clone()),
            ),
            Some(bundle) => {
                let (sim, state) = Simulation::restore_from(
                    &self.config,
                    self.map.clone(),
                    inbox_rx,
                    self.stats.clone(),
                    Some(self.frame_tap.clone()),
                    bundle.tick,
                    &bundle.sim,
                );
                let tick = bundle.tick;
                let refused = self
                    .registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .import(bundle.seats.clone(), started.elapsed().as_millis() as u64);
                for r in &refused {
                    warn!(client_id = r.client_id, reason = ?r.reason, "handoff: a seat was not imported");
                }
                info!(
                    tick,
                    state_sha256 = http::handoff::state_sha256(&state).as_str(),
                    received_sha256 = http::handoff::state_sha256(&bundle.sim).as_str(),
                    seats = bundle.seats.len() - refused.len(),
                    "handoff: state restored"
                );
                sim
            }
        };
        // Each tick's snapshots go to their connections from a task of this runtime, once the
        // tick is done (`replication::post`).
        sim.world_mut()
            .resource_mut::<crate::replication::Replicator>()
            .post_on(&tokio::runtime::Handle::current(), self.stats.clone());
        let freezer = sim.freezer();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let names = Arc::new(crate::game::names::Names::default());
        sim.world_mut()
            .insert_resource(crate::game::names::NameDirectory(names.clone()));
        let (replay_writer, run_files) = if self.config.no_replays {
            (None, None)
        } else {
            // A world handed over goes on with the old server's run, under the same flags.
            let continues = restored.as_ref().and_then(|b| b.run.as_ref()).and_then(|link| {
                let same = link.continues_with(&self.config);
                if !same {
                    warn!(
                        run = crate::recording::run_id(link.run_start_unix_ms).as_str(),
                        "handoff: this server's simulation flags differ from the run's; a new run starts"
                    );
                }
                same.then(|| link.continuation())
            });
            let (recorder, writer) =
                crate::recording::start(&self.config, &self.map, self.stats.clone(), continues)
                    .map_err(|e| {
                        ServerError::Replay(format!("{}: {e}", self.config.replay_dir.display()))
                    })?;
            let files = recorder.files();
            sim.set_recorder(recorder);
            (Some(writer), files)
        };
        let sim_thread = {
            let stop = sim_stop.clone();
            std::thread::Builder::new()
                .name("arena-sim".into())
                .spawn(move || sim.run(stop))
                .map_err(|e| ServerError::Random(e.to_string()))?
        };
        if let Some(ticking) = self.ticking.take() {
            let _ = ticking.send(());
        }

        let ctx = Arc::new(NetContext {
            config: self.config.clone(),
            token_secret: self.token_secret.clone(),
            token_audience: self.token_audience.clone(),
            map: self.map.clone(),
            inbox: inbox_tx,
            stats: self.stats.clone(),
            registry: self.registry.clone(),
            used_tokens: Mutex::new(net::UsedTokens::new(self.config.max_used_tokens)),
            handshakes: Mutex::new(net::limits::TokenBucket::new(
                self.config.handshakes_per_sec,
                self.config.handshakes_per_sec,
            )),
            handshakes_per_address: Mutex::new(net::limits::AddressBuckets::new(
                self.config.handshakes_per_sec_per_address,
                self.config.handshake_burst_per_address,
                self.config.max_handshake_addresses,
            )),
            in_flight: Mutex::new(net::in_flight::InFlight::new(
                self.config.max_handshakes_in_flight,
                self.config.retry_above,
                self.config.max_handshakes_in_flight_per_address,
                self.config.exempt_loopback,
            )),
            request_rules: net::request::Rules::from_config(&self.config),
            started,
            names,
            moves: self.mover.watch(),
            frozen: frozen.clone(),
        });
        let mut first_id = [0u8; 4];
        getrandom::fill(&mut first_id).map_err(|e| ServerError::Random(e.to_string()))?;
        let http_state = Arc::new(HttpState {
            token_secret: self.token_secret.clone(),
            token_audience: self.token_audience.clone(),
            public_url: self.config.public_url.clone(),
            wt_addr: self.wt_addr,
            certs: self.certs.subscribe(),
            token_ttl: self.config.token_ttl,
            // Ids differ across runs, so a stale client id never collides with a new one.
            // A handed-over world goes on with the old server's count, so no newcomer gets a
            // seated player's id.
            next_client_id: AtomicU64::new(
                restored
                    .as_ref()
                    .map_or(u64::from(u32::from_le_bytes(first_id)) << 32 | 1, |b| {
                        b.next_client_id
                    }),
            ),
            stats: self.stats.clone(),
            guest_tokens: !self.config.no_guest_tokens,
            connect_limit: http::ConnectLimit::from_config(&self.config),
        });
        let handoff = Arc::new(http::handoff::Handoff {
            config: self.config.clone(),
            http: http_state.clone(),
            verifier: Mutex::new(crate::handoff::auth::Verifier::new(&self.token_secret)),
            handover: Mutex::new(crate::handoff::handover::Handover::new(
                self.config.handoff_timeout,
            )),
            freezer,
            registry: self.registry.clone(),
            started,
            mover: self.mover.clone(),
            stats: self.stats.clone(),
            frozen,
            shutdown: shutdown.clone(),
            pending: Mutex::new(None),
            run: run_files,
        });
        // Our own accept loop, not axum::serve: that one sets no header timeout and no cap.
        let http_task = tokio::spawn(http::serve::serve(
            self.http,
            http::router(http_state)
                .merge(http::handoff::router(handoff))
                .merge(http::page::router()),
            http::serve::HttpLimits::game(&self.config),
            self.stats.clone(),
            shutdown.clone(),
        ));
        // The viewer serves the run directory whether this run records or not (earlier runs).
        let viewer_addr = self.viewer.as_ref().map(|(_, addr)| *addr);
        let viewer_task = self.viewer.map(|(listener, _)| {
            let library = Arc::new(http::replays::Library::dir(
                self.config.replay_dir.clone(),
                http::replays::Settings::of(&self.config, self.viewer_token),
                self.stats.clone(),
            ));
            tokio::spawn(http::replays::serve(library, listener, shutdown.clone()))
        });

        if !self.config.stats_interval.is_zero() {
            tokio::spawn(crate::stats::log_periodically(
                self.stats.clone(),
                self.config.stats_interval,
                shutdown.clone(),
            ));
        }
        tokio::spawn(metrics_upkeep(self.stats.clone(), shutdown.clone()));
        tokio::spawn(crate::memory::trim_periodically(
            self.config.memory_trim_interval,
            self.stats.clone(),
            shutdown.clone(),
        ));
        let rotator = self.rotation.map(|(rotation, not_after, names)| {
            let config = self.config.clone();
            tokio::spawn(net::rotate_identity(
                self.endpoint.clone(),
                not_after,
                rotation,
                move || {
                    let made = identity::self_signed(&names, rotation.validity)
                        .map_err(|e| e.to_string())?;
                    Ok(net::NextIdentity {
                        config: wt_server_config(&config, made.identity, None)
                            .map_err(|e| e.to_string())?,
                        cert_sha256: made.cert_sha256,
                        not_after: made.not_after,
                    })
                },
                self.certs.clone(),
                self.stats.clone(),
                shutdown.clone(),
            ))
        });
        info!(wt = %self.wt_addr, http = %self.http_addr, viewer = ?viewer_addr, "Arena serving");
        net::serve(self.endpoint, ctx, shutdown, TaskTracker::new()).await;
        if let Some(rotator) = rotator {
            rotator.abort();
        }

        sim_stop.cancel();
        let sim_result = tokio::task::spawn_blocking(move || sim_thread.join()).await;
        // The simulation is gone, and its recorder with it: the writer drains what is queued,
        // flushes and ends.
        if let Some(writer) = replay_writer
            && !matches!(
                tokio::task::spawn_blocking(move || writer.join()).await,
                Ok(Ok(()))
            )
        {
            warn!("the replay writer panicked; the replay may end early");
        }
        let http_result = http_task.await;
        // The viewer stopped accepting with the rest; its connections finish within the
        // HTTP side's shutdown grace.
        if let Some(viewer) = viewer_task {
            let _ = viewer.await;
        }
        if !matches!(sim_result, Ok(Ok(()))) {
            return Err(ServerError::SimulationPanicked);
        }
        if let Err(e) = http_result {
            warn!(error = %e, "HTTP task ended abnormally");
        }
        info!("Arena stopped");
        Ok(())
    }
}

/// A handle on the seats: the client ids of every live and lingering player (a player whose
/// connection was lost holds its seat until the end of `--resume-grace`).
#[derive(Clone)]
pub struct Seated(Arc<Mutex<net::registry::Registry>>);

impl Seated {
    pub fn client_ids(&self) -> std::collections::BTreeSet<u64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client_ids()
            .collect()
    }
}

/// `--viewer-token-file`: its bytes, a trailing newline trimmed, at least
/// [`MIN_TOKEN_SECRET`](crate::config::MIN_TOKEN_SECRET) of them.
async fn read_viewer_token(path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| ServerError::ViewerToken(format!("{}: {e}", path.display())))?;
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.len() < crate::config::MIN_TOKEN_SECRET {
        return Err(ServerError::ViewerToken(format!(
            "{}: a token of at least {} bytes is needed",
            path.display(),
            crate::config::MIN_TOKEN_SECRET
        )));
    }
    Ok(text.to_vec())
}

/// The WebTransport endpoint's configuration around `identity`: at bind, on `socket`, and
/// again at each certificate rotation (`None`: the bind address is then unused, the endpoint
/// keeps its socket).
fn wt_server_config(
    config: &Config,
    identity: Identity,
    socket: Option<std::net::UdpSocket>,
) -> Result<ServerConfig, ServerError> {
    let builder = match socket {
        Some(socket) => ServerConfig::builder().with_bind_socket(socket),
        None => ServerConfig::builder().with_bind_address(config.wt_bind),
    };
    Ok(builder
        .with_custom_transport(identity, net::transport_config())
        .keep_alive_interval(Some(config.keep_alive()))
        .max_idle_timeout(Some(config.idle_timeout))
        .map_err(|_| ServerError::IdleTimeout(config.idle_timeout))?
        .build())
}

/// Drains histogram samples into buckets every [`UPKEEP_INTERVAL`], scraped or not.
async fn metrics_upkeep(stats: Arc<Stats>, shutdown: CancellationToken) {
    let mut timer = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => stats.metrics.upkeep(),
        }
    }
}

/// The host part of a URL like `https://host:port/path`, for the certificate's names.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_host_reads_names_and_ip_literals() {
        assert_eq!(
            super::url_host("https://play.example.com:4433/").as_deref(),
            Some("play.example.com")
        );
        assert_eq!(
            super::url_host("https://[::1]:4433/").as_deref(),
            Some("::1")
        );
        assert_eq!(
            super::url_host("https://10.1.2.3/").as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(super::url_host("https:///"), None);
    }
}
