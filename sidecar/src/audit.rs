//! The audit trail: one JSON line per MCP request on the protected path (one per call of a
//! JSON-RPC batch), saying who called what and what the sidecar decided.
//!
//! The request thread formats its request's lines into a batch of its own (a lane, bounded),
//! and a writer thread takes the batches of all threads whole every so often and owns the
//! destination (stderr, or a file rotated by size): per request nothing crosses threads, so
//! the serving threads share no cache line for it. When no scope rule reads the request body,
//! the body streams to the app through a [`Tap`] that keeps a copy, and the lines are written
//! from the copy once the body is complete (almost always before the response: otherwise the
//! request goes to the writer, which waits for the body's end). When a thread's batch is full
//! the request's lines are dropped and counted (`mcp_warden_audit_dropped_total`): auditing
//! never stalls a request. Bearer tokens are never written; tool arguments only with
//! `includeArguments`.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use mcp_warden_policy::{AUDIT_TO_STDERR, AuditSpec};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;

use crate::metrics::{Metrics, Outcome, Reason, ToolMeters};
use crate::rpc::{self, Message, Scanned, Seen};
use crate::tap::{self, State, Tap};
use crate::verify::Principal;

mod json;
mod lanes;

/// Lines a serving thread's batch holds before new requests' lines are dropped (a request
/// whose body is still streaming counts for one).
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

/// A running writer: its destination and the way to it.
type Running = (Destination, Queue);

/// The way to a writer thread: each serving thread's batch of lines (and of requests whose
/// body is still streaming), with what that thread keeps from line to line.
type Queue = lanes::Sender<Entry, Scribe>;

/// A writer started, for [`Writers::finish`].
struct Started {
    /// Its lanes, without keeping them open.
    hub: Weak<lanes::Hub<Entry, Scribe>>,
    thread: JoinHandle<()>,
    finishing: Arc<Finishing>,
}

/// [`Writers::finish`]'s requests to a writer.
struct Finishing {
    /// Set when it is to write what it has without gathering more.
    now: AtomicBool,
    /// Said once everything appended before is written; `None` once the writer stopped.
    acks: Mutex<Option<Vec<tokio::sync::oneshot::Sender<()>>>>,
}

impl Finishing {
    fn new() -> Self {
        Finishing {
            now: AtomicBool::new(false),
            acks: Mutex::new(Some(Vec::new())),
        }
    }

    fn is_set(&self) -> bool {
        self.now.load(Ordering::Acquire)
    }

    /// Whether an acknowledgement waits.
    fn is_asked(&self) -> bool {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        acks.as_ref().is_some_and(|acks| !acks.is_empty())
    }

    /// Moves the acknowledgements asked for so far to `into`; all of them, for good, when the
    /// writer `stops`.
    fn take_acks(&self, into: &mut Vec<tokio::sync::oneshot::Sender<()>>, stops: bool) {
        let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        if stops {
            into.extend(acks.take().into_iter().flatten());
        } else if let Some(acks) = acks.as_mut() {
            into.append(acks);
        }
    }
}

/// How long [`Writers::finish`] waits for each writer.
const FINISH: Duration = Duration::from_secs(5);

/// The writer in use, kept across policy reloads so a reload with the same destination keeps
/// the same thread and file.
#[derive(Clone)]
pub struct Writers {
    current: Arc<Mutex<Option<Running>>>,
    /// Every writer started and not known to have stopped.
    started: Arc<Mutex<Vec<Started>>>,
    dropped: Counter,
}

impl Writers {
    /// The shared writer state; lines dropped are counted in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Writers {
            current: Arc::default(),
            started: Arc::default(),
            dropped: metrics.audit_dropped.clone(),
        }
    }

    /// A way to the writer for `dest`, starting one if the destination changed.
    fn sender(&self, dest: Destination) -> io::Result<Queue> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, queue)) = current.as_ref()
            && *d == dest
            && !queue.is_closed()
        {
            return Ok(queue.clone());
        }
        let out = Output::open(&dest)?;
        let (pending, rx) = lanes::channel(QUEUE, WAKE_AT);
        let finishing = Arc::new(Finishing::new());
        let flag = finishing.clone();
        let writer = std::thread::Builder::new()
            .name("mcp-warden-audit".into())
            .spawn(move || write_lines(rx, out, &flag))?;
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started.retain(|s| !s.thread.is_finished());
        let queue = pending.sender(writer.thread().clone());
        started.push(Started {
            hub: Arc::downgrade(queue.hub()),
            thread: writer,
            finishing,
        });
        *current = Some((dest, queue.clone()));
        Ok(queue)
    }

    /// Has every line appended so far written, by every writer and from every serving thread
    /// (at shutdown, once requests are drained): a writer still in use writes what it holds
    /// without gathering more, one whose policy is gone writes the rest and stops. Waits at
    /// most [`FINISH`] for each.
    pub async fn finish(&self) {
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()));
        for Started {
            hub,
            thread,
            finishing,
        } in started
        {
            finishing.now.store(true, Ordering::Release);
            // Gone: the writer wrote the rest and stopped.
            if hub.strong_count() == 0 {
                continue;
            }
            let (ack, written) = tokio::sync::oneshot::channel();
            match finishing
                .acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                Some(acks) => acks.push(ack),
                // Stopped: everything was written.
                None => continue,
            }
            thread.thread().unpark();
            if tokio::time::timeout(FINISH, written).await.is_err() {
                tracing::warn!("audit lines still not written at shutdown");
            }
        }
    }
}

/// One policy's audit settings, resolved for the request path.
pub struct Auditor {
    format: Arc<Format>,
    queue: Option<Queue>,
    dropped: Counter,
    tools: Option<ToolMeters>,
}

/// How one policy's lines are written.
struct Format {
    /// The policy's name as a JSON string.
    policy: Vec<u8>,
    include_arguments: bool,
    max_argument_bytes: usize,
    redact: Vec<String>,
}

/// A message as written: what it says, and its arguments when kept.
type Call<'a> = (Seen<'a>, Option<&'a Value>);

fn with_arguments(message: &Message) -> Call<'_> {
    (message.seen(), message.arguments.as_ref())
}

/// A finished request whose body was still streaming, on its way to the writer.
struct Entry {
    format: Arc<Format>,
    time: SystemTime,
    record: Record,
    done: Done,
}

