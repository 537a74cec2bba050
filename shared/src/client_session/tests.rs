//! The session against a hand-driven server on a virtual clock: the handshake, what it sends
//! and when, and what it does with what comes back.

use super::*;
use crate::protocol::codec::{decode_client, decode_client_datagram, decode_hello};
use crate::protocol::{DisconnectReason, Pong, SnapshotPong};
use crate::quant::quantize_pos;
use crate::snapshot::{self, Ack, Update};

const RATE: u16 = 30;
const ME: u32 = 7;
const OTHER: u32 = 9;

fn session(ack: AckTiming) -> ClientSession {
    ClientSession::new(SessionConfig {
        name: "tester".into(),
        ack,
        ask_names: false,
    })
}

fn welcome_bytes(token: u8, resumed: bool) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_server(
        &ServerMsg::Welcome(Welcome {
            client_id: 1,
            entity: ME,
            tick_rate: RATE,
            server_tick: 1,
            map: Map::open(1000.0, 1000.0),
            resume_token: ResumeToken([token; 16]),
            resumed,
        }),
        &mut out,
    )
    .unwrap();
    out
}

fn server_msg(msg: &ServerMsg) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_server(msg, &mut out).unwrap();
    out
}

/// Everything the session queued, decoded: the `Hello` if there is one, client messages and
/// acks.
#[derive(Default)]
struct Sent {
    hello: Option<Hello>,
    msgs: Vec<ClientMsg>,
    acks: Vec<Ack>,
}

