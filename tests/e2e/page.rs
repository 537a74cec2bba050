//! The browser game client in a real headless Chromium (Debian's `chromium`, headless new
//! mode, QUIC on): the page the server serves connects over WebTransport pinning the
//! certificate hash, plays with the wasm netcode, and moves the way its keys say. A screenshot
//! is left in `target/test-artifacts/browser-client.png`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use arena_server::stats::Stats;

use crate::browser::Browser;
use crate::common;

/// `window.arena.stats()`.
async fn stats(b: &mut Browser) -> Value {
    b.eval("window.arena.stats()").await
}

/// Opens the page as `name` and waits until it is playing with a second of snapshots behind
/// it; returns its stats then.
async fn play(b: &mut Browser, server: &common::TestServer, name: &str) -> Value {
    b.goto(&format!("{}/?name={name}", server.http)).await;
    b.wait_for(
        "(() => { const s = window.arena.stats(); return s.state === 'playing' && s.snapshots >= 30 && s; })()",
        Duration::from_secs(30),
    )
    .await
}

fn xy(v: &Value) -> (f64, f64) {
    let p = v.as_array().expect("a position");
    (p[0].as_f64().expect("x"), p[1].as_f64().expect("y"))
}

/// Waits until the player has stood still (the server's position unchanged) for a while.
async fn at_rest(b: &mut Browser) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = None;
    let mut still = 0;
    loop {
        let s = stats(b).await;
        let server = s["server"].clone();
        if last.as_ref() == Some(&server) && s["pending_inputs"].as_u64().is_some() {
            still += 1;
            if still >= 5 {
                return s;
            }
        } else {
            still = 0;
        }
        last = Some(server);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the player never came to rest: {s}"
        );
        // Five samples a snapshot interval or more apart.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_over_webtransport_and_moves_where_its_keys_say() {
    let server = common::start(&[]).await;
    let mut b = Browser::launch().await;
    b.goto(&format!("{}/?name=chromium", server.http)).await;
    // Welcomed, and a second and a half of snapshots behind it (the rate is measured over
    // the last two seconds).
    b.wait_for(
        "(() => { const s = window.arena.stats(); return s.state === 'playing' && s.warm && s.snapshots >= 75; })()",
        Duration::from_secs(30),
    )
    .await;
    let s = at_rest(&mut b).await;
    let tick_rate = s["tick_rate"].as_f64().expect("tick rate");
    let rate = s["snapshot_rate"].as_f64().expect("rate");
    assert!(
        rate >= 0.9 * tick_rate,
        "{rate} snapshots a second at {tick_rate} Hz: {s}"
    );
    let (x0, y0) = xy(&s["server"]);

    // D held: the server moves the player right (+x), and only right.
    b.key_down("d").await;
    b.wait_for(
        &format!("window.arena.stats().server[0] > {x0} + 150"),
        Duration::from_secs(10),
    )
    .await;
    b.key_up("d").await;
    let s = at_rest(&mut b).await;
    let (x1, y1) = xy(&s["server"]);
    assert!(x1 > x0 + 150.0, "moved right: {x0} -> {x1}");
    assert!((y1 - y0).abs() < 1.0, "and not up or down: {y0} -> {y1}");
    // With no impairment, the prediction is the server's position within a quantization
    // step (1/16 unit), with nothing to correct.
    let (px, py) = xy(&s["predicted"]);
    assert!(
        (px - x1).abs() <= 1.0 / 16.0 && (py - y1).abs() <= 1.0 / 16.0,
        "predicted ({px}, {py}), server ({x1}, {y1}): {s}"
    );
    assert_eq!(s["corrections"], 0, "{s}");
    assert_eq!(s["state"], "playing");

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("browser-client.png");
    b.screenshot(&shot).await;
    let png = std::fs::metadata(&shot).expect("a screenshot");
    assert!(png.len() > 5000, "{} bytes", png.len());
    eprintln!(
        "chromium played: {rate} snapshots/s at {tick_rate} Hz, {} kB/s down, ping {} ms, moved {:.0} units right, prediction exact; screenshot {}",
        s["kbps_down"],
        s["ping_ms"],
        x1 - x0,
        shot.display()
    );
    b.close().await;
    server.stop().await;
}