/// A finished request as its lines are written: borrowed, so that formatting on a serving
/// thread touches no reference count that other threads share (the policy's [`Format`]).
#[derive(Clone, Copy)]
struct Lines<'a> {
    format: &'a Arc<Format>,
    time: SystemTime,
    record: &'a Record,
    done: &'a Done,
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
                policy: json::quoted(policy),
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

    /// Whether the audit trail alone reads request bodies (no per-tool metrics), so they may
    /// stream to the app through a [`Tap`] and be read from its copy.
    pub fn taps_bodies(&self) -> bool {
        self.queue.is_some() && self.tools.is_none()
    }

    /// Counts the tool calls of a finished request and writes its audit lines to this thread's
    /// batch (a request whose body is still streaming goes there for the writer to finish).
    pub fn finish(&self, mut record: Record, done: Done) {
        if let Some(tools) = &self.tools {
            for tool in record.messages.iter().filter_map(|m| m.tool.as_deref()) {
                tools.observe(tool, done.outcome);
            }
        }
        let Some(queue) = &self.queue else { return };
        let time = SystemTime::now();
        // Counted per line, as the lines of a batch would have been written.
        let dropped = record.lines();
        // The usual case borrows the record: it is not moved again (it is large).
        let appended = if record.ready() {
            let lines = Lines {
                format: &self.format,
                time,
                record: &record,
                done: &done,
            };
            let appended = queue.append(|batch, scribe| lines.write(&mut batch.lines, scribe));
            if let Some(tap) = record.body.take() {
                tap::recycle(tap);
            }
            appended
        } else {
            queue.append(|batch, _| {
                batch.items.push(Entry {
                    format: self.format.clone(),
                    time,
                    record,
                    done,
                });
                1
            })
        };
        if !appended {
            self.dropped.inc_by(dropped as u64);
        }
    }
}

impl Record {
    /// Whether the request body (if tapped) is done, so the lines can be written.
    fn ready(&self) -> bool {
        self.body
            .as_ref()
            .is_none_or(|tap| tap.state() != State::Open)
    }

    /// How many lines this request gets: one per call, at least one (a tapped body not read yet
    /// counts as one).
    fn lines(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.method.is_some())
            .count()
            .max(1)
    }
}

impl Entry {
    /// The request as its lines are written.
    fn lines(&self) -> Lines<'_> {
        Lines {
            format: &self.format,
            time: self.time,
            record: &self.record,
            done: &self.done,
        }
    }

    /// Whether the request body (if tapped) is done, so the lines can be written.
    fn ready(&self) -> bool {
        self.record.ready()
    }

    /// Appends this request's lines to `out`; how many.
    fn write_lines(&self, out: &mut Vec<u8>, scribe: &mut Scribe) -> usize {
        self.lines().write(out, scribe)
    }
}

