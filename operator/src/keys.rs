//! The oauthProxy key material the operator manages in Secret `mcp-warden-<policy>-keys`:
//! `signing.pem` (PKCS#8 P-256 keys, newest first) and `encryption.keys` (`<kid>:<base64 32
//! bytes>` lines, newest first), each key preceded by its `# active-at:` line
//! ([`mcp_warden_policy::key_activation`]). Keys rotate on a schedule: a new key is published
//! for verification and decryption at once and signs and encrypts only after the activation
//! delay, once every pod has seen it; a retired key stays until every token it could have
//! produced has expired.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_warden_policy::key_activation::{marker_line, parse_marker_line};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::{Error, Result};

/// One key with its id and creation time (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Key id: the RFC 7638 thumbprint for signing keys, random for encryption keys.
    pub kid: String,
    /// PEM (signing) or base64 (encryption).
    pub material: String,
    /// When the key was made.
    pub created: i64,
    /// When the key starts signing or encrypting (sidecars accept it from the start).
    pub active_at: i64,
}

/// Signing and encryption keys, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    /// Signing keys; `[0]` signs.
    pub signing: Vec<Key>,
    /// Encryption keys; `[0]` encrypts.
    pub encryption: Vec<Key>,
}

/// When keys rotate and how long retired keys stay.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// Age after which a new primary key is made.
    pub rotate_after: i64,
    /// How long a retired signing key stays (longest access-token lifetime).
    pub keep_signing: i64,
    /// How long a retired encryption key stays (refresh-token family lifetime).
    pub keep_encryption: i64,
    /// How long a new key is only published before it signs and encrypts: longer than it
    /// takes a Secret update to reach every pod.
    pub activation_delay: i64,
}

/// RFC 7638 thumbprint of a P-256 public key given as an uncompressed SEC1 point.
pub fn thumbprint(public_point: &[u8]) -> Result<String> {
    if public_point.len() != 65 || public_point[0] != 4 {
        return Err(Error::Certificate("not an uncompressed P-256 point".into()));
    }
    let x = URL_SAFE_NO_PAD.encode(&public_point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&public_point[33..]);
    let jwk = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Ok(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, jwk.as_bytes())))
}

/// A new P-256 signing key.
pub fn new_signing_key(now: i64) -> Result<Key> {
    let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(Key {
        kid: thumbprint(pair.public_key_raw())?,
        material: pair.serialize_pem(),
        created: now,
        active_at: now,
    })
}

/// A new 256-bit encryption key.
pub fn new_encryption_key(now: i64) -> Result<Key> {
    let rng = SystemRandom::new();
    let mut secret = [0u8; 32];
    let mut id = [0u8; 8];
    rng.fill(&mut secret)
        .and_then(|()| rng.fill(&mut id))
        .map_err(|_| Error::Certificate("no randomness".into()))?;
    Ok(Key {
        kid: URL_SAFE_NO_PAD.encode(id),
        material: STANDARD.encode(secret),
        created: now,
        active_at: now,
    })
}

/// The activation time in the marker lines of `text` (the last one wins); `None` without one.
fn marker_in(text: &str) -> Result<Option<i64>> {
    let mut found = None;
    for line in text.lines() {
        if let Some(marker) = parse_marker_line(line) {
            found = Some(marker.map_err(Error::Certificate)?);
        }
    }
    Ok(found)
}

