//! Connect tokens: what the HTTP side hands a client and what `Hello` must carry.
//!
//! A token is `base64url(body || tag)` without padding, where `body` is the [`Claims`] in the
//! wire codec and `tag` is HMAC-SHA256(secret, `TOKEN_DOMAIN` || body), 32 bytes. The claims
//! bind a client id, a player name, an expiry and the server URL the token was issued for, so
//! a token for one server is useless on another. Verification is sans-IO: the caller passes
//! `now`. A login service that holds the same secret can issue tokens the server accepts;
//! PROTOCOL.md documents the format for it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bitcode::{Decode, Encode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation, so the secret can never be used to sign anything else by accident.
const TOKEN_DOMAIN: &[u8] = b"arena connect token v1\0";
const TAG_LEN: usize = 32;
/// Longest token text the server reads; longer input is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 512;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Claims {
    pub client_id: u64,
    pub name: String,
    /// Milliseconds since the Unix epoch after which the token is refused.
    pub expires_at_ms: u64,
    /// The WebTransport URL the token was issued for (the server's public URL).
    pub server: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not well formed")]
    Malformed,
    #[error("token signature does not match")]
    Forged,
    #[error("token has expired")]
    Expired,
    #[error("token was issued for another server")]
    WrongServer,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(TOKEN_DOMAIN);
    mac
}

/// Signs `claims` with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let mut bytes = bitcode::encode(claims);
    let mut m = mac(secret);
    m.update(&bytes);
    bytes.extend_from_slice(&m.finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token's identity for single use: SHA-256 of its text. The text is canonical (unpadded
/// base64url of the signed bytes, decoded strictly), so one token has one fingerprint.
pub fn fingerprint(token: &str) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(token.as_bytes()).into()
}

/// Checks a token's signature, then its expiry against `now_ms`, then the server it names.
/// Constant-time tag comparison; never panics on any input.
pub fn verify(secret: &[u8], token: &str, now_ms: u64, server: &str) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    if bytes.len() <= TAG_LEN {
        return Err(TokenError::Malformed);
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(tag).map_err(|_| TokenError::Forged)?;
    // Only signed bytes reach the decoder.
    let claims: Claims = bitcode::decode(body).map_err(|_| TokenError::Malformed)?;
    if now_ms >= claims.expires_at_ms {
        return Err(TokenError::Expired);
    }
    if claims.server != server {
        return Err(TokenError::WrongServer);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SERVER: &str = "https://127.0.0.1:4433/";

    fn claims() -> Claims {
        Claims {
            client_id: 7,
            name: "ana".into(),
            expires_at_ms: 10_000,
            server: SERVER.into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"secret", &t, 9_999, SERVER), Ok(claims()));
        assert_eq!(
            verify(b"secret", &t, 10_000, SERVER),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn another_secret_a_flipped_bit_or_another_server_is_refused() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"other", &t, 0, SERVER), Err(TokenError::Forged));
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[0] ^= 1;
        assert_eq!(
            verify(b"secret", &URL_SAFE_NO_PAD.encode(raw), 0, SERVER),
            Err(TokenError::Forged)
        );
        assert_eq!(
            verify(b"secret", &t, 0, "https://10.0.0.1:4433/"),
            Err(TokenError::WrongServer)
        );
        assert_eq!(verify(b"secret", "", 0, SERVER), Err(TokenError::Malformed));
        assert_eq!(
            verify(b"secret", &"A".repeat(MAX_TOKEN_LEN + 1), 0, SERVER),
            Err(TokenError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn any_text_is_refused_without_panicking(s in ".{0,200}") {
            prop_assert!(verify(b"secret", &s, 0, SERVER).is_err());
        }
    }
}

#[cfg(test)]
mod vector {
    /// PROTOCOL.md's test vector ("Connect token format"), for anyone minting tokens in
    /// another language: if this changes, the format changed.
    #[test]
    fn the_documented_test_vector_signs_and_verifies() {
        let claims = super::Claims {
            client_id: 7,
            name: "ada".into(),
            expires_at_ms: 1_767_225_600_000,
            server: "https://play.example.com:4433/".into(),
        };
        let token = super::sign(b"0123456789abcdef", &claims);
        assert_eq!(
            token,
            "BgcDYWRhAACo2nabAQAAHmh0dHBzOi8vcGxheS5leGFtcGxlLmNvbTo0NDMzLwGgtrDf59VNepX6sKQRc2AKoRSpgM2f1tBWtbMdZZOk"
        );
        assert_eq!(
            super::verify(b"0123456789abcdef", &token, 0, &claims.server),
            Ok(claims)
        );
    }
}
