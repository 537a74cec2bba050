//! Live handoff between two real `arena-server` processes on loopback: B started with
//! `--take-over-from A` takes A's world over and A's bots and a Chromium page follow it
//! there; a stranger's request is refused and changes nothing; a B that dies before
//! confirming leaves A serving.

mod common;

// The e2e tests' Chromium harness, shared rather than copied; this file uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/e2e/browser.rs"]
mod browser;

use std::time::Duration;

use arena_client_sim::swarm::{self, SwarmConfig, SwarmResult};
use arena_server::http::handoff::{CONFIRM_PATH, PATH};
use arena_server::takeover;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use browser::Browser;
use common::{SecretFile, ServerProcess, WAIT, between};

const SECRET: &[u8] = b"handoff-test-secret-of-at-least-32-bytes";
const TIMEOUT: Duration = Duration::from_secs(2);

fn start_swarm(
    server: &ServerProcess,
    bots: u32,
    seed: u64,
) -> (SwarmConfig, JoinHandle<SwarmResult>) {
    let config = common::swarm(server, bots, seed);
    let task = tokio::spawn(swarm::run(config.clone()));
    (config, task)
}

/// The first log line containing `needle`.
fn line_with(server: &ServerProcess, needle: &str) -> Option<String> {
    server
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|l| l.contains(needle))
        .cloned()
}

/// The value of a `key=value` field in a tracing line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let pattern = format!(" {key}=");
    let from = line
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pattern.len();
    line[from..].split(' ').next().unwrap_or_default()
}

async fn healthz_tick(server: &ServerProcess) -> u64 {
    let health: serde_json::Value =
        serde_json::from_str(&server.get("/healthz").await).expect("healthz JSON");
    health["tick"].as_u64().expect("a tick")
}

/// The value of one metric line (`name{labels} value`), 0 when absent.
async fn metric(server: &ServerProcess, line_start: &str) -> u64 {
    server
        .get("/metrics")
        .await
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A `POST` with no signature header at all.
async fn post_unsigned(http: &str, path: &str) -> u16 {
    let authority = http.strip_prefix("http://").expect("an http base");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connects");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("an answer");
    between(&answer, "HTTP/1.1 ", " ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer}"))
}

/// Every bot played one session from start to stop: none was lost, none errored.
fn kept_their_sessions(result: &SwarmResult) {
    for bot in &result.bots {
        assert_eq!(bot.sessions.len(), 1, "{}: {:?}", bot.name, bot.sessions);
        assert!(
            bot.sessions[0].lost.is_none(),
            "{}: {:?}",
            bot.name,
            bot.sessions
        );
        assert!(bot.errors.is_empty(), "{}: {:?}", bot.name, bot.errors);
    }
}

/// A carried on after a handoff that expired (counted once), its bots still connected, each
/// having kept its one session.
async fn served_on(
    a: &ServerProcess,
    bots_n: u32,
    bots: &SwarmConfig,
    swarm: JoinHandle<SwarmResult>,
) {
    assert_eq!(
        metric(a, "arena_handoffs_total{outcome=\"expired\"}").await,
        1
    );
    assert_eq!(
        metric(a, "arena_clients_connected ").await,
        u64::from(bots_n)
    );
    kept_their_sessions(&common::stop(bots, swarm).await);
}

