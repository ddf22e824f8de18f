//! A set of verification keys parsed from a JWK Set, indexed by `kid`.

use std::sync::Arc;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters, VerificationAlgorithm};
use foldhash::HashMap;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// One usable verification key.
#[derive(Clone)]
pub struct VerificationKey {
    /// The key material.
    pub key: DecodingKey,
    /// The algorithm the JWK pins, if any; a token must then use exactly this one.
    pub alg: Option<Algorithm>,
    /// The key parsed once for each algorithm it accepts, so verifying a signature does not
    /// parse it again.
    parsed: Vec<(Algorithm, Arc<ParsedPublicKey>)>,
}

/// Every asymmetric algorithm, by family.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The RSA verification parameters of `alg` (2048-bit keys at least, as jsonwebtoken checks).
fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The verification algorithm of `alg` (JWS signatures: ECDSA as fixed-size `r || s`).
fn verification(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    if let Some(rsa) = rsa_parameters(alg) {
        return Some(rsa);
    }
    Some(match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return None,
    })
}

/// `key` parsed for `alg`; `None` when the key cannot be used with it (wrong curve, short RSA
/// modulus, malformed).
fn parse(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(rsa_parameters(alg)?)
            .ok(),
        DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(verification(alg)?, bytes).ok(),
    }
}

impl VerificationKey {
    /// A key for the algorithms of its family (only `alg` when it pins one).
    pub fn new(key: DecodingKey, alg: Option<Algorithm>) -> Self {
        let parsed = ALGORITHMS
            .into_iter()
            .filter(|a| key.family() == a.family() && alg.is_none_or(|pinned| pinned == *a))
            .filter_map(|a| Some((a, Arc::new(parse(&key, a)?))))
            .collect();
        VerificationKey { key, alg, parsed }
    }

    /// Whether a token signed with `alg` may be checked with this key: same key family, and the
    /// JWK's own `alg` when it names one. This is what stops algorithm confusion.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|pinned| pinned == alg)
            && self.key.family() == alg.family()
            && alg.family() != AlgorithmFamily::Hmac
    }

    /// Whether `signature` is this key's signature of `message` with `alg`; false for an
    /// algorithm the key does not accept.
    pub fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.accepts(alg)
            && self
                .parsed
                .iter()
                .find(|(a, _)| *a == alg)
                .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// Verification keys by `kid`; keys without a `kid` are kept apart.
#[derive(Clone, Default)]
pub struct KeySet {
    /// Hashed with seeded foldhash: a lookup per token, in a map of the issuer's few keys, where
    /// SipHash cost more than the lookup needs.
    by_kid: HashMap<String, Vec<VerificationKey>>,
    unnamed: Vec<VerificationKey>,
    /// Digest of the usable keys as published (order-independent), to tell a changed set from a
    /// refetched copy of the same one.
    fingerprint: [u8; 32],
    /// Bumped by the key source each time the set's content changes; verified-token cache
    /// entries remember it, so no cached token outlives its key.
    generation: u64,
}

