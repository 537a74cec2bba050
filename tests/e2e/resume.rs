//! Liveness and resume: players whose network vanishes (no close frame: a relay drops their
//! packets) are freed within the idle timeout, keep their entity for the grace period, and
//! take it back when they reconnect with their resume token.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use arena_client_sim::connect::{self, Transport};
use arena_client_sim::swarm::{self, SwarmBehaviour};
use arena_server::stats::Stats;
use arena_shared::protocol::codec::{FrameReader, decode_datagram};
use arena_shared::protocol::{
    CLOSE_CLIENT_LEFT, DisconnectReason, RejectReason, ResumeToken, ServerDatagram, ServerMsg,
    Welcome,
};
use tokio::time::Instant;
use wtransport::VarInt;

use crate::common::{self, TestServer, WAIT};
use crate::relay::Relay;

/// A welcomed session, dialled through `via` if given, presenting `resume`.
async fn session(
    server: &TestServer,
    via: Option<&Relay>,
    resume: Option<ResumeToken>,
) -> (Transport, FrameReader, Welcome) {
    let mut info = server.connect_info("p").await;
    if let Some(relay) = via {
        info.url = connect::url_via(&info.url, relay.addr);
    }
    let mut t = server.open(&info).await;
    let mut reader = FrameReader::new();
    let welcome = t
        .resume_handshake(&info.token, "p", resume, &mut reader)
        .await
        .expect("welcome");
    (t, reader, welcome)
}

/// The baseline of the first snapshot the session receives (0: a full snapshot).
async fn first_baseline(t: &Transport) -> u32 {
    let d = tokio::time::timeout(WAIT, t.conn.receive_datagram())
        .await
        .expect("a snapshot in time")
        .expect("connection open");
    match decode_datagram(&d.payload()) {
        Ok(ServerDatagram::Delta(_, delta)) => delta.baseline,
        other => panic!("expected a delta snapshot, got {other:?}"),
    }
}