/// A condition on the page: it plays its `sessions`-th session (or a later one) and has
/// applied `snapshots` snapshots of it; its value is then `window.arena.stats()`.
fn page_playing(sessions: u32, snapshots: u32) -> String {
    format!(
        "(() => {{ const s = window.arena.stats(); return s.state === 'playing' \
         && s.sessions >= {sessions} && s.snapshots >= {snapshots} && s; }})()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_world_moves_to_the_new_server_bit_for_bit_and_its_bots_follow() {
    const BOTS: u32 = 50;
    // The bots and the page.
    const PLAYERS: u64 = BOTS as u64 + 1;
    let t0 = Instant::now();
    let secret = SecretFile::new("handoff-moves", SECRET);
    let world = ["--npcs", "1000", "--token-secret-file", secret.path()];
    // Chromium starts while A does: both take a while, and neither needs the other.
    let a_flags = [&world[..], &["--handoff-spread", "1s"]].concat();
    let (mut a, mut page) = tokio::join!(ServerProcess::start(&a_flags), Browser::launch());
    let (bots, swarm) = start_swarm(&a, BOTS, 20);
    page.goto(&format!("{}/?name=page", a.http)).await;
    common::welcomes_reach(&bots, u64::from(BOTS)).await;
    // Let the bots, the page and the NPCs (which fight by default) play a second first, so
    // the world handed over has moved, fought and died: 30 snapshots of the page at 30 Hz.
    let before = page.wait_for(&page_playing(1, 30), WAIT).await;

    let mut b = ServerProcess::start(&[&world[..], &["--take-over-from", &a.http]].concat()).await;
    let status = a
        .exit_within(WAIT)
        .await
        .expect("A exits once it has handed over");
    assert!(status.success(), "A exits 0: {status:?}\n{}", a.log_text());
    a.log_complete().await;
    // Every bot is welcomed a second time: by B.
    common::welcomes_reach(&bots, u64::from(2 * BOTS)).await;
    let after = page.wait_for(&page_playing(2, 10), WAIT).await;

    let captured = line_with(&a, "handoff: state captured").expect("A logged its capture");
    let restored = line_with(&b, "handoff: state restored").expect("B logged its restore");
    let tick: u64 = field(&captured, "tick").parse().expect("a tick");
    assert_eq!(field(&restored, "tick"), field(&captured, "tick"));
    assert_eq!(
        field(&restored, "received_sha256"),
        field(&captured, "state_sha256"),
        "B received A's state"
    );
    // Same health and score: the state hashed holds every entity's health and every
    // player's kills and deaths (with every NPC and projectile), so equal hashes are that
    // check, to the bit. The page's own numbers cannot add to it: its HUD starts afresh at
    // each Welcome (`Hud::new` in web/src/screen.rs) and learns health and score only from
    // later events, so after resuming it shows full health and no score until something
    // happens, whatever the server holds; the bots count kills from events, not the totals.
    assert_eq!(
        field(&restored, "state_sha256"),
        field(&captured, "state_sha256"),
        "B's restored world captures as A's did"
    );
    assert!(healthz_tick(&b).await > tick, "B ticks on after {tick}");
    // No new player on B: every session it opened resumed a seat A handed over, and its
    // players are the ones A had (a join would add an entity).
    assert_eq!(
        metric(&b, "arena_sessions_resumed_total").await,
        PLAYERS,
        "every bot and the page resumed on B"
    );
    assert_eq!(
        metric(&b, "arena_sessions_opened_total").await,
        PLAYERS,
        "B opened no session that was not a resume"
    );
    assert_eq!(metric(&b, "arena_players ").await, PLAYERS, "B's players");

    // The page, as the e2e test of a move within one server asks it: the same entity, back
    // with its resume token alone (its only `/api/connect` was its first, on A).
    assert_eq!(after["resumed"], true, "{after}");
    assert_eq!(
        after["entity"], before["entity"],
        "the same entity: {after}"
    );
    assert_eq!(after["sessions"], 2, "one move, one reconnect: {after}");
    assert_eq!(after["name"], "page", "{after}");
    let asked = page
        .eval(
            "performance.getEntriesByType('resource') \
             .filter((e) => e.name.includes('/api/connect')).length",
        )
        .await;
    assert_eq!(asked, 1, "/api/connect requests");

    let result = common::stop(&bots, swarm).await;
    for bot in &result.bots {
        assert_eq!(bot.sessions.len(), 2, "{}: {:?}", bot.name, bot.sessions);
        let (before, after) = (&bot.sessions[0], &bot.sessions[1]);
        assert!(after.resumed, "{}: {after:?}", bot.name);
        assert_eq!(after.entity, before.entity, "{}", bot.name);
        assert_eq!(bot.moves, 1, "{}", bot.name);
    }
    page.close().await;

    // The replay goes on across the handoff: B records the same run from the file number A
    // gave away, and `replay verify` re-simulates A's files and B's as one run.
    b.sigterm();
    let status = b.exit_within(WAIT).await.expect("B drains and exits");
    assert!(status.success(), "B exits 0: {status:?}");
    let files = |dir: &std::path::Path| {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("a replay directory")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "replay"))
            .collect();
        files.sort();
        files
    };
    let (a_files, b_files) = (files(&a.replays), files(&b.replays));
    let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let last_a = name(a_files.last().expect("A recorded"));
    let (run, number) = last_a
        .strip_suffix(".replay")
        .and_then(|n| n.rsplit_once('-'))
        .expect("arena-<run>-<n>.replay");
    let next: u32 = number.parse::<u32>().expect("a file number") + 1;
    assert_eq!(
        b_files.iter().map(name).collect::<Vec<_>>(),
        [format!("{run}-{next:04}.replay")],
        "B's file goes on with A's run"
    );
    let verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args(["replay", "verify"])
        .args(a_files.iter().chain(&b_files))
        .output()
        .await
        .expect("arena-server replay verify runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success(), "replay verify: {said}");
    eprintln!("replay verify over {last_a} and B's file: {said}");
    eprintln!(
        "{BOTS} bots and a page handed over at tick {tick}: test took {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_and_a_second_request_waits_its_turn() {
    const BOTS: u32 = 3;
    let secret = SecretFile::new("handoff-refused", SECRET);
    let a = ServerProcess::start(&[
        "--npcs",
        "50",
        "--token-secret-file",
        secret.path(),
        "--handoff-timeout",
        "1s",
    ])
    .await;
    let (bots, swarm) = start_swarm(&a, BOTS, 21);
    common::welcomes_reach(&bots, u64::from(BOTS)).await;

    assert_eq!(post_unsigned(&a.http, PATH).await, 403, "no signature");
    assert_eq!(
        post_unsigned(&a.http, CONFIRM_PATH).await,
        403,
        "no signature"
    );
    let wrong = b"another-fleet-secret-of-at-least-32-bytes";
    let body = bitcode::encode(&arena_shared::protocol::MovedTo {
        url: "https://127.0.0.1:9/".into(),
        cert_sha256: Vec::new(),
        http: String::new(),
    });
    let (status, _) = takeover::post(&a.http, PATH, wrong, &body, 1 << 20)
        .await
        .expect("an answer");
    assert_eq!(status, 403, "a wrong secret");
    let before = healthz_tick(&a).await;

    // The right secret freezes A; a second request meanwhile is refused with 409.
    let (status, state) = takeover::post(&a.http, PATH, SECRET, &body, 64 << 20)
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    let bundle = arena_server::handoff::bundle::decode(&state, 64 << 20).expect("a bundle");
    assert!(u64::from(bundle.tick) >= before);
    assert_eq!(bundle.seats.len(), BOTS as usize);
    let (status, _) = takeover::post(&a.http, PATH, SECRET, &body, 1 << 20)
        .await
        .expect("an answer");
    assert_eq!(status, 409, "one handoff at a time");
    // Never confirmed: A unfreezes at its timeout and serves on.
    let deadline = Instant::now() + TIMEOUT + WAIT;
    while healthz_tick(&a).await <= u64::from(bundle.tick) + 1 {
        assert!(Instant::now() < deadline, "A never unfroze");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&a, "arena_handoffs_total{outcome=\"refused\"}").await,
        4
    );
    served_on(&a, BOTS, &bots, swarm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_dying_before_it_confirms_leaves_the_old_one_serving() {
    const BOTS: u32 = 5;
    let secret = SecretFile::new("handoff-dies", SECRET);
    let world = ["--npcs", "200", "--token-secret-file", secret.path()];
    let a = ServerProcess::start(&[&world[..], &["--handoff-timeout", "2s"]].concat()).await;
    let (bots, swarm) = start_swarm(&a, BOTS, 22);
    common::welcomes_reach(&bots, u64::from(BOTS)).await;

    let mut b = ServerProcess::start(
        &[
            &world[..],
            &["--take-over-from", &a.http, "--debug-exit-before-confirm"],
        ]
        .concat(),
    )
    .await;
    let status = b.exit_within(WAIT).await.expect("B exits");
    let died = Instant::now();
    assert_eq!(status.code(), Some(1), "{}", b.log_text());
    b.log_complete().await;
    let restored = line_with(&b, "handoff: state restored").expect("B got the state");
    let tick: u64 = field(&restored, "tick").parse().expect("a tick");

    // No event tells the test that A's simulation moves again: its tick is polled.
    while healthz_tick(&a).await <= tick + 1 {
        assert!(
            died.elapsed() < TIMEOUT + Duration::from_secs(1),
            "A still frozen {:?} after B died",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served_on(&a, BOTS, &bots, swarm).await;
}
