//! Self-signed certificate rotation on a live server: a player connected on the old certificate
//! keeps playing through the rotation, `/api/connect` hands out the new hash, a new player gets
//! in by it, the old hash no longer opens a connection, and the first player outlives its own
//! certificate's expiry.

use std::time::{Duration, SystemTime};

use arena_client_sim::connect::{self, Transport};
use arena_client_sim::http;
use arena_server::ServerError;
use arena_server::net::identity::IdentityError;
use arena_server::stats::Stats;
use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{ClientMsg, Ping};

use crate::common::{self, TestServer, WAIT};

/// `/api/connect`'s hashes as the server hands them out: `cert_sha256` and `cert_sha256s`.
async fn hashes(server: &TestServer) -> (String, Vec<String>) {
    let body = http::get(&server.http, "/api/connect?name=h", WAIT)
        .await
        .expect("/api/connect answers");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let current = json["cert_sha256"]
        .as_str()
        .expect("self-signed: a hash")
        .to_string();
    let all = json["cert_sha256s"]
        .as_array()
        .expect("a list of hashes")
        .iter()
        .map(|h| h.as_str().expect("a hash").to_string())
        .collect();
    (current, all)
}

/// Base64 SHA-256 of the certificate the server presented to this connection.
fn presented(t: &Transport) -> String {
    use base64::Engine;
    let chain = t.conn.peer_identity().expect("the server's certificate");
    let hash = chain.as_slice().first().expect("a certificate").hash();
    base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
}

/// A `Ping` answered on the reliable stream.
async fn ping(t: &mut Transport, reader: &mut FrameReader, nonce: u32) {
    t.send_msg(&ClientMsg::Ping(Ping { nonce }))
        .await
        .expect("stream open");
    common::pong_on_stream(t, reader, nonce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_keeps_connected_players_and_admits_new_ones_by_the_new_hash() {
    // 16 s certificates back-dated 4 s, replaced 4 s before expiry: the first rotation comes
    // 7-8 s after start, the next about 6 s after that.
    let server = common::start(&["--cert-validity", "16s", "--cert-rotate-before", "4s"]).await;
    // The first certificate was made before this: it expires by this + 12 s.
    let old_expired_by = SystemTime::now() + Duration::from_secs(12);
    let mut rotations = server.stats.watch_cert_rotations();
    let (old, listed) = hashes(&server).await;
    assert_eq!(Some(&old), server.cert_sha256.as_ref());
    assert_eq!(listed.first(), Some(&old), "the current hash comes first");

    // A connects on the first certificate (pinning the hashes listed then).
    let common::Joined {
        info: info_a,
        t: mut a,
        reader: mut reader_a,
        ..
    } = server.join("a").await;
    assert_eq!(info_a.cert_sha256.as_ref(), Some(&old));
    assert_eq!(presented(&a), old);
    assert_eq!(
        *rotations.borrow(),
        0,
        "A must be connected before the first rotation for this test to mean anything"
    );
    let before = common::snapshot_after(&a, 0).await;

    tokio::time::timeout(WAIT, rotations.wait_for(|n| *n >= 1))
        .await
        .expect("a rotation within the certificate's life")
        .expect("stats live as long as the server");
    let tick_at_rotation = Stats::get(&server.stats.tick) as u32;

    // A, on the old certificate, still gets snapshots from after the rotation and answers on
    // its stream.
    let after = common::snapshot_after(&a, tick_at_rotation.max(before)).await;
    assert!(after > before);
    ping(&mut a, &mut reader_a, 7).await;
    assert!(
        a.conn.quic_connection().close_reason().is_none(),
        "A's connection is open"
    );
    assert_eq!(presented(&a), old, "A is still on the old certificate");

    // /api/connect hands out the new hash, first; the old one is gone.
    let (new, listed) = hashes(&server).await;
    assert_ne!(new, old, "a new certificate, a new hash");
    assert_eq!(listed.first(), Some(&new));
    assert!(!listed.contains(&old), "{listed:?}");

    // A client pinning only the old hash is refused: new handshakes get the new certificate.
    let mut stale = server.connect_info("stale").await;
    stale.cert_sha256 = Some(old.clone());
    stale.cert_sha256s = vec![old.clone()];
    assert!(
        connect::open(&stale, Duration::from_secs(10))
            .await
            .is_err(),
        "the old certificate is no longer presented"
    );

    // B gets in by the new hash and plays.
    let common::Joined {
        info: info_b, t: b, ..
    } = server.join("b").await;
    assert_ne!(info_b.cert_sha256.as_ref(), Some(&old));
    assert_eq!(
        Some(presented(&b)),
        info_b.cert_sha256,
        "B verified the certificate by the hash it was given"
    );
    common::snapshot_after(&b, 0).await;
    server.players_reach(2).await;
    server.sessions_reach(2).await;

    // A is still there after all of it, and still after the next rotation, by when its own
    // certificate has expired: TLS checks a certificate at the handshake only.
    let after = common::snapshot_after(&a, after).await;
    tokio::time::timeout(WAIT, rotations.wait_for(|n| *n >= 2))
        .await
        .expect("a second rotation")
        .expect("stats live as long as the server");
    assert!(
        SystemTime::now() >= old_expired_by,
        "the second rotation comes after the first certificate's expiry"
    );
    common::snapshot_after(&a, after.max(Stats::get(&server.stats.tick) as u32)).await;
    ping(&mut a, &mut reader_a, 8).await;
    assert_eq!(presented(&a), old);
    let metrics = server.stats.render_metrics();
    let rotated: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("arena_cert_rotations_total "))
        .expect("the rotation counter is exported")
        .parse()
        .expect("a count");
    assert!(rotated >= 2, "{rotated}");

    drop((a, b));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_margin_the_certificate_cannot_keep_is_refused_at_start() {
    let refused =
        common::try_start(&["--cert-validity", "16s", "--cert-rotate-before", "16s"]).await;
    match refused {
        Err(ServerError::Identity(IdentityError::Rotation(why))) => {
            assert!(why.contains("--cert-rotate-before"), "{why}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a server that would rotate without end started"),
    }
}
