//! Bearer-token verification: signature against the issuer's keys, then `iss`, `aud`, `exp` and
//! `nbf`, with verified tokens cached until they expire.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::jwks::JwksSource;
use crate::keys::KeySet;
use crate::metrics::Reason;
use crate::scopes::Granted;

/// Longest token accepted; real access tokens are a few KB at most.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most tokens kept in the verified-token cache.
const CACHE_CAPACITY: usize = 10_000;
/// Longest time a verified token is answered from the cache before it is verified again.
pub const CACHE_TTL_SECONDS: u64 = 60;

/// A verified caller.
#[derive(Debug)]
pub struct Principal {
    /// All claims of the token.
    pub claims: Map<String, Value>,
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

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => TokenError::DisallowedAlg,
        _ => TokenError::Malformed,
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
    validations: HashMap<Algorithm, Validation>,
    token_types: Vec<String>,
    cache: Mutex<HashMap<Box<str>, Cached>>,
}

/// A verified token, valid from the cache while the key set it was verified with is current
/// and until `valid_until` (its `exp`, at most [`CACHE_TTL_SECONDS`] after verification).
struct Cached {
    principal: Arc<Principal>,
    generation: u64,
    valid_until: u64,
}

/// Header members that change how a token must be read, none of which this verifier implements:
/// `crit` lists extensions a recipient must understand or reject the token (RFC 7515 §4.1.11),
/// `b64` changes what is signed (RFC 7797), and `zip` and `enc` belong to encrypted tokens
/// (RFC 7516), never to a signed one.
const UNSUPPORTED_HEADERS: [&str; 4] = ["crit", "b64", "zip", "enc"];

#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
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
        let validations = expect
            .algorithms
            .iter()
            .filter(|alg| alg.family() != jsonwebtoken::AlgorithmFamily::Hmac)
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = expect.leeway;
                v.validate_nbf = true;
                v.set_issuer(&[&expect.issuer]);
                v.set_audience(&audiences);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, v)
            })
            .collect();
        Verifier {
            keys,
            issuer: expect.issuer.clone(),
            validations,
            token_types: expect.token_types.iter().map(|t| typ_key(t)).collect(),
            cache: Mutex::new(HashMap::new()),
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
        if let Some(hit) = self.cached(token) {
            return Ok((hit, true));
        }
        let (principal, generation) = self.verify_uncached(token).await?;
        let principal = Arc::new(principal);
        self.remember(token, &principal, generation);
        Ok((principal, false))
    }

    fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        let generation = self.generation();
        let cache = self.cache.lock().expect("token cache lock");
        let hit = cache.get(token)?;
        (hit.generation == generation && hit.valid_until > jsonwebtoken::get_current_timestamp())
            .then(|| hit.principal.clone())
    }

    fn remember(&self, token: &str, principal: &Arc<Principal>, generation: u64) {
        let now = jsonwebtoken::get_current_timestamp();
        let mut cache = self.cache.lock().expect("token cache lock");
        if cache.len() >= CACHE_CAPACITY {
            let current = self.generation();
            cache.retain(|_, c| c.valid_until > now && c.generation == current);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        let entry = Cached {
            principal: principal.clone(),
            generation,
            valid_until: principal.expires_at.min(now + CACHE_TTL_SECONDS),
        };
        cache.insert(token.into(), entry);
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
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        let members: Map<String, Value> =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if UNSUPPORTED_HEADERS.iter().any(|m| members.contains_key(*m)) {
            return Err(TokenError::Malformed);
        }
        if !self.token_types.is_empty()
            && !header
                .typ
                .as_deref()
                .is_some_and(|typ| self.token_types.contains(&typ_key(typ)))
        {
            return Err(TokenError::WrongType);
        }
        let alg = Algorithm::from_str(&header.alg).map_err(|_| TokenError::DisallowedAlg)?;
        let validation = self
            .validations
            .get(&alg)
            .ok_or(TokenError::DisallowedAlg)?;
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
        let candidates = keys.candidates(kid, alg);
        if candidates.is_empty() {
            return Err(match kid {
                Some(kid) if !keys.has_kid(kid) => TokenError::UnknownKid,
                Some(_) => TokenError::DisallowedAlg,
                None => TokenError::UnknownKid,
            });
        }
        let mut last = TokenError::BadSignature;
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, validation) {
                Ok(data) => {
                    let claims = data.claims;
                    // `iss` is one string (RFC 7519 §4.1.1); the library also takes a list.
                    if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
                        return Err(TokenError::WrongIssuer);
                    }
                    let expires_at = claims
                        .get("exp")
                        .and_then(Value::as_u64)
                        .ok_or(TokenError::Malformed)?;
                    let scopes = Granted::from_claims(&claims);
                    let principal = Principal {
                        claims,
                        scopes,
                        expires_at,
                    };
                    return Ok((principal, keys.generation()));
                }
                Err(e) => {
                    last = map_error(e.kind());
                    if last != TokenError::BadSignature {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn current_keys(&self) -> Arc<KeySet> {
        match &self.keys {
            Keys::Remote(source) => source.keys(),
            Keys::Local(set) => set.clone(),
        }
    }
}
