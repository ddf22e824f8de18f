//! The public port: protected-resource metadata, the OAuth facade (proxy mode), and the
//! authenticate-then-proxy path for everything else.
//!
//! Requests come straight from hyper ([`handle`]); only the rare OAuth facade paths go through
//! an axum router. Request and response bodies stream through untouched unless the rules or
//! the audit trail read the request's JSON-RPC messages.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Either};
use tower::ServiceExt;

use crate::audit::{Done, Record, X_REQUEST_ID};
use crate::challenge::error_body;
use crate::forward::Unforwardable;
use crate::head_fields::AppFields;
use crate::metrics::{Metrics, Outcome, Reason};
use crate::oauth::revocation::Status;
use crate::oauth::upstream_token::UpstreamTokenError;
use crate::origin::{OriginCheck, Origins, is_preflight};
use crate::peer::Peer;
use crate::proxy::{Outgoing, Upstream};
use crate::request_body::{ReadError, RequestBody};
use crate::request_span;
use crate::rpc;
use crate::rules::MAX_RPC_BODY;
use crate::runtime::Runtime;
use crate::scopes;
use crate::tap::{State, Tapped};
use crate::telemetry;
use crate::verify::TokenError;

pub mod snapshot;

/// The policy in force, swapped whole on reload and shared by every serving thread.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

/// Shared by every request of one serving thread.
pub struct AppState {
    /// The policy in force.
    pub runtime: SharedRuntime,
    /// The app (a connection pool per serving thread).
    pub upstream: Upstream,
    /// Metric families.
    pub metrics: Metrics,
}

/// A response body: the app's, streamed back, or one the sidecar made.
pub type ReplyBody = Either<crate::pool::Reply, Body>;
/// A response to a client of the public port.
pub type Reply = http::Response<ReplyBody>;

/// A response the sidecar made itself.
fn local(response: Response) -> Reply {
    response.map(Either::Right)
}

type Answer = (Reply, Outcome, Reason);

/// [`X_REQUEST_ID`], as the request's fields to the app borrow it.
static REQUEST_ID: http::HeaderName = X_REQUEST_ID;

/// Answers one request of the public port from the client at `peer`.
pub async fn handle(state: Arc<AppState>, request: Request<RequestBody>, peer: Peer) -> Reply {
    let state = &*state;
    let started = Instant::now();
    let runtime = snapshot::current(&state.runtime);
    let mut record = Record::new(request.method(), request.uri().path(), request.headers());
    let trace = telemetry::tracer()
        .map(|tracer| telemetry::server_span(tracer, request.headers(), request.method()));
    record.trace_id = trace.as_ref().map(telemetry::trace_id);
    // Awaited where it is made: each move of it copies the whole request's future.
    let (mut response, outcome, reason) = match &trace {
        None => serve(state, &runtime, request, peer, &mut record).await,
        Some(cx) => {
            let served = serve(state, &runtime, request, peer, &mut record);
            telemetry::within(Some(cx.clone()), served).await
        }
    };
    let latency = started.elapsed();
    runtime
        .meters
        .observe(outcome, reason, latency.as_secs_f64());
    let done = Done {
        outcome,
        reason,
        status: response.status().as_u16(),
        latency,
    };
    if let Some(cx) = &trace {
        request_span::finish(cx, &runtime.policy, &record, &done);
    }
    if !matches!(outcome, Outcome::Metadata | Outcome::Preflight) {
        // The app's own, if it sent one.
        let app_sent = match response.body() {
            Either::Left(reply) => reply
                .app_fields()
                .is_some_and(|f| f.contains(&X_REQUEST_ID)),
            Either::Right(_) => false,
        };
        if !app_sent {
            response
                .headers_mut()
                .entry(X_REQUEST_ID)
                .or_insert_with(|| record.request_id.clone());
        }
        runtime.audit.finish(record, done);
    }
    response
}

