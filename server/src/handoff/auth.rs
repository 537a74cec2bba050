//! Who may ask this server to hand its world over: a request signed with the fleet's token
//! secret (the one connect tokens are signed with, `--token-secret-file`). Sans-IO: the
//! caller passes the request's parts and the time.
//!
//! The header (`Authorization`-style value): `t=<unix ms>,n=<16-byte nonce, hex>,s=<hex MAC>`,
//! the MAC an HMAC-SHA256 over the method, the path, `t`, `n` and the SHA-256 of the body, one
//! per line. A request is accepted when the MAC matches (compared in constant time), `t` is
//! within [`WINDOW_MS`] of now either way, and its nonce has not been seen in that window: a
//! recorded request cannot be sent again. The nonces seen are a bounded cache
//! ([`MAX_NONCES`]): only requests with a good MAC enter it, so a stranger cannot flush it.

use std::collections::{BTreeSet, HashSet};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far a request's time may be from this server's, either way.
pub const WINDOW_MS: u64 = 30_000;
/// Most nonces remembered; beyond it the oldest goes. A handoff takes one request or two,
/// so this only bounds what a misbehaving holder of the secret can make the server keep.
pub const MAX_NONCES: usize = 4_096;

type HmacSha256 = Hmac<Sha256>;

/// Why a request was refused (the answer is 403 either way; the reason is for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the request is {age_ms} ms old, more than {WINDOW_MS}")]
    Stale { age_ms: u64 },
    #[error("the request is dated {ahead_ms} ms ahead, more than {WINDOW_MS}")]
    Future { ahead_ms: u64 },
    #[error("the request's nonce was seen already")]
    Replayed,
}

fn mac(
    secret: &[u8],
    method: &str,
    path: &str,
    t: u64,
    nonce: &[u8; 16],
    body: &[u8],
) -> HmacSha256 {
    // An HMAC key may be any length: this cannot fail.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    let body_hash = Sha256::digest(body);
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        t.to_string().as_bytes(),
        hex(nonce).as_bytes(),
        hex(&body_hash).as_bytes(),
    ] {
        m.update(part);
        m.update(b"\n");
    }
    m
}

/// The header value that signs a request made at `now_ms` with a fresh random `nonce`.
pub fn sign(
    secret: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
    nonce: [u8; 16],
) -> String {
    let s = mac(secret, method, path, now_ms, &nonce, body)
        .finalize()
        .into_bytes();
    format!("t={now_ms},n={},s={}", hex(&nonce), hex(&s))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The parts of a header value, in their order.
fn parse(header: &str) -> Result<(u64, [u8; 16], [u8; 32]), AuthError> {
    let mut parts = header.split(',');
    let mut field = |name: &'static str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .ok_or(AuthError::Malformed("expected t=..,n=..,s=.."))
    };
    let (t, n, s) = (field("t=")?, field("n=")?, field("s=")?);
    if parts.next().is_some() {
        return Err(AuthError::Malformed("more than three fields"));
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("t is not a decimal time"));
    }
    let t = t
        .parse()
        .map_err(|_| AuthError::Malformed("t is out of range"))?;
    let n = unhex(n).ok_or(AuthError::Malformed("n is not 16 bytes of hex"))?;
    let s = unhex(s).ok_or(AuthError::Malformed("s is not 32 bytes of hex"))?;
    Ok((t, n, s))
}

/// Checks signed requests against one secret, remembering the nonces it accepted.
#[derive(Debug)]
pub struct Verifier {
    secret: Vec<u8>,
    max_nonces: usize,
    /// `(t, nonce)` of each accepted request in the window, oldest first.
    by_time: BTreeSet<(u64, [u8; 16])>,
    seen: HashSet<[u8; 16]>,
}

impl Verifier {
    pub fn new(secret: &[u8]) -> Self {
        Self::with_bound(secret, MAX_NONCES)
    }

    /// A verifier remembering at most `max_nonces` (at least one).
    pub fn with_bound(secret: &[u8], max_nonces: usize) -> Self {
        Self {
            secret: secret.to_vec(),
            max_nonces: max_nonces.max(1),
            by_time: BTreeSet::new(),
            seen: HashSet::new(),
        }
    }

