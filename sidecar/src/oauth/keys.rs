//! The proxy's ES256 signing keys: loaded from a PEM file (one or more PKCS#8 P-256 keys; the
//! first signs, the rest only verify) or generated for local runs. `kid` is the RFC 7638
//! thumbprint of the public key, so every replica names a key the same way.

use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_warden_policy::SecretRef;
use serde::Serialize;

use super::OAuthError;
use super::crypto::sha256_b64;

struct PublicKey {
    kid: String,
    x: String,
    y: String,
}

/// Signing key plus every verification key.
pub struct SigningKeys {
    signer: EncodingKey,
    public: Vec<PublicKey>,
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

impl SigningKeys {
    /// Parses concatenated PKCS#8 PEM blocks of EC P-256 private keys.
    pub fn from_pem(text: &str) -> Result<Self, OAuthError> {
        let blocks =
            pem::parse_many(text).map_err(|e| OAuthError::Keys(format!("signing keys: {e}")))?;
        let mut signer = None;
        let mut public = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
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
            if signer.is_none() {
                signer = Some(EncodingKey::from_ec_der(block.contents()));
            }
            public.push(public_of(&pair));
        }
        let signer =
            signer.ok_or_else(|| OAuthError::Keys("signing keys: no PEM block found".into()))?;
        Ok(SigningKeys { signer, public })
    }

    /// Reads the PEM file a secret reference names.
    pub fn load(reference: &SecretRef, secrets_dir: &Path) -> Result<Self, OAuthError> {
        Self::from_pem(&reference.read(secrets_dir)?)
    }

    /// The `kid` of the signing key.
    pub fn current_kid(&self) -> &str {
        &self.public[0].kid
    }

    /// Signs `claims` as a JWT access token (`typ: at+jwt`, RFC 9068).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.current_kid().to_owned());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &self.signer)
            .expect("ES256 signing of JSON claims does not fail")
    }

    /// Every public key as a JWK Set (served at `/jwks`).
    pub fn jwks(&self) -> JwkSet {
        let keys = self
            .public
            .iter()
            .map(|k| {
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
