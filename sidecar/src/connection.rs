//! One client connection on the public port (HTTP/1.1 or HTTP/2), held to [`Limits`] so slow or
//! idle clients cannot keep connections open. The protocol is told from the client's first
//! bytes: HTTP/1.1 connections are served by [`crate::http1`], HTTP/2 ones by hyper.
//!
//! A connection must deliver a request's headers within the header read timeout: counted from
//! when it opens, and on HTTP/1.1 from the first byte of each later request. A connection with no
//! request in flight is closed after the idle timeout. On HTTP/2 both are enforced here rather
//! than by hyper.
//!
//! On the way out (see [`crate::shutdown`]) a connection answers HTTP/1.1 requests with
//! `Connection: close` and tells HTTP/2 clients to go (GOAWAY) while the port still serves; once
//! it stops, idle connections close, requests in flight finish and SSE streams opened with GET
//! end with a complete response.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use crate::app::{Reply, ReplyBody};
use crate::head_fields::WithAppFields;
use crate::http1;
use crate::peer::Peer;
use crate::request_body::RequestBody;
use crate::shutdown::{self, Phase};

/// How client connections are bounded (`--header-read-timeout`, `--idle-timeout`,
/// `--max-connections`, `--max-streams-per-connection`, `--max-header-bytes`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time allowed for a request's headers to arrive.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Requests in flight on one HTTP/2 connection (HTTP/1.1 has one at a time).
    pub max_streams: u32,
    /// Request line plus headers (HTTP/1.1), or the header list (HTTP/2), in bytes; larger
    /// requests get 431.
    pub max_header_bytes: usize,
}

/// How long a connection that timed out may finish what it is doing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it ends, times out, or `phase` reaches
/// [`Phase::Stopping`] (then it finishes its requests and closes). `handler` answers each
/// request, given the client's address ([`Peer`]).
pub async fn serve<F>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: impl Fn(Request<RequestBody>, Peer) -> F + Send + 'static,
    limits: Limits,
    phase: watch::Receiver<Phase>,
    _permit: OwnedSemaphorePermit,
    _open: tokio::sync::mpsc::Sender<()>,
) where
    F: Future<Output = Reply> + Send + 'static,
{
    let client = Peer::new(peer);
    let opened = Instant::now();
    // The protocol, from the client's first bytes (within the header read timeout).
    let http2 = tokio::select! {
        biased;
        sniffed = speaks_http2(&stream) => match sniffed {
            Ok(http2) => http2,
            Err(_) => return,
        },
        () = tokio::time::sleep_until(opened + limits.header_read_timeout) => return,
        () = shutdown::reached(phase.clone(), Phase::Stopping) => return,
    };
    if http2 {
        serve_http2(stream, client, handler, limits, phase, opened).await;
    } else {
        let config = http1::Config {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
        };
        let handler = move |request: Request<http1::body::Body>, peer| {
            handler(request.map(RequestBody::Http1), peer)
        };
        http1::serve(stream, client, handler, config, phase).await;
    }
}

/// Serves an HTTP/2 connection with hyper, under `limits`.
async fn serve_http2<F>(
    stream: TcpStream,
    client: Peer,
    handler: impl Fn(Request<RequestBody>, Peer) -> F + Send + 'static,
    limits: Limits,
    phase: watch::Receiver<Phase>,
    opened: Instant,
) where
    F: Future<Output = Reply> + Send + 'static,
{
    let activity = Arc::new(Activity::new(phase.clone(), opened));
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = Busy::begin(tracked.clone());
        let get = request.method() == Method::GET;
        // Boxed where it starts: hyper moves the service's future around by value, and a
        // request's future is kilobytes large.
        let answer = Box::pin(handler(request.map(RequestBody::Http2), client.clone()));
        async move {
            let response = with_app_fields(answer.await);
            let stream = get && http1::is_event_stream(None, response.headers());
            // The request counts as in flight until its response body is done (SSE streams).
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                stop: stream.then(|| {
                    let phase = busy.0.phase.clone();
                    Box::pin(shutdown::reached(phase, Phase::Stopping)) as StopSignal
                }),
                _busy: busy,
            }))
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    // Made once and polled again on wake-ups of this task (made anew, each would register
    // another waiter or timer on every wake).
    let leaving = shutdown::reached_cheaply(&phase, Phase::Leaving);
    let stopping = shutdown::reached_cheaply(&phase, Phase::Stopping);
    // A new connection's first deadline: its headers.
    let timer = tokio::time::sleep_until(activity.opened + limits.header_read_timeout);
    let finished = activity.finished.notified();
    tokio::pin!(conn, leaving, stopping, timer, finished);
    let mut told_to_go = false;
    let mut waiting_for_requests = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return log_end(result),
            () = &mut leaving, if !told_to_go => {
                // Clients open a new connection for their next request; streams in flight go on.
                told_to_go = true;
                conn.as_mut().graceful_shutdown();
                continue;
            }
            () = &mut stopping => {
                conn.as_mut().graceful_shutdown();
                // The server bounds the drain as a whole.
                return log_end(conn.await);
            }
            () = &mut timer, if !waiting_for_requests => {}
            () = &mut finished, if waiting_for_requests => {
                finished.set(activity.finished.notified());
            }
        }
        match activity.next_check(&limits) {
            Check::At(at) => {
                waiting_for_requests = false;
                timer.as_mut().reset(at);
            }
            Check::AfterRequests => waiting_for_requests = true,
            Check::Expired => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    // Timed out: a request that is still in flight may finish; a client still sending headers
    // (or sending nothing) is dropped.
    loop {
        tokio::select! {
            result = conn.as_mut() => return log_end(result),
            () = tokio::time::sleep(CLOSE_GRACE) => {
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    tracing::debug!("HTTP/2 connection timed out; closed");
                    return;
                }
            }
        }
    }
}

