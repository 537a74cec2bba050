//! What a welcomed session does with each thing its client sends: a state machine fed frames,
//! datagrams and the stream's end, with the time passed in, that answers what to do with it.
//! The session loop ([`super::session`]) only reads, asks, and acts.
//!
//! Rules:
//! - Every input spends `--max-inputs-per-sec` first, a refused one too: otherwise a client
//!   sending only inputs the server throws away would never meet the rate or the flood rule.
//!   An input over the rate is dropped and counted; more dropped in one one-second window
//!   than the rate itself (the client sends over twice what is allowed) is a flood, and ends
//!   the session (the input that makes it one is counted as dropped too).
//! - An input within the rate whose movement or buttons are out of range is dropped and
//!   counted; the others go to the simulation.
//! - A ping is answered best-effort: a burst of pings is never by itself a reason to end a
//!   session (the backlog rule, [`super::limits::judge_frame`], drops pongs instead).
//! - A `WhoIs` for more than [`MAX_WHOIS`] entities ends the session as malformed; one over
//!   `--max-whois-per-sec` is dropped and counted; the others are answered.
//! - A frame over the size limit, one that does not decode, a client datagram that does not
//!   decode, and a stream that ends (inside a frame or between frames) end the session.
//! - An acknowledgement of tick 0 or of a tick the server has not reached (beyond the next)
//!   is a lie or a bug: ignored and counted (it could only make this client's own snapshots
//!   full).

use arena_shared::protocol::codec::{self, FrameError};
use arena_shared::protocol::{
    ClientDatagram, ClientMsg, DisconnectReason, Input, InputFault, MAX_WHOIS,
};

use super::limits::TokenBucket;

/// Why the session ends, and a message for the client and the logs.
pub type Close = (DisconnectReason, String);

/// What to do with one frame from the reliable stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Give the input to the simulation.
    Forward(Input),
    /// Answer with a pong carrying `nonce`, best-effort.
    Pong { nonce: u32 },
    /// Answer `nonce` in the client's next snapshot (a pong on the stream where snapshots
    /// carry no status). Only the newest waits: a flood of them holds nothing.
    SnapshotPong { nonce: u32 },
    /// Answer with the names of these entities; the client must get them.
    Names(Vec<u32>),
    /// Leave the frame out and count it.
    Drop(Dropped),
    /// An input over the rate that makes the excess a flood: count it as
    /// [`Dropped::InputOverRate`], then end the session.
    Flood(Close),
    /// End the session.
    Close(Close),
}

/// Why a frame was left out: each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// An input over `--max-inputs-per-sec`.
    InputOverRate,
    /// An input with a movement axis out of range.
    MoveOutOfRange,
    /// An input with a button bit this protocol does not define.
    UnknownButtons,
    /// A `WhoIs` over `--max-whois-per-sec`.
    WhoIsOverRate,
}

/// What to do with one datagram from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Datagram {
    /// Record the acknowledgement of `tick`.
    Ack(u32),
    /// An acknowledgement that cannot be true: ignore it and count it.
    AckIgnored,
    Close(Close),
}

/// One session's rates, and the inputs over the rate in the current one-second window.
#[derive(Debug)]
pub struct FramePolicy {
    max_inputs_per_sec: f64,
    inputs: TokenBucket,
    excess: InputExcess,
    whois: TokenBucket,
}

/// Inputs dropped for exceeding the rate, counted per one-second window.
#[derive(Debug, Default)]
struct InputExcess {
    window_start: f64,
    dropped: f64,
}

impl FramePolicy {
    /// `--max-inputs-per-sec` and `--max-whois-per-sec`, each also the burst; 0 is unlimited.
    pub fn new(max_inputs_per_sec: f64, max_whois_per_sec: f64) -> Self {
        Self {
            max_inputs_per_sec,
            inputs: TokenBucket::new(max_inputs_per_sec, max_inputs_per_sec),
            excess: InputExcess::default(),
            whois: TokenBucket::new(max_whois_per_sec, max_whois_per_sec),
        }
    }

    /// Judges one whole frame `body`, read at `now_s` (seconds on the limiters' clock).
    pub fn frame(&mut self, body: &[u8], now_s: f64) -> Verdict {
        match codec::decode_client(body) {
            Ok(ClientMsg::Input(input)) => self.input(input, now_s),
            Ok(ClientMsg::Ping(ping)) => Verdict::Pong { nonce: ping.nonce },
            Ok(ClientMsg::SnapshotPing(ping)) => Verdict::SnapshotPong { nonce: ping.nonce },
            Ok(ClientMsg::WhoIs(who)) => {
                if who.entities.len() > MAX_WHOIS {
                    return Verdict::Close((
                        DisconnectReason::MalformedFrame,
                        format!(
                            "WhoIs for {} entities, at most {MAX_WHOIS}",
                            who.entities.len()
                        ),
                    ));
                }
                if self.whois.take(now_s).is_err() {
                    return Verdict::Drop(Dropped::WhoIsOverRate);
                }
                Verdict::Names(who.entities)
            }
            Err(e) => Verdict::Close((DisconnectReason::MalformedFrame, e.to_string())),
        }
    }

