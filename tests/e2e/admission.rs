//! The handshake refuses what it must, with the reason, before allocating anything.

use arena_client_sim::connect::{ClientError, close_error};
use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{Hello, PROTOCOL_VERSION, Reject, RejectReason, close_code};
use arena_shared::token;
use wtransport::error::ConnectionError;

use crate::common::{self, TestServer, WAIT};

/// Connects with `token` (and `version`), expects a `Reject` with `want`, and a connection
/// close carrying the same code; returns the `Reject`'s retry hint.
async fn expect_reject(server: &TestServer, token: &str, version: u16, want: RejectReason) -> u32 {
    expect_refusal(server, token, version, want)
        .await
        .retry_after_ms
}

/// [`expect_reject`], returning the whole `Reject` (its message names the rule that refused).
async fn expect_refusal(
    server: &TestServer,
    token: &str,
    version: u16,
    want: RejectReason,
) -> Reject {
    let info = server.connect_info("tester").await;
    let mut t = server.open(&info).await;
    let mut reader = FrameReader::new();
    let hello = Hello {
        protocol_version: version,
        token: token.into(),
        name: "tester".into(),
        resume: None,
    };
    t.send_hello(&hello).await.expect("hello sent");
    let got = t.read_msg(&mut reader).await;
    let reject = match got {
        Ok((arena_shared::protocol::ServerMsg::Reject(r), _)) => {
            assert_eq!(r.reason, want, "{}", r.message);
            r
        }
        other => panic!("expected Reject({want:?}), got {other:?}"),
    };
    let closed = tokio::time::timeout(WAIT, t.conn.closed())
        .await
        .expect("server closes");
    match closed {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.code().into_inner(), close_code(want.code()))
        }
        other => panic!(
            "expected an application close, got {:?}",
            close_error(other)
        ),
    }
    reject
}

/// A session welcomed with a token minted for `id`.
async fn welcome(server: &TestServer, id: u64) -> arena_client_sim::connect::Transport {
    welcome_with(server, &server.mint(id, 60_000))
        .await
        .unwrap_or_else(|e| panic!("client {id}: {e}"))
}

