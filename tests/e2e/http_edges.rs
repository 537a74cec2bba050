//! The game's HTTP side under abuse: slowloris connections, one address holding connections,
//! every connection taken (the longest waiting is evicted for a newcomer), oversized requests,
//! and one address asking `/api/connect` in a burst. Clients bind 127.0.0.2 and up to act as different hosts (`--exempt-loopback false`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::common::{self, TestServer};

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    let source: SocketAddr = format!("{source}:0").parse().expect("an address");
    socket.bind(source).expect("bind a loopback address");
    socket.connect(server).await.expect("connect on loopback")
}

/// One HTTP/1.1 response, read from a kept-alive connection.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A kept-alive HTTP/1.1 connection, enough for these tests (every answer has a length).
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn open(source: &str, server: SocketAddr) -> Self {
        Self {
            stream: BufReader::new(connect_from(source, server).await),
        }
    }

    /// Sends `head` (without its blank line) and `body`, reads the response; None if the
    /// server closed the connection instead of answering.
    async fn send(&mut self, head: &str, body: &[u8]) -> Option<Response> {
        let mut request = format!("{head}\r\nHost: arena\r\n\r\n").into_bytes();
        request.extend_from_slice(body);
        self.stream.get_mut().write_all(&request).await.ok()?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.ok()?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':')?;
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let response = Response { status, headers };
        let len: usize = response.header("content-length")?.parse().ok()?;
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(response)
    }

    async fn get(&mut self, path: &str) -> Option<Response> {
        self.send(&format!("GET {path} HTTP/1.1"), &[]).await
    }
}

/// A `GET` on a fresh connection from `source`: its status, or 0 if the server closed it.
async fn get_from(source: &str, server: SocketAddr, path: &str) -> u16 {
    let mut conn = Conn::open(source, server).await;
    conn.get(path).await.map_or(0, |r| r.status)
}