    fn input(&mut self, input: Input, now: f64) -> Verdict {
        if self.inputs.take(now).is_err() {
            if now - self.excess.window_start >= 1.0 {
                self.excess = InputExcess {
                    window_start: now,
                    dropped: 0.0,
                };
            }
            self.excess.dropped += 1.0;
            if self.excess.dropped > self.max_inputs_per_sec {
                return Verdict::Flood((
                    DisconnectReason::InputFlood,
                    format!("over {} inputs a second", 2.0 * self.max_inputs_per_sec),
                ));
            }
            return Verdict::Drop(Dropped::InputOverRate);
        }
        match input.fault() {
            Some(InputFault::MoveOutOfRange) => Verdict::Drop(Dropped::MoveOutOfRange),
            Some(InputFault::UnknownButtons) => Verdict::Drop(Dropped::UnknownButtons),
            None => Verdict::Forward(input),
        }
    }
}

/// A frame whose length prefix is over the limit: the stream cannot be read past it.
pub fn too_large(e: FrameError) -> Close {
    (DisconnectReason::FrameTooLarge, e.to_string())
}

/// The client finished its stream, with `pending` bytes of an unfinished frame left over.
pub fn stream_ended(pending: usize) -> Close {
    let message = if pending > 0 {
        "stream ended inside a frame"
    } else {
        "stream finished"
    };
    (DisconnectReason::StreamClosed, message.to_string())
}

