//! The audit trail: one JSON line per MCP request on the protected path (one per call of a
//! JSON-RPC batch), saying who called what and what the sidecar decided.
//!
//! The request path only formats the line and offers it to a bounded queue; a writer thread
//! owns the destination (stderr, or a file rotated by size). When the queue is full the line is
//! dropped and counted (`mcp_warden_audit_dropped_total`): auditing never stalls a request.
//! Bearer tokens are never written; tool arguments only with `includeArguments`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use http::{HeaderMap, HeaderValue};
use mcp_warden_policy::{AUDIT_TO_STDERR, AuditSpec};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, Outcome, Reason, ToolMeters};
use crate::rpc::Message;
use crate::verify::Principal;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;
/// Longest client-supplied `X-Request-Id` kept.
const MAX_REQUEST_ID: usize = 128;
/// The header carrying the request id to the app and back to the client.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");

/// Where audit lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Destination {
    Stderr,
    File {
        path: PathBuf,
        max_bytes: u64,
        max_files: u32,
    },
}

impl Destination {
    fn of(spec: &AuditSpec) -> Self {
        if spec.destination == AUDIT_TO_STDERR {
            Destination::Stderr
        } else {
            Destination::File {
                path: spec.destination.clone().into(),
                max_bytes: spec.max_file_bytes,
                max_files: spec.max_files,
            }
        }
    }
}

/// A running writer: its destination and its queue.
type Running = (Destination, mpsc::Sender<String>);

/// The writer in use, kept across policy reloads so a reload with the same destination keeps
/// the same thread and file.
#[derive(Clone)]
pub struct Writers {
    current: Arc<Mutex<Option<Running>>>,
    dropped: Counter,
}

impl Writers {
    /// The shared writer state; lines dropped are counted in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Writers {
            current: Arc::default(),
            dropped: metrics.audit_dropped.clone(),
        }
    }

    /// A queue to the writer for `dest`, starting one if the destination changed.
    fn sender(&self, dest: Destination) -> io::Result<mpsc::Sender<String>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, tx)) = current.as_ref()
            && *d == dest
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let out = Output::open(&dest)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("mcp-warden-audit".into())
            .spawn(move || write_lines(rx, out))?;
        *current = Some((dest, tx.clone()));
        Ok(tx)
    }
}

/// One policy's audit settings, resolved for the request path.
pub struct Auditor {
    policy: String,
    queue: Option<mpsc::Sender<String>>,
    dropped: Counter,
    include_arguments: bool,
    max_argument_bytes: usize,
    redact: Vec<String>,
    tools: Option<ToolMeters>,
}

impl Auditor {
    /// From `spec.audit` (absent: on, to stderr). Fails when the audit file cannot be opened.
    pub fn new(
        policy: &str,
        spec: Option<&AuditSpec>,
        writers: &Writers,
        metrics: &Metrics,
    ) -> io::Result<Self> {
        let default = AuditSpec::default();
        let spec = spec.unwrap_or(&default);
        let queue = if spec.enabled {
            Some(writers.sender(Destination::of(spec))?)
        } else {
            None
        };
        let tools =
            (!spec.tool_metrics.is_empty()).then(|| metrics.tools_for(policy, &spec.tool_metrics));
        Ok(Auditor {
            policy: policy.to_owned(),
            queue,
            dropped: writers.dropped.clone(),
            include_arguments: spec.enabled && spec.include_arguments,
            max_argument_bytes: spec.max_argument_bytes as usize,
            redact: spec.redact_fields.clone(),
            tools,
        })
    }

    /// Whether request bodies must be read to know the methods and tools.
    pub fn reads_bodies(&self) -> bool {
        self.queue.is_some() || self.tools.is_some()
    }

    /// Whether the scan must keep `params.arguments`.
    pub fn wants_arguments(&self) -> bool {
        self.include_arguments
    }

    /// Counts the tool calls of a finished request and queues its audit lines.
    pub fn finish(&self, record: &Record, done: &Done) {
        if let Some(tools) = &self.tools {
            for tool in record.messages.iter().filter_map(|m| m.tool.as_deref()) {
                tools.observe(tool, done.outcome);
            }
        }
        let Some(queue) = &self.queue else { return };
        let calls: Vec<&Message> = record
            .messages
            .iter()
            .filter(|m| m.method.is_some())
            .collect();
        if calls.is_empty() {
            self.send(queue, self.line(record, done, None, calls.len()));
        }
        for (i, call) in calls.iter().enumerate() {
            self.send(queue, self.line(record, done, Some((i, call)), calls.len()));
        }
    }

