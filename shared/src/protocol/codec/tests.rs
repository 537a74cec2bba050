//! Codec tests: round trips for every message, totality on arbitrary bytes, and golden bytes
//! that fail when a dependency bump changes what goes on the wire.

use glam::Vec2;
use proptest::prelude::*;

use super::*;
use crate::map::{Map, Rect};
use crate::protocol::{
    Buttons, CLOSE_CLIENT_LEFT, Disconnect, DisconnectReason, EntityKind, GameEvent, Input,
    InputFault, MovedTo, Ping, PlayerName, Pong, Reject, RejectReason, ResumeToken, Welcome, WhoIs,
};
use crate::quant::{Aim, MoveDir};

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        token: "tok".into(),
        name: "ana".into(),
        resume: Some(ResumeToken([7; 16])),
    }
}

fn one_frame(bytes: &[u8]) -> Vec<u8> {
    let mut r = FrameReader::new();
    r.push(bytes);
    let body = r.next_frame().unwrap().expect("a whole frame");
    assert_eq!(r.pending(), 0);
    body
}

fn every_client_msg() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Input(Input {
            seq: 9,
            tick: 1234,
            movement: MoveDir { x: -127, y: 64 },
            aim: Aim(40000),
            buttons: Buttons(Buttons::FIRE),
            view_tick: 1229,
            view_frac: 128,
        }),
        ClientMsg::Ping(Ping { nonce: 77 }),
        ClientMsg::SnapshotPing(Ping { nonce: 78 }),
        ClientMsg::WhoIs(WhoIs {
            entities: vec![4, 9, 4_000_000],
        }),
    ]
}

fn every_server_msg() -> Vec<ServerMsg> {
    let mut map = Map::open(4096.0, 2048.0);
    map.obstacles
        .push(Rect::new(Vec2::new(1.0, 2.0), Vec2::new(3.0, 4.0)));
    let reasons = [
        RejectReason::ProtocolVersion { server: 1 },
        RejectReason::NotArena,
        RejectReason::MalformedHello,
        RejectReason::TokenMissing,
        RejectReason::TokenMalformed,
        RejectReason::TokenForged,
        RejectReason::TokenExpired,
        RejectReason::TokenWrongServer,
        RejectReason::ServerFull,
        RejectReason::HandshakeTimeout,
        RejectReason::ShuttingDown,
        RejectReason::TokenInUse,
        RejectReason::DatagramsUnsupported,
        RejectReason::TooManyFromAddress,
        RejectReason::RateLimited,
    ];
    let disconnects = [
        DisconnectReason::ServerShutdown,
        DisconnectReason::MalformedFrame,
        DisconnectReason::FrameTooLarge,
        DisconnectReason::MalformedDatagram,
        DisconnectReason::StreamClosed,
        DisconnectReason::SimulationUnavailable,
        DisconnectReason::InputFlood,
        DisconnectReason::SlowConsumer,
        DisconnectReason::Superseded,
        DisconnectReason::Moved,
    ];
    let mut all = vec![
        ServerMsg::Welcome(Welcome {
            client_id: 5,
            entity: 12,
            tick_rate: 30,
            server_tick: 99,
            map,
            resume_token: ResumeToken([9; 16]),
            resumed: true,
        }),
        ServerMsg::Pong(Pong {
            nonce: 77,
            server_tick: 100,
        }),
        ServerMsg::Names(vec![
            PlayerName {
                entity: 4,
                name: "ada".into(),
            },
            PlayerName {
                entity: 9,
                name: "Zoë".into(),
            },
        ]),
        ServerMsg::Names(Vec::new()),
        ServerMsg::Event(GameEvent::Hit {
            attacker: 3,
            target: 4,
            damage: 20,
            health: -5,
        }),
        ServerMsg::Event(GameEvent::Killed {
            killer: 3,
            victim: 4,
        }),
        ServerMsg::Event(GameEvent::Respawned {
            entity: 4,
            pos: Vec2::new(10.0, 20.5),
            health: 100,
        }),
        ServerMsg::Event(GameEvent::Score {
            kills: 2,
            deaths: 1,
        }),
    ];
    all.extend(reasons.map(|reason| {
        ServerMsg::Reject(Reject {
            reason,
            message: "why".into(),
            retry_after_ms: 1500,
        })
    }));
    all.extend(disconnects.map(|reason| {
        ServerMsg::Disconnect(Disconnect {
            reason,
            message: "bye".into(),
            reconnect_after_ms: 2500,
            moved_to: (reason == DisconnectReason::Moved).then(moved_to),
        })
    }));
    all
}

