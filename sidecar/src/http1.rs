//! HTTP/1.1 client connections, served by the sidecar itself: one request at a time, each
//! handed to the handler as `http` types, its response written back with the framing HTTP/1.1
//! needs. Serving them directly (rather than through hyper's connection state machine) keeps
//! the per-request work to parsing the head once, one write per small response, and no buffer
//! held by a connection that waits: a client with an open SSE stream costs little memory.
//!
//! Timeouts: a request's head must arrive within the header read timeout, counted from the
//! connection's start or from the first byte of a later request; a connection with no request
//! in flight closes after the idle timeout. No timer runs while a request is in flight: the one
//! timer of a connection is looked at when it fires, and put back to the deadline then due.
//!
//! Shutdown: once the phase reaches [`Phase::Leaving`] responses carry `Connection: close`;
//! at [`Phase::Stopping`] a connection waiting for a request closes, and an SSE stream opened
//! with GET ends with a complete response (the client reconnects elsewhere).

pub mod body;
mod encode;
pub mod head;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Version, header};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::head_fields::{AppFields, WithAppFields};
use crate::header_maps;
use crate::in_place;
use crate::peer::Peer;
use crate::shutdown::{self, Phase};
use body::{Body, Shared};
use encode::Out;
use head::RequestHead;

/// How HTTP/1.1 connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Time allowed for a request's head to arrive.
    pub header_read_timeout: Duration,
    /// Time a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest request head (request line and fields), in bytes; longer ones get 431.
    pub max_header_bytes: usize,
}

/// Room made in the read buffer before each read of a head.
const HEAD_READ: usize = 4096;
/// How long a closing connection keeps reading (and dropping) what the client still sends, so
/// that its last response is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes dropped while lingering.
const LINGER_BYTES: usize = 256 * 1024;

