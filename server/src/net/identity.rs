//! The server's TLS identity: a real certificate from PEM files, or a self-signed one made at
//! start that browsers accept through `serverCertificateHashes`.
//!
//! Chromium's rules for a hash-pinned certificate: ECDSA P-256 (or P-384/Ed25519, never RSA),
//! validity of at most 14 days, `not_before` in the past. We issue 13 days starting an hour ago,
//! which keeps clear of the limit and of small clock skew.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use wtransport::Identity;
use wtransport::tls::self_signed::time::{Duration as TimeDuration, OffsetDateTime};

/// Validity of the self-signed certificate.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How far `not_before` is set in the past.
pub const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("loading certificate {cert} / key {key}: {source}")]
    Pem {
        cert: String,
        key: String,
        source: wtransport::tls::error::PemLoadError,
    },
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(#[from] wtransport::tls::error::InvalidSan),
}

/// The identity and, when self-signed, the base64 SHA-256 of its DER certificate (what
/// browsers pin). `None` for a real certificate, which clients verify the usual way.
pub struct ServerIdentity {
    pub identity: Identity,
    pub cert_sha256: Option<String>,
}

pub async fn load(cert: &Path, key: &Path) -> Result<ServerIdentity, IdentityError> {
    let identity =
        Identity::load_pemfiles(cert, key)
            .await
            .map_err(|source| IdentityError::Pem {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                source,
            })?;
    Ok(ServerIdentity {
        identity,
        cert_sha256: None,
    })
}

/// Makes an ECDSA P-256 certificate for loopback names plus `extra_names` (the public host).
pub fn self_signed(extra_names: &[String]) -> Result<ServerIdentity, IdentityError> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    names.extend(
        extra_names
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let not_before =
        OffsetDateTime::now_utc() - TimeDuration::seconds(SELF_SIGNED_BACKDATE.as_secs() as i64);
    let not_after = not_before + TimeDuration::seconds(SELF_SIGNED_VALIDITY.as_secs() as i64);
    let identity = Identity::self_signed_builder()
        .subject_alt_names(names)
        .validity_period(not_before, not_after)
        .build()?;
    let hash = STANDARD.encode(identity.certificate_chain().as_slice()[0].hash().as_ref());
    Ok(ServerIdentity {
        identity,
        cert_sha256: Some(hash),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_hash_is_a_base64_sha256_and_differs_per_certificate()
    -> Result<(), Box<dyn std::error::Error>> {
        let a = self_signed(&[])?;
        let b = self_signed(&["play.example.com".into()])?;
        let ha = STANDARD.decode(a.cert_sha256.ok_or("self-signed has a hash")?)?;
        assert_eq!(ha.len(), 32);
        assert_ne!(Some(STANDARD.encode(ha)), b.cert_sha256);
        Ok(())
    }
}
