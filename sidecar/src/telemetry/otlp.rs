//! The OTLP/HTTP (protobuf) span exporter. A batch is written straight from the SDK's span data
//! into the wire format of `ExportTraceServiceRequest`, without building the intermediate
//! message structs (one copy of every string and id, then an encoder pass per nesting level),
//! and posted with a blocking HTTP client on the batch processor's thread.
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`
//! (`key=value` pairs, comma-separated, values percent-decoded) and
//! `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (milliseconds, 10 s by default). Only the
//! `http/protobuf` protocol without compression is offered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, Key, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::TelemetryError;

/// Posts batches of spans to an OTLP/HTTP receiver.
#[derive(Debug)]
pub struct Exporter {
    client: reqwest::blocking::Client,
    endpoint: reqwest::Url,
    headers: http::HeaderMap,
    /// The encoded `Resource` message of every batch.
    resource: Vec<u8>,
    resource_schema: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The value of the traces-specific variable, else of the general one.
fn setting(name: &str) -> Option<String> {
    env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
}

impl Exporter {
    /// An exporter configured by the environment.
    pub fn from_env() -> Result<Self, TelemetryError> {
        let invalid =
            |what: &str, e: &dyn std::fmt::Display| TelemetryError(format!("{what}: {e}"));
        let endpoint = match (
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => "http://localhost:4318/v1/traces".to_owned(),
        };
        let endpoint = reqwest::Url::parse(endpoint.trim())
            .map_err(|e| invalid(&format!("invalid endpoint {endpoint:?}"), &e))?;
        if let Some(protocol) = setting("PROTOCOL")
            && protocol.trim() != "http/protobuf"
        {
            return Err(TelemetryError(format!(
                "protocol {protocol:?} is not offered (only http/protobuf)"
            )));
        }
        if let Some(compression) = setting("COMPRESSION")
            && !compression.trim().eq_ignore_ascii_case("none")
        {
            return Err(TelemetryError(format!(
                "compression {compression:?} is not offered"
            )));
        }
        let timeout = setting("TIMEOUT")
            .and_then(|ms| ms.trim().parse().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        for (name, value) in setting("HEADERS")
            .as_deref()
            .map(parse_headers)
            .into_iter()
            .flatten()
        {
            headers.insert(name, value);
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| invalid("HTTP client", &e))?;
        Ok(Exporter {
            client,
            endpoint,
            headers,
            resource: Vec::new(),
            resource_schema: String::new(),
        })
    }

    fn post(&self, body: Vec<u8>) -> OTelSdkResult {
        let response = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .map_err(|e| OTelSdkError::InternalFailure(format!("OTLP export: {e}")))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "OTLP export: the receiver answered {}",
                response.status()
            )))
        }
    }
}

/// `key=value` pairs, comma-separated, values percent-decoded; malformed pairs are skipped.
fn parse_headers(list: &str) -> impl Iterator<Item = (http::HeaderName, http::HeaderValue)> + '_ {
    list.split(',').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let value = percent_decode(value.trim())?;
        Some((
            http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            http::HeaderValue::from_str(&value).ok()?,
        ))
    })
}

fn percent_decode(value: &str) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        self.post(encode(&batch, &self.resource, &self.resource_schema))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource.clear();
        for (key, value) in resource.iter() {
            key_value(&mut self.resource, 1, key, value);
        }
        self.resource_schema = resource.schema_url().unwrap_or_default().to_owned();
    }
}

// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn tag_len(field: u64) -> usize {
    varint_len(field << 3)
}