fn moved_to() -> MovedTo {
    MovedTo {
        url: "https://b:4433/".into(),
        cert_sha256: vec!["aGFzaA==".into()],
        http: "http://b:8080".into(),
    }
}

fn entities(n: u32) -> Vec<EntityState> {
    (0..n)
        .map(|i| EntityState {
            id: i * 3 + 1,
            kind: if i % 10 == 0 {
                EntityKind::Player
            } else {
                EntityKind::Npc
            },
            pos: Vec2::new(i as f32 * 4.5, 4000.0 - i as f32),
            vel: Vec2::new((i % 7) as f32 * 10.0 - 30.0, 12.5),
        })
        .collect()
}

#[test]
fn every_message_round_trips() {
    let mut out = Vec::new();
    encode_hello(&hello(), &mut out).unwrap();
    assert_eq!(decode_hello(&one_frame(&out)), Ok(hello()));
    for msg in every_client_msg() {
        let mut out = Vec::new();
        encode_client(&msg, &mut out).unwrap();
        assert_eq!(decode_client(&one_frame(&out)), Ok(msg));
    }
    for msg in every_server_msg() {
        let mut out = Vec::new();
        encode_server(&msg, &mut out).unwrap();
        assert_eq!(decode_server(&one_frame(&out)), Ok(msg));
    }
    let snap = ServerDatagram::Snapshot(Snapshot {
        tick: 3,
        part: 0,
        parts: 1,
        entities: entities(5),
    });
    assert_eq!(decode_datagram(&encode_datagram(&snap)), Ok(snap));
    let u = |id| crate::snapshot::Update {
        id,
        kind: EntityKind::Npc,
        fields: [id as i32, 2, 3, 4],
    };
    let (delta, _) = crate::snapshot::encode(9, 30, None, [1, 2], &[], &[u(1), u(5)]);
    let status = crate::protocol::InputStatus {
        last_seq: 4,
        late: 1,
        lead: -2,
        pong: None,
    };
    let delta = ServerDatagram::Delta(status, delta);
    assert_eq!(decode_datagram(&encode_datagram(&delta)), Ok(delta));
    let ack = ClientDatagram::Ack(crate::snapshot::Ack {
        newest: 77,
        bits: 0xF0F0,
    });
    assert_eq!(
        decode_client_datagram(&encode_client_datagram(&ack)),
        Ok(ack)
    );
}

/// The Arena code of every `Reject` and `Disconnect` reason in [`every_server_msg`].
fn reason_codes() -> Vec<u32> {
    every_server_msg()
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Reject(r) => Some(r.reason.code()),
            ServerMsg::Disconnect(d) => Some(d.reason.code()),
            _ => None,
        })
        .collect()
}

#[test]
fn reject_and_disconnect_codes_are_distinct() {
    let mut codes = reason_codes();
    let n = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), n);
}

#[test]
fn close_codes_live_in_webtransports_application_range_and_read_back() {
    use crate::protocol::{
        WT_APPLICATION_ERROR_FIRST, WT_APPLICATION_ERROR_LAST, arena_code, close_code,
    };
    // The draft's own examples of its mapping, and both ends of the range.
    assert_eq!(close_code(0), WT_APPLICATION_ERROR_FIRST);
    assert_eq!(close_code(0x1d), WT_APPLICATION_ERROR_FIRST + 0x1d);
    assert_eq!(close_code(0x1e), WT_APPLICATION_ERROR_FIRST + 0x1f);
    assert_eq!(close_code(u32::MAX), WT_APPLICATION_ERROR_LAST);
    let mut codes = reason_codes();
    codes.extend([CLOSE_CLIENT_LEFT, 0x1e, 0x3c, u32::MAX - 1, u32::MAX]);
    for code in codes {
        let wire = close_code(code);
        assert_eq!(arena_code(wire), Some(code), "{code:#x} -> {wire:#x}");
        // None lands on one of HTTP/3's reserved codepoints (0x1f * N + 0x21)...
        assert_ne!(wire.wrapping_sub(0x21) % 0x1f, 0, "{code:#x} -> {wire:#x}");
        // ...nor on a QUIC varint's limit.
        assert!(wire < 1 << 62);
    }
    // HTTP/3's own codes, QUIC's and a reserved codepoint are no Arena reason.
    for wire in [
        0,
        0x100,
        0x105,
        0x110,
        0x33,
        WT_APPLICATION_ERROR_FIRST + 0x1e,
    ] {
        assert_eq!(arena_code(wire), None, "{wire:#x}");
    }
    assert_eq!(arena_code(WT_APPLICATION_ERROR_LAST + 1), None);
}

