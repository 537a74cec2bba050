//! Starting and stopping a real server for a test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arena_client_sim::connect::{self, ConnectInfo, Transport};
use arena_client_sim::report::Report;
use arena_client_sim::swarm::{SwarmBehaviour, SwarmConfig, SwarmResult};
use arena_server::net::mover::Mover;
use arena_server::replication::frame::WorldFrame;
use arena_server::stats::Stats;
use arena_server::{Config, Server, ServerError};
use arena_shared::protocol::codec::{FrameReader, decode_datagram};
use arena_shared::protocol::{ServerDatagram, ServerMsg, Welcome};
use arena_shared::token::{self, Claims};
use clap::Parser;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A swarm of `bots` bots playing for `secs` seconds against `server`.
pub fn swarm(
    server: &TestServer,
    bots: u32,
    secs: u64,
    behaviour: SwarmBehaviour,
    seed: u64,
) -> SwarmConfig {
    SwarmConfig {
        server: server.http.clone(),
        bots,
        ramp_per_s: 200.0,
        play_for: Duration::from_secs(secs),
        seed,
        behaviour,
        idle_timeout: Duration::from_secs(10),
        // No progress line, no impairment, a fresh stop token and counters.
        ..Default::default()
    }
}

/// Runs `config`'s swarm against `server` to its end, once the server counts `sessions`
/// sessions.
pub async fn play_out(server: &TestServer, config: SwarmConfig, sessions: usize) -> SwarmResult {
    let swarm = tokio::spawn(arena_client_sim::swarm::run(config));
    server.sessions_reach(sessions).await;
    tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task")
}

/// Waits until the bots of a swarm have received `n` `Welcome`s in all (every session of
/// every bot counts). A server counts a session before its `Welcome` reaches the bot; this
/// counts on the bots' side.
pub async fn welcomes_reach(config: &SwarmConfig, n: u64) {
    let mut rx = config.live.watch_welcomes();
    let reached = matches!(
        tokio::time::timeout(WAIT, rx.wait_for(|w| *w >= n)).await,
        Ok(Ok(_))
    );
    if !reached {
        panic!("the bots never got {n} welcomes (got {})", *rx.borrow());
    }
}

/// Stops a swarm and waits for its result.
pub async fn stop_swarm(config: &SwarmConfig, swarm: JoinHandle<SwarmResult>) -> SwarmResult {
    config.stop.cancel();
    tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task")
}

/// Every one of `n` bots connected and none lost its session.
pub fn assert_all_played(r: &Report, n: u64) {
    assert_eq!(
        (r.bots_connected, r.bots_failed, r.bots_disconnected),
        (n, 0, 0),
        "{}",
        r.table()
    );
}

/// Long enough for a loaded CI machine, short enough that a hang fails the test.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// The bound addresses (a restart on the same ports binds these again).
    pub wt_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The replay viewer's `http://127.0.0.1:PORT` and address (`None` with `--viewer-bind off`).
    pub viewer: Option<String>,
    pub viewer_addr: Option<SocketAddr>,
    pub stats: Arc<Stats>,
    pub secret: Arc<[u8]>,
    pub audience: String,
    pub cert_sha256: Option<String>,
    /// Every tick's world frame, subscribed before the server started.
    pub frames: Option<tokio::sync::broadcast::Receiver<Arc<WorldFrame>>>,
    /// Moves every session to another server, as a confirmed handoff does.
    pub mover: Mover,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

/// Starts a server on loopback port 0 with a small world; `extra` flags override.
pub async fn start(extra: &[&str]) -> TestServer {
    try_start(extra).await.expect("server binds on loopback")
}

/// Starts a server on the given ports again (as after a restart), waiting for the old
/// sockets to be released: a stopped QUIC endpoint can hold its UDP port a little longer
/// than its server (closing connections drain), and there is no event to wait on for that.
pub async fn restart_on(wt: SocketAddr, http: SocketAddr, extra: &[&str]) -> TestServer {
    let (wt, http) = (wt.to_string(), http.to_string());
    let mut args = vec!["--wt-bind", wt.as_str(), "--http-bind", http.as_str()];
    args.extend_from_slice(extra);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_start(&args).await {
            Ok(server) => return server,
            Err(ServerError::BindWt { .. } | ServerError::BindHttp { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("server restarts on {wt} and {http}: {e}"),
        }
    }
}

/// Starts a server on loopback port 0 with a small world, or says why it could not bind.
pub async fn try_start(extra: &[&str]) -> Result<TestServer, ServerError> {
    let mut args = vec![
        "arena-server",
        "--wt-bind",
        "127.0.0.1:0",
        "--http-bind",
        "127.0.0.1:0",
        // Never the default port: tests start many servers at once.
        "--viewer-bind",
        "127.0.0.1:0",
        "--npcs",
        "50",
        // NPCs that shoot would kill bots whose positions a test checks; the combat tests
        // turn them back on.
        "--npc-combat",
        "false",
        "--log",
        "warn",
    ];
    // Nothing recorded unless a test names a replay directory of its own.
    if !extra.contains(&"--replay-dir") {
        args.push("--no-replays");
    }
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args).expect("valid test flags");
    let server = Server::bind(config).await?;
    let shutdown = CancellationToken::new();
    Ok(TestServer {
        http: format!("http://{}", server.http_addr()),
        wt_addr: server.wt_addr(),
        http_addr: server.http_addr(),
        viewer: server.viewer_addr().map(|a| format!("http://{a}")),
        viewer_addr: server.viewer_addr(),
        stats: server.stats(),
        secret: server.token_secret(),
        audience: server.token_audience().to_string(),
        cert_sha256: server.cert_sha256().map(String::from),
        frames: Some(server.frame_tap()),
        mover: server.mover(),
        shutdown: shutdown.clone(),
        task: tokio::spawn(server.run(shutdown)),
    })
}