impl Lines<'_> {
    /// Appends this request's lines (one per call of a batch) to `out`. The messages of a
    /// tapped body are read here, borrowed from it where the scan can; a body that is not a
    /// JSON-RPC message, too large or not read to the end is audited without them, as on the
    /// request path. Returns how many lines.
    fn write(&self, out: &mut Vec<u8>, scribe: &mut Scribe) -> usize {
        let Some(tap) = &self.record.body else {
            return self.write_calls(out, scribe, self.record.messages.iter().map(with_arguments));
        };
        let read = tap.read(|body| {
            if self.format.include_arguments {
                let messages = rpc::scan_with_arguments(body).unwrap_or_default();
                self.write_calls(out, scribe, messages.iter().map(with_arguments))
            } else {
                let scanned =
                    rpc::scan_borrowed(body).unwrap_or_else(|_| Scanned::Owned(Vec::new()));
                self.write_calls(out, scribe, scanned.iter().map(|m| (m, None)))
            }
        });
        read.unwrap_or_else(|| self.write_calls(out, scribe, std::iter::empty()))
    }

    /// Appends a line per call in `messages` (a line when there is none); how many.
    fn write_calls<'m>(
        &self,
        out: &mut Vec<u8>,
        scribe: &mut Scribe,
        messages: impl Iterator<Item = Call<'m>> + Clone,
    ) -> usize {
        let calls = messages.filter(|(m, _)| m.method.is_some());
        let count = calls.clone().count();
        let session = self.record.session_digits();
        let session = session.as_ref().and_then(|d| std::str::from_utf8(d).ok());
        if count == 0 {
            self.line(out, scribe, session, None, 0);
        }
        for (i, call) in calls.enumerate() {
            self.line(out, scribe, session, Some((i, call)), count);
        }
        count.max(1)
    }

    /// Appends one line: `time`, `kind`, `request_id`, `policy`, `outcome`, `reason`, `status`,
    /// `latency_ms`, `http_method`, `path`, then those of `caller`, `session`, `trace_id`,
    /// `method`, `tool`, `resource_uri`, `prompt`, `batch_index`, `batch_size` and `arguments`
    /// that have a value.
    fn line(
        &self,
        out: &mut Vec<u8>,
        scribe: &mut Scribe,
        session: Option<&str>,
        call: Option<(usize, Call)>,
        calls: usize,
    ) {
        let (record, done, format) = (self.record, self.done, &**self.format);
        let message = call.map(|(_, (m, _))| m);
        let method = message.and_then(|m| m.method);
        // The time has nothing to escape.
        out.extend_from_slice(b"{\"time\":");
        scribe.clock.write(out, self.time);
        out.extend_from_slice(b",\"kind\":\"mcp_warden.audit\",\"request_id\":");
        // An id made here is 32 hex digits (copied at a known length: no call) and a well-formed
        // one has nothing to escape; any other is escaped all the same.
        let id = record.request_id.as_bytes();
        match <&[u8; 32]>::try_from(id) {
            Ok(digits) if record.id_made => {
                out.push(b'"');
                out.extend_from_slice(digits);
                out.push(b'"');
            }
            _ => {
                if !json::printable(out, id) {
                    json::string(out, record.request_id.to_str().unwrap_or_default());
                }
            }
        }
        out.extend_from_slice(scribe.labels(self.format, done));
        json::millis(out, done.latency);
        out.extend_from_slice(scribe.target(record));
        text(out, b"session", session);
        text(out, b"trace_id", record.trace_id.as_deref());
        match method.and_then(method_field) {
            Some(json) => out.extend_from_slice(json),
            None => text(out, b"method", method),
        }
        text(out, b"tool", message.and_then(|m| m.tool));
        let target = message.and_then(|m| m.target);
        text(
            out,
            b"resource_uri",
            target.filter(|_| method == Some("resources/read")),
        );
        text(
            out,
            b"prompt",
            target.filter(|_| method == Some("prompts/get")),
        );
        if let Some((i, _)) = call.filter(|_| calls > 1) {
            field(out, b"batch_index");
            json::unsigned(out, i as u64);
            field(out, b"batch_size");
            json::unsigned(out, calls as u64);
        }
        let arguments = call
            .and_then(|(_, (_, arguments))| arguments)
            .filter(|_| format.include_arguments)
            .map(|a| format.arguments(a));
        if let Some(arguments) = arguments {
            field(out, b"arguments");
            // Writing a `Value` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, &arguments);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// What a serving thread (or the writer) keeps from line to line: its clock, and the parts of
/// the last line that the next one likely shares, with what they were made of (a client's
/// requests come with the same token, verified once and shared, to the same path, and mostly
/// end the same way).
#[derive(Default)]
struct Scribe {
    clock: Clock,
    /// `,"policy":` to `,"latency_ms":`.
    labels: Option<(Labels, Vec<u8>)>,
    /// `,"http_method":` to the end of `caller`.
    target: Option<(Target, Vec<u8>)>,
}

/// What the labels part of a line is made of.
struct Labels {
    format: Arc<Format>,
    outcome: Outcome,
    reason: Reason,
    status: u16,
}

/// What the target part of a line is made of.
struct Target {
    method: http::Method,
    path: Arc<str>,
    caller: Option<Arc<Principal>>,
}

impl Scribe {
    /// `,"policy":…,"outcome":…,"reason":…,"status":…,"latency_ms":` of a request.
    fn labels(&mut self, format: &Arc<Format>, done: &Done) -> &[u8] {
        let known = self.labels.as_ref().is_some_and(|(last, _)| {
            Arc::ptr_eq(&last.format, format)
                && last.outcome == done.outcome
                && last.reason == done.reason
                && last.status == done.status
        });
        if !known {
            // Labels have nothing to escape.
            let mut json = Vec::new();
            json.extend_from_slice(b",\"policy\":");
            json.extend_from_slice(&format.policy);
            json.extend_from_slice(b",\"outcome\":\"");
            json.extend_from_slice(done.outcome.as_str().as_bytes());
            json.extend_from_slice(b"\",\"reason\":\"");
            json.extend_from_slice(done.reason.as_str().as_bytes());
            json.extend_from_slice(b"\",\"status\":");
            json::unsigned(&mut json, done.status.into());
            json.extend_from_slice(b",\"latency_ms\":");
            let labels = Labels {
                format: format.clone(),
                outcome: done.outcome,
                reason: done.reason,
                status: done.status,
            };
            self.labels = Some((labels, json));
        }
        self.labels.as_ref().map_or(&[], |(_, json)| json)
    }

    /// `,"http_method":…,"path":…` and `,"caller":…` when known, of `record`.
    fn target(&mut self, record: &Record) -> &[u8] {
        let known = self.target.as_ref().is_some_and(|(last, _)| {
            last.method == record.http_method
                && (Arc::ptr_eq(&last.path, &record.path) || last.path == record.path)
                && match (&last.caller, &record.caller) {
                    (Some(last), Some(caller)) => Arc::ptr_eq(last, caller),
                    (None, None) => true,
                    _ => false,
                }
        });
        if !known {
            // The HTTP method is a token: nothing to escape.
            let mut json = Vec::new();
            json.extend_from_slice(b",\"http_method\":\"");
            json.extend_from_slice(record.http_method.as_str().as_bytes());
            json.extend_from_slice(b"\",\"path\":");
            json::string(&mut json, &record.path);
            if let Some(principal) = &record.caller {
                json.extend_from_slice(b",\"caller\":");
                caller(&mut json, principal);
            }
            let target = Target {
                method: record.http_method.clone(),
                path: record.path.clone(),
                caller: record.caller.clone(),
            };
            self.target = Some((target, json));
        }
        self.target.as_ref().map_or(&[], |(_, json)| json)
    }
}

/// `,"method":"…"` for the usual MCP methods, written ahead (nothing to escape in them).
fn method_field(method: &str) -> Option<&'static [u8]> {
    macro_rules! fields {
        ($($name:literal),*) => {
            match method {
                $($name => Some(concat!(",\"method\":\"", $name, "\"").as_bytes()),)*
                _ => None,
            }
        };
    }
    fields!(
        "tools/call",
        "tools/list",
        "resources/read",
        "resources/list",
        "resources/templates/list",
        "prompts/get",
        "prompts/list",
        "initialize",
        "ping",
        "notifications/initialized"
    )
}

/// Appends `,"name":` and `value` when there is one.
#[inline(always)]
fn text(out: &mut Vec<u8>, name: &[u8], value: Option<&str>) {
    if let Some(value) = value {
        field(out, name);
        json::string(out, value);
    }
}

/// Appends `,"name":`.
#[inline]
fn field(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
}

/// Appends the caller as far as the token told: `sub`, `client_id` (or `azp`), `iss` when they
/// are strings, and the granted scopes.
fn caller(out: &mut Vec<u8>, principal: &Principal) {
    let text = |name: &str| principal.claims.get(name).and_then(|claim| claim.as_str());
    out.push(b'{');
    for (name, value) in [
        (&b"\"sub\":"[..], text("sub")),
        (b"\"client_id\":", text("client_id").or_else(|| text("azp"))),
        (b"\"iss\":", text("iss")),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(name);
            json::string(out, value);
            out.push(b',');
        }
    }
    out.extend_from_slice(b"\"scopes\":[");
    for (i, scope) in principal.scopes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::string(out, scope);
    }
    out.extend_from_slice(b"]}");
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

/// What the request path learned about one request, for its audit lines and its span.
pub struct Record {
    /// The request id sent to the app (`X-Request-Id`).
    pub request_id: HeaderValue,
    /// The HTTP method.
    pub http_method: http::Method,
    /// The request path (without the query).
    pub path: Arc<str>,
    /// `Mcp-Session-Id`, hashed when written ([`Record::session`]).
    pub session_id: Option<Box<[u8]>>,
    /// The verified caller, when the audit trail is on.
    pub caller: Option<Arc<Principal>>,
    /// The JSON-RPC messages of the body, when it was read.
    pub messages: Vec<Message>,
    /// The request body as it streamed to the app, when the audit writer reads the messages.
    pub body: Option<Arc<Tap>>,
    /// The trace this request belongs to, when tracing is on.
    pub trace_id: Option<String>,
    /// Whether `request_id` was made here (hex digits), not the client's.
    id_made: bool,
}

