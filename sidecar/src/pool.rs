//! Connections to the app: HTTP/1.1 over TCP, one request at a time per connection, kept by
//! each serving thread for the next request.
//!
//! The exchange with the app is driven by the request that uses the connection (no task of its
//! own): the request is written, then the response head read, and the response body is read
//! from the socket as the client's connection asks for it. The request head and as much of the
//! body as is already there go out in one write. The app is the sidecar's own neighbour, but
//! its responses are still held to HTTP/1.1's framing rules ([`head`], [`crate::chunked`]); a response
//! whose framing cannot be trusted ends its connection.
//!
//! A connection goes back to its pool once the app's response has been read to the end; one
//! whose response was abandoned (the client went away) is closed. Idle connections are reused
//! newest first and dropped after [`IDLE_TIMEOUT`] (checked when a connection is taken), or when
//! the app has closed them (seen from the socket's readiness when taken). A request that a
//! reused connection could not deliver (the app closed it meanwhile: a reset, or its end before
//! any byte of a response) is sent once more on a new connection, when the whole request went
//! out in its first write.

pub mod head;

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::chunked;
use crate::forward::Rewrite;
use crate::head_fields::{AppFields, WithAppFields};
use crate::header_maps;
use crate::request_body::RequestBody;
use crate::tap::Tapped;
use head::{Framing, Sending};

/// A request body on its way to the app: as the client sent it, tapped for the audit trail, or
/// rebuilt after the sidecar read it.
pub type Outgoing = Either<RequestBody, Either<Tapped, axum::body::Body>>;

/// How long an unused connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most unused connections kept per serving thread.
const MAX_IDLE: usize = 64;
/// How long connecting to the app may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a request body gathered for the first write (more are sent as they come).
const FIRST_WRITE: usize = 64 * 1024;
/// Bytes read from the app at a time while a response head arrives.
const HEAD_READ: usize = 4096;
/// Most bytes of a response body read from the app at a time.
const BODY_READ: usize = 16 * 1024;

/// Why a request could not be sent to the app.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One serving thread's connections to the app.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    /// `host:port` of the app.
    address: String,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// How a request's delivery failed: whether it may be sent again on a new connection.
enum Failed {
    Retry,
    Fatal(Error),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Fatal(e.into())
    }
}

impl From<HeadError> for Failed {
    fn from(e: HeadError) -> Self {
        Failed::Fatal(e.into())
    }
}

impl Pool {
    /// A pool of connections to `host:port`.
    pub fn new(address: &str) -> Pool {
        Pool(Arc::new(Inner {
            address: address.to_owned(),
            idle: Mutex::default(),
        }))
    }