impl Sent {
    fn inputs(&self) -> Vec<Input> {
        self.msgs
            .iter()
            .filter_map(|m| match m {
                ClientMsg::Input(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    fn pings(&self) -> Vec<u32> {
        self.msgs
            .iter()
            .filter_map(|m| match m {
                ClientMsg::SnapshotPing(p) => Some(p.nonce),
                _ => None,
            })
            .collect()
    }
}

fn sent(s: &mut ClientSession, expect_hello: bool) -> Sent {
    let t = s.poll_transmit();
    let mut reader = FrameReader::new();
    reader.push(&t.stream);
    let mut out = Sent::default();
    if expect_hello {
        let body = reader.next_frame().unwrap().expect("a hello frame");
        out.hello = Some(decode_hello(&body).unwrap());
    }
    while let Some(body) = reader.next_frame().unwrap() {
        out.msgs.push(decode_client(&body).unwrap());
    }
    for d in &t.datagrams {
        let ClientDatagram::Ack(a) = decode_client_datagram(d).unwrap();
        out.acks.push(a);
    }
    out
}

fn events(s: &mut ClientSession) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A full (baseline 0) delta snapshot at `tick`: the own entity at `me` (if shown, standing
/// still) and another player.
fn snapshot(tick: u32, me: Option<Vec2>, last_seq: u32) -> Vec<u8> {
    snapshot_answering(tick, me, last_seq, None)
}

/// [`snapshot`], answering a snapshot ping with `pong`.
fn snapshot_answering(
    tick: u32,
    me: Option<Vec2>,
    last_seq: u32,
    pong: Option<SnapshotPong>,
) -> Vec<u8> {
    let at = |p: Vec2| [quantize_pos(p.x), quantize_pos(p.y), 0, 0];
    let mut updates = Vec::new();
    if let Some(p) = me {
        updates.push(Update {
            id: ME,
            kind: EntityKind::Player,
            fields: at(p),
        });
    }
    updates.push(Update {
        id: OTHER,
        kind: EntityKind::Player,
        fields: at(Vec2::new(500.0, 500.0)),
    });
    let (snap, _) = snapshot::encode(tick, RATE, None, [0, 0], &[], &updates);
    let status = InputStatus {
        last_seq,
        late: 0,
        lead: 3,
        pong,
    };
    codec::encode_datagram(&ServerDatagram::Delta(status, snap))
}

fn walk_right(_: &ClientSession, _: u32) -> Controls {
    Controls {
        movement: Vec2::X,
        aim: Vec2::X,
        ..Controls::default()
    }
}

/// `s` connected and welcomed, what it sent and raised so far taken.
fn welcomed(mut s: ClientSession) -> ClientSession {
    s.connect("tok");
    s.on_stream(&welcome_bytes(1, false), 0.0);
    let _ = sent(&mut s, true);
    let _ = events(&mut s);
    s
}

/// A welcomed session whose clock runs: a round trip measured and a snapshot (without the
/// own entity, so no predictor yet) received, at t = 100 ms.
fn playing(ack: AckTiming) -> ClientSession {
    let mut s = session(ack);
    s.connect("tok");
    s.on_stream(&welcome_bytes(1, false), 0.0);
    s.frame(0.0, walk_right); // sends ping 1
    s.on_stream(
        &server_msg(&ServerMsg::Pong(Pong {
            nonce: 1,
            server_tick: 1,
        })),
        40.0,
    );
    s.on_datagram(&snapshot(3, None, 0), 100.0);
    let _ = sent(&mut s, true);
    let _ = events(&mut s);
    s
}

#[test]
fn the_handshake_presents_the_last_sessions_resume_token() {
    let mut s = session(AckTiming::NextFrame);
    s.connect("tok");
    let hello = sent(&mut s, true).hello.unwrap();
    assert_eq!(
        (hello.token.as_str(), hello.name.as_str(), hello.resume),
        ("tok", "tester", None)
    );
    assert_eq!(s.stage(), Stage::Handshaking);
    s.on_stream(&welcome_bytes(5, false), 0.0);
    assert_eq!(s.stage(), Stage::Playing);
    assert_eq!(
        events(&mut s),
        [Event::Welcomed {
            entity: ME,
            tick_rate: RATE,
            resumed: false
        }]
    );
    s.on_closed("network lost");
    assert_eq!(s.stage(), Stage::Ended);
    s.connect("");
    let hello = sent(&mut s, true).hello.unwrap();
    assert_eq!(hello.resume, Some(ResumeToken([5; 16])));
}

#[test]
fn a_rejection_says_whether_retrying_can_help() {
    for (reason, permanent) in [
        (RejectReason::ServerFull, false),
        (RejectReason::ProtocolVersion { server: 1 }, true),
        (RejectReason::NotArena, true),
    ] {
        let mut s = session(AckTiming::NextFrame);
        s.connect("tok");
        let reject = Reject {
            reason,
            message: "no".into(),
            retry_after_ms: 500,
        };
        s.on_stream(&server_msg(&ServerMsg::Reject(reject.clone())), 0.0);
        assert_eq!(s.stage(), Stage::Ended);
        assert_eq!(events(&mut s), [Event::Rejected { reject, permanent }]);
    }
}

#[test]
fn a_disconnect_or_a_bad_frame_ends_the_session() {
    let mut s = playing(AckTiming::NextFrame);
    let d = Disconnect {
        reason: DisconnectReason::ServerShutdown,
        message: "bye".into(),
        reconnect_after_ms: 300,
        moved_to: None,
    };
    s.on_stream(&server_msg(&ServerMsg::Disconnect(d.clone())), 200.0);
    assert_eq!(events(&mut s), [Event::Disconnected(d)]);
    assert_eq!(s.stage(), Stage::Ended);

    let mut s = playing(AckTiming::NextFrame);
    // A frame whose body is not a server message.
    s.on_stream(&[1, 0, 0, 0, 0xff], 200.0);
    assert!(matches!(events(&mut s)[..], [Event::Closed { .. }]));
    // A second Welcome mid-session is not a thing the server does.
    let mut s = playing(AckTiming::NextFrame);
    s.on_stream(&welcome_bytes(2, false), 200.0);
    assert!(matches!(events(&mut s)[..], [Event::Closed { .. }]));
}

#[test]
fn a_move_ends_the_session_and_the_next_connection_presents_the_resume_token() {
    let mut s = playing(AckTiming::NextFrame);
    let mut now = 100.0;
    for _ in 0..5 {
        now += 16.0;
        s.frame(now, walk_right);
    }
    let _ = sent(&mut s, false);
    let d = Disconnect {
        reason: DisconnectReason::Moved,
        message: "moving".into(),
        reconnect_after_ms: 640,
        moved_to: Some(crate::protocol::MovedTo {
            url: "https://b:4433/".into(),
            cert_sha256: vec!["aGFzaA==".into()],
            http: "http://b:8080".into(),
        }),
    };
    s.on_stream(&server_msg(&ServerMsg::Disconnect(d.clone())), now);
    assert_eq!(events(&mut s), [Event::Disconnected(d)]);
    assert_eq!(s.stage(), Stage::Ended);
    // Nothing more goes out on the old connection.
    s.frame(now + 100.0, walk_right);
    assert!(sent(&mut s, false).msgs.is_empty());

    // The driver connects to the new server: the Hello carries the token of the Welcome.
    s.connect("");
    let hello = sent(&mut s, true).hello.expect("a Hello");
    assert_eq!(hello.resume, Some(ResumeToken([1; 16])));
    assert_eq!(hello.token, "");
}

#[test]
fn a_move_past_the_bounds_is_malformed() {
    let mut s = playing(AckTiming::NextFrame);
    let d = Disconnect {
        reason: DisconnectReason::Moved,
        message: "moving".into(),
        reconnect_after_ms: 0,
        moved_to: Some(crate::protocol::MovedTo {
            url: "https://b:4433/".into(),
            cert_sha256: vec!["h".into(); crate::protocol::MAX_MOVED_CERT_HASHES + 1],
            http: String::new(),
        }),
    };
    s.on_stream(&server_msg(&ServerMsg::Disconnect(d)), 200.0);
    assert!(matches!(events(&mut s)[..], [Event::Closed { .. }]));
    assert_eq!(s.stage(), Stage::Ended);
}

#[test]
fn a_predictor_started_mid_session_replays_the_inputs_in_flight() {
    let mut s = playing(AckTiming::NextFrame);
    // Inputs go out before any snapshot shows the own entity.
    let mut now = 100.0;
    while s.inputs_sent() < 6 {
        now += 16.0;
        s.frame(now, walk_right);
    }
    let inputs = sent(&mut s, false).inputs();
    assert_eq!(inputs.len(), 6);
    assert_eq!(
        inputs.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    // The server has applied the first two when this snapshot shows the entity.
    let start = Vec2::new(100.0, 100.0);
    s.on_datagram(&snapshot(10, Some(start), 2), now);
    let p = s
        .predictor()
        .expect("a predictor from the first snapshot showing the entity");
    assert_eq!(p.pending(), 4, "seqs 3..=6 are still in flight");
    assert!(
        p.body().pos.x > start.x,
        "the predictor stands where those four inputs take it: {:?}",
        p.body().pos
    );
    // When the server reports them applied at the predicted place, nothing needs correcting.
    let ahead = p.body().pos;
    s.on_datagram(&snapshot(11, Some(ahead), 6), now + 33.0);
    let applied = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::SnapshotApplied(a) if a.tick == 11 => Some(a),
            _ => None,
        })
        .next()
        .unwrap();
    assert!(applied.reconciled);
    assert_eq!(applied.correction, None);
}

#[test]
fn each_ack_timing_sends_the_ack_when_it_says() {
    // On receipt: at once.
    let mut s = playing(AckTiming::OnReceipt);
    s.on_datagram(&snapshot(4, None, 0), 120.0);
    assert_eq!(sent(&mut s, false).acks.len(), 1);

    // Next frame: not before it, then at it, whether or not an input is due.
    let mut s = playing(AckTiming::NextFrame);
    s.on_datagram(&snapshot(4, None, 0), 120.0);
    assert!(sent(&mut s, false).acks.is_empty());
    s.frame(120.0, walk_right);
    let out = sent(&mut s, false);
    assert_eq!(out.acks.len(), 1);
    assert_eq!(out.acks[0].newest, 4);

    // With the next input: it leaves with one...
    let mut s = playing(AckTiming::WithNextInput);
    s.on_datagram(&snapshot(4, None, 0), 120.0);
    s.frame(200.0, walk_right);
    let out = sent(&mut s, false);
    assert!(!out.inputs().is_empty(), "an input was due");
    assert_eq!(out.acks.len(), 1, "and the ack left with it");
    // ...or alone after ACK_WAIT_FRAMES frames without one (frames 1 ms apart, just after an
    // input: the next is a tick away).
    let mut now = 200.0;
    while sent(&mut s, false).inputs().is_empty() {
        now += 1.0;
        s.frame(now, walk_right);
    }
    s.on_datagram(&snapshot(5, None, 0), now);
    let mut frames_without_ack = 0;
    loop {
        now += 1.0;
        s.frame(now, walk_right);
        let out = sent(&mut s, false);
        assert!(out.inputs().is_empty(), "an input came due at {now}");
        if !out.acks.is_empty() {
            break;
        }
        frames_without_ack += 1;
    }
    assert_eq!(frames_without_ack, ACK_WAIT_FRAMES);
}

#[test]
fn a_ping_answered_in_a_snapshot_measures_the_round_trip_less_the_servers_hold() {
    let mut s = welcomed(session(AckTiming::NextFrame));
    s.frame(0.0, walk_right);
    assert_eq!(sent(&mut s, false).pings(), [1], "a snapshot ping");
    let pongs = |s: &mut ClientSession| -> Vec<Event> {
        events(s)
            .into_iter()
            .filter(|e| matches!(e, Event::Pong { .. }))
            .collect()
    };
    // Sent at 0, read back at 60 ms in a snapshot that says the server held it 25 ms.
    let held = SnapshotPong {
        nonce: 1,
        held_us: 25_000,
    };
    s.on_datagram(&snapshot_answering(3, None, 0, Some(held)), 60.0);
    assert_eq!(pongs(&mut s), [Event::Pong { rtt_ms: 35.0 }]);
    assert_eq!(s.clock().unwrap().rtt_ms(), Some(35.0));
    // The same answer again (a duplicated datagram), or one to a ping never sent, measures
    // nothing.
    s.on_datagram(&snapshot_answering(4, None, 0, Some(held)), 90.0);
    let stray = SnapshotPong {
        nonce: 2,
        held_us: 0,
    };
    s.on_datagram(&snapshot_answering(5, None, 0, Some(stray)), 120.0);
    assert!(pongs(&mut s).is_empty());
    assert_eq!(s.clock().unwrap().rtt_ms(), Some(35.0));
}

#[test]
fn pings_go_out_every_interval_and_pongs_measure_the_round_trip() {
    let mut s = welcomed(session(AckTiming::NextFrame));
    let mut nonces = Vec::new();
    for now in (0..1000).step_by(10) {
        s.frame(f64::from(now), walk_right);
        nonces.extend(sent(&mut s, false).pings());
    }
    assert_eq!(nonces, [1, 2, 3, 4], "one each PING_INTERVAL_MS");
    s.on_stream(
        &server_msg(&ServerMsg::Pong(Pong {
            nonce: 4,
            server_tick: 1,
        })),
        790.0,
    );
    assert_eq!(events(&mut s), [Event::Pong { rtt_ms: 40.0 }]);
    assert_eq!(s.clock().unwrap().rtt_ms(), Some(40.0));
    // A pong nobody waits for (answered twice, or forgotten) measures nothing.
    s.on_stream(
        &server_msg(&ServerMsg::Pong(Pong {
            nonce: 4,
            server_tick: 1,
        })),
        900.0,
    );
    assert!(events(&mut s).is_empty());
}

#[test]
fn fire_is_reported_at_the_weapons_rate_and_held_while_dead() {
    let mut s = playing(AckTiming::NextFrame);
    let fire = |_: &ClientSession, _: u32| Controls {
        movement: Vec2::ZERO,
        aim: Vec2::Y,
        fire: true,
        alt_fire: false,
    };
    let mut now = 100.0;
    let mut ticks = Vec::new();
    while s.inputs_sent() < 3 * RIFLE.cooldown_ticks {
        now += 16.0;
        s.frame(now, fire);
        for e in events(&mut s) {
            if let Event::Fired {
                weapon: Weapon::Rifle,
                tick,
                ..
            } = e
            {
                ticks.push(tick);
            }
        }
    }
    assert_eq!(ticks.len(), 3, "{ticks:?}");
    assert!(
        ticks
            .windows(2)
            .all(|w| w[1] - w[0] == RIFLE.cooldown_ticks)
    );
    assert!(
        sent(&mut s, false)
            .inputs()
            .iter()
            .all(|i| i.buttons.fire())
    );

    s.on_stream(
        &server_msg(&ServerMsg::Event(GameEvent::Killed {
            killer: OTHER,
            victim: ME,
        })),
        now,
    );
    assert!(s.dead() && s.me().is_none());
    let sent_before = s.inputs_sent();
    while s.inputs_sent() < sent_before + 2 * RIFLE.cooldown_ticks {
        now += 16.0;
        s.frame(now, fire);
    }
    assert!(
        sent(&mut s, false)
            .inputs()
            .iter()
            .all(|i| !i.buttons.fire()),
        "a dead player's fire is not sent"
    );
    assert!(
        !events(&mut s)
            .iter()
            .any(|e| matches!(e, Event::Fired { .. }))
    );

    let pos = Vec2::new(300.0, 200.0);
    s.on_stream(
        &server_msg(&ServerMsg::Event(GameEvent::Respawned {
            entity: ME,
            pos,
            health: 100,
        })),
        now,
    );
    assert!(!s.dead());
    assert_eq!(
        s.me(),
        Some(pos),
        "drawn where it respawned until a snapshot"
    );
    assert!(s.predictor().is_none());
}

#[test]
fn unnamed_players_in_view_are_asked_about_once_per_retry_interval() {
    let mut s = ClientSession::new(SessionConfig {
        name: "tester".into(),
        ack: AckTiming::NextFrame,
        ask_names: true,
    });
    s.connect("tok");
    s.on_stream(&welcome_bytes(1, false), 0.0);
    s.on_datagram(&snapshot(3, Some(Vec2::ZERO), 0), 0.0);
    let _ = sent(&mut s, true);
    let _ = events(&mut s);
    let whois = |s: &mut ClientSession| -> Vec<WhoIs> {
        sent(s, false)
            .msgs
            .into_iter()
            .filter_map(|m| match m {
                ClientMsg::WhoIs(w) => Some(w),
                _ => None,
            })
            .collect()
    };
    s.frame(0.0, walk_right);
    assert_eq!(
        whois(&mut s),
        [WhoIs {
            entities: vec![OTHER]
        }],
        "the other player, not itself"
    );
    let mut now = 0.0;
    while now < WHOIS_RETRY_MS - 1.0 {
        now += WHOIS_INTERVAL_MS;
        s.frame(now.min(WHOIS_RETRY_MS - 1.0), walk_right);
        assert!(whois(&mut s).is_empty(), "asked again at {now}");
    }
    s.frame(WHOIS_RETRY_MS + 1.0, walk_right);
    assert_eq!(
        whois(&mut s).len(),
        1,
        "asked again after the retry interval"
    );
    let names = vec![PlayerName {
        entity: OTHER,
        name: "other".into(),
    }];
    s.on_stream(&server_msg(&ServerMsg::Names(names.clone())), 6000.0);
    assert_eq!(events(&mut s), [Event::Names(names)]);
    assert_eq!(s.name_of(OTHER), Some("other"));
    s.frame(20_000.0, walk_right);
    assert!(
        whois(&mut s).is_empty(),
        "a named player is not asked about"
    );
}

#[test]
fn a_session_without_interpolation_keeps_no_views_and_plays_as_any_other() {
    let here = Vec2::new(100.0, 200.0);
    let play = |s: ClientSession| {
        let mut s = welcomed(s);
        for (i, tick) in (3..8u32).enumerate() {
            let now = 100.0 + 34.0 * i as f64;
            s.on_datagram(&snapshot(tick, Some(here), 0), now);
            s.frame(now + 10.0, walk_right);
        }
        let out = sent(&mut s, false);
        (s, out.acks.len(), out.msgs.len())
    };
    let (lean, lean_acks, lean_msgs) = play(session(AckTiming::NextFrame).without_interpolation());
    let (full, full_acks, full_msgs) = play(session(AckTiming::NextFrame));
    assert!(lean.interp().is_none(), "no interpolator to read");
    assert!(full.interp().is_some());
    // Everything else is the same: acks, inputs and pings, prediction, the clock, the view.
    assert_eq!((lean_acks, lean_msgs), (full_acks, full_msgs));
    assert!(lean_msgs > 0 && lean_acks > 0);
    assert_eq!(lean.inputs_sent(), full.inputs_sent());
    assert!(lean.predictor().is_some());
    assert_eq!(
        lean.clock().unwrap().server_tick(300.0),
        full.clock().unwrap().server_tick(300.0)
    );
    assert_eq!(lean.latest(), full.latest());
}

#[test]
fn an_interpolating_session_holds_each_view_once() {
    let mut s = welcomed(session(AckTiming::NextFrame));
    let here = Vec2::new(100.0, 200.0);
    for (i, tick) in (3..12u32).enumerate() {
        let now = 100.0 + 34.0 * i as f64;
        s.on_datagram(&snapshot(tick, Some(here), 0), now);
        s.frame(now + 10.0, walk_right);
    }
    let interp = s.interp().expect("it interpolates");
    let newest = interp.views().last().expect("a view");
    assert_eq!(
        Some(&**newest),
        s.latest(),
        "the newest view is the receiver's"
    );
    // The interpolation buffer and the receiver hold the same allocation, not a copy each.
    assert_eq!(std::sync::Arc::strong_count(newest), 2);
}

#[test]
fn the_views_interpolation_lets_go_of_serve_the_next_snapshots() {
    // Each snapshot against the one before, as the server sends them to a client that
    // acknowledges every one: the receiver lets go of a view once a newer baseline is named,
    // while the interpolation buffer still shows it; the buffer lets go of it a few frames
    // later, and its allocation is a spare for the next snapshot's view.
    let mut s = welcomed(session(AckTiming::NextFrame));
    let mut base: Option<snapshot::View> = None;
    for (i, tick) in (3..40u32).enumerate() {
        let updates = [Update {
            id: OTHER,
            kind: EntityKind::Player,
            fields: [quantize_pos(500.0 + i as f32), quantize_pos(500.0), 0, 0],
        }];
        let (snap, view) = snapshot::encode(tick, RATE, base.as_ref(), [0, 0], &[], &updates);
        base = Some(view);
        let status = InputStatus {
            last_seq: 0,
            late: 0,
            lead: 3,
            pong: None,
        };
        let now = 100.0 + 34.0 * i as f64;
        s.on_datagram(
            &codec::encode_datagram(&ServerDatagram::Delta(status, snap)),
            now,
        );
        s.frame(now + 10.0, walk_right);
    }
    assert_eq!(s.latest(), base.as_ref(), "every snapshot applied");
    let g = s.game.as_ref().expect("playing");
    assert!(g.interp.views_held() >= 2, "it interpolates");
    assert!(
        g.receiver.spares() >= 1,
        "the views let go of came back to the receiver"
    );
}

#[test]
fn a_watching_session_acks_half_a_tick_after_a_snapshot_and_keeps_no_clock_prediction_or_interpolation()
 {
    // Configured to ack at the next frame, but it runs none: the ack is held half a tick
    // after the snapshot (the next one, arriving meanwhile, is acknowledged with it), then
    // released by the driver.
    let mut s = welcomed(session(AckTiming::NextFrame).watch_only());
    let here = Vec2::new(100.0, 200.0);
    s.on_datagram(&snapshot(3, Some(here), 0), 100.0);
    assert!(sent(&mut s, false).acks.is_empty(), "held");
    let due = s.ack_due_ms().expect("an ack held");
    assert!((due - (100.0 + 1000.0 / 60.0)).abs() < 1e-9, "due at {due}");
    s.release_ack(due - 1.0);
    assert!(sent(&mut s, false).acks.is_empty(), "not yet due");
    s.release_ack(due);
    let out = sent(&mut s, false);
    assert_eq!(out.acks.len(), 1);
    assert_eq!(out.acks[0].newest, 3);
    assert_eq!(s.ack_due_ms(), None, "released once");
    let [Event::SnapshotApplied(applied)] = events(&mut s)[..] else {
        panic!("one snapshot applied")
    };
    assert_eq!(
        applied.me.map(|b| b.pos),
        Some(here),
        "the own entity is still reported"
    );
    assert!(applied.newest && !applied.reconciled);
    assert!(s.predictor().is_none());
    assert_eq!(
        s.clock().unwrap().server_tick(100.0),
        None,
        "the clock never ran"
    );
    assert_eq!(s.render_tick(100.0), None);
    // Frames do nothing: no inputs, no pings.
    s.frame(150.0, walk_right);
    s.frame(400.0, walk_right);
    assert!(sent(&mut s, false).msgs.is_empty());
    assert_eq!(s.inputs_sent(), 0);
    // The same session not watching predicts and runs its clock.
    let mut s = session(AckTiming::NextFrame);
    s.connect("tok");
    s.on_stream(&welcome_bytes(1, false), 0.0);
    s.on_datagram(&snapshot(3, Some(here), 0), 100.0);
    assert!(s.predictor().is_some());
    assert!(s.clock().unwrap().server_tick(100.0).is_some());
    assert!(sent(&mut s, true).acks.is_empty());
}

#[test]
fn a_watching_session_at_a_tick_no_longer_than_quics_ack_delay_acks_on_receipt() {
    let mut s = session(AckTiming::NextFrame).watch_only();
    s.connect("tok");
    let mut welcome = Vec::new();
    codec::encode_server(
        &ServerMsg::Welcome(Welcome {
            client_id: 1,
            entity: ME,
            tick_rate: 60,
            server_tick: 1,
            map: Map::open(1000.0, 1000.0),
            resume_token: ResumeToken([1; 16]),
            resumed: false,
        }),
        &mut welcome,
    )
    .unwrap();
    s.on_stream(&welcome, 0.0);
    let _ = sent(&mut s, true);
    s.on_datagram(&snapshot(3, None, 0), 100.0);
    assert_eq!(sent(&mut s, false).acks.len(), 1, "on receipt at 60 Hz");
    assert_eq!(s.ack_due_ms(), None);
}

#[test]
fn swapped_transmits_hand_over_the_bytes_once_and_reuse_the_callers_buffers() {
    let mut s = playing(AckTiming::OnReceipt);
    let mut buf = Transmit::default();
    s.swap_transmit(&mut buf);
    assert!(buf.is_empty(), "playing() took everything queued before");
    s.on_datagram(&snapshot(4, None, 0), 120.0);
    s.frame(200.0, walk_right);
    s.swap_transmit(&mut buf);
    assert_eq!(buf.datagrams.len(), 1, "the ack");
    let seqs = |stream: &[u8]| {
        let mut reader = FrameReader::new();
        reader.push(stream);
        std::iter::from_fn(|| reader.next_frame().unwrap())
            .filter_map(|body| match decode_client(&body).unwrap() {
                ClientMsg::Input(i) => Some(i.seq),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let first = seqs(&buf.stream);
    assert!(!first.is_empty(), "the input");
    // Sent; handed back: the session fills this buffer next, emptied first.
    let stream_at = buf.stream.as_ptr();
    let capacity = buf.stream.capacity();
    s.swap_transmit(&mut buf);
    assert!(buf.is_empty(), "nothing is handed over twice");
    s.frame(300.0, walk_right);
    s.swap_transmit(&mut buf);
    let next = seqs(&buf.stream);
    assert!(!next.is_empty());
    assert!(
        next.iter().all(|seq| !first.contains(seq)),
        "inputs {first:?} were sent again: {next:?}"
    );
    if buf.stream.len() <= capacity {
        assert_eq!(
            buf.stream.as_ptr(),
            stream_at,
            "the same allocation, reused"
        );
    }
}
