//! Bots play over real QUIC: they connect, receive snapshots at the tick rate, move the way
//! their inputs push them, and leave without leaving anything behind.

use arena_client_sim::swarm::{self, SwarmBehaviour, heading};
use std::time::Duration;

use arena_shared::protocol::codec::{FrameReader, decode_datagram};
use arena_shared::protocol::{ClientMsg, DisconnectReason, Ping, ServerDatagram, ServerMsg};

use crate::common::{self, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bots_play_for_three_seconds() {
    // No obstacles: a bot pushing one way must get there, whatever its spawn point.
    let server = common::start(&["--obstacles", "0"]).await;
    let swarm = tokio::spawn(swarm::run(common::swarm(
        &server,
        20,
        3,
        SwarmBehaviour::Headings,
        7,
    )));
    server.sessions_reach(20).await;
    server.players_reach(20).await;
    let result = tokio::time::timeout(WAIT, swarm)
        .await
        .expect("swarm ends")
        .expect("swarm task");

    let r = &result.report;
    common::assert_all_played(r, 20);
    for (i, bot) in result.bots.iter().enumerate() {
        let rate = bot.snapshots as f64 / bot.played.as_secs_f64();
        assert!(
            rate >= 0.9 * 30.0,
            "{}: {rate:.1} snapshots/s at 30 Hz",
            bot.name
        );
        let (first, last) = (
            bot.first_pos.expect("saw itself"),
            bot.last_pos.expect("saw itself"),
        );
        let moved = last - first;
        let asked = heading(i as u32);
        // Each axis it pushed along: it moved that way, or it is stopped against that wall
        // (an open 4096 world, player radius 16).
        let at_wall = |v: f32| v <= 16.0 + 0.5 || v >= 4096.0 - 16.0 - 0.5;
        for axis in 0..2 {
            if asked[axis].abs() > 0.2 {
                assert!(
                    moved[axis] * asked[axis] > 0.0 || at_wall(last[axis]),
                    "{} asked to go {asked:?} but moved {moved:?} (from {first:?} to {last:?})",
                    bot.name
                );
            }
        }
        assert!(
            moved.length() > 100.0 || at_wall(last.x) || at_wall(last.y),
            "{} barely moved: {moved:?} from {first:?}",
            bot.name
        );
        assert!(bot.rtt_us.len() >= 5, "{} measured its RTT", bot.name);
    }
    assert!(
        r.rtt_ms_p50 > 0.0 && r.down_bytes_per_bot_per_s > 0.0 && r.up_bytes_per_bot_per_s > 0.0
    );
    // Prediction and clock sync: after each bot's first second, the server applied every input
    // at the tick the client predicted it for, so no prediction needed correcting.
    assert_eq!(r.inputs_late, 0, "{}", r.table());
    assert_eq!(r.prediction_corrections, 0, "{}", r.table());
    assert!(r.clock_offset_ms_p99 < 3.0 * 33.4, "{}", r.table());

    server.sessions_reach(0).await;
    server.players_reach(0).await;
    // Nor anything of their connections: each session's writer task held its stream, and
    // through it the connection's QUIC state, until its session ended.
    server.stream_writers_reach(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_connected_players_why_and_stops_cleanly() {
    let server = common::start(&[]).await;
    let info = server.connect_info("stayer").await;
    assert_eq!(
        info.cert_sha256, server.cert_sha256,
        "/api/connect hands out the certificate's hash"
    );
    let mut t = server.open(&info).await;
    let mut reader = FrameReader::new();
    t.handshake(&info.token, "stayer", &mut reader)
        .await
        .expect("welcome");
    server.sessions_reach(1).await;

    let stats = server.stats.clone();
    let stopping = tokio::spawn(server.stop());
    let told = loop {
        match t
            .read_msg(&mut reader)
            .await
            .expect("a frame before the close")
        {
            (ServerMsg::Disconnect(d), _) => break d,
            (ServerMsg::Pong(_), _) => continue,
            (other, _) => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(told.reason, DisconnectReason::ServerShutdown);
    assert!(
        told.reconnect_after_ms <= 10_000,
        "spread over the default 10 s drain: {}",
        told.reconnect_after_ms
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stops in time")
        .expect("clean stop");
    assert_eq!(stats.sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_certificate_from_pem_files_is_served_and_no_hash_is_handed_out() {
    let dir = std::env::temp_dir().join(format!("arena-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let identity = wtransport::Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
    identity
        .certificate_chain()
        .store_pemfile(&cert)
        .await
        .unwrap();
    identity
        .private_key()
        .store_secret_pemfile(&key)
        .await
        .unwrap();
    let hash = base64_sha256(identity.certificate_chain().as_slice()[0].hash().as_ref());

    let server = common::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
    .await;
    let mut info = server.connect_info("real").await;
    assert_eq!(
        info.cert_sha256, None,
        "a real certificate is verified the usual way, not pinned"
    );
    // This one is not in any root store, so pin it here to prove the server presents it.
    info.cert_sha256 = Some(hash);
    let mut t = server.open(&info).await;
    t.handshake(&info.token, "real", &mut FrameReader::new())
        .await
        .expect("welcome over the PEM certificate");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_sha256(bytes: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A snapshot ping is answered in the client's next snapshot, with how long the server held
/// it (a part of the round trip the client measures), and not on the stream; a server in
/// full-state mode, whose snapshots carry no status, answers it on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_ping_is_answered_in_a_snapshot_or_on_the_stream_in_full_mode() {
    let server = common::start(&[]).await;
    let common::Joined {
        mut t, mut reader, ..
    } = server.join("pinger").await;
    let sent = std::time::Instant::now();
    t.send_msg(&ClientMsg::SnapshotPing(Ping { nonce: 41 }))
        .await
        .expect("stream open");
    // Answered on the stream after anything the server wrote there for the snapshot ping.
    t.send_msg(&ClientMsg::Ping(Ping { nonce: 42 }))
        .await
        .expect("stream open");
    let deadline = tokio::time::Instant::now() + WAIT;
    let pong = loop {
        let d = tokio::time::timeout_at(deadline, t.conn.receive_datagram())
            .await
            .expect("an answer in time")
            .expect("connection open");
        if let Ok(ServerDatagram::Delta(status, _)) = decode_datagram(&d.payload())
            && let Some(pong) = status.pong
        {
            break pong;
        }
    };
    let round_trip = sent.elapsed();
    assert_eq!(pong.nonce, 41);
    assert!(
        Duration::from_micros(pong.held_us.into()) <= round_trip,
        "held {} us, within a round trip of {round_trip:?}",
        pong.held_us
    );
    let others = common::pong_on_stream(&mut t, &mut reader, 42).await;
    assert!(
        others.is_empty(),
        "only the stream ping's pong: also {others:?}"
    );
    server.stop().await;

    let full = common::start(&["--replication", "full"]).await;
    let common::Joined {
        mut t, mut reader, ..
    } = full.join("pinger").await;
    t.send_msg(&ClientMsg::SnapshotPing(Ping { nonce: 43 }))
        .await
        .expect("stream open");
    common::pong_on_stream(&mut t, &mut reader, 43).await;
    full.stop().await;
}

/// Idle bots (watch-only sessions) acknowledge their snapshots half a tick after each arrives:
/// the server gets the acknowledgements, and its QUIC acknowledgement of each rides its next
/// snapshot instead of a packet of its own (on receipt, a bot read two packets a snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_bots_acknowledge_snapshots_and_read_about_one_packet_each() {
    let server = common::start(&[]).await;
    let idle = SwarmBehaviour::Mix("idle=1".parse().expect("a mix"));
    let bots = 5;
    let config = common::swarm(&server, bots, 3, idle, 3);
    let result = common::play_out(&server, config, bots as usize).await;
    let r = &result.report;
    common::assert_all_played(r, u64::from(bots));
    // Each bot's acknowledgements reached the server: most of its ~90 snapshots'.
    let acks = server.metric("arena_datagrams_received_total");
    assert!(acks >= u64::from(bots) * 60, "{acks} acknowledgements");
    // A snapshot a packet, and the handshake's few over three seconds; two a snapshot when
    // the server acknowledged each acknowledgement alone.
    assert!(
        r.packets_down_per_bot_hz < 1.5 * r.snapshots_per_bot_hz,
        "{:.1} packets a second for {:.1} snapshots",
        r.packets_down_per_bot_hz,
        r.snapshots_per_bot_hz
    );
    server.stop().await;
}
