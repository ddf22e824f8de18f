//! Load generator for bench/run.sh: what oha cannot do (a different bearer token per request,
//! rotating refresh tokens, authorization codes used once, thousands of idle event streams).
//!
//! Modes (flags are `--name value`); each but `sse-server` prints one JSON object:
//!
//! - `tokens`: POSTs `--body` to `--url` over `--connections` keep-alive connections, request i
//!   carrying token i of `--tokens` (one per line, cycled), for `--requests` requests or
//!   `--seconds` seconds; with `--rate`, at most that many requests per second in all (each
//!   connection paced to its share).
//! - `refresh`: refresh-token grants at `--url` (the token endpoint), one chain per line of
//!   `--chains` (`client_id refresh_token`) on its own connection, each sending its newest token
//!   as soon as the last grant is answered, for `--seconds`; the chains' newest tokens are
//!   written back to `--chains`.
//! - `code`: authorization-code grants at `--url`, each line of `--codes`
//!   (`client_id code verifier redirect_uri resource`) exchanged once, `--connections` at a time;
//!   the refresh tokens received are written to `--save` as chains.
//! - `sse-server`: an upstream on `--listen` answering every request with an event stream: one
//!   event at once, then one every `--interval` seconds.
//! - `sse-hold`: opens `--streams` GET event streams at `--url` (bearer `--token`), writes the
//!   `--ready` file once all are open, holds them `--hold` seconds, and reports streams that
//!   failed to open or ended early and the events received.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().ok_or("usage: loadgen MODE --flag value ...")?;
    let flags = Flags::parse(argv)?;
    let threads = flags.num("threads", if mode.starts_with("sse") { 1 } else { 2 })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match mode.as_str() {
            "tokens" => tokens(&flags).await,
            "refresh" => refresh(&flags).await,
            "code" => code(&flags).await,
            "sse-server" => sse_server(&flags).await,
            "sse-hold" => sse_hold(&flags).await,
            other => Err(format!("unknown mode {other}").into()),
        }
    })?;
    println!("{report}");
    Ok(())
}

/// `--name value` pairs.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut map = HashMap::new();
        while let Some(name) = argv.next() {
            let name = name
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {name}"))?;
            let value = argv
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Flags(map))
    }

    fn get(&self, name: &str) -> Result<&str, Error> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num(&self, name: &str, default: usize) -> Result<usize, Error> {
        self.0.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{name}: {v}").into())
        })
    }

    fn float(&self, name: &str, default: f64) -> Result<f64, Error> {
        self.0.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{name}: {v}").into())
        })
    }

    fn secs(&self, name: &str, default: f64) -> Result<Duration, Error> {
        Ok(Duration::from_secs_f64(self.float(name, default)?))
    }
}

/// `http://host:port/path`.
#[derive(Clone)]
struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, Error> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// URL: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One keep-alive HTTP/1.1 connection, made again after a failure.
struct Client {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(target: Target) -> Self {
        Client {
            target,
            sender: None,
        }
    }

