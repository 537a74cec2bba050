//! The real `arena-server` binary as a child process, with real bots in this process: what
//! only a process shows, its signals, its exit status and its resident memory.
//!
//! Run with `--nocapture` to see the figures each test measures. Linux only: memory is read
//! from /proc and the signal sent with kill(2).
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arena_client_sim::connect::{self, ConnectInfo};
use arena_client_sim::swarm::{self, SwarmConfig};
use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{GameEvent, Hello, PROTOCOL_VERSION, RejectReason, ServerMsg};
use arena_shared::token::{self, Claims};
use clap::Parser;
use tokio::process::Command;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use common::*;

const DRAIN_SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_100_bots_tells_every_bot_server_shutdown_and_exits_0_within_drain_plus_2s() {
    const BOTS: u32 = 100;
    let drain = DRAIN_SECS.to_string();
    let mut server = ServerProcess::start(&["--npcs", "200", "--drain-secs", &drain]).await;
    let config = swarm(&server, BOTS, 21);
    let bots = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, u64::from(BOTS)).await;

    let signalled = tokio::time::Instant::now();
    server.sigterm();
    // The server does not wait out the drain spread itself (each player is told when to come
    // back); the bound is drain + 2 s, what an orchestrator's grace period would allow.
    let bound = Duration::from_secs(DRAIN_SECS + 2);
    let status = server.exit_within(bound).await;
    let took = signalled.elapsed();
    eprintln!("SIGTERM with {BOTS} bots: exited {status:?} after {took:?}");
    let status = status.unwrap_or_else(|| panic!("still running {bound:?} after SIGTERM"));
    assert_eq!(status.code(), Some(0), "{status}");
    server.log_complete().await;
    assert!(
        server.log_text().contains("SIGTERM: shutting down"),
        "the server saw the signal"
    );

    // The bots now retry against a dead server until stopped; that does not matter here.
    let result = stop(&config, bots).await;
    let r = &result.report;
    assert_eq!(
        (r.bots_connected, r.bots_disconnected),
        (u64::from(BOTS), u64::from(BOTS)),
        "{}",
        r.table()
    );
    for bot in &result.bots {
        // One session, lost to the shutdown with its reason (the Disconnect message, not the
        // connection close that follows it).
        assert_eq!(bot.sessions.len(), 1, "{}: {:?}", bot.name, bot.sessions);
        assert!(
            bot.sessions[0]
                .lost
                .as_deref()
                .is_some_and(|l| l.starts_with("disconnected: ServerShutdown")),
            "{} lost its session to the shutdown: {:?}",
            bot.name,
            bot.sessions[0]
        );
        assert_eq!(
            bot.errors.get("disconnected_server_shutdown"),
            Some(&1),
            "{}: {:?}",
            bot.name,
            bot.errors
        );
    }
    // What it had to flush, it flushed: the replay reads back whole, every player in it.
    let files: Vec<_> = std::fs::read_dir(&server.replays)
        .expect("the replay directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    let [file] = &files[..] else {
        panic!("one replay file: {files:?}");
    };
    let read = arena_shared::replay::read(&std::fs::read(file).expect("readable"));
    assert_eq!(read.end, arena_shared::replay::End::Clean);
    let summary = arena_shared::replay::Summary::of(&read.records);
    assert_eq!(summary.players, BOTS as usize);
    assert!(summary.keyframes >= 1 && summary.inputs > 0, "{summary:?}");
    // And the tool says the same.
    let info = std::process::Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args(["replay", "info"])
        .arg(file)
        .output()
        .expect("arena-server replay info runs");
    assert!(info.status.success());
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&format!("players     {BOTS}\n")), "{text}");
    assert!(text.contains("end         Clean"), "{text}");
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .args(["replay", "verify"])
        .arg(file)
        .output()
        .expect("arena-server replay verify runs");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// How a bad handshake is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BadToken {
    /// Well formed, signed with another secret: refused after the server checks the HMAC.
    Forged,
    /// Not base64 at all: refused before any cryptography.
    Garbage,
}

