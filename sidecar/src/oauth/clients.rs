//! Clients: dynamic registration (RFC 7591), lookup, client ID metadata documents, and client
//! authentication at the token and revocation endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::crypto::{constant_time_eq, random_token, sha256_b64};
use super::metrics::OpResult;
use super::records::ClientRecord;
use mcp_warden_policy::RateLimitedEndpoint;

use super::{
    CLIENT_TTL, ClientAddr, OAuthProxy, RateKey, Reject, UNUSED_CLIENT_TTL, now, redirect,
};

/// A registration request. Unknown members are ignored (RFC 7591 §2).
#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    client_uri: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    application_type: Option<String>,
    #[serde(default)]
    software_id: Option<String>,
    #[serde(default)]
    software_version: Option<String>,
}

fn metadata_error(description: impl Into<String>) -> Reject {
    Reject::bad("invalid_client_metadata", description)
}

/// Longest `client_name` accepted, in bytes (it is shown on the consent page).
pub const MAX_CLIENT_NAME: usize = 200;
/// Longest other free-text member echoed in the registration answer, in bytes.
const MAX_TEXT: usize = 1000;

/// Bounds the members a registration stores or echoes (redirect URIs are bounded with their
/// other rules in [`redirect::validate_registration`]).
fn check_lengths(req: &RegisterRequest) -> Result<(), Reject> {
    if req
        .client_name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_CLIENT_NAME)
    {
        return Err(metadata_error(format!(
            "client_name is longer than {MAX_CLIENT_NAME} bytes"
        )));
    }
    if req
        .client_uri
        .as_ref()
        .is_some_and(|u| u.len() > redirect::MAX_URI_LENGTH)
    {
        return Err(metadata_error(format!(
            "client_uri is longer than {} bytes",
            redirect::MAX_URI_LENGTH
        )));
    }
    for (name, value) in [
        ("scope", &req.scope),
        ("software_id", &req.software_id),
        ("software_version", &req.software_version),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_TEXT) {
            return Err(metadata_error(format!(
                "{name} is longer than {MAX_TEXT} bytes"
            )));
        }
    }
    let listed = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len);
    if listed(&req.grant_types) > 8 || listed(&req.response_types) > 8 {
        return Err(metadata_error("too many grant or response types"));
    }
    Ok(())
}

const AUTH_METHODS: [&str; 3] = ["none", "client_secret_basic", "client_secret_post"];

/// A registration request that passed every check, with defaults filled in.
#[derive(Debug)]
pub struct Registration {
    /// The request as sent.
    pub request: RegisterRequest,
    /// `token_endpoint_auth_method` (default `client_secret_basic`).
    pub method: String,
    /// `grant_types` (default `authorization_code`).
    pub grant_types: Vec<String>,
    /// `response_types` (default `code`).
    pub response_types: Vec<String>,
}

/// Parses and checks a registration body (RFC 7591) against the policy's redirect URI list.
pub fn check_registration(
    allowed_redirect_uris: &[String],
    body: &[u8],
) -> Result<Registration, Reject> {
    let req: RegisterRequest = serde_json::from_slice(body).map_err(|e| {
        Reject::bad(
            "invalid_client_metadata",
            format!("body is not a registration request: {e}"),
        )
    })?;
    redirect::validate_registration(allowed_redirect_uris, &req.redirect_uris)
        .map_err(|why| Reject::bad("invalid_redirect_uri", why))?;
    let method = req
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".into());
    if !AUTH_METHODS.contains(&method.as_str()) {
        return Err(metadata_error(format!(
            "token_endpoint_auth_method {method:?} is not supported"
        )));
    }
    let grant_types = req
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if let Some(g) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(metadata_error(format!("grant type {g:?} is not supported")));
    }
    let response_types = req
        .response_types
        .clone()
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_error("only the code response type is supported"));
    }
    if let Some(t) = req
        .application_type
        .as_deref()
        .filter(|t| !matches!(*t, "web" | "native"))
    {
        return Err(metadata_error(format!(
            "application_type {t:?} is not web or native"
        )));
    }
    check_lengths(&req)?;
    Ok(Registration {
        request: req,
        method,
        grant_types,
        response_types,
    })
}