async fn serve(
    state: &AppState,
    rt: &Runtime,
    mut request: Request<RequestBody>,
    peer: Peer,
    record: &mut Record,
) -> Answer {
    let path = request.uri().path();
    if path == rt.metadata_root || path == rt.metadata_suffixed {
        return (
            local(metadata(rt, request.method())),
            Outcome::Metadata,
            Reason::None,
        );
    }
    if let Some(endpoints) = rt.endpoints.as_ref().filter(|e| (e.handles)(path)) {
        // The OAuth endpoints read the client's address as an extension (their rate limits).
        request.extensions_mut().insert(peer);
        let response = endpoints
            .router
            .clone()
            .oneshot(request.map(Body::new))
            .await
            .into_response();
        return (local(response), Outcome::Metadata, Reason::None);
    }
    let origin = match rt.origins.check(request.headers()) {
        OriginCheck::Forbidden => {
            let response = error_body(
                StatusCode::FORBIDDEN,
                "forbidden",
                "requests from this origin are not allowed",
            );
            return refuse(request, (response, Outcome::Forbidden, Reason::Origin)).await;
        }
        OriginCheck::Allowed(origin) => Some(origin),
        OriginCheck::Absent => None,
    };
    let (mut response, outcome, reason) = match &origin {
        Some(origin) if is_preflight(request.method(), request.headers()) => (
            local(Origins::preflight(origin)),
            Outcome::Preflight,
            Reason::None,
        ),
        _ => authorize_and_forward(state, rt, request, &peer, record).await,
    };
    if let Some(origin) = &origin {
        if let Some(fields) = app_fields_mut(&mut response) {
            for name in Origins::REPLACED {
                fields.remove(&name);
            }
        }
        Origins::decorate(origin, response.headers_mut());
    }
    (response, outcome, reason)
}

/// The app's header fields in `response`, if it is the app's and they are still there.
fn app_fields_mut(response: &mut Reply) -> Option<&mut AppFields> {
    match response.body_mut() {
        Either::Left(reply) => reply.app_fields_mut(),
        Either::Right(_) => None,
    }
}

fn metadata(rt: &Runtime, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD && method != Method::OPTIONS {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    // Public, so any origin may read it (browser clients fetch it cross-origin).
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        ),
    ];
    if method == Method::OPTIONS {
        return (StatusCode::NO_CONTENT, headers).into_response();
    }
    (headers, rt.metadata.clone()).into_response()
}

/// What a request's `Authorization` headers hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No header, or another scheme (`Basic`…).
    None,
    /// Exactly one `Authorization: Bearer` header (scheme case-insensitive): its token.
    Bearer(&'a str),
    /// Several `Authorization` headers, or one that is not visible ASCII.
    Ambiguous,
}

/// The bearer token of a request, if it has exactly one `Authorization: Bearer` header.
pub fn credentials(headers: &http::HeaderMap) -> Credentials<'_> {
    // Looked for in one pass over the few fields of a request, without hashing the name.
    let mut values = headers
        .iter()
        .filter(|(name, _)| *name == header::AUTHORIZATION)
        .map(|(_, value)| value);
    let Some(value) = values.next() else {
        return Credentials::None;
    };
    if values.next().is_some() {
        return Credentials::Ambiguous;
    }
    let Ok(value) = value.to_str() else {
        return Credentials::Ambiguous;
    };
    // The scheme ends at the first space.
    const BEARER: &str = "bearer ";
    match value.get(..BEARER.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(BEARER) => {
            Credentials::Bearer(value[BEARER.len()..].trim_ascii())
        }
        // Another scheme (Basic…) is not a bearer token: challenge as if none was sent.
        _ => Credentials::None,
    }
}