/// Whether a response is an SSE stream (`text/event-stream`), from its first `Content-Type`: the
/// app's (`app`), else that of `headers`.
pub fn is_event_stream(app: Option<&AppFields>, headers: &HeaderMap) -> bool {
    app.and_then(|fields| fields.get(&header::CONTENT_TYPE))
        .or_else(|| headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// How a connection ends.
enum End {
    /// Right away (the client left, or the connection broke).
    Drop,
    /// After telling the client (FIN), reading what it still sends for a moment.
    Close,
}

/// Serves the HTTP/1.1 connection `stream` from `client` until it ends, times out, or `phase`
/// reaches [`Phase::Stopping`] while no request is in flight. `handler` answers each request.
pub async fn serve<H, F, B>(
    stream: TcpStream,
    client: Peer,
    handler: H,
    config: Config,
    phase: watch::Receiver<Phase>,
) where
    H: Fn(Request<Body>, Peer) -> F,
    F: Future<Output = Response<B>>,
    B: hyper::body::Body<Data = Bytes> + WithAppFields + Unpin,
    B::Error: std::fmt::Display,
{
    let shared = Arc::new(Shared::new(stream));
    let end = Connection {
        shared: &shared,
        config,
        phase: &phase,
        out: Vec::new(),
    }
    .run(client, handler)
    .await;
    if let (End::Close, Ok(shared)) = (end, Arc::try_unwrap(shared)) {
        linger(shared.stream).await;
    }
}

/// One connection's state between its requests.
struct Connection<'a> {
    shared: &'a Arc<Shared>,
    config: Config,
    phase: &'a watch::Receiver<Phase>,
    /// The response head being written.
    out: Vec<u8>,
}

impl Connection<'_> {
    async fn run<H, F, B>(mut self, client: Peer, handler: H) -> End
    where
        H: Fn(Request<Body>, Peer) -> F,
        F: Future<Output = Response<B>>,
        B: hyper::body::Body<Data = Bytes> + WithAppFields + Unpin,
        B::Error: std::fmt::Display,
    {
        let opened = Instant::now();
        let config = self.config;
        let mut stopping = pin!(shutdown::reached_cheaply(self.phase, Phase::Stopping));
        let mut timer = pin!(tokio::time::sleep_until(
            opened + config.header_read_timeout
        ));
        // When the head being awaited began (the connection's start, or the first byte of a
        // later request); `None` while the connection waits with nothing received.
        let mut head_since = Some(opened);
        let mut idle_since = opened;
        loop {
            let head = loop {
                let parsed = {
                    let mut input = self.shared.input();
                    let parsed = head::read_request(&mut input.buf, config.max_header_bytes);
                    (parsed, !input.buf.is_empty())
                };
                match parsed {
                    (Ok(Some(head)), _) => break head,
                    (Ok(None), begun) => {
                        if begun && head_since.is_none() {
                            head_since = Some(Instant::now());
                        }
                    }
                    (Err(refused), _) => {
                        tracing::debug!(error = %refused, "request head refused");
                        let status = refused.status();
                        let decided = encode::response_head(
                            &mut self.out,
                            &Method::GET,
                            status,
                            None,
                            &HeaderMap::new(),
                            &hyper::body::SizeHint::with_exact(0),
                            true,
                            false,
                        );
                        debug_assert!(!decided.keep_alive);
                        let _ =
                            write_all(&self.shared.stream, &mut [IoSlice::new(&self.out)]).await;
                        return End::Close;
                    }
                }
                let read = {
                    let mut input = self.shared.input();
                    if input.buf.capacity() - input.buf.len() < HEAD_READ / 4 {
                        input.buf.reserve(HEAD_READ);
                    }
                    read_some(&self.shared.stream, &mut input.buf)
                };
                match read {
                    Ok(0) => return End::Drop,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return End::Drop,
                }
                tokio::select! {
                    biased;
                    ready = self.shared.stream.readable() => {
                        if ready.is_err() {
                            return End::Drop;
                        }
                    }
                    () = &mut stopping => return End::Close,
                    () = &mut timer => {
                        let deadline = match head_since {
                            Some(since) => since + config.header_read_timeout,
                            None => idle_since + config.idle_timeout,
                        };
                        let now = Instant::now();
                        if deadline <= now {
                            tracing::debug!("connection timed out; closed");
                            return End::Close;
                        }
                        // Whatever happens from now sets a deadline no sooner than the shorter
                        // timeout from now: looking again then at the latest is never late.
                        let shorter = config.header_read_timeout.min(config.idle_timeout);
                        timer.as_mut().reset(deadline.min(now + shorter));
                    }
                }
            };
            match self.exchange(head, &client, &handler, &mut stopping).await {
                Ok(true) => {}
                Ok(false) => return End::Close,
                Err(()) => return End::Drop,
            }
            if *self.phase.borrow() >= Phase::Stopping {
                return End::Close;
            }
            head_since = None;
            idle_since = Instant::now();
        }
    }

    /// Answers one request: whether the connection can carry the next one (`Err` when it
    /// broke).
    async fn exchange<H, F, B>(
        &mut self,
        head: RequestHead,
        client: &Peer,
        handler: &H,
        stopping: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, ()>
    where
        H: Fn(Request<Body>, Peer) -> F,
        F: Future<Output = Response<B>>,
        B: hyper::body::Body<Data = Bytes> + WithAppFields + Unpin,
        B::Error: std::fmt::Display,
    {
        let RequestHead {
            parts,
            framing,
            keep_alive,
            expects_continue,
        } = head;
        self.shared.input().begin(framing, expects_continue);
        let method = parts.method.clone();
        let http11 = parts.version == Version::HTTP_11;
        let body = Body::new(self.shared.clone(), framing);
        // Boxed: a request's future is kilobytes large, and an SSE stream's connection should
        // not hold that space for as long as the stream lasts.
        let request = Request::from_parts(parts, body);
        let response = in_place::boxed(|| handler(request, client.clone())).await;
        let (parts, mut body) = response.into_parts();
        let app = body.take_app_fields();
        let leaving = *self.phase.borrow() >= Phase::Leaving;
        let decided = encode::response_head(
            &mut self.out,
            &method,
            parts.status,
            app.as_ref(),
            &parts.headers,
            &hyper::body::Body::size_hint(&body),
            http11,
            keep_alive && !leaving,
        );
        let events = method == Method::GET && is_event_stream(app.as_ref(), &parts.headers);
        drop(app);
        header_maps::give_back(parts.headers);
        let sent = match decided.out {
            Out::Nothing => write_all(&self.shared.stream, &mut [IoSlice::new(&self.out)])
                .await
                .map(|()| true),
            out => {
                let stop = events.then_some(stopping);
                self.send(&mut body, out, stop).await
            }
        };
        drop(body);
        match sent {
            Ok(true) if decided.keep_alive => Ok(self.shared.input().finish(&self.shared.stream)),
            Ok(_) => Ok(false),
            Err(_) => Err(()),
        }
    }

    /// Writes the response head in `self.out` and the body framed as `out`: whether the whole
    /// body went out as framed.
    async fn send<B>(
        &mut self,
        body: &mut B,
        out: Out,
        mut stop: Option<&mut Pin<&mut impl Future<Output = ()>>>,
    ) -> io::Result<bool>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let stream = &self.shared.stream;
        let mut head_sent = false;
        let mut sent = 0u64;
        loop {
            let frame = if head_sent {
                next_frame(body, stop.as_deref_mut()).await
            } else {
                // The first piece goes out with the head when it is at hand; else the head goes
                // alone (an SSE stream's client sees its response start at once).
                match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        write_all(stream, &mut [IoSlice::new(&self.out)]).await?;
                        head_sent = true;
                        self.release_buffers(out);
                        next_frame(body, stop.as_deref_mut()).await
                    }
                }
            };
            let head: &[u8] = if head_sent { &[] } else { &self.out };
            let data = match frame {
                None => {
                    let last: &[u8] = if out == Out::Chunked {
                        b"0\r\n\r\n"
                    } else {
                        b""
                    };
                    write_all(stream, &mut [IoSlice::new(head), IoSlice::new(last)]).await?;
                    return Ok(!matches!(out, Out::Length(n) if n != sent));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed; connection closed");
                    if !head_sent {
                        write_all(stream, &mut [IoSlice::new(head)]).await?;
                    }
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    // Trailers are not sent over HTTP/1.1; empty data says nothing.
                    _ => continue,
                },
            };
            let ended = hyper::body::Body::is_end_stream(body);
            match out {
                Out::Length(n) => {
                    let room = usize::try_from(n - sent).unwrap_or(usize::MAX);
                    let piece = &data[..data.len().min(room)];
                    write_all(stream, &mut [IoSlice::new(head), IoSlice::new(piece)]).await?;
                    sent += piece.len() as u64;
                    if data.len() > room {
                        tracing::debug!(
                            "response body longer than its Content-Length; connection closed"
                        );
                        return Ok(false);
                    }
                    if ended {
                        return Ok(sent == n);
                    }
                }
                Out::Chunked => {
                    let mut size = [0u8; 18];
                    let size = chunk_size(&mut size, data.len());
                    let last: &[u8] = if ended { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                    write_all(
                        stream,
                        &mut [
                            IoSlice::new(head),
                            IoSlice::new(size),
                            IoSlice::new(&data),
                            IoSlice::new(last),
                        ],
                    )
                    .await?;
                    if ended {
                        return Ok(true);
                    }
                }
                Out::UntilClose | Out::Nothing => {
                    write_all(stream, &mut [IoSlice::new(head), IoSlice::new(&data)]).await?;
                }
            }
            if !head_sent {
                head_sent = true;
                self.release_buffers(out);
            }
        }
    }

    /// Lets go of the read and write buffers while a response of unknown length streams (an
    /// SSE stream may stay open for hours), unless they hold bytes.
    fn release_buffers(&mut self, out: Out) {
        if matches!(out, Out::Chunked | Out::UntilClose) {
            self.out = Vec::new();
            let mut input = self.shared.input();
            if input.buf.is_empty() {
                input.buf = BytesMut::new();
            }
        }
    }
}

