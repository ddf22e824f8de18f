//! The server span of a request, named and annotated from what the request path learned about
//! it ([`Record`]) once it is done: the MCP method and tool, the outcome and reason, no token.

use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};

use crate::audit::{Done, Record};

/// Names the server span of a finished request and records what the sidecar decided.
pub fn finish(cx: &Context, policy: &str, record: &Record, done: &Done) {
    let span = cx.span();
    let mut attributes = vec![
        KeyValue::new(
            "http.request.method",
            record.http_method.as_str().to_owned(),
        ),
        KeyValue::new("url.path", record.path.clone()),
        KeyValue::new("http.response.status_code", i64::from(done.status)),
        KeyValue::new("mcp_warden.policy", policy.to_owned()),
        KeyValue::new("mcp_warden.outcome", done.outcome.as_str()),
        KeyValue::new("mcp_warden.reason", done.reason.as_str()),
        KeyValue::new(
            "mcp_warden.request_id",
            record.request_id.to_str().unwrap_or_default().to_owned(),
        ),
    ];
    let calls: Vec<_> = record
        .messages
        .iter()
        .filter(|m| m.method.is_some())
        .collect();
    let mut name = record.http_method.as_str().to_owned();
    if let [call] = calls[..] {
        let method = call.method.as_deref().unwrap_or_default().to_owned();
        name = match (&call.tool, &call.target) {
            (Some(tool), _) => format!("{method} {tool}"),
            (None, Some(_)) if method == "prompts/get" => method.clone(),
            _ => method.clone(),
        };
        if let Some(tool) = &call.tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", tool.clone()));
        }
        match (method.as_str(), &call.target) {
            ("resources/read", Some(uri)) => {
                attributes.push(KeyValue::new("mcp.resource.uri", uri.clone()))
            }
            ("prompts/get", Some(prompt)) => {
                attributes.push(KeyValue::new("gen_ai.prompt.name", prompt.clone()))
            }
            _ => {}
        }
        attributes.push(KeyValue::new("mcp.method.name", method));
    } else if calls.len() > 1 {
        name = "batch".into();
        attributes.push(KeyValue::new("jsonrpc.batch.size", calls.len() as i64));
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
