//! The server's TLS identity: a real certificate from PEM files, or a self-signed one that
//! browsers accept through `serverCertificateHashes`, replaced before it expires.
//!
//! Chromium's rules for a hash-pinned certificate: ECDSA P-256 (or P-384/Ed25519, never RSA),
//! validity of at most 14 days, `not_before` in the past. We issue `--cert-validity` (13 days by
//! default) starting a little in the past ([`backdate`]: an hour at that length), which keeps
//! clear of the limit and of small clock skew.
//!
//! Rotation (self-signed only; a real certificate is the operator's to renew): [`Rotation`]
//! decides, sans-IO, when the next certificate is made and announced and when it is installed
//! on the live endpoint; [`crate::net::rotate_identity`] does it. [`CertHashes`] is what
//! `/api/connect` hands out meanwhile.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use wtransport::Identity;
use wtransport::tls::self_signed::time::OffsetDateTime;

pub use crate::config::{MAX_SELF_SIGNED_VALIDITY, MIN_SELF_SIGNED_VALIDITY, check_validity};
/// The most `not_before` is set in the past (a quarter of the validity when that is shorter).
pub const MAX_BACKDATE: Duration = Duration::from_secs(3600);

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
    #[error("certificate rotation: {0}")]
    Rotation(String),
}

/// A self-signed identity with the base64 SHA-256 of its DER certificate (what browsers pin)
/// and its expiry.
pub struct SelfSigned {
    pub identity: Identity,
    pub cert_sha256: String,
    pub not_after: SystemTime,
}

/// A real certificate, which clients verify the usual way and which is never rotated.
pub async fn load(cert: &Path, key: &Path) -> Result<Identity, IdentityError> {
    Identity::load_pemfiles(cert, key)
        .await
        .map_err(|source| IdentityError::Pem {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            source,
        })
}

/// How far `not_before` is set in the past for a certificate of `validity`: a quarter of it,
/// between a second and [`MAX_BACKDATE`].
pub fn backdate(validity: Duration) -> Duration {
    Duration::from_secs((validity.as_secs() / 4).clamp(1, MAX_BACKDATE.as_secs()))
}

/// `not_before` and `not_after` of a certificate of `validity` made at `now`, in whole seconds
/// (what X.509 stores): `not_before` is `now` less [`backdate`], rounded down, and `not_after`
/// is `not_before + validity` (whole seconds of it), so the certificate's validity, as Chromium
/// measures it, is exactly `validity`.
pub fn validity_window(now: SystemTime, validity: Duration) -> (SystemTime, SystemTime) {
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let not_before = now_s.saturating_sub(backdate(validity).as_secs());
    let not_after = not_before.saturating_add(validity.as_secs());
    (
        UNIX_EPOCH + Duration::from_secs(not_before),
        UNIX_EPOCH + Duration::from_secs(not_after),
    )
}

/// Makes an ECDSA P-256 certificate of `validity` for loopback names plus `extra_names` (the
/// public host), valid from a little before now ([`validity_window`]).
pub fn self_signed(
    extra_names: &[String],
    validity: Duration,
) -> Result<SelfSigned, IdentityError> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    names.extend(
        extra_names
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let (not_before, not_after) = validity_window(SystemTime::now(), validity);
    let identity = Identity::self_signed_builder()
        .subject_alt_names(names)
        .validity_period(
            OffsetDateTime::from(not_before),
            OffsetDateTime::from(not_after),
        )
        .build()?;
    let cert_sha256 = STANDARD.encode(identity.certificate_chain().as_slice()[0].hash().as_ref());
    Ok(SelfSigned {
        identity,
        cert_sha256,
        not_after,
    })
}

