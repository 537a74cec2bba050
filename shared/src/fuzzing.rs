//! What the fuzz targets run (`fuzz/`, cargo-fuzz on nightly), as plain functions, so the same
//! code also runs on stable: the tests below replay every input of the committed corpora
//! (`fuzz/corpus/<target>/`), and proptests feed them random bytes.
//!
//! Each function must return normally for any input: a panic is a bug (the server decodes
//! these bytes from anyone). Where a decode succeeds, it also checks what must then hold.

use crate::protocol::codec::{self, FrameReader};
use crate::protocol::{EntityKind, ServerDatagram};
use crate::replay::{self, End, Limits, MAGIC, Reader, Record};
use crate::snapshot::{self, Receiver, Update, View};
use crate::token::{self, Claims};

/// The reliable stream: bytes cut into frames at the first byte's choice of chunk size, every
/// frame decoded as each side would (a client's `Hello` and messages, the server's messages).
pub fn frames(data: &[u8]) {
    let chunk = usize::from(data.first().copied().unwrap_or(1).max(1));
    let mut reader = FrameReader::new();
    let mut first = true;
    for part in data.chunks(chunk) {
        reader.push(part);
        loop {
            match reader.next_frame() {
                Ok(Some(body)) => {
                    if first {
                        let _ = codec::decode_hello(&body);
                        first = false;
                    }
                    if let Ok(msg) = codec::decode_client(&body) {
                        // What decodes, re-encodes and decodes to the same message.
                        let mut again = FrameReader::new();
                        let mut bytes = Vec::new();
                        if codec::encode_client(&msg, &mut bytes).is_ok() {
                            again.push(&bytes);
                            let body = again.next_frame().ok().flatten().unwrap_or_default();
                            assert_eq!(codec::decode_client(&body).ok(), Some(msg));
                        }
                    }
                    let _ = codec::decode_server(&body);
                }
                Ok(None) => break,
                // An oversized header ends the stream, as the server ends the session.
                Err(_) => return,
            }
        }
    }
}

/// Snapshot datagrams, decoded and applied by a receiver that holds a baseline (tick 1, a few
/// entities), as a client would; whatever applies gives a view sorted by id with unique ids.
pub fn snapshots(data: &[u8]) {
    let _ = codec::decode_client_datagram(data);
    let Ok(ServerDatagram::Delta(_, snap)) = codec::decode_datagram(data) else {
        return;
    };
    let updates: Vec<Update> = (1..=8)
        .map(|id| Update {
            id,
            kind: EntityKind::Npc,
            fields: [id as i32 * 100, 50, 3, -3],
        })
        .collect();
    let (full, base) = snapshot::encode(1, 30, None, [0, 0], &[], &updates);
    let mut receiver = Receiver::new(30);
    if receiver.receive(&full).is_err() {
        unreachable!("a full snapshot of valid updates always applies");
    }
    let check = |v: &View| {
        assert!(v.entities.windows(2).all(|w| w[0].id < w[1].id));
    };
    if let Ok(v) = snapshot::apply(&snap, Some(&base), 30) {
        check(&v);
    }
    if let Ok(v) = receiver.receive(&snap) {
        check(v);
    }
}

/// Connect tokens: any text is verified without panicking; and text that is not a token
/// signed with this secret is never accepted. The bytes also make claims that must survive
/// signing and verifying unchanged.
pub fn tokens(data: &[u8]) {
    const SECRET: &[u8] = b"fuzzing secret";
    const SERVER: &str = "https://127.0.0.1:4433/";
    if let Ok(text) = std::str::from_utf8(data) {
        let verdict = token::verify(SECRET, text, 0, SERVER);
        if let Ok(claims) = verdict {
            // Only a real signature gets here: the token must be what signing gives.
            assert_eq!(token::sign(SECRET, &claims), text);
        }
    }
    let name: String = String::from_utf8_lossy(data.get(8..).unwrap_or_default())
        .chars()
        .take(32)
        .collect();
    let claims = Claims {
        client_id: u64::from_le_bytes(
            data.get(..8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default(),
        ),
        name,
        expires_at_ms: u64::MAX,
        server: SERVER.into(),
    };
    let signed = token::sign(SECRET, &claims);
    if signed.len() <= token::MAX_TOKEN_LEN {
        assert_eq!(token::verify(SECRET, &signed, 0, SERVER), Ok(claims));
    }
}

/// Replay files: any bytes read as a file (after the magic, when they lack it), with limits
/// small enough for the fuzzer to reach. Every record the reader hands out keeps the limits
/// and the tick rules, the walk of its encoding counts exactly what it holds, and it reads
/// back the same once re-encoded.
pub fn replay(data: &[u8]) {
    let limits = Limits {
        max_file_len: 1 << 20,
        max_record_len: 1 << 16,
        max_decoded_len: 1 << 18,
        max_string_len: 64,
        max_tick_step: 100,
        max_file_ticks: 1000,
    };
    let with_magic;
    let bytes = if data.starts_with(&MAGIC) {
        data
    } else {
        with_magic = [&MAGIC[..], data].concat();
        &with_magic
    };
    let mut reader = Reader::new(bytes, limits);
    let (mut first, mut last) = (None, None);
    loop {
        match reader.next_record() {
            Ok(Some((offset, record))) => {
                assert!(offset < bytes.len() as u64);
                assert_eq!(matches!(record, Record::Header(_)), first.is_none());
                let tick = record.tick();
                let base = *first.get_or_insert(tick);
                if let Some(last) = last {
                    assert!(tick >= last && tick - last <= limits.max_tick_step);
                }
                assert!(tick - base <= limits.max_file_ticks);
                last = Some(tick);
                let shape = replay::shape::of_record(&record);
                assert!(shape.decoded_len <= limits.max_decoded_len);
                assert!(shape.longest_string <= limits.max_string_len);
                let body = bitcode::encode(&record);
                assert_eq!(replay::shape::of(&body, usize::MAX), Ok(shape));
                assert!(replay::same_bits(
                    &bitcode::decode::<Record>(&body).expect("re-encoded record decodes"),
                    &record
                ));
            }
            Ok(None) => break,
            Err(end) => {
                // Whatever ended the reading says where (or is the wrong magic), and says it.
                let offset = match end {
                    End::Truncated { offset }
                    | End::Corrupt { offset, .. }
                    | End::LimitExceeded { offset, .. }
                    | End::Unreadable { offset, .. } => offset,
                    End::NotReplay | End::Clean => 0,
                };
                assert!(offset <= bytes.len() as u64);
                assert!(!end.to_string().is_empty());
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    /// Replays every committed corpus input of `target` through `run`; says how many.
    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("readable corpus entry").path();
            run(&std::fs::read(&path).expect("readable corpus file"));
            n += 1;
        }
        n
    }

    #[test]
    fn the_fuzz_corpora_replay_cleanly() {
        assert!(replay("frames", frames) > 0);
        assert!(replay("snapshots", snapshots) > 0);
        assert!(replay("tokens", tokens) > 0);
        assert!(replay("replay", super::replay) > 0);
    }

    proptest! {
        #[test]
        fn frames_twin(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            frames(&data);
        }

        #[test]
        fn snapshots_twin(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            snapshots(&data);
        }

        #[test]
        fn replay_twin(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::replay(&data);
        }

        #[test]
        fn tokens_twin(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            tokens(&data);
        }
    }
}