fn lingering(server: &TestServer) -> u64 {
    Stats::get(&server.stats.lingering)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_players_lost_without_a_close_are_freed_within_the_idle_timeout_and_removed_after_the_grace_period()
 {
    const BOTS: u32 = 50;
    const IDLE: Duration = Duration::from_secs(2);
    const GRACE: Duration = Duration::from_secs(3);
    let server = common::start(&["--idle-timeout", "2s", "--resume-grace", "3s"]).await;
    let relay = Relay::start(server.wt_addr).await;
    let mut config = common::swarm(&server, BOTS, 60, SwarmBehaviour::default(), 11);
    config.connect_via = Some(relay.addr);
    let stop = config.stop.clone();
    let swarm = tokio::spawn(swarm::run(config.clone()));
    common::welcomes_reach(&config, u64::from(BOTS)).await;
    server.sessions_reach(BOTS as usize).await;

    // Their network vanishes, and they are gone for good: what they send from now on,
    // their goodbyes included, never arrives.
    relay.cut();
    let cut = Instant::now();
    stop.cancel();
    server.sessions_reach(0).await;
    let freed = cut.elapsed();
    assert!(
        freed <= IDLE + Duration::from_secs(1),
        "sessions freed {freed:?} after the loss (idle timeout {IDLE:?})"
    );
    assert_eq!(lingering(&server), u64::from(BOTS), "every seat is held");
    assert_eq!(
        server.stats.players(),
        u64::from(BOTS),
        "every entity stays"
    );

    server.players_reach(0).await;
    let removed = cut.elapsed();
    assert!(
        removed >= GRACE && removed <= freed + GRACE + Duration::from_secs(1),
        "entities removed {removed:?} after the loss (sessions freed at {freed:?}, grace {GRACE:?})"
    );
    assert_eq!(lingering(&server), 0);
    eprintln!("{BOTS} lost: sessions freed after {freed:?}, entities removed after {removed:?}");
    let result = tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    assert_eq!(result.report.bots_connected, u64::from(BOTS));
    let closed = server.stats.render_metrics();
    assert!(
        closed.contains(&format!(
            "arena_sessions_closed_total{{reason=\"idle_timeout\"}} {BOTS}"
        )),
        "{closed}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_whose_connection_is_cut_come_back_within_the_grace_period_with_the_same_entity() {
    const BOTS: u32 = 5;
    let server = common::start(&["--idle-timeout", "1500ms", "--resume-grace", "10s"]).await;
    let relay = Relay::start(server.wt_addr).await;
    let mut config = common::swarm(&server, BOTS, 60, SwarmBehaviour::default(), 12);
    config.connect_via = Some(relay.addr);
    let stop = config.stop.clone();
    let swarm = tokio::spawn(swarm::run(config.clone()));
    common::welcomes_reach(&config, u64::from(BOTS)).await;

    relay.cut();
    // Both ends time out (QUIC uses the smaller idle timeout of the two); the bots then
    // reconnect through the relay, which is back by the time the server has noticed.
    server.sessions_reach(0).await;
    relay.restore();
    common::welcomes_reach(&config, 2 * u64::from(BOTS)).await;
    assert_eq!(
        server.stats.players(),
        u64::from(BOTS),
        "nobody got a second entity"
    );
    stop.cancel();
    let result = tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    for bot in &result.bots {
        let [before, after] = &bot.sessions[..] else {
            panic!("{}: sessions {:?}", bot.name, bot.sessions);
        };
        assert!(before.lost.is_some(), "{}: {:?}", bot.name, before);
        assert!(after.resumed, "{}: {:?}", bot.name, after);
        assert_eq!(after.entity, before.entity, "{}", bot.name);
    }
    assert_eq!(result.report.resumes, u64::from(BOTS));
    assert_eq!(Stats::get(&server.stats.sessions_resumed), u64::from(BOTS));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_gives_back_the_entity_with_a_full_snapshot_once_and_only_within_the_grace()
{
    let server = common::start(&["--idle-timeout", "1s", "--resume-grace", "1500ms"]).await;
    let relay = Relay::start(server.wt_addr).await;

    // Lost, then back within the grace period: same client, same entity, a full snapshot.
    let (lost, _, first) = session(&server, Some(&relay), None).await;
    relay.cut();
    server.sessions_reach(0).await;
    assert_eq!(lingering(&server), 1);
    let (back, _, again) = session(&server, None, Some(first.resume_token)).await;
    assert!(again.resumed);
    assert_eq!(
        (again.client_id, again.entity),
        (first.client_id, first.entity)
    );
    assert_ne!(
        again.resume_token, first.resume_token,
        "a new token per session"
    );
    assert_eq!(
        first_baseline(&back).await,
        0,
        "it catches up from a full snapshot"
    );
    assert_eq!(lingering(&server), 0);
    drop(lost);

    // The token was spent: presented again (alone), it admits nobody.
    let info = server.connect_info("p").await;
    let mut t = server.open(&info).await;
    let refused = t
        .resume_handshake("", "p", Some(first.resume_token), &mut FrameReader::new())
        .await;
    assert!(
        matches!(
            &refused,
            Err(connect::ClientError::Rejected {
                reason: RejectReason::TokenMissing,
                ..
            })
        ),
        "{refused:?}"
    );

    // A player who leaves on purpose is removed at once: nothing lingers.
    back.conn.close(VarInt::from_u32(CLOSE_CLIENT_LEFT), b"bye");
    server.players_reach(0).await;
    assert_eq!(lingering(&server), 0);

    // Lost, and back after the grace period: a new player, with a new entity.
    let relay = Relay::start(server.wt_addr).await;
    let (_gone, _, old) = session(&server, Some(&relay), None).await;
    relay.cut();
    server.sessions_reach(0).await;
    server.players_reach(0).await;
    let (_new, _, fresh) = session(&server, None, Some(old.resume_token)).await;
    assert!(!fresh.resumed);
    assert_ne!(fresh.entity, old.entity);
    assert_ne!(fresh.client_id, old.client_id, "the connect token's client");
    server.players_reach(1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_a_new_connection_takes_over_a_session_the_server_still_thinks_live() {
    let server = common::start(&[]).await;
    let (mut zombie, mut zombie_reader, first) = session(&server, None, None).await;
    let (_t, _, again) = session(&server, None, Some(first.resume_token)).await;
    assert!(again.resumed);
    assert_eq!(again.entity, first.entity);
    let reason = loop {
        match tokio::time::timeout(WAIT, zombie.read_msg(&mut zombie_reader))
            .await
            .expect("the old connection hears why")
        {
            Ok((ServerMsg::Disconnect(d), _)) => break d.reason,
            Ok((ServerMsg::Pong(_), _)) => continue,
            other => panic!("expected a Disconnect, got {other:?}"),
        }
    };
    assert_eq!(reason, DisconnectReason::Superseded);
    // The old session's end leaves the new one and its entity alone.
    server.sessions_reach(1).await;
    assert_eq!(server.stats.players(), 1);
    assert_eq!(Stats::get(&server.stats.sessions_resumed), 1);
    assert_eq!(server.stats.lingering.load(Relaxed), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_player_keeps_the_name_its_token_vouched_for_whatever_its_new_hello_says() {
    use arena_shared::replay::{self, Record};
    let dir = std::env::temp_dir().join(format!("arena-e2e-resume-name-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.display().to_string();
    let server = common::start(&[
        "--idle-timeout",
        "1s",
        "--resume-grace",
        "5s",
        "--replay-dir",
        &dir_arg,
    ])
    .await;
    let relay = Relay::start(server.wt_addr).await;
    let mut info = server.connect_info("ada").await;
    info.url = connect::url_via(&info.url, relay.addr);
    let mut lost = server.open(&info).await;
    let first = lost
        .resume_handshake(&info.token, "ada", None, &mut FrameReader::new())
        .await
        .expect("welcome");
    relay.cut();
    server.sessions_reach(0).await;
    drop(lost);

    // Back by its resume token alone, with another name in its Hello.
    let info = server.connect_info("x").await;
    let mut back = server.open(&info).await;
    let again = back
        .resume_handshake(
            "",
            "mallory",
            Some(first.resume_token),
            &mut FrameReader::new(),
        )
        .await
        .expect("welcome");
    assert!(again.resumed);
    server.stop().await;

    // The recording names the resumed player as its token did.
    let mut joins = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the replay directory") {
        let bytes = std::fs::read(entry.expect("an entry").path()).expect("readable");
        for r in replay::read(&bytes).records {
            if let Record::Join {
                client_id,
                name,
                resumed,
                ..
            } = r
                && client_id == first.client_id
            {
                joins.push((name, resumed));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        joins,
        [("ada".to_string(), false), ("ada".to_string(), true)],
        "the vouched name, not the new Hello's"
    );
}
