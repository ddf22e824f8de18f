//! Bearer-token verification: signature against the issuer's keys, then `iss`, `aud`, `exp` and
//! `nbf`, with verified tokens cached until they expire.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64_simd::{Out, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::Value;

use self::cache::TokenCache;
pub use self::claims::{Claim, Claims};
use crate::jwks::JwksSource;
use crate::keys::KeySet;
use crate::metrics::Reason;
use crate::scopes::Granted;

mod cache;
mod claims;
mod front;

/// Longest token accepted; real access tokens are a few KB at most.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest signature of an accepted algorithm, bytes (RSA with an 8192-bit key).
const MAX_SIGNATURE_LEN: usize = 1024;
/// Longest payload decoded on the stack, bytes; a longer one goes on the heap.
const PAYLOAD_ON_STACK: usize = 2048;
/// Most tokens kept in the verified-token cache.
const CACHE_CAPACITY: usize = 10_000;
/// Longest time a verified token is answered from the cache before it is verified again.
pub const CACHE_TTL_SECONDS: u64 = 60;

/// A verified caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// All claims of the token.
    pub claims: Claims,
    /// Scopes from `scope` / `scp`.
    pub scopes: Granted,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Why a token was refused. The `Display` text is safe to send to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, or claims of the wrong shape.
    #[error("the token is malformed")]
    Malformed,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by an untrusted issuer")]
    WrongIssuer,
    /// `aud` does not name this resource.
    #[error("the token is not intended for this resource")]
    WrongAudience,
    /// No key with the token's `kid`, even after a refetch.
    #[error("the token signing key is unknown")]
    UnknownKid,
    /// `alg` is not allowed (`none`, HMAC, or not in the policy's list).
    #[error("the token signing algorithm is not accepted")]
    DisallowedAlg,
    /// The header's `typ` is not one the policy accepts (`jwt.tokenTypes`).
    #[error("the token is not of an accepted type")]
    WrongType,
    /// No keys could be fetched from the issuer yet.
    #[error("the token cannot be verified right now")]
    KeysUnavailable,
    /// The token's session was revoked (`oauthProxy` mode).
    #[error("the token has been revoked")]
    Revoked,
    /// Introspection answered `active: false` (revoked, expired or unknown token).
    #[error("the token is not active")]
    Inactive,
    /// The introspection endpoint gave no usable answer.
    #[error("the token cannot be checked right now")]
    IntrospectionUnavailable,
}

impl TokenError {
    /// The metric reason.
    pub fn reason(self) -> Reason {
        match self {
            TokenError::Malformed => Reason::Malformed,
            TokenError::Expired => Reason::Expired,
            TokenError::NotYetValid => Reason::NotYetValid,
            TokenError::BadSignature => Reason::BadSignature,
            TokenError::WrongIssuer => Reason::WrongIssuer,
            TokenError::WrongAudience => Reason::WrongAudience,
            TokenError::UnknownKid => Reason::UnknownKid,
            TokenError::DisallowedAlg => Reason::DisallowedAlg,
            TokenError::WrongType => Reason::WrongType,
            TokenError::KeysUnavailable => Reason::KeysUnavailable,
            TokenError::Revoked => Reason::Revoked,
            TokenError::Inactive => Reason::Inactive,
            TokenError::IntrospectionUnavailable => Reason::IntrospectionUnavailable,
        }
    }
}

/// Where verification keys come from.
#[derive(Clone)]
pub enum Keys {
    /// An external issuer's JWKS, fetched and refreshed.
    Remote(Arc<JwksSource>),
    /// A fixed set (the OAuth proxy's own signing keys).
    Local(Arc<KeySet>),
}

/// What a token must satisfy.
pub struct Expectations {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values (a trailing-slash variant of each is accepted too).
    pub audiences: Vec<String>,
    /// Allowed algorithms; HMAC and `none` are never in here.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew for `exp`/`nbf`, seconds.
    pub leeway: u64,
    /// Accepted header `typ` values; empty accepts any (see [`typ_key`]).
    pub token_types: Vec<String>,
}

