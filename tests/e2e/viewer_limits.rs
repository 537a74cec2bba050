//! The replay viewer's bounds, on a real server and real sockets: it answers only on its own
//! address, its token, its per-address rate, its caps on streams (in all and per address, an
//! index built only in a stream's place) and open runs, and a 5,000-NPC run under abuse
//! (readers, one host's clients that never read, clients that vanish) costing bounded memory
//! and no work once they are gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arena_server::http::replays;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OnceCell;

use crate::common::{self, TestServer, WAIT};

/// Ticks the shared 5,000-NPC recording holds at least (keyframes every 30).
const RECORDED_TICKS: u64 = 300;

/// A run of 5,000 NPCs, recorded once for every test here, with keyframes every 30 ticks, at
/// 120 ticks a second so that it takes a few seconds.
async fn recording() -> &'static Path {
    static DIR: OnceCell<PathBuf> = OnceCell::const_new();
    DIR.get_or_init(|| async {
        let dir = std::env::temp_dir().join(format!("arena-e2e-viewer-5k-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dir_arg = dir.display().to_string();
        let server = common::start(&[
            "--npcs",
            "5000",
            "--replay-dir",
            &dir_arg,
            "--replay-keyframe-ticks",
            "30",
            "--tick-rate",
            "120",
            "--viewer-bind",
            "off",
        ])
        .await;
        let deadline = Instant::now() + WAIT;
        let mut every = tokio::time::interval(Duration::from_millis(20));
        while arena_server::stats::Stats::get(&server.stats.tick) < RECORDED_TICKS {
            assert!(Instant::now() < deadline, "the recording never got far");
            every.tick().await;
        }
        server.stop().await;
        dir
    })
    .await
}

/// The id of the (first) run in `dir`.
fn run_id(dir: &Path) -> String {
    let file = std::fs::read_dir(dir)
        .expect("the recording")
        .map(|e| e.expect("an entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "replay"))
        .expect("a replay file");
    replays::id_of(&file).expect("a run id")
}

/// A server that records nothing and serves `dir`'s runs on its viewer.
async fn viewer_on(dir: &Path, extra: &[&str]) -> TestServer {
    let dir_arg = dir.display().to_string();
    let mut args = vec![
        "--replay-dir",
        dir_arg.as_str(),
        "--no-replays",
        "--npcs",
        "10",
    ];
    args.extend_from_slice(extra);
    common::start(&args).await
}

/// An answer, its body de-chunked.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }
}

/// A TCP connection to `addr` from `ip` (another loopback address acts as another host).
async fn connect(ip: &str, addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    socket
        .bind(format!("{ip}:0").parse().expect("an address"))
        .expect("bind a loopback address");
    socket.connect(addr).await.expect("connect on loopback")
}

async fn send_request(stream: &mut TcpStream, path: &str, headers: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
}

/// GET `path` from `ip` with extra header lines, read whole.
async fn get_from(ip: &str, addr: SocketAddr, path: &str, headers: &str) -> Reply {
    let mut stream = connect(ip, addr, None).await;
    send_request(&mut stream, path, headers).await;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    parse(&raw)
}

/// GET `path` from 127.0.0.1, read whole.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_from("127.0.0.1", addr, path, "").await
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply { status, head, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).expect("hex"), 16)
            .expect("a chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 2 + size + 2..];
    }
}

/// A client that asks for `path` and reads no more than the status line.
async fn never_reads(addr: SocketAddr, path: &str) -> TcpStream {
    never_reads_from("127.0.0.1", addr, path).await
}

/// [`never_reads`] from `ip`.
async fn never_reads_from(ip: &str, addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(ip, addr, Some(4096)).await;
    send_request(&mut stream, path, "").await;
    stream
}

/// Reads the status line (a few bytes of the answer) and leaves the rest unread.
async fn status_line(stream: &mut TcpStream) -> String {
    let mut line = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut line))
        .await
        .expect("a status line in time")
        .expect("read the status line");
    String::from_utf8_lossy(&line).to_string()
}