impl KeyRing {
    /// Reads the Secret's two values and the creation-time annotation. Unknown creation times
    /// count as `now`, so a key never disappears early; a key without an `# active-at:` line
    /// (written before activation times existed) counts as active since its creation.
    pub fn parse(
        signing_pem: &str,
        encryption: &str,
        created: &BTreeMap<String, i64>,
        now: i64,
    ) -> Result<Self> {
        let mut ring = KeyRing::default();
        for block in signing_pem.split_inclusive("-----END PRIVATE KEY-----") {
            let Some(begin) = block.find("-----BEGIN") else {
                if block.trim().is_empty() {
                    continue;
                }
                return Err(Error::Certificate("text after the last PEM block".into()));
            };
            let (preamble, pem) = block.split_at(begin);
            let pem = pem.trim();
            let pair = KeyPair::from_pem(pem).map_err(|e| Error::Certificate(e.to_string()))?;
            let kid = thumbprint(pair.public_key_raw())?;
            let created = created.get(&kid).copied().unwrap_or(now);
            ring.signing.push(Key {
                active_at: marker_in(preamble)?.unwrap_or(created),
                created,
                kid,
                material: format!("{pem}\n"),
            });
        }
        let mut pending = None;
        for line in encryption.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(marker) = parse_marker_line(line) {
                pending = Some(marker.map_err(Error::Certificate)?);
                continue;
            }
            let (kid, material) = line
                .split_once(':')
                .ok_or_else(|| Error::Certificate("encryption key line without kid".into()))?;
            let created = created.get(kid).copied().unwrap_or(now);
            ring.encryption.push(Key {
                kid: kid.to_owned(),
                material: material.trim().to_owned(),
                created,
                active_at: pending.take().unwrap_or(created),
            });
        }
        Ok(ring)
    }

    /// `signing.pem`.
    pub fn signing_pem(&self) -> String {
        self.signing
            .iter()
            .map(|k| format!("{}\n{}", marker_line(k.active_at), k.material))
            .collect()
    }

    /// `encryption.keys`.
    pub fn encryption_lines(&self) -> String {
        self.encryption
            .iter()
            .map(|k| format!("{}\n{}:{}\n", marker_line(k.active_at), k.kid, k.material))
            .collect()
    }

    /// Creation times by kid (stored in an annotation).
    pub fn created(&self) -> BTreeMap<String, i64> {
        self.signing
            .iter()
            .chain(&self.encryption)
            .map(|k| (k.kid.clone(), k.created))
            .collect()
    }

    /// Adds a new primary when the current one is missing or old, and drops retired keys
    /// that nothing valid can reference any more. Returns whether anything changed. The very
    /// first key is active at once (no pod can hold an older ring); later ones after
    /// `rotation.activation_delay`.
    pub fn rotate(&mut self, now: i64, rotation: Rotation) -> Result<bool> {
        let before = self.clone();
        let active_at = |keys: &[Key]| {
            if keys.is_empty() {
                now
            } else {
                now.saturating_add(rotation.activation_delay)
            }
        };
        if self
            .signing
            .first()
            .is_none_or(|k| now - k.created >= rotation.rotate_after)
        {
            let mut key = new_signing_key(now)?;
            key.active_at = active_at(&self.signing);
            self.signing.insert(0, key);
        }
        if self
            .encryption
            .first()
            .is_none_or(|k| now - k.created >= rotation.rotate_after)
        {
            let mut key = new_encryption_key(now)?;
            key.active_at = active_at(&self.encryption);
            self.encryption.insert(0, key);
        }
        prune(&mut self.signing, now, rotation.keep_signing);
        prune(&mut self.encryption, now, rotation.keep_encryption);
        Ok(*self != before)
    }
}