impl Record {
    /// Starts a record from the request head: keeps a well-formed client `X-Request-Id`, else
    /// makes one.
    pub fn new(method: &http::Method, path: &str, headers: &HeaderMap) -> Self {
        // Both found in one pass over the few fields of a request (two look-ups hash both
        // names); the first of each counts, as `get` would take it.
        let (mut request_id, mut session_id) = (None, None);
        for (name, value) in headers {
            if request_id.is_none() && *name == X_REQUEST_ID {
                request_id = Some(value);
            } else if session_id.is_none() && *name == MCP_SESSION_ID {
                session_id = Some(value);
            }
        }
        let kept = request_id.and_then(|v| {
            well_formed_id(v.as_bytes())
                .then(|| HeaderValue::from_bytes(v.as_bytes()).ok())
                .flatten()
        });
        let id_made = kept.is_none();
        Record {
            request_id: kept.unwrap_or_else(new_request_id),
            http_method: method.clone(),
            // Copies, not the header values: those keep the connection's whole read buffer.
            path: shared_path(path),
            session_id: session_id.map(|v| v.as_bytes().into()),
            caller: None,
            messages: Vec::new(),
            body: None,
            trace_id: None,
            id_made,
        }
    }

    /// The session as written: the first 16 hex digits of the SHA-256 of `Mcp-Session-Id`,
    /// enough to correlate requests, useless to resume a session.
    pub fn session(&self) -> Option<String> {
        self.session_digits()
            .map(|digits| digits.iter().map(|&d| char::from(d)).collect())
    }

    #[inline]
    fn session_digits(&self) -> Option<[u8; 16]> {
        let id = self.session_id.as_ref()?;
        let mut digits = [0u8; 16];
        hex_into(
            &digest::digest(&digest::SHA256, id).as_ref()[..8],
            &mut digits,
        );
        Some(digits)
    }
}

thread_local! {
    /// The last request path on this thread: most requests are to the same path.
    static PATH: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// `path`, shared with the last request's when it is the same.
fn shared_path(path: &str) -> Arc<str> {
    PATH.with_borrow_mut(|last| match last {
        Some(last) if **last == *path => last.clone(),
        _ => last.insert(path.into()).clone(),
    })
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

/// Request ids made ahead on each thread: one draw from the system RNG and one allocation for
/// this many.
const IDS_AHEAD: usize = 64;

thread_local! {
    /// The ids made ahead and not used yet, 32 hex digits each.
    static IDS: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
}

/// A random request id: 32 hex digits (128 random bits).
fn new_request_id() -> HeaderValue {
    IDS.with_borrow_mut(|ids| {
        if ids.is_empty() {
            let mut random = [0u8; 16 * IDS_AHEAD];
            // The system RNG does not fail in practice; a zero id is still a valid id.
            let _ = aws_lc_rs::rand::fill(&mut random);
            let mut digits = vec![0u8; 32 * IDS_AHEAD];
            hex_into(&random, &mut digits);
            *ids = Bytes::from(digits);
        }
        HeaderValue::from_maybe_shared(ids.split_to(32))
            .expect("hex digits are a valid header value")
    })
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

/// RFC 3339 UTC times with milliseconds (`2026-05-01T12:00:00.123Z`) as JSON strings, the date
/// and time of day formatted once per second.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    /// `"2026-05-01T12:00:00.`
    prefix: Vec<u8>,
}

impl Clock {
    fn write(&mut self, out: &mut Vec<u8>, time: SystemTime) {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if self.second != Some(since.as_secs()) {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            let text = chrono::DateTime::<chrono::Utc>::from(whole)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            self.prefix.clear();
            self.prefix.push(b'"');
            self.prefix
                .extend_from_slice(text.trim_end_matches('Z').as_bytes());
            self.prefix.push(b'.');
            self.second = Some(since.as_secs());
        }
        let millis = since.subsec_millis();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
            b'"',
        ]);
    }
}

/// How long the writer gathers lines after the first one, unless a serving thread's batch
/// reaches [`WAKE_AT`] lines first: at a moderate rate about ten wake-ups and writes a second,
/// whatever the rate (each costs the writer two context switches and a write, and the request
/// that wakes it a system call). Lines reach the destination within this time.
const GATHER: Duration = Duration::from_millis(100);
/// Lines in a serving thread's batch that end the writer's gathering early: bounds what waits
/// in memory, and the batch never fills in a burst (a quarter of [`QUEUE`]; 100 ms gathered at
/// 20,000 requests/s on one thread).
const WAKE_AT: usize = QUEUE / 4;

/// The writer thread: takes the serving threads' batches and writes them, a gathering at a
/// time, until every sender is gone. Requests whose body was still streaming when they
/// finished wait for it here (their lines come later); when there are more of them than
/// [`QUEUE`], the oldest are written without their messages. Once `finishing`
/// ([`Writers::finish`]) it no longer gathers, and an acknowledgement says that everything
/// appended before it was asked for is written.
fn write_lines(rx: lanes::Receiver<Entry, Scribe>, out: Output, finishing: &Finishing) {
    let mut writer = Writer {
        out,
        batch: Vec::new(),
        scribe: Scribe::default(),
    };
    let mut taken: Vec<lanes::Batch<Entry>> = Vec::new();
    let mut waiting: Vec<Entry> = Vec::new();
    let mut acks = Vec::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        if waiting.is_empty() && !rx.wait(|| finishing.is_asked()) {
            break; // Every sender is gone.
        }
        gather(&rx, Instant::now() + GATHER, finishing);
        // Once every sender is gone nothing more comes: what is taken then is the rest.
        open = !rx.is_closed();
        // Before the batches: what was appended before an acknowledgement was asked for is in
        // them.
        finishing.take_acks(&mut acks, false);
        rx.take(&mut taken);
        for batch in &mut taken {
            writer.write_chunked(&batch.lines);
            waiting.append(&mut batch.items);
        }
        // At shutdown, bodies still streaming are not waited for.
        let all = !open || finishing.is_set() || !acks.is_empty();
        let queued = waiting.len();
        writer.write_ready(&mut waiting, queued.saturating_sub(QUEUE), all);
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        // A burst leaves the batches at their peak: give that memory back once the rate drops,
        // without reallocating on every gathering at a steady rate. The batches go back to
        // the serving threads at the next take.
        for batch in &mut taken {
            let used = batch.lines.len();
            batch.clear();
            trim(&mut batch.lines, used, FLUSH_BYTES / 8);
            trim(&mut batch.items, 0, KEEP_WAITING);
        }
        trim(&mut waiting, queued, KEEP_WAITING);
    }
    // Acknowledgements asked for from now on are answered at once.
    finishing.take_acks(&mut acks, true);
    for ack in acks.drain(..) {
        let _ = ack.send(());
    }
}

/// The writer thread's state from gathering to gathering.
struct Writer {
    out: Output,
    /// Lines of requests whose body was streaming, not written yet.
    batch: Vec<u8>,
    scribe: Scribe,
}

