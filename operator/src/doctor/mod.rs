//! `mcp-warden doctor`: probes a deployed MCP endpoint the way an MCP client does (the 401
//! challenge, RFC 9728 protected-resource metadata, RFC 8414 / OpenID authorization server
//! metadata, JWKS, CORS, and with a token its claims and an `initialize` call) and explains
//! each finding. It works against any MCP server, not only ones behind mcp-warden.

mod http;
mod token;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Client, Method};
use serde::Serialize;
use serde_json::{Value, json};
use url::Url;

use http::Fetched;

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The MCP endpoint, exactly as clients are configured with it.
    pub url: String,
    /// An access token to check (decoded, not trusted) and to call `initialize` with.
    pub token: Option<String>,
    /// The browser origin the CORS checks use.
    pub origin: String,
    /// Timeout of each request.
    pub timeout: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As a client needs it.
    Pass,
    /// Works, but some clients or setups will trip over it.
    Warn,
    /// Clients will fail.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier (`challenge`, `prm_path`, `as_issuer`, …).
    pub id: &'static str,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was found.
    pub summary: String,
    /// What to change (always set for failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The probed URL.
    pub url: String,
    /// True when no check failed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, id: &'static str, status: Status, summary: String, fix: Option<String>) {
        if status == Status::Fail {
            self.ok = false;
        }
        self.checks.push(Check {
            id,
            status,
            summary,
            fix,
        });
    }
    fn pass(&mut self, id: &'static str, summary: impl Into<String>) {
        self.add(id, Status::Pass, summary.into(), None);
    }
    fn warn(&mut self, id: &'static str, summary: impl Into<String>, fix: impl Into<String>) {
        self.add(id, Status::Warn, summary.into(), Some(fix.into()));
    }
    fn fail(&mut self, id: &'static str, summary: impl Into<String>, fix: impl Into<String>) {
        self.add(id, Status::Fail, summary.into(), Some(fix.into()));
    }
    /// Warn when something else already covers the need, fail otherwise.
    fn warn_or_fail(
        &mut self,
        covered: bool,
        id: &'static str,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let status = if covered { Status::Warn } else { Status::Fail };
        self.add(id, status, summary.into(), Some(fix.into()));
    }

    /// One line per check (✔ pass, ! warning, ✘ failure), a fix line under each failure and
    /// warning, and a count.
    pub fn text(&self) -> String {
        let mut out = format!("mcp-warden doctor {}\n", self.url);
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => '✔',
                Status::Warn => '!',
                Status::Fail => '✘',
            };
            out.push_str(&format!("{mark} {}: {}\n", c.id, c.summary));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("    fix: {fix}\n"));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{} passed, {} warnings, {} failed\n",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }
}

/// The `initialize` request `doctor` sends (as an MCP client's first request).
fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "mcp-warden-doctor", "version": env!("CARGO_PKG_VERSION")}
        }
    })
}

const ACCEPT_MCP: &str = "application/json, text/event-stream";
const PRM_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// `origin + well_known + path`, the RFC 8414 / RFC 9728 path-insertion form.
fn well_known(url: &Url, suffix: &str) -> String {
    let path = url.path().trim_end_matches('/');
    format!("{}{suffix}{path}", url.origin().ascii_serialization())
}

/// What the 401 challenge told.
#[derive(Default)]
struct Challenge {
    resource_metadata: Option<String>,
    scopes: Vec<String>,
}