    /// Sends `request` (its URI in origin form) with the header fields `fields` gives, on an
    /// idle connection or a new one, and returns the response head; the body streams from the
    /// connection. The request head is written before the future is returned (it keeps
    /// neither `fields` nor the request's header map).
    pub fn send<'p>(
        &'p self,
        request: Request<Outgoing>,
        fields: &Rewrite<'_>,
    ) -> impl Future<Output = Result<Response<Reply>, Error>> + use<'p> {
        let (parts, body) = request.into_parts();
        let mut out = take_buffer();
        let sending = head::write_request(&parts, fields, body.size_hint().exact(), &mut out);
        header_maps::give_back(parts.headers);
        self.exchange(parts.method, body, out, sending)
    }

    /// Sends a request whose head is in `out`, then its body, and reads the response head.
    async fn exchange(
        &self,
        method: http::Method,
        mut body: Outgoing,
        mut out: Vec<u8>,
        sending: Sending,
    ) -> Result<Response<Reply>, Error> {
        let mut sent = 0;
        // The body's bytes already at hand go out with the head (up to a bound).
        let mut ended = body.is_end_stream();
        while !ended && out.len() < FIRST_WRITE {
            match futures_util::FutureExt::now_or_never(body.frame()) {
                None => break,
                Some(frame) => ended = add_frame(frame, sending, &mut sent, &mut out)?,
            }
        }
        if ended {
            finish_body(sending, sent, &mut out)?;
        }
        let (stream, reused) = match self.take() {
            Some(stream) => (stream, true),
            None => (self.connect().await?, false),
        };
        let mut exchange = Exchange {
            stream,
            read: BytesMut::with_capacity(HEAD_READ),
        };
        let attempt = exchange.start(&out, &method, reused && ended).await;
        let head = match attempt {
            Ok(head) => head,
            Err(Failed::Retry) => {
                exchange.stream = self.connect().await?;
                match exchange.start(&out, &method, false).await {
                    Ok(head) => head,
                    Err(Failed::Retry) => unreachable!("a new connection is not retried"),
                    Err(Failed::Fatal(e)) => return Err(e),
                }
            }
            Err(Failed::Fatal(e)) => return Err(e),
        };
        let head = match head {
            Some(head) => head,
            None => {
                // The rest of the body, then the response; an app that answers before the end
                // of the body gets no more of it, and its connection is not reused.
                // Boxed: a body that is not at hand at once is rare.
                let cut_short = !ended
                    && Box::pin(exchange.send_rest(&mut body, sending, &mut sent, &mut out))
                        .await?;
                let mut head = exchange.response_head(&method).await?;
                head.keep_alive &= !cut_short;
                head
            }
        };
        give_back_buffer(out);
        let mut response = Response::new(Reply {
            stream: Some(exchange.stream),
            buffered: exchange.read.freeze(),
            body: match head.framing {
                Framing::Empty => Decoding::Length(0),
                Framing::Length(n) => Decoding::Length(n),
                Framing::Chunked => Decoding::Chunked(chunked::Decoder::default()),
                Framing::UntilClose => Decoding::UntilClose,
            },
            give_back: head.keep_alive.then(|| self.clone()),
            fields: Some(head.fields),
        });
        *response.status_mut() = head.status;
        // For the fields the sidecar adds (the app's go with the body).
        *response.headers_mut() = header_maps::take(ADDED_FIELDS);
        response.body_mut().release_if_done();
        Ok(response)
    }

    /// The newest idle connection that is still open, dropping closed and expired ones. An
    /// idle connection has nothing to read: one the socket reports readable was closed by the
    /// app (or sent something unasked for).
    fn take(&self) -> Option<TcpStream> {
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(c) = idle.pop() {
            if now.duration_since(c.since) < IDLE_TIMEOUT
                && c.stream.poll_read_ready(&mut cx).is_pending()
            {
                return Some(c.stream);
            }
        }
        None
    }

    fn give_back(&self, stream: TcpStream) {
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Boxed: a new connection is rare, and its future (a name look-up, a timer) would otherwise
    /// be part of every request's.
    fn connect(&self) -> Pin<Box<impl Future<Output = Result<TcpStream, Error>> + '_>> {
        Box::pin(async move {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.0.address))
                .await
                .map_err(|_| "connecting to the app timed out")??;
            Ok(stream)
        })
    }
}

thread_local! {
    /// Emptied request buffers, kept for the next requests on this thread.
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Room of a new request buffer: a request head and a small body.
const BUFFER: usize = 1024;
/// Most request buffers kept per thread, and the largest kept.
const KEEP_BUFFERS: usize = 4;
const MAX_KEPT_BUFFER: usize = 4 * BUFFER;

/// A request buffer: one used before, or a new one.
fn take_buffer() -> Vec<u8> {
    BUFFERS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(BUFFER))
}

/// Keeps `buffer` for [`take_buffer`] on this thread, unless enough are kept or it is large.
fn give_back_buffer(mut buffer: Vec<u8>) {
    if buffer.capacity() > MAX_KEPT_BUFFER {
        return;
    }
    buffer.clear();
    BUFFERS.with_borrow_mut(|kept| {
        if kept.len() < KEEP_BUFFERS {
            kept.push(buffer);
        }
    });
}