impl Writer {
    /// Writes `lines` in writes of about [`FLUSH_BYTES`] (cut after a line), so that a file
    /// is rotated at about its size.
    fn write_chunked(&mut self, mut lines: &[u8]) {
        while lines.len() > FLUSH_BYTES {
            let end = lines[FLUSH_BYTES..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(lines.len(), |at| FLUSH_BYTES + at + 1);
            let (chunk, rest) = lines.split_at(end);
            write(&mut self.out, chunk);
            lines = rest;
        }
        if !lines.is_empty() {
            write(&mut self.out, lines);
        }
    }

    /// Writes the lines of the requests in `waiting` whose body is done (all when `all`, and
    /// the first `overflow` anyway), leaving the others.
    fn write_ready(&mut self, waiting: &mut Vec<Entry>, overflow: usize, all: bool) {
        let mut index = 0;
        waiting.retain(|entry| {
            index += 1;
            if !all && index > overflow && !entry.ready() {
                return true;
            }
            entry.write_lines(&mut self.batch, &mut self.scribe);
            if self.batch.len() >= FLUSH_BYTES {
                write(&mut self.out, &self.batch);
                self.batch.clear();
            }
            false
        });
        if !self.batch.is_empty() {
            write(&mut self.out, &self.batch);
            let used = self.batch.len();
            self.batch.clear();
            trim(&mut self.batch, used, FLUSH_BYTES / 8);
        }
    }
}

/// Waits until `until` for more lines, unless a serving thread's batch reaches [`WAKE_AT`]
/// first, every sender goes or the writer is `finishing`. Parked, not asleep: [`Queue`] and
/// [`Writers::finish`] wake it.
fn gather(rx: &lanes::Receiver<Entry, Scribe>, until: Instant, finishing: &Finishing) {
    while !rx.is_urgent() && !rx.is_closed() && !finishing.is_set() {
        let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        std::thread::park_timeout(left);
    }
}

/// Lines written at a time, at most (a burst's lines go out in writes of this size).
const FLUSH_BYTES: usize = 256 * 1024;
/// Requests with a body still streaming that the writer keeps room for between gatherings.
const KEEP_WAITING: usize = 256;

/// Shrinks `buf` to `keep` items (or its length, if larger) when this batch used (at its peak,
/// `used` items) under a quarter of it.
fn trim<T>(buf: &mut Vec<T>, used: usize, keep: usize) {
    if buf.capacity() > keep && used < buf.capacity() / 4 {
        buf.shrink_to(keep.max(buf.len()));
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
    use crate::metrics::{Outcome, Reason};
    use crate::tap::Tapped;

    #[test]
    fn writer_buffers_shrink_after_a_burst_not_at_a_steady_rate() {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        // Batches that fill a good part of it: kept as it is.
        trim(&mut buf, 300 * 1024, 32 * 1024);
        assert_eq!(buf.capacity(), 1 << 20);
        // The burst is over: back to the room kept between batches.
        buf.extend_from_slice(&[b'x'; 1000]);
        trim(&mut buf, 1000, 32 * 1024);
        assert!(buf.capacity() >= 32 * 1024 && buf.capacity() < 64 * 1024);
        assert_eq!(buf.len(), 1000);
        // Already small: untouched.
        let before = buf.capacity();
        trim(&mut buf, 10, 32 * 1024);
        assert_eq!(buf.capacity(), before);
    }

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
    fn new_request_ids_differ_across_refills_of_the_random_pool() {
        let ids: std::collections::HashSet<HeaderValue> =
            (0..3 * IDS_AHEAD).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 3 * IDS_AHEAD);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
    }

    #[test]
    fn paths_are_shared_with_the_last_request_when_the_same() {
        let record = |path: &str| Record::new(&http::Method::POST, path, &HeaderMap::new());
        let (a, b, c) = (record("/mcp"), record("/mcp"), record("/other"));
        assert!(Arc::ptr_eq(&a.path, &b.path));
        assert_eq!((&*a.path, &*c.path), ("/mcp", "/other"));
        assert_eq!(&*record("/mcp").path, "/mcp");
    }

    #[test]
    fn sessions_are_hashed() {
        let mut h = HeaderMap::new();
        h.insert(MCP_SESSION_ID, "secret-session".parse().unwrap());
        let r = Record::new(&http::Method::POST, "/mcp", &h);
        let hash = r.session().unwrap();
        assert_eq!(hash.len(), 16);
        assert!(!hash.contains("secret"));
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        let mut clock = Clock::default();
        let mut stamp = |time: SystemTime| {
            let mut out = Vec::new();
            clock.write(&mut out, time);
            serde_json::from_slice::<String>(&out).unwrap()
        };
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(stamp(at(1_777_636_800_007)), "2026-05-01T12:00:00.007Z");
        assert_eq!(stamp(at(1_777_636_800_999)), "2026-05-01T12:00:00.999Z");
        assert_eq!(stamp(at(1_777_636_861_120)), "2026-05-01T12:01:01.120Z");
        let now = SystemTime::now();
        let expected = chrono::DateTime::<chrono::Utc>::from(now)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(stamp(now), expected);
    }

    #[test]
    fn labels_need_no_escapes() {
        let labels = Outcome::ALL.iter().map(|o| o.as_str());
        for label in labels.chain(Reason::ALL.iter().map(|r| r.as_str())) {
            assert_eq!(json::quoted(label), format!("\"{label}\"").into_bytes());
        }
    }

    fn entry(format: Format, record: Record) -> Entry {
        Entry {
            format: Arc::new(format),
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_777_636_800_007),
            record,
            done: Done {
                outcome: Outcome::Forbidden,
                reason: Reason::InsufficientScope,
                status: 403,
                latency: Duration::from_micros(12_345),
            },
        }
    }