impl BadToken {
    fn of(i: u64) -> Self {
        if i.is_multiple_of(2) {
            Self::Forged
        } else {
            Self::Garbage
        }
    }

    fn token(self, i: u64, audience: &str) -> String {
        match self {
            Self::Forged => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                token::sign(
                    b"not the server's secret at all",
                    &Claims {
                        client_id: i,
                        name: "mallory".into(),
                        expires_at_ms: now_ms + 60_000,
                        server: audience.into(),
                    },
                )
            }
            Self::Garbage => format!("garbage-{i}!"),
        }
    }

    /// What the server must answer. Never `RateLimited` here: `--handshakes-per-sec` is 500
    /// with a second's burst, so the bucket holds 500 when a flood of 500 begins (the bots'
    /// 20 handshakes were refilled seconds before) and refills while it runs.
    fn expected(self) -> RejectReason {
        match self {
            Self::Forged => RejectReason::TokenForged,
            Self::Garbage => RejectReason::TokenMalformed,
        }
    }
}

/// One WebTransport session that sends `Hello` with a bad token: the server's `Reject`.
async fn bad_handshake(info: &ConnectInfo, kind: BadToken, i: u64) -> Result<RejectReason, String> {
    // Session setup (QUIC, HTTP/3 SETTINGS, the CONNECT request) fails now and then under this
    // load before the token is ever presented: once in about 2,500 on the 2-core CI machine,
    // the server's HTTP/3 layer closing with H3_FRAME_UNEXPECTED (0x105). That is wtransport's
    // business, not admission's, so an attempt that never reached its Hello dials again, as a
    // real client would; what is judged is the answer to the token.
    let mut tries = 0;
    let mut t = loop {
        tries += 1;
        match connect::open(info, Duration::from_secs(10)).await {
            Ok(t) => break t,
            Err(e) if tries >= OPEN_TRIES => return Err(format!("open, {tries} tries: {e}")),
            Err(e) => eprintln!("attempt {i}: session setup failed ({e}); dialing again"),
        }
    };
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        token: kind.token(i, &info.url),
        name: "mallory".into(),
        resume: None,
    };
    t.send_hello(&hello)
        .await
        .map_err(|e| format!("hello: {e}"))?;
    let got = t.read_msg(&mut FrameReader::new()).await;
    // Leave at once, as a refused client would (else the server waits a second for it).
    t.conn.close(wtransport::VarInt::from_u32(0), b"refused");
    match got {
        Ok((ServerMsg::Reject(r), _)) => Ok(r.reason),
        Ok((other, _)) => Err(format!("expected a Reject, got {other:?}")),
        Err(e) => Err(format!("no Reject: {e}")),
    }
}

/// Dials per flood attempt before its session setup counts as a failure.
const OPEN_TRIES: u32 = 3;

