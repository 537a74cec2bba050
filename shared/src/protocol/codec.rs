//! The one module that turns protocol messages into bytes and back.
//!
//! Codec: bitcode (derive mode), pinned to an exact version in the workspace manifest because
//! its format may change between versions; the golden tests below catch such a change. The
//! server's delta snapshots are written by [`delta_writer`], the same bytes without bitcode's
//! encoders.
//!
//! Reliable frames: `u32` little-endian body length, then the body. Bodies longer than
//! [`MAX_FRAME_LEN`] are refused from the header alone. Decoding is total: every byte string
//! yields a message, "need more bytes", or a typed error, never a panic.

use bitcode::{Decode, Encode};

use super::{
    ClientDatagram, ClientMsg, EntityState, HELLO_MAGIC, Hello, InputStatus, MAX_FRAME_LEN,
    MAX_NAME_LEN, PROTOCOL_VERSION, ResumeToken, ServerDatagram, ServerMsg, Snapshot,
};
use crate::snapshot::DeltaSnapshot;
use crate::token::MAX_TOKEN_LEN;

mod delta_writer;

thread_local! {
    /// bitcode's working memory for the messages of every tick (a client's inputs and
    /// acknowledgements, the server's snapshots as a client decodes them), kept from call to
    /// call on each thread: a one-shot call allocates and frees a buffer for every column of
    /// the message (`cargo bench --bench snapshot_codec`, `client_codec`). One a thread, not
    /// one a session: a bots' process runs hundreds of sessions on a thread, and a buffer of
    /// each session's own would be out of cache at each use. It holds what the largest message
    /// decoded or encoded on the thread needed: at most a frame's [`MAX_FRAME_LEN`] of columns.
    static BUFFER: std::cell::Cell<bitcode::Buffer> = std::cell::Cell::new(bitcode::Buffer::new());
}

/// `f` with the thread's [`BUFFER`], taken out of it for the call and put back after: a call
/// from within a call finds an empty one in its place, and a thread's teardown none, and each
/// then works with a fresh buffer. The same bytes and results either way.
fn with_buffer<R>(f: impl FnOnce(&mut bitcode::Buffer) -> R) -> R {
    let mut buffer = BUFFER.try_with(std::cell::Cell::take).unwrap_or_default();
    let result = f(&mut buffer);
    let _ = BUFFER.try_with(|kept| kept.set(buffer));
    result
}

/// Bytes of the length prefix in front of every reliable frame.
pub const FRAME_HEADER_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message body does not decode")]
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("first frame is not an Arena hello")]
    NotArena,
    #[error("client speaks protocol version {0}")]
    Version(u16),
    #[error("hello does not decode or its fields are out of range")]
    Malformed,
}

/// The part of `Hello` after the magic and the version.
#[derive(Encode, Decode)]
struct HelloBody {
    token: String,
    name: String,
    resume: Option<ResumeToken>,
}

fn push_frame(out: &mut Vec<u8>, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Appends the framed `Hello`: magic, version (u16 LE), then the codec's token and name.
pub fn encode_hello(hello: &Hello, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut body = Vec::with_capacity(64 + hello.token.len());
    body.extend_from_slice(&HELLO_MAGIC);
    body.extend_from_slice(&hello.protocol_version.to_le_bytes());
    body.extend_from_slice(&bitcode::encode(&HelloBody {
        token: hello.token.clone(),
        name: hello.name.clone(),
        resume: hello.resume,
    }));
    push_frame(out, &body)
}

/// Reads a `Hello` body. The version is checked before the rest is decoded, so a client of
/// any version learns why it was refused. Names must be 1..=32 bytes with no control chars.
pub fn decode_hello(body: &[u8]) -> Result<Hello, HelloError> {
    if body.len() < 6 || body[..4] != HELLO_MAGIC {
        return Err(HelloError::NotArena);
    }
    let protocol_version = u16::from_le_bytes([body[4], body[5]]);
    if protocol_version != PROTOCOL_VERSION {
        return Err(HelloError::Version(protocol_version));
    }
    let HelloBody {
        token,
        name,
        resume,
    } = bitcode::decode(&body[6..]).map_err(|_| HelloError::Malformed)?;
    let name_ok =
        !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control);
    if !name_ok || token.len() > MAX_TOKEN_LEN {
        return Err(HelloError::Malformed);
    }
    Ok(Hello {
        protocol_version,
        token,
        name,
        resume,
    })
}

/// Appends one framed client message.
pub fn encode_client(msg: &ClientMsg, out: &mut Vec<u8>) -> Result<(), FrameError> {
    with_buffer(|b| push_frame(out, b.encode(msg)))
}

