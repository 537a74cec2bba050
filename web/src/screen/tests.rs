//! The browser client's core against a small in-memory server on a virtual clock: the
//! handshake, refusals, bad bytes, and play with prediction checked against the server's own
//! stepping of the shared rules. No sockets, no sleeping.

use std::collections::{BTreeMap, VecDeque};

use arena_shared::map::Map;
use arena_shared::obstacle_grid::ObstacleGrid;
use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{
    ClientMsg, DisconnectReason, EntityKind, GameEvent, Input, InputStatus, PlayerName, Pong,
    Reject, RejectReason, ResumeToken, ServerDatagram, ServerMsg, Welcome,
};
use arena_shared::quant::{self, MoveDir};
use arena_shared::sim::{self, Body};
use arena_shared::snapshot::{self, Update};
use glam::Vec2;

use super::*;

const RATE: u16 = 30;
const TICK_MS: f64 = 1000.0 / 30.0;
const ME: u32 = 7;
const NPC: u32 = 3;
/// Another player, standing still, named "zed".
const OTHER: u32 = 9;

fn welcome(map: &Map) -> Welcome {
    Welcome {
        client_id: 1,
        entity: ME,
        tick_rate: RATE,
        server_tick: 1,
        map: map.clone(),
        resume_token: ResumeToken([9; 16]),
        resumed: false,
    }
}

fn frame_of(msg: &ServerMsg) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_server(msg, &mut out).expect("encodes");
    out
}

#[test]
fn a_welcome_starts_play_and_the_next_hello_presents_its_resume_token() {
    let map = Map::open(1000.0, 1000.0);
    let mut c = Screen::new("ana");
    let hello = c.hello("tok").expect("hello");
    let decoded = codec::decode_hello(&hello[4..]).expect("a hello");
    assert_eq!((decoded.name.as_str(), decoded.resume), ("ana", None));
    assert_eq!(c.status(), &Status::Handshaking);
    // The welcome and an event in one read.
    let mut bytes = frame_of(&ServerMsg::Welcome(welcome(&map)));
    bytes.extend(frame_of(&ServerMsg::Event(GameEvent::Score {
        kills: 2,
        deaths: 1,
    })));
    c.on_stream(&bytes, 0.0);
    assert_eq!(c.status(), &Status::Playing);
    assert!(c.stats_json(0.0).contains("\"kills\":2"));
    assert!(c.map_json().starts_with("{\"width\":1000"));
    c.on_closed("network gone");
    assert!(c.status().ended());
    let again = c.hello("tok").expect("hello");
    let decoded = codec::decode_hello(&again[4..]).expect("a hello");
    assert_eq!(decoded.resume, Some(ResumeToken([9; 16])));
}

#[test]
fn refusals_and_disconnects_say_why_and_whether_waiting_helps() {
    let mut c = Screen::new("ana");
    c.hello("tok").expect("hello");
    c.on_stream(
        &frame_of(&ServerMsg::Reject(Reject {
            reason: RejectReason::ServerFull,
            message: "full".into(),
            retry_after_ms: 1500,
        })),
        0.0,
    );
    assert!(matches!(
        c.status(),
        Status::Rejected {
            retry_after_ms: 1500,
            permanent: false,
            ..
        }
    ));
    let stats = c.stats_json(0.0);
    assert!(stats.contains("\"state\":\"rejected\""), "{stats}");
    assert!(stats.contains("\"retry_after_ms\":1500"), "{stats}");

    c.hello("tok").expect("hello");
    c.on_stream(
        &frame_of(&ServerMsg::Reject(Reject {
            reason: RejectReason::ProtocolVersion { server: 99 },
            message: "old".into(),
            retry_after_ms: 0,
        })),
        0.0,
    );
    assert!(matches!(
        c.status(),
        Status::Rejected {
            permanent: true,
            ..
        }
    ));

    let map = Map::open(100.0, 100.0);
    c.hello("tok").expect("hello");
    c.on_stream(&frame_of(&ServerMsg::Welcome(welcome(&map))), 0.0);
    c.on_stream(
        &frame_of(&ServerMsg::Disconnect(arena_shared::protocol::Disconnect {
            reason: DisconnectReason::ServerShutdown,
            message: "bye".into(),
            reconnect_after_ms: 700,
            moved_to: None,
        })),
        0.0,
    );
    assert!(matches!(
        c.status(),
        Status::Disconnected {
            reconnect_after_ms: 700,
            ..
        }
    ));
    // A close after the server said why keeps the reason.
    c.on_closed("closed");
    assert!(matches!(c.status(), Status::Disconnected { .. }));
    assert!(
        !c.stats_json(0.0).contains("moved_to"),
        "no move, no destination"
    );
}