#[test]
fn hello_version_is_read_before_the_body() {
    let mut body = HELLO_MAGIC.to_vec();
    body.extend_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    body.extend_from_slice(b"\xff\xff whatever a future version sends");
    assert_eq!(
        decode_hello(&body),
        Err(HelloError::Version(PROTOCOL_VERSION + 1))
    );
    assert_eq!(decode_hello(b"GET / HTTP/1.1"), Err(HelloError::NotArena));
    for name in ["", "a\nb", &"x".repeat(MAX_NAME_LEN + 1)] {
        let mut out = Vec::new();
        encode_hello(
            &Hello {
                name: name.into(),
                ..hello()
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            decode_hello(&one_frame(&out)),
            Err(HelloError::Malformed),
            "name {name:?}"
        );
    }
}

#[test]
fn frames_reassemble_across_any_split_and_oversize_is_refused_from_the_header() {
    let mut stream = Vec::new();
    for msg in every_client_msg() {
        encode_client(&msg, &mut stream).unwrap();
    }
    for split in 0..stream.len() {
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for piece in [&stream[..split], &stream[split..]] {
            r.push(piece);
            while let Some(body) = r.next_frame().unwrap() {
                got.push(decode_client(&body).unwrap());
            }
        }
        assert_eq!(got, every_client_msg());
    }
    let mut r = FrameReader::new();
    r.push(&((MAX_FRAME_LEN as u32 + 1).to_le_bytes()));
    assert_eq!(
        r.next_frame(),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
    let big = ClientMsg::Ping(Ping { nonce: 1 });
    let mut out = Vec::new();
    assert!(encode_client(&big, &mut out).is_ok());
}

#[test]
fn snapshot_parts_fit_the_datagram_and_carry_every_entity_once() {
    for (n, max) in [
        (0u32, 1200usize),
        (1, 1200),
        (1000, 1350),
        (1000, 1162),
        (3000, 1211),
    ] {
        let all = entities(n);
        let parts = encode_snapshot_parts(42, &all, max);
        assert!(!parts.is_empty());
        let mut seen = Vec::new();
        for (i, bytes) in parts.iter().enumerate() {
            assert!(bytes.len() <= max, "part {i} is {} > {max}", bytes.len());
            let Ok(ServerDatagram::Snapshot(s)) = decode_datagram(bytes) else {
                panic!("part {i} decodes")
            };
            assert_eq!(
                (s.tick, s.part as usize, s.parts as usize),
                (42, i, parts.len())
            );
            seen.extend(s.entities);
        }
        assert_eq!(seen, all);
    }
    assert!(
        encode_snapshot_parts(1, &entities(3), 8).is_empty(),
        "nothing fits 8 bytes"
    );
}

/// Golden bytes: if this fails after a dependency bump, the wire format changed. Bump
/// PROTOCOL_VERSION, update PROTOCOL.md, then update these bytes.
#[test]
fn golden_bytes() {
    let mut out = Vec::new();
    encode_client(&every_client_msg()[0], &mut out).unwrap();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_INPUT);
    let mut out = Vec::new();
    encode_hello(&hello(), &mut out).unwrap();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_HELLO);
    let u = |id| crate::snapshot::Update {
        id,
        kind: EntityKind::Npc,
        fields: [id as i32 * 16, 32, -48, 0],
    };
    let (base, view) = crate::snapshot::encode(9, 30, None, [0, 0], &[], &[u(1), u(5), u(6)]);
    let moved = [
        crate::snapshot::Update {
            fields: [17, 33, -48, 0],
            ..u(1)
        },
        u(7),
    ];
    let (delta, _) = crate::snapshot::encode(10, 30, Some(&view), [0, 0], &[5], &moved);
    let status = crate::protocol::InputStatus {
        last_seq: 9,
        late: 2,
        lead: 3,
        pong: None,
    };
    let hex: String = encode_datagram(&ServerDatagram::Delta(status, delta))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        GOLDEN_DELTA,
        "full: {:?}",
        encode_datagram(&ServerDatagram::Delta(status, base)).len()
    );
    let ack = ClientDatagram::Ack(crate::snapshot::Ack {
        newest: 10,
        bits: 3,
    });
    let hex: String = encode_client_datagram(&ack)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, GOLDEN_ACK);
    let moved = ServerMsg::Disconnect(Disconnect {
        reason: DisconnectReason::Moved,
        message: "m".into(),
        reconnect_after_ms: 700,
        moved_to: Some(moved_to()),
    });
    let mut out = Vec::new();
    encode_server(&moved, &mut out).unwrap();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_MOVED);
}