/// Reads until the server closes `stream` (EOF or reset; a 408 before it is fine).
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 512];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Whether the server closes `stream` within `within`, reading nothing (a connection refused
/// at accept never gets a byte).
async fn closed_unanswered(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// `arena_http_rejected_total` on the game's listener for `reason`.
fn http_rejected(server: &TestServer, reason: &str) -> u64 {
    counter(
        server,
        "arena_http_rejected_total",
        &format!("reason=\"{reason}\""),
    )
}

fn counter(server: &TestServer, name: &str, label: &str) -> u64 {
    let text = server.stats.render_metrics();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until `check` holds, for an effect the server applies after the client sees its own
/// side done (a slot given back once the server has noticed a close).
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + common::WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn slowloris_connections_are_closed_by_the_header_timeout_while_others_get_in() {
    let server = common::start(&[
        "--exempt-loopback",
        "false",
        "--http-header-timeout",
        "1s",
        // Caps out of the way: the header timeout alone must free these.
        "--http-max-connections-per-address",
        "1000",
        "--http-max-connections",
        "1000",
    ])
    .await;
    let addr = server.http_addr;
    const CONNS: usize = 200;
    let mut slow = Vec::new();
    for _ in 0..CONNS {
        let mut stream = connect_from("127.0.0.2", addr).await;
        let opened = Instant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: arena\r\n")
            .await
            .expect("a partial head");
        slow.push(tokio::spawn(async move {
            // A header line every 200 ms, never the blank line, until the server closes.
            let (mut rx, mut tx) = stream.into_split();
            let trickle = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if tx.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            let mut buf = [0u8; 512];
            let read_to_close = async {
                while let Ok(n) = rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = trickle => unreachable!("the trickle never ends by itself"),
                _ = read_to_close => {}
            }
            opened.elapsed()
        }));
    }
    // Meanwhile another host is served promptly, again and again, until the last is closed.
    let probes = async {
        let mut worst = Duration::ZERO;
        while slow.iter().any(|t| !t.is_finished()) {
            for path in ["/healthz", "/api/connect"] {
                let start = Instant::now();
                assert_eq!(get_from("127.0.0.3", addr, path).await, 200, "{path}");
                worst = worst.max(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    };
    let worst = tokio::time::timeout(Duration::from_secs(5), probes)
        .await
        .expect("every slowloris connection closed within 5 s");
    assert!(worst < Duration::from_secs(1), "a probe took {worst:?}");
    for task in slow {
        let held = task.await.expect("a slowloris task");
        // The deadline is 1 s from the connection's opening, whatever trickles in; the margin
        // is for 200 connections on a loaded CI machine.
        assert!(
            held >= Duration::from_millis(900) && held < Duration::from_millis(2500),
            "a slowloris connection was held {held:?}"
        );
    }
    assert_eq!(http_rejected(&server, "header_timeout"), CONNS as u64);
    server.stop().await;
}

#[tokio::test]
async fn a_quiet_kept_alive_connection_is_closed_after_the_header_timeout() {
    let server = common::start(&["--http-header-timeout", "500ms"]).await;
    let mut conn = Conn::open("127.0.0.1", server.http_addr).await;
    let status = conn.get("/healthz").await.map(|r| r.status);
    assert_eq!(status, Some(200));
    let answered = Instant::now();
    let mut stream = conn.stream.into_inner();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .expect("a clean close");
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(400) && idle < Duration::from_secs(2),
        "closed after {idle:?} idle"
    );
    assert!(rest.is_empty(), "an idle close says nothing: {rest:?}");
    assert_eq!(
        http_rejected(&server, "header_timeout"),
        0,
        "idle is not a rejection"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let server = common::start(&[
        "--exempt-loopback",
        "false",
        "--http-max-connections-per-address",
        "5",
        "--http-header-timeout",
        "30s",
    ])
    .await;
    let addr = server.http_addr;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut conn = Conn::open("127.0.0.2", addr).await;
        // Answered, so admitted: the next connection is accepted after these.
        assert_eq!(conn.get("/healthz").await.map(|r| r.status), Some(200));
        held.push(conn);
    }
    let mut sixth = connect_from("127.0.0.2", addr).await;
    sixth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: arena\r\n\r\n")
        .await
        .ok();
    assert!(
        closed_unanswered(&mut sixth, Duration::from_secs(2)).await,
        "the sixth connection from one address is closed unanswered"
    );
    assert_eq!(http_rejected(&server, "too_many_from_address"), 1);
    // Another address still gets in meanwhile.
    assert_eq!(get_from("127.0.0.3", addr, "/api/connect").await, 200);
    // One closed: the address gets its place back once the server has noticed.
    let mut gone = held.pop().expect("five held").stream.into_inner();
    gone.shutdown().await.expect("a clean close");
    closed(&mut gone).await;
    until("127.0.0.2 gets a connection back", async || {
        get_from("127.0.0.2", addr, "/healthz").await == 200
    })
    .await;
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn the_total_cap_makes_room_by_closing_the_longest_idle_connection() {
    let server = common::start(&[
        "--http-max-connections",
        "4",
        "--http-header-timeout",
        "30s",
    ])
    .await;
    let addr = server.http_addr;
    let mut held = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let mut conn = Conn::open(source, addr).await;
        assert_eq!(conn.get("/healthz").await.map(|r| r.status), Some(200));
        held.push(conn);
    }
    // Loopback is spared per-address caps, never the total: a fifth connection finds the
    // table full, and the one idle longest (the first, kept alive since its answer) is
    // closed for it. Refusal, when every connection is in a request, is checked by
    // serve.rs's own tests: the game's handlers all answer at once.
    let mut fifth = Conn::open("127.0.0.1", addr).await;
    assert_eq!(fifth.get("/healthz").await.map(|r| r.status), Some(200));
    assert_eq!(http_rejected(&server, "evicted_waiting"), 1);
    assert_eq!(http_rejected(&server, "too_many_connections"), 0);
    let mut first = held.remove(0).stream.into_inner();
    assert!(
        closed_unanswered(&mut first, Duration::from_secs(2)).await,
        "the longest idle connection is closed"
    );
    // The others were not touched.
    for conn in &mut held {
        assert_eq!(conn.get("/healthz").await.map(|r| r.status), Some(200));
    }
    drop((held, fifth));
    server.stop().await;
}

#[tokio::test]
async fn request_heads_and_bodies_over_the_limits_are_refused() {
    let server = common::start(&[
        "--http-max-header-bytes",
        "8192",
        "--http-max-body-bytes",
        "1024",
    ])
    .await;
    let addr = server.http_addr;
    let mut conn = Conn::open("127.0.0.1", addr).await;
    let fits = format!("GET /healthz HTTP/1.1\r\nX-Pad: {}", "a".repeat(4000));
    assert_eq!(conn.send(&fits, &[]).await.map(|r| r.status), Some(200));
    let too_long = format!("GET /healthz HTTP/1.1\r\nX-Pad: {}", "a".repeat(10_000));
    assert_eq!(conn.send(&too_long, &[]).await.map(|r| r.status), Some(431));
    assert_eq!(http_rejected(&server, "header_too_large"), 1);

    let mut conn = Conn::open("127.0.0.1", addr).await;
    let small = "GET /healthz HTTP/1.1\r\nContent-Length: 1000";
    let status = conn.send(small, &[b'x'; 1000]).await.map(|r| r.status);
    assert_eq!(status, Some(200));
    // Refused on its declared length, before a byte of it is read (none is sent here, so the
    // close that follows carries no unread data to turn it into a reset).
    let big = "GET /healthz HTTP/1.1\r\nContent-Length: 2048";
    let response = conn.send(big, &[]).await.expect("an answer");
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(http_rejected(&server, "body_too_large"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_connect_burst_from_one_address_gets_its_rate_and_another_is_unaffected() {
    const RATE: f64 = 50.0;
    const BURST: f64 = 20.0;
    let server = common::start(&[
        "--exempt-loopback",
        "false",
        "--connect-per-sec-per-address",
        "50",
        "--connect-burst-per-address",
        "20",
    ])
    .await;
    let addr = server.http_addr;
    let start = Instant::now();
    // 2,000 requests from 127.0.0.2 over 4 kept-alive connections, as fast as they go.
    let burst: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = Conn::open("127.0.0.2", addr).await;
                let (mut ok, mut limited) = (0u64, 0u64);
                for _ in 0..500 {
                    let response = conn.get("/api/connect").await.expect("an answer");
                    match response.status {
                        200 => ok += 1,
                        429 => {
                            let after: u64 = response
                                .header("retry-after")
                                .and_then(|s| s.parse().ok())
                                .expect("Retry-After in whole seconds");
                            assert!(after >= 1, "Retry-After {after}");
                            limited += 1;
                        }
                        s => panic!("status {s}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    // Meanwhile 127.0.0.3 asks now and then and always gets a token.
    let other = tokio::spawn(async move {
        let mut conn = Conn::open("127.0.0.3", addr).await;
        for _ in 0..10 {
            let status = conn.get("/api/connect").await.map(|r| r.status);
            assert_eq!(status, Some(200), "another address is unaffected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (mut ok, mut limited) = (0, 0);
    for task in burst {
        let (o, l) = task.await.expect("a burst connection");
        ok += o;
        limited += l;
    }
    let elapsed = start.elapsed().as_secs_f64();
    other.await.expect("the other address");
    assert_eq!(ok + limited, 2000);
    let allowed = BURST + RATE * elapsed;
    assert!(
        ok as f64 <= allowed + 1.0 && ok as f64 >= BURST,
        "{ok} tokens in {elapsed:.2} s (at most {allowed:.0})"
    );
    assert_eq!(
        counter(
            &server,
            "arena_connect_rejected_total",
            "reason=\"rate_limited\""
        ),
        limited
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_table_evicts_the_oldest_waiting_connection_so_newcomers_get_in() {
    const CAP: usize = 50;
    const PROBES: usize = 10;
    let server = common::start(&[
        "--exempt-loopback",
        "false",
        "--http-max-connections",
        "50",
        "--http-max-connections-per-address",
        "0",
        // Long enough that the deadline frees nobody during the test.
        "--http-header-timeout",
        "30s",
    ])
    .await;
    let addr = server.http_addr;
    // An attacker with enough addresses to fill the total holds every place with a head
    // it never finishes.
    let mut slow = Vec::new();
    for _ in 0..CAP {
        let mut stream = connect_from("127.0.0.2", addr).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: arena\r\n")
            .await
            .expect("a partial head");
        slow.push(stream);
    }
    // A newcomer is served promptly all the same, again and again. Its connections are kept
    // open (idle, so evictable too, but newer than every slowloris one), so each one takes a
    // place: every probe finds the table full.
    let mut kept = Vec::new();
    for _ in 0..PROBES {
        for path in ["/healthz", "/api/connect"] {
            let start = Instant::now();
            let mut conn = Conn::open("127.0.0.3", addr).await;
            let status = conn.get(path).await.map(|r| r.status);
            assert_eq!(status, Some(200), "{path}");
            let took = start.elapsed();
            assert!(took < Duration::from_secs(1), "{path} took {took:?}");
            kept.push(conn);
        }
    }
    let evictions = 2 * PROBES;
    assert_eq!(http_rejected(&server, "evicted_waiting"), evictions as u64);
    assert_eq!(http_rejected(&server, "too_many_connections"), 0);
    // The oldest slowloris connections were the ones closed, unanswered; the rest are held.
    for stream in &mut slow[..evictions] {
        assert!(
            closed_unanswered(stream, Duration::from_secs(2)).await,
            "an evicted connection is closed"
        );
    }
    let mut buf = [0u8; 16];
    for stream in &slow[evictions..] {
        assert!(
            matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a newer slowloris connection is still open"
        );
    }
    drop((slow, kept));
    server.stop().await;
}
