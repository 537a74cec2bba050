//! `arena-server --agones` as a child process against an Agones SDK sidecar double
//! (`tools/agones-double`: the official `sdk.proto` and `beta.proto` services, every call
//! recorded with its time), with real bots over QUIC. Kubernetes and the real sidecar cannot
//! run here; what the server says to the sidecar, and when, is all tested here.
//!
//! Needs the server built with the feature `agones` (README's test command enables it).
#![cfg(all(target_os = "linux", feature = "agones"))]

mod common;
// The e2e tests' UDP relay that a test can cut (a player's network vanishing); its `restore`
// is not needed here.
#[path = "../../tests/e2e/relay.rs"]
#[allow(dead_code)]
mod relay;

use std::time::{Duration, Instant};

use arena_agones_double::{Call, Double, Init};
use arena_client_sim::swarm::{self, SwarmConfig};
use arena_server::fleet::{ALLOCATED_LABEL, CERT_ANNOTATION, HTTP_PORT, PLAYERS_LIST, WT_PORT};

use common::*;

/// The Health period the tests run with (the default is 2 s).
const HEALTH_PERIOD: Duration = Duration::from_millis(200);

/// A UDP port free on loopback now: the GameServer's host port for `wt`, which the server
/// must bind (in a pod, Agones maps the host port to the container port).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// A double whose GameServer has the fleet's ports and list, `wt` on `wt_port`.
fn double(wt_port: u16, capacity: i64) -> Double {
    Double::start(init(wt_port, capacity)).expect("the double starts")
}

fn init(wt_port: u16, capacity: i64) -> Init {
    Init {
        name: "arena-fleet-7x2k9".into(),
        address: "127.0.0.1".into(),
        ports: vec![(WT_PORT.into(), wt_port), (HTTP_PORT.into(), 7654)],
        lists: vec![(PLAYERS_LIST.into(), capacity)],
        ..Init::default()
    }
}

/// `arena-server --agones` against `double`, its WebTransport endpoint on `wt_port`.
async fn start(double: &Double, wt_port: u16, extra: &[&str]) -> ServerProcess {
    let wt_bind = format!("127.0.0.1:{wt_port}");
    let period = format!("{}ms", HEALTH_PERIOD.as_millis());
    let mut args = vec![
        "--agones",
        "--agones-health-period",
        &period,
        "--agones-connect-timeout",
        "10s",
        "--wt-bind",
        &wt_bind,
        "--npcs",
        "100",
        "--max-clients",
        "50",
        "--no-replays",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_with_env(
        &args,
        &[("AGONES_SDK_GRPC_PORT", double.port().to_string())],
    )
    .await
}

fn listed(double: &Double) -> Vec<String> {
    double
        .list(PLAYERS_LIST)
        .map(|(_, values)| values)
        .unwrap_or_default()
}

/// The certificate hashes the server published on its GameServer.
fn cert_annotation(double: &Double) -> Option<String> {
    double.game_server().object_meta.and_then(|m| {
        m.annotations
            .get(&format!(
                "{}{CERT_ANNOTATION}",
                arena_agones_double::METADATA_PREFIX
            ))
            .cloned()
    })
}

/// Whether the list holds `n` values within `within`.
async fn listed_within(double: &Double, n: usize, within: Duration) -> bool {
    double.wait_for(|_| listed(double).len() == n, within).await
}

fn named<'a>(calls: &'a [Call], rpc: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.rpc == rpc).collect()
}

/// The gaps between consecutive Health pings from `from` on.
fn health_gaps(calls: &[Call], from: Instant) -> Vec<Duration> {
    let pings: Vec<Instant> = named(calls, "Health")
        .into_iter()
        .map(|c| c.at)
        .filter(|at| *at >= from)
        .collect();
    pings.windows(2).map(|w| w[1] - w[0]).collect()
}