#[test]
fn a_moved_to_past_its_bounds_is_not_well_formed() {
    use crate::protocol::{MAX_CERT_HASH_LEN, MAX_MOVED_CERT_HASHES, MAX_MOVED_URL_LEN};
    let moved = |to: MovedTo| Disconnect {
        reason: DisconnectReason::Moved,
        message: String::new(),
        reconnect_after_ms: 0,
        moved_to: Some(to),
    };
    let at_bounds = MovedTo {
        url: format!("https://{}/", "a".repeat(MAX_MOVED_URL_LEN - 9)),
        cert_sha256: vec!["h".repeat(MAX_CERT_HASH_LEN); MAX_MOVED_CERT_HASHES],
        http: "h".repeat(MAX_MOVED_URL_LEN),
    };
    assert_eq!(at_bounds.url.len(), MAX_MOVED_URL_LEN);
    assert!(moved(at_bounds.clone()).well_formed());
    let past = [
        MovedTo {
            url: format!("{}a", at_bounds.url),
            ..at_bounds.clone()
        },
        MovedTo {
            http: format!("{}a", at_bounds.http),
            ..at_bounds.clone()
        },
        MovedTo {
            cert_sha256: vec!["h".into(); MAX_MOVED_CERT_HASHES + 1],
            ..at_bounds.clone()
        },
        MovedTo {
            cert_sha256: vec!["h".repeat(MAX_CERT_HASH_LEN + 1)],
            ..at_bounds.clone()
        },
        MovedTo {
            url: String::new(),
            ..at_bounds.clone()
        },
    ];
    for to in past {
        assert!(!moved(to.clone()).well_formed(), "{to:?}");
    }
    // A destination only comes with Moved; Moved without one is a plain goodbye.
    let mut shutdown = moved(moved_to());
    shutdown.reason = DisconnectReason::ServerShutdown;
    assert!(!shutdown.well_formed());
    shutdown.moved_to = None;
    assert!(shutdown.well_formed());
}

const GOLDEN_INPUT: &str = "0f00000000040902d2048140409c0102cd0480";
const GOLDEN_HELLO: &str = "1300000041524e410a0003746f6b03616e610109070000";
const GOLDEN_DELTA: &str = "00040904020300040a0409040000010405010407010104007000000020000000d0ffffff00000000010401010502030100";
const GOLDEN_ACK: &str = "040a0403";
const GOLDEN_MOVED: &str = "300000000209016d02bc02010f68747470733a2f2f623a343433332f01086147467a61413d3d0d687474703a2f2f623a38303830";

proptest! {
    #[test]
    fn decoders_are_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
        let _ = decode_datagram(&bytes);
        let _ = decode_client_datagram(&bytes);
        let _ = decode_hello(&bytes);
        let mut r = FrameReader::new();
        r.push(&bytes);
        while let Ok(Some(body)) = r.next_frame() {
            let _ = decode_client(&body);
        }
    }

    #[test]
    fn inputs_round_trip(seq in any::<u32>(), tick in any::<u32>(), x in any::<i8>(), y in any::<i8>(), aim in any::<u16>(), b in any::<u8>(), view_tick in any::<u32>(), view_frac in any::<u8>()) {
        let msg = ClientMsg::Input(Input { seq, tick, movement: MoveDir { x, y }, aim: Aim(aim), buttons: Buttons(b), view_tick, view_frac });
        let mut out = Vec::new();
        encode_client(&msg, &mut out).unwrap();
        prop_assert_eq!(decode_client(&one_frame(&out)), Ok(msg));
    }
}

#[test]
fn inputs_outside_their_documented_range_name_their_fault() {
    let ok = Input {
        movement: MoveDir { x: -127, y: 127 },
        buttons: Buttons(Buttons::FIRE),
        ..Default::default()
    };
    assert_eq!(ok.fault(), None);
    let bad_move = Input {
        movement: MoveDir { x: 0, y: -128 },
        ..ok
    };
    assert_eq!(bad_move.fault(), Some(InputFault::MoveOutOfRange));
    let bad_buttons = Input {
        buttons: Buttons(0b1000_0001),
        ..ok
    };
    assert_eq!(bad_buttons.fault(), Some(InputFault::UnknownButtons));
    let names: std::collections::HashSet<_> = InputFault::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(names.len(), InputFault::ALL.len());
}

