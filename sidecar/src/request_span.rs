//! The server span of a request, named and annotated from what the request path learned about
//! it ([`Record`]) once it is done: the MCP method and tool, the outcome and reason, no token.

use opentelemetry::trace::{Status, TraceContextExt as _};
use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::{Context, KeyValue};

use crate::audit::{Done, Record};
use crate::telemetry;

/// Names the server span of a finished request and records what the sidecar decided.
pub fn finish(cx: &Context, policy: &str, record: &Record, done: &Done) {
    let span = cx.span();
    let mut attributes = Vec::with_capacity(telemetry::SERVER_ATTRIBUTES);
    attributes.extend([
        KeyValue::new(
            "http.request.method",
            telemetry::method_name(&record.http_method),
        ),
        KeyValue::new("url.path", Arc::clone(&record.path)),
        KeyValue::new("http.response.status_code", i64::from(done.status)),
        KeyValue::new("mcp_warden.policy", policy.to_owned()),
        KeyValue::new("mcp_warden.outcome", done.outcome.as_str()),
        KeyValue::new("mcp_warden.reason", done.reason.as_str()),
        KeyValue::new(
            "mcp_warden.request_id",
            record.request_id.to_str().unwrap_or_default().to_owned(),
        ),
    ]);
    let mut calls = record.messages.iter().filter(|m| m.method.is_some());
    let (first, more) = (calls.next(), calls.count());
    let mut name = telemetry::method_name(&record.http_method);
    if let (Some(call), 0) = (first, more) {
        let method = call.method.clone().unwrap_or_default();
        name = match &call.tool {
            Some(tool) => Cow::Owned(format!("{method} {tool}")),
            None => method.clone(),
        };
        if let Some(tool) = &call.tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", tool.clone()));
        }
        match (&*method, &call.target) {
            ("resources/read", Some(uri)) => {
                attributes.push(KeyValue::new("mcp.resource.uri", uri.clone()))
            }
            ("prompts/get", Some(prompt)) => {
                attributes.push(KeyValue::new("gen_ai.prompt.name", prompt.clone()))
            }
            _ => {}
        }
        attributes.push(KeyValue::new("mcp.method.name", method));
    } else if more > 0 {
        name = Cow::Borrowed("batch");
        attributes.push(KeyValue::new("jsonrpc.batch.size", (more + 1) as i64));
    }
    if let Some(session) = record.session() {
        attributes.push(KeyValue::new("mcp_warden.session", session));
    }
    span.update_name(name);
    span.set_attributes(attributes);
    if done.status >= 500 {
        span.set_status(Status::error(done.reason.as_str()));
    }
    span.end();
}