    fn post(&self) -> hyper::http::request::Builder {
        Request::post(&self.target.path).header(header::HOST, &self.target.authority)
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Error> {
        let result = self.try_send(request).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            let stream = TcpStream::connect(&self.target.authority).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected");
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Latencies in microseconds, merged from all tasks.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    micros: Vec<u32>,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, ok: bool) {
        let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.micros.push(us);
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.micros.extend(other.micros);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn report(mut self, elapsed: Duration, extra: Value) -> Value {
        self.micros.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            let i = ((self.micros.len() - 1) as f64 * p).round() as usize;
            f64::from(self.micros[i]) / 1000.0
        };
        let secs = elapsed.as_secs_f64();
        let mut out = json!({
            "ok": self.ok,
            "errors": self.errors,
            "seconds": secs,
            "per_second": self.ok as f64 / secs,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        });
        if let Some(e) = self.first_error {
            out["first_error"] = e.into();
        }
        if let (Value::Object(o), Value::Object(extra)) = (&mut out, extra) {
            o.extend(extra);
        }
        out
    }
}

fn lines(path: &str) -> Result<Vec<String>, Error> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| format!("{path}: {e}"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

async fn tokens(flags: &Flags) -> Result<Value, Error> {
    let target = Target::parse(flags.get("url")?)?;
    let tokens: Arc<Vec<String>> = Arc::new(
        lines(flags.get("tokens")?)?
            .into_iter()
            .map(|t| format!("Bearer {t}"))
            .collect(),
    );
    if tokens.is_empty() {
        return Err("no tokens".into());
    }
    let body = Bytes::from(flags.get("body")?.to_owned());
    let limit = flags.num("requests", usize::MAX)?;
    let seconds = flags.secs("seconds", 3600.0)?;
    let connections = flags.num("connections", 16)?;
    // The time between one connection's requests when paced (`--rate`), none otherwise.
    let pace = match flags.float("rate", f64::INFINITY)? {
        r if r <= 0.0 || r.is_nan() => return Err("--rate must be positive".into()),
        r => Duration::from_secs_f64(connections as f64 / r),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + seconds;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (tokens, next, body) = (tokens.clone(), next.clone(), body.clone());
        let mut client = Client::new(target.clone());
        // Paced connections start spread over one interval rather than all at once.
        let mut due = started + pace.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                if !pace.is_zero() {
                    tokio::time::sleep_until(due.into()).await;
                    due += pace;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let request = client
                    .post()
                    .header(header::AUTHORIZATION, &tokens[i % tokens.len()])
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::ACCEPT, "application/json, text/event-stream")
                    .body(Full::new(body.clone()))
                    .expect("request");
                let t0 = Instant::now();
                match client.send(request).await {
                    Ok((status, _)) => tally.record(t0, status == StatusCode::OK),
                    Err(e) => tally.error(e.to_string()),
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    Ok(tally.report(
        started.elapsed(),
        json!({ "distinct_tokens": tokens.len() }),
    ))
}

/// Percent-encodes a form value (RFC 3986 unreserved characters kept).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> Bytes {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    Bytes::from(parts.join("&"))
}

fn form_request(client: &Client, body: Bytes) -> Request<Full<Bytes>> {
    client
        .post()
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(body))
        .expect("request")
}

fn refresh_token_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("refresh_token")?.as_str().map(str::to_owned)
}

async fn refresh(flags: &Flags) -> Result<Value, Error> {
    let target = Target::parse(flags.get("url")?)?;
    let path = flags.get("chains")?.to_owned();
    let chains: Vec<(String, String)> = lines(&path)?
        .iter()
        .filter_map(|l| {
            let (c, t) = l.split_once(' ')?;
            Some((c.to_owned(), t.to_owned()))
        })
        .collect();
    let started = Instant::now();
    let deadline = started + flags.secs("seconds", 5.0)?;
    let mut tasks = Vec::new();
    for (client_id, token) in chains {
        let mut client = Client::new(target.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut token = token;
            let mut alive = true;
            while Instant::now() < deadline {
                let body = form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &client_id),
                ]);
                let t0 = Instant::now();
                match client.send(form_request(&client, body)).await {
                    Ok((StatusCode::OK, body)) => match refresh_token_of(&body) {
                        Some(next) => {
                            token = next;
                            tally.record(t0, true);
                        }
                        None => tally.error("no refresh_token in the answer".into()),
                    },
                    Ok((status, body)) => {
                        tally.error(format!("{status}: {}", String::from_utf8_lossy(&body)));
                        if status == StatusCode::BAD_REQUEST {
                            alive = false; // the chain is broken (invalid_grant)
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => tally.error(e.to_string()),
                }
            }
            (tally, client_id, token, alive)
        }));
    }
    let mut tally = Tally::default();
    let mut saved = String::new();
    let mut broken = 0;
    for task in tasks {
        let (t, client_id, token, alive) = task.await?;
        tally.merge(t);
        if alive {
            saved.push_str(&format!("{client_id} {token}\n"));
        } else {
            broken += 1;
        }
    }
    let elapsed = started.elapsed();
    std::fs::write(&path, saved)?;
    Ok(tally.report(elapsed, json!({ "broken_chains": broken })))
}

async fn code(flags: &Flags) -> Result<Value, Error> {
    let target = Target::parse(flags.get("url")?)?;
    let codes: Arc<Vec<Vec<String>>> = Arc::new(
        lines(flags.get("codes")?)?
            .iter()
            .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|f| f.len() == 5)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..flags.num("connections", 16)? {
        let (codes, next) = (codes.clone(), next.clone());
        let mut client = Client::new(target.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut chains = String::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = codes.get(i) else { break };
                let body = form(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", &f[0]),
                    ("code", &f[1]),
                    ("code_verifier", &f[2]),
                    ("redirect_uri", &f[3]),
                    ("resource", &f[4]),
                ]);
                let t0 = Instant::now();
                match client.send(form_request(&client, body)).await {
                    Ok((StatusCode::OK, body)) => match refresh_token_of(&body) {
                        Some(token) => {
                            chains.push_str(&format!("{} {token}\n", f[0]));
                            tally.record(t0, true);
                        }
                        None => tally.error("no refresh_token in the answer".into()),
                    },
                    Ok((status, body)) => {
                        tally.error(format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Err(e) => tally.error(e.to_string()),
                }
            }
            (tally, chains)
        }));
    }
    let mut tally = Tally::default();
    let mut saved = String::new();
    for task in tasks {
        let (t, chains) = task.await?;
        tally.merge(t);
        saved.push_str(&chains);
    }
    let elapsed = started.elapsed();
    if let Ok(path) = flags.get("save") {
        std::fs::write(path, saved)?;
    }
    Ok(tally.report(elapsed, json!({})))
}