/// What the one-shot calls give (bitcode without a kept buffer), to hold the kept one to.
fn one_shot_datagram(bytes: &[u8]) -> Result<ServerDatagram, DecodeError> {
    bitcode::decode(bytes).map_err(|_| DecodeError::Malformed)
}

#[test]
fn the_threads_kept_buffer_gives_what_a_one_shot_call_gives() {
    // The per-tick messages on one thread's buffer, in every order and size (a `WhoIs` of
    // up to 300 ids, snapshots of up to 200 entities), with hostile bytes between them:
    // every encoding is the one-shot call's, byte for byte, and every decoding its result.
    let mut rng = crate::rng::SplitMix64::new(21);
    for round in 0..400u32 {
        let msg = match rng.below(4) {
            0 => ClientMsg::Input(Input {
                seq: rng.below(u32::MAX),
                tick: rng.below(1 << 20),
                movement: MoveDir {
                    x: rng.below(255) as i8,
                    y: rng.below(255) as i8,
                },
                aim: Aim(rng.below(65_536) as u16),
                buttons: Buttons(rng.below(4) as u8),
                view_tick: rng.below(1 << 20),
                view_frac: rng.below(256) as u8,
            }),
            1 => ClientMsg::Ping(Ping {
                nonce: rng.below(u32::MAX),
            }),
            2 => ClientMsg::SnapshotPing(Ping {
                nonce: rng.below(u32::MAX),
            }),
            _ => ClientMsg::WhoIs(WhoIs {
                entities: (0..rng.below(300)).map(|_| rng.below(1 << 24)).collect(),
            }),
        };
        let mut kept = Vec::new();
        encode_client(&msg, &mut kept).unwrap();
        let mut once = Vec::new();
        push_frame(&mut once, &bitcode::encode(&msg)).unwrap();
        assert_eq!(kept, once, "round {round}");
        assert_eq!(decode_client(&one_frame(&kept)), Ok(msg), "round {round}");

        let ack = ClientDatagram::Ack(crate::snapshot::Ack {
            newest: rng.below(1 << 20),
            bits: rng.below(u32::MAX),
        });
        let bytes = encode_client_datagram(&ack);
        assert_eq!(bytes, bitcode::encode(&ack), "round {round}");
        assert_eq!(decode_client_datagram(&bytes), Ok(ack), "round {round}");

        let updates: Vec<crate::snapshot::Update> = (1..=rng.below(200))
            .map(|k| crate::snapshot::Update {
                id: 3 * k,
                kind: EntityKind::Npc,
                fields: [
                    rng.below(65_536) as i32,
                    rng.below(65_536) as i32,
                    rng.below(400) as i32 - 200,
                    0,
                ],
            })
            .collect();
        let (snap, _) = crate::snapshot::encode(round + 1, 30, None, [5, 5], &[], &updates);
        // Every other one answers a snapshot ping.
        let status = crate::protocol::InputStatus {
            pong: round
                .is_multiple_of(2)
                .then_some(crate::protocol::SnapshotPong {
                    nonce: rng.below(u32::MAX),
                    held_us: rng.below(u32::MAX),
                }),
            ..Default::default()
        };
        let datagram = encode_datagram(&ServerDatagram::Delta(status, snap));
        assert_eq!(decode_datagram(&datagram), one_shot_datagram(&datagram));
        // Hostile: cut short, bytes flipped, or noise.
        let mut bad = datagram.clone();
        match rng.below(3) {
            0 => bad.truncate(rng.below(bad.len() as u32) as usize),
            1 => {
                let at = rng.below(bad.len() as u32) as usize;
                bad[at] ^= 1 + rng.below(255) as u8;
            }
            _ => bad = (0..rng.below(64)).map(|_| rng.below(256) as u8).collect(),
        }
        assert_eq!(
            decode_datagram(&bad),
            one_shot_datagram(&bad),
            "round {round}"
        );
        assert_eq!(
            decode_client(&bad),
            bitcode::decode::<ClientMsg>(&bad).map_err(|_| DecodeError::Malformed),
            "round {round}"
        );
    }
    // A call made while the thread's buffer is in use takes a fresh one.
    let ack = ClientDatagram::Ack(crate::snapshot::Ack { newest: 9, bits: 3 });
    let nested = with_buffer(|_| encode_client_datagram(&ack));
    assert_eq!(nested, bitcode::encode(&ack));
}