async fn wait_for_call(double: &Double, rpc: &str, within: Duration) -> Call {
    let seen = double
        .wait_for(|calls| calls.iter().any(|c| c.rpc == rpc), within)
        .await;
    assert!(seen, "no {rpc} within {within:?}: {:?}", double.calls());
    double
        .calls()
        .into_iter()
        .find(|c| c.rpc == rpc)
        .expect("seen above")
}

fn bots(server: &ServerProcess, n: u32, seed: u64) -> SwarmConfig {
    swarm(server, n, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_server_is_ready_once_bound_pings_health_lists_its_players_and_shuts_down_after_the_drain()
 {
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    let mut server = start(
        &double,
        wt_port,
        &["--drain-secs", "2", "--resume-grace", "30s"],
    )
    .await;

    // Ready, once bound (the server logged its bound addresses before we got here) and
    // ticking; before it, only reading the GameServer and publishing the certificate's hash
    // (so that an allocation of this server already carries it).
    let ready = wait_for_call(&double, "Ready", WAIT).await;
    let before: Vec<String> = double
        .calls()
        .iter()
        .take_while(|c| c.at < ready.at)
        .map(|c| c.rpc.clone())
        .collect();
    assert!(
        before
            .iter()
            .all(|rpc| rpc == "GetGameServer" || rpc == "SetAnnotation"),
        "only GetGameServer and SetAnnotation before Ready: {before:?}"
    );
    assert_eq!(before.last().map(String::as_str), Some("SetAnnotation"));
    assert_eq!(double.state(), "Ready");
    assert_eq!(
        double.list(PLAYERS_LIST).map(|(capacity, _)| capacity),
        Some(50),
        "the list's capacity is --max-clients"
    );

    // The URL players are handed is the GameServer's address and the host port of `wt`.
    let connect: serde_json::Value =
        serde_json::from_str(&server.get("/api/connect").await).expect("JSON");
    assert_eq!(
        connect["url"].as_str(),
        Some(format!("https://127.0.0.1:{wt_port}/").as_str()),
        "{connect}"
    );
    // And what a browser must pin is on the GameServer, for a matchmaker to hand out with a
    // token of its own (--no-guest-tokens leaves /api/connect closed).
    let pinned: Vec<&str> = connect["cert_sha256s"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| h.as_str().expect("a hash"))
        .collect();
    assert_eq!(cert_annotation(&double), Some(pinned.join(",")));

    // Ten bots join through that URL; the list holds their ten ids within a second.
    let config = bots(&server, 10, 31);
    let swarm_task = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, 10).await;
    let joined = Instant::now();
    let ten = double
        .wait_for(|_| listed(&double).len() == 10, Duration::from_secs(1))
        .await;
    assert!(
        ten,
        "the list holds {:?} {:?} after the tenth Welcome",
        listed(&double),
        joined.elapsed()
    );
    let ids: std::collections::BTreeSet<u64> = listed(&double)
        .iter()
        .map(|v| v.parse().expect("a client id"))
        .collect();
    assert_eq!(ids.len(), 10, "ten distinct client ids");
    eprintln!(
        "10 bots listed {:?} after the tenth Welcome",
        joined.elapsed()
    );

    // Health at its period while the simulation ticks.
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gaps = health_gaps(&double.calls(), from);
    assert!(
        gaps.len() >= 7,
        "pings every {HEALTH_PERIOD:?} for 2 s: {gaps:?}"
    );
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        longest < HEALTH_PERIOD * 3,
        "no ping missed while ticking: {gaps:?}"
    );

    // They leave: the list is empty within a second (a clean leave frees the seat at once;
    // --resume-grace 30s would hold a lost one).
    let result = stop(&config, swarm_task).await;
    assert_eq!(
        result.report.bots_connected,
        10,
        "{}",
        result.report.table()
    );
    let left = Instant::now();
    let empty = double
        .wait_for(|_| listed(&double).is_empty(), Duration::from_secs(1))
        .await;
    assert!(
        empty,
        "still listed a second after leaving: {:?}",
        listed(&double)
    );
    eprintln!("list empty {:?} after the bots left", left.elapsed());

    // Three more play; SIGTERM drains them, then Shutdown, then exit 0.
    let config = bots(&server, 3, 32);
    let swarm_task = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, 3).await;
    server.sigterm();
    let shutdown = wait_for_call(&double, "Shutdown", Duration::from_secs(5)).await;
    let open = config
        .live
        .connected
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(open, 0, "Shutdown came after the last session closed");
    let status = server
        .exit_within(Duration::from_secs(4))
        .await
        .expect("exits after the drain");
    assert_eq!(status.code(), Some(0), "{status}");
    let calls = double.calls();
    assert_eq!(
        calls.last().map(|c| c.rpc.as_str()),
        Some("Shutdown"),
        "Shutdown is the last call"
    );
    assert_eq!(named(&calls, "Shutdown").len(), 1);
    assert!(shutdown.at > ready.at);
    // The server's own order (one stream, so the log's order is the order of events): the
    // drain ended ("Arena stopped": every session closed, the simulation stopped), then
    // Shutdown.
    server.log_complete().await;
    let log = server.log_text();
    let at = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("{line:?} in the log:\n{log}"))
    };
    assert!(
        at("Arena stopped") < at("Agones: Shutdown"),
        "Shutdown only after the drain:\n{log}"
    );
    let result = stop(&config, swarm_task).await;
    assert!(
        result.bots.iter().all(|b| b
            .errors
            .get("disconnected_server_shutdown")
            .is_some_and(|n| *n >= 1)),
        "every bot was told ServerShutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_bind_never_says_ready() {
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    // Someone else holds the GameServer's UDP port.
    let squatter = std::net::UdpSocket::bind(("127.0.0.1", wt_port)).expect("bind");
    let wt_bind = format!("127.0.0.1:{wt_port}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args([
            "--agones",
            "--wt-bind",
            &wt_bind,
            "--http-bind",
            "127.0.0.1:0",
        ])
        .args(["--viewer-bind", "off", "--no-replays", "--npcs", "10"])
        .env("AGONES_SDK_GRPC_PORT", double.port().to_string())
        .env("NO_COLOR", "1")
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("exits")
        .expect("runs");
    drop(squatter);
    let stderr =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("binding WebTransport"), "{stderr}");
    let calls = double.calls();
    assert!(
        !calls.is_empty() && calls.iter().all(|c| c.rpc == "GetGameServer"),
        "it read the GameServer and said nothing else: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sidecar_the_server_exits_1_naming_agones_sdk_grpc_port() {
    // A port nobody listens on: bound and closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args(["--agones", "--agones-connect-timeout", "1s"])
        .args(["--wt-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
        .args(["--viewer-bind", "off", "--no-replays"])
        .env("AGONES_SDK_GRPC_PORT", port.to_string())
        .env("NO_COLOR", "1")
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("exits")
        .expect("runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "no sidecar: exit {:?} after {:?}",
        out.status.code(),
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("AGONES_SDK_GRPC_PORT") && text.contains(&port.to_string()),
        "the message names the variable and the port: {text}"
    );
    assert!(!text.contains("Arena serving"), "it never served: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_pings_stop_while_the_simulation_thread_is_stuck_and_resume_after() {
    let wt_port = free_udp_port();
    // The node's address differs from the address the server binds (as in a pod): players are
    // handed the node's.
    let double = Double::start(Init {
        address: "127.0.0.5".into(),
        ..init(wt_port, 50)
    })
    .expect("the double starts");
    // At 30 Hz, tick 60 is two seconds in: the thread then stops for 2.5 s.
    let server = start(
        &double,
        wt_port,
        &["--debug-stall-at-tick", "60", "--debug-stall-for", "2500ms"],
    )
    .await;
    wait_for_call(&double, "Ready", WAIT).await;
    let connect: serde_json::Value =
        serde_json::from_str(&server.get("/api/connect").await).expect("JSON");
    assert_eq!(
        connect["url"].as_str(),
        Some(format!("https://127.0.0.5:{wt_port}/").as_str()),
        "the URL is the GameServer's status.address with the host port of `wt`: {connect}"
    );
    // Wait for the pings to come back after the stall: a gap of 2 s or more, then a ping.
    let resumed = double
        .wait_for(
            |calls| {
                let gaps = health_gaps(calls, calls[0].at);
                gaps.iter().any(|g| *g >= Duration::from_secs(2))
                    && gaps.last().is_some_and(|g| *g < Duration::from_secs(1))
            },
            WAIT,
        )
        .await;
    let calls = double.calls();
    let gaps = health_gaps(&calls, calls[0].at);
    assert!(resumed, "no stall seen in the pings: {gaps:?}");
    let longest = gaps.iter().max().copied().unwrap_or_default();
    eprintln!("longest gap between Health pings: {longest:?} (the thread stopped for 2.5 s)");
    // The pings stopped for about the stall (a period's rounding either way), not longer.
    assert!(
        longest >= Duration::from_secs(2) && longest <= Duration::from_millis(3200),
        "{gaps:?}"
    );
    let log = server.log_text();
    assert!(log.contains("Health pings stop"), "{log}");
    assert!(log.contains("Health pings resume"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocated_server_shuts_down_after_being_empty_for_the_delay() {
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    let mut server = start(
        &double,
        wt_port,
        &["--agones-shutdown-when-empty", "2s", "--drain-secs", "2"],
    )
    .await;
    wait_for_call(&double, "Ready", WAIT).await;
    // Unallocated and empty: it waits in the pool however long (3 s here, past the delay).
    let idle = double
        .wait_for(
            |calls| calls.iter().any(|c| c.rpc == "Shutdown"),
            Duration::from_secs(3),
        )
        .await;
    assert!(
        !idle,
        "an unallocated server does not shut down for being empty"
    );

    // A player comes and goes; then the server is allocated (as a matchmaker's
    // GameServerAllocation does) and stays empty.
    let config = bots(&server, 1, 41);
    let swarm_task = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, 1).await;
    double.set_state("Allocated");
    let allocated = Instant::now();
    let labelled = double
        .wait_for(
            |_| double.label(ALLOCATED_LABEL).is_some(),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        labelled,
        "the server labels itself when allocated: {:?}",
        double.game_server()
    );
    // With a player on it, no Shutdown, however long.
    let early = double
        .wait_for(
            |calls| calls.iter().any(|c| c.rpc == "Shutdown"),
            Duration::from_secs(3),
        )
        .await;
    assert!(!early, "no Shutdown while a player plays");
    stop(&config, swarm_task).await;
    let emptied = Instant::now();
    let shutdown = wait_for_call(&double, "Shutdown", Duration::from_secs(5)).await;
    let after = shutdown.at - emptied;
    eprintln!(
        "Shutdown {after:?} after the last player left ({:?} after allocation)",
        shutdown.at - allocated
    );
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(4),
        "Shutdown {after:?} after the server emptied, --agones-shutdown-when-empty 2s"
    );
    let status = server
        .exit_within(Duration::from_secs(4))
        .await
        .expect("it drains and exits on its own");
    assert_eq!(status.code(), Some(0), "{status}");
    server.log_complete().await;
    assert!(server.log_text().contains("Agones: Allocated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_keep_playing_while_the_sidecar_is_down_and_the_server_registers_again() {
    const BOTS: u32 = 10;
    let wt_port = free_udp_port();
    let mut double = double(wt_port, 50);
    let port = double.port();
    let server = start(&double, wt_port, &[]).await;
    wait_for_call(&double, "Ready", WAIT).await;
    let config = bots(&server, BOTS, 51);
    let swarm_task = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, u64::from(BOTS)).await;
    assert!(listed_within(&double, BOTS as usize, Duration::from_secs(2)).await);

    // The sidecar dies for three seconds; the bots play on.
    double.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // It comes back as a fresh sidecar would (Scheduled, an empty list): the server reaches
    // it, says Ready again and lists its players again.
    let back = Double::start_on(port, init(wt_port, 50)).expect("restarts on its port");
    let restarted = Instant::now();
    let ready = wait_for_call(&back, "Ready", Duration::from_secs(15)).await;
    let relisted = listed_within(&back, BOTS as usize, Duration::from_secs(2)).await;
    assert!(relisted, "the players listed again: {:?}", listed(&back));
    eprintln!(
        "the server registered again {:?} after the sidecar came back",
        ready.at - restarted
    );
    let pings = back
        .wait_for(
            |calls| named(calls, "Health").len() >= 3,
            Duration::from_secs(2),
        )
        .await;
    assert!(pings, "Health pings again: {:?}", back.calls());

    let result = stop(&config, swarm_task).await;
    let r = &result.report;
    let tick_rate = f64::from(result.bots[0].tick_rate);
    eprintln!(
        "{BOTS} bots through the sidecar's loss: worst {:.2} snapshots/s (tick rate {tick_rate})",
        r.snapshots_per_bot_hz_min
    );
    assert_eq!(r.bots_disconnected, 0, "{}", r.table());
    assert!(
        r.snapshots_per_bot_hz_min >= 0.95 * tick_rate,
        "the worst bot got {:.2} snapshots/s, under 95% of {tick_rate}",
        r.snapshots_per_bot_hz_min
    );
    let metrics = server.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("arena_agones_sidecar_lost_total ") && !l.ends_with(" 0")),
        "the loss is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_lost_without_a_goodbye_stay_listed_until_the_end_of_the_resume_grace() {
    const BOTS: u32 = 3;
    const GRACE: Duration = Duration::from_secs(2);
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    let server = start(
        &double,
        wt_port,
        &["--idle-timeout", "1500ms", "--resume-grace", "2s"],
    )
    .await;
    wait_for_call(&double, "Ready", WAIT).await;
    let relay = relay::Relay::start(format!("127.0.0.1:{wt_port}").parse().expect("addr")).await;
    let mut config = bots(&server, BOTS, 61);
    config.connect_via = Some(relay.addr);
    let swarm_task = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, u64::from(BOTS)).await;
    assert!(listed_within(&double, BOTS as usize, Duration::from_secs(2)).await);

    // Their network vanishes: no goodbye arrives, the server notices at its idle timeout and
    // holds their seats for the grace period.
    relay.cut();
    config.stop.cancel();
    let lingering = format!("arena_players_lingering {BOTS}");
    let deadline = Instant::now() + WAIT;
    while !server.get("/metrics").await.lines().any(|l| l == lingering) {
        assert!(Instant::now() < deadline, "the seats never lingered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost = Instant::now();
    assert_eq!(
        listed(&double).len(),
        BOTS as usize,
        "a lingering seat is still a seat: listed"
    );
    let gone = double
        .wait_for(
            |_| listed(&double).is_empty(),
            GRACE + Duration::from_secs(2),
        )
        .await;
    let after = lost.elapsed();
    eprintln!(
        "lost players unlisted {after:?} after their seats began to linger (grace {GRACE:?})"
    );
    assert!(gone, "still listed after the grace: {:?}", listed(&double));
    assert!(
        after >= GRACE - Duration::from_millis(300),
        "unlisted {after:?} into a {GRACE:?} grace"
    );
    let _ = tokio::time::timeout(WAIT, swarm_task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_hashes_on_the_game_server_follow_a_rotation() {
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    // A certificate lives 12 s after it is made (16 s, a quarter back-dated) and is replaced
    // 4 s before it ends; the next one's hash is announced ahead of that.
    let server = start(
        &double,
        wt_port,
        &["--cert-validity", "16s", "--cert-rotate-before", "4s"],
    )
    .await;
    wait_for_call(&double, "Ready", WAIT).await;
    let first = cert_annotation(&double).expect("published before Ready");
    assert!(!first.contains(','), "one certificate so far: {first}");
    let rotated = double
        .wait_for(
            |_| cert_annotation(&double).is_some_and(|now| !now.starts_with(&first)),
            WAIT,
        )
        .await;
    let now = cert_annotation(&double).unwrap_or_default();
    assert!(rotated, "the annotation never moved on from {first}: {now}");
    let connect: serde_json::Value =
        serde_json::from_str(&server.get("/api/connect").await).expect("JSON");
    let current = connect["cert_sha256s"][0].as_str().expect("a hash");
    assert!(
        now.starts_with(current),
        "the annotation leads with the certificate served now ({current}): {now}"
    );
    let announced = named(&double.calls(), "SetAnnotation").len();
    eprintln!("certificate annotation set {announced} times: {first} then {now}");
    assert!(announced >= 2, "published again on rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_a_matchmaker_reserved_for_a_player_who_never_comes_is_freed_after_the_ttl() {
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    let _server = start(&double, wt_port, &["--agones-reservation-ttl", "2s"]).await;
    // Registered: it has read the list and watches the GameServer, so what follows reaches it
    // through the watch, as an allocation would.
    wait_for_call(&double, "WatchGameServer", WAIT).await;
    // Two allocations reserve places for players 700 and 701 (the GameServerAllocation's list
    // action); a third party lists something that is not a client id.
    let reserved = Instant::now();
    assert!(double.list_append(PLAYERS_LIST, "700"));
    assert!(double.list_append(PLAYERS_LIST, "701"));
    assert!(double.list_append(PLAYERS_LIST, "lobby-host"));
    // Their players have not come: the places are kept until the TTL, then freed; the
    // foreign value stays.
    let kept = double
        .wait_for(
            |calls| calls.iter().any(|c| c.rpc == "RemoveListValue"),
            Duration::from_millis(1500),
        )
        .await;
    assert!(
        !kept,
        "nothing removed before the TTL: {:?}",
        listed(&double)
    );
    let freed = double
        .wait_for(
            |_| listed(&double) == ["lobby-host".to_string()],
            Duration::from_secs(3),
        )
        .await;
    let after = reserved.elapsed();
    assert!(
        freed,
        "the no-shows' places were freed: {:?}",
        listed(&double)
    );
    eprintln!("reservations of players who never came freed after {after:?} (TTL 2 s)");
    assert!(after >= Duration::from_secs(2), "{after:?}");
}

/// The fleet's token secret in the handoff tests.
const AGONES_SECRET: &[u8] = b"agones-handoff-test-secret-at-least-32-bytes";

/// Where `line` first appears in `log`.
fn position(log: &str, line: &str) -> usize {
    log.find(line)
        .unwrap_or_else(|| panic!("{line:?} in the log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_taking_a_live_world_over_allocates_itself_and_the_old_one_shuts_down() {
    const BOTS: u32 = 5;
    let secret = SecretFile::new("agones-takeover", AGONES_SECRET);
    let shared = ["--token-secret-file", secret.path()];
    // A: an Allocated GameServer with players on it.
    let (wt_a, wt_b) = (free_udp_port(), free_udp_port());
    let double_a = double(wt_a, 50);
    let mut a = start(
        &double_a,
        wt_a,
        &[&shared[..], &["--handoff-spread", "1s"]].concat(),
    )
    .await;
    wait_for_call(&double_a, "Ready", WAIT).await;
    double_a.set_state("Allocated");
    let config = bots(&a, BOTS, 33);
    let swarm_task = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, u64::from(BOTS)).await;
    assert!(
        listed_within(&double_a, BOTS as usize, WAIT).await,
        "A lists its players: {:?}",
        listed(&double_a)
    );
    let players = listed(&double_a);

    // B: a GameServer of its own whose arguments point at A's HTTP side.
    let double_b = &double(wt_b, 50);
    let b = start(
        double_b,
        wt_b,
        &[&shared[..], &["--take-over-from", &a.http]].concat(),
    )
    .await;
    let allocate = wait_for_call(double_b, "Allocate", WAIT).await;
    assert!(allocate.error.is_none(), "{allocate:?}");
    assert_eq!(double_b.state(), "Allocated");
    // Allocated like any other server: the label is set from the watch.
    assert!(
        double_b
            .wait_for(|_| double_b.label(ALLOCATED_LABEL).is_some(), WAIT)
            .await,
        "B labelled its allocation: {:?}",
        double_b.calls()
    );

    // A: its players moved, it stopped, then Shutdown, and exit 0.
    let status = a
        .exit_within(WAIT)
        .await
        .expect("A exits after the handoff");
    assert!(status.success(), "A exits 0: {status:?}\n{}", a.log_text());
    let shutdown = wait_for_call(&double_a, "Shutdown", WAIT).await;
    assert!(shutdown.error.is_none(), "{shutdown:?}");
    assert_eq!(double_a.state(), "Shutdown");
    a.log_complete().await;
    let log_a = a.log_text();
    let moved = position(&log_a, "handoff: the sessions have moved; stopping");
    let stopping = log_a[moved..].lines().next().unwrap_or_default();
    assert!(
        stopping.contains("left=0"),
        "A stopped once every session had left: {stopping}"
    );
    assert!(
        moved < position(&log_a, "Agones: Shutdown"),
        "A's Shutdown came after its players left:\n{log_a}"
    );

    // The players are B's now, listed there under the same client ids.
    welcomes_reach(&config, u64::from(2 * BOTS)).await;
    assert!(
        double_b
            .wait_for(|_| listed(double_b) == players, WAIT)
            .await,
        "B lists A's players {players:?}: {:?}",
        listed(double_b)
    );
    let calls = double_b.calls();
    assert_eq!(named(&calls, "Allocate").len(), 1, "{calls:?}");
    assert!(named(&calls, "Shutdown").is_empty(), "{calls:?}");
    // B went into the pool only once the world was its own, and allocated itself at once.
    let log_b = b.log_text();
    let confirmed = position(&log_b, "handoff confirmed: this server runs the world");
    let ready = position(&log_b, "Agones: Ready");
    assert!(
        position(&log_b, "Agones: not Ready until the takeover is confirmed") < confirmed
            && confirmed < ready
            && ready < position(&log_b, "Agones: Allocate"),
        "B: not Ready before the confirmation, then Ready and Allocate:\n{log_b}"
    );
    let result = stop(&config, swarm_task).await;
    for bot in &result.bots {
        assert_eq!(bot.moves, 1, "{}: {:?}", bot.name, bot.sessions);
    }
    b.sigterm();
    wait_for_call(double_b, "Shutdown", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_fails_never_says_ready_and_shuts_its_game_server_down() {
    // The old server shares no secret with the new one: it refuses the request (403).
    let a = ServerProcess::start(&["--npcs", "50"]).await;
    let secret = SecretFile::new("agones-refused", AGONES_SECRET);
    let wt_port = free_udp_port();
    let double = double(wt_port, 50);
    let mut b = start(
        &double,
        wt_port,
        &[
            "--token-secret-file",
            secret.path(),
            "--take-over-from",
            &a.http,
        ],
    )
    .await;
    let status = b.exit_within(WAIT).await.expect("B exits");
    assert_eq!(status.code(), Some(1), "{}", b.log_text());
    let calls = double.calls();
    assert!(named(&calls, "Ready").is_empty(), "{calls:?}");
    assert!(named(&calls, "Allocate").is_empty(), "{calls:?}");
    assert_eq!(
        calls.last().map(|c| c.rpc.as_str()),
        Some("Shutdown"),
        "Shutdown, so that Agones deletes the GameServer rather than restart the takeover: \
         {calls:?}"
    );
    assert_eq!(double.state(), "Shutdown");
}