/// An endless event stream: one event at once, then one per tick of the interval.
struct Ticks(tokio::time::Interval);

const EVENT: &[u8] = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"tick\"}}\n\n";

impl hyper::body::Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(EVENT)))))
    }
}

async fn sse_server(flags: &Flags) -> Result<Value, Error> {
    let listener = TcpListener::bind(flags.get("listen")?).await?;
    let interval = flags.secs("interval", 60.0)?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/event-stream")
                        .header(header::CACHE_CONTROL, "no-cache")
                        .body(Ticks(ticks))
                        .expect("response"),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Per stream: whether it is open, and the events it received.
struct Stream {
    open: AtomicBool,
    ended: AtomicBool,
    events: AtomicU32,
}

async fn hold_one(
    target: Arc<Target>,
    request: Arc<Vec<u8>>,
    state: Arc<Stream>,
    opening: Arc<tokio::sync::Semaphore>,
) -> Result<(), Error> {
    let permit = opening.acquire().await?;
    let mut stream = TcpStream::connect(&target.authority).await?;
    stream.write_all(&request).await?;
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    let mut last = 0u8;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                let line = String::from_utf8_lossy(&head[..head.len().min(200)]).into_owned();
                return Err(format!("answered {line}").into());
            }
            let rest = head.split_off(end + 4);
            count_events(&rest, &mut last, &state);
            break;
        }
    }
    drop(head);
    buf.truncate(512);
    buf.shrink_to_fit();
    state.open.store(true, Ordering::Release);
    drop(permit);
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err("the stream ended".into());
        }
        count_events(&buf[..n], &mut last, &state);
    }
}

/// Counts the blank lines (`\n\n`, as the upstream writes them) that end events, across reads.
fn count_events(data: &[u8], last: &mut u8, state: &Stream) {
    for &b in data {
        if b == b'\n' && *last == b'\n' {
            state.events.fetch_add(1, Ordering::Relaxed);
        }
        *last = b;
    }
}

async fn sse_hold(flags: &Flags) -> Result<Value, Error> {
    let target = Arc::new(Target::parse(flags.get("url")?)?);
    let n = flags.num("streams", 10_000)?;
    let hold = flags.secs("hold", 70.0)?;
    let token = flags.get("token")?;
    let request = Arc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\n\r\n",
            target.path, target.authority
        )
        .into_bytes(),
    );
    let opening = Arc::new(tokio::sync::Semaphore::new(flags.num("opening", 128)?));
    let states: Vec<Arc<Stream>> = (0..n)
        .map(|_| {
            Arc::new(Stream {
                open: AtomicBool::new(false),
                ended: AtomicBool::new(false),
                events: AtomicU32::new(0),
            })
        })
        .collect();
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    for state in &states {
        let (target, request, state, opening) = (
            target.clone(),
            request.clone(),
            state.clone(),
            opening.clone(),
        );
        let first_error = first_error.clone();
        tokio::spawn(async move {
            let result = hold_one(target, request, state.clone(), opening).await;
            state.ended.store(true, Ordering::Release);
            if let Err(e) = result {
                first_error
                    .lock()
                    .expect("lock")
                    .get_or_insert_with(|| e.to_string());
            }
        });
    }
    // Wait until every stream is open or has failed.
    loop {
        let settled = states
            .iter()
            .filter(|s| s.open.load(Ordering::Acquire) || s.ended.load(Ordering::Acquire))
            .count();
        if settled == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("only {settled} of {n} streams settled in 300 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let opened = states
        .iter()
        .filter(|s| s.open.load(Ordering::Acquire))
        .count();
    if let Ok(path) = flags.get("ready") {
        std::fs::write(path, format!("{opened}\n"))?;
    }
    tokio::time::sleep(hold).await;
    let live: Vec<&Arc<Stream>> = states
        .iter()
        .filter(|s| s.open.load(Ordering::Acquire))
        .collect();
    let dropped = live
        .iter()
        .filter(|s| s.ended.load(Ordering::Acquire))
        .count();
    let mut events: Vec<u32> = live
        .iter()
        .map(|s| s.events.load(Ordering::Relaxed))
        .collect();
    events.sort_unstable();
    let mut out = json!({
        "streams": n,
        "opened": opened,
        "failed": n - opened,
        "dropped": dropped,
        "open_seconds": open_seconds,
        "hold_seconds": hold.as_secs_f64(),
        "events": events.iter().map(|&e| u64::from(e)).sum::<u64>(),
        "min_events": events.first().copied().unwrap_or(0),
        "max_events": events.last().copied().unwrap_or(0),
    });
    if let Some(e) = first_error.lock().expect("lock").clone() {
        out["first_error"] = e.into();
    }
    Ok(out)
}