pub fn decode_client(body: &[u8]) -> Result<ClientMsg, DecodeError> {
    with_buffer(|b| b.decode(body)).map_err(|_| DecodeError::Malformed)
}

/// Appends one framed server message.
pub fn encode_server(msg: &ServerMsg, out: &mut Vec<u8>) -> Result<(), FrameError> {
    push_frame(out, &bitcode::encode(msg))
}

pub fn decode_server(body: &[u8]) -> Result<ServerMsg, DecodeError> {
    bitcode::decode(body).map_err(|_| DecodeError::Malformed)
}

pub fn encode_client_datagram(msg: &ClientDatagram) -> Vec<u8> {
    with_buffer(|b| b.encode(msg).to_vec())
}

pub fn decode_client_datagram(bytes: &[u8]) -> Result<ClientDatagram, DecodeError> {
    with_buffer(|b| b.decode(bytes)).map_err(|_| DecodeError::Malformed)
}

/// A server datagram's bytes. A delta snapshot is written by [`delta_writer`], the same bytes
/// as bitcode's and cheaper; anything else by bitcode.
pub fn encode_datagram(msg: &ServerDatagram) -> Vec<u8> {
    match msg {
        ServerDatagram::Delta(input, snap) => {
            let mut out = Vec::new();
            let n = delta_writer::write_delta(input, snap, &mut out);
            out.truncate(n);
            out
        }
        ServerDatagram::Snapshot(_) => bitcode::encode(msg),
    }
}

/// [`encode_datagram`] keeping its working memory between calls: the server encodes one
/// snapshot per client per tick.
#[derive(Default)]
pub struct DatagramEncoder {
    /// Where a delta is written, copied out at its end (a snapshot is a few dozen to a
    /// datagram's bytes, and each is queued until sent: its own allocation is its size).
    out: Vec<u8>,
    bitcode: bitcode::Buffer,
}

impl std::fmt::Debug for DatagramEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatagramEncoder")
    }
}

impl DatagramEncoder {
    /// The same bytes as [`encode_datagram`].
    pub fn encode(&mut self, msg: &ServerDatagram) -> Vec<u8> {
        match msg {
            ServerDatagram::Delta(input, snap) => self.encode_delta(input, snap),
            ServerDatagram::Snapshot(_) => self.bitcode.encode(msg).to_vec(),
        }
    }

    /// The bytes of `ServerDatagram::Delta(*input, snap)`, without the datagram made.
    pub fn encode_delta(&mut self, input: &InputStatus, snap: &DeltaSnapshot) -> Vec<u8> {
        let n = delta_writer::write_delta(input, snap, &mut self.out);
        self.out[..n].to_vec()
    }
}

pub fn decode_datagram(bytes: &[u8]) -> Result<ServerDatagram, DecodeError> {
    with_buffer(|b| b.decode(bytes)).map_err(|_| DecodeError::Malformed)
}

/// Splits the state of `entities` at `tick` into datagrams of at most `max_size` bytes each.
///
/// Greedy: each part takes as many entities as fit. bitcode packs columns, so a part's size is
/// only known after encoding: a guess (the previous part's count) shrinks until it fits, sized
/// with the largest part numbers so that the final numbering can only be smaller. Returns no
/// part at all if not even one entity fits `max_size`, which no real QUIC path allows (their
/// minimum is over 1,100 bytes).
pub fn encode_snapshot_parts(tick: u32, entities: &[EntityState], max_size: usize) -> Vec<Vec<u8>> {
    let encode = |part: u16, parts: u16, chunk: &[EntityState]| {
        encode_datagram(&ServerDatagram::Snapshot(Snapshot {
            tick,
            part,
            parts,
            entities: chunk.to_vec(),
        }))
    };
    let mut counts = Vec::new();
    let mut rest = entities;
    let mut guess = (max_size / 16).max(1);
    loop {
        let mut n = guess.min(rest.len());
        while encode(u16::MAX, u16::MAX, &rest[..n]).len() > max_size {
            if n <= 1 {
                return Vec::new();
            }
            n = (n * 7 / 8).min(n - 1);
        }
        counts.push(n);
        rest = &rest[n..];
        guess = n.max(1);
        if rest.is_empty() {
            break;
        }
    }
    let parts = counts.len() as u16;
    let mut offset = 0;
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let bytes = encode(i as u16, parts, &entities[offset..offset + n]);
            offset += n;
            bytes
        })
        .collect()
}

/// Reassembles reliable frames from a byte stream, whatever the read boundaries.
///
/// Memory is bounded: it never holds more than one header plus [`MAX_FRAME_LEN`] of body
/// beyond what the caller has not yet taken, because an oversized header is an error at once.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body; `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buf.drain(..FRAME_HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Bytes held that do not yet form a whole frame (non-zero at end of stream = truncated).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests;