/// Runs every check against `options.url`.
pub async fn run(options: &Options) -> Report {
    let mut report = Report {
        url: options.url.clone(),
        ok: true,
        checks: Vec::new(),
    };
    let url = match Url::parse(&options.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            report.fail(
                "url",
                format!("{:?} is not an absolute http(s) URL", options.url),
                "pass the MCP endpoint's full URL, e.g. https://mcp.example.com/mcp",
            );
            return report;
        }
    };
    let client = match http::client(options.timeout) {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                "client",
                format!("cannot build an HTTP client: {e}"),
                "report a bug",
            );
            return report;
        }
    };
    if url.scheme() == "http" && !is_loopback(&url) {
        report.warn(
            "https",
            "the endpoint is plain http on a non-loopback host; MCP clients require https",
            "serve the endpoint over https",
        );
    }
    let Some(challenge) = check_challenge(&mut report, &client, &options.url).await else {
        return report;
    };
    let Some((resource, servers)) =
        check_resource_metadata(&mut report, &client, &url, &challenge).await
    else {
        check_cors(&mut report, &client, options, None).await;
        return report;
    };
    let issuer = check_authorization_server(&mut report, &client, &servers).await;
    let metadata_url = challenge
        .resource_metadata
        .clone()
        .unwrap_or_else(|| well_known(&url, PRM_WELL_KNOWN));
    check_cors(&mut report, &client, options, Some(&metadata_url)).await;
    if let Some(token) = &options.token {
        check_token(
            &mut report,
            token,
            &resource,
            issuer.as_deref(),
            &servers,
            &challenge,
        );
        check_initialize(&mut report, &client, &options.url, token).await;
    }
    report
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// POSTs an MCP `initialize` request to `url`, with `token` as the bearer when given.
async fn send_initialize(
    client: &Client,
    url: &str,
    token: Option<&str>,
) -> Result<reqwest::Response, String> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("accept", ACCEPT_MCP)];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    http::send(
        client,
        Method::POST,
        url,
        &headers,
        Some(&initialize_request()),
    )
    .await
}

