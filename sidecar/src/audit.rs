//! The audit trail: one JSON line per MCP request on the protected path (one per call of a
//! JSON-RPC batch), saying who called what and what the sidecar decided.
//!
//! The request path only offers what it learned about the request (its [`Record`], moved, not
//! copied) to a bounded queue; a writer thread formats the lines and owns the destination
//! (stderr, or a file rotated by size). When no scope rule reads the request body, the body
//! streams to the app through a [`Tap`] and the writer reads its JSON-RPC messages from the
//! kept copy once the body is complete. When the queue is full the request's lines are dropped
//! and counted (`mcp_warden_audit_dropped_total`): auditing never stalls a request.
//! Bearer tokens are never written; tool arguments only with `includeArguments`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use http::{HeaderMap, HeaderValue};
use mcp_warden_policy::{AUDIT_TO_STDERR, AuditSpec};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, Outcome, Reason, ToolMeters};
use crate::rpc::{self, Message};
use crate::tap::{State, Tap};
use crate::verify::Principal;

/// Requests waiting for the writer before new ones are dropped.
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
type Running = (Destination, mpsc::Sender<Entry>);

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
    fn sender(&self, dest: Destination) -> io::Result<mpsc::Sender<Entry>> {
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
    format: Arc<Format>,
    queue: Option<mpsc::Sender<Entry>>,
    dropped: Counter,
    tools: Option<ToolMeters>,
}

/// How one policy's lines are written.
struct Format {
    policy: String,
    include_arguments: bool,
    max_argument_bytes: usize,
    redact: Vec<String>,
}

/// A finished request on its way to the writer.
struct Entry {
    format: Arc<Format>,
    time: SystemTime,
    record: Record,
    done: Done,
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
            format: Arc::new(Format {
                policy: policy.to_owned(),
                include_arguments: spec.enabled && spec.include_arguments,
                max_argument_bytes: spec.max_argument_bytes as usize,
                redact: spec.redact_fields.clone(),
            }),
            queue,
            dropped: writers.dropped.clone(),
            tools,
        })
    }

    /// Whether request bodies must be read to know the methods and tools.
    pub fn reads_bodies(&self) -> bool {
        self.queue.is_some() || self.tools.is_some()
    }

    /// Whether the scan must keep `params.arguments`.
    pub fn wants_arguments(&self) -> bool {
        self.format.include_arguments
    }

    /// Whether the caller must be kept in the [`Record`].
    pub fn wants_caller(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether the audit trail alone reads request bodies (no per-tool metrics), so the writer
    /// may read them from a [`Tap`] instead of the request path.
    pub fn taps_bodies(&self) -> bool {
        self.queue.is_some() && self.tools.is_none()
    }

    /// Counts the tool calls of a finished request and queues it for its audit lines.
    pub fn finish(&self, record: Record, done: Done) {
        if let Some(tools) = &self.tools {
            for tool in record.messages.iter().filter_map(|m| m.tool.as_deref()) {
                tools.observe(tool, done.outcome);
            }
        }
        let Some(queue) = &self.queue else { return };
        let entry = Entry {
            format: self.format.clone(),
            time: SystemTime::now(),
            record,
            done,
        };
        if let Err(e) = queue.try_send(entry) {
            let entry = match e {
                mpsc::error::TrySendError::Full(entry)
                | mpsc::error::TrySendError::Closed(entry) => entry,
            };
            // Counted per line, as the lines of a batch would have been written.
            self.dropped.inc_by(entry.lines() as u64);
        }
    }
}

impl Entry {
    /// Whether the request body (if tapped) is done, so the lines can be written.
    fn ready(&self) -> bool {
        self.record
            .body
            .as_ref()
            .is_none_or(|tap| tap.state() != State::Open)
    }

    /// Reads the messages of a tapped body; a body that is not a JSON-RPC message, too large or
    /// not read to the end is audited without them, as on the request path.
    fn read_body(&mut self) {
        let Some(bytes) = self.record.body.take().and_then(|tap| tap.take()) else {
            return;
        };
        let scanned = if self.format.include_arguments {
            rpc::scan_with_arguments(&bytes)
        } else {
            rpc::scan(&bytes)
        };
        self.record.messages = scanned.unwrap_or_default();
    }

    /// How many lines this request gets: one per call, at least one (a tapped body not read yet
    /// counts as one).
    fn lines(&self) -> usize {
        self.record
            .messages
            .iter()
            .filter(|m| m.method.is_some())
            .count()
            .max(1)
    }

    /// Appends this request's lines (one per call of a batch) to `out`.
    fn write_lines(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        let calls: Vec<&Message> = self
            .record
            .messages
            .iter()
            .filter(|m| m.method.is_some())
            .collect();
        let time = clock.stamp(self.time);
        if calls.is_empty() {
            self.line(out, time, None, 0);
        }
        for (i, call) in calls.iter().enumerate() {
            self.line(out, time, Some((i, call)), calls.len());
        }
    }

