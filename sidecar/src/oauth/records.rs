//! What the proxy keeps in the store, serialised as JSON. Every record has a TTL.

use serde::{Deserialize, Serialize};

use super::provider::Identity;

/// A registered client (DCR) or a resolved client ID metadata document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The id clients send.
    pub client_id: String,
    /// Display name (untrusted: shown as the client's claim, next to its redirect host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    /// SHA-256 of the client secret, for confidential clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Whether it came from a metadata document rather than `/register`.
    #[serde(default)]
    pub metadata_document: bool,
}

/// An authorization request waiting for the consent decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthRequest {
    /// Client.
    pub client_id: String,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// Whether the client sent `redirect_uri` (then the token request must repeat it).
    pub redirect_uri_given: bool,
    /// The client's `state`, echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The client's PKCE S256 challenge.
    pub code_challenge: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The audience (our resource URL).
    pub resource: String,
}

/// A flow sent to the upstream provider, found again by its upstream `state`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    /// The client's request.
    pub request: AuthRequest,
    /// Our PKCE verifier for the upstream code exchange.
    pub upstream_verifier: String,
    /// OIDC nonce.
    pub nonce: String,
    /// SHA-256 of the per-flow cookie set in the browser that started the flow.
    #[serde(default)]
    pub browser: String,
}

/// An authorization code, stored under its hash and taken exactly once. Also a signed-in flow
/// waiting for the consent decision (stored under its `tx` id, upstream sealed with `tx:<id>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CodeGrant {
    /// The request it answers, with the scopes granted to this user.
    pub request: AuthRequest,
    /// The signed-in user.
    pub identity: Identity,
    /// Upstream tokens, sealed with context `code:<hash>`.
    pub upstream: String,
}

/// A refresh-token family: one login of one user in one client, rotated on every use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Family {
    /// Client it belongs to.
    pub client_id: String,
    /// The user.
    pub identity: Identity,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Audience.
    pub resource: String,
    /// Hash of the one valid refresh token.
    pub current: String,
    /// Hashes of earlier tokens, newest last (reuse of any of them revokes the family).
    pub previous: Vec<String>,
    /// When `current` was issued (seconds since the epoch).
    pub rotated_at: u64,
    /// The current token sealed, handed to a concurrent duplicate of the last rotation within
    /// the grace window so that neither request logs the user out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_token: Option<String>,
    /// Upstream tokens, sealed with context `family:<id>`.
    pub upstream: String,
    /// Absolute end of the family (seconds since the epoch).
    pub expires_at: u64,
}