/// A session opened with `token`: welcomed, or the handshake's error.
async fn welcome_with(
    server: &TestServer,
    token: &str,
) -> Result<arena_client_sim::connect::Transport, ClientError> {
    let info = server.connect_info("p").await;
    let mut t = server.open(&info).await;
    t.handshake(token, "p", &mut FrameReader::new()).await?;
    Ok(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_missing_and_foreign_tokens_and_wrong_versions_are_rejected() {
    let server = common::start(&[]).await;
    let good = server.mint(1, 60_000);

    let forged = token::sign(
        b"not the server's secret",
        &token::Claims {
            client_id: 2,
            name: "mallory".into(),
            expires_at_ms: u64::MAX,
            server: server.audience.clone(),
        },
    );
    expect_reject(
        &server,
        &forged,
        PROTOCOL_VERSION,
        RejectReason::TokenForged,
    )
    .await;
    expect_reject(
        &server,
        &server.mint(3, -1_000),
        PROTOCOL_VERSION,
        RejectReason::TokenExpired,
    )
    .await;
    expect_reject(&server, "", PROTOCOL_VERSION, RejectReason::TokenMissing).await;
    expect_reject(
        &server,
        "not-base64!",
        PROTOCOL_VERSION,
        RejectReason::TokenMalformed,
    )
    .await;
    let foreign = token::sign(
        &server.secret,
        &token::Claims {
            client_id: 4,
            name: "x".into(),
            expires_at_ms: u64::MAX,
            server: "https://elsewhere.example:4433/".into(),
        },
    );
    expect_reject(
        &server,
        &foreign,
        PROTOCOL_VERSION,
        RejectReason::TokenWrongServer,
    )
    .await;
    let want = RejectReason::ProtocolVersion {
        server: PROTOCOL_VERSION,
    };
    expect_reject(&server, &good, PROTOCOL_VERSION + 1, want).await;
    expect_reject(&server, &good, 0, want).await;

    assert_eq!(server.stats.sessions(), 0, "nothing was admitted");
    assert_eq!(server.stats.players(), 0);
    assert_eq!(
        arena_server::stats::Stats::get(&server.stats.sessions_rejected),
        7
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_and_one_session_per_client_id_are_enforced() {
    let server = common::start(&["--max-clients", "2"]).await;
    let mut kept = Vec::new();
    for id in [10, 11] {
        let token = server.mint(id, 60_000);
        kept.push((welcome_with(&server, &token).await.expect("welcome"), token));
    }
    server.sessions_reach(2).await;
    // The same client id again, with a valid token of its own: the used-token check has
    // nothing against it, so what refuses it is the one-session-per-client-id rule, even
    // before capacity is considered (the server is full too). That rule hints when to retry
    // (the other session may end); a spent token gets no hint (waiting does not help).
    let again = server.mint(10, 60_001);
    assert_ne!(again, kept[0].1, "a second token for the same client id");
    let r = expect_refusal(&server, &again, PROTOCOL_VERSION, RejectReason::TokenInUse).await;
    assert!(
        r.message.contains("client id") && r.retry_after_ms > 0,
        "refused by the client-id rule, with a retry hint: {r:?}"
    );
    expect_reject(
        &server,
        &server.mint(12, 60_000),
        PROTOCOL_VERSION,
        RejectReason::ServerFull,
    )
    .await;

    // A slot frees when a player leaves.
    let (t, _) = kept.pop().expect("two kept");
    t.conn.close(wtransport::VarInt::from_u32(0), b"bye");
    server.sessions_reach(1).await;
    welcome(&server, 13).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_admits_one_session_and_a_full_server_does_not_spend_it() {
    let server = common::start(&["--max-clients", "1"]).await;
    let first = server.mint(30, 60_000);
    let t = welcome_with(&server, &first).await.expect("welcome");
    // Refused for want of room: the token is not spent...
    let second = server.mint(31, 60_000);
    expect_reject(&server, &second, PROTOCOL_VERSION, RejectReason::ServerFull).await;
    t.conn.close(wtransport::VarInt::from_u32(0), b"bye");
    server.sessions_reach(0).await;
    // ...so it admits once there is.
    let t = welcome_with(&server, &second)
        .await
        .expect("the refused token still works");
    t.conn.close(wtransport::VarInt::from_u32(0), b"bye");
    server.sessions_reach(0).await;
    // Both have admitted a session: neither admits another, though the slot is free.
    expect_reject(&server, &first, PROTOCOL_VERSION, RejectReason::TokenInUse).await;
    expect_reject(&server, &second, PROTOCOL_VERSION, RejectReason::TokenInUse).await;
    // A new token for the same client id (a login service may issue one) is welcome.
    welcome_with(&server, &server.mint(30, 61_000))
        .await
        .expect("a fresh token");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_guest_tokens_only_tokens_signed_with_the_secret_file_get_in() {
    let dir = std::env::temp_dir().join(format!("arena-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("secret");
    std::fs::write(&file, "a login service's secret\n").expect("secret written");
    let path = file.to_str().expect("UTF-8 path");
    let server = common::start(&["--no-guest-tokens", "--token-secret-file", path]).await;
    assert_eq!(
        &server.secret[..],
        b"a login service's secret",
        "newline trimmed"
    );

    let refused = arena_client_sim::connect::fetch_connect_info(&server.http, "p").await;
    assert!(
        matches!(&refused, Err(ClientError::Http(e)) if e.to_string().contains("404")),
        "{refused:?}"
    );
    // What a login service holding the same secret issues is accepted.
    let info = arena_client_sim::connect::ConnectInfo {
        url: format!("https://{}/", server.wt_addr),
        cert_sha256: server.cert_sha256.clone(),
        cert_sha256s: Vec::new(),
        token: server.mint(40, 60_000),
    };
    let mut t = server.open(&info).await;
    t.handshake(&info.token, "p", &mut FrameReader::new())
        .await
        .expect("welcome");
    server.stop().await;

    std::fs::write(&file, "short\n").expect("secret written");
    let err = common::try_start(&["--token-secret-file", path])
        .await
        .err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.to_string().contains("at least 16 bytes")),
        "{:?}",
        err.map(|e| e.to_string())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_address_are_limited_and_the_refused_are_told_when_to_return() {
    let server = common::start(&["--max-per-ip", "2", "--exempt-loopback", "false"]).await;
    let first = welcome(&server, 50).await;
    let _second = welcome(&server, 51).await;
    let wait = expect_reject(
        &server,
        &server.mint(52, 60_000),
        PROTOCOL_VERSION,
        RejectReason::TooManyFromAddress,
    )
    .await;
    assert!(wait > 0, "waiting helps here, and the hint says how long");
    first.conn.close(wtransport::VarInt::from_u32(0), b"bye");
    server.sessions_reach(1).await;
    welcome(&server, 53).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_rate_are_refused_with_the_time_to_the_next_slot() {
    // One handshake every 2 s (a burst of one): the second in quick succession is refused,
    // told how long to wait, and admitted after that wait.
    let server = common::start(&["--handshakes-per-sec", "0.5"]).await;
    let _first = welcome(&server, 60).await;
    let wait = expect_reject(
        &server,
        &server.mint(61, 60_000),
        PROTOCOL_VERSION,
        RejectReason::RateLimited,
    )
    .await;
    assert!(
        (1..=2_000).contains(&wait),
        "one handshake every 2 s: {wait} ms"
    );
    // The scenario is time itself: the next slot comes when the hint says.
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(wait))).await;
    welcome(&server, 62).await;
    server.stop().await;
}

/// Connect info for a minted token for `id`, without asking `/api/connect` (whose own
/// per-address limits are not what these tests are about).
fn minted_info(server: &TestServer, id: u64) -> arena_client_sim::connect::ConnectInfo {
    arena_client_sim::connect::ConnectInfo {
        url: format!("https://{}/", server.wt_addr),
        cert_sha256: server.cert_sha256.clone(),
        cert_sha256s: Vec::new(),
        token: server.mint(id, 60_000),
    }
}

/// A session welcomed from `127.0.0.N` with a token minted for `id`.
async fn welcome_from(
    server: &TestServer,
    n: u8,
    id: u64,
) -> Result<arena_client_sim::connect::Transport, ClientError> {
    let info = minted_info(server, id);
    let from = std::net::SocketAddr::from(([127, 0, 0, n], 0));
    let mut t = arena_client_sim::connect::open_from(&info, WAIT, Some(from)).await?;
    t.handshake(&info.token, "p", &mut FrameReader::new())
        .await?;
    Ok(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_ip_is_on_by_default_and_spares_loopback_only_under_exempt_loopback() {
    // The default cap, with loopback treated as a stranger (the handshake rate per address is
    // lifted: these joins come fast from one address, and that is not what is tested).
    const DEFAULT_CAP: u64 = 16;
    let strict = common::start(&[
        "--exempt-loopback",
        "false",
        "--handshakes-per-sec-per-address",
        "0",
    ])
    .await;
    let mut held = Vec::new();
    for id in 0..DEFAULT_CAP {
        held.push(welcome_from(&strict, 2, id).await.expect("within the cap"));
    }
    match welcome_from(&strict, 2, DEFAULT_CAP).await {
        Err(ClientError::Rejected {
            reason: RejectReason::TooManyFromAddress,
            retry_after_ms,
            ..
        }) => assert!(retry_after_ms > 0),
        other => panic!("expected TooManyFromAddress, got {:?}", other.err()),
    }
    welcome_from(&strict, 3, 100)
        .await
        .expect("another address has its own seats");
    drop(held);
    strict.stop().await;

    // Exempt (the default): the host's own bot swarm is not capped.
    let spared = common::start(&["--handshakes-per-sec-per-address", "0"]).await;
    let mut held = Vec::new();
    for id in 0..=DEFAULT_CAP {
        held.push(
            welcome_from(&spared, 2, id)
                .await
                .expect("loopback is spared"),
        );
    }
    drop(held);
    spared.stop().await;
}

/// Opens a WebTransport session to `server` at `path`, sending `origin` as a browser would.
async fn connect_as_page(
    server: &TestServer,
    path: &str,
    origin: Option<&str>,
) -> Result<wtransport::Connection, String> {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD
        .decode(server.cert_sha256.as_deref().expect("self-signed"))
        .expect("base64");
    let hash = <[u8; 32]>::try_from(hash).expect("a SHA-256");
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    let endpoint = wtransport::Endpoint::client(config).map_err(|e| e.to_string())?;
    let mut options =
        wtransport::endpoint::ConnectOptions::builder(format!("https://{}{path}", server.wt_addr));
    if let Some(origin) = origin {
        options = options.add_header("origin", origin);
    }
    tokio::time::timeout(WAIT, endpoint.connect(options.build()))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_request_needs_the_path_handed_out_and_a_page_of_ours_if_any() {
    let server = common::start(&["--allowed-origin", "https://portal.example.net"]).await;
    let refused = |reason: &str| {
        let text = server.stats.render_metrics();
        let sample = format!("arena_handshakes_rejected_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(sample.as_str())?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Native clients send no Origin; the path is the one /api/connect hands out.
    let url = server.connect_info("p").await.url;
    assert!(url.ends_with('/'), "{url}");
    connect_as_page(&server, "/", None)
        .await
        .expect("no origin, our path");
    let wrong = connect_as_page(&server, "/admin", None).await;
    assert!(wrong.is_err(), "another path is not found");
    assert_eq!(refused("wrong_path"), 1);

    let evil = connect_as_page(&server, "/", Some("https://evil.example")).await;
    assert!(evil.is_err(), "a foreign page is forbidden");
    assert_eq!(refused("origin_refused"), 1);
    let own = format!("http://{}", server.http_addr);
    for origin in [
        own.as_str(),
        "http://localhost:8080",
        "https://portal.example.net",
    ] {
        connect_as_page(&server, "/", Some(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin} is ours or allowed: {e}"));
    }
    assert_eq!((refused("wrong_path"), refused("origin_refused")), (1, 1));
    server.stop().await;
}

/// A client may advertise any `max_datagram_frame_size` in its QUIC transport parameters. One
/// too small to hold even WebTransport's session header leaves no room for a snapshot: the
/// server refuses it as a client without datagrams, with the reason, and goes on serving (the
/// size was once computed by a subtraction that underflowed: a panic in a checked build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_datagrams_cannot_hold_the_session_header_is_refused_with_the_reason() {
    let server = common::start(&[]).await;
    let info = server.connect_info("tiny").await;
    let hash = {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(server.cert_sha256.as_deref().expect("self-signed"))
            .expect("base64");
        wtransport::tls::Sha256Digest::new(<[u8; 32]>::try_from(bytes).expect("a SHA-256"))
    };
    // 4 bytes: quinn keeps none of them for a payload (its frame's own header takes them),
    // and a WebTransport datagram needs its session id in front of the payload.
    let mut transport = wtransport::config::QuicTransportConfig::default();
    transport.datagram_receive_buffer_size(Some(4));
    let mut config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([hash])
        .build();
    config
        .quic_config_mut()
        .transport_config(std::sync::Arc::new(transport));
    let endpoint = wtransport::Endpoint::client(config).expect("a client endpoint");
    let conn = tokio::time::timeout(WAIT, endpoint.connect(&info.url))
        .await
        .expect("connect in time")
        .expect("QUIC and HTTP/3 let the session open");
    let (send, recv) = conn
        .open_bi()
        .await
        .expect("a stream")
        .await
        .expect("a stream");
    let mut t = arena_client_sim::connect::Transport {
        endpoint: arena_client_sim::endpoints::Lease::own(endpoint),
        conn,
        send,
        recv,
        handshake_bytes_read: 0,
    };
    match t
        .handshake(&info.token, "tiny", &mut FrameReader::new())
        .await
    {
        Err(ClientError::Rejected { reason, .. }) => {
            assert_eq!(reason, RejectReason::DatagramsUnsupported)
        }
        other => panic!("expected Reject(DatagramsUnsupported), got {other:?}"),
    }
    // The server is whole: a client with room for datagrams still gets in.
    welcome(&server, 2).await;
    server.stop().await;
}
