//! One scenario, three drivers of the client session, the same bytes: the virtual-clock
//! harness plays a seeded impaired run against the real simulation and records what reached
//! its client and what the client did; the bots' player (`arena_client_sim::player`) and the
//! browser module's C ABI (`arena_web`, built natively) are then fed the same arrivals at the
//! same times with the same controls, and must send the same bytes (inputs, pings, acks,
//! `WhoIs` about the other player in the run) and have the own player at the same place, bit
//! for bit, after every frame.
//!
//! All three run the browser's settings (acks at the next frame, names asked for): the
//! browser's are fixed, and the bots' player takes a session set up by its caller
//! ([`Player::with_session`]) for this. The harness's run is closed-loop (the server answers
//! what the client sent); the other two are fed its recording open-loop, which is sound
//! exactly as long as they answer the same, and the first frame where one does not is
//! reported.

use std::sync::Arc;

use arena_client_sim::behaviour::Behaviour;
use arena_client_sim::live::LiveStats;
use arena_client_sim::outcome::BotOutcome;
use arena_client_sim::player::Player;
use arena_server::tick::virtual_play::{self, FrameControls, Path, Positions, Step, Transcript};
use arena_shared::client_session::{AckTiming, ClientSession, SessionConfig, Transmit};
use arena_shared::protocol::codec::{self, FrameReader};
use arena_shared::protocol::{ClientMsg, ServerMsg};

const NAME: &str = "three";
const SEED: u64 = 19;
/// Frames every 16 ms, about as the page's animation frames and the bots' timer run.
const FRAME_MS: u32 = 16;

/// The browser module's settings, which it fixes.
fn browser_settings() -> SessionConfig {
    SessionConfig {
        name: NAME.into(),
        ack: AckTiming::NextFrame,
        ask_names: true,
    }
}

/// The client's frames in `stream` (whole frames: a frame's bytes leave together).
fn client_msgs(stream: &[u8]) -> Vec<ClientMsg> {
    let mut reader = FrameReader::new();
    reader.push(stream);
    let mut msgs = Vec::new();
    while let Some(body) = reader.next_frame().unwrap() {
        msgs.push(codec::decode_client(&body).unwrap());
    }
    msgs
}

/// The server's frames in `stream`.
fn server_msgs(stream: &[u8]) -> Vec<ServerMsg> {
    let mut reader = FrameReader::new();
    reader.push(stream);
    let mut msgs = Vec::new();
    while let Some(body) = reader.next_frame().unwrap() {
        msgs.push(codec::decode_server(&body).unwrap());
    }
    msgs
}

/// A client of the session, fed bytes and times.
trait Driver {
    /// Starts the session: the `Hello` frame.
    fn hello(&mut self) -> Vec<u8>;
    fn stream(&mut self, at_ms: f64, bytes: &[u8]);
    fn datagram(&mut self, at_ms: f64, bytes: &[u8]);
    /// A frame: what it sent, and where it had itself (`predicted` when the driver shows it).
    fn frame(&mut self, at_ms: f64, controls: FrameControls) -> (Transmit, Positions);
}

/// The bots' sans-IO player.
struct Bot {
    player: Player,
    out: BotOutcome,
    buf: Transmit,
}

impl Bot {
    fn new() -> Self {
        let session = ClientSession::new(browser_settings());
        Self {
            player: Player::with_session(
                session,
                Behaviour::Wander,
                SEED,
                Arc::new(LiveStats::default()),
            ),
            out: BotOutcome::new(NAME.into(), 0, Behaviour::Wander),
            buf: Transmit::default(),
        }
    }

    /// Bytes between frames: none with acks at the next frame.
    fn nothing_sent(&mut self, after: &str) {
        self.player.transmit(&mut self.buf);
        assert!(
            self.buf.is_empty(),
            "the bot sent {:?} after {after}",
            self.buf
        );
    }
}

impl Driver for Bot {
    fn hello(&mut self) -> Vec<u8> {
        self.player.connect("");
        self.player.transmit(&mut self.buf);
        self.buf.stream.clone()
    }