/// Key `i` was retired when key `i - 1` became active; it goes once `keep` has passed since.
fn prune(keys: &mut Vec<Key>, now: i64, keep: i64) {
    let mut cut = keys.len();
    for i in 1..keys.len() {
        if now - keys[i - 1].active_at > keep {
            cut = i;
            break;
        }
    }
    keys.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const ROT: Rotation = Rotation {
        rotate_after: 30 * DAY,
        keep_signing: DAY,
        keep_encryption: 14 * DAY,
        activation_delay: 120,
    };

    #[test]
    fn creates_then_rotates_then_prunes() {
        let mut ring = KeyRing::default();
        assert!(ring.rotate(0, ROT).unwrap());
        assert_eq!((ring.signing.len(), ring.encryption.len()), (1, 1));
        assert!(!ring.rotate(10 * DAY, ROT).unwrap(), "young keys stay");
        let first = ring.signing[0].kid.clone();
        assert!(ring.rotate(30 * DAY, ROT).unwrap());
        assert_eq!(ring.signing.len(), 2);
        assert_eq!(ring.signing[1].kid, first, "the new key is prepended");
        // The old signing key goes a day after the new one became active, the old encryption
        // key after 14.
        ring.rotate(31 * DAY + 120, ROT).unwrap();
        assert_eq!(
            ring.signing.len(),
            2,
            "retired only when the new key became active"
        );
        ring.rotate(31 * DAY + 121, ROT).unwrap();
        assert_eq!((ring.signing.len(), ring.encryption.len()), (1, 2));
        ring.rotate(44 * DAY + 121, ROT).unwrap();
        assert_eq!(ring.encryption.len(), 1);
    }

    #[test]
    fn a_new_key_is_published_before_it_signs() {
        use mcp_warden_policy::key_activation::active_index;
        let mut ring = KeyRing::default();
        ring.rotate(0, ROT).unwrap();
        assert_eq!(
            ring.signing[0].active_at, 0,
            "the first key is active at once"
        );
        ring.rotate(30 * DAY, ROT).unwrap();
        for keys in [&ring.signing, &ring.encryption] {
            assert_eq!(keys[0].active_at, 30 * DAY + 120);
            // What every sidecar reads from the Secret: the old key still signs/encrypts.
            let text = if std::ptr::eq(keys, &ring.signing) {
                ring.signing_pem()
            } else {
                ring.encryption_lines()
            };
            assert!(
                text.starts_with("# active-at: 1970-01-31T00:02:00Z\n"),
                "{text}"
            );
            let times: Vec<_> = keys.iter().map(|k| Some(k.active_at)).collect();
            assert_eq!(active_index(&times, 30 * DAY + 119), Some(1));
            assert_eq!(active_index(&times, 30 * DAY + 120), Some(0));
        }
        // Keys written before activation times existed count as active since creation.
        let legacy_pem: String = ring.signing.iter().map(|k| k.material.as_str()).collect();
        let again = KeyRing::parse(&legacy_pem, "", &ring.created(), 99).unwrap();
        assert_eq!(again.signing[0].active_at, 30 * DAY);
    }

    #[test]
    fn malformed_key_material_is_an_error() {
        assert!(KeyRing::parse("garbage", "", &BTreeMap::new(), 0).is_err());
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(KeyRing::parse(junk, "", &BTreeMap::new(), 0).is_err());
        assert!(KeyRing::parse("", "no-colon", &BTreeMap::new(), 0).is_err());
        assert!(KeyRing::parse("", "# active-at: never\nk:AAAA\n", &BTreeMap::new(), 0).is_err());
    }

    #[test]
    fn round_trips_through_secret_values_with_thumbprint_kids() {
        let mut ring = KeyRing::default();
        ring.rotate(5, ROT).unwrap();
        ring.rotate(5 + 30 * DAY, ROT).unwrap();
        let pem = ring.signing_pem();
        assert_eq!(pem.matches("-----BEGIN PRIVATE KEY-----").count(), 2);
        let again = KeyRing::parse(&pem, &ring.encryption_lines(), &ring.created(), 99).unwrap();
        assert_eq!(again, ring);
        // The kid is the RFC 7638 thumbprint: 32 bytes, base64url.
        assert_eq!(ring.signing[0].kid.len(), 43);
        let line = ring.encryption_lines();
        let (_, b64) = line.lines().nth(1).unwrap().split_once(':').unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap().len(), 32);
    }

    #[test]
    fn thumbprint_matches_rfc7638_example_shape() {
        // A fixed point: the thumbprint is deterministic and 43 base64url characters.
        let mut point = vec![4u8];
        point.extend([1u8; 64]);
        let a = thumbprint(&point).unwrap();
        assert_eq!(a, thumbprint(&point).unwrap());
        assert_eq!(a.len(), 43);
        assert!(thumbprint(&[1, 2, 3]).is_err());
    }
}
