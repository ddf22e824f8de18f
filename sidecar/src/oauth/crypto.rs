//! Randomness, hashing, cookie signing and the AEAD that keeps upstream tokens encrypted at rest.
//!
//! Encryption keys are named by a key id so a ciphertext says which key sealed it: keys rotate
//! (new key first, old keys kept) without orphaning sessions already in the store.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_warden_policy::{SecretRef, key_activation};

use super::OAuthError;

/// `n` random bytes, base64url without padding: opaque ids, codes, tokens, CSRF values.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::fill(&mut buf).expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of `data`, base64url: store keys for secrets (codes, refresh tokens) so a store dump
/// does not hand out usable credentials.
pub fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, data))
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Named AES-256-GCM keys: all open, one seals (the newest whose `# active-at:` time has passed,
/// or the first without such markers; see [`mcp_warden_policy::key_activation`]).
pub struct EncryptionKeys {
    keys: Vec<EncryptionKey>,
}

struct EncryptionKey {
    kid: String,
    aead: LessSafeKey,
    /// Cookie/CSRF MAC key derived from this key, so every replica shares it.
    mac: hmac::Key,
    active_at: Option<i64>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl EncryptionKeys {
    /// Parses `<kid>:<base64 of 32 bytes>` lines (blank lines and `#` comments ignored; an
    /// `# active-at:` line sets the activation time of the key on the next line).
    pub fn parse(text: &str) -> Result<Self, OAuthError> {
        let mut keys = Vec::new();
        let mut pending = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let bad = |why: &str| OAuthError::Keys(format!("encryption key line {}: {why}", n + 1));
            if let Some(marker) = key_activation::parse_marker_line(line) {
                pending = Some(marker.map_err(|e| bad(&e))?);
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kid, b64) = line
                .split_once(':')
                .ok_or_else(|| bad("expected <kid>:<base64>"))?;
            if kid.is_empty() || kid.contains('.') {
                return Err(bad("key id must be non-empty and contain no '.'"));
            }
            let secret = STANDARD.decode(b64.trim()).map_err(|_| bad("not base64"))?;
            if secret.len() != 32 {
                return Err(bad("key must be 32 bytes"));
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| bad("unusable key"))?;
            let mac_seed = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &secret),
                b"mcp-warden cookie key v1",
            );
            keys.push(EncryptionKey {
                kid: kid.to_owned(),
                aead: LessSafeKey::new(unbound),
                mac: hmac::Key::new(hmac::HMAC_SHA256, mac_seed.as_ref()),
                active_at: pending.take(),
            });
        }
        if keys.is_empty() {
            return Err(OAuthError::Keys("no encryption key".into()));
        }
        Ok(EncryptionKeys { keys })
    }

    fn active_at(&self, now: i64) -> &EncryptionKey {
        let times: Vec<_> = self.keys.iter().map(|k| k.active_at).collect();
        &self.keys[key_activation::active_index(&times, now).expect("at least one key")]
    }

    /// The key id that seals at `now` (Unix seconds).
    pub fn kid_at(&self, now: i64) -> &str {
        &self.active_at(now).kid
    }

    /// Reads the key file a secret reference names.
    pub fn load(reference: &SecretRef, secrets_dir: &Path) -> Result<Self, OAuthError> {
        Self::parse(&reference.read(secrets_dir)?)
    }

    /// Seals `plain`, bound to `context` (a ciphertext moved to another record fails to open).
    /// Output: `<kid>.<base64url(nonce || ciphertext || tag)>`.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let EncryptionKey { kid, aead: key, .. } = self.active_at(now());
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).expect("the system random generator works");
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        )
        .expect("AES-GCM sealing does not fail for small inputs");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{kid}.{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`seal`](Self::seal) produced with any known key; `None` when the key id is
    /// unknown (rotated out) or the data was tampered with.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let (kid, b64) = sealed.split_once('.')?;
        let key = &self.keys.iter().find(|k| k.kid == kid)?.aead;
        let raw = URL_SAFE_NO_PAD.decode(b64).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }

    /// `value.<mac>`: a value the browser carries but cannot forge (cookies, CSRF tokens),
    /// MACed with the key derived from the sealing key.
    pub fn sign(&self, value: &str) -> String {
        let mac = &self.active_at(now()).mac;
        format!(
            "{value}.{}",
            URL_SAFE_NO_PAD.encode(hmac::sign(mac, value.as_bytes()))
        )
    }

    /// The value inside a [`sign`](Self::sign)ed string, when the MAC checks out under any
    /// known key (so a cookie set before a key switch, or by a replica that switched first,
    /// still verifies).
    pub fn verify<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let (value, mac) = signed.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        self.keys
            .iter()
            .any(|k| hmac::verify(&k.mac, value.as_bytes(), &mac).is_ok())
            .then_some(value)
    }
}

