//! What a welcomed session does with each thing its client sends: a state machine fed frames,
//! datagrams and the stream's end, with the time passed in, that answers what to do with it.
//! The session loop ([`super::session`]) only reads, asks, and acts.
//!
//! Rules:
//! - Every input spends `--max-inputs-per-sec` first, a refused one too: otherwise a client
//!   sending only inputs the server throws away would never meet the rate or the flood rule.
//!   An input over the rate is dropped and counted; more dropped in one one-second window
//!   than the rate itself (the client sends over twice what is allowed) is a flood, and ends
//!   the session.
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
    /// Answer with the names of these entities; the client must get them.
    Names(Vec<u32>),
    /// Leave the frame out and count it.
    Drop(Dropped),
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
                return Verdict::Close((
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
