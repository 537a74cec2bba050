//! Moving players: a server tells every live session `Disconnect(Moved)` with another server's
//! connect information, and the bots follow it, presenting their resume token there (back on
//! the same server they get their entity back; on a server that does not know them, they ask
//! its `/api/connect` and come in as new players).

use std::time::Duration;

use arena_client_sim::outcome::{BotOutcome, Session};
use arena_client_sim::swarm::{self, SwarmBehaviour, SwarmResult};
use arena_server::stats::Stats;
use arena_shared::protocol::MovedTo;
use tokio::time::Instant;

use crate::common::{self, TestServer};

/// What a move to `server` tells its players.
fn moved_to(server: &TestServer) -> MovedTo {
    MovedTo {
        url: format!("https://{}/", server.wt_addr),
        cert_sha256: vec![server.cert_sha256.clone().expect("self-signed")],
        http: server.http.clone(),
    }
}

/// Sessions `server` closed by moving them.
fn moved_sessions(server: &TestServer) -> u64 {
    server.metric("arena_sessions_closed_total{reason=\"moved\"}")
}

/// Each bot's sessions before and after its move, once checked that every bot moved once, had
/// its first session end by the move (not lost) and met no error.
fn before_and_after(result: &SwarmResult) -> Vec<(&BotOutcome, &Session, &Session)> {
    result
        .bots
        .iter()
        .map(|bot| {
            let [before, after] = &bot.sessions[..] else {
                panic!("{}: sessions {:?}", bot.name, bot.sessions);
            };
            assert_eq!(bot.moves, 1, "{}", bot.name);
            assert!(before.lost.is_none(), "{}: {before:?}", bot.name);
            assert!(
                bot.errors.is_empty(),
                "{}: {:?}, the last: {:?}",
                bot.name,
                bot.errors,
                bot.last_error
            );
            (bot, before, after)
        })
        .collect()
}

const BOTS: u32 = 10;
const SPREAD: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_moved_to_their_own_server_come_back_resumed_with_the_same_entity_within_the_spread() {
    let a = common::start(&[]).await;
    let config = common::swarm(&a, BOTS, 60, SwarmBehaviour::default(), 31);
    let swarm = tokio::spawn(swarm::run(config.clone()));
    common::welcomes_reach(&config, u64::from(BOTS)).await;
    a.sessions_reach(BOTS as usize).await;

    let moved = Instant::now();
    a.mover.move_everyone(moved_to(&a), SPREAD);
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
    assert_eq!(moved_sessions(&a), u64::from(BOTS));
    // A stranger is not let in after the move: only the seats it sent away come back.
    let info = a.connect_info("late").await;
    let mut t = a.open(&info).await;
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

    let result = common::stop_swarm(&config, swarm).await;
    for (bot, before, after) in before_and_after(&result) {
        assert!(after.resumed, "{}: {after:?}", bot.name);
        assert_eq!(after.entity, before.entity, "{}", bot.name);
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
    let a = common::start(&[]).await;
    let b = common::start(&[]).await;
    let config = common::swarm(&a, BOTS, 60, SwarmBehaviour::default(), 32);
    let swarm = tokio::spawn(swarm::run(config.clone()));
    common::welcomes_reach(&config, u64::from(BOTS)).await;
    a.sessions_reach(BOTS as usize).await;

    a.mover.move_everyone(moved_to(&b), SPREAD);
    common::welcomes_reach(&config, 2 * u64::from(BOTS)).await;
    b.sessions_reach(BOTS as usize).await;
    a.sessions_reach(0).await;
    // A session counts once admitted; its player exists once the simulation has applied the
    // join, at its next tick: await that rather than read the count at once.
    b.players_reach(u64::from(BOTS)).await;
    assert_eq!(Stats::get(&b.stats.sessions_resumed), 0, "B knew no token");
    assert_eq!(moved_sessions(&a), u64::from(BOTS));

    let result = common::stop_swarm(&config, swarm).await;
    for (bot, _, after) in before_and_after(&result) {
        assert!(!after.resumed, "{}: a new player on B: {after:?}", bot.name);
        assert!(after.played > Duration::ZERO, "{}", bot.name);
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
    let a = common::start(&[]).await;
    let mut b = crate::browser::Browser::launch().await;
    b.goto(&format!("{}/?name=mover", a.http)).await;
    let before = b
        .wait_for(
            "(() => { const s = window.arena.stats(); return s.state === 'playing' && s.snapshots >= 30 && s; })()",
            Duration::from_secs(30),
        )
        .await;
    a.mover.move_everyone(moved_to(&a), SPREAD);
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
    assert_eq!(moved_sessions(&a), 1);
    b.close().await;
    a.stop().await;
}

/// Moved to a server that does not know it, the page must ask that server's `/api/connect`,
/// another origin that allows no cross-origin requests: it says why on screen and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_moved_to_a_server_of_another_origin_that_does_not_know_it_says_why_and_stops() {
    let a = common::start(&[]).await;
    let b_server = common::start(&[]).await;
    let mut b = crate::browser::Browser::launch().await;
    b.goto(&format!("{}/?name=mover", a.http)).await;
    b.wait_for(
        "(() => { const s = window.arena.stats(); return s.state === 'playing' && s; })()",
        Duration::from_secs(30),
    )
    .await;
    a.mover.move_everyone(moved_to(&b_server), SPREAD);
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