/// A fresh random key (local runs without a key secret), in the text form
/// [`EncryptionKeys::parse`] reads.
pub fn generate_text() -> String {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret).expect("the system random generator works");
    format!("local:{}", STANDARD.encode(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kid: &str, byte: u8) -> String {
        format!("{kid}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn seals_and_opens_across_rotation() {
        let old = EncryptionKeys::parse(&line("k1", 1)).unwrap();
        let sealed = old.seal("family:abc", b"upstream-refresh-token");
        assert!(sealed.starts_with("k1."));
        // New key prepended, old kept: old ciphertexts still open, new ones use k2.
        let rotated =
            EncryptionKeys::parse(&format!("{}\n{}\n", line("k2", 2), line("k1", 1))).unwrap();
        assert_eq!(
            rotated.open("family:abc", &sealed).unwrap(),
            b"upstream-refresh-token"
        );
        assert!(rotated.seal("x", b"y").starts_with("k2."));
        // Old key dropped: the ciphertext no longer opens.
        let dropped = EncryptionKeys::parse(&line("k2", 2)).unwrap();
        assert!(dropped.open("family:abc", &sealed).is_none());
    }

    #[test]
    fn a_published_key_opens_at_once_and_seals_only_once_active() {
        // Mid-rotation: k2 published, active from 2030; k1 active since 2020.
        let text = format!(
            "# active-at: 2030-01-01T00:00:00Z\n{}\n# active-at: 2020-01-01T00:00:00Z\n{}\n",
            line("k2", 2),
            line("k1", 1)
        );
        let keys = EncryptionKeys::parse(&text).unwrap();
        assert!(
            keys.seal("x", b"y").starts_with("k1."),
            "k2 is not active yet"
        );
        assert_eq!(keys.kid_at(1_900_000_000), "k2");
        // A replica that already seals with k2 (or a cookie it MACed) is understood here.
        let switched =
            EncryptionKeys::parse(&format!("{}\n{}\n", line("k2", 2), line("k1", 1))).unwrap();
        let sealed = switched.seal("family:a", b"secret");
        assert!(sealed.starts_with("k2."));
        assert_eq!(keys.open("family:a", &sealed).unwrap(), b"secret");
        assert_eq!(keys.verify(&switched.sign("tx1")), Some("tx1"));
        assert!(EncryptionKeys::parse(&format!("# active-at: later\n{}", line("k1", 1))).is_err());
    }

    #[test]
    fn context_and_tampering_are_detected() {
        let keys = EncryptionKeys::parse(&line("k1", 1)).unwrap();
        let sealed = keys.seal("family:a", b"secret");
        assert!(
            keys.open("family:b", &sealed).is_none(),
            "moved to another record"
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            keys.open("family:a", std::str::from_utf8(&tampered).unwrap())
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_key_files() {
        for bad in [
            "",
            "nokid",
            "k1:notbase64!",
            &format!("k1:{}", STANDARD.encode([0u8; 16])),
            "a.b:AAAA",
        ] {
            assert!(EncryptionKeys::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_values_cannot_be_forged() {
        let keys = EncryptionKeys::parse(&line("k1", 1)).unwrap();
        let other = EncryptionKeys::parse(&line("k1", 9)).unwrap();
        let signed = keys.sign("tx123");
        assert_eq!(keys.verify(&signed), Some("tx123"));
        assert_eq!(other.verify(&signed), None);
        assert_eq!(keys.verify("tx124.AAAA"), None);
    }
}