/// A request without a token must get 401 with a Bearer challenge naming the metadata.
async fn check_challenge(report: &mut Report, client: &Client, url: &str) -> Option<Challenge> {
    let response = match send_initialize(client, url, None).await {
        Ok(r) => r,
        Err(e) => {
            report.fail(
                "challenge",
                format!("no HTTP answer from {url}: {e}"),
                "check the URL, DNS, TLS and that the server is reachable from here",
            );
            return None;
        }
    };
    let status = response.status().as_u16();
    if status != 401 {
        let (summary, fix) = if (200..300).contains(&status) {
            (
                format!(
                    "initialize without a token was answered {status}: the endpoint is not protected"
                ),
                "put an authorization layer in front of the server (e.g. the mcp-warden sidecar)",
            )
        } else {
            (
                format!("expected 401 to a request without a token, got {status}"),
                "answer requests without a token with 401 and a WWW-Authenticate Bearer challenge",
            )
        };
        report.fail("challenge", summary, fix);
        return Some(Challenge::default());
    }
    let params = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(http::bearer_params);
    let Some(params) = params else {
        report.fail(
            "challenge",
            "401 without a WWW-Authenticate Bearer challenge",
            "answer 401 with `WWW-Authenticate: Bearer resource_metadata=\"<metadata URL>\"` (RFC 9728 §5.1)",
        );
        return Some(Challenge::default());
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let challenge = Challenge {
        resource_metadata: param("resource_metadata"),
        scopes: param("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    match &challenge.resource_metadata {
        Some(rm) => report.pass(
            "challenge",
            format!("401 with a Bearer challenge, resource_metadata=\"{rm}\""),
        ),
        None => report.warn(
            "challenge",
            "401 with a Bearer challenge but no resource_metadata; clients must guess the well-known URL",
            "add resource_metadata=\"<metadata URL>\" to the challenge (RFC 9728 §5.1)",
        ),
    }
    if challenge.scopes.is_empty() {
        report.warn(
            "challenge_scope",
            "the challenge names no scope; clients fall back to scopes_supported or ask for none",
            "add scope=\"<scopes a client needs>\" to the challenge",
        );
    } else {
        report.pass(
            "challenge_scope",
            format!(
                "the challenge asks for scope \"{}\"",
                challenge.scopes.join(" ")
            ),
        );
    }
    Some(challenge)
}

/// Whether a metadata document's `resource` matches the endpoint (exactly, or for the root
/// document an origin-level resource that covers it).
fn resource_of(doc: &Value) -> Option<&str> {
    doc.get("resource").and_then(Value::as_str)
}

/// The protected-resource metadata at the challenge's URL, the path-suffixed well-known URL
/// and the root one; returns the resource and the authorization servers.
async fn check_resource_metadata(
    report: &mut Report,
    client: &Client,
    url: &Url,
    challenge: &Challenge,
) -> Option<(String, Vec<String>)> {
    let endpoint = url.as_str().to_owned();
    let wanted = if url.path() == "/" && !endpoint_has_trailing_slash(url) {
        endpoint.trim_end_matches('/').to_owned()
    } else {
        endpoint.clone()
    };
    let path_url = well_known(url, PRM_WELL_KNOWN);
    let root_url = format!("{}{PRM_WELL_KNOWN}", url.origin().ascii_serialization());
    let mut candidates: Vec<(&'static str, String)> = Vec::new();
    if let Some(rm) = &challenge.resource_metadata
        && rm != &path_url
        && rm != &root_url
    {
        candidates.push(("prm_challenge", rm.clone()));
    }
    candidates.push(("prm_path", path_url.clone()));
    if root_url != path_url {
        candidates.push(("prm_root", root_url.clone()));
    }
    let mut fetched = Vec::new();
    for (id, u) in candidates {
        let f = http::get_json(client, &u).await;
        fetched.push((id, u, f));
    }
    let matches = |doc: &Value| resource_of(doc) == Some(wanted.as_str());
    let any_document = fetched
        .iter()
        .any(|(_, _, f)| matches!(f, Fetched::Json(_)));
    let usable = fetched.iter().find_map(|(_, _, f)| match f {
        Fetched::Json(doc) if matches(doc) => Some(doc.clone()),
        _ => None,
    });
    for (id, u, f) in &fetched {
        let primary = *id != "prm_root";
        match f {
            Fetched::Json(doc) if matches(doc) => {
                report.pass(id, format!("{u} names resource \"{wanted}\""))
            }
            Fetched::Json(doc) => {
                let found = resource_of(doc).unwrap_or("(none)");
                let origin_level = !primary
                    && wanted.starts_with(found)
                    && found.trim_end_matches('/') == url.origin().ascii_serialization();
                if origin_level {
                    report.pass(
                        id,
                        format!("{u} names the origin \"{found}\", which covers the endpoint"),
                    );
                } else {
                    report.warn_or_fail(
                        !primary && usable.is_some(),
                        id,
                        format!("{u} names resource \"{found}\", not \"{wanted}\"; clients refuse a mismatch"),
                        format!("set `resource` in that document to exactly \"{wanted}\""),
                    );
                }
            }
            other => report.warn_or_fail(
                if primary {
                    usable.is_some()
                } else {
                    any_document
                },
                id,
                format!(
                    "no protected-resource metadata at {u} ({})",
                    describe(other)
                ),
                format!("serve RFC 9728 metadata with \"resource\": \"{wanted}\" at {path_url}"),
            ),
        }
    }
    let doc = usable?;
    let servers: Vec<String> = doc
        .get("authorization_servers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if servers.is_empty() {
        report.fail(
            "authorization_servers",
            "the protected-resource metadata lists no authorization_servers",
            "add \"authorization_servers\": [\"<issuer URL>\"] to the metadata",
        );
        return None;
    }
    report.pass(
        "authorization_servers",
        format!("authorization server {}", servers.join(", ")),
    );
    Some((wanted, servers))
}

fn endpoint_has_trailing_slash(url: &Url) -> bool {
    url.as_str().ends_with('/')
}

fn describe(f: &Fetched) -> String {
    match f {
        Fetched::Json(_) => "a JSON document".into(),
        Fetched::Status(s) => format!("HTTP {s}"),
        Fetched::NotJson => "the body is not a JSON object".into(),
        Fetched::Unreachable(e) => e.clone(),
    }
}

/// The first authorization server's metadata (RFC 8414 and OpenID discovery): issuer, PKCE,
/// client registration, `iss` response parameter, JWKS. Returns the verified issuer.
async fn check_authorization_server(
    report: &mut Report,
    client: &Client,
    servers: &[String],
) -> Option<String> {
    let issuer = &servers[0];
    let Ok(issuer_url) = Url::parse(issuer) else {
        report.fail(
            "as_metadata",
            format!("authorization server \"{issuer}\" is not a URL"),
            "list the authorization server's issuer URL in authorization_servers",
        );
        return None;
    };
    let rfc8414 = well_known(&issuer_url, "/.well-known/oauth-authorization-server");
    let mut oidc_urls = vec![format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )];
    let inserted = well_known(&issuer_url, "/.well-known/openid-configuration");
    if !oidc_urls.contains(&inserted) {
        oidc_urls.push(inserted);
    }
    let rfc_doc = http::get_json(client, &rfc8414).await;
    let mut oidc = None;
    let mut oidc_missing = Vec::new();
    for u in &oidc_urls {
        match http::get_json(client, u).await {
            Fetched::Json(doc) => {
                oidc = Some((u.clone(), doc));
                break;
            }
            other => oidc_missing.push(format!("{u} ({})", describe(&other))),
        }
    }
    let rfc = match rfc_doc {
        Fetched::Json(doc) => Some((rfc8414.clone(), doc)),
        other => {
            oidc_missing.insert(0, format!("{rfc8414} ({})", describe(&other)));
            None
        }
    };
    if rfc.is_none() && oidc.is_none() {
        report.fail(
            "as_metadata",
            format!(
                "no authorization server metadata at {}",
                oidc_missing.join(", ")
            ),
            format!("serve RFC 8414 metadata for issuer \"{issuer}\" at {rfc8414}"),
        );
        return None;
    }
    match &rfc {
        Some((u, _)) => report.pass("as_rfc8414", format!("RFC 8414 metadata at {u}")),
        None => report.warn(
            "as_rfc8414",
            format!("no RFC 8414 metadata at {rfc8414} (OpenID discovery found)"),
            "clients that only try RFC 8414 need it; serve the same document there",
        ),
    }
    match &oidc {
        Some((u, _)) => report.pass("as_oidc", format!("OpenID discovery at {u}")),
        None => report.warn(
            "as_oidc",
            format!("no OpenID discovery at {}", oidc_urls.join(" or ")),
            "clients that only try OpenID discovery need it; serve the same document there",
        ),
    }
    let mut mismatches = Vec::new();
    for (u, doc) in rfc.iter().chain(oidc.iter()) {
        let found = doc
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or("(none)");
        if found != issuer {
            mismatches.push(format!("{u} says issuer \"{found}\""));
        }
    }
    let issuer_ok = mismatches.is_empty();
    if issuer_ok {
        report.pass(
            "as_issuer",
            format!("issuer \"{issuer}\" matches authorization_servers"),
        );
    } else {
        report.fail(
            "as_issuer",
            format!(
                "{}, but the protected-resource metadata names \"{issuer}\"; clients refuse the mismatch",
                mismatches.join("; ")
            ),
            "list the authorization server's exact issuer (scheme, host, path, no trailing slash difference) in authorization_servers",
        );
    }
    let doc = &rfc.as_ref().or(oidc.as_ref()).expect("one document").1;
    let methods: Vec<&str> = doc
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if methods.contains(&"S256") {
        report.pass("pkce_s256", "PKCE with S256 is supported");
    } else {
        report.fail(
            "pkce_s256",
            "code_challenge_methods_supported does not list S256; MCP clients refuse such servers",
            "support PKCE S256 and advertise \"code_challenge_methods_supported\": [\"S256\"]",
        );
    }
    let registration = doc.get("registration_endpoint").and_then(Value::as_str);
    let cimd = doc
        .get("client_id_metadata_document_supported")
        .and_then(Value::as_bool)
        == Some(true);
    match (registration, cimd) {
        (None, false) => report.warn(
            "client_registration",
            "neither registration_endpoint nor client_id_metadata_document_supported: clients need a pre-registered client ID",
            "enable dynamic client registration or client ID metadata documents, or give users a client ID",
        ),
        (r, c) => {
            let mut ways = Vec::new();
            if let Some(r) = r {
                ways.push(format!("dynamic registration at {r}"));
            }
            if c {
                ways.push("client ID metadata documents".to_owned());
            }
            report.pass("client_registration", ways.join(" and "));
        }
    }
    if doc
        .get("authorization_response_iss_parameter_supported")
        .and_then(Value::as_bool)
        == Some(true)
    {
        report.pass(
            "iss_parameter",
            "authorization responses carry iss (RFC 9207)",
        );
    } else {
        report.warn(
            "iss_parameter",
            "authorization_response_iss_parameter_supported is not true: no mix-up defence (RFC 9207)",
            "return iss in authorization responses and advertise it",
        );
    }
    match doc.get("jwks_uri").and_then(Value::as_str) {
        None => report.warn(
            "jwks",
            "the metadata has no jwks_uri; JWT access tokens cannot be verified by keys",
            "publish the signing keys and set jwks_uri (or use introspection for opaque tokens)",
        ),
        Some(jwks_uri) => match http::get_json(client, jwks_uri).await {
            Fetched::Json(jwks) => {
                let n = jwks
                    .get("keys")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if n > 0 {
                    report.pass("jwks", format!("{jwks_uri} serves {n} keys"));
                } else {
                    report.fail(
                        "jwks",
                        format!("{jwks_uri} serves no keys"),
                        "publish the access-token signing keys at jwks_uri",
                    );
                }
            }
            other => report.fail(
                "jwks",
                format!(
                    "jwks_uri {jwks_uri} is not reachable ({})",
                    describe(&other)
                ),
                "make jwks_uri reachable from where resource servers and clients run",
            ),
        },
    }
    issuer_ok.then(|| issuer.clone())
}

/// Browser clients (e.g. the MCP Inspector) need a CORS preflight answer on the endpoint, CORS
/// on the metadata, and the challenge header exposed.
async fn check_cors(
    report: &mut Report,
    client: &Client,
    options: &Options,
    metadata: Option<&str>,
) {
    let origin = options.origin.as_str();
    let request_headers = "authorization, content-type, mcp-protocol-version";
    let preflight = http::send(
        client,
        Method::OPTIONS,
        &options.url,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", request_headers),
        ],
        None,
    )
    .await;
    let fix = format!(
        "allow the origin {origin} (e.g. spec.cors.allowedOrigins) if browser clients should connect"
    );
    match preflight {
        Ok(r) => {
            let allow_origin = header(&r, "access-control-allow-origin");
            let allow_headers = header(&r, "access-control-allow-headers").to_ascii_lowercase();
            let origin_ok = allow_origin == "*" || allow_origin == origin;
            let headers_ok = allow_headers
                .split(',')
                .any(|h| h.trim() == "authorization");
            if r.status().is_success() && origin_ok && headers_ok {
                report.pass(
                    "cors_preflight",
                    format!("preflight from {origin} is allowed"),
                );
            } else if r.status().is_success() && origin_ok {
                report.warn(
                    "cors_preflight",
                    format!("preflight allows {origin} but not the Authorization header"),
                    "list authorization (explicitly; `*` does not cover it) in Access-Control-Allow-Headers",
                );
            } else {
                report.warn(
                    "cors_preflight",
                    format!(
                        "preflight from {origin} refused (HTTP {}); browser clients cannot connect",
                        r.status().as_u16()
                    ),
                    fix.clone(),
                );
            }
        }
        Err(e) => report.warn(
            "cors_preflight",
            format!("preflight failed: {e}"),
            fix.clone(),
        ),
    }
    if let Some(metadata) = metadata {
        match http::send(client, Method::GET, metadata, &[("origin", origin)], None).await {
            Ok(r)
                if r.status().is_success()
                    && !header(&r, "access-control-allow-origin").is_empty() =>
            {
                report.pass(
                    "cors_metadata",
                    "the protected-resource metadata allows cross-origin reads",
                )
            }
            _ => report.warn(
                "cors_metadata",
                format!("{metadata} has no Access-Control-Allow-Origin for {origin}"),
                "answer the metadata with Access-Control-Allow-Origin: *",
            ),
        }
    }
    let challenge = http::send(
        client,
        Method::POST,
        &options.url,
        &[("origin", origin), ("accept", ACCEPT_MCP)],
        Some(&initialize_request()),
    )
    .await;
    if let Ok(r) = challenge {
        let exposed = header(&r, "access-control-expose-headers").to_ascii_lowercase();
        if r.status() == 401
            && !header(&r, "access-control-allow-origin").is_empty()
            && exposed
                .split(',')
                .any(|h| matches!(h.trim(), "www-authenticate" | "*"))
        {
            report.pass(
                "cors_challenge",
                "browser clients can read the 401 challenge",
            );
        } else {
            report.warn(
                "cors_challenge",
                format!("a browser at {origin} cannot read the 401 challenge (HTTP {})", r.status().as_u16()),
                "answer with Access-Control-Allow-Origin and Access-Control-Expose-Headers: WWW-Authenticate",
            );
        }
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The token's claims against the metadata (read, never trusted: the signature is not checked).
fn check_token(
    report: &mut Report,
    token: &str,
    resource: &str,
    issuer: Option<&str>,
    servers: &[String],
    challenge: &Challenge,
) {
    let Some(claims) = token::decode(token) else {
        report.warn(
            "token_claims",
            "the token is not a JWT; only the server (by introspection) can read it",
            "nothing to fix if the server introspects opaque tokens",
        );
        return;
    };
    let expected = issuer.unwrap_or(&servers[0]);
    match &claims.issuer {
        Some(iss) if servers.iter().any(|s| s == iss) => report.pass(
            "token_issuer",
            format!("iss \"{iss}\" is the authorization server"),
        ),
        found => report.fail(
            "token_issuer",
            format!(
                "iss {} is not an authorization server of this resource (\"{expected}\")",
                found
                    .as_deref()
                    .map_or("(none)".to_owned(), |s| format!("\"{s}\""))
            ),
            format!("get the token from {expected}"),
        ),
    }
    if claims.audiences.iter().any(|a| a == resource) {
        report.pass("token_audience", format!("aud names \"{resource}\""));
    } else {
        report.fail(
            "token_audience",
            format!("aud {:?} does not name \"{resource}\"", claims.audiences),
            format!(
                "request the token with resource={resource} (RFC 8707) so its aud names this server"
            ),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match claims.expires {
        Some(exp) if exp > now => {
            report.pass("token_expiry", format!("expires in {} s", exp - now))
        }
        Some(exp) => report.fail(
            "token_expiry",
            format!("expired {} s ago", now - exp),
            "get a fresh token",
        ),
        None => report.warn(
            "token_expiry",
            "the token has no exp",
            "issue access tokens with an expiry",
        ),
    }
    let missing: Vec<&str> = challenge
        .scopes
        .iter()
        .filter(|s| !claims.scopes.contains(s))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        report.pass(
            "token_scopes",
            format!("scopes \"{}\" cover the challenge", claims.scopes.join(" ")),
        );
    } else {
        report.fail(
            "token_scopes",
            format!(
                "the token lacks {} (it has \"{}\")",
                missing.join(" "),
                claims.scopes.join(" ")
            ),
            format!("request scope=\"{}\"", challenge.scopes.join(" ")),
        );
    }
}

/// An authorised `initialize` call must get a JSON-RPC result.
async fn check_initialize(report: &mut Report, client: &Client, url: &str, token: &str) {
    let response = match send_initialize(client, url, Some(token)).await {
        Ok(r) => r,
        Err(e) => {
            report.fail(
                "initialize",
                format!("no answer: {e}"),
                "check the server is up",
            );
            return;
        }
    };
    let status = response.status().as_u16();
    if status != 200 {
        let reason = header(&response, "www-authenticate");
        let fix = match status {
            401 => {
                "the server refused the token: see the error in the challenge and the token checks above"
            }
            403 => "the token lacks a scope or permission the server requires",
            _ => "see the server's logs",
        };
        report.fail(
            "initialize",
            format!(
                "initialize with the token was answered {status}{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
            fix,
        );
        return;
    }
    match http::first_rpc_message(response).await {
        Ok(msg) if msg.get("result").is_some() => {
            let info = &msg["result"]["serverInfo"];
            report.pass(
                "initialize",
                format!(
                    "initialize succeeded: {} {} (protocol {})",
                    info["name"].as_str().unwrap_or("?"),
                    info["version"].as_str().unwrap_or("?"),
                    msg["result"]["protocolVersion"].as_str().unwrap_or("?")
                ),
            );
        }
        Ok(msg) => report.fail(
            "initialize",
            format!("initialize returned a JSON-RPC error: {}", msg["error"]),
            "see the server's logs",
        ),
        Err(e) => report.fail(
            "initialize",
            format!("initialize answered 200 but {e}"),
            "answer initialize with a JSON-RPC result (application/json or text/event-stream)",
        ),
    }
}