/// A `typ` value as compared: lower case, without the optional `application/` prefix (RFC 7515
/// §4.1.9).
pub fn typ_key(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// Verifies tokens for one policy.
pub struct Verifier {
    keys: Keys,
    issuer: String,
    /// Accepted `aud` values, each also with and without a trailing slash.
    audiences: Vec<String>,
    /// Allowed algorithms (never HMAC or `none`).
    algorithms: Vec<Algorithm>,
    leeway: u64,
    token_types: Vec<String>,
    cache: TokenCache<Cached>,
    /// This verifier's number, naming its tokens in the per-thread cache fronts.
    id: u64,
}

/// The next [`Verifier`]'s number.
static NEXT_VERIFIER: AtomicU64 = AtomicU64::new(1);

/// A verified token, valid from the cache while the key set it was verified with is current
/// and until `valid_until` (its `exp`, at most [`CACHE_TTL_SECONDS`] after verification).
#[derive(Clone)]
struct Cached {
    principal: Arc<Principal>,
    generation: u64,
    valid_until: u64,
}

impl Cached {
    /// Whether the entry may answer while the key set of `generation` is in force, at `now`
    /// (seconds since the epoch).
    fn fresh(&self, generation: u64, now: u64) -> bool {
        self.generation == generation && self.valid_until > now
    }
}

/// Header members that change how a token must be read, none of which this verifier implements:
/// `crit` lists extensions a recipient must understand or reject the token (RFC 7515 §4.1.11),
/// `b64` changes what is signed (RFC 7797), and `zip` and `enc` belong to encrypted tokens
/// (RFC 7516), never to a signed one.
const UNSUPPORTED_HEADERS: [&str; 4] = ["crit", "b64", "zip", "enc"];

/// The header, payload and signature of a compact JWS: `None` unless there are exactly three
/// parts.
fn split_token(token: &str) -> Option<(&str, &str, &str)> {
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (first, second) = (dots.next()?, dots.next()?);
    if dots.next().is_some() {
        return None;
    }
    Some((
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    ))
}

/// A decoded part of a token read as JSON. The whole part must be UTF-8: checked once here, so
/// that the parser does not check each string again.
fn json<'a, T: serde::Deserialize<'a>>(part: &'a [u8]) -> Result<T, TokenError> {
    let text = std::str::from_utf8(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_str(text).map_err(|_| TokenError::Malformed)
}

/// One part of a token, decoded: base64url without padding, trailing bits zero (RFC 7515 §2).
fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode_to_vec(part)
        .map_err(|_| TokenError::Malformed)
}

/// One part of a token decoded as [`decode`] does, into `buf`: `None` when longer than `buf`.
fn decode_into<'b>(
    part: &str,
    buf: &'b mut [MaybeUninit<u8>],
) -> Result<Option<&'b [u8]>, TokenError> {
    let part = part.as_bytes();
    match URL_SAFE_NO_PAD.decoded_length(part) {
        Ok(len) if len > buf.len() => return Ok(None),
        Ok(_) => {}
        Err(_) => return Err(TokenError::Malformed),
    }
    match URL_SAFE_NO_PAD.decode(part, Out::from_uninit_slice(buf)) {
        Ok(decoded) => Ok(Some(decoded)),
        Err(_) => Err(TokenError::Malformed),
    }
}

/// The header members the verifier reads, borrowed from the decoded header where they hold no
/// escapes. A repeated `alg`, `kid` or `typ` and any of [`UNSUPPORTED_HEADERS`] refuse the
/// header; other members are skipped.
struct Header<'a> {
    alg: Cow<'a, str>,
    kid: Option<Cow<'a, str>>,
    typ: Option<Cow<'a, str>>,
}

/// A JSON string, borrowed when it holds no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Chars;
        impl<'de> serde::de::Visitor<'de> for Chars {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Chars)
    }
}

