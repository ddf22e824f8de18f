//! OpenTelemetry traces over OTLP/HTTP (protobuf), configured by the standard environment
//! variables: `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` turn tracing
//! on; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` are read by the SDK. Without an endpoint (or with
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`) nothing is set up and the request path
//! only checks one `OnceLock`.
//!
//! Each request on the public port gets a server span continuing the client's W3C
//! `traceparent`; the app receives the context of the upstream call's span. JWKS fetches,
//! identity-provider calls and store operations are child spans of whatever span is current.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;

use http::HeaderMap;
use opentelemetry::context::WithContext;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use opentelemetry::trace::Span;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter: {0}")]
pub struct TelemetryError(String);

/// Flushes queued spans when dropped (at shutdown).
pub struct Guard(SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::debug!(error = %e, "trace exporter shutdown");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment asks for traces.
fn wanted() -> bool {
    let endpoint =
        env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint.is_some() && !disabled
}

/// Starts the exporter when the environment asks for traces. The batch processor runs on its
/// own thread, so no async runtime is needed.
pub fn init() -> Result<Option<Guard>, TelemetryError> {
    if !wanted() || TRACER.get().is_some() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(env("OTEL_SERVICE_NAME").unwrap_or_else(|| "mcp-warden-sidecar".into()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "mcp-warden-sidecar");
    let _ = TRACER.set(tracer);
    tracing::info!("OpenTelemetry traces are exported over OTLP/HTTP");
    Ok(Some(Guard(provider)))
}

/// The tracer, when tracing is on.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// How many attributes a server span gets at most (set when the request is done).
pub const SERVER_ATTRIBUTES: usize = 12;

/// The server span of one request, child of the client's `traceparent` when it sent one.
pub fn server_span(tracer: &SdkTracer, headers: &HeaderMap, method: &http::Method) -> Context {
    let parent = if headers.contains_key(TRACEPARENT) {
        TraceContextPropagator::new().extract(&Headers(headers))
    } else {
        Context::current()
    };
    let span = tracer
        .span_builder(method_name(method))
        .with_kind(SpanKind::Server)
        // Room for the attributes `request_span::finish` sets: the span keeps this vector.
        .with_attributes(Vec::with_capacity(SERVER_ATTRIBUTES))
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// The name of `method`, borrowed for the standard ones.
pub fn method_name(method: &http::Method) -> Cow<'static, str> {
    const STANDARD: [http::Method; 9] = [
        http::Method::GET,
        http::Method::POST,
        http::Method::DELETE,
        http::Method::OPTIONS,
        http::Method::HEAD,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::CONNECT,
        http::Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().position(|m| m == method) {
        Some(i) => Cow::Borrowed(NAMES[i]),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// Replaces the client's trace headers with the context of `cx` (W3C Trace Context: a
/// `traceparent`, and the `tracestate` when it has entries).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return;
    }
    headers.insert(TRACEPARENT, traceparent(context));
    let state = context.trace_state().header();
    if !state.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&state)
    {
        headers.insert(TRACESTATE, value);
    }
}

/// `00-<trace id>-<span id>-<flags>`, the version this crate writes.
fn traceparent(context: &opentelemetry::trace::SpanContext) -> http::HeaderValue {
    let mut value = [0u8; 55];
    value[..3].copy_from_slice(b"00-");
    hex_into(&context.trace_id().to_bytes(), &mut value[3..35]);
    value[35] = b'-';
    hex_into(&context.span_id().to_bytes(), &mut value[36..52]);
    value[52] = b'-';
    let sampled = context.trace_flags() & opentelemetry::trace::TraceFlags::SAMPLED;
    hex_into(&[sampled.to_u8()], &mut value[53..]);
    http::HeaderValue::from_bytes(&value).expect("hex digits and dashes")
}

/// Writes `bytes` as lowercase hex digits into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Runs `work` in a client span named `name` (child of the current span) when tracing is on;
/// an error result marks the span as failed.
pub async fn client<T, E: std::fmt::Display>(
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(cx) = start_client(name, attributes) else {
        return work.await;
    };
    let result = work.with_context(cx.clone()).await;
    end(&cx, result.as_ref().err().map(ToString::to_string));
    result
}

/// Starts a client span named `name`, child of the current span, when tracing is on.
pub fn start_client(
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Context> {
    let tracer = tracer()?;
    let parent = Context::current();
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes())
        .start_with_context(tracer, &parent);
    Some(parent.with_span(span))
}

/// Ends the span of `cx`, as failed when `error` says why.
pub fn end(cx: &Context, error: Option<String>) {
    let span = cx.span();
    if let Some(why) = error {
        span.set_status(Status::error(why));
    }
    span.end();
}

/// Runs the request future with `cx` as the current context. A plain function, not an `async`
/// one: that would hold `work` twice (as its argument and as what it awaits), doubling the size
/// of every request's future.
pub fn within<F: Future>(
    cx: Option<Context>,
    work: F,
) -> futures_util::future::Either<WithContext<F>, F> {
    match cx {
        Some(cx) => futures_util::future::Either::Left(work.with_context(cx)),
        None => futures_util::future::Either::Right(work),
    }
}

/// The hex trace id of `cx`.
pub fn trace_id(cx: &Context) -> String {
    let mut digits = [0u8; 32];
    hex_into(&cx.span().span_context().trace_id().to_bytes(), &mut digits);
    std::str::from_utf8(&digits).expect("hex digits").to_owned()
}

/// Sets an attribute on the span of `cx`.
pub fn set(cx: &Context, attribute: KeyValue) {
    cx.span().set_attribute(attribute);
}