/// `response` with the app's fields, if its body brings them, in its header map (before those
/// the sidecar added): hyper's HTTP/2 encoder reads the map only.
fn with_app_fields(mut response: Reply) -> Reply {
    if let Some(fields) = response.body_mut().take_app_fields() {
        let map = fields.into_map(response.headers());
        *response.headers_mut() = map;
    }
    response
}

/// The connection preface an HTTP/2 client starts with; HTTP/1.1 requests start otherwise.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How soon a connection whose first bytes are only part of the HTTP/2 preface is looked at again.
const PEEK_AGAIN: Duration = Duration::from_millis(10);

/// Whether the client speaks HTTP/2, told from its first bytes while leaving them in the socket.
async fn speaks_http2(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        tokio::time::sleep(PEEK_AGAIN).await;
    }
}

/// Resolves when a response body must end early.
type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A response body that keeps its request in flight until it is done or dropped. An SSE stream
/// a client opened with GET has no end of its own: it is ended (END_STREAM) once the phase
/// reaches [`Phase::Stopping`], and the client reconnects (to another replica).
struct Tracked {
    body: ReplyBody,
    _busy: Busy,
    /// For SSE streams: when to end; `None` once ended.
    stop: Option<StopSignal>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(stop) = &mut this.stop
            && stop.as_mut().poll(cx).is_ready()
        {
            this.stop = None;
            this.body = ReplyBody::Right(axum::body::Body::empty());
            return Poll::Ready(None);
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stop.is_some() {
            // It may end before its declared size.
            return SizeHint::default();
        }
        self.body.size_hint()
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What an HTTP/2 connection is doing, for its timeouts. Requests only update these atomics;
/// the connection's task reads them when its timer fires ([`Activity::next_check`]), so a request
/// does not wake it.
struct Activity {
    opened: Instant,
    /// Requests whose response is not finished.
    in_flight: AtomicUsize,
    /// Whether a request has ever started.
    served: AtomicBool,
    /// The shutdown phase.
    phase: watch::Receiver<Phase>,
    /// Nanoseconds after `opened` when the last request finished.
    idle_since: AtomicU64,
    /// Whether the connection's task waits for the requests in flight to finish.
    waiting: AtomicBool,
    /// Wakes that task once they have.
    finished: Notify,
}

/// What a connection's task does after looking at its [`Activity`].
enum Check {
    /// Looks again then.
    At(Instant),
    /// Looks again once the requests in flight have finished (no timer meanwhile: a long SSE
    /// stream costs nothing while it is quiet).
    AfterRequests,
    /// Closes the connection: idle, or slow to send headers, for too long.
    Expired,
}

impl Activity {
    fn new(phase: watch::Receiver<Phase>, opened: Instant) -> Activity {
        Activity {
            opened,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            phase,
            idle_since: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            finished: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the connection may be closed, or `None` while a request is in flight. Frames
    /// between requests (pings, window updates) are not request headers; a stream whose headers
    /// never complete is not in flight and ends with the idle timeout.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some(self.opened + limits.header_read_timeout);
        }
        let idle_since = Duration::from_nanos(self.idle_since.load(Ordering::Acquire));
        Some(self.opened + idle_since + limits.idle_timeout)
    }

    /// Looks at the deadline when the timer fires (or the requests it waited for finished).
    /// Whatever happens after this look (a request finishing) sets a deadline no sooner than
    /// the shorter timeout from then, so looking again at the latest that much later is never
    /// late, and no request has to re-arm the timer.
    fn next_check(&self, limits: &Limits) -> Check {
        loop {
            let now = Instant::now();
            match self.deadline(limits) {
                Some(deadline) if deadline <= now => return Check::Expired,
                Some(deadline) => {
                    let latest = now + limits.header_read_timeout.min(limits.idle_timeout);
                    return Check::At(deadline.min(latest));
                }
                None => {
                    self.waiting.store(true, Ordering::SeqCst);
                    if self.in_flight.load(Ordering::SeqCst) > 0 {
                        return Check::AfterRequests;
                    }
                    // The last one finished meanwhile: look again.
                    self.waiting.store(false, Ordering::SeqCst);
                }
            }
        }
    }
}

/// A request in flight; finished when dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Busy {
        activity.served.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
            // Only a connection whose timer fired during this request waits to be told.
            if activity.waiting.swap(false, Ordering::SeqCst) {
                activity.finished.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::sse::{Event, Sse};
    use axum::routing::get;
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 8,
        max_streams: 8,
        max_header_bytes: 16 * 1024,
    };

    fn router() -> axum::Router {
        let events = || async {
            let first = futures_util::stream::once(async {
                Ok::<_, Infallible>(Event::default().data("hello"))
            });
            Sse::new(first.chain(futures_util::stream::pending()))
        };
        axum::Router::new()
            .route("/events", get(events).post(events))
            .route("/plain", get(|| async { "plain" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(100)).await;
                    "slow"
                }),
            )
    }