/// The body's next frame, or its end once `stop` resolves.
async fn next_frame<B>(
    body: &mut B,
    stop: Option<&mut Pin<&mut impl Future<Output = ()>>>,
) -> Option<Result<hyper::body::Frame<Bytes>, B::Error>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    match stop {
        None => body.frame().await,
        Some(stop) => tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = stop.as_mut() => None,
        },
    }
}

/// A chunk's size line (hex digits and CRLF), written into `buf`.
fn chunk_size(buf: &mut [u8; 18], size: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    let mut n = size;
    loop {
        at -= 1;
        buf[at] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Reads what the socket has into the room `buf` has. A read that leaves room unused took all
/// there was: the socket is then taken as not readable until the reactor says otherwise, so the
/// next read waits for it instead of making a system call that finds nothing (nginx does the
/// same). This cannot miss bytes: ones that arrived after the read raise a new event.
pub(crate) fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let read = stream.try_read_buf(buf)?;
    if read > 0 && read < room {
        let _ = stream.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }
    Ok(read)
}

/// Writes all of `bufs` (empty ones are skipped).
async fn write_all(stream: &TcpStream, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the connection: FIN first, then what the client still sends is read and dropped for a
/// moment, so that a reset does not destroy the last response before the client has read it.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut dropped = 0;
    // On the heap: on the stack it would be part of every connection's future, kilobytes that
    // an open connection holds for its whole life.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => {
                    dropped += n;
                    if dropped > LINGER_BYTES {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{Full, StreamBody};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    const CONFIG: Config = Config {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_header_bytes: 16 * 1024,
    };

    type Answer = Response<http_body_util::Either<Full<Bytes>, StreamBody<EventStream>>>;

    impl WithAppFields for http_body_util::Either<Full<Bytes>, StreamBody<EventStream>> {
        fn take_app_fields(&mut self) -> Option<AppFields> {
            None
        }
    }
    type EventStream = futures_util::stream::Iter<
        std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, Infallible>>,
    >;

    /// Answers each request with its path and its body as read, or (`/stream`) with two pieces
    /// of unknown total length, or (`/ignore`) without reading the body.
    async fn answer(request: Request<Body>) -> Answer {
        let path = request.uri().path().to_owned();
        let body = match path.as_str() {
            "/ignore" => String::new(),
            _ => {
                let bytes = request.into_body().collect().await.map(|b| b.to_bytes());
                match bytes {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => format!("error: {e}"),
                }
            }
        };
        if path == "/stream" {
            let frames = vec![
                Ok(hyper::body::Frame::data(Bytes::from_static(b"one"))),
                Ok(hyper::body::Frame::data(Bytes::from_static(b"two!"))),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            return Response::new(http_body_util::Either::Right(body));
        }
        Response::new(http_body_util::Either::Left(Full::new(Bytes::from(
            format!("{path}:{body}"),
        ))))
    }

    /// A client connected to a connection served by [`serve`] with [`answer`].
    async fn connect() -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (stream, peer) = accepted.unwrap();
        let (_, phase) = shutdown::channel();
        tokio::spawn(async move {
            let handler = |request, _| answer(request);
            serve(stream, Peer::new(peer), handler, CONFIG, phase).await;
        });
        client.unwrap()
    }

    /// Everything the server sends until it closes the connection.
    async fn read_all(client: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let read = client.read_to_end(&mut seen);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        String::from_utf8(seen).unwrap()
    }

    /// What the server sends until `end` has arrived.
    async fn read_until(client: &mut TcpStream, end: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).ends_with(end) {
            let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8(seen).unwrap()
    }

    fn bodies(wire: &str) -> Vec<&str> {
        wire.split("HTTP/1.1 ")
            .skip(1)
            .map(|response| response.split("\r\n\r\n").nth(1).unwrap_or_default())
            .collect()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let mut client = connect().await;
        client
            .write_all(
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
                  POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                  2\r\nde\r\n1;ext=1\r\nf\r\n0\r\nTrailer: t\r\n\r\n\
                  GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let wire = read_all(&mut client).await;
        assert_eq!(bodies(&wire), ["/a:abc", "/b:def", "/c:"], "{wire}");
    }

    #[tokio::test]
    async fn a_client_that_expects_100_continue_gets_it_when_the_body_is_read() {
        let mut client = connect().await;
        client
            .write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let interim = read_until(&mut client, "\r\n\r\n").await;
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"hello").await.unwrap();
        let wire = read_all(&mut client).await;
        assert_eq!(bodies(&wire), ["/a:hello"], "{wire}");
    }

    #[tokio::test]
    async fn an_unread_small_body_is_dropped_and_the_connection_goes_on() {
        let mut client = connect().await;
        client
            .write_all(
                b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                  GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let wire = read_all(&mut client).await;
        assert_eq!(bodies(&wire), ["/ignore:", "/next:"], "{wire}");
    }

    #[tokio::test]
    async fn an_unread_large_body_ends_the_connection_after_the_response() {
        let mut client = connect().await;
        let length = body::DRAIN_LIMIT * 4;
        let head = format!("POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..4 {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            client
        });
        let mut client = writer.await.unwrap();
        let wire = read_all(&mut client).await;
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(
            wire.contains("connection: close\r\n") || !wire.contains("keep-alive"),
            "{wire}"
        );
        assert_eq!(bodies(&wire), ["/ignore:"], "{wire}");
        // The connection is closed: nothing more is answered.
        let _ = client
            .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert_eq!(read_all(&mut client).await, "");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_chunked_or_ends_with_the_connection() {
        let mut client = connect().await;
        client
            .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let wire = read_all(&mut client).await;
        assert!(wire.contains("transfer-encoding: chunked\r\n"), "{wire}");
        assert!(
            wire.ends_with("\r\n\r\n3\r\none\r\n4\r\ntwo!\r\n0\r\n\r\n"),
            "{wire}"
        );

        let mut client = connect().await;
        client
            .write_all(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let wire = read_all(&mut client).await;
        assert!(wire.contains("connection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nonetwo!"), "{wire}");
    }

    #[tokio::test]
    async fn a_broken_chunked_body_fails_and_ends_the_connection() {
        let mut client = connect().await;
        client
            .write_all(
                b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\
                  GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .await
            .unwrap();
        let wire = read_all(&mut client).await;
        assert_eq!(bodies(&wire).len(), 1, "{wire}");
        assert!(
            bodies(&wire)[0].starts_with("/a:error: malformed chunked body"),
            "{wire}"
        );
    }

    #[tokio::test]
    async fn a_refused_head_gets_its_status_and_the_connection_closes() {
        let mut client = connect().await;
        client
            .write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
            .await
            .unwrap();
        let wire = read_all(&mut client).await;
        assert!(
            wire.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
            "{wire}"
        );
        assert!(wire.contains("connection: close\r\n"), "{wire}");
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_size(&mut buf, 255), b"ff\r\n");
        assert_eq!(chunk_size(&mut buf, usize::MAX), b"ffffffffffffffff\r\n");
    }
}
