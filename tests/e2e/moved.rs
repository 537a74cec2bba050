//! Moving players: a server tells every live session `Disconnect(Moved)` with another server's
//! connect information, and the bots follow it, presenting their resume token there (back on
//! the same server they get their entity back; on a server that does not know them, they ask
//! its `/api/connect` and come in as new players).

use std::sync::Arc;
use std::time::Duration;

use arena_client_sim::swarm::{self, SwarmBehaviour, SwarmResult};
use arena_server::net::mover::Mover;
use arena_server::stats::Stats;
use arena_server::{Config, Server, ServerError};
use arena_shared::protocol::MovedTo;
use clap::Parser;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{self, WAIT};

/// A server on loopback port 0 whose sessions a test can move (the common helpers do not
/// keep its [`Mover`]).
struct Movable {
    http: String,
    wt_addr: std::net::SocketAddr,
    stats: Arc<Stats>,
    cert_sha256: String,
    mover: Mover,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Movable {
    async fn start() -> Self {
        let config = Config::try_parse_from([
            "arena-server",
            "--wt-bind",
            "127.0.0.1:0",
            "--http-bind",
            "127.0.0.1:0",
            "--viewer-bind",
            "off",
            "--npcs",
            "50",
            "--npc-combat",
            "false",
            "--no-replays",
            "--log",
            "warn",
        ])
        .expect("valid test flags");
        let server = Server::bind(config)
            .await
            .expect("server binds on loopback");
        let shutdown = CancellationToken::new();
        Self {
            http: format!("http://{}", server.http_addr()),
            wt_addr: server.wt_addr(),
            stats: server.stats(),
            cert_sha256: server.cert_sha256().expect("self-signed").to_string(),
            mover: server.mover(),
            shutdown: shutdown.clone(),
            task: tokio::spawn(server.run(shutdown)),
        }
    }

    /// What a move to this server tells its players.
    fn moved_to(&self) -> MovedTo {
        MovedTo {
            url: format!("https://{}/", self.wt_addr),
            cert_sha256: vec![self.cert_sha256.clone()],
            http: self.http.clone(),
        }
    }

    async fn sessions_reach(&self, n: usize) {
        let mut rx = self.stats.watch_sessions();
        tokio::time::timeout(WAIT, rx.wait_for(|s| *s == n))
            .await
            .unwrap_or_else(|_| {
                panic!("sessions never reached {n} (now {})", self.stats.sessions())
            })
            .expect("stats live as long as the server");
    }

    fn moved_sessions(&self) -> String {
        self.stats
            .render_metrics()
            .lines()
            .find(|l| l.starts_with("arena_sessions_closed_total{reason=\"moved\"}"))
            .unwrap_or("none")
            .to_string()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in time")
            .expect("server task did not panic")
            .expect("server stopped cleanly");
    }
}

/// A swarm of `bots` on `server` for a minute, running, and its config.
fn swarm_on(
    server: &Movable,
    bots: u32,
    seed: u64,
) -> (
    arena_client_sim::swarm::SwarmConfig,
    JoinHandle<SwarmResult>,
) {
    let config = arena_client_sim::swarm::SwarmConfig {
        server: server.http.clone(),
        bots,
        ramp_per_s: 200.0,
        play_for: Duration::from_secs(60),
        seed,
        behaviour: SwarmBehaviour::default(),
        idle_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let task = tokio::spawn(swarm::run(config.clone()));
    (config, task)
}

const BOTS: u32 = 10;
const SPREAD: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_moved_to_their_own_server_come_back_resumed_with_the_same_entity_within_the_spread() {
    let a = Movable::start().await;
    let (config, swarm) = swarm_on(&a, BOTS, 31);
    common::welcomes_reach(&config, u64::from(BOTS)).await;
    a.sessions_reach(BOTS as usize).await;

    let moved = Instant::now();
    a.mover.move_everyone(a.moved_to(), SPREAD);
    assert!(a.mover.moved());
    common::welcomes_reach(&config, 2 * u64::from(BOTS)).await;
    let back = moved.elapsed();
    assert!(
        back <= SPREAD + Duration::from_secs(2),
        "the last bot was back {back:?} after the move (spread {SPREAD:?})"
    );
    a.sessions_reach(BOTS as usize).await;
    assert_eq!(
        a.stats.players(),
        u64::from(BOTS),
        "nobody got a second entity"
    );
    assert_eq!(Stats::get(&a.stats.sessions_resumed), u64::from(BOTS));
    assert_eq!(
        a.moved_sessions(),
        format!("arena_sessions_closed_total{{reason=\"moved\"}} {BOTS}")
    );
    // A stranger is not let in after the move: only the seats it sent away come back.
    let info = arena_client_sim::connect::fetch_connect_info(&a.http, "late")
        .await
        .expect("/api/connect answers");
    let mut t = arena_client_sim::connect::open(&info, Duration::from_secs(10))
        .await
        .expect("QUIC connect on loopback");
    let refused = t
        .handshake(
            &info.token,
            "late",
            &mut arena_shared::protocol::codec::FrameReader::new(),
        )
        .await;
    assert!(
        matches!(
            &refused,
            Err(arena_client_sim::connect::ClientError::Rejected {
                reason: arena_shared::protocol::RejectReason::ShuttingDown,
                ..
            })
        ),
        "{refused:?}"
    );

    config.stop.cancel();
    let result = tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    for bot in &result.bots {
        let [before, after] = &bot.sessions[..] else {
            panic!("{}: sessions {:?}", bot.name, bot.sessions);
        };
        assert_eq!(bot.moves, 1, "{}", bot.name);
        assert!(before.lost.is_none(), "{}: {before:?}", bot.name);
        assert!(after.resumed, "{}: {after:?}", bot.name);
        assert_eq!(after.entity, before.entity, "{}", bot.name);
        assert!(bot.errors.is_empty(), "{}: {:?}", bot.name, bot.errors);
    }
    // Spread over the window, not all at once: ten draws over a second span far more than a
    // quarter of it (all within a quarter: a chance of about 4 in 100,000).
    let returns = result.bots.iter().map(|b| b.sessions[1].welcomed_at);
    let span = returns.clone().max().unwrap() - returns.min().unwrap();
    assert!(
        span >= SPREAD / 4,
        "the bots came back within {span:?} of each other"
    );
    let r = &result.report;
    common::assert_all_played(r, u64::from(BOTS));
    assert_eq!((r.moves, r.resumes), (u64::from(BOTS), u64::from(BOTS)));
    eprintln!(
        "{BOTS} bots moved to their own server: all back after {back:?}, returns spread over {span:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_moved_to_a_server_that_does_not_know_them_fall_back_to_its_connect_and_play_there() {
    let a = Movable::start().await;
    let b = Movable::start().await;
    let (config, swarm) = swarm_on(&a, BOTS, 32);
    common::welcomes_reach(&config, u64::from(BOTS)).await;
    a.sessions_reach(BOTS as usize).await;

    a.mover.move_everyone(b.moved_to(), SPREAD);
    common::welcomes_reach(&config, 2 * u64::from(BOTS)).await;
    b.sessions_reach(BOTS as usize).await;
    a.sessions_reach(0).await;
    // A session counts once admitted; its player exists once the simulation has applied the
    // join, at its next tick: await that rather than read the count at once.
    let mut players = b.stats.watch_players();
    tokio::time::timeout(WAIT, players.wait_for(|p| *p == u64::from(BOTS)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "B's players never reached {BOTS} (now {})",
                b.stats.players()
            )
        })
        .expect("stats live as long as the server");
    assert_eq!(Stats::get(&b.stats.sessions_resumed), 0, "B knew no token");
    assert_eq!(
        a.moved_sessions(),
        format!("arena_sessions_closed_total{{reason=\"moved\"}} {BOTS}")
    );

    config.stop.cancel();
    let result = tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    for bot in &result.bots {
        let [before, after] = &bot.sessions[..] else {
            panic!("{}: sessions {:?}", bot.name, bot.sessions);
        };
        assert_eq!(bot.moves, 1, "{}", bot.name);
        assert!(before.lost.is_none(), "{}: {before:?}", bot.name);
        assert!(!after.resumed, "{}: a new player on B: {after:?}", bot.name);
        assert!(after.played > Duration::ZERO, "{}", bot.name);
        assert!(bot.errors.is_empty(), "{}: {:?}", bot.name, bot.errors);
    }
    let r = &result.report;
    common::assert_all_played(r, u64::from(BOTS));
    assert_eq!((r.moves, r.resumes), (u64::from(BOTS), 0));
    b.stop().await;
    a.stop().await;
}

/// The browser page follows a move to its own server and takes its entity back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_follows_a_move_to_its_own_server_and_resumes_its_entity() {
    let a = Movable::start().await;
    let mut b = crate::browser::Browser::launch().await;
    b.goto(&format!("{}/?name=mover", a.http)).await;
    let before = b
        .wait_for(
            "(() => { const s = window.arena.stats(); return s.state === 'playing' && s.snapshots >= 30 && s; })()",
            Duration::from_secs(30),
        )
        .await;
    a.mover.move_everyone(a.moved_to(), SPREAD);
    let after = b
        .wait_for(
            "(() => { const s = window.arena.stats(); return s.state === 'playing' && s.sessions >= 2 && s.snapshots >= 10 && s; })()",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(after["resumed"], true, "{after}");
    assert_eq!(
        after["entity"], before["entity"],
        "the same entity: {after}"
    );
    assert_eq!(after["sessions"], 2, "one move, one reconnect: {after}");
    // It went straight to the server named, with its resume token alone: the only token it
    // ever asked for is its first.
    let asked = b
        .eval("performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/connect')).length")
        .await;
    assert_eq!(asked, 1, "/api/connect requests");
    assert_eq!(Stats::get(&a.stats.sessions_resumed), 1);
    assert_eq!(
        a.moved_sessions(),
        "arena_sessions_closed_total{reason=\"moved\"} 1"
    );
    b.close().await;
    a.stop().await;
}

/// Moved to a server that does not know it, the page must ask that server's `/api/connect`,
/// another origin that allows no cross-origin requests: it says why on screen and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_moved_to_a_server_of_another_origin_that_does_not_know_it_says_why_and_stops() {
    let a = Movable::start().await;
    let b_server = Movable::start().await;
    let mut b = crate::browser::Browser::launch().await;
    b.goto(&format!("{}/?name=mover", a.http)).await;
    b.wait_for(
        "(() => { const s = window.arena.stats(); return s.state === 'playing' && s; })()",
        Duration::from_secs(30),
    )
    .await;
    a.mover.move_everyone(b_server.moved_to(), SPREAD);
    let message = b
        .wait_for(
            "(() => { const m = document.getElementById('message'); return m.textContent.includes('cannot be asked from this page') && m.textContent; })()",
            Duration::from_secs(20),
        )
        .await;
    eprintln!("the page says: {message}");
    assert!(
        message.as_str().is_some_and(|m| m.contains(&b_server.http)),
        "{message}"
    );
    assert_eq!(b_server.stats.sessions(), 0, "it never joined B");
    b.close().await;
    b_server.stop().await;
    a.stop().await;
}