/// `POST /register`: validates and stores a client; the answer echoes what was registered and
/// omits absent optional fields (some clients choke on `null`).
pub async fn register(
    State(proxy): State<Arc<OAuthProxy>>,
    addr: ClientAddr,
    body: axum::body::Bytes,
) -> Response {
    let result = register_inner(&proxy, &addr, &body).await;
    proxy.metrics.registration(match &result {
        Ok(_) => OpResult::Success,
        Err(e) => e.result(),
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn register_inner(
    proxy: &OAuthProxy,
    addr: &ClientAddr,
    body: &[u8],
) -> Result<Response, Reject> {
    proxy
        .limit(RateLimitedEndpoint::Register, RateKey::Address(addr))
        .await?;
    let Registration {
        request: req,
        method,
        grant_types,
        response_types,
    } = check_registration(&proxy.spec.allowed_redirect_uris, body)?;
    let client_id = random_token(18);
    let secret = (method != "none").then(|| random_token(32));
    let record = ClientRecord {
        client_id: client_id.clone(),
        client_name: req.client_name.clone(),
        redirect_uris: req.redirect_uris.clone(),
        token_endpoint_auth_method: method.clone(),
        secret_hash: secret.as_deref().map(|s| sha256_b64(s.as_bytes())),
        metadata_document: false,
    };
    // New: refused first when the store is filling up, and short-lived until the client is used
    // in an authorization request (which extends it to CLIENT_TTL).
    proxy
        .put_new_json("client", &client_id, &record, UNUSED_CLIENT_TTL)
        .await?;
    let mut out = serde_json::json!({
        "client_id": client_id,
        "client_id_issued_at": now(),
        "redirect_uris": req.redirect_uris,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": method,
    });
    let obj = out.as_object_mut().expect("object");
    if let Some(secret) = secret {
        obj.insert("client_secret".into(), secret.into());
        obj.insert("client_secret_expires_at".into(), 0.into());
    }
    for (name, value) in [
        ("client_name", req.client_name),
        ("client_uri", req.client_uri),
        ("scope", req.scope),
        ("application_type", req.application_type),
        ("software_id", req.software_id),
        ("software_version", req.software_version),
    ] {
        if let Some(v) = value {
            obj.insert(name.into(), v.into());
        }
    }
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(out),
    )
        .into_response())
}

impl OAuthProxy {
    /// The client behind `client_id`: a registered one, or (URL-shaped ids) a fetched metadata
    /// document. Unknown and expired ids are `invalid_client` (401), so clients re-register.
    pub(super) async fn client(&self, client_id: &str) -> Result<ClientRecord, Reject> {
        self.client_with(client_id, None).await
    }

    /// The store key of a registered client's record; `None` for URL-shaped ids (metadata
    /// documents) and ids no registration has.
    pub(super) fn client_key(&self, client_id: &str) -> Option<String> {
        let url = client_id.starts_with("https://") || client_id.starts_with("http://");
        (!url && !client_id.is_empty() && client_id.len() <= 256)
            .then(|| self.key("client", client_id))
    }

    /// Like [`OAuthProxy::client`], with the record under [`OAuthProxy::client_key`] already
    /// read (`Some(value)`) or still to read (`None`).
    pub(super) async fn client_with(
        &self,
        client_id: &str,
        stored: Option<Option<Vec<u8>>>,
    ) -> Result<ClientRecord, Reject> {
        if client_id.starts_with("https://") || client_id.starts_with("http://") {
            return self.metadata_client(client_id).await;
        }
        let key = self
            .client_key(client_id)
            .ok_or_else(|| Reject::invalid_client("unknown client_id"))?;
        let stored = match stored {
            Some(value) => value,
            None => self.store.get(&key).await?,
        };
        super::decode::<ClientRecord>(stored)?
            .ok_or_else(|| Reject::invalid_client("unknown or expired client_id; register again"))
    }

    /// Keeps a registered client for [`CLIENT_TTL`] from now: called when it is used in an
    /// authorization request. Until then a registration lives [`UNUSED_CLIENT_TTL`] only, so
    /// registrations made to fill the store go away soon.
    pub(super) async fn keep_client(&self, client: &ClientRecord) -> Result<(), Reject> {
        if !client.metadata_document {
            self.put_json("client", &client.client_id, client, CLIENT_TTL)
                .await?;
        }
        Ok(())
    }

    /// Authenticates the client of a token or revocation request (Basic header or form fields).
    pub(super) async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        form_id: Option<&str>,
        form_secret: Option<&str>,
    ) -> Result<ClientRecord, Reject> {
        let (client_id, secret) = credentials(headers, form_id, form_secret)?;
        let client = self.client(&client_id).await?;
        check_secret(client, secret.as_deref())
    }
}

/// The client id and secret a token or revocation request presents: HTTP Basic or form fields
/// (`client_secret` absent for public clients).
pub(super) fn credentials(
    headers: &HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<(String, Option<String>), Reject> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b64| -> Result<(String, String), Reject> {
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| Reject::invalid_client("malformed Basic credentials"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| Reject::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(|| Reject::invalid_client("malformed Basic credentials"))?;
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok((dec(id), dec(secret)))
        })
        .transpose()?;
    match (basic, form_id) {
        (Some((id, _)), Some(f)) if id != f => Err(Reject::invalid_client(
            "client_id differs between header and body",
        )),
        (Some((id, secret)), _) => Ok((id, Some(secret))),
        (None, Some(id)) => Ok((id.to_owned(), form_secret.map(str::to_owned))),
        (None, None) => Err(Reject::invalid_client("client authentication is required")),
    }
}

/// `client` when it needs no secret or `secret` is its secret.
pub(super) fn check_secret(
    client: ClientRecord,
    secret: Option<&str>,
) -> Result<ClientRecord, Reject> {
    match (&client.secret_hash, secret) {
        (None, _) => Ok(client),
        (Some(hash), Some(secret))
            if constant_time_eq(hash.as_bytes(), sha256_b64(secret.as_bytes()).as_bytes()) =>
        {
            Ok(client)
        }
        (Some(_), _) => Err(Reject::invalid_client("client authentication failed")),
    }
}