#[test]
fn a_move_puts_the_destination_in_the_stats_and_the_next_hello_resumes() {
    let mut c = Screen::new("mover");
    let map = Map::open(100.0, 100.0);
    c.hello("tok").expect("hello");
    c.on_stream(&frame_of(&ServerMsg::Welcome(welcome(&map))), 0.0);
    c.on_stream(
        &frame_of(&ServerMsg::Disconnect(arena_shared::protocol::Disconnect {
            reason: DisconnectReason::Moved,
            message: "moving".into(),
            reconnect_after_ms: 640,
            moved_to: Some(arena_shared::protocol::MovedTo {
                url: "https://b:4433/".into(),
                cert_sha256: vec!["aGFzaA==".into(), "bmV4dA==".into()],
                http: "http://b:8080".into(),
            }),
        })),
        0.0,
    );
    let stats = c.stats_json(0.0);
    assert!(stats.contains("\"state\":\"disconnected\""), "{stats}");
    assert!(stats.contains("\"retry_after_ms\":640"), "{stats}");
    assert!(
        stats.contains(
            "\"moved_to\":{\"url\":\"https://b:4433/\",\"cert_sha256s\":[\"aGFzaA==\",\"bmV4dA==\"],\"http\":\"http://b:8080\"}"
        ),
        "{stats}"
    );
    // The page connects there with no connect token: the Hello carries the resume token.
    let hello = c.hello("").expect("hello");
    let mut reader = arena_shared::protocol::codec::FrameReader::new();
    reader.push(&hello);
    let body = reader.next_frame().unwrap().expect("a frame");
    let hello = arena_shared::protocol::codec::decode_hello(&body).unwrap();
    assert_eq!(hello.token, "");
    assert!(hello.resume.is_some());
}

#[test]
fn bytes_that_do_not_decode_end_the_session_with_a_message_never_a_panic() {
    let mut c = Screen::new("ana");
    c.hello("tok").expect("hello");
    c.on_stream(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3], 0.0);
    assert!(
        matches!(c.status(), Status::Closed { .. }),
        "{:?}",
        c.status()
    );
    let mut c = Screen::new("ana");
    c.hello("tok").expect("hello");
    c.on_stream(&[3, 0, 0, 0, 0xde, 0xad, 0xbe], 0.0);
    assert!(
        matches!(c.status(), Status::Closed { .. }),
        "{:?}",
        c.status()
    );
    // Garbage datagrams are dropped like lost ones.
    let map = Map::open(100.0, 100.0);
    c.hello("tok").expect("hello");
    c.on_stream(&frame_of(&ServerMsg::Welcome(welcome(&map))), 0.0);
    for n in 0..64u8 {
        c.on_datagram(&vec![n; n as usize], 1.0);
    }
    assert_eq!(c.status(), &Status::Playing);
}

/// A server in memory: steps the player with the shared rules at 30 Hz from the inputs it
/// received, answers pings, and sends a full snapshot every tick, each way `latency_ms` late.
struct TinyServer {
    map: ObstacleGrid,
    tick: u32,
    body: Body,
    npc: Body,
    inputs: BTreeMap<u32, Input>,
    last: Input,
    late: u32,
    reader: FrameReader,
    /// (arrival time, bytes) to the client: stream bytes and datagrams.
    down_stream: VecDeque<(f64, Vec<u8>)>,
    down_datagrams: VecDeque<(f64, Vec<u8>)>,
    up_stream: VecDeque<(f64, Vec<u8>)>,
    latency_ms: f64,
    /// The entities each `WhoIs` asked about.
    whois: Vec<Vec<u32>>,
}

impl TinyServer {
    fn update(id: u32, kind: EntityKind, b: Body) -> Update {
        Update {
            id,
            kind,
            fields: [
                quant::quantize_pos(b.pos.x),
                quant::quantize_pos(b.pos.y),
                quant::quantize_vel(b.vel.x),
                quant::quantize_vel(b.vel.y),
            ],
        }
    }