/// What a flood got back: refusals by (token kind, reason), and anything else.
#[derive(Debug, Default)]
struct FloodOutcome {
    refused: BTreeMap<(BadToken, &'static str), u64>,
    failures: Vec<String>,
    took: Duration,
}

/// `FLOOD` bad handshakes, `IN_FLIGHT` at a time, each a real session with its own socket.
async fn flood(info: &ConnectInfo) -> FloodOutcome {
    let started = tokio::time::Instant::now();
    let mut out = FloodOutcome::default();
    let mut record = |done: Option<Result<(BadToken, Result<RejectReason, String>), _>>| match done
        .expect("attempts in flight")
        .expect("attempt task")
    {
        (kind, Ok(reason)) => *out.refused.entry((kind, reason.as_str())).or_insert(0) += 1,
        (kind, Err(e)) => out.failures.push(format!("{kind:?}: {e}")),
    };
    let mut set = JoinSet::new();
    for i in 0..FLOOD {
        if set.len() >= IN_FLIGHT {
            record(set.join_next().await);
        }
        let info = info.clone();
        set.spawn(async move {
            let kind = BadToken::of(i);
            let got = tokio::time::timeout(WAIT, bad_handshake(&info, kind, i))
                .await
                .unwrap_or_else(|_| Err("no answer in time".into()));
            (kind, got)
        });
    }
    while !set.is_empty() {
        record(set.join_next().await);
    }
    out.took = started.elapsed();
    out
}

/// Every attempt of a flood was refused for its token.
fn assert_all_refused_for_their_token(f: &FloodOutcome) {
    assert!(f.failures.is_empty(), "{:?}", f.failures);
    let want: BTreeMap<_, _> = [BadToken::Forged, BadToken::Garbage]
        .into_iter()
        .map(|k| ((k, k.expected().as_str()), FLOOD / 2))
        .collect();
    assert_eq!(f.refused, want);
}

/// Samples the server's RSS until `done` and returns the highest. Polling /proc is the only
/// way to see another process's memory; every 20 ms resolves a burst of a second or more.
fn rss_peak(pid: u32, done: CancellationToken) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = rss_kib(pid);
        let mut every = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = every.tick() => peak = peak.max(rss_kib(pid)),
                _ = done.cancelled() => return peak.max(rss_kib(pid)),
            }
        }
    })
}

/// A counter or gauge in Prometheus text, by its name and labels as written.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Bad handshakes per flood, and how many are in flight at once (each its own UDP socket,
/// QUIC and TLS handshake, HTTP/3 CONNECT and `Hello`).
const FLOOD: u64 = 500;
const IN_FLIGHT: usize = 50;