fn algorithm(key_alg: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match key_alg {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl KeySet {
    /// Parses a JWK Set document. Keys that cannot verify signatures (encryption keys,
    /// symmetric keys, unknown types or algorithms) are skipped rather than failing the set,
    /// so one odd key at the IdP does not take every token down. Returns the set and how many
    /// keys were skipped.
    pub fn from_json(body: &[u8]) -> Result<(Self, usize), String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        let mut published = Vec::new();
        for raw in doc.keys {
            // serde_json maps are sorted, so this is canonical for one key.
            let text = raw.to_string();
            match serde_json::from_value::<Jwk>(raw)
                .ok()
                .and_then(|jwk| Self::usable(&jwk).map(|k| (jwk, k)))
            {
                Some((jwk, key)) => {
                    set.insert(jwk.common.key_id.clone(), key);
                    published.push(text);
                }
                None => skipped += 1,
            }
        }
        published.sort_unstable();
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for key in &published {
            digest.update(&(key.len() as u64).to_be_bytes());
            digest.update(key.as_bytes());
        }
        set.fingerprint.copy_from_slice(digest.finish().as_ref());
        Ok((set, skipped))
    }

    /// Builds a set from already parsed JWKs (the OAuth proxy's own keys).
    pub fn from_jwks(jwks: &jsonwebtoken::jwk::JwkSet) -> Self {
        let mut set = KeySet::default();
        for jwk in &jwks.keys {
            if let Some(key) = Self::usable(jwk) {
                set.insert(jwk.common.key_id.clone(), key);
            }
        }
        set
    }

    fn usable(jwk: &Jwk) -> Option<VerificationKey> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return None;
        }
        let alg = match jwk.common.key_algorithm {
            Some(a) => Some(algorithm(a)?),
            None => None,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(VerificationKey::new(key, alg))
    }

    fn insert(&mut self, kid: Option<String>, key: VerificationKey) {
        match kid {
            Some(kid) => self.by_kid.entry(kid).or_default().push(key),
            None => self.unnamed.push(key),
        }
    }

    /// Candidate keys for a token: those under its `kid`, or every key without a `kid` when the
    /// token names none. Only keys that accept `alg` are returned.
    pub fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &VerificationKey> + Clone {
        let pool: &[VerificationKey] = match kid {
            Some(kid) => self.by_kid.get(kid).map_or(&[], Vec::as_slice),
            None => &self.unnamed,
        };
        pool.iter().filter(move |k| k.accepts(alg))
    }

    /// Whether any key is known under `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The generation of this set (see [`KeySet::succeed`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes over from `previous`: the same generation when the keys are the same, the next one
    /// when they changed.
    pub fn succeed(&mut self, previous: &KeySet) {
        self.generation = if self.fingerprint == previous.fingerprint {
            previous.generation
        } else {
            previous.generation + 1
        };
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum::<usize>() + self.unnamed.len()
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
    const ENC: &str = r#"{"kty":"RSA","kid":"e1","use":"enc","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
    const OCT: &str = r#"{"kty":"oct","kid":"h1","k":"c2VjcmV0"}"#;
    const ODD: &str = r#"{"kty":"XYZ","kid":"x1"}"#;

    #[test]
    fn keeps_signing_keys_and_skips_the_rest() {
        let doc = format!(r#"{{"keys":[{RSA},{ENC},{OCT},{ODD}]}}"#);
        let (set, skipped) = KeySet::from_json(doc.as_bytes()).unwrap();
        assert_eq!((set.len(), skipped), (1, 3));
        assert!(set.has_kid("r1"));
        assert_eq!(set.candidates(Some("r1"), Algorithm::RS256).count(), 1);
    }

    #[test]
    fn refuses_algorithm_confusion() {
        let (set, _) = KeySet::from_json(format!(r#"{{"keys":[{RSA}]}}"#).as_bytes()).unwrap();
        assert!(
            set.candidates(Some("r1"), Algorithm::HS256)
                .next()
                .is_none(),
            "HMAC with an RSA key"
        );
        assert!(
            set.candidates(Some("r1"), Algorithm::PS256)
                .next()
                .is_none(),
            "the JWK pins RS256"
        );
        assert!(
            set.candidates(Some("r1"), Algorithm::ES256)
                .next()
                .is_none(),
            "wrong family"
        );
        assert!(
            set.candidates(None, Algorithm::RS256).next().is_none(),
            "kid-less tokens only match kid-less keys"
        );
    }

    #[test]
    fn generations_change_with_the_keys_only() {
        let parse = |doc: &str| KeySet::from_json(doc.as_bytes()).unwrap().0;
        let first = parse(&format!(r#"{{"keys":[{RSA}]}}"#));
        let mut same = parse(&format!(r#"{{"keys":[{RSA},{OCT}]}}"#));
        same.succeed(&first);
        assert_eq!(
            same.generation(),
            first.generation(),
            "a skipped key changes nothing"
        );
        let ec = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let mut both = parse(&format!(r#"{{"keys":[{ec},{RSA}]}}"#));
        both.succeed(&same);
        assert_eq!(both.generation(), first.generation() + 1);
        let mut reordered = parse(&format!(r#"{{"keys":[{RSA},{ec}]}}"#));
        reordered.succeed(&both);
        assert_eq!(reordered.generation(), both.generation());
        let mut fewer = parse(&format!(r#"{{"keys":[{ec}]}}"#));
        fewer.succeed(&reordered);
        assert_eq!(fewer.generation(), both.generation() + 1);
    }

    #[test]
    fn parses_each_key_once_for_the_algorithms_it_accepts() {
        let algs = |doc: &str, kid: &str| -> Vec<Algorithm> {
            let (set, _) = KeySet::from_json(doc.as_bytes()).unwrap();
            set.by_kid[kid][0].parsed.iter().map(|(a, _)| *a).collect()
        };
        assert_eq!(
            algs(&format!(r#"{{"keys":[{RSA}]}}"#), "r1"),
            [Algorithm::RS256]
        );
        let unpinned = RSA.replace(r#""alg":"RS256","#, "");
        assert_eq!(
            algs(&format!(r#"{{"keys":[{unpinned}]}}"#), "r1"),
            [
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512
            ]
        );
        let ec = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        assert_eq!(
            algs(&format!(r#"{{"keys":[{ec}]}}"#), "e1"),
            [Algorithm::ES256],
            "a P-256 point is no ES384 key"
        );
    }

    #[test]
    fn rejects_documents_that_are_not_jwk_sets() {
        assert!(KeySet::from_json(b"{}").is_err());
        assert!(KeySet::from_json(b"<html>").is_err());
    }
}