    /// Runs tick `self.tick + 1` at `now_ms`.
    fn step(&mut self, now_ms: f64) {
        self.tick += 1;
        let tick = self.tick;
        while self
            .inputs
            .first_key_value()
            .is_some_and(|(&t, _)| t < tick)
        {
            self.inputs.pop_first();
        }
        match self.inputs.remove(&tick) {
            Some(i) => self.last = i,
            None if self.last.seq != 0 => self.late += 1,
            None => {}
        }
        let dt = 1.0 / f32::from(RATE);
        self.body = sim::tick_body(self.body, self.last.movement, &self.map, &sim::PLAYER, dt);
        self.npc = sim::tick_body(
            self.npc,
            MoveDir::from_vec2(Vec2::new(0.0, 1.0)),
            &self.map,
            &sim::NPC,
            dt,
        );
        let mut updates = vec![
            Self::update(NPC, EntityKind::Npc, self.npc),
            Self::update(ME, EntityKind::Player, self.body),
            Self::update(
                OTHER,
                EntityKind::Player,
                Body {
                    pos: Vec2::new(600.0, 900.0),
                    vel: Vec2::ZERO,
                },
            ),
        ];
        updates.sort_by_key(|u| u.id);
        let (snap, _) = snapshot::encode(tick, RATE, None, [0, 0], &[], &updates);
        let status = InputStatus {
            last_seq: self.last.seq,
            late: self.late,
            lead: 2,
            pong: None,
        };
        let bytes = codec::encode_datagram(&ServerDatagram::Delta(status, snap));
        self.down_datagrams
            .push_back((now_ms + self.latency_ms, bytes));
    }

    fn receive(&mut self, now_ms: f64) {
        while self.up_stream.front().is_some_and(|(t, _)| *t <= now_ms) {
            let (_, bytes) = self.up_stream.pop_front().expect("front");
            self.reader.push(&bytes);
            while let Some(body) = self.reader.next_frame().expect("frames") {
                match codec::decode_client(&body).expect("a client message") {
                    ClientMsg::Input(i) => {
                        self.inputs.entry(i.tick).or_insert(i);
                    }
                    // Answered on the stream, as a server whose snapshots carry no status
                    // answers a snapshot ping.
                    ClientMsg::Ping(p) | ClientMsg::SnapshotPing(p) => {
                        self.down_stream.push_back((
                            now_ms + self.latency_ms,
                            frame_of(&ServerMsg::Pong(Pong {
                                nonce: p.nonce,
                                server_tick: self.tick,
                            })),
                        ))
                    }
                    ClientMsg::WhoIs(who) => {
                        let names = who
                            .entities
                            .iter()
                            .filter_map(|&entity| {
                                let name = match entity {
                                    ME => "ana",
                                    OTHER => "zed",
                                    _ => return None,
                                };
                                Some(PlayerName {
                                    entity,
                                    name: name.into(),
                                })
                            })
                            .collect();
                        self.whois.push(who.entities);
                        self.down_stream.push_back((
                            now_ms + self.latency_ms,
                            frame_of(&ServerMsg::Names(names)),
                        ));
                    }
                }
            }
        }
    }
}

fn stat(stats: &str, key: &str) -> f64 {
    let at = stats.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    let rest = &stats[at..];
    let end = rest.find([',', '}']).expect("end");
    rest[..end].parse().expect("a number")
}

#[test]
fn holding_right_moves_the_player_right_and_prediction_matches_the_server() {
    let map = Map::open(4000.0, 4000.0);
    let start = Body {
        pos: Vec2::new(500.0, 500.0),
        vel: Vec2::ZERO,
    };
    let mut server = TinyServer {
        map: ObstacleGrid::new(&map),
        tick: 0,
        body: start,
        npc: Body {
            pos: Vec2::new(800.0, 500.0),
            vel: Vec2::ZERO,
        },
        inputs: BTreeMap::new(),
        last: Input::default(),
        late: 0,
        reader: FrameReader::new(),
        down_stream: VecDeque::new(),
        down_datagrams: VecDeque::new(),
        up_stream: VecDeque::new(),
        latency_ms: 20.0,
        whois: Vec::new(),
    };
    let mut c = Screen::new("ana");
    c.hello("tok").expect("hello");
    c.on_stream(&frame_of(&ServerMsg::Welcome(welcome(&map))), 0.0);
    // 60 frames a second for 4 s: right for the first 2 s, then still.
    let frame_ms = 1000.0 / 60.0;
    let mut now = 0.0;
    let mut next_tick = TICK_MS;
    while now < 4000.0 {
        now += frame_ms;
        while next_tick <= now {
            server.receive(next_tick);
            server.step(next_tick);
            next_tick += TICK_MS;
        }
        while server.down_stream.front().is_some_and(|(t, _)| *t <= now) {
            let (_, b) = server.down_stream.pop_front().expect("front");
            c.on_stream(&b, now);
        }
        while server
            .down_datagrams
            .front()
            .is_some_and(|(t, _)| *t <= now)
        {
            let (_, b) = server.down_datagrams.pop_front().expect("front");
            c.on_datagram(&b, now);
        }
        let controls = Controls {
            move_x: if now < 2000.0 { 1.0 } else { 0.0 },
            aim_at: Some(Vec2::new(900.0, 500.0)),
            ..Default::default()
        };
        let out = c.frame(now, controls);
        if !out.stream.is_empty() {
            server
                .up_stream
                .push_back((now + server.latency_ms, out.stream));
        }
        assert!(c.render_json(now).starts_with("{\"me\":"));
    }
    assert_eq!(c.status(), &Status::Playing);
    let stats = c.stats_json(now);
    assert!(server.body.pos.x > start.pos.x + 300.0, "{:?}", server.body);
    assert_eq!(server.body.pos.y, start.pos.y, "straight right");
    // At rest, the prediction is the server's position to the bit; no input was late and
    // nothing needed correcting.
    assert_eq!(stat(&stats, "corrections"), 0.0, "{stats}");
    assert_eq!(stat(&stats, "late_inputs"), 0.0, "{stats}");
    let predicted = c.session.predictor().map(|p| p.body().pos);
    assert_eq!(predicted, Some(server.body.pos), "{stats}");
    let rate = stat(&stats, "snapshot_rate");
    assert!(rate >= 27.0, "{rate} snapshots a second: {stats}");
    assert!(stat(&stats, "ping_ms") >= 40.0 - 1.0, "{stats}");
    let render = c.render_json(now);
    assert!(
        render.contains(&format!("[{NPC},1,")),
        "the NPC is drawn: {render}"
    );
    // The other player is drawn under its name, asked for once: never the own entity, never
    // an NPC, never again once known.
    assert!(
        render.contains(&format!("[{OTHER},0,")) && render.contains("\"zed\"]"),
        "the other player is drawn named: {render}"
    );
    assert_eq!(server.whois, [vec![OTHER]]);
}