/// One flood with the RSS sampled around it: what it got back, how the bots fared meanwhile
/// (snapshots per bot per second over the flood), the peak and the settled RSS after it.
async fn measured_flood(
    server: &ServerProcess,
    info: &ConnectInfo,
    swarm: &SwarmConfig,
) -> (FloodOutcome, f64, u64, u64) {
    let done = CancellationToken::new();
    let peak = rss_peak(server.pid, done.clone());
    let snapshots = swarm.live.snapshots.load(Relaxed);
    let f = flood(info).await;
    done.cancel();
    let peak = peak.await.expect("RSS sampler");
    let received = swarm.live.snapshots.load(Relaxed) - snapshots;
    let rate = received as f64 / f64::from(swarm.bots) / f.took.as_secs_f64();
    let settled = settled_rss_kib(server.pid).await;
    (f, rate, peak, settled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_500_bad_tokens_refused_while_20_bots_keep_95pct_and_rss_within_10pct_once_warm() {
    const BOTS: u32 = 20;
    let server = ServerProcess::start(&["--npcs", "200"]).await;
    let config = swarm(&server, BOTS, 22);
    let bots = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, u64::from(BOTS)).await;
    let cold = settled_rss_kib(server.pid).await;

    // Why the 10% bound is taken against a server that has met one flood already: after the
    // first flood RSS does not come back, and that is glibc's malloc, not the server. On the
    // 2-core dev machine: 12.4-12.7 MB cold, 20-22 MB at the peak and still there ten seconds
    // later (+60-78%). malloc_stats (read with gdb) put the heap in use at 5.4 MB cold and
    // 6.0-6.4 MB after each of eight floods in a row, but the heap glibc holds at 5.8 MB cold
    // and 13.6-15.0 MB after every flood: the handshakes' freed state (quinn connections,
    // tokio channels, rustls keys; heaptrack: ~9 MB at the peak, 50 handshakes at a time)
    // stays in the arenas of the server's two tokio workers, fragmented under live chunks.
    // No trim threshold releases it (GLIBC_TUNABLES, MALLOC_ARENA_MAX=1 change nothing;
    // malloc_trim(0) gives back 4.5 MB); jemalloc and mimalloc (LD_PRELOAD) still end +35%
    // and +22% ten seconds after. Each later flood reuses it: RSS stayed within 21.4-22.3 MB
    // over eight. A leak would show as a flood that does not return to where the last left.
    let info = connect::fetch_connect_info(&server.http, "mallory")
        .await
        .expect("/api/connect answers");
    let (warm_up, warm_rate, warm_peak, before) = measured_flood(&server, &info, &config).await;
    eprintln!(
        "warm-up flood: {FLOOD} refused in {:?}, bots {warm_rate:.1} snapshots/s each \
         meanwhile; RSS {cold} KiB cold, peak {warm_peak} KiB, settled {before} KiB",
        warm_up.took
    );
    assert_all_refused_for_their_token(&warm_up);

    let (f, rate, peak, after) = measured_flood(&server, &info, &config).await;
    eprintln!(
        "flood: {FLOOD} refused in {:?} ({:?}), bots {rate:.1} snapshots/s each meanwhile; \
         RSS before {before} KiB, peak {peak} KiB, after {after} KiB ({:+.1}%)",
        f.took,
        f.refused,
        (after as f64 / before as f64 - 1.0) * 100.0
    );
    assert_all_refused_for_their_token(&f);

    // The server counted every refusal under its reason, and admitted none of them.
    let metrics = server.get("/metrics").await;
    for reason in ["token_forged", "token_malformed"] {
        let series = format!("arena_sessions_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &series), Some(FLOOD as f64), "{series}");
    }
    assert_eq!(
        metric(&metrics, "arena_clients_connected"),
        Some(f64::from(BOTS))
    );

    // RSS settled (settled_rss_kib) with the bots still playing, as `before` was.
    assert!(
        after.abs_diff(before) <= before / 10,
        "RSS {after} KiB after the flood, {before} KiB before it: more than 10% apart"
    );

    let result = stop(&config, bots).await;
    let r = &result.report;
    assert_all_played(r, BOTS);
    let tick_rate = f64::from(result.bots[0].tick_rate);
    assert!(
        result
            .bots
            .iter()
            .all(|b| f64::from(b.tick_rate) == tick_rate),
        "one tick rate in every Welcome"
    );
    eprintln!(
        "{BOTS} bots: worst bot {:.2} snapshots/s over its play, tick rate {tick_rate}",
        r.snapshots_per_bot_hz_min
    );
    assert!(
        r.snapshots_per_bot_hz_min >= 0.95 * tick_rate,
        "the worst bot got {:.2} snapshots/s, under 95% of {tick_rate}",
        r.snapshots_per_bot_hz_min
    );
}

/// The slow-consumer test's flags: a small `--max-send-backlog` (the bytes a session may hold
/// for a client that is not reading, beyond what QUIC holds), and WhoIs, which is not what is
/// tested, raised so that every one is answered.
const DEAF_FLAGS: [&str; 4] = ["--max-send-backlog", "8192", "--max-whois-per-sec", "1000"];
/// quinn's default stream receive window, which the test client keeps: what the server can get
/// into the stream of a client that reads nothing, before its own backlog starts to grow.
const CLIENT_STREAM_WINDOW: usize = 1_250_000;
/// What one connection costs the server whatever it sends: QUIC and TLS state, HTTP/3, the
/// session task, a player entity, and the transient peak of its handshake. Measured with this
/// test's clients sending nothing: +2,556 KiB for ten (255 KiB a client) on the 2-core dev
/// machine.
const CONNECTION_KIB: usize = 256;
/// A snapshot datagram is at most a path MTU.
const MAX_DATAGRAM: usize = 1500;

/// What `config` lets the server hold for one client that never reads, in KiB: the session's
/// backlog (`--max-send-backlog`, in two buffers: the one filling, the one being written), what
/// QUIC keeps of the stream each way ([`STREAM_WINDOW`]: unacknowledged data out, unread data
/// in), its datagram buffers, the outbox's snapshots and events, and the connection itself.
fn held_per_client_kib(config: &arena_server::Config) -> usize {
    use arena_server::net::{DATAGRAM_RECEIVE_BUFFER, DATAGRAM_SEND_BUFFER, STREAM_WINDOW};
    let outbox = config.outbox_snapshots * MAX_DATAGRAM
        + config.event_queue * std::mem::size_of::<GameEvent>();
    let bytes = 2 * config.max_send_backlog
        + 2 * STREAM_WINDOW as usize
        + DATAGRAM_SEND_BUFFER
        + DATAGRAM_RECEIVE_BUFFER
        + outbox;
    bytes / 1024 + CONNECTION_KIB
}

/// Ten clients that each write ~2.7 MB of pings and `WhoIs` and never read the answers. Each
/// is disconnected as a slow consumer (once QUIC's window toward it is full, the names it must
/// get pile up past `--max-send-backlog`), and meanwhile the server holds no more for each
/// than its configuration allows ([`held_per_client_kib`]). A server that buffered without
/// bound would hold what did not fit the window: ~1.5 MB a client (measured with the cap
/// taken out: +2,637 KiB a client, where this server stays near 360).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_disconnected_and_server_memory_stays_bounded() {
    use arena_shared::protocol::codec::encode_client;
    use arena_shared::protocol::{ClientMsg, DisconnectReason, Ping, WhoIs};
    const DEAF: usize = 10;
    const ROUNDS: u32 = 300;
    const PINGS_PER_WHOIS: u32 = 1_000;
    let config = arena_server::Config::try_parse_from(["arena-server"].iter().chain(&DEAF_FLAGS))
        .expect("valid flags");
    let per_client = held_per_client_kib(&config);
    // A server that kept everything would hold, for each client, what did not fit its window:
    // pongs alone are more than twice the allowance.
    assert!(
        (ROUNDS * PINGS_PER_WHOIS * 9) as usize - CLIENT_STREAM_WINDOW > 2 * 1024 * per_client,
        "the burst must overflow the window by more than twice the allowance"
    );
    let server = ServerProcess::start(&DEAF_FLAGS).await;
    let before = settled_rss_kib(server.pid).await;
    let done = CancellationToken::new();
    let peak = rss_peak(server.pid, done.clone());
    let mut clients = JoinSet::new();
    for i in 0..DEAF {
        let http = server.http.clone();
        clients.spawn(async move {
            let name = format!("deaf-{i}");
            let info = connect::fetch_connect_info(&http, &name)
                .await
                .expect("/api/connect");
            let mut t = connect::open(&info, Duration::from_secs(10))
                .await
                .expect("connect");
            let welcome = t
                .handshake(&info.token, &name, &mut FrameReader::new())
                .await
                .expect("welcome");
            // Pongs (as many bytes as the pings) fill the window; the names (~190 bytes for
            // each WhoIs of 16 ids) are what it must get.
            let mut bytes = Vec::new();
            for round in 0..ROUNDS {
                for n in 0..PINGS_PER_WHOIS {
                    let nonce = round * PINGS_PER_WHOIS + n;
                    encode_client(&ClientMsg::Ping(Ping { nonce }), &mut bytes).expect("encodes");
                }
                let who = WhoIs {
                    entities: vec![welcome.entity; 16],
                };
                encode_client(&ClientMsg::WhoIs(who), &mut bytes).expect("encodes");
            }
            let _ = t.write_raw(&bytes).await;
            // Judged after the memory: a server that never closes them must fail on that.
            match tokio::time::timeout(WAIT, t.conn.closed()).await {
                Ok(wtransport::error::ConnectionError::ApplicationClosed(c)) => {
                    Ok(c.code().into_inner())
                }
                other => Err(format!("{other:?}")),
            }
        });
    }
    let mut closes = Vec::new();
    while let Some(close) = clients.join_next().await {
        closes.push(close.expect("client task"));
    }
    done.cancel();
    let peak = peak.await.expect("sampler");
    let grew = peak.saturating_sub(before);
    let allowed = (DEAF * per_client) as u64;
    eprintln!(
        "{DEAF} slow consumers: RSS {before} KiB before, peak {peak} KiB (+{grew} KiB, {} KiB a \
         client; the configuration allows {} KiB a client)",
        grew / DEAF as u64,
        per_client
    );
    assert!(
        grew <= allowed,
        "grew {grew} KiB for {DEAF} clients, more than the {allowed} KiB their configuration \
         allows"
    );
    let slow = arena_shared::protocol::close_code(DisconnectReason::SlowConsumer.code());
    assert_eq!(
        closes,
        vec![Ok(slow); DEAF],
        "every one closed as a slow consumer"
    );
    let metrics = server.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "arena_sessions_closed_total{reason=\"slow_consumer\"}"
        ),
        Some(DEAF as f64)
    );
    // Cut by the backlog rule, not for the burst: each was cut only once the server had got a
    // window's worth into its stream (what QUIC accepted; the backlog's last bytes may not be).
    let sent = metric(&metrics, "arena_stream_bytes_sent_total").expect("stream bytes sent");
    let windows = DEAF * (CLIENT_STREAM_WINDOW - config.max_send_backlog);
    assert!(
        sent >= windows as f64,
        "{sent} stream bytes sent to {DEAF} clients whose windows hold {CLIENT_STREAM_WINDOW} each"
    );
}

