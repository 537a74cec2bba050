//! A client that sends garbage loses its own session, and nobody else notices.

use arena_client_sim::connect::Transport;
use arena_client_sim::swarm::{self, SwarmBehaviour};
use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{
    ClientDatagram, DisconnectReason, MAX_FRAME_LEN, RejectReason, ServerMsg, close_code,
};
use arena_shared::rng::SplitMix64;
use arena_shared::snapshot::Ack;
use wtransport::error::ConnectionError;

use crate::common::{self, TestServer, WAIT};

/// `body` behind its length header.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// A welcomed session, ready to misbehave.
async fn welcomed(server: &TestServer, name: &str) -> (Transport, FrameReader) {
    welcomed_at(&server.http, name).await
}

/// [`welcomed`] by the server's HTTP address, for tasks that cannot borrow the server.
async fn welcomed_at(http: &str, name: &str) -> (Transport, FrameReader) {
    let info = arena_client_sim::connect::fetch_connect_info(http, name)
        .await
        .expect("/api/connect answers");
    let mut t = arena_client_sim::connect::open(&info, std::time::Duration::from_secs(10))
        .await
        .expect("QUIC connect on loopback");
    let mut reader = FrameReader::new();
    t.handshake(&info.token, name, &mut reader)
        .await
        .expect("welcome");
    (t, reader)
}

/// Reads until the server's `Disconnect`, then checks the close code matches it.
async fn expect_disconnect(t: &mut Transport, reader: &mut FrameReader) -> DisconnectReason {
    let reason = loop {
        match tokio::time::timeout(WAIT, t.read_msg(reader))
            .await
            .expect("server answers")
        {
            Ok((ServerMsg::Disconnect(d), _)) => break d.reason,
            Ok((ServerMsg::Pong(_), _)) => continue,
            other => panic!("expected a Disconnect, got {other:?}"),
        }
    };
    match tokio::time::timeout(WAIT, t.conn.closed())
        .await
        .expect("server closes")
    {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.code().into_inner(), close_code(reason.code()))
        }
        other => panic!("expected an application close, got {other}"),
    }
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_and_datagrams_close_only_that_session() {
    let server = common::start(&[]).await;
    let bystanders = tokio::spawn(swarm::run(common::swarm(
        &server,
        5,
        4,
        SwarmBehaviour::Wander,
        3,
    )));
    server.sessions_reach(5).await;

    // A well-framed body of random bytes.
    let (mut t, mut reader) = welcomed(&server, "garbler").await;
    t.write_raw(&framed(&random_bytes(1, 200)))
        .await
        .expect("written");
    assert_eq!(
        expect_disconnect(&mut t, &mut reader).await,
        DisconnectReason::MalformedFrame
    );

    // Random bytes as a datagram.
    let (mut t, mut reader) = welcomed(&server, "datagrammer").await;
    t.conn
        .send_datagram(random_bytes(2, 300))
        .expect("datagram sent");
    assert_eq!(
        expect_disconnect(&mut t, &mut reader).await,
        DisconnectReason::MalformedDatagram
    );

    // A header announcing more than the frame limit.
    let (mut t, mut reader) = welcomed(&server, "bloater").await;
    t.write_raw(&(MAX_FRAME_LEN as u32 + 1).to_le_bytes())
        .await
        .expect("written");
    assert_eq!(
        expect_disconnect(&mut t, &mut reader).await,
        DisconnectReason::FrameTooLarge
    );

    // Random bytes, header and all, then the end of the stream, instead of a Hello.
    let info = server.connect_info("stranger").await;
    let mut t = server.open(&info).await;
    t.write_raw(&random_bytes(3, 256)).await.expect("written");
    let _ = t.send.finish().await;
    match tokio::time::timeout(WAIT, t.conn.closed())
        .await
        .expect("server closes")
    {
        ConnectionError::ApplicationClosed(c) => {
            let refused = [RejectReason::NotArena, RejectReason::MalformedHello]
                .map(|r| close_code(r.code()));
            assert!(
                refused.contains(&c.code().into_inner()),
                "closed with {:#x}",
                c.code().into_inner()
            );
        }
        other => panic!("expected an application close, got {other}"),
    }

    let result = tokio::time::timeout(WAIT, bystanders)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    let r = &result.report;
    common::assert_all_played(r, 5);
    assert!(
        r.snapshots_per_bot_hz >= 27.0,
        "bystanders kept their snapshots: {}",
        r.table()
    );
    server.sessions_reach(0).await;
    server.players_reach(0).await;
    server.stop().await;
}

