//! A live handoff freezes the old server: from the signed `POST /api/handoff` until the new
//! server confirms, or `--handoff-timeout` passes, it admits nobody (a newcomer and a resume
//! alike are refused as at shutdown, with a retry hint), while the players it has keep their
//! sessions. A handoff that expires unconfirmed leaves it serving: it admits again.

use std::time::Duration;

use arena_client_sim::connect::{ClientError, Transport, close_error};
use arena_server::handoff::bundle;
use arena_server::http::handoff::PATH;
use arena_server::net::registry::RETRY_AFTER_MS;
use arena_server::stats::Stats;
use arena_server::takeover;
use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{MovedTo, RejectReason, ResumeToken, close_code};
use tokio::time::Instant;
use wtransport::error::ConnectionError;

use crate::common::{self, TestServer, WAIT};

/// Long enough for both refusals (each closes after the server's one-second linger) on a
/// loaded machine; the test waits it out once.
const TIMEOUT: &str = "3s";
const MAX_BUNDLE: usize = 64 << 20;
const EXPIRED: &str = "arena_handoffs_total{outcome=\"expired\"}";

/// Presents `token` (and `resume`) on `t` and expects what a frozen server answers:
/// `Reject(ShuttingDown)` with its retry hint, then a close carrying the same code.
async fn refused_while_frozen(mut t: Transport, token: &str, resume: Option<ResumeToken>) {
    let got = t
        .resume_handshake(token, "late", resume, &mut FrameReader::new())
        .await;
    match got {
        Err(ClientError::Rejected {
            reason,
            retry_after_ms,
            message,
        }) => assert_eq!(
            (reason, retry_after_ms),
            (RejectReason::ShuttingDown, RETRY_AFTER_MS),
            "{message}"
        ),
        Ok(w) => panic!(
            "admitted while frozen: client {}, resumed {}",
            w.client_id, w.resumed
        ),
        Err(e) => panic!("expected Reject(ShuttingDown), got {e:?}"),
    }
    match tokio::time::timeout(WAIT, t.conn.closed())
        .await
        .expect("the server closes")
    {
        ConnectionError::ApplicationClosed(c) => assert_eq!(
            c.code().into_inner(),
            close_code(RejectReason::ShuttingDown.code())
        ),
        other => panic!(
            "expected an application close, got {:?}",
            close_error(other)
        ),
    }
}

/// Waits until the server counts the handoff expired, which it does once it has unfrozen the
/// simulation and reopened admission: nothing else announces it, so the metric is polled.
async fn handoff_expires(server: &TestServer) {
    let deadline = Instant::now() + WAIT;
    while server.metric(EXPIRED) == 0 {
        assert!(Instant::now() < deadline, "the handoff never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_refuses_newcomers_and_resumes_keeps_its_players_and_admits_again_once_the_handoff_expires()
 {
    let server = common::start(&["--handoff-timeout", TIMEOUT]).await;
    let player = server.join("stays").await;
    server.players_reach(1).await;
    // Both dial before the freeze, so that only their Hellos have to fall within it.
    let info = server.connect_info("late").await;
    let newcomer = server.open(&info).await;
    let resumer = server.open(&info).await;

    // Signed with the server's token secret, as the fleet's new server signs it. Nothing
    // confirms, so no one is ever sent to the address it names.
    let to = MovedTo {
        url: "https://127.0.0.1:9/".into(),
        cert_sha256: Vec::new(),
        http: String::new(),
    };
    let (status, body) = takeover::post(
        &server.http,
        PATH,
        &server.secret,
        &bitcode::encode(&to),
        MAX_BUNDLE,
    )
    .await
    .expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let frozen_at = bundle::decode(&body, MAX_BUNDLE).expect("a bundle").tick;

    // The player's own resume token would take its seat over from a new connection (as in
    // resume.rs); frozen, the server refuses it before it looks at the token.
    tokio::join!(
        refused_while_frozen(newcomer, &info.token, None),
        refused_while_frozen(resumer, "", Some(player.welcome.resume_token)),
    );
    assert_eq!(
        server.metric("arena_sessions_rejected_total{reason=\"shutting_down\"}"),
        2
    );
    assert_eq!(Stats::get(&server.stats.sessions_resumed), 0);
    assert_eq!(server.stats.sessions(), 1, "the player keeps its session");

    handoff_expires(&server).await;
    // The player's session lived through the freeze: it gets the ticks run since.
    common::snapshot_after(&player.t, frozen_at).await;
    let late = server.join("late").await;
    assert!(!late.welcome.resumed);
    server.players_reach(2).await;
    common::snapshot_after(&late.t, frozen_at).await;
    assert_eq!(server.stats.sessions(), 2, "the player and the newcomer");
    assert_eq!(server.metric(EXPIRED), 1);
    server.stop().await;
}