    /// A client connected to one connection served under `phase`.
    async fn connect(phase: watch::Receiver<Phase>) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (stream, peer) = accepted.unwrap();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (open, _) = tokio::sync::mpsc::channel(1);
        let router = router();
        let handler = move |request: Request<RequestBody>, _: Peer| {
            let router = router.clone();
            async move {
                let Ok(response) = tower::ServiceExt::oneshot(router, request).await;
                response.map(http_body_util::Either::Right)
            }
        };
        tokio::spawn(serve(stream, peer, handler, LIMITS, phase, permit, open));
        client.unwrap()
    }

    /// The protocol told from what a client sends first, sent in two pieces.
    async fn sniffed(first: &[u8], then: &[u8]) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut client, (server, _)) = (client.unwrap(), accepted.unwrap());
        client.write_all(first).await.unwrap();
        let told = tokio::spawn(async move {
            let http2 = speaks_http2(&server).await.unwrap();
            // Nothing was consumed: hyper reads the request from its first byte.
            let mut buf = vec![0u8; 64];
            let n = server.peek(&mut buf).await.unwrap();
            (http2, buf[..n].to_vec(), server)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(then).await.unwrap();
        let (http2, unread, _server) = told.await.unwrap();
        assert!(unread.starts_with(first), "{unread:?}");
        http2
    }

    #[tokio::test]
    async fn the_protocol_is_told_from_the_first_bytes_without_consuming_them() {
        assert!(sniffed(b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n").await);
        assert!(sniffed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"").await);
        assert!(!sniffed(b"GET / HTTP/1.1\r\n", b"host: x\r\n\r\n").await);
        assert!(!sniffed(b"PRIVATE / HTTP/1.1\r\n", b"host: x\r\n\r\n").await);
    }

    /// Reads until `needle` has arrived (or the end); returns everything read.
    async fn read_until(client: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
        let mut buf = [0u8; 4096];
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
                .await
                .expect("the server answers")
                .expect("no reset");
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    }

    async fn read_to_end(client: &mut TcpStream, seen: &mut Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(seen))
            .await
            .expect("the server closes the connection")
            .expect("no reset");
    }

    #[tokio::test]
    async fn a_get_event_stream_ends_with_a_complete_response_when_stopping() {
        let (phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        client
            .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        read_until(&mut client, &mut seen, b"data: hello").await;
        phase_tx.send_replace(Phase::Leaving);
        phase_tx.send_replace(Phase::Stopping);
        read_to_end(&mut client, &mut seen).await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.contains("transfer-encoding: chunked"), "{text}");
        assert!(text.ends_with("\r\n0\r\n\r\n"), "the last chunk: {text:?}");
    }

    async fn next_frame(
        body: &mut Incoming,
    ) -> Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>> {
        tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the stream moves")
    }

    #[tokio::test]
    async fn an_http2_event_stream_goes_on_while_leaving_and_ends_cleanly_when_stopping() {
        let (phase_tx, phase) = shutdown::channel();
        let client = connect(phase).await;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("http://x/events")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let mut body = sender.send_request(request).await.unwrap().into_body();
        let first = next_frame(&mut body)
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert!(first.starts_with(b"data: hello"), "{first:?}");
        // Told to stop: GOAWAY for new streams, this one goes on.
        phase_tx.send_replace(Phase::Leaving);
        let more = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
        assert!(more.is_err(), "the stream goes on while leaving");
        phase_tx.send_replace(Phase::Stopping);
        loop {
            match next_frame(&mut body).await {
                None => break,
                // END_STREAM may come on an empty DATA frame.
                Some(Ok(frame)) if frame.data_ref().is_some_and(bytes::Bytes::is_empty) => {}
                Some(Ok(frame)) => panic!("no more events expected: {frame:?}"),
                Some(Err(e)) => panic!("END_STREAM expected, not a reset: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn an_event_stream_answering_a_post_is_not_ended() {
        let (phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        client
            .write_all(b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        read_until(&mut client, &mut seen, b"data: hello").await;
        phase_tx.send_replace(Phase::Stopping);
        let mut buf = [0u8; 64];
        let more = tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await;
        assert!(more.is_err(), "the response to a request in flight goes on");
    }

    #[tokio::test]
    async fn keep_alive_requests_get_connection_close_while_leaving() {
        let (phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        let request = b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(request).await.unwrap();
        let mut seen = Vec::new();
        read_until(&mut client, &mut seen, b"plain").await;
        assert!(!String::from_utf8_lossy(&seen).contains("connection: close"));
        // Told to stop: the port still serves, and the next answer closes the connection.
        phase_tx.send_replace(Phase::Leaving);
        client.write_all(request).await.unwrap();
        let mut seen = Vec::new();
        read_to_end(&mut client, &mut seen).await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
        assert!(text.ends_with("plain"), "{text}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_when_stopping() {
        let (phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        client
            .write_all(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        read_until(&mut client, &mut seen, b"plain").await;
        phase_tx.send_replace(Phase::Leaving);
        phase_tx.send_replace(Phase::Stopping);
        let mut rest = Vec::new();
        read_to_end(&mut client, &mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
    }

    /// How long (on the test's clock) until the server closes the connection.
    async fn closed_after(client: &mut TcpStream) -> Duration {
        let from = Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3600), client.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection")
            .expect("no reset");
        assert!(rest.is_empty(), "{rest:?}");
        from.elapsed()
    }

    // The tests below run on tokio's paused clock, which jumps to the next timer whenever
    // every task waits: the timeouts are followed exactly, without waiting for them.

    #[tokio::test(start_paused = true)]
    async fn headers_begun_on_an_idle_keep_alive_connection_get_the_header_timeout() {
        let (_phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        client
            .write_all(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut client, &mut Vec::new(), b"plain").await;
        // Idle for longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(LIMITS.header_read_timeout * 3).await;
        client.write_all(b"GET /plain HTTP/1.1\r\n").await.unwrap();
        let waited = closed_after(&mut client).await;
        assert!(waited >= LIMITS.header_read_timeout, "{waited:?}");
        assert!(waited < LIMITS.header_read_timeout * 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_the_end_of_a_long_request() {
        let (_phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        client
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // It takes longer than both timeouts: a request in flight keeps the connection.
        let mut seen = Vec::new();
        while !seen.ends_with(b"slow") {
            let mut buf = [0u8; 1024];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed during the request");
            seen.extend_from_slice(&buf[..n]);
        }
        let waited = closed_after(&mut client).await;
        assert!(waited >= LIMITS.idle_timeout, "{waited:?}");
        assert!(
            waited < LIMITS.idle_timeout + LIMITS.header_read_timeout,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (_phase_tx, phase) = shutdown::channel();
        let mut client = connect(phase).await;
        let waited = closed_after(&mut client).await;
        assert!(waited >= LIMITS.header_read_timeout, "{waited:?}");
        assert!(waited < LIMITS.header_read_timeout * 2, "{waited:?}");
    }
}