    /// Whether the request is signed with the secret, fresh and new; an accepted nonce is
    /// remembered so the same request is refused the second time.
    pub fn verify(
        &mut self,
        header: &str,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), AuthError> {
        let (t, nonce, s) = parse(header)?;
        mac(&self.secret, method, path, t, &nonce, body)
            .verify_slice(&s)
            .map_err(|_| AuthError::BadSignature)?;
        if t + WINDOW_MS < now_ms {
            return Err(AuthError::Stale { age_ms: now_ms - t });
        }
        if t > now_ms + WINDOW_MS {
            return Err(AuthError::Future {
                ahead_ms: t - now_ms,
            });
        }
        // A nonce older than the window cannot come back: its request would be stale.
        while let Some(&(old_t, old_n)) = self.by_time.first() {
            if old_t + WINDOW_MS >= now_ms {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&old_n);
        }
        if self.seen.contains(&nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= self.max_nonces
            && let Some((_, oldest)) = self.by_time.pop_first()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(nonce);
        self.by_time.insert((t, nonce));
        Ok(())
    }

    /// Nonces remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-fleet";
    const NOW: u64 = 1_800_000_000_000;
    const PATH: &str = "/api/handoff";

    fn signed(nonce: u8, t: u64) -> String {
        sign(SECRET, "POST", PATH, b"body", t, [nonce; 16])
    }

    #[test]
    fn a_request_signed_with_the_secret_now_is_accepted_once() {
        let mut v = Verifier::new(SECRET);
        let h = signed(1, NOW);
        assert_eq!(v.verify(&h, "POST", PATH, b"body", NOW), Ok(()));
        assert_eq!(
            v.verify(&h, "POST", PATH, b"body", NOW + 1),
            Err(AuthError::Replayed)
        );
        assert_eq!(
            v.verify(&signed(2, NOW), "POST", PATH, b"body", NOW),
            Ok(())
        );
    }

    #[test]
    fn another_secret_or_any_changed_part_breaks_the_signature() {
        let mut v = Verifier::new(SECRET);
        let stranger = sign(
            b"someone else's secret",
            "POST",
            PATH,
            b"body",
            NOW,
            [1; 16],
        );
        assert_eq!(
            v.verify(&stranger, "POST", PATH, b"body", NOW),
            Err(AuthError::BadSignature)
        );
        let h = signed(1, NOW);
        for (method, path, body) in [
            ("POST", PATH, &b"bodz"[..]),
            ("POST", "/api/handoff/confirm", b"body"),
            ("GET", PATH, b"body"),
        ] {
            assert_eq!(
                v.verify(&h, method, path, body, NOW),
                Err(AuthError::BadSignature)
            );
        }
        // The time and nonce are signed too.
        let moved_t = h.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        let moved_n = h.replacen(&"01".repeat(16), &"02".repeat(16), 1);
        for forged in [moved_t, moved_n] {
            assert_eq!(
                v.verify(&forged, "POST", PATH, b"body", NOW),
                Err(AuthError::BadSignature)
            );
        }
        assert_eq!(v.remembered(), 0, "refused requests leave no nonce");
    }

    #[test]
    fn a_request_outside_the_window_is_refused_either_way() {
        let mut v = Verifier::new(SECRET);
        let at = |t| signed(3, t);
        assert_eq!(
            v.verify(&at(NOW - WINDOW_MS - 1), "POST", PATH, b"body", NOW),
            Err(AuthError::Stale {
                age_ms: WINDOW_MS + 1
            })
        );
        assert_eq!(
            v.verify(&at(NOW + WINDOW_MS + 1), "POST", PATH, b"body", NOW),
            Err(AuthError::Future {
                ahead_ms: WINDOW_MS + 1
            })
        );
        assert_eq!(
            v.verify(&signed(4, NOW - WINDOW_MS), "POST", PATH, b"body", NOW),
            Ok(())
        );
        assert_eq!(
            v.verify(&signed(5, NOW + WINDOW_MS), "POST", PATH, b"body", NOW),
            Ok(())
        );
    }

    #[test]
    fn every_malformed_header_is_refused_as_malformed() {
        let mut v = Verifier::new(SECRET);
        let good = signed(1, NOW);
        let s = good.rsplit_once("s=").unwrap().1.to_string();
        let n = "01".repeat(16);
        let cases = [
            String::new(),
            "garbage".into(),
            format!("t={NOW},n={n}"),
            format!("t={NOW},n={n},s={s},x=1"),
            format!("n={n},t={NOW},s={s}"),
            format!("t=,n={n},s={s}"),
            format!("t=-5,n={n},s={s}"),
            format!("t=+5,n={n},s={s}"),
            format!("t=99999999999999999999999,n={n},s={s}"),
            format!("t={NOW},n={},s={s}", &n[..30]),
            format!("t={NOW},n={n}00,s={s}"),
            format!("t={NOW},n={}zz,s={s}", &n[..30]),
            format!("t={NOW},n={n},s={}", &s[..62]),
            format!("t={NOW},n={n},s={}é", &s[..62]),
            format!("t={NOW},n={n},s={}", s.to_uppercase() + "0"),
            format!("T={NOW},n={n},s={s}"),
            format!(" t={NOW},n={n},s={s}"),
        ];
        for case in cases {
            assert!(
                matches!(
                    v.verify(&case, "POST", PATH, b"body", NOW),
                    Err(AuthError::Malformed(_))
                ),
                "{case:?}"
            );
        }
        assert_eq!(v.verify(&good, "POST", PATH, b"body", NOW), Ok(()));
    }

    #[test]
    fn the_nonce_cache_keeps_its_bound_and_forgets_what_the_window_left_behind() {
        let mut v = Verifier::with_bound(SECRET, 3);
        for (n, t) in [(1, NOW - 3), (2, NOW - 2), (3, NOW - 1), (4, NOW)] {
            assert_eq!(v.verify(&signed(n, t), "POST", PATH, b"body", NOW), Ok(()));
        }
        assert_eq!(v.remembered(), 3, "the oldest (nonce 1) went");
        assert_eq!(
            v.verify(&signed(4, NOW), "POST", PATH, b"body", NOW),
            Err(AuthError::Replayed)
        );
        assert_eq!(
            v.verify(&signed(2, NOW - 2), "POST", PATH, b"body", NOW),
            Err(AuthError::Replayed)
        );
        // Once the window has passed them, all are forgotten (and would be stale anyway).
        let later = NOW + WINDOW_MS + 1;
        assert_eq!(
            v.verify(&signed(9, later), "POST", PATH, b"body", later),
            Ok(())
        );
        assert_eq!(v.remembered(), 1);
    }
}