/// This process's resident set size, KiB (the server runs in it).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// CPU seconds (user and system) used so far by each of this process's threads named `name`.
fn thread_cpu(name: &str) -> std::collections::HashMap<String, f64> {
    let mut by_thread = std::collections::HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(task) = task else { continue };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        if let Some(cpu) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| cpu_of_stat(&stat))
        {
            by_thread.insert(task.file_name().to_string_lossy().to_string(), cpu);
        }
    }
    by_thread
}

/// CPU seconds the threads named `name` used from `before` (a [`thread_cpu`]) to now; a
/// thread that ended meanwhile used none worth counting.
fn thread_cpu_since(name: &str, before: &std::collections::HashMap<String, f64>) -> f64 {
    thread_cpu(name)
        .iter()
        .map(|(tid, now)| now - before.get(tid).copied().unwrap_or(0.0))
        .sum()
}

/// CPU seconds this whole process used so far.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    cpu_of_stat(&stat).expect("utime and stime")
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn cpu_of_stat(stat: &str) -> Option<f64> {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    // The fields after the command's closing parenthesis; utime and stime are the 12th and
    // 13th of them.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((field(11)? + field(12)?) as f64 / ticks_per_s)
}

/// The tests that load a 5,000-NPC run one at a time, so that each measures its own cost.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of `arena_viewer_rejected_total{reason}`.
fn rejected(server: &TestServer, reason: &str) -> u64 {
    let text = server.stats.render_metrics();
    let key = format!("arena_viewer_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_answers_on_its_own_address_only_and_serves_old_runs_without_recording() {
    let dir = recording().await;
    let id = run_id(dir);
    let server = viewer_on(dir, &[]).await;
    let viewer = server.viewer_addr.expect("a viewer address");
    for path in [
        "/replays".to_string(),
        format!("/replays/{id}"),
        "/api/replays".to_string(),
        format!("/api/replays/{id}/meta"),
        format!("/api/replays/{id}/frames?from=1&count=1"),
    ] {
        assert_eq!(
            get(server.http_addr, &path).await.status,
            404,
            "{path} on HTTP"
        );
        assert_eq!(get(viewer, &path).await.status, 200, "{path} on the viewer");
    }
    // A 5,000-NPC response within the default cap (2 MiB, the last frame at most about as
    // large as those before it).
    let capped = get(
        viewer,
        &format!("/api/replays/{id}/frames?from=1&count=300"),
    )
    .await;
    let bytes = capped.body.len();
    let frames = capped.json()["frames"].as_array().map_or(0, Vec::len);
    assert!((2..300).contains(&frames), "{frames} frames");
    assert!(bytes <= 2 * 1024 * 1024 + 256 * 1024, "{bytes} bytes");
    let listed = get(viewer, "/api/replays").await.json();
    assert_eq!(listed["replays"][0], id.as_str(), "with --no-replays");
    server.stop().await;

    let off = viewer_on(dir, &["--viewer-bind", "off"]).await;
    assert_eq!(off.viewer_addr, None);
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_the_viewer_answers_only_the_bearer() {
    let dir = std::env::temp_dir().join(format!("arena-e2e-viewer-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "a-viewer-token-of-some-length\n").expect("the token file");
    let token_arg = token_file.display().to_string();
    let server = viewer_on(&dir, &["--viewer-token-file", &token_arg]).await;
    let viewer = server.viewer_addr.expect("a viewer address");

    let none = get(viewer, "/api/replays").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = get_from(
        "127.0.0.1",
        viewer,
        "/api/replays",
        "Authorization: Bearer a-viewer-token-of-some-lengtX\r\n",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(get(viewer, "/replays").await.status, 401, "the list too");
    let right = get_from(
        "127.0.0.1",
        viewer,
        "/api/replays",
        "Authorization: Bearer a-viewer-token-of-some-length\r\n",
    )
    .await;
    assert_eq!(right.status, 200);
    assert_eq!(right.json()["replays"], serde_json::json!([]));
    // The page holds no data; it carries the token from its fragment to the API.
    assert_eq!(get(viewer, "/replays/arena-1").await.status, 200);
    assert_eq!(rejected(&server, "unauthorized"), 3);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_rate_and_another_is_unaffected() {
    let dir = std::env::temp_dir().join(format!("arena-e2e-viewer-rate-{}", std::process::id()));
    let server = viewer_on(
        &dir,
        &[
            "--exempt-loopback",
            "false",
            "--viewer-requests-per-sec",
            "5",
        ],
    )
    .await;
    let viewer = server.viewer_addr.expect("a viewer address");
    let started = Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    for _ in 0..40 {
        let reply = get_from("127.0.0.2", viewer, "/api/replays", "").await;
        match reply.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let wait: u64 = reply
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("Retry-After in seconds");
                assert!((1..=2).contains(&wait), "{wait}");
            }
            other => panic!("status {other}"),
        }
    }
    // A burst of two seconds' worth, and what the rate refilled meanwhile.
    let allowed = 10 + (5.0 * started.elapsed().as_secs_f64()).ceil() as u32;
    assert!(ok <= allowed, "{ok} answered, at most {allowed} allowed");
    assert!(limited >= 40 - allowed, "{limited} refused");
    assert_eq!(rejected(&server, "rate_limited"), u64::from(limited));
    let other = get_from("127.0.0.3", viewer, "/api/replays", "").await;
    assert_eq!(other.status, 200, "another address has its own budget");
    server.stop().await;
}

/// Asks `path` until it is answered 200: the server frees a stream or a run on its own
/// threads once the client holding it has gone, with nothing a client can await, so this
/// polls (every 50 ms, within [`WAIT`]).
async fn served_once_freed(viewer: SocketAddr, path: &str) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = get(viewer, path).await;
        if reply.status == 200 {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: never freed ({})",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_open_runs_are_capped_and_freed_when_their_client_leaves() {
    let _alone = HEAVY.lock().await;
    let recorded = recording().await;
    // Two runs: the recording, and the same file under another run's name.
    let dir = std::env::temp_dir().join(format!("arena-e2e-viewer-caps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    let a = run_id(recorded);
    let b = "arena-1".to_string();
    for entry in std::fs::read_dir(recorded).expect("the recording") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
        std::fs::copy(&path, dir.join(name)).expect("copy");
        std::fs::copy(&path, dir.join(name.replacen(&a, &b, 1))).expect("copy");
    }
    // Responses large enough (every frame asked for, ~125 KB each) that a client that does
    // not read holds its stream.
    let big = "65536";
    let frames = |id: &str| format!("/api/replays/{id}/frames?from=1&count=300");

    let server = viewer_on(
        &dir,
        &["--viewer-max-streams", "1", "--viewer-max-response-kb", big],
    )
    .await;
    let viewer = server.viewer_addr.expect("a viewer address");
    let mut holder = never_reads(viewer, &frames(&a)).await;
    assert!(status_line(&mut holder).await.contains("200"));
    let busy = get(viewer, &frames(&a)).await;
    assert_eq!(busy.status, 503, "one stream at a time");
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(rejected(&server, "busy"), 1);
    // A first look at a run reads all of it to index it: only in a stream's place.
    let unindexed = get(viewer, &format!("/api/replays/{b}/meta")).await;
    assert_eq!(
        unindexed.status, 503,
        "an index built with every stream taken"
    );
    assert_eq!(unindexed.header("retry-after"), Some("1"));
    assert_eq!(rejected(&server, "busy"), 2);
    // Meta of an indexed run needs no stream.
    assert_eq!(
        get(viewer, &format!("/api/replays/{a}/meta")).await.status,
        200
    );
    drop(holder);
    let reply = served_once_freed(viewer, &format!("/api/replays/{a}/frames?from=1&count=2")).await;
    assert_eq!(reply.json()["frames"].as_array().map(Vec::len), Some(2));
    // The frames' stream is given back once the server has dropped its body, which can be a
    // moment after the client read its last byte: the index waits for that, not a fixed time.
    let meta = served_once_freed(viewer, &format!("/api/replays/{b}/meta")).await;
    assert_eq!(meta.status, 200, "indexed once a stream is free");
    assert_eq!(meta.json()["id"], b.as_str());
    server.stop().await;

    let server = viewer_on(
        &dir,
        &["--viewer-max-runs", "1", "--viewer-max-response-kb", big],
    )
    .await;
    let viewer = server.viewer_addr.expect("a viewer address");
    let mut holder = never_reads(viewer, &frames(&a)).await;
    assert!(status_line(&mut holder).await.contains("200"));
    let other_run = get(viewer, &frames(&b)).await;
    assert_eq!(other_run.status, 503, "one run open at a time");
    assert_eq!(other_run.header("retry-after"), Some("1"));
    assert_eq!(rejected(&server, "runs_open"), 1);
    drop(holder);
    served_once_freed(viewer, &format!("/api/replays/{b}/frames?from=1&count=2")).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_the_streams_and_another_still_gets_one() {
    let _alone = HEAVY.lock().await;
    let dir = recording().await;
    let id = run_id(dir);
    // Streams and runs to spare: only the address's share (2 by default) can refuse.
    let server = viewer_on(
        dir,
        &[
            "--exempt-loopback",
            "false",
            "--viewer-max-streams",
            "8",
            "--viewer-max-runs",
            "8",
            "--viewer-max-response-kb",
            "65536",
        ],
    )
    .await;
    let viewer = server.viewer_addr.expect("a viewer address");
    let whole = format!("/api/replays/{id}/frames?from=1&count=300");
    let two = format!("/api/replays/{id}/frames?from=1&count=2");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = never_reads_from("127.0.0.2", viewer, &whole).await;
        assert!(status_line(&mut stream).await.contains("200"));
        held.push(stream);
    }
    let third = get_from("127.0.0.2", viewer, &two, "").await;
    assert_eq!(third.status, 429, "a third stream from one address");
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(rejected(&server, "streams_per_address"), 1);
    let other = get_from("127.0.0.3", viewer, &two, "").await;
    assert_eq!(other.status, 200, "another address has its own share");
    assert_eq!(other.json()["frames"].as_array().map(Vec::len), Some(2));
    // Its share comes back as its streams end.
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = get_from("127.0.0.2", viewer, &two, "").await;
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address's share never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_npc_run_under_abuse_costs_bounded_memory_and_no_work_once_its_clients_vanish() {
    let _alone = HEAVY.lock().await;
    let dir = recording().await;
    let id = run_id(dir);
    // Ten clients that never read, all from one host (127.0.0.2), and ten readers, each from a
    // host of its own (127.0.0.3 and up): one host gets its share of the streams (2), and
    // the readers the other three (each run open holds a 5,000-NPC world, ~25 MB here), the
    // rest coming back after the Retry-After they are given. No byte cap to speak of, so
    // that a non-reader's response (the whole run, ~37 MB) cannot fit in the sockets' buffers
    // and end: it holds its stream. Readers ask for 16 frames (~2 MB).
    let server = viewer_on(
        dir,
        &[
            "--exempt-loopback",
            "false",
            "--viewer-max-streams",
            "5",
            "--viewer-max-runs",
            "5",
            "--viewer-max-response-kb",
            "65536",
        ],
    )
    .await;
    let viewer = server.viewer_addr.expect("a viewer address");
    let meta_path = format!("/api/replays/{id}/meta");
    assert_eq!(get(viewer, &meta_path).await.status, 200);

    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                every.tick().await;
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
            }
        }
    });
    let frames =
        |i: u32, count: u32| format!("/api/replays/{id}/frames?from={}&count={count}", 1 + 7 * i);
    let mut deaf = Vec::new();
    let mut stuck = 0;
    for i in 0..10 {
        let mut stream = never_reads_from("127.0.0.2", viewer, &frames(i, 300)).await;
        let status = status_line(&mut stream).await;
        if status.contains("200") {
            stuck += 1;
        } else {
            assert!(status.contains("429"), "{status}");
        }
        deaf.push(stream);
    }
    assert_eq!(stuck, 2, "one address's share of the streams");
    assert_eq!(rejected(&server, "streams_per_address"), 8);
    let readers: Vec<_> = (0..10)
        .map(|i| {
            tokio::spawn(get_from_owned(
                format!("127.0.0.{}", 3 + i),
                viewer,
                frames(i, 16),
            ))
        })
        .collect();
    let asked = Instant::now();
    let meta = get(viewer, &meta_path).await;
    let meta_took = asked.elapsed();
    assert_eq!(meta.status, 200);
    // Every reader gets frames while the two non-readers' streams are stuck.
    let mut served = 0;
    for reader in readers {
        let reply = reader.await.expect("a reader");
        assert_eq!(reply.status, 200, "a reader: {}", reply.head);
        let frames = reply.json()["frames"].as_array().map_or(0, Vec::len);
        assert!(
            frames >= 1,
            "a reader got no frames: {}",
            reply.json()["error"]
        );
        served += 1;
    }
    let readers_took = asked.elapsed();
    assert_eq!(
        rejected(&server, "send_timeout"),
        0,
        "the non-readers were still stuck when the readers were done"
    );

    drop(deaf);
    let vanished = Instant::now();
    tokio::time::sleep_until((vanished + Duration::from_secs(1)).into()).await;
    let (viewer_cpu, all_cpu) = (thread_cpu(replays::THREAD_NAME), process_cpu());
    tokio::time::sleep_until((vanished + Duration::from_secs(2)).into()).await;
    let viewer_cpu = thread_cpu_since(replays::THREAD_NAME, &viewer_cpu);
    let all_cpu = process_cpu() - all_cpu;
    sampler.abort();
    let grew_mb = peak.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    // Once they are gone a reader is served at once.
    let reply = get(viewer, &frames(0, 16)).await;
    assert_eq!(reply.status, 200);
    let bytes = reply.body.len();
    let frames = reply.json()["frames"].as_array().map_or(0, Vec::len);
    assert_eq!(frames, 16);
    eprintln!(
        "{served} readers served in {readers_took:?} beside {stuck} stuck non-readers; after: {frames} frames, {bytes} B; meta took {meta_took:?}; \
         RSS grew {grew_mb} MB; 1-2 s after the clients vanished: viewer threads {viewer_cpu:.2} s \
         CPU, the whole process {all_cpu:.2} s"
    );
    assert!(
        meta_took < Duration::from_secs(1),
        "meta took {meta_took:?}"
    );
    assert!(grew_mb <= 256, "RSS grew {grew_mb} MB");
    assert!(
        viewer_cpu < 0.05,
        "the viewer still worked {viewer_cpu:.2} s in the second after its clients vanished"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_client_leaves_stops_at_its_next_tick() {
    let _alone = HEAVY.lock().await;
    let dir = recording().await;
    let id = run_id(dir);
    // No byte cap to speak of: the whole run (300 frames of 5,000 NPCs) in one response.
    let server = viewer_on(dir, &["--viewer-max-response-kb", "1000000"]).await;
    let viewer = server.viewer_addr.expect("a viewer address");
    let mut client = connect("127.0.0.1", viewer, None).await;
    let path = format!("/api/replays/{id}/frames?from=1&count=300");
    send_request(&mut client, &path, "").await;
    // Read the first few frames (the re-simulation is under way), then leave.
    let mut got = vec![0u8; 512 * 1024];
    tokio::time::timeout(WAIT, client.read_exact(&mut got))
        .await
        .expect("frames in time")
        .expect("read frames");
    drop(client);
    let left = Instant::now();
    tokio::time::sleep_until((left + Duration::from_millis(500)).into()).await;
    let before = thread_cpu(replays::THREAD_NAME);
    tokio::time::sleep_until((left + Duration::from_millis(1500)).into()).await;
    let worked = thread_cpu_since(replays::THREAD_NAME, &before);
    assert!(
        worked < 0.05,
        "the re-simulation went on {worked:.2} s after its client left"
    );
    // And its stream and run are free again at once.
    let reply = get(viewer, &format!("/api/replays/{id}/frames?from=2&count=1")).await;
    assert_eq!(reply.status, 200);
    server.stop().await;
}

/// GET `path` from `ip` as a client that obeys 503's Retry-After, until it is answered.
async fn get_from_owned(ip: String, addr: SocketAddr, path: String) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = get_from(&ip, addr, &path, "").await;
        if reply.status != 503 || Instant::now() > deadline {
            return reply;
        }
        let wait: u64 = reply
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}