/// Runs `arena-server token` with `args`: its exit status, stdout and stderr.
async fn token_tool(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arena-server"))
        .arg("token")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("arena-server token runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (out.status, text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_by_the_tool_for_one_server_of_a_fleet_admits_there_and_not_on_the_other() {
    // A two-server "fleet" on loopback: one secret file, read by both servers and by the tool.
    let dir = std::env::temp_dir().join(format!("arena-process-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let secret = dir.join("secret");
    const SECRET: &str = "a fleet's shared secret";
    std::fs::write(&secret, format!("{SECRET}\n")).expect("written");
    let secret_arg = secret.to_str().expect("a UTF-8 path");
    let guarded = ["--token-secret-file", secret_arg, "--no-replays"];
    let a = ServerProcess::start(&guarded).await;
    let b = ServerProcess::start(&guarded).await;
    // Each server's URL and certificate hash, as /api/connect gives them to its players.
    let info_a = connect::fetch_connect_info(&a.http, "x").await.expect("A");
    let info_b = connect::fetch_connect_info(&b.http, "x").await.expect("B");
    assert_ne!(info_a.url, info_b.url);

    let (status, minted, err) = token_tool(&[
        "--secret-file",
        secret_arg,
        "--url",
        &info_b.url,
        "--client-id",
        "4242",
        "--name",
        "alloc-7",
        "--ttl",
        "1m",
    ])
    .await;
    assert!(status.success(), "{status}: {err}");
    let minted = minted.trim().to_string();
    let claims = token::verify(
        SECRET.as_bytes(),
        &minted,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64,
        &info_b.url,
    )
    .expect("a token for B under the shared secret");
    assert_eq!((claims.client_id, claims.name.as_str()), (4242, "alloc-7"));

    // A refuses it: it was minted for B.
    let mut on_a = connect::open(&info_a, Duration::from_secs(10))
        .await
        .expect("a session with A");
    let refused = on_a
        .handshake(&minted, "alloc-7", &mut FrameReader::new())
        .await;
    assert!(
        matches!(
            &refused,
            Err(connect::ClientError::Rejected {
                reason: RejectReason::TokenWrongServer,
                ..
            })
        ),
        "{refused:?}"
    );
    // B admits it, under the name it vouches for.
    let mut on_b = connect::open(&info_b, Duration::from_secs(10))
        .await
        .expect("a session with B");
    let welcome = on_b
        .handshake(&minted, "someone else", &mut FrameReader::new())
        .await
        .expect("B admits its token");
    assert_eq!(welcome.client_id, 4242);

    // The tool refuses what a server would: a short secret, a bad name.
    std::fs::write(dir.join("short"), "too short\n").expect("written");
    let short = dir.join("short");
    let (status, _, err) = token_tool(&[
        "--secret-file",
        short.to_str().expect("UTF-8"),
        "--url",
        &info_b.url,
        "--client-id",
        "1",
        "--name",
        "p",
    ])
    .await;
    assert!(
        !status.success() && err.contains("at least 16 bytes"),
        "{err}"
    );
    let (status, _, err) = token_tool(&[
        "--secret-file",
        secret_arg,
        "--url",
        &info_b.url,
        "--client-id",
        "1",
        "--name",
        "",
    ])
    .await;
    assert!(
        !status.success() && err.contains("no control characters"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a playing client may cost the server's memory, KiB: the bound, a margin over
/// the 64 KiB goal. Measured with this test on the 2-core dev machine: 73-76 KiB a client
/// (102-105 before the vendored wtransport and quinn stopped allocating their channels' 32-slot
/// blocks of large values up front: `vendor/*/PATCHES.md`), and up to ~12 more while other
/// work loads both cores (more handshakes in flight at once leave a higher mark, and RSS does
/// not come back down). A server that kept every view of the ring read ~70 more. About 40 KiB
/// of a client is the transport's own state per connection (wtransport's session driver,
/// quinn, rustls); BENCHMARKS.md ("Issue 21: memory per client" and the sections after it)
/// says where every KiB goes.
const CLIENT_RSS_KIB: u64 = 96;

/// A hundred bots playing among 1,000 NPCs grow the server's RSS by at most
/// [`CLIENT_RSS_KIB`] each: the transport's state, the session, replication's views, the
/// player's entity. A regression in any of them (a buffer per client sized for the worst case,
/// a ring of views not given back, a doubled per-entity buffer) fails here, not only in a
/// benchmark. RSS is read once settled (`settled_rss_kib`), before the bots and while they
/// play.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_playing_clients_cost_the_server_at_most_96_kib_each() {
    const BOTS: u32 = 100;
    let server = ServerProcess::start(&["--npcs", "1000"]).await;
    let idle = settled_rss_kib(server.pid).await;
    let config = swarm(&server, BOTS, 41);
    let bots = tokio::spawn(swarm::run(config.clone()));
    welcomes_reach(&config, u64::from(BOTS)).await;
    let playing = settled_rss_kib(server.pid).await;
    let metrics = server.get("/metrics").await;
    let result = stop(&config, bots).await;
    let r = &result.report;
    assert_all_played(r, BOTS);
    // They were playing when RSS was read: every one connected, with entities in view.
    assert_eq!(
        metric(&metrics, "arena_clients_connected"),
        Some(f64::from(BOTS))
    );
    let per_client = playing.saturating_sub(idle) / u64::from(BOTS);
    eprintln!(
        "server RSS {idle} KiB idle, {playing} KiB with {BOTS} bots playing: {per_client} KiB a client"
    );
    assert!(
        per_client <= CLIENT_RSS_KIB,
        "{per_client} KiB a client (RSS {idle} KiB idle, {playing} KiB with {BOTS} bots), bound \
         {CLIENT_RSS_KIB}"
    );
}

/// `--udp-recv-buffer` reaches the WebTransport socket: the kernel grants at least what was
/// asked, or `net.core.rmem_max` where that is lower (Linux reports double what it was asked,
/// its bookkeeping included), and the server exports what it got. The kernel's default
/// (~208 KiB) is what overflowed at 400 clients on two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webtransport_socket_gets_the_receive_buffer_asked_for() {
    const ASKED: usize = 1024 * 1024;
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("/proc/sys/net/core/rmem_max")
        .trim()
        .parse()
        .expect("a number");
    let server = ServerProcess::start(&["--udp-recv-buffer", &ASKED.to_string()]).await;
    let metrics = server.get("/metrics").await;
    let granted = metric(&metrics, "arena_udp_receive_buffer_bytes").expect("the gauge") as usize;
    assert!(
        granted >= ASKED.min(rmem_max),
        "{granted} bytes granted for {ASKED} asked (net.core.rmem_max {rmem_max})"
    );
}