impl<'de> serde::Deserialize<'de> for Header<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Header<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JOSE header")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Header<'de>, A::Error> {
                use serde::de::Error as _;
                let (mut alg, mut kid, mut typ) = (None, None, None);
                while let Some(Text(name)) = access.next_key::<Text<'de>>()? {
                    let slot = match &*name {
                        "alg" => &mut alg,
                        "kid" => &mut kid,
                        "typ" => &mut typ,
                        other if UNSUPPORTED_HEADERS.contains(&other) => {
                            return Err(A::Error::custom("unsupported header member"));
                        }
                        _ => {
                            access.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(A::Error::custom("repeated header member"));
                    }
                    // `kid` and `typ` may be null, which reads as absent.
                    *slot = Some(access.next_value::<Option<Text<'de>>>()?.map(|t| t.0));
                }
                Ok(Header {
                    alg: alg
                        .flatten()
                        .ok_or_else(|| A::Error::missing_field("alg"))?,
                    kid: kid.flatten(),
                    typ: typ.flatten(),
                })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

impl Verifier {
    /// A verifier for `expect`, using `keys`.
    pub fn new(expect: Expectations, keys: Keys) -> Self {
        let mut audiences = Vec::new();
        for aud in &expect.audiences {
            audiences.push(aud.clone());
            match aud.strip_suffix('/') {
                Some(bare) => audiences.push(bare.to_owned()),
                None => audiences.push(format!("{aud}/")),
            }
        }
        Verifier {
            keys,
            issuer: expect.issuer.clone(),
            audiences,
            algorithms: expect
                .algorithms
                .iter()
                .copied()
                .filter(|alg| alg.family() != jsonwebtoken::AlgorithmFamily::Hmac)
                .collect(),
            leeway: expect.leeway,
            token_types: expect.token_types.iter().map(|t| typ_key(t)).collect(),
            cache: TokenCache::new(CACHE_CAPACITY),
            id: NEXT_VERIFIER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether the verifier has keys to check tokens with.
    pub fn ready(&self) -> bool {
        match &self.keys {
            Keys::Remote(source) => source.ready(),
            Keys::Local(_) => true,
        }
    }

    /// The remote key source, if any (for the refresh loop).
    pub fn remote(&self) -> Option<&Arc<JwksSource>> {
        match &self.keys {
            Keys::Remote(source) => Some(source),
            Keys::Local(_) => None,
        }
    }

    /// Verifies `token`. The flag says whether the answer came from the cache.
    pub async fn verify(&self, token: &str) -> Result<(Arc<Principal>, bool), TokenError> {
        let hash = self.cache.hash(token);
        if let Some(hit) = self.cached(token, hash) {
            return Ok((hit, true));
        }
        // Boxed: only a miss pays for it, and every request's future stays small (this one holds
        // a key fetch's).
        let (principal, generation) = Box::pin(self.verify_uncached(token)).await?;
        let principal = Arc::new(principal);
        self.remember(token, hash, &principal, generation);
        Ok((principal, false))
    }

    /// The principal cached for `token`: from this thread's front when it keeps the token,
    /// which takes no lock and writes nothing other threads write; else from the shared cache.
    fn cached(&self, token: &str, hash: u64) -> Option<Arc<Principal>> {
        let key = front::Key {
            verifier: self.id,
            hash,
        };
        let (generation, now) = (self.generation(), jsonwebtoken::get_current_timestamp());
        if let Some(principal) = front::get(key, token, generation, now) {
            return Some(principal);
        }
        let hit = self.cache.get(token, hash)?;
        if !hit.fresh(generation, now) {
            return None;
        }
        Some(front::offer(key, token, &hit).unwrap_or(hit.principal))
    }

    fn remember(&self, token: &str, hash: u64, principal: &Arc<Principal>, generation: u64) {
        let now = jsonwebtoken::get_current_timestamp();
        let entry = Cached {
            principal: principal.clone(),
            generation,
            valid_until: principal.expires_at.min(now + CACHE_TTL_SECONDS),
        };
        // What the entry replaced or evicted is freed here, outside the cache's lock.
        drop(self.cache.insert(token, hash, entry));
    }

    /// The generation of the keys in force (fixed for local keys).
    fn generation(&self) -> u64 {
        match &self.keys {
            Keys::Remote(source) => source.generation(),
            Keys::Local(set) => set.generation(),
        }
    }

    /// Verifies `token` against the keys; returns the caller and the generation of the key set
    /// that verified it.
    async fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (header_b64, payload_b64, signature_b64) =
            split_token(token).ok_or(TokenError::Malformed)?;
        let header_json = decode(header_b64)?;
        let header: Header<'_> = json(&header_json)?;
        if !self.token_types.is_empty()
            && !header
                .typ
                .as_deref()
                .is_some_and(|typ| self.accepts_type(typ))
        {
            return Err(TokenError::WrongType);
        }
        let alg = Algorithm::from_str(&header.alg).map_err(|_| TokenError::DisallowedAlg)?;
        if !self.algorithms.contains(&alg) {
            return Err(TokenError::DisallowedAlg);
        }
        let kid = header.kid.as_deref();

        let mut keys = self.current_keys();
        if keys.is_empty() {
            if let Keys::Remote(source) = &self.keys {
                keys = source.refetch_for_unknown_kid(kid.unwrap_or("")).await;
            }
            if keys.is_empty() {
                return Err(TokenError::KeysUnavailable);
            }
        }
        if let (Some(kid), Keys::Remote(source)) = (kid, &self.keys)
            && !keys.has_kid(kid)
        {
            keys = source.refetch_for_unknown_kid(kid).await;
        }
        let mut candidates = keys.candidates(kid, alg);
        if candidates.clone().next().is_none() {
            return Err(match kid {
                Some(kid) if !keys.has_kid(kid) => TokenError::UnknownKid,
                Some(_) => TokenError::DisallowedAlg,
                None => TokenError::UnknownKid,
            });
        }
        // Decoded on the stack: no signature of an accepted algorithm is longer (RSA 8192).
        let mut signature = [MaybeUninit::uninit(); MAX_SIGNATURE_LEN];
        let signature = decode_into(signature_b64, &mut signature)?.ok_or(TokenError::Malformed)?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        if !candidates.any(|key| key.verifies(alg, signed, signature)) {
            return Err(TokenError::BadSignature);
        }
        // Decoded on the stack when it fits, as most payloads do.
        let mut stack = [MaybeUninit::uninit(); PAYLOAD_ON_STACK];
        let heap;
        let payload = match decode_into(payload_b64, &mut stack)? {
            Some(decoded) => decoded,
            None => {
                heap = decode(payload_b64)?;
                &heap[..]
            }
        };
        let claims: Claims = json(payload)?;
        let expires_at = self.check_claims(&claims)?;
        let scopes = claims.granted();
        let principal = Principal {
            claims,
            scopes,
            expires_at,
        };
        Ok((principal, keys.generation()))
    }

    /// Whether the header `typ` is one the policy accepts: [`typ_key`] of it is in the list,
    /// compared without allocating.
    fn accepts_type(&self, typ: &str) -> bool {
        const PREFIX: &str = "application/";
        let bare = match typ.get(..PREFIX.len()) {
            Some(head) if head.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
            _ => typ,
        };
        self.token_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(bare))
    }

    /// Checks the registered claims of a token whose signature verified: `exp` (required, an
    /// integer, not past), `nbf` (an integer not in the future, when present), `iss` (exactly
    /// the issuer, one string) and `aud` (a string or a list of strings naming this resource),
    /// `exp` and `nbf` with the leeway. Returns `exp`.
    fn check_claims(&self, claims: &Claims) -> Result<u64, TokenError> {
        let present = |name: &str| claims.get(name).filter(|v| !v.is_null());
        let exp = present("exp").ok_or(TokenError::Malformed)?;
        let iss = present("iss").ok_or(TokenError::WrongIssuer)?;
        let aud = present("aud").ok_or(TokenError::WrongAudience)?;
        let exp = exp.as_u64().ok_or(TokenError::Malformed)?;
        let nbf = match present("nbf") {
            Some(nbf) => Some(nbf.as_u64().ok_or(TokenError::Malformed)?),
            None => None,
        };
        let now = jsonwebtoken::get_current_timestamp();
        if exp < now.saturating_sub(self.leeway) {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(TokenError::NotYetValid);
        }
        // `iss` is one string (RFC 7519 §4.1.1).
        if iss.as_str() != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let ours = |a: &str| self.audiences.iter().any(|x| x == a);
        let aud_ok = match aud {
            Claim::Str(aud) => ours(aud),
            Claim::Json(Value::Array(list)) => {
                list.iter().all(Value::is_string) && list.iter().filter_map(Value::as_str).any(ours)
            }
            Claim::Json(_) => false,
        };
        if !aud_ok {
            return Err(TokenError::WrongAudience);
        }
        Ok(exp)
    }

    fn current_keys(&self) -> Arc<KeySet> {
        match &self.keys {
            Keys::Remote(source) => source.keys(),
            Keys::Local(set) => set.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const ISS: &str = "https://issuer.example";
    const AUD: &str = "https://mcp.example/mcp";

    /// A verifier trusting one generated ES256 key, and a signer with that key.
    fn setup() -> (Verifier, impl Fn(&str) -> String) {
        let (verifier, sign) = setup_headers(Vec::new());
        let head = r#"{"alg":"ES256","kid":"k1"}"#;
        (verifier, move |payload: &str| sign(head, payload))
    }

    /// A verifier trusting one generated ES256 key and accepting `token_types`, and a signer of
    /// a header and payload with that key.
    fn setup_headers(token_types: Vec<String>) -> (Verifier, impl Fn(&str, &str) -> String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
        let (set, _) = KeySet::from_json(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
        let expect = Expectations {
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            algorithms: vec![Algorithm::ES256],
            leeway: 0,
            token_types,
        };
        let sign = move |head: &str, payload: &str| {
            let head = URL_SAFE_NO_PAD.encode(head);
            let body = URL_SAFE_NO_PAD.encode(payload);
            let signed = format!("{head}.{body}");
            let sig = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        };
        (Verifier::new(expect, Keys::Local(Arc::new(set))), sign)
    }

    fn later() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    /// The claims of a valid token: the issuer, the audience and an expiry [`later`].
    fn valid_claims() -> String {
        format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{}}}"#, later())
    }

    async fn check(verifier: &Verifier, token: &str) -> Result<(), TokenError> {
        verifier.verify_uncached(token).await.map(drop)
    }

    #[tokio::test]
    async fn accepts_a_valid_token_and_its_audience_in_a_list() {
        let (verifier, sign) = setup();
        let exp = later();
        let token = sign(&format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{exp}}}"#));
        let (principal, _) = verifier.verify_uncached(&token).await.unwrap();
        assert_eq!(principal.expires_at, exp);
        let listed = sign(&format!(
            r#"{{"iss":"{ISS}","aud":["other","{AUD}/"],"exp":{exp},"nbf":1}}"#
        ));
        assert_eq!(check(&verifier, &listed).await, Ok(()));
    }

    #[tokio::test]
    async fn reads_payloads_too_long_for_the_stack() {
        let (verifier, sign) = setup();
        let pad = "x".repeat(2 * PAYLOAD_ON_STACK);
        let claims = format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"pad":"{pad}"}}"#,
            later()
        );
        let (principal, _) = verifier.verify_uncached(&sign(&claims)).await.unwrap();
        let read = principal.claims.get("pad").and_then(Claim::as_str);
        assert_eq!(read, Some(pad.as_str()));
        let repeated = claims.replace(r#""pad""#, r#""exp""#);
        assert_eq!(
            check(&verifier, &sign(&repeated)).await,
            Err(TokenError::Malformed)
        );
    }

    #[tokio::test]
    async fn refuses_a_token_whose_claims_repeat() {
        let (verifier, sign) = setup();
        let exp = later();
        let token = sign(&format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{exp},"exp":1}}"#
        ));
        assert_eq!(check(&verifier, &token).await, Err(TokenError::Malformed));
    }

    #[tokio::test]
    async fn checks_each_registered_claim() {
        let (verifier, sign) = setup();
        let exp = later();
        let now = jsonwebtoken::get_current_timestamp();
        let cases = [
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}"}}"#),
                TokenError::Malformed,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":null}}"#),
                TokenError::Malformed,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":1.5e12}}"#),
                TokenError::Malformed,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":"{exp}"}}"#),
                TokenError::Malformed,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{}}}"#, now - 5),
                TokenError::Expired,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{exp},"nbf":{exp}}}"#),
                TokenError::NotYetValid,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{exp},"nbf":"0"}}"#),
                TokenError::Malformed,
            ),
            (
                format!(r#"{{"aud":"{AUD}","exp":{exp}}}"#),
                TokenError::WrongIssuer,
            ),
            (
                format!(r#"{{"iss":["{ISS}"],"aud":"{AUD}","exp":{exp}}}"#),
                TokenError::WrongIssuer,
            ),
            (
                format!(r#"{{"iss":"{ISS}/","aud":"{AUD}","exp":{exp}}}"#),
                TokenError::WrongIssuer,
            ),
            (
                format!(r#"{{"iss":"{ISS}","exp":{exp}}}"#),
                TokenError::WrongAudience,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":"other","exp":{exp}}}"#),
                TokenError::WrongAudience,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":["{AUD}",7],"exp":{exp}}}"#),
                TokenError::WrongAudience,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":[],"exp":{exp}}}"#),
                TokenError::WrongAudience,
            ),
            (
                format!(r#"{{"iss":"{ISS}","aud":{{"{AUD}":1}},"exp":{exp}}}"#),
                TokenError::WrongAudience,
            ),
            (r#"["not","an","object"]"#.to_owned(), TokenError::Malformed),
        ];
        for (claims, expected) in cases {
            assert_eq!(
                check(&verifier, &sign(&claims)).await,
                Err(expected),
                "{claims}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_cache_keeps_the_latest_tokens() {
        let (mut verifier, sign) = setup();
        verifier.cache = TokenCache::new(3);
        let tokens: Vec<String> = (0..4)
            .map(|i| {
                let claims = format!(
                    r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"n":{i}}}"#,
                    later()
                );
                sign(&claims)
            })
            .collect();
        for token in &tokens {
            assert!(!verifier.verify(token).await.unwrap().1);
        }
        let cached = |i: usize| {
            let verifier = &verifier;
            let token = tokens[i].clone();
            async move { verifier.verify(&token).await.unwrap().1 }
        };
        assert!(cached(3).await && cached(2).await && cached(1).await);
        assert!(!cached(0).await, "the oldest was evicted");
    }

    #[tokio::test]
    async fn a_token_hit_again_on_one_thread_is_answered_from_its_own_copy() {
        let (verifier, sign) = setup();
        let token = sign(&valid_claims());
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(verifier.verify(&token).await.unwrap());
        }
        let flags: Vec<bool> = answers.iter().map(|(_, cached)| *cached).collect();
        assert_eq!(flags, [false, true, true, true], "hits are counted as such");
        let shared = &answers[0].0;
        assert!(Arc::ptr_eq(&answers[1].0, shared), "the shared entry");
        assert!(!Arc::ptr_eq(&answers[2].0, shared), "this thread's copy");
        assert!(Arc::ptr_eq(&answers[3].0, &answers[2].0));
        assert_eq!(answers[3].0.expires_at, shared.expires_at);
    }

    #[tokio::test]
    async fn reads_the_header_members_it_knows_and_refuses_the_rest() {
        let (verifier, sign) = setup_headers(vec![typ_key("at+jwt")]);
        let claims = valid_claims();
        for header in [
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"typ":"Application/AT+JWT","x":{"crit":[1]},"kid":"k\u0031","\u0061lg":"ES256"}"#,
        ] {
            assert_eq!(
                check(&verifier, &sign(header, &claims)).await,
                Ok(()),
                "{header}"
            );
        }
        for header in [
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"jwt"}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"application/"}"#,
        ] {
            assert_eq!(
                check(&verifier, &sign(header, &claims)).await,
                Err(TokenError::WrongType),
                "{header}"
            );
        }
        for header in [
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","crit":["exp"]}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","b64":false}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","zip":"DEF"}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","enc":null}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","c\u0072it":[]}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","alg":"ES256"}"#,
            r#"{"alg":"ES256","kid":null,"kid":"k1","typ":"at+jwt"}"#,
            r#"{"alg":null,"kid":"k1","typ":"at+jwt"}"#,
            r#"{"alg":"ES256","kid":7,"typ":"at+jwt"}"#,
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"} x"#,
            r#"{"kid":"k1","typ":"at+jwt"}"#,
            r#"["ES256"]"#,
        ] {
            assert_eq!(
                check(&verifier, &sign(header, &claims)).await,
                Err(TokenError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn decodes_parts_exactly_as_strictly_as_base64url_without_padding() {
        let sample = URL_SAFE_NO_PAD.encode((0..=255).collect::<Vec<u8>>());
        // Not a multiple of 3 bytes: what fits is told by the exact decoded length.
        let mut buf = [MaybeUninit::uninit(); 50];
        let mut checked = 0;
        // Every length around the decoder's block sizes, each character replaced in turn by
        // one outside the alphabet, by padding, or by another in the alphabet.
        for len in 0..=70 {
            let part = &sample[..len];
            for at in 0..=len {
                for with in [
                    "", "+", "/", "=", "==", " ", "\n", ".", "é", "\0", "A", "-", "_", "z",
                ] {
                    let end = if at < len { at + 1 } else { len };
                    let mutated = format!("{}{with}{}", &part[..at], &part[end..]);
                    let expected = URL_SAFE_NO_PAD.decode(&mutated).ok();
                    assert_eq!(decode(&mutated).ok(), expected, "{mutated:?}");
                    // Into the buffer: the same, or `None` for a part too long for it.
                    match (&expected, decode_into(&mutated, &mut buf)) {
                        (Some(expected), Ok(Some(decoded))) => assert_eq!(expected, decoded),
                        (Some(expected), Ok(None)) => assert!(expected.len() > 50),
                        (None, Ok(None)) => assert!(mutated.len() * 3 / 4 > 50, "{mutated:?}"),
                        (None, Err(_)) => {}
                        (_, other) => panic!("{mutated:?}: {other:?}"),
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 30_000);
    }

    #[test]
    fn splits_tokens_of_exactly_three_parts() {
        assert_eq!(split_token("a.b.c"), Some(("a", "b", "c")));
        assert_eq!(split_token(".."), Some(("", "", "")));
        for token in ["", "a", "a.b", "a.b.c.", "a.b.c.d", "...", "a..b.c"] {
            assert_eq!(split_token(token), None, "{token}");
        }
    }

    #[tokio::test]
    async fn refuses_a_changed_payload_or_signature() {
        let (verifier, sign) = setup();
        let token = sign(&valid_claims());
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"scope":"admin"}}"#,
            later()
        ));
        let forged = format!("{head}.{other}.{signature}");
        assert_eq!(
            check(&verifier, &forged).await,
            Err(TokenError::BadSignature)
        );
        let mut bad_sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bad_sig[10] ^= 1;
        let (signed, _) = token.rsplit_once('.').unwrap();
        let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bad_sig));
        assert_eq!(
            check(&verifier, &flipped).await,
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            check(&verifier, &format!("{token}.")).await,
            Err(TokenError::Malformed)
        );
    }
}