/// The certificate hashes `/api/connect` hands out (base64 SHA-256 of the DER), shared between
/// the rotation task (the only writer) and the HTTP side through a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertHashes {
    /// The certificate new handshakes get now; `None` with a real certificate.
    pub current: Option<String>,
    /// The next one, from when it is made until it is installed (at most
    /// [`Rotation::announce_ahead`]): a client that pins both connects whichever of the two
    /// the server presents when its handshake arrives.
    pub next: Option<String>,
}

impl CertHashes {
    /// Every hash a client should accept, the current one first.
    pub fn pinnable(&self) -> Vec<String> {
        self.current.iter().chain(&self.next).cloned().collect()
    }
}

/// When to replace the self-signed certificate. Sans-IO: times are parameters.
///
/// A certificate expiring at `not_after` is replaced at `not_after - rotate_before` (the
/// install); its successor is made, and its hash handed out next to the current one,
/// `announce_ahead` before that. A client that fetched `/api/connect` just before the install
/// therefore already holds the new hash; one that fetched it earlier than `announce_ahead`
/// before has a token that expired anyway when `announce_ahead` is `--token-ttl`.
///
/// The previous hash is not handed out after an install: the server never presents that
/// certificate to a new handshake again (connections made on it keep it, TLS does not
/// re-check it), so it could only make a client pin a certificate it will not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub validity: Duration,
    pub rotate_before: Duration,
    /// `min(token_ttl, a quarter of the time a certificate is in service)`, so that a rotation
    /// can never be due again the moment it happens.
    pub announce_ahead: Duration,
}

/// What the rotation task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing until this much time has passed (then ask again).
    Wait(Duration),
    /// Make the next certificate and hand out its hash next to the current one.
    Announce,
    /// Install the next certificate for new handshakes.
    Install,
}

impl Rotation {
    /// Checks `--cert-validity` and `--cert-rotate-before` against each other; `token_ttl`
    /// bounds how long ahead the next hash is announced.
    pub fn new(
        validity: Duration,
        rotate_before: Duration,
        token_ttl: Duration,
    ) -> Result<Self, IdentityError> {
        check_validity(validity).map_err(IdentityError::Rotation)?;
        let life = Self::shortest_life(validity);
        if rotate_before >= life {
            return Err(IdentityError::Rotation(format!(
                "--cert-rotate-before ({}) must be shorter than a certificate's life after it \
                 is made: --cert-validity ({}) less its back-dating ({}) and a second of \
                 rounding, {}",
                humantime::format_duration(rotate_before),
                humantime::format_duration(validity),
                humantime::format_duration(backdate(validity)),
                humantime::format_duration(life),
            )));
        }
        Ok(Self {
            validity,
            rotate_before,
            announce_ahead: token_ttl.min((life - rotate_before) / 4),
        })
    }

    /// The least time between making a certificate of `validity` and its `not_after`.
    pub fn shortest_life(validity: Duration) -> Duration {
        Duration::from_secs(validity.as_secs())
            .saturating_sub(backdate(validity))
            .saturating_sub(Duration::from_secs(1))
    }

    /// When the certificate expiring at `not_after` is replaced.
    pub fn install_at(&self, not_after: SystemTime) -> SystemTime {
        not_after
            .checked_sub(self.rotate_before)
            .unwrap_or(UNIX_EPOCH)
    }

    /// When its successor is made and announced.
    pub fn announce_at(&self, not_after: SystemTime) -> SystemTime {
        self.install_at(not_after)
            .checked_sub(self.announce_ahead)
            .unwrap_or(UNIX_EPOCH)
    }