impl TestServer {
    /// Cancels and waits for a clean stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in time");
        result
            .expect("server task did not panic")
            .expect("server stopped cleanly");
    }

    /// Waits until the server counts `n` live sessions.
    pub async fn sessions_reach(&self, n: usize) {
        let mut rx = self.stats.watch_sessions();
        tokio::time::timeout(WAIT, rx.wait_for(|s| *s == n))
            .await
            .unwrap_or_else(|_| {
                panic!("sessions never reached {n} (now {})", self.stats.sessions())
            })
            .expect("stats live as long as the server");
    }

    /// Waits until `n` sessions' stream writer tasks are alive (each holds its connection's
    /// QUIC state).
    pub async fn stream_writers_reach(&self, n: usize) {
        let mut rx = self.stats.watch_stream_writers();
        tokio::time::timeout(WAIT, rx.wait_for(|w| *w == n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stream writers never reached {n} (now {})",
                    self.stats.stream_writers()
                )
            })
            .expect("stats live as long as the server");
    }

    /// Waits until the world holds `n` players.
    pub async fn players_reach(&self, n: u64) {
        let mut rx = self.stats.watch_players();
        tokio::time::timeout(WAIT, rx.wait_for(|p| *p == n))
            .await
            .unwrap_or_else(|_| panic!("players never reached {n} (now {})", self.stats.players()))
            .expect("stats live as long as the server");
    }

    /// Waits until the world holds `n` entities.
    pub async fn entities_reach(&self, n: u64) {
        let mut rx = self.stats.watch_entities();
        tokio::time::timeout(WAIT, rx.wait_for(|e| *e == n))
            .await
            .unwrap_or_else(|_| {
                panic!("entities never reached {n} (now {})", self.stats.entities())
            })
            .expect("stats live as long as the server");
    }

    /// The value of the metric series `series` (name and labels, as `/metrics` writes them);
    /// 0 while the series is absent.
    pub fn metric(&self, series: &str) -> u64 {
        self.stats
            .render_metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.parse::<f64>().expect("a numeric sample") as u64)
    }

    /// Waits until the metric series `series` counts at least `n` (checked every 10 ms: the
    /// counters have no watch).
    pub async fn metric_reaches(&self, series: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.metric(series) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} never reached {n} (now {})",
                self.metric(series)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A token signed with the server's own secret, for claims a test chooses.
    pub fn mint(&self, client_id: u64, expires_in_ms: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        token::sign(
            &self.secret,
            &Claims {
                client_id,
                name: "minted".into(),
                expires_at_ms: (now + expires_in_ms).max(0) as u64,
                server: self.audience.clone(),
            },
        )
    }

    /// Connect info from the real `/api/connect`.
    pub async fn connect_info(&self, name: &str) -> ConnectInfo {
        connect::fetch_connect_info(&self.http, name)
            .await
            .expect("/api/connect answers")
    }

    /// An open WebTransport session (before `Hello`).
    pub async fn open(&self, info: &ConnectInfo) -> Transport {
        connect::open(info, Duration::from_secs(10))
            .await
            .expect("QUIC connect on loopback")
    }

    /// A welcomed session for `name`, by a fresh `/api/connect` (pinning the hashes it gives).
    pub async fn join(&self, name: &str) -> Joined {
        let info = self.connect_info(name).await;
        let mut t = self.open(&info).await;
        let mut reader = FrameReader::new();
        let welcome = t
            .handshake(&info.token, name, &mut reader)
            .await
            .expect("welcome");
        Joined {
            info,
            t,
            reader,
            welcome,
        }
    }
}

/// Reads the stream until the `Pong` for `nonce`, past game events; returns the nonces of the
/// other pongs read on the way. Anything else fails the test.
pub async fn pong_on_stream(t: &mut Transport, reader: &mut FrameReader, nonce: u32) -> Vec<u32> {
    let mut others = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, t.read_msg(reader))
            .await
            .expect("a pong in time")
        {
            Ok((ServerMsg::Pong(p), _)) if p.nonce == nonce => return others,
            Ok((ServerMsg::Pong(p), _)) => others.push(p.nonce),
            Ok((ServerMsg::Event(_), _)) => {}
            other => panic!("expected pong {nonce}, got {other:?}"),
        }
    }
}

/// Reads snapshots until one for a tick after `after`; returns its tick.
pub async fn snapshot_after(t: &Transport, after: u32) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = tokio::time::timeout_at(deadline, t.conn.receive_datagram())
            .await
            .expect("a snapshot in time")
            .expect("connection open");
        match decode_datagram(&d.payload()) {
            Ok(ServerDatagram::Delta(_, delta)) if delta.tick > after => return delta.tick,
            Ok(ServerDatagram::Delta(..)) => {}
            other => panic!("expected a delta snapshot, got {other:?}"),
        }
    }
}

/// What [`TestServer::join`] gives.
pub struct Joined {
    pub info: ConnectInfo,
    pub t: Transport,
    pub reader: FrameReader,
    pub welcome: Welcome,
}
