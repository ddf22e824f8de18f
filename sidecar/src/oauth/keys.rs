//! The proxy's ES256 signing keys: loaded from a PEM file (one or more PKCS#8 P-256 keys) or
//! generated for local runs. `kid` is the RFC 7638 thumbprint of the public key, so every
//! replica names a key the same way. Every key verifies (and is published at `/jwks`); one
//! signs: the newest whose `# active-at:` time has passed, or the first when the file has no
//! such markers (see [`mcp_warden_policy::key_activation`]).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_warden_policy::SecretRef;
use mcp_warden_policy::key_activation::{active_index, parse_marker_line};
use serde::Serialize;

use super::OAuthError;
use super::crypto::sha256_b64;

struct PublicKey {
    kid: String,
    x: String,
    y: String,
}

struct Entry {
    public: PublicKey,
    signer: EncodingKey,
    active_at: Option<i64>,
}

/// Every signing key with its activation time.
pub struct SigningKeys {
    keys: Vec<Entry>,
}

fn public_of(pair: &EcdsaKeyPair) -> PublicKey {
    // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = pair.public_key().as_ref();
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    // RFC 7638: required members only, lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    PublicKey {
        kid: sha256_b64(canonical.as_bytes()),
        x,
        y,
    }
}

/// The `# active-at:` time announced before each PEM block, in block order.
fn activation_times(text: &str) -> Result<Vec<Option<i64>>, OAuthError> {
    let mut times = Vec::new();
    let mut pending = None;
    for line in text.lines() {
        if let Some(marker) = parse_marker_line(line) {
            pending = Some(marker.map_err(|e| OAuthError::Keys(format!("signing keys: {e}")))?);
        } else if line.trim_start().starts_with("-----BEGIN ") {
            times.push(pending.take());
        }
    }
    Ok(times)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl SigningKeys {
    /// Parses concatenated PKCS#8 PEM blocks of EC P-256 private keys, each optionally preceded
    /// by an `# active-at:` line.
    pub fn from_pem(text: &str) -> Result<Self, OAuthError> {
        let blocks =
            pem::parse_many(text).map_err(|e| OAuthError::Keys(format!("signing keys: {e}")))?;
        let times = activation_times(text)?;
        if times.len() != blocks.len() {
            return Err(OAuthError::Keys(
                "signing keys: every PEM block must start on a line of its own".into(),
            ));
        }
        let mut keys = Vec::new();
        for (i, (block, active_at)) in blocks.iter().zip(times).enumerate() {
            if block.tag() != "PRIVATE KEY" {
                return Err(OAuthError::Keys(format!(
                    "signing key {}: expected a PKCS#8 \"PRIVATE KEY\" block, found {:?}",
                    i + 1,
                    block.tag()
                )));
            }
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
                .map_err(|_| {
                    OAuthError::Keys(format!("signing key {}: not an EC P-256 PKCS#8 key", i + 1))
                })?;
            keys.push(Entry {
                public: public_of(&pair),
                signer: EncodingKey::from_ec_der(block.contents()),
                active_at,
            });
        }
        if keys.is_empty() {
            return Err(OAuthError::Keys("signing keys: no PEM block found".into()));
        }
        Ok(SigningKeys { keys })
    }

    /// Reads the PEM file a secret reference names.
    pub fn load(reference: &SecretRef, secrets_dir: &Path) -> Result<Self, OAuthError> {
        Self::from_pem(&reference.read(secrets_dir)?)
    }

    fn signer_at(&self, now: i64) -> &Entry {
        let times: Vec<_> = self.keys.iter().map(|k| k.active_at).collect();
        &self.keys[active_index(&times, now).expect("at least one key")]
    }

    /// The `kid` of the key that signs at `now` (Unix seconds).
    pub fn kid_at(&self, now: i64) -> &str {
        &self.signer_at(now).public.kid
    }

    /// The `kid` of the key that signs now.
    pub fn current_kid(&self) -> &str {
        self.kid_at(now())
    }

    /// Signs `claims` as a JWT access token (`typ: at+jwt`, RFC 9068) with the key active now.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        self.sign_at(claims, now())
    }

    /// Signs with the key active at `now` (Unix seconds).
    pub fn sign_at<T: Serialize>(&self, claims: &T, now: i64) -> String {
        let key = self.signer_at(now);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.public.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &key.signer)
            .expect("ES256 signing of JSON claims does not fail")
    }

    /// Every public key, active or not yet, as a JWK Set (served at `/jwks`).
    pub fn jwks(&self) -> JwkSet {
        let keys = self
            .keys
            .iter()
            .map(|k| {
                let k = &k.public;
                serde_json::from_value(serde_json::json!({
                    "kty": "EC", "crv": "P-256", "x": k.x, "y": k.y,
                    "kid": k.kid, "use": "sig", "alg": "ES256",
                }))
                .expect("EC JWK shape")
            })
            .collect();
        JwkSet { keys }
    }
}