/// A page whose network vanishes says so, reconnects with backoff once it is back, and takes
/// its own entity back (session resume) within the server's grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reconnects_after_its_network_vanishes_and_resumes_its_entity() {
    // The page dials a relay the test can cut; the relay's port is named in the server's
    // public URL, so it is bound first.
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("relay binds");
    let public = format!("https://{}/", front.local_addr().expect("bound"));
    let server = common::start(&[
        "--public-url",
        &public,
        "--idle-timeout",
        "1500ms",
        "--resume-grace",
        "20s",
    ])
    .await;
    let relay = crate::relay::Relay::start_on(front, server.wt_addr);
    let mut b = Browser::launch().await;
    play(&mut b, &server, "roamer").await;
    let before = stats(&mut b).await;
    let entity = before["entity"].clone();

    relay.cut();
    // The page notices (its idle timeout), tells the player, and schedules a reconnect.
    let message = b
        .wait_for(
            "(() => { const m = document.getElementById('message'); return m.style.display !== 'none' && m.textContent.includes('reconnecting') && m.textContent; })()",
            Duration::from_secs(15),
        )
        .await;
    eprintln!("while cut, the page says: {message}");
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("connection lost")),
        "{message}"
    );
    relay.restore();
    let after = b
        .wait_for(
            "(() => { const s = window.arena.stats(); return s.state === 'playing' && s.sessions >= 2 && s.snapshots >= 10 && s; })()",
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(after["resumed"], true, "{after}");
    assert_eq!(after["entity"], entity, "the same entity: {after}");
    assert_eq!(
        b.eval("document.getElementById('message').style.display")
            .await,
        "none"
    );
    b.close().await;
    server.stop().await;
}

/// A refused page says why and keeps trying, no sooner than the server asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_page_says_why_and_retries() {
    let server = common::start(&["--max-clients", "0"]).await;
    let mut b = Browser::launch().await;
    b.goto(&format!("{}/?name=latecomer", server.http)).await;
    let message = b
        .wait_for(
            "(() => { const m = document.getElementById('message'); return m.textContent.startsWith('refused') && m.textContent; })()",
            Duration::from_secs(20),
        )
        .await;
    eprintln!("the page says: {message}");
    let text = message.as_str().expect("text");
    assert!(
        text.contains("server_full") && text.contains("reconnecting in"),
        "{text}"
    );
    let s = stats(&mut b).await;
    assert_eq!(s["state"], "rejected", "{s}");
    assert!(s["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{s}");
    b.close().await;
    server.stop().await;
}