async fn authorize_and_forward(
    state: &AppState,
    rt: &Runtime,
    request: Request<RequestBody>,
    peer: &Peer,
    record: &mut Record,
) -> Answer {
    let token = match credentials(request.headers()) {
        Credentials::Bearer(token) => token,
        Credentials::None => {
            let answer = (
                rt.challenge.unauthorized(None),
                Outcome::Unauthorized,
                Reason::MissingToken,
            );
            return refuse(request, answer).await;
        }
        Credentials::Ambiguous => {
            let response = error_body(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "exactly one Authorization header is allowed",
            );
            return refuse(
                request,
                (response, Outcome::BadRequest, Reason::InvalidRequest),
            )
            .await;
        }
    };
    let verified = match &rt.introspector {
        Some(introspector) if introspector.handles(token) => introspector.verify(token).await,
        _ => rt.verifier.verify(token).await,
    };
    let principal = match verified {
        Ok((principal, cached)) => {
            if cached {
                state.metrics.token_cache_hits.inc();
            }
            principal
        }
        Err(e @ (TokenError::KeysUnavailable | TokenError::IntrospectionUnavailable)) => {
            let description = if e == TokenError::KeysUnavailable {
                "the token issuer's keys are not available yet"
            } else {
                "the token issuer's introspection endpoint is not available"
            };
            let mut response = error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                description,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return refuse(request, (response, Outcome::Unauthorized, e.reason())).await;
        }
        Err(e) => {
            let answer = (
                rt.challenge.unauthorized(Some(e)),
                Outcome::Unauthorized,
                e.reason(),
            );
            return refuse(request, answer).await;
        }
    };
    if let Some(revocations) = &rt.revocations {
        let sid = principal.claims.get("sid").and_then(|v| v.as_str());
        match sid.map_or(Status::Revoked, |sid| revocations.status(sid)) {
            Status::Valid => {}
            Status::Revoked => {
                let answer = (
                    rt.challenge.unauthorized(Some(TokenError::Revoked)),
                    Outcome::Unauthorized,
                    Reason::Revoked,
                );
                return refuse(request, answer).await;
            }
            Status::Unknown => {
                let mut response = error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "revocations cannot be checked right now",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return refuse(
                    request,
                    (response, Outcome::Unauthorized, Reason::RevocationUnknown),
                )
                .await;
            }
        }
    }

    if rt.audit.wants_caller() {
        record.caller = Some(principal.clone());
    }

    let reads_body = !rt.rules.is_empty() || rt.audit.reads_bodies();
    let request = if !reads_body || !carries_body(&request) {
        request.map(Either::Left)
    } else if rt.rules.is_empty() && rt.audit.taps_bodies() && telemetry::tracer().is_none() {
        // Only the audit writer reads this body: it streams to the app unbuffered.
        let (parts, body) = request.into_parts();
        let (tapped, tap) = Tapped::new(body, MAX_RPC_BODY);
        record.body = Some(tap);
        Request::from_parts(parts, Either::Right(Either::Left(tapped)))
    } else {
        match read_messages(rt, request, record).await {
            Ok(request) => request,
            Err(answer) => return answer,
        }
    };
    let needed = if rt.rules.is_empty() {
        Cow::Borrowed(&rt.required_scopes[..])
    } else {
        let mut needed = rt.required_scopes.clone();
        for scope in rt.rules.required_by(&record.messages) {
            if !needed.contains(&scope) {
                needed.push(scope);
            }
        }
        Cow::Owned(needed)
    };
    if !principal.scopes.covers_all(needed.iter()) {
        let response = rt
            .challenge
            .forbidden(&scopes::join(needed.iter().map(String::as_str)));
        return refuse(
            request,
            (response, Outcome::Forbidden, Reason::InsufficientScope),
        )
        .await;
    }

    let (mut parts, body) = request.into_parts();
    let unforwardable = |e: Unforwardable| {
        tracing::warn!(policy = %rt.policy, claim = %e.claim, "refused: a mapped claim cannot be sent as a header");
        let response = error_body(StatusCode::FORBIDDEN, "forbidden", &e.to_string());
        (response, Outcome::Forbidden, Reason::UnforwardableClaim)
    };
    // Before the request's fields are made, so they are not part of this future while it waits.
    let upstream_token = match &rt.upstream_token {
        Some(inject) => {
            // A request refused for its claims fetches no token.
            if let Err(e) = rt.forwarding.check(&principal) {
                return refuse(Request::from_parts(parts, body), unforwardable(e)).await;
            }
            let sid = principal.claims.get("sid").and_then(|v| v.as_str());
            let token = match sid {
                // Boxed: the exchange's future would triple the size of every request's.
                Some(sid) => Box::pin(inject.proxy.upstream_token(sid)).await,
                None => Err(UpstreamTokenError::SessionEnded),
            };
            match token {
                Ok(value) => Some((&inject.header, value)),
                Err(UpstreamTokenError::SessionEnded) => {
                    let answer = (
                        rt.challenge.unauthorized(Some(TokenError::Revoked)),
                        Outcome::Unauthorized,
                        Reason::Revoked,
                    );
                    return refuse(Request::from_parts(parts, body), answer).await;
                }
                Err(UpstreamTokenError::Unavailable { retry_after }) => {
                    let mut response = error_body(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the upstream token of this session is not available right now",
                    );
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                    return refuse(
                        Request::from_parts(parts, body),
                        (
                            response,
                            Outcome::UpstreamError,
                            Reason::UpstreamUnavailable,
                        ),
                    )
                    .await;
                }
            }
        }
        None => None,
    };
    let client = Some(peer.forwarded_for().clone());
    let mut fields = match rt.forwarding.rewrite(&parts.headers, &principal, client) {
        Ok(fields) => fields,
        Err(e) => return refuse(Request::from_parts(parts, body), unforwardable(e)).await,
    };
    if let Some((name, value)) = upstream_token {
        fields.set(name, value);
    }
    fields.set(&REQUEST_ID, record.request_id.clone());
    let span = telemetry::start_client("upstream", Vec::new);
    if let Some(cx) = &span {
        telemetry::inject(cx, &mut parts.headers);
    }
    let forwarded = state
        .upstream
        .forward(Request::from_parts(parts, body), fields)
        .await;
    if let Some(cx) = &span {
        let failed = forwarded
            .as_ref()
            .err()
            .map(|_| "upstream unavailable".to_owned());
        if let Ok(response) = &forwarded {
            telemetry::set(
                cx,
                opentelemetry::KeyValue::new(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                ),
            );
        }
        telemetry::end(cx, failed);
    }
    match forwarded {
        Ok(mut response) => {
            if rt.upstream_token.is_some()
                && let Some(fields) = response.body_mut().app_fields_mut()
            {
                // The upstream token never travels back, even if the app echoes it.
                fields.retain(|name| {
                    !std::str::from_utf8(name).is_ok_and(|name| rt.forwarding.is_private(name))
                });
            }
            (response.map(Either::Left), Outcome::Allowed, Reason::None)
        }
        // The client's body broke off on its way (read fully first, it would have been refused).
        Err(_)
            if record
                .body
                .as_ref()
                .is_some_and(|tap| tap.state() == State::Failed) =>
        {
            (
                local(unreadable_body()),
                Outcome::BadRequest,
                Reason::InvalidRequest,
            )
        }
        Err(response) => (
            local(response),
            Outcome::UpstreamError,
            Reason::UpstreamUnavailable,
        ),
    }
}