    fn stream(&mut self, at_ms: f64, bytes: &[u8]) {
        self.player.on_stream(bytes, at_ms, &mut self.out).unwrap();
        self.nothing_sent("stream bytes");
    }

    fn datagram(&mut self, at_ms: f64, bytes: &[u8]) {
        self.player
            .on_datagram(bytes, at_ms, &mut self.out)
            .unwrap();
        self.nothing_sent("a datagram");
    }

    fn frame(&mut self, at_ms: f64, controls: FrameControls) -> (Transmit, Positions) {
        self.player
            .frame_with(at_ms, &mut self.out, |_, _| controls.session())
            .unwrap();
        self.player.transmit(&mut self.buf);
        let sent = Transmit {
            stream: self.buf.stream.clone(),
            datagrams: self.buf.datagrams.clone(),
        };
        (sent, Positions::of(self.player.session()))
    }
}

/// The browser module through its C ABI, as the page calls it.
struct Browser;

impl Browser {
    fn new() -> Self {
        let name = Self::input(NAME.as_bytes());
        arena_web::arena_new(name);
        Self
    }

    /// Copies `bytes` into the module's input buffer; their length.
    fn input(bytes: &[u8]) -> u32 {
        let len = u32::try_from(bytes.len()).unwrap();
        let at = arena_web::arena_input(len);
        // SAFETY: arena_input returned a buffer of `len` bytes, valid until the next call.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len()) };
        len
    }

    /// What the last call produced.
    fn output() -> Vec<u8> {
        let (at, len) = (arena_web::arena_output_ptr(), arena_web::arena_output_len());
        if len == 0 {
            return Vec::new();
        }
        // SAFETY: the module's output buffer holds `len` bytes until the next call.
        unsafe { std::slice::from_raw_parts(at, len as usize) }.to_vec()
    }

    /// `kind: u8 | len: u32 LE | bytes`, kind 0 for the stream and 1 for a datagram.
    fn outgoing(mut bytes: &[u8]) -> Transmit {
        let mut sent = Transmit::default();
        while let [kind, a, b, c, d, rest @ ..] = bytes {
            let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            let (item, after) = rest.split_at(len);
            match kind {
                0 => sent.stream.extend_from_slice(item),
                1 => sent.datagrams.push(item.to_vec()),
                other => panic!("unknown kind {other}"),
            }
            bytes = after;
        }
        assert!(bytes.is_empty(), "a torn item");
        sent
    }

    /// The own player where the render JSON draws it (`"me":[x,y]` or `"me":null`), as bits.
    /// The JSON writes each `f32` as the shortest decimal that reads back to the same value,
    /// so parsing it as an `f32` loses nothing.
    fn drawn(json: &str) -> Option<[u32; 2]> {
        let me = json
            .strip_prefix("{\"me\":")
            .unwrap_or_else(|| panic!("render JSON without me first: {json}"));
        if me.starts_with("null") {
            return None;
        }
        let inner = &me[1..me.find(']').unwrap()];
        let (x, y) = inner.split_once(',').unwrap();
        Some([
            x.parse::<f32>().unwrap().to_bits(),
            y.parse::<f32>().unwrap().to_bits(),
        ])
    }
}

impl Driver for Browser {
    fn hello(&mut self) -> Vec<u8> {
        arena_web::arena_hello(Self::input(b""));
        Self::output()
    }

    fn stream(&mut self, at_ms: f64, bytes: &[u8]) {
        arena_web::arena_on_stream(Self::input(bytes), at_ms);
    }

    fn datagram(&mut self, at_ms: f64, bytes: &[u8]) {
        arena_web::arena_on_datagram(Self::input(bytes), at_ms);
    }