/// Adds a frame of the request body to `out`, framed as `sending` says: whether the body ended.
fn add_frame(
    frame: Option<Result<Frame<Bytes>, Error>>,
    sending: Sending,
    sent: &mut u64,
    out: &mut Vec<u8>,
) -> Result<bool, Error> {
    let Some(frame) = frame else { return Ok(true) };
    // Trailers are not passed on.
    let Ok(data) = frame?.into_data() else {
        return Ok(false);
    };
    if data.is_empty() {
        return Ok(false);
    }
    *sent += data.len() as u64;
    match sending {
        Sending::Length(length) if *sent > length => {
            return Err("the request body is longer than its length".into());
        }
        Sending::Length(_) => out.extend_from_slice(&data),
        Sending::Chunked => {
            // Writing to a `Vec` cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(false)
}

/// Ends the request body: the last chunk, or a check that all of its length was sent.
fn finish_body(sending: Sending, sent: u64, out: &mut Vec<u8>) -> Result<(), Error> {
    match sending {
        Sending::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Sending::Length(length) if sent != length => {
            return Err("the request body ended before its length".into());
        }
        Sending::Length(_) => {}
    }
    Ok(())
}

/// One request's exchange on a connection.
struct Exchange {
    stream: TcpStream,
    /// Read from the app and not used yet.
    read: BytesMut,
}

impl Exchange {
    /// Writes `out` (the head and what was at hand of the body) and, if that was the whole
    /// request, reads the response head. `may_retry`: a failure that shows the app had closed
    /// the connection before it saw the request asks for a retry.
    async fn start(
        &mut self,
        out: &[u8],
        method: &http::Method,
        may_retry: bool,
    ) -> Result<Option<head::ResponseHead>, Failed> {
        if let Err(e) = self.stream.write_all(out).await {
            return Err(if may_retry { Failed::Retry } else { e.into() });
        }
        if !may_retry {
            return Ok(None);
        }
        match self.response_head(method).await {
            Ok(head) => Ok(Some(head)),
            Err(HeadError::Closed) if self.read.is_empty() => Err(Failed::Retry),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends the rest of a request body, until its end or until the app has something to say
    /// (an early answer, or the end of the connection): whether it stopped early.
    async fn send_rest(
        &mut self,
        body: &mut Outgoing,
        sending: Sending,
        sent: &mut u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let (mut read, mut write) = self.stream.split();
        let mut probe = [0u8; 1];
        loop {
            out.clear();
            let ended = tokio::select! {
                biased;
                peeked = read.peek(&mut probe) => {
                    peeked?;
                    return Ok(true);
                }
                frame = body.frame() => add_frame(frame, sending, sent, out)?,
            };
            if ended {
                finish_body(sending, *sent, out)?;
            }
            tokio::select! {
                biased;
                peeked = read.peek(&mut probe) => {
                    peeked?;
                    return Ok(true);
                }
                written = write.write_all(out) => written?,
            }
            if ended {
                return Ok(false);
            }
        }
    }

    /// Reads the response head.
    async fn response_head(
        &mut self,
        method: &http::Method,
    ) -> Result<head::ResponseHead, HeadError> {
        loop {
            if !self.read.is_empty()
                && let Some(head) = head::read_response(&mut self.read, method)?
            {
                return Ok(head);
            }
            self.read.reserve(HEAD_READ);
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => return Err(HeadError::Closed),
                Ok(_) => {}
                Err(e) if is_reset(&e) => return Err(HeadError::Closed),
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }
}

/// Why no response head came.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("the app closed the connection without a response")]
    Closed,
    #[error(transparent)]
    Io(io::Error),
    #[error(transparent)]
    Bad(#[from] head::BadHead),
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Connects to the first address of `address` that accepts.
async fn connect(address: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        match connect_to(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the app's host name has no address")))
}

async fn connect_to(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // Small MCP messages go out as soon as they are written.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How the rest of a response body is read.
enum Decoding {
    /// This many bytes to go.
    Length(u64),
    Chunked(chunked::Decoder),
    /// Until the app closes the connection.
    UntilClose,
    /// Read to its end.
    Done,
}

/// Room for the fields the sidecar adds to a response from the app (`X-Request-Id`, CORS).
const ADDED_FIELDS: usize = 4;

/// The body of the app's response, read from its connection as it is polled. The connection
/// returns to the pool once the body has been read to the end.
///
/// It also brings the app's header fields, as the app sent them ([`AppFields`]), until the
/// client's connection takes them: the response's header map holds only those the sidecar adds.
pub struct Reply {
    stream: Option<TcpStream>,
    /// Bytes read from the app and not decoded yet.
    buffered: Bytes,
    body: Decoding,
    /// Where the connection goes once the body is read (`None`: it is not reused).
    give_back: Option<Pool>,
    /// The app's header fields, until they are taken.
    fields: Option<AppFields>,
}

impl<B> WithAppFields for Either<Reply, B> {
    fn take_app_fields(&mut self) -> Option<AppFields> {
        match self {
            Either::Left(reply) => reply.fields.take(),
            Either::Right(_) => None,
        }
    }
}

impl Reply {
    /// The app's header fields (`None` once taken).
    pub fn app_fields(&self) -> Option<&AppFields> {
        self.fields.as_ref()
    }

    /// The app's header fields, to remove some (`None` once taken).
    pub fn app_fields_mut(&mut self) -> Option<&mut AppFields> {
        self.fields.as_mut()
    }

    /// Ends the body if nothing more is to come, giving its connection back when it may be
    /// reused.
    fn release_if_done(&mut self) {
        if !self.ended() {
            return;
        }
        self.body = Decoding::Done;
        // Bytes past the end of the response were never asked for: not a connection to reuse.
        if let (Some(stream), Some(pool)) = (self.stream.take(), self.give_back.take())
            && self.buffered.is_empty()
        {
            pool.give_back(stream);
        }
    }

    /// Whether the whole body has been read.
    fn ended(&self) -> bool {
        match &self.body {
            Decoding::Length(0) | Decoding::Done => true,
            Decoding::Chunked(decoder) => decoder.is_done(),
            _ => false,
        }
    }

    /// The next piece of the body from what was read, if any.
    fn decode(&mut self) -> Result<Option<Bytes>, Error> {
        if self.buffered.is_empty() {
            return Ok(None);
        }
        Ok(match &mut self.body {
            Decoding::Length(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(self.buffered.len());
                *left -= take as u64;
                Some(self.buffered.split_to(take))
            }
            Decoding::Chunked(decoder) => decoder.decode(&mut self.buffered)?,
            Decoding::UntilClose => Some(std::mem::take(&mut self.buffered)),
            Decoding::Done => None,
        })
    }

    /// Reads more from the app into `buffered`: `false` at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        let Some(stream) = &mut self.stream else {
            return Poll::Ready(Ok(false));
        };
        // Read on the stack and copied out at its size: an idle stream holds no buffer.
        let mut space = [0u8; BODY_READ];
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(())) => {
                self.buffered = Bytes::copy_from_slice(buf.filled());
                Poll::Ready(Ok(true))
            }
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            this.release_if_done();
            if matches!(this.body, Decoding::Done) {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(data)) if data.is_empty() => continue,
                Ok(Some(data)) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // What was read ended the body.
                Ok(None) if this.ended() => continue,
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
            match this.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) if matches!(this.body, Decoding::UntilClose) => {
                    this.body = Decoding::Done;
                    this.stream = None;
                }
                Poll::Ready(Ok(false)) => {
                    return Poll::Ready(Some(Err(this.fail(
                        "the app closed the connection before the end of the response".into(),
                    ))));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.body {
            Decoding::Length(left) => SizeHint::with_exact(left),
            Decoding::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Reply {
    /// A broken response: its connection is closed, and nothing more is read.
    fn fail(&mut self, e: Error) -> Error {
        self.stream = None;
        self.give_back = None;
        self.body = Decoding::Done;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    /// A request to the app with a body of known length.
    fn post(body: &'static str) -> Request<Outgoing> {
        let body = Either::Right(Either::Right(axum::body::Body::from(body)));
        Request::post("/mcp")
            .header("host", "app")
            .body(body)
            .unwrap()
    }

    async fn text(response: Response<Reply>) -> Result<String, Error> {
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Reads one request (head and a `Content-Length` or chunked body) from the sidecar: its
    /// head lines and body as text, or `None` at the end of the connection.
    async fn request(conn: &mut tokio::io::BufReader<TcpStream>) -> Option<(Vec<String>, String)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            lines.push(line.trim_end().to_owned());
        }
        let length = lines
            .iter()
            .find_map(|l| l.strip_prefix("content-length: "));
        let mut body = Vec::new();
        if let Some(length) = length {
            body.resize(length.parse().unwrap(), 0);
            conn.read_exact(&mut body).await.unwrap();
        } else if lines.iter().any(|l| l == "transfer-encoding: chunked") {
            loop {
                let mut size = String::new();
                conn.read_line(&mut size).await.unwrap();
                let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        Some((lines, String::from_utf8(body).unwrap()))
    }

    /// Reads one request from the sidecar and sends it `response`.
    async fn answer(conn: &mut tokio::io::BufReader<TcpStream>, response: &[u8]) {
        request(conn).await.unwrap();
        conn.write_all(response).await.unwrap();
    }

    async fn app() -> (TcpListener, Pool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(&listener.local_addr().unwrap().to_string());
        (listener, pool)
    }

    async fn accept(listener: &TcpListener) -> tokio::io::BufReader<TcpStream> {
        tokio::io::BufReader::new(listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn reuses_a_connection_and_reads_each_framing() {
        let (listener, pool) = app().await;
        let server = tokio::spawn(async move {
            let mut conn = accept(&listener).await;
            let (head, body) = request(&mut conn).await.unwrap();
            assert_eq!(head[0], "POST /mcp HTTP/1.1");
            assert!(head.contains(&"content-length: 2".to_owned()), "{head:?}");
            assert_eq!(body, "{}");
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
            request(&mut conn).await.unwrap();
            // Chunks in pieces, with a pause between.
            conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
                .await
                .unwrap();
            conn.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.write_all(b"c\r\n2\r\nde\r\n0\r\n\r\n").await.unwrap();
            answer(&mut conn, b"HTTP/1.1 204 No Content\r\n\r\n").await;
            answer(&mut conn, b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
            drop(conn);
            assert!(
                tokio::time::timeout(Duration::from_millis(200), listener.accept())
                    .await
                    .is_err()
            );
        });
        assert_eq!(
            text(pool.send(post("{}"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "hello"
        );
        assert_eq!(
            text(pool.send(post("{}"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "abcde"
        );
        let response = pool.send(post("{}"), &Rewrite::default()).await.unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(text(response).await.unwrap(), "");
        assert_eq!(
            text(pool.send(post("{}"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "until close"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn sends_a_body_of_unknown_length_in_chunks() {
        let (listener, pool) = app().await;
        let server = tokio::spawn(async move {
            let mut conn = accept(&listener).await;
            let (head, body) = request(&mut conn).await.unwrap();
            assert!(
                head.contains(&"transfer-encoding: chunked".to_owned()),
                "{head:?}"
            );
            assert_eq!(body, "onetwo");
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(2);
        let stream = tokio_stream_from(rx);
        let body = Either::Right(Either::Right(axum::body::Body::from_stream(stream)));
        let request = Request::post("/mcp")
            .header("host", "app")
            .body(body)
            .unwrap();
        let sending =
            tokio::spawn(async move { pool.send(request, &Rewrite::default()).await.map(text) });
        tx.send(Ok(Bytes::from_static(b"one"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(Ok(Bytes::from_static(b"two"))).await.unwrap();
        drop(tx);
        assert_eq!(sending.await.unwrap().unwrap().await.unwrap(), "ok");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_early_answer_stops_the_body() {
        let (listener, pool) = app().await;
        let server = tokio::spawn(async move {
            let mut conn = accept(&listener).await;
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                conn.read_line(&mut line).await.unwrap();
            }
            // The body is never read; the connection stays open.
            let answer = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n";
            conn.write_all(answer).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        // An endless body, far past what the sockets buffer.
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let stream = futures_util::stream::repeat_with(move || Ok::<_, io::Error>(chunk.clone()));
        let body = Either::Right(Either::Right(axum::body::Body::from_stream(stream)));
        let request = Request::post("/mcp")
            .header("host", "app")
            .body(body)
            .unwrap();
        let response = tokio::time::timeout(
            Duration::from_secs(20),
            pool.send(request, &Rewrite::default()),
        )
        .await
        .expect("the early answer is read while the body is still being sent")
        .unwrap();
        assert_eq!(response.status(), 413);
        assert_eq!(text(response).await.unwrap(), "");
        assert!(
            pool.take().is_none(),
            "a connection cut short is not reused"
        );
        server.abort();
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_is_not_used_again() {
        let (listener, pool) = app().await;
        let server = tokio::spawn(async move {
            let mut conn = accept(&listener).await;
            answer(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1").await;
            drop(conn); // closed while idle
            let mut conn = accept(&listener).await;
            answer(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2").await;
            // Read the next request, then close without answering: the sidecar had not seen
            // the close when it sent; the request goes out again on a new connection.
            request(&mut conn).await.unwrap();
            drop(conn);
            let mut conn = accept(&listener).await;
            answer(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3").await;
            // Closed again without an answer, and the retry too: an error, no third try.
            request(&mut conn).await.unwrap();
            drop(conn);
            let mut conn = accept(&listener).await;
            request(&mut conn).await.unwrap();
            drop(conn);
            let third = tokio::time::timeout(Duration::from_millis(300), listener.accept());
            assert!(third.await.is_err());
        });
        assert_eq!(
            text(pool.send(post("a"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            text(pool.send(post("b"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "2"
        );
        assert_eq!(
            text(pool.send(post("c"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "3"
        );
        assert!(pool.send(post("d"), &Rewrite::default()).await.is_err());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_broken_response_is_an_error_and_ends_its_connection() {
        let (listener, pool) = app().await;
        let server = tokio::spawn(async move {
            let mut conn = accept(&listener).await;
            answer(
                &mut conn,
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            )
            .await;
            drop(conn);
            let mut conn = accept(&listener).await;
            answer(
                &mut conn,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            )
            .await;
            let mut conn = accept(&listener).await;
            answer(
                &mut conn,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            )
            .await;
            let mut conn = accept(&listener).await;
            request(&mut conn).await.unwrap();
            // More than the response holds: the connection is not reused.
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n12")
                .await
                .unwrap();
            let mut conn = accept(&listener).await;
            answer(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3").await;
        });
        assert!(
            text(pool.send(post("a"), &Rewrite::default()).await.unwrap())
                .await
                .is_err()
        );
        assert!(
            text(pool.send(post("b"), &Rewrite::default()).await.unwrap())
                .await
                .is_err()
        );
        assert!(pool.send(post("c"), &Rewrite::default()).await.is_err());
        assert_eq!(
            text(pool.send(post("d"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "1"
        );
        assert_eq!(
            text(pool.send(post("e"), &Rewrite::default()).await.unwrap())
                .await
                .unwrap(),
            "3"
        );
        server.await.unwrap();
    }
}