/// The most of an unread request body a refusal reads so the connection stays usable.
const DRAIN_LIMIT: usize = 64 * 1024;
/// How long a refusal waits for the rest of that body.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Finishes a refused request. HTTP/1.1 can only reuse the connection once the request body has
/// been read, so a small body is read (bounded in size and time) and discarded; otherwise the
/// response says `Connection: close` instead of the connection dropping without notice.
///
/// Boxed: the wait would otherwise be part of every request's future.
fn refuse<B>(request: Request<B>, refusal: Refusal) -> Pin<Box<impl Future<Output = Answer>>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Box::pin(drain_or_close(request, refusal))
}

async fn drain_or_close<B>(request: Request<B>, (mut response, outcome, reason): Refusal) -> Answer
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Reading would send `100 Continue` and invite the body we are refusing.
    let awaits_continue = request.headers().contains_key(header::EXPECT);
    let drained = match declared {
        _ if awaits_continue => false,
        Some(n) if n > DRAIN_LIMIT as u64 => false,
        // An empty body (no Content-Length, no Transfer-Encoding) ends at once.
        _ => {
            let body = http_body_util::Limited::new(request.into_body(), DRAIN_LIMIT);
            matches!(
                tokio::time::timeout(DRAIN_WAIT, body.collect()).await,
                Ok(Ok(_))
            )
        }
    };
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    (local(response), outcome, reason)
}

/// A response refusing a request, with what the metrics say about it.
type Refusal = (Response, Outcome, Reason);

/// Whether the rules must read the request's body: every POST (an empty one is refused), and any
/// other method whose body is not known to be empty, since an app may route JSON-RPC on any
/// method.
fn carries_body(request: &Request<RequestBody>) -> bool {
    request.method() == Method::POST || !hyper::body::Body::is_end_stream(request.body())
}