/// The HTTP/3 datagram header (the session's quarter stream id) is read by the session's own
/// task, not by wtransport's worker (the patch in `vendor/wtransport`): a datagram naming
/// another session is dropped and the session plays on; one whose header does not parse ends
/// the connection with `H3_DATAGRAM_ERROR`, as upstream's worker did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_for_another_session_are_dropped_and_a_broken_header_ends_the_connection() {
    const H3_DATAGRAM_ERROR: u64 = 0x33;
    let server = common::start(&[]).await;

    let (mut t, mut reader) = welcomed(&server, "elsewhere").await;
    // Quarter stream id 1 (session 4; this session is 0), then an acknowledgement that would
    // count if it reached Arena: dropped before.
    let ack = ClientDatagram::Ack(Ack { newest: 1, bits: 0 });
    let mut foreign = vec![0x01];
    foreign.extend(arena_shared::protocol::codec::encode_client_datagram(&ack));
    t.conn
        .quic_connection()
        .send_datagram(foreign.into())
        .expect("sent");
    // The session still reads its datagrams: the same bytes for this session are malformed.
    let mut own = vec![0x00];
    own.extend(random_bytes(4, 100));
    t.conn
        .quic_connection()
        .send_datagram(own.into())
        .expect("sent");
    assert_eq!(
        expect_disconnect(&mut t, &mut reader).await,
        DisconnectReason::MalformedDatagram
    );
    assert_eq!(
        arena_server::stats::Stats::get(&server.stats.datagrams_received),
        1,
        "only the datagram for this session reached it (the foreign ack was dropped)"
    );

    // No quarter stream id at all.
    let (t, _reader) = welcomed(&server, "headless").await;
    t.conn
        .quic_connection()
        .send_datagram(Vec::new().into())
        .expect("sent");
    match tokio::time::timeout(WAIT, t.conn.closed())
        .await
        .expect("server closes")
    {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.code().into_inner(), H3_DATAGRAM_ERROR)
        }
        other => panic!("expected an application close, got {other}"),
    }
    server.sessions_reach(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_inputs_has_the_excess_dropped_then_is_disconnected() {
    use arena_shared::protocol::{Buttons, ClientMsg, Input};
    use arena_shared::quant::{Aim, MoveDir};
    let server = common::start(&["--max-inputs-per-sec", "50"]).await;
    let (mut t, mut reader) = welcomed(&server, "flood").await;
    // 500 inputs at once: 50 pass (the burst), the rest are over the rate; more than 50 over
    // it within a second is a flood.
    let mut bytes = Vec::new();
    for seq in 1..=500u32 {
        let input = Input {
            seq,
            tick: seq,
            movement: MoveDir { x: 1, y: 0 },
            aim: Aim(0),
            buttons: Buttons(0),
            ..Default::default()
        };
        arena_shared::protocol::codec::encode_client(&ClientMsg::Input(input), &mut bytes)
            .expect("encodes");
    }
    t.write_raw(&bytes).await.expect("sent");
    assert_eq!(
        expect_disconnect(&mut t, &mut reader).await,
        DisconnectReason::InputFlood
    );
    let dropped = arena_server::stats::Stats::get(&server.stats.inputs_rate_limited);
    assert!(dropped > 50, "{dropped} inputs counted over the rate");
    server.sessions_reach(0).await;
    server.stop().await;
}

/// The reliable stream's backlog for the two tests below: small, so that little has to pile
/// up past a full window. WhoIs is not what they test: its rate is raised so that every one
/// in the burst is answered.
const SLOW_CONSUMER_FLAGS: [&str; 4] =
    ["--max-send-backlog", "4096", "--max-whois-per-sec", "1000"];
/// quinn's default stream receive window, which the test client keeps: what the server can get
/// into the stream of a client that reads nothing, before its own backlog starts to grow.
const CLIENT_STREAM_WINDOW: u64 = 1_250_000;
/// Pings between two WhoIs in a burst, and the ids each WhoIs asks about (the client's own
/// entity, repeated: each answer is ~190 bytes of names).
const PINGS_PER_WHOIS: u32 = 1_000;
const WHOIS_IDS: usize = 16;
/// ~3.7 MB: pongs and names enough to fill [`CLIENT_STREAM_WINDOW`] about three times over.
const BURST_ROUNDS: u32 = 400;

/// What both tests below send in one write: rounds of [`PINGS_PER_WHOIS`] pings and a WhoIs.
/// Pongs take as many bytes as the pings (~9), so pings fill a window fast; but they are
/// answered best-effort, and only the names, which the client must get, can take the backlog
/// past its cap.
fn ping_and_whois_burst(entity: u32) -> Vec<u8> {
    use arena_shared::protocol::codec::encode_client;
    use arena_shared::protocol::{ClientMsg, Ping, WhoIs};
    let mut bytes = Vec::new();
    for round in 0..BURST_ROUNDS {
        for i in 0..PINGS_PER_WHOIS {
            let nonce = round * PINGS_PER_WHOIS + i;
            encode_client(&ClientMsg::Ping(Ping { nonce }), &mut bytes).expect("encodes");
        }
        let who = WhoIs {
            entities: vec![entity; WHOIS_IDS],
        };
        encode_client(&ClientMsg::WhoIs(who), &mut bytes).expect("encodes");
    }
    bytes
}

/// A client that never reads its stream: once QUIC's window toward it is full, what the server
/// must still send it piles up, and past `--max-send-backlog` the session ends (SlowConsumer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_stream_is_disconnected_as_a_slow_consumer() {
    let server = common::start(&SLOW_CONSUMER_FLAGS).await;
    let mut deaf = server.join("deaf").await;
    let burst = ping_and_whois_burst(deaf.welcome.entity);
    // The write fails part way when the server closes the session.
    let _ = deaf.t.write_raw(&burst).await;
    let closed = tokio::time::timeout(WAIT, deaf.t.conn.closed())
        .await
        .expect("the server closes the session");
    match closed {
        ConnectionError::ApplicationClosed(c) => assert_eq!(
            c.code().into_inner(),
            close_code(DisconnectReason::SlowConsumer.code())
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
    // Not cut for a burst of requests: only once the client's window was full (the server had
    // got that much into the stream) could the backlog grow, and it grew past the cap.
    let sent = arena_server::stats::Stats::get(&server.stats.stream_bytes_sent);
    assert!(
        sent + 4096 >= CLIENT_STREAM_WINDOW,
        "cut after writing {sent} bytes to a client whose window holds {CLIENT_STREAM_WINDOW}"
    );
    server.sessions_reach(0).await;
    server.stop().await;
}

/// The control for the test above: the same burst from a client that reads as it goes. Its
/// pongs come back (some may be left out while its stream is busy), every WhoIs is answered,
/// and it keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_promptly_keeps_its_session_through_the_same_burst() {
    use arena_shared::protocol::codec::{decode_server, encode_client};
    use arena_shared::protocol::{ClientMsg, WhoIs};
    let server = common::start(&SLOW_CONSUMER_FLAGS).await;
    let mut prompt = server.join("prompt").await;
    let mut burst = ping_and_whois_burst(prompt.welcome.entity);
    // One more WhoIs closes the burst: its answer is the last of BURST_ROUNDS + 1.
    let who = WhoIs {
        entities: vec![prompt.welcome.entity],
    };
    encode_client(&ClientMsg::WhoIs(who), &mut burst).expect("encodes");
    let (send, recv, reader) = (&mut prompt.t.send, &mut prompt.t.recv, &mut prompt.reader);
    let write = async { send.write_all(&burst).await.map_err(|e| e.to_string()) };
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut pongs, mut names) = (0u32, 0u32);
        loop {
            while let Some(body) = reader.next_frame().expect("frames within the limit") {
                match decode_server(&body).expect("decodes") {
                    ServerMsg::Pong(_) => pongs += 1,
                    ServerMsg::Names(_) => names += 1,
                    ServerMsg::Event(_) => {}
                    other => return Err(format!("{other:?} after {pongs} pongs, {names} names")),
                }
                if names == BURST_ROUNDS + 1 {
                    return Ok(pongs);
                }
            }
            match recv.read(&mut buf).await {
                Ok(Some(n)) => reader.push(&buf[..n]),
                other => return Err(format!("{other:?} after {pongs} pongs, {names} names")),
            }
        }
    };
    let (written, read) = tokio::time::timeout(WAIT, async { tokio::join!(write, read) })
        .await
        .expect("the burst is answered in time");
    let pongs = read.expect("every WhoIs answered, no Disconnect");
    written.expect("the whole burst was written");
    assert!(pongs > 0, "pings were answered");
    eprintln!(
        "a prompt reader's burst of {} pings: {pongs} pongs back",
        BURST_ROUNDS * PINGS_PER_WHOIS
    );
    assert_eq!(server.stats.sessions(), 1, "still playing");
    prompt
        .t
        .conn
        .close(wtransport::VarInt::from_u32(0), b"done");
    server.sessions_reach(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_of_malformed_input_each_end_with_a_reason_and_twenty_players_play_on() {
    use arena_shared::protocol::{Buttons, ClientMsg, Input};
    use arena_shared::quant::{Aim, MoveDir};
    let server = common::start(&[]).await;
    let players = tokio::spawn(swarm::run(common::swarm(
        &server,
        20,
        6,
        SwarmBehaviour::Wander,
        5,
    )));
    server.sessions_reach(20).await;
    // (Client messages carry no floats, only quantized integers: NaN cannot be said.)
    let input = {
        let mut f = Vec::new();
        arena_shared::protocol::codec::encode_client(
            &ClientMsg::Input(Input {
                seq: 1,
                tick: 1,
                movement: MoveDir { x: 1, y: 1 },
                aim: Aim(1),
                buttons: Buttons(0),
                ..Default::default()
            }),
            &mut f,
        )
        .expect("encodes");
        f[4..].to_vec()
    };
    // All fifty at once, each in its own task.
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..50u64 {
        let (http, input) = (server.http.clone(), input.clone());
        sessions.spawn(async move {
            let (mut t, mut reader) = welcomed_at(&http, &format!("bad-{i}")).await;
            let want = match i % 5 {
                0 => {
                    t.write_raw(&(MAX_FRAME_LEN as u32 + 1 + i as u32).to_le_bytes())
                        .await
                        .expect("written");
                    DisconnectReason::FrameTooLarge
                }
                1 => {
                    // A message cut short, in a frame of its own (truncated) length.
                    t.write_raw(&framed(&input[..input.len() / 2]))
                        .await
                        .expect("written");
                    DisconnectReason::MalformedFrame
                }
                2 => {
                    // The message's tag byte changed: the rest of the body no longer reads as
                    // the variant it now names. (bitcode packs the tag, so which bytes name a
                    // variant depends on how many there are: checked here, not assumed.)
                    let mut body = input.clone();
                    body[0] = 0xFE;
                    assert!(arena_shared::protocol::codec::decode_client(&body).is_err());
                    t.write_raw(&framed(&body)).await.expect("written");
                    DisconnectReason::MalformedFrame
                }
                3 => {
                    t.write_raw(&framed(&random_bytes(100 + i, 64)))
                        .await
                        .expect("written");
                    DisconnectReason::MalformedFrame
                }
                _ => {
                    t.conn
                        .send_datagram(random_bytes(200 + i, 40))
                        .expect("datagram sent");
                    DisconnectReason::MalformedDatagram
                }
            };
            (i, want, expect_disconnect(&mut t, &mut reader).await)
        });
    }
    while let Some(done) = sessions.join_next().await {
        let (i, want, got) = done.expect("session task");
        assert_eq!(got, want, "session {i}");
    }
    let result = tokio::time::timeout(WAIT, players)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    let r = &result.report;
    common::assert_all_played(r, 20);
    assert!(
        r.snapshots_per_bot_hz_min >= 27.0,
        "every player kept its snapshots: {}",
        r.table()
    );
    server.sessions_reach(0).await;
    server.players_reach(0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_outside_their_range_are_dropped_and_counted_by_reason_and_the_session_plays_on() {
    use arena_shared::protocol::{Buttons, ClientMsg, Input, Ping};
    use arena_shared::quant::MoveDir;
    let server = common::start(&[]).await;
    let (mut t, mut reader) = welcomed(&server, "odd").await;
    let tick = server.stats.tick.load(std::sync::atomic::Ordering::Relaxed) as u32;
    let bad = [
        Input {
            seq: 1,
            tick,
            movement: MoveDir { x: -128, y: 0 },
            ..Default::default()
        },
        Input {
            seq: 2,
            tick,
            buttons: Buttons(0x80),
            ..Default::default()
        },
    ];
    for input in bad {
        t.send_msg(&ClientMsg::Input(input)).await.expect("sent");
    }
    // Frames are handled in order: once the pong is back, both inputs were judged.
    t.send_msg(&ClientMsg::Ping(Ping { nonce: 9 }))
        .await
        .expect("sent");
    loop {
        match tokio::time::timeout(WAIT, t.read_msg(&mut reader))
            .await
            .expect("the server answers")
        {
            Ok((ServerMsg::Pong(p), _)) if p.nonce == 9 => break,
            Ok((ServerMsg::Pong(_), _)) => continue,
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    let text = server.stats.render_metrics();
    for reason in ["move_out_of_range", "unknown_buttons"] {
        assert!(
            text.contains(&format!(
                "arena_inputs_rejected_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
    assert_eq!(
        server.stats.sessions(),
        1,
        "a bad input costs the input only"
    );
    server.stop().await;
}