    fn send(&self, queue: &mpsc::Sender<String>, line: String) {
        if queue.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    fn line(
        &self,
        record: &Record,
        done: &Done,
        call: Option<(usize, &Message)>,
        calls: usize,
    ) -> String {
        let message = call.map(|(_, m)| m);
        let method = message.and_then(|m| m.method.as_deref());
        let arguments = message
            .filter(|_| self.include_arguments)
            .and_then(|m| m.arguments.as_ref())
            .map(|a| self.arguments(a));
        let event = Event {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind: "mcp_warden.audit",
            request_id: record.request_id.to_str().unwrap_or_default(),
            policy: &self.policy,
            outcome: done.outcome.as_str(),
            reason: done.reason.as_str(),
            status: done.status,
            latency_ms: (done.latency.as_secs_f64() * 1e6).round() / 1e3,
            http_method: record.http_method.as_str(),
            path: &record.path,
            caller: record.caller.as_ref(),
            session: record.session.as_deref(),
            trace_id: record.trace_id.as_deref(),
            method,
            tool: message.and_then(|m| m.tool.as_deref()),
            resource_uri: message
                .and_then(|m| m.target.as_deref())
                .filter(|_| method == Some("resources/read")),
            prompt: message
                .and_then(|m| m.target.as_deref())
                .filter(|_| method == Some("prompts/get")),
            batch_index: call.filter(|_| calls > 1).map(|(i, _)| i),
            batch_size: (calls > 1).then_some(calls),
            arguments,
        };
        let mut line = serde_json::to_string(&event).unwrap_or_default();
        line.push('\n');
        line
    }

    /// The arguments as written: named fields redacted, too large ones replaced by their size.
    fn arguments(&self, arguments: &Value) -> Value {
        let mut value = arguments.clone();
        if !self.redact.is_empty() {
            redact(&mut value, &self.redact);
        }
        let size = serde_json::to_string(&value).map_or(0, |s| s.len());
        if size > self.max_argument_bytes {
            serde_json::json!({ "omitted": "too large", "bytes": size })
        } else {
            value
        }
    }
}

fn redact(value: &mut Value, fields: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if fields.iter().any(|f| f == key) {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v, fields);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields)),
        _ => {}
    }
}

/// The caller as far as the token told.
#[derive(Debug, Default, Serialize)]
pub struct Caller {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    scopes: Vec<String>,
}

impl Caller {
    /// From a verified token: `sub`, `client_id` (or `azp`), `iss` and the granted scopes.
    pub fn of(principal: &Principal) -> Self {
        let text = |name: &str| principal.claims.get(name).and_then(Value::as_str);
        Caller {
            sub: text("sub").map(str::to_owned),
            client_id: text("client_id").or_else(|| text("azp")).map(str::to_owned),
            iss: text("iss").map(str::to_owned),
            scopes: principal.scopes.iter().map(str::to_owned).collect(),
        }
    }
}

/// What the request path learned about one request, for its audit lines and its span.
pub struct Record {
    /// The request id sent to the app (`X-Request-Id`).
    pub request_id: HeaderValue,
    /// The HTTP method.
    pub http_method: http::Method,
    /// The request path (without the query).
    pub path: String,
    /// SHA-256 of `Mcp-Session-Id`, first 16 hex digits.
    pub session: Option<String>,
    /// The verified caller.
    pub caller: Option<Caller>,
    /// The JSON-RPC messages of the body, when it was read.
    pub messages: Vec<Message>,
    /// The trace this request belongs to, when tracing is on.
    pub trace_id: Option<String>,
}

impl Record {
    /// Starts a record from the request head: keeps a well-formed client `X-Request-Id`, else
    /// makes one.
    pub fn new(method: &http::Method, path: &str, headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(X_REQUEST_ID)
            .filter(|v| well_formed_id(v.as_bytes()))
            .cloned()
            .unwrap_or_else(new_request_id);
        let session = headers
            .get(MCP_SESSION_ID)
            .map(|v| session_hash(v.as_bytes()));
        Record {
            request_id,
            http_method: method.clone(),
            path: path.to_owned(),
            session,
            caller: None,
            messages: Vec::new(),
            trace_id: None,
        }
    }
}

/// How a request ended.
pub struct Done {
    /// What happened.
    pub outcome: Outcome,
    /// Why.
    pub reason: Reason,
    /// The HTTP status sent.
    pub status: u16,
    /// Time to the response head.
    pub latency: Duration,
}

#[derive(Serialize)]
struct Event<'a> {
    time: String,
    kind: &'static str,
    request_id: &'a str,
    policy: &'a str,
    outcome: &'static str,
    reason: &'static str,
    status: u16,
    latency_ms: f64,
    http_method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<&'a Caller>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<Value>,
}