/// Reads a request body (bounded) and scans its JSON-RPC messages into `record`, then rebuilds
/// the request around the buffered bytes. With scope rules, a body that is too large or not
/// unambiguous JSON-RPC is refused (a JSON-RPC error answer, 400); without rules (the body is
/// read for the audit trail only) such bodies go to the app unchanged.
async fn read_messages(
    rt: &Runtime,
    request: Request<RequestBody>,
    record: &mut Record,
) -> Result<Request<Outgoing>, Answer> {
    let (parts, body) = request.into_parts();
    let strict = !rt.rules.is_empty();
    let bytes = match buffer(body, MAX_RPC_BODY).await {
        Ok(Buffered::Whole(bytes)) => bytes,
        Ok(Buffered::TooLarge(body)) if !strict => {
            return Ok(Request::from_parts(
                parts,
                Either::Right(Either::Right(body)),
            ));
        }
        Err(_) => {
            let response = unreadable_body();
            return Err((local(response), Outcome::BadRequest, Reason::InvalidRequest));
        }
        Ok(Buffered::TooLarge(_)) => {
            let mut response = error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large",
            );
            // The rest of the body is still on the wire: this connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err((local(response), Outcome::BadRequest, Reason::InvalidRequest));
        }
    };
    let scanned = if rt.audit.wants_arguments() {
        rpc::scan_with_arguments(&bytes)
    } else {
        rpc::scan(&bytes)
    };
    match scanned {
        Ok(messages) => record.messages = messages,
        Err(e) if strict => {
            let body = serde_json::json!({
                "jsonrpc": "2.0",
                "id": rpc::id_of(&bytes),
                "error": {"code": e.code(), "message": e.to_string()},
            });
            let response = (
                StatusCode::BAD_REQUEST,
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(body),
            )
                .into_response();
            return Err((local(response), Outcome::BadRequest, Reason::InvalidRequest));
        }
        Err(_) => {}
    }
    Ok(Request::from_parts(
        parts,
        Either::Right(Either::Right(Body::from(bytes))),
    ))
}

fn unreadable_body() -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "the request body could not be read",
    )
}

/// A request body read up to a limit.
enum Buffered {
    /// All of it.
    Whole(bytes::Bytes),
    /// More than the limit: what was read, followed by the rest still on the wire.
    TooLarge(Body),
}

async fn buffer(mut body: RequestBody, limit: usize) -> Result<Buffered, ReadError> {
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        // Trailers are not forwarded (hyper's client would not send them over HTTP/1.1 anyway).
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        total += data.len();
        chunks.push(data);
        if total > limit {
            let read = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, ReadError>));
            let rest = futures_util::StreamExt::chain(read, body.into_data_stream());
            return Ok(Buffered::TooLarge(Body::from_stream(rest)));
        }
    }
    Ok(Buffered::Whole(match chunks.len() {
        0 => bytes::Bytes::new(),
        1 => chunks.remove(0),
        _ => chunks.concat().into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[&str]) -> Credentials<'static> {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for value in values {
            headers.append(header::AUTHORIZATION, value.parse().unwrap());
        }
        // Leaked: the test's headers outlive the token they lend.
        credentials(Box::leak(Box::new(headers)))
    }

    #[test]
    fn finds_one_bearer_token() {
        assert_eq!(of(&["Bearer abc"]), Credentials::Bearer("abc"));
        assert_eq!(of(&["bEARER   abc "]), Credentials::Bearer("abc"));
        assert_eq!(of(&["Bearer "]), Credentials::Bearer(""));
        assert_eq!(of(&[]), Credentials::None);
        assert_eq!(of(&["Bearer"]), Credentials::None);
        assert_eq!(of(&["Bearerx abc"]), Credentials::None);
        assert_eq!(of(&["Basic YTpi"]), Credentials::None);
        assert_eq!(of(&["Bearer a", "Bearer b"]), Credentials::Ambiguous);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xe9").unwrap(),
        );
        assert_eq!(credentials(&headers), Credentials::Ambiguous);
    }
}