    fn frame(&mut self, at_ms: f64, c: FrameControls) -> (Transmit, Positions) {
        // Bit 0 fire, bit 1 alternate fire; no aim point (bit 2), so it aims along +x.
        let buttons = u32::from(c.fire) | u32::from(c.alt_fire) << 1;
        arena_web::arena_frame(at_ms, c.movement.x, c.movement.y, 0.0, 0.0, buttons);
        let sent = Self::outgoing(&Self::output());
        arena_web::arena_render(at_ms);
        let json = String::from_utf8(Self::output()).unwrap();
        let me = Positions {
            // The C ABI shows only where the player is drawn.
            predicted: None,
            drawn: Self::drawn(&json),
        };
        (sent, me)
    }
}

/// Feeds `driver` the transcript; `Err` names the first frame where it answered otherwise.
/// Returns the frames compared.
fn replay(driver: &mut dyn Driver, t: &Transcript, predicted: bool) -> Result<usize, String> {
    let hello = driver.hello();
    if hello != t.hello {
        return Err(format!("Hello {hello:?}, harness {:?}", t.hello));
    }
    let mut frames = 0;
    for (i, step) in t.steps.iter().enumerate() {
        match step {
            Step::Stream { at_ms, bytes } => driver.stream(*at_ms, bytes),
            Step::Datagram { at_ms, bytes } => driver.datagram(*at_ms, bytes),
            Step::Frame {
                at_ms,
                controls,
                sent,
                me,
            } => {
                let (got, got_me) = driver.frame(*at_ms, *controls);
                if got != *sent {
                    return Err(format!(
                        "step {i}, frame at {at_ms} ms: sent {got:?}, harness {sent:?}"
                    ));
                }
                let same_place =
                    got_me.drawn == me.drawn && (!predicted || got_me.predicted == me.predicted);
                if !same_place {
                    return Err(format!(
                        "step {i}, frame at {at_ms} ms: itself at {got_me:?}, harness {me:?}"
                    ));
                }
                frames += 1;
            }
        }
    }
    Ok(frames)
}

#[test]
fn the_bots_player_and_the_browsers_c_abi_answer_a_recorded_impaired_run_byte_for_byte() {
    let path = Path {
        latency_ms: 40.0,
        jitter_ms: 30.0,
        loss: 0.05,
    };
    let (transcript, outcome) =
        virtual_play::record(path, 20.0, SEED, browser_settings(), FRAME_MS);

    // The run is worth comparing: the client played, predicted and reconciled through the
    // loss, and every kind of byte went both ways.
    let frames: Vec<(&Transmit, &Positions)> = transcript
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Frame { sent, me, .. } => Some((sent, me)),
            _ => None,
        })
        .collect();
    let datagrams_in = transcript
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Datagram { .. }))
        .count();
    let acks = frames.iter().map(|(s, _)| s.datagrams.len()).sum::<usize>();
    let predicted = frames
        .iter()
        .filter(|(_, me)| me.predicted.is_some())
        .count();
    assert!(outcome.inputs > 500, "{} inputs", outcome.inputs);
    assert!(
        outcome.reconciled > 400,
        "{} reconciled",
        outcome.reconciled
    );
    assert!(
        (400..590).contains(&datagrams_in),
        "{datagrams_in} snapshots reached the client of 600 ticks: some lost on the way"
    );
    assert!(acks > 300, "{acks} acks");
    // The other player was asked about and named, so the names path is in the comparison.
    let whois = frames
        .iter()
        .flat_map(|(s, _)| client_msgs(&s.stream))
        .filter(|m| matches!(m, ClientMsg::WhoIs(_)))
        .count();
    let named = transcript
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Stream { bytes, .. } => Some(server_msgs(bytes)),
            _ => None,
        })
        .flatten()
        .any(|m| matches!(&m, ServerMsg::Names(n) if n.iter().any(|p| p.name == "other")));
    assert!(
        whois >= 1 && named,
        "{whois} WhoIs sent, other named: {named}"
    );
    assert!(
        predicted > frames.len() / 2,
        "{predicted} of {} frames predicted",
        frames.len()
    );

    let bot_frames = replay(&mut Bot::new(), &transcript, true).unwrap();
    let browser_frames = replay(&mut Browser::new(), &transcript, false).unwrap();
    assert_eq!((bot_frames, browser_frames), (frames.len(), frames.len()));
}