/// A client request id worth keeping: 1 to 128 characters of letters, digits and `-_.:/+=@`.
fn well_formed_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random request id: 32 hex digits.
fn new_request_id() -> HeaderValue {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail in practice; a zero id is still a valid id.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    HeaderValue::from_str(&hex(&bytes)).expect("hex digits are a valid header value")
}

/// The session id as written: enough to correlate requests, useless to resume a session.
fn session_hash(id: &[u8]) -> String {
    hex(&digest::digest(&digest::SHA256, id).as_ref()[..8])
}

/// The writer's output.
enum Output {
    Stderr,
    File {
        file: File,
        path: PathBuf,
        size: u64,
        max_bytes: u64,
        max_files: u32,
    },
}

impl Output {
    fn open(dest: &Destination) -> io::Result<Self> {
        match dest {
            Destination::Stderr => Ok(Output::Stderr),
            Destination::File {
                path,
                max_bytes,
                max_files,
            } => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                let size = file.metadata()?.len();
                Ok(Output::File {
                    file,
                    path: path.clone(),
                    size,
                    max_bytes: *max_bytes,
                    max_files: *max_files,
                })
            }
        }
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            Output::Stderr => io::stderr().lock().write_all(chunk),
            Output::File {
                file,
                path,
                size,
                max_bytes,
                max_files,
            } => {
                if *size > 0 && *size + chunk.len() as u64 > *max_bytes {
                    rotate(path, *max_files)?;
                    *file = OpenOptions::new().create(true).append(true).open(&*path)?;
                    *size = 0;
                }
                file.write_all(chunk)?;
                *size += chunk.len() as u64;
                Ok(())
            }
        }
    }
}

/// `path.N-1` → `path.N`, …, `path` → `path.1`; with no rotated files kept, `path` is removed.
fn rotate(path: &std::path::Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

/// How long the writer gathers lines after the first one: at most this many wake-ups and
/// writes per second, whatever the request rate (each wake-up and write costs system calls).
const GATHER: Duration = Duration::from_millis(10);

/// The writer thread: writes what is queued, a batch at a time, until every sender is gone.
fn write_lines(mut rx: mpsc::Receiver<String>, mut out: Output) {
    let mut batch = String::new();
    while let Some(line) = rx.blocking_recv() {
        batch.clear();
        batch.push_str(&line);
        std::thread::sleep(GATHER);
        while let Ok(line) = rx.try_recv() {
            batch.push_str(&line);
            if batch.len() >= 256 * 1024 {
                write(&mut out, &batch);
                batch.clear();
            }
        }
        write(&mut out, &batch);
    }
}

fn write(out: &mut Output, batch: &str) {
    if let Err(e) = out.write(batch.as_bytes()) {
        tracing::warn!(error = %e, "cannot write audit lines");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, "abc-123:x".parse().unwrap());
        let r = Record::new(&http::Method::POST, "/mcp", &h);
        assert_eq!(r.request_id, "abc-123:x");
        for bad in ["a b", "x\"y", &"a".repeat(129)] {
            h.insert(X_REQUEST_ID, bad.parse().unwrap());
            let r = Record::new(&http::Method::POST, "/mcp", &h);
            assert_ne!(r.request_id, bad);
            assert_eq!(r.request_id.len(), 32);
        }
    }

    #[test]
    fn sessions_are_hashed() {
        let mut h = HeaderMap::new();
        h.insert(MCP_SESSION_ID, "secret-session".parse().unwrap());
        let r = Record::new(&http::Method::POST, "/mcp", &h);
        let hash = r.session.unwrap();
        assert_eq!(hash.len(), 16);
        assert!(!hash.contains("secret"));
    }

    #[test]
    fn redacts_named_fields_at_any_depth() {
        let mut v = serde_json::json!({"password": "x", "nested": [{"token": "y", "keep": 1}]});
        redact(&mut v, &["password".into(), "token".into()]);
        assert_eq!(
            v,
            serde_json::json!({"password": "[redacted]", "nested": [{"token": "[redacted]", "keep": 1}]})
        );
    }

    #[test]
    fn rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("mcp-warden-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let dest = Destination::File {
            path: path.clone(),
            max_bytes: 10,
            max_files: 2,
        };
        let mut out = Output::open(&dest).unwrap();
        for line in ["aaaaaaa\n", "bbbbbbb\n", "ccccccc\n", "ddddddd\n"] {
            out.write(line.as_bytes()).unwrap();
        }
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "ddddddd\n");
        assert_eq!(read(&dir.join("audit.log.1")), "ccccccc\n");
        assert_eq!(read(&dir.join("audit.log.2")), "bbbbbbb\n");
        assert!(!dir.join("audit.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