    /// What to do at `now` when the current certificate expires at `not_after` and its
    /// successor is (`next_made`) or is not made yet. A clock that jumped past a deadline gets
    /// the overdue steps at once, one after the other.
    pub fn step(&self, not_after: SystemTime, next_made: bool, now: SystemTime) -> Step {
        let (at, due) = if next_made {
            (self.install_at(not_after), Step::Install)
        } else {
            (self.announce_at(not_after), Step::Announce)
        };
        match at.duration_since(now) {
            Ok(wait) if !wait.is_zero() => Step::Wait(wait),
            _ => due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const HOUR: Duration = Duration::from_secs(3600);

    /// A whole second, as certificate times are.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    #[test]
    fn self_signed_hash_is_a_base64_sha256_and_differs_per_certificate()
    -> Result<(), Box<dyn std::error::Error>> {
        let a = self_signed(&[], 13 * DAY)?;
        let b = self_signed(&["play.example.com".into()], 13 * DAY)?;
        let ha = STANDARD.decode(&a.cert_sha256)?;
        assert_eq!(ha.len(), 32);
        assert_ne!(STANDARD.encode(ha), b.cert_sha256);
        let left = a.not_after.duration_since(SystemTime::now())?;
        assert!(left > 13 * DAY - HOUR - Duration::from_secs(2) && left <= 13 * DAY - HOUR);
        Ok(())
    }

    #[test]
    fn the_window_is_back_dated_and_exactly_the_validity_long() {
        let now = t0() + Duration::from_millis(700);
        let (nb, na) = validity_window(now, 13 * DAY);
        assert_eq!(nb, t0() - HOUR, "an hour back, rounded down to the second");
        assert_eq!(na.duration_since(nb).ok(), Some(13 * DAY));
        let (nb, na) = validity_window(now, Duration::from_secs(16));
        assert_eq!(
            nb,
            t0() - Duration::from_secs(4),
            "a quarter of a short one"
        );
        assert_eq!(na, t0() + Duration::from_secs(12));
        assert_eq!(backdate(MIN_SELF_SIGNED_VALIDITY), Duration::from_secs(1));
        assert!(
            na.duration_since(now).ok() >= Some(Rotation::shortest_life(Duration::from_secs(16)))
        );
    }

    #[test]
    fn validity_and_rotate_before_are_checked_against_each_other() {
        let ttl = Duration::from_secs(30);
        assert!(Rotation::new(13 * DAY, 2 * DAY, ttl).is_ok());
        assert!(
            Rotation::new(14 * DAY, 2 * DAY, ttl).is_ok(),
            "14 days is the limit"
        );
        let over = Rotation::new(14 * DAY + Duration::from_secs(1), 2 * DAY, ttl);
        assert!(matches!(over, Err(IdentityError::Rotation(m)) if m.contains("over 14 days")));
        assert!(Rotation::new(Duration::from_secs(3), Duration::ZERO, ttl).is_err());
        let late = Rotation::new(13 * DAY, 13 * DAY, ttl);
        assert!(
            matches!(late, Err(IdentityError::Rotation(m)) if m.contains("--cert-rotate-before"))
        );
        // 16 s back-dated 4 s lives at least 11 s after it is made.
        assert!(Rotation::new(Duration::from_secs(16), Duration::from_secs(11), ttl).is_err());
        assert!(Rotation::new(Duration::from_secs(16), Duration::from_secs(10), ttl).is_ok());
    }

    #[test]
    fn the_next_hash_is_announced_a_token_ttl_ahead_at_most_a_quarter_of_the_service_time() {
        let ttl = Duration::from_secs(30);
        let r = Rotation::new(13 * DAY, 2 * DAY, ttl).unwrap();
        assert_eq!(r.announce_ahead, ttl);
        let r = Rotation::new(Duration::from_secs(16), Duration::from_secs(4), ttl).unwrap();
        assert_eq!(
            r.announce_ahead,
            Duration::from_millis(1750),
            "(11 s - 4 s) / 4"
        );
        let r = Rotation::new(13 * DAY, 2 * DAY, Duration::ZERO).unwrap();
        assert_eq!(r.announce_ahead, Duration::ZERO);
    }

    #[test]
    fn the_schedule_waits_announces_then_installs_before_expiry() {
        let r = Rotation::new(13 * DAY, 2 * DAY, Duration::from_secs(30)).unwrap();
        // Made at t0: expires 13 days after an hour ago.
        let (_, not_after) = validity_window(t0(), r.validity);
        let install = t0() + 11 * DAY - HOUR;
        assert_eq!(r.install_at(not_after), install);
        assert_eq!(r.announce_at(not_after), install - Duration::from_secs(30));
        assert_eq!(
            r.step(not_after, false, t0()),
            Step::Wait(11 * DAY - HOUR - Duration::from_secs(30))
        );
        let announce = install - Duration::from_secs(30);
        assert_eq!(r.step(not_after, false, announce), Step::Announce);
        assert_eq!(
            r.step(not_after, true, announce),
            Step::Wait(Duration::from_secs(30))
        );
        assert_eq!(
            r.step(not_after, true, install - Duration::from_millis(1)),
            Step::Wait(Duration::from_millis(1))
        );
        assert_eq!(r.step(not_after, true, install), Step::Install);
    }

    #[test]
    fn an_overdue_rotation_happens_at_once_even_past_expiry() {
        let r = Rotation::new(13 * DAY, 2 * DAY, Duration::from_secs(30)).unwrap();
        let (_, not_after) = validity_window(t0(), r.validity);
        // The machine slept through the deadline, and through the expiry.
        let late = not_after + DAY;
        assert_eq!(r.step(not_after, false, late), Step::Announce);
        assert_eq!(r.step(not_after, true, late), Step::Install);
        // An expiry before the epoch plus rotate_before does not underflow.
        let early = UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(r.step(early, false, t0()), Step::Announce);
    }

    /// Runs the schedule on a virtual clock for many rotations: each certificate is installed
    /// while valid, its hash was announced `announce_ahead` before, and rotations never come
    /// back to back.
    #[test]
    fn rotations_keep_a_steady_period_and_always_serve_a_valid_certificate() {
        for (validity, rotate_before) in [
            (Duration::from_secs(16), Duration::from_secs(4)),
            (Duration::from_secs(4), Duration::from_millis(500)),
            (13 * DAY, 2 * DAY),
            (14 * DAY, Duration::ZERO),
        ] {
            let r = Rotation::new(validity, rotate_before, Duration::from_secs(30)).unwrap();
            let mut now = t0() + Duration::from_millis(300);
            let (mut nb, mut na) = validity_window(now, validity);
            let mut next: Option<(SystemTime, SystemTime, SystemTime)> = None;
            let mut installs = Vec::new();
            while installs.len() < 20 {
                assert!(
                    nb <= now && now <= na,
                    "{validity:?}: the served one is valid"
                );
                match r.step(na, next.is_some(), now) {
                    Step::Wait(d) => {
                        assert!(!d.is_zero());
                        now += d;
                    }
                    Step::Announce => {
                        assert!(next.is_none());
                        let (b, a) = validity_window(now, validity);
                        next = Some((now, b, a));
                    }
                    Step::Install => {
                        let (announced, b, a) = next.take().expect("announced first");
                        assert_eq!(now.duration_since(announced).ok(), Some(r.announce_ahead));
                        assert_eq!(now, na - rotate_before, "installed rotate_before early");
                        (nb, na) = (b, a);
                        installs.push(now);
                    }
                }
            }
            let service = Rotation::shortest_life(validity) - rotate_before;
            for pair in installs.windows(2) {
                let period = pair[1].duration_since(pair[0]).unwrap();
                assert!(
                    period + Duration::from_secs(1) >= service - r.announce_ahead,
                    "{validity:?}: {period:?} between rotations"
                );
            }
        }
    }

    #[test]
    fn pinnable_lists_the_current_hash_first_then_the_next() {
        let mut h = CertHashes::default();
        assert!(h.pinnable().is_empty(), "a real certificate is not pinned");
        h.current = Some("a".into());
        assert_eq!(h.pinnable(), ["a"]);
        h.next = Some("b".into());
        assert_eq!(h.pinnable(), ["a", "b"]);
    }
}