#[test]
fn hits_deaths_and_respawns_show_in_the_hud_and_the_kill_feed_under_names() {
    let map = Map::open(1000.0, 1000.0);
    let mut c = Screen::new("ana");
    c.hello("tok").expect("hello");
    c.on_stream(&frame_of(&ServerMsg::Welcome(welcome(&map))), 0.0);
    let at = |x: f32| Body {
        pos: Vec2::new(x, 500.0),
        vel: Vec2::ZERO,
    };
    let updates = [
        TinyServer::update(NPC, EntityKind::Npc, at(100.0)),
        TinyServer::update(ME, EntityKind::Player, at(300.0)),
        TinyServer::update(OTHER, EntityKind::Player, at(600.0)),
    ];
    let (snap, _) = snapshot::encode(1, RATE, None, [0, 0], &[], &updates);
    c.on_datagram(
        &codec::encode_datagram(&ServerDatagram::Delta(InputStatus::default(), snap)),
        10.0,
    );
    let mut bytes = frame_of(&ServerMsg::Names(vec![PlayerName {
        entity: OTHER,
        name: "zed".into(),
    }]));
    for e in [
        GameEvent::Hit {
            attacker: ME,
            target: OTHER,
            damage: 10,
            health: 90,
        },
        GameEvent::Hit {
            attacker: NPC,
            target: ME,
            damage: 30,
            health: 70,
        },
        GameEvent::Killed {
            killer: OTHER,
            victim: ME,
        },
    ] {
        bytes.extend(frame_of(&ServerMsg::Event(e)));
    }
    c.on_stream(&bytes, 20.0);
    let stats = c.stats_json(20.0);
    assert_eq!(stat(&stats, "health"), 70.0, "{stats}");
    assert!(stats.contains("\"dead\":true"), "{stats}");
    let render = c.render_json(20.0);
    assert!(render.starts_with("{\"me\":null"), "dead: {render}");
    assert!(
        render.contains("\"f\":[\"you hit zed for 10\",\"zed killed you\"]"),
        "{render}"
    );
    c.on_stream(
        &frame_of(&ServerMsg::Event(GameEvent::Respawned {
            entity: ME,
            pos: Vec2::new(200.0, 200.0),
            health: 100,
        })),
        30.0,
    );
    let stats = c.stats_json(30.0);
    assert_eq!(stat(&stats, "health"), 100.0, "{stats}");
    assert!(stats.contains("\"dead\":false"), "{stats}");
    let render = c.render_json(30.0);
    assert!(render.starts_with("{\"me\":[200,200]"), "{render}");
    assert!(
        render.ends_with("\"zed killed you\",\"you respawned\"]}"),
        "{render}"
    );
    // The feed forgets its lines after a while.
    let later = c.render_json(30.0 + 6000.0);
    assert!(later.ends_with("\"f\":[]}"), "{later}");
}