    fn line(&self, out: &mut Vec<u8>, time: &str, call: Option<(usize, &Message)>, calls: usize) {
        let (record, done, format) = (&self.record, &self.done, &*self.format);
        let message = call.map(|(_, m)| m);
        let method = message.and_then(|m| m.method.as_deref());
        let arguments = message
            .filter(|_| format.include_arguments)
            .and_then(|m| m.arguments.as_ref())
            .map(|a| format.arguments(a));
        let caller = record.caller.as_deref().map(Caller::of);
        let event = Event {
            time,
            kind: "mcp_warden.audit",
            request_id: record.request_id.to_str().unwrap_or_default(),
            policy: &format.policy,
            outcome: done.outcome.as_str(),
            reason: done.reason.as_str(),
            status: done.status,
            latency_ms: (done.latency.as_secs_f64() * 1e6).round() / 1e3,
            http_method: record.http_method.as_str(),
            path: &record.path,
            caller: caller.as_ref(),
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
        if serde_json::to_writer(&mut *out, &event).is_ok() {
            out.push(b'\n');
        }
    }
}

impl Format {
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
#[derive(Debug, Serialize)]
struct Caller<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    scopes: Scopes<'a>,
}

impl<'a> Caller<'a> {
    /// From a verified token: `sub`, `client_id` (or `azp`), `iss` and the granted scopes.
    fn of(principal: &'a Principal) -> Self {
        let text = |name: &str| principal.claims.get(name).and_then(Value::as_str);
        Caller {
            sub: text("sub"),
            client_id: text("client_id").or_else(|| text("azp")),
            iss: text("iss"),
            scopes: Scopes(&principal.scopes),
        }
    }
}

/// Granted scopes, written as a JSON array.
#[derive(Debug)]
struct Scopes<'a>(&'a crate::scopes::Granted);

impl Serialize for Scopes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
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
    /// The verified caller, when the audit trail is on.
    pub caller: Option<Arc<Principal>>,
    /// The JSON-RPC messages of the body, when it was read.
    pub messages: Vec<Message>,
    /// The request body as it streamed to the app, when the audit writer reads the messages.
    pub body: Option<Arc<Tap>>,
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
            body: None,
            trace_id: None,
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug)]
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
    time: &'a str,
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
    caller: Option<&'a Caller<'a>>,
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

/// `bytes` in lower-case hex digits, written to `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// A random request id: 32 hex digits.
fn new_request_id() -> HeaderValue {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail in practice; a zero id is still a valid id.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    let mut digits = [0u8; 32];
    hex_into(&bytes, &mut digits);
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}

/// The session id as written: enough to correlate requests, useless to resume a session.
fn session_hash(id: &[u8]) -> String {
    let mut digits = [0u8; 16];
    hex_into(
        &digest::digest(&digest::SHA256, id).as_ref()[..8],
        &mut digits,
    );
    digits.iter().map(|&d| char::from(d)).collect()
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

/// RFC 3339 UTC times with milliseconds (`2026-05-01T12:00:00.123Z`), the date and time of day
/// formatted once per second.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    prefix: String,
    text: String,
}

impl Clock {
    fn stamp(&mut self, time: SystemTime) -> &str {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if self.second != Some(since.as_secs()) {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            self.prefix = chrono::DateTime::<chrono::Utc>::from(whole)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .trim_end_matches('Z')
                .to_owned();
            self.second = Some(since.as_secs());
        }
        let millis = since.subsec_millis();
        self.text.clear();
        self.text.push_str(&self.prefix);
        self.text.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.text.push(char::from(b'0' + digit as u8));
        }
        self.text.push('Z');
        &self.text
    }
}

/// How long the writer gathers lines after the first one: at most this many wake-ups and
/// writes per second, whatever the request rate (each wake-up and write costs system calls).
const GATHER: Duration = Duration::from_millis(10);

/// The writer thread: formats and writes what is queued, a batch at a time, until every
/// sender is gone. Requests whose body is still streaming to the app wait for it (their lines
/// come later); when there are more of them than [`QUEUE`], the oldest are written without
/// their messages.
fn write_lines(mut rx: mpsc::Receiver<Entry>, mut out: Output) {
    let mut batch = Vec::new();
    let mut clock = Clock::default();
    let mut waiting: Vec<Entry> = Vec::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        if waiting.is_empty() {
            match rx.blocking_recv() {
                Some(entry) => waiting.push(entry),
                None => break,
            }
        }
        std::thread::sleep(GATHER);
        loop {
            match rx.try_recv() {
                Ok(entry) => waiting.push(entry),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let overflow = waiting.len().saturating_sub(QUEUE);
        batch.clear();
        let mut index = 0;
        waiting.retain_mut(|entry| {
            index += 1;
            // At shutdown, bodies still streaming are not waited for.
            if !entry.ready() && index > overflow && open {
                return true;
            }
            entry.read_body();
            entry.write_lines(&mut batch, &mut clock);
            if batch.len() >= 256 * 1024 {
                write(&mut out, &batch);
                batch.clear();
            }
            false
        });
        write(&mut out, &batch);
    }
}

fn write(out: &mut Output, batch: &[u8]) {
    if let Err(e) = out.write(batch) {
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
    fn times_are_rfc3339_with_milliseconds() {
        let mut clock = Clock::default();
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(
            clock.stamp(at(1_777_636_800_007)),
            "2026-05-01T12:00:00.007Z"
        );
        assert_eq!(
            clock.stamp(at(1_777_636_800_999)),
            "2026-05-01T12:00:00.999Z"
        );
        assert_eq!(
            clock.stamp(at(1_777_636_861_120)),
            "2026-05-01T12:01:01.120Z"
        );
        let now = SystemTime::now();
        let expected = chrono::DateTime::<chrono::Utc>::from(now)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(clock.stamp(now), expected);
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