/// Judges a datagram from the client, the server being at `server_tick`.
pub fn datagram(payload: &[u8], server_tick: u32) -> Datagram {
    match codec::decode_client_datagram(payload) {
        Ok(ClientDatagram::Ack(ack)) => {
            let tick = ack.newest;
            if tick == 0 || tick > server_tick.saturating_add(1) {
                Datagram::AckIgnored
            } else {
                Datagram::Ack(tick)
            }
        }
        Err(e) => Datagram::Close((DisconnectReason::MalformedDatagram, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use arena_shared::protocol::codec::{FRAME_HEADER_LEN, FrameError, encode_client};
    use arena_shared::protocol::{
        Buttons, ClientDatagram, ClientMsg, DisconnectReason, Input, MAX_WHOIS, Ping, WhoIs,
    };
    use arena_shared::quant::MoveDir;
    use arena_shared::snapshot::Ack;

    use super::{Datagram, Dropped, FramePolicy, Verdict, datagram, stream_ended, too_large};

    fn body(msg: &ClientMsg) -> Vec<u8> {
        let mut framed = Vec::new();
        encode_client(msg, &mut framed).unwrap();
        framed.split_off(FRAME_HEADER_LEN)
    }

    fn input(seq: u32) -> Input {
        Input {
            seq,
            ..Input::default()
        }
    }

    fn send(p: &mut FramePolicy, i: Input, now_s: f64) -> Verdict {
        p.frame(&body(&ClientMsg::Input(i)), now_s)
    }

    fn whois(p: &mut FramePolicy, n: usize, now_s: f64) -> Verdict {
        let entities = (0..n as u32).collect();
        p.frame(&body(&ClientMsg::WhoIs(WhoIs { entities })), now_s)
    }

    /// Sends `n` plain inputs at `now_s`; how many went to the simulation and how many were
    /// dropped over the rate, or the close that ended it.
    fn burst(p: &mut FramePolicy, n: u32, now_s: f64) -> Result<(u32, u32), String> {
        let (mut forwarded, mut dropped) = (0, 0);
        for seq in 0..n {
            match send(p, input(seq), now_s) {
                Verdict::Forward(i) => {
                    assert_eq!(i, input(seq));
                    forwarded += 1;
                }
                Verdict::Drop(Dropped::InputOverRate) => dropped += 1,
                Verdict::Flood((DisconnectReason::InputFlood, message)) => return Err(message),
                other => panic!("unexpected {other:?}"),
            }
        }
        Ok((forwarded, dropped))
    }

    #[test]
    fn inputs_within_the_rate_go_to_the_simulation_and_the_rest_are_dropped() {
        let mut p = FramePolicy::new(60.0, 4.0);
        assert_eq!(burst(&mut p, 61, 5.0), Ok((60, 1)));
        assert_eq!(
            burst(&mut p, 1, 5.5),
            Ok((1, 0)),
            "refilled half a second later"
        );
    }

    #[test]
    fn more_inputs_dropped_in_one_second_than_the_rate_is_a_flood() {
        let mut p = FramePolicy::new(10.0, 4.0);
        assert_eq!(
            burst(&mut p, 20, 1.0),
            Ok((10, 10)),
            "twice the rate: dropped"
        );
        assert_eq!(
            burst(&mut p, 1, 1.0),
            Err("over 20 inputs a second".to_string())
        );
    }

    #[test]
    fn the_flood_window_starts_again_a_second_after_the_first_input_dropped_in_it() {
        // 5 dropped at 10 s, 6 more half a second later: 11 in one window.
        let mut p = FramePolicy::new(10.0, 4.0);
        assert_eq!(burst(&mut p, 15, 10.0), Ok((10, 5)));
        assert!(burst(&mut p, 11, 10.5).is_err());
        // 5 dropped at 10 s, 6 more a second later: a new window.
        let mut p = FramePolicy::new(10.0, 4.0);
        assert_eq!(burst(&mut p, 15, 10.0), Ok((10, 5)));
        assert_eq!(burst(&mut p, 16, 11.0), Ok((10, 6)));
    }

    #[test]
    fn an_input_out_of_range_is_dropped_and_still_spends_the_rate() {
        let mut p = FramePolicy::new(2.0, 4.0);
        let wild = Input {
            movement: MoveDir { x: -128, y: 0 },
            ..input(1)
        };
        let unknown = Input {
            buttons: Buttons(0x80),
            ..input(2)
        };
        assert_eq!(
            send(&mut p, wild, 0.0),
            Verdict::Drop(Dropped::MoveOutOfRange)
        );
        assert_eq!(
            send(&mut p, unknown, 0.0),
            Verdict::Drop(Dropped::UnknownButtons)
        );
        assert_eq!(
            send(&mut p, input(3), 0.0),
            Verdict::Drop(Dropped::InputOverRate)
        );
    }

    #[test]
    fn every_ping_is_answered_whatever_the_rates() {
        let mut p = FramePolicy::new(1.0, 1.0);
        assert!(burst(&mut p, 2, 0.0).is_ok());
        for nonce in 0..1_000 {
            let v = p.frame(&body(&ClientMsg::Ping(Ping { nonce })), 0.0);
            assert_eq!(v, Verdict::Pong { nonce });
            let v = p.frame(&body(&ClientMsg::SnapshotPing(Ping { nonce })), 0.0);
            assert_eq!(v, Verdict::SnapshotPong { nonce });
        }
    }

    #[test]
    fn whois_is_answered_within_its_rate_and_size_and_a_larger_one_ends_the_session() {
        let mut p = FramePolicy::new(60.0, 2.0);
        let all: Vec<u32> = (0..MAX_WHOIS as u32).collect();
        assert_eq!(whois(&mut p, MAX_WHOIS, 0.0), Verdict::Names(all));
        assert_eq!(whois(&mut p, 1, 0.0), Verdict::Names(vec![0]));
        assert_eq!(whois(&mut p, 1, 0.0), Verdict::Drop(Dropped::WhoIsOverRate));
        assert_eq!(whois(&mut p, 1, 0.5), Verdict::Names(vec![0]));
        // The size is judged before the rate: the bucket is empty now.
        assert_eq!(
            whois(&mut p, MAX_WHOIS + 1, 0.5),
            Verdict::Close((
                DisconnectReason::MalformedFrame,
                format!("WhoIs for {} entities, at most {MAX_WHOIS}", MAX_WHOIS + 1)
            ))
        );
    }

    #[test]
    fn zero_rates_are_unlimited() {
        let mut p = FramePolicy::new(0.0, 0.0);
        assert_eq!(burst(&mut p, 1_000, 0.0), Ok((1_000, 0)));
        for _ in 0..1_000 {
            assert!(matches!(whois(&mut p, 1, 0.0), Verdict::Names(_)));
        }
    }

    #[test]
    fn a_frame_that_does_not_decode_or_is_too_large_and_a_stream_that_ends_end_the_session() {
        let mut p = FramePolicy::new(60.0, 4.0);
        let Verdict::Close((reason, _)) = p.frame(&[0xFF; 9], 0.0) else {
            panic!("garbage accepted");
        };
        assert_eq!(reason, DisconnectReason::MalformedFrame);
        let big = FrameError::TooLarge {
            len: 1 << 20,
            max: 1 << 16,
        };
        assert_eq!(
            too_large(big),
            (DisconnectReason::FrameTooLarge, big.to_string())
        );
        assert_eq!(
            stream_ended(0),
            (
                DisconnectReason::StreamClosed,
                "stream finished".to_string()
            )
        );
        assert_eq!(
            stream_ended(3),
            (
                DisconnectReason::StreamClosed,
                "stream ended inside a frame".to_string()
            )
        );
    }

    #[test]
    fn an_ack_counts_only_for_a_tick_the_server_has_reached_or_is_about_to() {
        let ack = |newest| {
            arena_shared::protocol::codec::encode_client_datagram(&ClientDatagram::Ack(Ack {
                newest,
                bits: 0,
            }))
        };
        assert_eq!(datagram(&ack(0), 100), Datagram::AckIgnored, "tick 0");
        assert_eq!(datagram(&ack(1), 100), Datagram::Ack(1));
        assert_eq!(
            datagram(&ack(101), 100),
            Datagram::Ack(101),
            "the next tick"
        );
        assert_eq!(datagram(&ack(102), 100), Datagram::AckIgnored, "the future");
        assert_eq!(datagram(&ack(u32::MAX), u32::MAX), Datagram::Ack(u32::MAX));
        let Datagram::Close((reason, _)) = datagram(&[0xFF; 3], 100) else {
            panic!("garbage accepted");
        };
        assert_eq!(reason, DisconnectReason::MalformedDatagram);
    }
}