    fn lines(entry: &Entry) -> Vec<Value> {
        let mut out = Vec::new();
        entry.write_lines(&mut out, &mut Scribe::default());
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'), "{text}");
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    const HOSTILE: &str = "\"},\"outcome\":\"allowed\",\"x\":\"\\\u{0}\n\u{1f}\u{7f}é😀\u{2028}";

    #[test]
    fn lines_carry_hostile_strings_as_the_same_values() {
        let claims = serde_json::json!({
            "sub": HOSTILE, "azp": format!("client{HOSTILE}"), "iss": "https://issuer/\\",
            "scope": "read \"write\" a\\b",
        });
        let claims: crate::verify::Claims = claims.as_object().unwrap().clone().into();
        let principal = Principal {
            scopes: claims.granted(),
            claims,
            expires_at: 0,
        };
        let mut headers = HeaderMap::new();
        headers.insert(MCP_SESSION_ID, "s-1".parse().unwrap());
        // What a request target may carry of it (no control characters, no spaces).
        let path = r#"/mcp/"},"x":"\\{}|^"#;
        let mut record = Record::new(&http::Method::POST, path, &headers);
        record.caller = Some(Arc::new(principal));
        record.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
        let message = |method: &str, tool: Option<&str>, target: Option<&str>| Message {
            method: Some(method.to_owned().into()),
            tool: tool.map(String::from),
            target: target.map(String::from),
            arguments: Some(serde_json::json!({"password": HOSTILE, "n": 1})),
        };
        record.messages = vec![
            message("tools/call", Some(HOSTILE), None),
            Message::default(),
            message("resources/read", None, Some(&format!("file:///{HOSTILE}"))),
            message("prompts/get", None, Some(HOSTILE)),
        ];
        let session = record.session().unwrap();
        let format = Format {
            policy: json::quoted(&format!("policy{HOSTILE}")),
            include_arguments: true,
            max_argument_bytes: 1000,
            redact: vec!["password".into()],
        };
        let lines = lines(&entry(format, record));
        let common = serde_json::json!({
            "time": "2026-05-01T12:00:00.007Z",
            "kind": "mcp_warden.audit",
            "policy": format!("policy{HOSTILE}"),
            "outcome": "forbidden",
            "reason": "insufficient_scope",
            "status": 403,
            "latency_ms": 12.345,
            "http_method": "POST",
            "path": path,
            "caller": {
                "sub": HOSTILE, "client_id": format!("client{HOSTILE}"),
                "iss": "https://issuer/\\", "scopes": ["\"write\"", "a\\b", "read"],
            },
            "session": session,
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "batch_size": 3,
            "arguments": {"password": "[redacted]", "n": 1},
        });
        let expected = |index: usize, method: &str, extra: Value| {
            let mut line = common.clone();
            let object = line.as_object_mut().unwrap();
            object.insert("batch_index".into(), index.into());
            object.insert("method".into(), method.into());
            object.extend(extra.as_object().unwrap().clone());
            line
        };
        assert_eq!(lines.len(), 3);
        let request_id = lines[0]["request_id"].as_str().unwrap();
        assert_eq!(request_id.len(), 32);
        let without_id = |mut line: Value| {
            line.as_object_mut().unwrap().remove("request_id");
            line
        };
        let lines: Vec<Value> = lines.into_iter().map(without_id).collect();
        assert_eq!(
            lines[0],
            expected(0, "tools/call", serde_json::json!({"tool": HOSTILE}))
        );
        assert_eq!(
            lines[1],
            expected(
                1,
                "resources/read",
                serde_json::json!({"resource_uri": format!("file:///{HOSTILE}")})
            )
        );
        assert_eq!(
            lines[2],
            expected(2, "prompts/get", serde_json::json!({"prompt": HOSTILE}))
        );
    }

    #[tokio::test]
    async fn a_tapped_body_gets_the_lines_of_a_body_read_on_the_request_path() {
        use http_body_util::{BodyExt, Full};
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"password":"x","n":1}}}"#,
            r#"[{"method":"resources/read","params":{"uri":"file:///a"}},{"id":1,"result":{}},{"method":"prompts/get","params":{"name":"p"}},{"method":"x/custom"}]"#,
            // Escapes: read by the full scan.
            r#"{"method":"tools/call","params":{"name":"a\"b\u0063","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"method":"tools/call","params":{"name":"a","NAME":"b"}}"#,
            "not json",
            "",
        ];
        for body in bodies {
            for include_arguments in [false, true] {
                let format = || Format {
                    policy: json::quoted("p"),
                    include_arguments,
                    max_argument_bytes: 1000,
                    redact: vec!["password".into()],
                };
                let mut read = Record::new(&http::Method::POST, "/mcp", &HeaderMap::new());
                read.messages = if include_arguments {
                    rpc::scan_with_arguments(body.as_bytes())
                } else {
                    rpc::scan(body.as_bytes())
                }
                .unwrap_or_default();
                let mut tapped = Record::new(&http::Method::POST, "/mcp", &HeaderMap::new());
                tapped.request_id = read.request_id.clone();
                let (tap, kept) = Tapped::new(Full::new(Bytes::from(body)), 1000);
                tapped.body = Some(kept);
                tap.collect().await.unwrap();
                let (read, tapped) = (entry(format(), read), entry(format(), tapped));
                assert!(tapped.ready());
                assert_eq!(lines(&tapped), lines(&read), "{body}");
            }
        }
    }

    #[test]
    fn each_line_has_its_own_caller_when_callers_alternate() {
        let principal = |sub: &str| {
            let claims = serde_json::json!({"sub": sub, "scope": "s"});
            let claims: crate::verify::Claims = claims.as_object().unwrap().clone().into();
            Arc::new(Principal {
                scopes: claims.granted(),
                claims,
                expires_at: 0,
            })
        };
        let (alice, bob) = (principal("alice"), principal("bob"));
        let mut scribe = Scribe::default();
        let mut out = Vec::new();
        for caller in [&alice, &bob, &bob, &alice, &principal("alice2")] {
            let mut record = Record::new(&http::Method::POST, "/mcp", &HeaderMap::new());
            record.caller = Some(caller.clone());
            let format = Format {
                policy: json::quoted("p"),
                include_arguments: false,
                max_argument_bytes: 0,
                redact: Vec::new(),
            };
            entry(format, record).write_lines(&mut out, &mut scribe);
        }
        let subs: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["caller"]["sub"].to_string())
            .collect();
        assert_eq!(
            subs,
            [
                r#""alice""#,
                r#""bob""#,
                r#""bob""#,
                r#""alice""#,
                r#""alice2""#
            ]
        );
    }

    #[test]
    fn each_line_has_its_own_labels_and_target_when_they_change() {
        let format = |policy: &str| {
            Arc::new(Format {
                policy: json::quoted(policy),
                include_arguments: false,
                max_argument_bytes: 0,
                redact: Vec::new(),
            })
        };
        let (p, q) = (format("p"), format("q"));
        let done = |outcome, reason, status| Done {
            outcome,
            reason,
            status,
            latency: Duration::from_millis(1),
        };
        let allowed = done(Outcome::Allowed, Reason::None, 200);
        let entries = [
            (&p, allowed, http::Method::POST, "/mcp"),
            (&p, allowed, http::Method::POST, "/mcp"),
            (&q, allowed, http::Method::POST, "/mcp"),
            (
                &q,
                done(Outcome::Forbidden, Reason::InsufficientScope, 403),
                http::Method::POST,
                "/mcp",
            ),
            (
                &q,
                done(Outcome::Forbidden, Reason::InsufficientScope, 404),
                http::Method::POST,
                "/mcp",
            ),
            (
                &q,
                done(Outcome::Unauthorized, Reason::InsufficientScope, 404),
                http::Method::POST,
                "/mcp",
            ),
            (
                &q,
                done(Outcome::Unauthorized, Reason::Expired, 404),
                http::Method::POST,
                "/mcp",
            ),
            (&q, allowed, http::Method::GET, "/mcp"),
            (&q, allowed, http::Method::GET, "/mcp/x"),
            (&p, allowed, http::Method::GET, "/mcp/x"),
        ];
        let mut scribe = Scribe::default();
        for (format, done, method, path) in entries {
            let entry = Entry {
                format: format.clone(),
                time: SystemTime::UNIX_EPOCH,
                record: Record::new(&method, path, &HeaderMap::new()),
                done,
            };
            let (mut kept, mut fresh) = (Vec::new(), Vec::new());
            entry.write_lines(&mut kept, &mut scribe);
            entry.write_lines(&mut fresh, &mut Scribe::default());
            assert_eq!(
                String::from_utf8_lossy(&kept),
                String::from_utf8_lossy(&fresh)
            );
            let line: Value = serde_json::from_slice(&fresh).unwrap();
            assert_eq!(
                line["policy"],
                *String::from_utf8_lossy(&format.policy).trim_matches('"')
            );
            assert_eq!(line["status"], done.status);
            assert_eq!(line["outcome"], done.outcome.as_str());
            assert_eq!(line["reason"], done.reason.as_str());
            assert_eq!(line["http_method"], method.as_str());
            assert_eq!(line["path"], path);
        }
    }

    #[test]
    fn a_request_without_calls_gets_one_line_with_what_was_known() {
        let record = Record::new(&http::Method::GET, "/mcp", &HeaderMap::new());
        let format = Format {
            policy: json::quoted("p"),
            include_arguments: false,
            max_argument_bytes: 0,
            redact: Vec::new(),
        };
        let entry = entry(format, record);
        let mut lines = lines(&entry);
        assert_eq!(lines.len(), 1);
        let request_id = lines[0]
            .as_object_mut()
            .unwrap()
            .remove("request_id")
            .unwrap();
        assert_eq!(request_id, entry.record.request_id.to_str().unwrap());
        assert_eq!(
            lines[0],
            serde_json::json!({
                "time": "2026-05-01T12:00:00.007Z", "kind": "mcp_warden.audit", "policy": "p",
                "outcome": "forbidden", "reason": "insufficient_scope", "status": 403,
                "latency_ms": 12.345, "http_method": "GET", "path": "/mcp",
            })
        );
    }

    /// An auditor of policy `p` writing to `audit.log` in a fresh directory of its own.
    struct FileAudit {
        dir: std::path::PathBuf,
        path: std::path::PathBuf,
        writers: Writers,
        auditor: Auditor,
    }

    impl FileAudit {
        fn new(name: &str) -> FileAudit {
            let dir =
                std::env::temp_dir().join(format!("mcp-warden-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("audit.log");
            let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
            let writers = Writers::new(&metrics);
            let spec = AuditSpec {
                destination: path.to_string_lossy().into_owned(),
                ..AuditSpec::default()
            };
            let auditor = Auditor::new("p", Some(&spec), &writers, &metrics).unwrap();
            FileAudit {
                dir,
                path,
                writers,
                auditor,
            }
        }
    }

    /// The request ids of the lines in the file at `path`, in the file's order.
    fn written_ids(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["request_id"].to_string())
            .map(|id| id.trim_matches('"').to_owned())
            .collect()
    }

    #[tokio::test]
    async fn finish_has_every_line_queued_written_bodies_still_streaming_included() {
        let FileAudit {
            dir,
            path,
            writers,
            auditor,
            ..
        } = FileAudit::new("finish");
        let (done, record) = (allowed(), with_id);
        let mut ids: Vec<String> = (0..100).map(|i| format!("r-{i}")).collect();
        for id in &ids {
            auditor.finish(record(id), done);
        }
        // A body the app is still reading: not waited for.
        let (_streaming, tap) = still_streaming();
        let mut open = record("open");
        open.body = Some(tap);
        auditor.finish(open, done);
        ids.push("open".into());
        writers.finish().await;
        let written = written_ids(&path);
        assert_eq!(written, ids);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A tapped body that never ends (keep the first half alive: the app is still reading it).
    fn still_streaming() -> (
        Tapped<impl hyper::body::Body<Data = Bytes> + Unpin>,
        Arc<Tap>,
    ) {
        Tapped::new(
            http_body_util::StreamBody::new(futures_util::stream::pending::<
                Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
            >()),
            1000,
        )
    }

    fn allowed() -> Done {
        Done {
            outcome: Outcome::Allowed,
            reason: Reason::None,
            status: 200,
            latency: Duration::from_millis(1),
        }
    }

    fn with_id(id: &str) -> Record {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, id.parse().unwrap());
        Record::new(&http::Method::POST, "/mcp", &headers)
    }

    /// An auditor appending to `queue`, counting the lines it drops in `dropped`.
    fn auditor_on(queue: Queue, dropped: &Counter) -> Auditor {
        Auditor {
            format: Arc::new(Format {
                policy: json::quoted("p"),
                include_arguments: false,
                max_argument_bytes: 0,
                redact: Vec::new(),
            }),
            queue: Some(queue),
            dropped: dropped.clone(),
            tools: None,
        }
    }

    #[test]
    fn a_full_batch_drops_the_requests_lines_and_counts_them() {
        let (pending, rx) = lanes::channel(QUEUE, WAKE_AT);
        let dropped = Counter::default();
        let auditor = auditor_on(pending.sender(std::thread::current()), &dropped);
        for i in 0..QUEUE {
            auditor.finish(with_id(&format!("r-{i}")), allowed());
        }
        assert_eq!(dropped.get(), 0);
        // A batch of two calls and a response: its two lines are dropped.
        let mut batch = with_id("batch");
        batch.messages =
            rpc::scan(br#"[{"method":"a"},{"method":"b"},{"id":1,"result":{}}]"#).unwrap();
        auditor.finish(batch, allowed());
        auditor.finish(with_id("one"), allowed());
        assert_eq!(dropped.get(), 3);
        // Another thread's batch has room.
        std::thread::scope(|s| {
            s.spawn(|| auditor.finish(with_id("other"), allowed()));
        });
        assert_eq!(dropped.get(), 3);
        let mut taken = Vec::new();
        rx.take(&mut taken);
        assert_eq!(taken.iter().map(|b| b.count).sum::<usize>(), QUEUE + 1);
        let lines =
            |batch: &lanes::Batch<Entry>| String::from_utf8_lossy(&batch.lines).lines().count();
        assert_eq!(taken.iter().map(lines).sum::<usize>(), QUEUE + 1);
        // Taken by the writer: room again.
        auditor.finish(with_id("later"), allowed());
        assert_eq!(dropped.get(), 3);
    }

    #[tokio::test]
    async fn a_request_is_written_by_its_thread_unless_its_body_still_streams() {
        use http_body_util::{BodyExt, Full};
        let (pending, rx) = lanes::channel(QUEUE, WAKE_AT);
        let auditor = auditor_on(pending.sender(std::thread::current()), &Counter::default());
        // Read through before the response: its lines are in the thread's batch, and its tap
        // is given back to this thread.
        let body = r#"{"method":"tools/call","params":{"name":"echo"}}"#;
        let (tapped, tap) = Tapped::new(Full::new(Bytes::from_static(body.as_bytes())), 1000);
        tapped.collect().await.unwrap();
        let mut record = with_id("read");
        record.body = Some(tap);
        let free = tap::free_taps();
        auditor.finish(record, allowed());
        assert_eq!(
            tap::free_taps(),
            free + 1,
            "the tap read is free for reuse here"
        );
        // Still streaming: the request goes to the writer as it is.
        let (_streaming, tap) = still_streaming();
        let mut record = with_id("streaming");
        record.body = Some(tap);
        auditor.finish(record, allowed());
        let mut taken = Vec::new();
        rx.take(&mut taken);
        let [batch] = &taken[..] else {
            panic!("one thread, one batch")
        };
        let line: Value = serde_json::from_slice(&batch.lines).unwrap();
        assert_eq!(
            (&line["request_id"], &line["tool"]),
            (&"read".into(), &"echo".into())
        );
        assert_eq!(batch.count, 2);
        assert_eq!(batch.items.len(), 1);
        assert_eq!(batch.items[0].record.request_id, "streaming");
    }

    #[tokio::test]
    async fn finish_writes_the_lines_of_every_serving_thread() {
        let FileAudit {
            dir,
            path,
            writers,
            auditor,
            ..
        } = FileAudit::new("threads");
        let auditor = Arc::new(auditor);
        // Two threads still serving at shutdown, two gone already.
        let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
        let stop = Arc::new(Mutex::new(stop));
        let (appended_tx, appended) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (auditor, stop, appended) =
                    (auditor.clone(), stop.clone(), appended_tx.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        auditor.finish(with_id(&format!("t{t}-{i}")), allowed());
                    }
                    appended.send(()).unwrap();
                    if t < 2 {
                        let _ = stop.lock().unwrap().recv();
                    }
                })
            })
            .collect();
        for _ in 0..4 {
            appended.recv().unwrap();
        }
        writers.finish().await;
        let written = written_ids(&path);
        assert_eq!(written.len(), 200);
        for t in 0..4 {
            let thread: Vec<_> = written
                .iter()
                .filter(|id| id.starts_with(&format!("t{t}-")))
                .cloned()
                .collect();
            let expected: Vec<_> = (0..50).map(|i| format!("t{t}-{i}")).collect();
            assert_eq!(thread, expected, "every line of thread {t}, in order");
        }
        drop(stop_tx);
        threads.into_iter().for_each(|t| t.join().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn finish_answers_when_nothing_was_appended() {
        let FileAudit {
            dir,
            writers,
            auditor: _auditor,
            ..
        } = FileAudit::new("idle");
        let started = writers.started.lock().unwrap()[0].finishing.clone();
        writers.finish().await;
        // Answered by the writer, not given up on after FINISH: it took the acknowledgement.
        assert!(!started.is_asked());
        std::fs::remove_dir_all(&dir).unwrap();
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

    fn plain_entry() -> Entry {
        let format = Format {
            policy: json::quoted("p"),
            include_arguments: false,
            max_argument_bytes: 0,
            redact: Vec::new(),
        };
        entry(
            format,
            Record::new(&http::Method::POST, "/mcp", &HeaderMap::new()),
        )
    }

    /// Appends `entry`'s lines to this thread's batch.
    fn send(queue: &Queue, entry: Entry) -> bool {
        queue.append(|batch, scribe| entry.write_lines(&mut batch.lines, scribe))
    }

    /// A thread gathering for an hour, and a queue whose requests wake it; `ended` reports
    /// when it stops gathering.
    fn gathering_for_an_hour() -> (Queue, std::sync::mpsc::Receiver<()>) {
        let (pending, rx) = lanes::channel(QUEUE, WAKE_AT);
        let (ended_tx, ended) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            gather(
                &rx,
                Instant::now() + Duration::from_secs(3600),
                &Finishing::new(),
            );
            let _ = ended_tx.send(());
        });
        (pending.sender(writer.thread().clone()), ended)
    }

    /// Bounds only how long a broken wake-up would hang the test.
    const HANG: Duration = Duration::from_secs(60);

    #[test]
    fn requests_filling_a_threads_batch_end_the_gathering() {
        let (queue, ended) = gathering_for_an_hour();
        for _ in 0..WAKE_AT - 1 {
            assert!(send(&queue, plain_entry()));
        }
        assert!(ended.try_recv().is_err(), "still gathering");
        assert!(send(&queue, plain_entry()));
        ended
            .recv_timeout(HANG)
            .expect("woken by the request that fills the batch");
    }

    #[test]
    fn the_last_sender_going_ends_the_gathering() {
        let (queue, ended) = gathering_for_an_hour();
        let other = queue.clone();
        drop(queue);
        assert!(
            ended.recv_timeout(Duration::from_millis(50)).is_err(),
            "a sender is left"
        );
        drop(other);
        ended
            .recv_timeout(HANG)
            .expect("woken when the last sender goes");
    }

    #[test]
    fn requests_at_a_moderate_rate_are_written_a_few_at_a_time() {
        // Each write rotates the file (it is full after any line): the files count the writes.
        let dir = std::env::temp_dir().join(format!("mcp-warden-gather-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let dest = Destination::File {
            path: path.clone(),
            max_bytes: 1,
            max_files: 100,
        };
        let writers = Writers::new(&Metrics::register(
            &mut prometheus_client::registry::Registry::default(),
        ));
        let queue = writers.sender(dest).unwrap();
        // 30 requests at 500 a second: written in one or two batches (a third if this machine
        // is slow to come back from the sleeps), not one every few requests.
        for _ in 0..30 {
            assert!(send(&queue, plain_entry()));
            std::thread::sleep(Duration::from_millis(2));
        }
        drop((queue, writers));
        let files = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
                .collect::<Vec<_>>()
        };
        let until = Instant::now() + HANG;
        while files().iter().map(|f| f.lines().count()).sum::<usize>() < 30 {
            assert!(Instant::now() < until, "every line is written");
            std::thread::sleep(Duration::from_millis(10));
        }
        let writes = files().len();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(writes <= 3, "{writes} writes for 30 requests");
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