/// The self-signed certificate rotates under a playing page: that page keeps its session (no
/// reconnect, snapshots from after the rotation), and a page loaded afterwards gets the new
/// hash from `/api/connect` and plays by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_loaded_after_a_certificate_rotation_plays_by_the_new_hash_while_the_old_one_keeps_playing()
 {
    // 36 s certificates back-dated 9 s, replaced 4 s before expiry: the first rotation comes
    // about 23 s after start, time enough for the first page to be playing before it even on
    // a loaded 2-core machine (a page is usually playing 2 s after its browser starts).
    let server = common::start(&["--cert-validity", "36s", "--cert-rotate-before", "4s"]).await;
    let mut rotations = server.stats.watch_cert_rotations();
    let old = server.cert_sha256.clone().expect("self-signed");

    let mut first = Browser::launch().await;
    play(&mut first, &server, "early").await;
    assert_eq!(
        *rotations.borrow(),
        0,
        "the first page must be playing before the rotation for this test to mean anything"
    );
    let before = stats(&mut first).await;

    tokio::time::timeout(Duration::from_secs(30), rotations.wait_for(|n| *n >= 1))
        .await
        .expect("a rotation within the certificate's life")
        .expect("stats live as long as the server");
    let tick_at_rotation = arena_server::stats::Stats::get(&server.stats.tick);
    let info = server.connect_info("probe").await;
    let new = info.cert_sha256.expect("self-signed");
    assert_ne!(
        new, old,
        "/api/connect hands out the new certificate's hash"
    );
    assert!(!info.cert_sha256s.contains(&old), "{:?}", info.cert_sha256s);

    // A new page load connects with the new hash.
    let mut second = Browser::launch().await;
    let late = play(&mut second, &server, "late").await;
    assert_eq!(late["sessions"], 1, "in at the first attempt: {late}");
    assert_ne!(late["entity"], before["entity"]);

    // The first page is still in the session it opened before the rotation, receiving
    // snapshots of ticks after it.
    let early = first
        .wait_for(
            &format!(
                "(() => {{ const s = window.arena.stats(); return s.snapshot_tick > {tick_at_rotation} + 30 && s; }})()"
            ),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(early["state"], "playing", "{early}");
    assert_eq!(early["sessions"], 1, "never reconnected: {early}");
    assert_eq!(early["entity"], before["entity"], "{early}");
    assert!(
        early["snapshots"].as_u64() > before["snapshots"].as_u64(),
        "{before} -> {early}"
    );
    server.players_reach(2).await;
    eprintln!(
        "rotated {old} -> {new} at tick {tick_at_rotation}; the early page is at snapshot tick {}, the late one played by the new hash",
        early["snapshot_tick"]
    );
    second.close().await;
    first.close().await;
    server.stop().await;
}

/// With a real certificate (`--cert/--key`) `/api/connect` hands out no hash and the page
/// opens WebTransport without `serverCertificateHashes`, so the browser verifies the
/// certificate the usual way: a browser that does not trust it cannot connect (and says so),
/// one that trusts it (here by its public key, `--ignore-certificate-errors-spki-list`, as
/// a certificate from a public CA would be trusted) plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_real_certificate_the_page_pins_no_hash_and_the_browser_verifies_it() {
    use base64::Engine;
    use sha2::Digest;

    let dir = std::env::temp_dir().join(format!("arena-web-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let identity =
        wtransport::Identity::self_signed(["localhost", "127.0.0.1"]).expect("a certificate");
    identity
        .certificate_chain()
        .store_pemfile(&cert)
        .await
        .expect("cert.pem");
    identity
        .private_key()
        .store_secret_pemfile(&key)
        .await
        .expect("key.pem");
    let spki = subject_public_key_info(identity.certificate_chain().as_slice()[0].der());
    let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki));

    let server = common::start(&[
        "--cert",
        cert.to_str().expect("utf-8 path"),
        "--key",
        key.to_str().expect("utf-8 path"),
    ])
    .await;
    let info = server.connect_info("probe").await;
    assert_eq!(info.cert_sha256, None);
    assert!(info.cert_sha256s.is_empty(), "{:?}", info.cert_sha256s);

    let mut untrusting = Browser::launch().await;
    untrusting
        .goto(&format!("{}/?name=doubter", server.http))
        .await;
    let message = untrusting
        .wait_for(
            "(() => { const m = document.getElementById('message'); return m.textContent.includes('reconnecting') && m.textContent; })()",
            Duration::from_secs(20),
        )
        .await;
    eprintln!("a browser that does not trust the certificate says: {message}");
    let s = stats(&mut untrusting).await;
    assert_ne!(s["state"], "playing", "{s}");
    assert_eq!(s["sessions"], 0, "{s}");
    assert!(
        untrusting
            .console_messages()
            .iter()
            .any(|m| m.contains("CERTIFICATE_VERIFY_FAILED")),
        "refused for its certificate: {}",
        untrusting.diagnostics()
    );
    untrusting.close().await;

    // Chromium's WebTransport honours the SPKI list only for an origin it is told speaks QUIC.
    let mut trusting = Browser::launch_with(&[
        format!("--ignore-certificate-errors-spki-list={spki_sha256}"),
        format!("--origin-to-force-quic-on={}", server.wt_addr),
    ])
    .await;
    play(&mut trusting, &server, "believer").await;
    trusting.close().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The DER `SubjectPublicKeyInfo` of an X.509 certificate: the seventh field of its
/// `TBSCertificate` counting the optional `[0]` version (RFC 5280 §4.1).
fn subject_public_key_info(der: &[u8]) -> &[u8] {
    /// One DER element at the start of `d`: (its tag, its whole encoding, its content).
    fn element(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (d[0], d[1]);
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            let len = d[2..2 + n]
                .iter()
                .fold(0usize, |l, b| (l << 8) | usize::from(*b));
            (len, 2 + n)
        };
        (tag, &d[..header + len], &d[header..header + len])
    }
    let (_, _, certificate) = element(der);
    let (_, _, mut tbs) = element(certificate);
    if tbs[0] == 0xa0 {
        tbs = &tbs[element(tbs).1.len()..];
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        tbs = &tbs[element(tbs).1.len()..];
    }
    let (tag, spki, _) = element(tbs);
    assert_eq!(tag, 0x30, "SubjectPublicKeyInfo is a SEQUENCE");
    spki
}

/// Snapshots carry ids; the page asks who the players it sees are (`WhoIs`) and draws them
/// under their names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_other_players_under_their_names() {
    // Everyone in everyone's view.
    let server = common::start(&["--npcs", "0", "--aoi-radius", "20000"]).await;
    let zed = server.join("zed").await;
    let mut b = Browser::launch().await;
    b.goto(&format!("{}/?name=ann", server.http)).await;
    let drawn = b
        .wait_for(
            "(() => { const r = window.arena.render(); return r && r.e.find((e) => e[5] === 'zed'); })()",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(drawn[0], zed.welcome.entity, "{drawn}");
    assert_eq!(drawn[1], 0, "a player: {drawn}");
    assert!(Stats::get(&server.stats.whois_answered) >= 1);
    b.close().await;
    drop(zed);
    server.stop().await;
}