/// A new PKCS#8 PEM EC P-256 private key.
pub fn generate_pem() -> String {
    let pair =
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key generation works");
    let der = pair.to_pkcs8v1().expect("PKCS#8 export works");
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn first_key_signs_all_verify() {
        let (a, b) = (generate_pem(), generate_pem());
        let keys = SigningKeys::from_pem(&format!("{a}{b}")).unwrap();
        let jwks = keys.jwks();
        assert_eq!(jwks.keys.len(), 2);
        let token = keys.sign(&serde_json::json!({"sub": "u", "exp": 4_000_000_000u64}));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(keys.current_kid()));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwk = jwks.find(keys.current_kid()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "u");
        // The second key is published but does not sign.
        let second = SigningKeys::from_pem(&b).unwrap();
        assert_eq!(
            jwks.keys[1].common.key_id.as_deref(),
            Some(second.current_kid())
        );
    }

    #[test]
    fn a_published_key_verifies_at_once_and_signs_only_once_active() {
        // What the operator writes mid-rotation: the new key first, active in the future.
        let (new, old) = (generate_pem(), generate_pem());
        let text = format!(
            "# active-at: 2030-01-01T00:00:00Z\n{new}# active-at: 2020-01-01T00:00:00Z\n{old}"
        );
        let keys = SigningKeys::from_pem(&text).unwrap();
        let (new_kid, old_kid) = (
            SigningKeys::from_pem(&new)
                .unwrap()
                .current_kid()
                .to_owned(),
            SigningKeys::from_pem(&old)
                .unwrap()
                .current_kid()
                .to_owned(),
        );
        let before = 1_800_000_000; // 2027: the new key is published, not active
        let after = 1_900_000_000; // 2030
        assert_eq!(keys.kid_at(before), old_kid);
        assert_eq!(keys.current_kid(), old_kid, "active only from 2030");
        let token = keys.sign_at(&serde_json::json!({"sub": "u"}), before);
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
            Some(old_kid.as_str())
        );
        // Both keys verify at once, so tokens signed by any replica check everywhere.
        let verifier = crate::keys::KeySet::from_jwks(&keys.jwks());
        assert!(verifier.has_kid(&new_kid) && verifier.has_kid(&old_kid));
        assert_eq!(keys.kid_at(after), new_kid);
        // A replica still on the old file (no new key) verifies what was signed before.
        assert_eq!(SigningKeys::from_pem(&old).unwrap().current_kid(), old_kid);
        assert!(SigningKeys::from_pem("# active-at: tomorrow\n").is_err());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 has no EC example; check stability and the shape instead.
        let pem = generate_pem();
        let k1 = SigningKeys::from_pem(&pem).unwrap();
        let k2 = SigningKeys::from_pem(&pem).unwrap();
        assert_eq!(k1.current_kid(), k2.current_kid());
        assert_eq!(k1.current_kid().len(), 43);
        let jwk = &k1.jwks().keys[0];
        let thumb = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(thumb, k1.current_kid());
    }

    #[test]
    fn rejects_wrong_key_material() {
        assert!(SigningKeys::from_pem("").is_err());
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(SigningKeys::from_pem(cert).is_err());
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(SigningKeys::from_pem(junk).is_err());
    }
}