/// A length-delimited field, written even when empty.
fn delimited(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    tag(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn delimited_len(field: u64, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

/// A string or bytes field, left out when empty (proto3 default).
fn text(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    if !bytes.is_empty() {
        delimited(out, field, bytes);
    }
}

fn text_len(field: u64, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        delimited_len(field, len)
    }
}

fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        tag(out, field, VARINT);
        varint(out, v);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        tag(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u64, v: u32) {
    if v != 0 {
        tag(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// The length of an `AnyValue` message holding `value`.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => 2,
        Value::I64(v) => 1 + varint_len(*v as u64),
        Value::F64(_) => 9,
        Value::String(s) => delimited_len(1, s.as_str().len()),
        Value::Array(array) => delimited_len(5, array_len(array)),
        _ => 0,
    }
}

/// The length of an `ArrayValue` message holding `array`.
fn array_len(array: &Array) -> usize {
    fn each<T>(items: &[T], len: impl Fn(&T) -> usize) -> usize {
        items.iter().map(|item| delimited_len(1, len(item))).sum()
    }
    match array {
        Array::Bool(items) => each(items, |_| 2),
        Array::I64(items) => each(items, |v| 1 + varint_len(*v as u64)),
        Array::F64(items) => each(items, |_| 9),
        Array::String(items) => each(items, |s| delimited_len(1, s.as_str().len())),
        _ => 0,
    }
}

fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(v) => {
            tag(out, 2, VARINT);
            out.push(u8::from(*v));
        }
        Value::I64(v) => {
            tag(out, 3, VARINT);
            varint(out, *v as u64);
        }
        Value::F64(v) => {
            tag(out, 4, FIXED64);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::String(s) => delimited(out, 1, s.as_str().as_bytes()),
        Value::Array(array) => {
            tag(out, 5, LEN);
            varint(out, array_len(array) as u64);
            match array {
                Array::Bool(items) => items.iter().for_each(|v| element(out, Value::Bool(*v))),
                Array::I64(items) => items.iter().for_each(|v| element(out, Value::I64(*v))),
                Array::F64(items) => items.iter().for_each(|v| element(out, Value::F64(*v))),
                Array::String(items) => items.iter().for_each(|s| string_element(out, s)),
                _ => {}
            }
        }
        _ => {}
    }
}

fn element(out: &mut Vec<u8>, value: Value) {
    tag(out, 1, LEN);
    varint(out, any_value_len(&value) as u64);
    any_value(out, &value);
}

fn string_element(out: &mut Vec<u8>, s: &StringValue) {
    let s = s.as_str().as_bytes();
    tag(out, 1, LEN);
    varint(out, delimited_len(1, s.len()) as u64);
    delimited(out, 1, s);
}

/// A `KeyValue` message as field `field`.
fn key_value(out: &mut Vec<u8>, field: u64, key: &Key, value: &Value) {
    let key = key.as_str().as_bytes();
    let value_len = any_value_len(value);
    tag(out, field, LEN);
    varint(
        out,
        (text_len(1, key.len()) + delimited_len(2, value_len)) as u64,
    );
    text(out, 1, key);
    tag(out, 2, LEN);
    varint(out, value_len as u64);
    any_value(out, value);
}

fn attributes(out: &mut Vec<u8>, field: u64, attributes: &[KeyValue]) {
    for kv in attributes {
        key_value(out, field, &kv.key, &kv.value);
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `flags` of a span or link: the W3C trace flags and whether the parent is remote.
fn flags(trace_flags: u8, remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

/// A nested message as field `field`, written through `scratch`.
fn message(out: &mut Vec<u8>, field: u64, scratch: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    write(scratch);
    delimited(out, field, scratch);
}

/// The fields of a `Span` message.
fn span(out: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    text(out, 1, &cx.trace_id().to_bytes());
    text(out, 2, &cx.span_id().to_bytes());
    text(out, 3, cx.trace_state().header().as_bytes());
    if span.parent_span_id != SpanId::INVALID {
        text(out, 4, &span.parent_span_id.to_bytes());
    }
    text(out, 5, span.name.as_bytes());
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    uint(out, 6, kind);
    fixed64(out, 7, nanos(span.start_time));
    fixed64(out, 8, nanos(span.end_time));
    attributes(out, 9, &span.attributes);
    uint(out, 10, u64::from(span.dropped_attributes_count));
    let mut scratch = Vec::new();
    for event in span.events.events.iter() {
        message(out, 11, &mut scratch, |e| {
            fixed64(e, 1, nanos(event.timestamp));
            text(e, 2, event.name.as_bytes());
            attributes(e, 3, &event.attributes);
            uint(e, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.links.iter() {
        message(out, 13, &mut scratch, |l| {
            let cx = &link.span_context;
            text(l, 1, &cx.trace_id().to_bytes());
            text(l, 2, &cx.span_id().to_bytes());
            text(l, 3, cx.trace_state().header().as_bytes());
            attributes(l, 4, &link.attributes);
            uint(l, 5, u64::from(link.dropped_attributes_count));
            fixed32(l, 6, flags(cx.trace_flags().to_u8(), cx.is_remote()));
        });
    }
    uint(out, 14, u64::from(span.links.dropped_count));
    let (code, why) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    tag(out, 15, LEN);
    varint(
        out,
        (text_len(2, why.len()) + if code == 0 { 0 } else { 2 }) as u64,
    );
    text(out, 2, why.as_bytes());
    uint(out, 3, code);
    fixed32(
        out,
        16,
        flags(cx.trace_flags().to_u8(), span.parent_span_is_remote),
    );
}

/// The fields of an `InstrumentationScope` message.
fn scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    text(out, 1, scope.name().as_bytes());
    text(out, 2, scope.version().unwrap_or_default().as_bytes());
    for kv in scope.attributes() {
        key_value(out, 3, &kv.key, &kv.value);
    }
}

/// An `ExportTraceServiceRequest` of `batch`: one `ResourceSpans`, one `ScopeSpans` per
/// instrumentation scope (in order of first appearance).
pub fn encode(batch: &[SpanData], resource: &[u8], resource_schema: &str) -> Vec<u8> {
    // Each group: the index of its first span, and its spans encoded as `ScopeSpans.spans`.
    let mut groups: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut scratch = Vec::with_capacity(512);
    for (i, data) in batch.iter().enumerate() {
        let group = match groups.iter().position(|(first, _)| {
            batch[*first].instrumentation_scope == data.instrumentation_scope
        }) {
            Some(group) => group,
            None => {
                groups.push((i, Vec::with_capacity(batch.len() * 400)));
                groups.len() - 1
            }
        };
        message(&mut groups[group].1, 2, &mut scratch, |out| span(out, data));
    }
    // The lengths are known now: every span is copied once more, into the request.
    let scopes: Vec<(Vec<u8>, &str, usize)> = groups
        .iter()
        .map(|(first, spans)| {
            let instrumentation = &batch[*first].instrumentation_scope;
            let mut encoded = Vec::new();
            scope(&mut encoded, instrumentation);
            let schema = instrumentation.schema_url().unwrap_or_default();
            let len = delimited_len(1, encoded.len()) + spans.len() + text_len(3, schema.len());
            (encoded, schema, len)
        })
        .collect();
    let resource_spans_len = delimited_len(1, resource.len())
        + scopes
            .iter()
            .map(|(_, _, len)| delimited_len(2, *len))
            .sum::<usize>()
        + text_len(3, resource_schema.len());
    let mut request = Vec::with_capacity(delimited_len(1, resource_spans_len));
    tag(&mut request, 1, LEN);
    varint(&mut request, resource_spans_len as u64);
    delimited(&mut request, 1, resource);
    for ((encoded, schema, len), (_, spans)) in scopes.iter().zip(&groups) {
        tag(&mut request, 2, LEN);
        varint(&mut request, *len as u64);
        delimited(&mut request, 1, encoded);
        request.extend_from_slice(spans);
        text(&mut request, 3, schema.as_bytes());
    }
    text(&mut request, 3, resource_schema.as_bytes());
    request
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn context(trace: u128, span: u64, state: &str, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn span_data(n: u64, scope: &InstrumentationScope) -> SpanData {
        let at = |ns| UNIX_EPOCH + Duration::from_nanos(ns);
        SpanData {
            span_context: context(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c, n, "", false),
            parent_span_id: if n.is_multiple_of(2) {
                SpanId::from(77)
            } else {
                SpanId::INVALID
            },
            parent_span_is_remote: n.is_multiple_of(2),
            span_kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][n as usize % 3]
                .clone(),
            name: Cow::Owned(format!("tools/call tool-{n}")),
            start_time: at(1_700_000_000_000_000_000 + n),
            end_time: at(1_700_000_000_000_500_000 + n),
            attributes: vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.response.status_code", 200_i64),
                KeyValue::new("negative", -3_i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("flag", true),
                KeyValue::new("empty", ""),
                KeyValue::new("url.path", Arc::<str>::from("/mcp")),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec!["a".into(), StringValue::from("")])),
                ),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 300]))),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            ],
            dropped_attributes_count: n as u32,
            events: if n == 1 {
                let mut events = SpanEvents::default();
                events.events.push(Event::new(
                    "exception",
                    at(1_700_000_000_000_200_000),
                    vec![KeyValue::new("handled", false)],
                    2,
                ));
                events.dropped_count = 1;
                events
            } else {
                SpanEvents::default()
            },
            links: if n == 2 {
                let mut links = SpanLinks::default();
                links.links.push(Link::new(
                    context(5, 6, "vendor=x", true),
                    vec![KeyValue::new("link", "yes")],
                    3,
                ));
                links
            } else {
                SpanLinks::default()
            },
            status: match n % 3 {
                0 => Status::Unset,
                1 => Status::error("upstream unavailable"),
                _ => Status::Ok,
            },
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn a_batch_encodes_as_the_reference_otlp_messages() {
        let ours = InstrumentationScope::builder("mcp-warden-sidecar").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2")
            .with_schema_url("https://example.com/scope")
            .with_attributes([KeyValue::new("scope.attr", 1_i64)])
            .build();
        let batch: Vec<SpanData> = (0..7)
            .map(|n| span_data(n, if n == 3 || n == 5 { &other } else { &ours }))
            .collect();
        let resource = Resource::builder_empty()
            .with_service_name("e2e-warden")
            .with_attribute(KeyValue::new("deployment.environment", "test"))
            .with_schema_url([], "https://example.com/resource")
            .build();
        let mut exporter_resource = Vec::new();
        for (key, value) in resource.iter() {
            key_value(&mut exporter_resource, 1, key, value);
        }
        let body = encode(&batch, &exporter_resource, "https://example.com/resource");

        let decoded = ExportTraceServiceRequest::decode(&body[..]).expect("valid protobuf");
        let reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(decoded, reference);
        assert_eq!(
            body,
            reference.encode_to_vec(),
            "the same bytes as prost writes"
        );
    }

    #[test]
    fn header_lists_are_split_and_percent_decoded() {
        let headers: Vec<_> =
            parse_headers("api-key=a%20b%2Cc, x-tenant = t1 ,broken,=x").collect();
        assert_eq!(
            headers,
            vec![
                (
                    http::HeaderName::from_static("api-key"),
                    http::HeaderValue::from_static("a b,c")
                ),
                (
                    http::HeaderName::from_static("x-tenant"),
                    http::HeaderValue::from_static("t1")
                ),
            ]
        );
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
