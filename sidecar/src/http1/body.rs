//! Request bodies from HTTP/1.1 clients, read from the connection's socket as the handler asks
//! for them, framed by `Content-Length` or the chunked coding. A body owes a `100 Continue` to a
//! client that asked for one, sent on its first read. The connection looks at what is left of
//! a body once the response is out ([`Input::finish`]): the next request starts after it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::head::Framing;
use crate::chunked;

/// Bytes asked of the socket per read of a body.
const READ_SIZE: usize = 16 * 1024;
/// Most body bytes read and dropped so that a connection can carry its next request when the
/// handler did not read the whole body.
pub const DRAIN_LIMIT: u64 = 64 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The socket failed.
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
    /// The client closed the connection before the body ended.
    #[error("the client closed the connection before the request body ended")]
    Closed,
    /// The chunked coding is broken.
    #[error(transparent)]
    Chunked(#[from] chunked::Malformed),
}

/// A client connection's socket and the bytes read from it but not yet used.
pub struct Shared {
    /// The socket (reads here and in the connection; writes in the connection).
    pub stream: TcpStream,
    /// What was read and what is left of the current request's body.
    input: Mutex<Input>,
}

impl Shared {
    /// A connection's socket, nothing read yet.
    pub fn new(stream: TcpStream) -> Shared {
        Shared {
            stream,
            input: Mutex::new(Input::default()),
        }
    }

    /// The input, locked (only the connection's task uses it; the lock is never contended).
    pub fn input(&self) -> MutexGuard<'_, Input> {
        self.input
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What was read from a client and not yet used.
#[derive(Default)]
pub struct Input {
    /// Bytes read: the rest of a body, or the start of the next request.
    pub buf: BytesMut,
    /// Chunked data read but not yet decoded (frozen out of `buf`).
    pending: Bytes,
    /// What is left of the current request's body.
    left: Left,
    /// A `100 Continue` is owed before the body is read: how much of it is written.
    continue_owed: Option<usize>,
}

/// What is left of a request body.
#[derive(Debug, Default)]
enum Left {
    /// Nothing: the body is read whole.
    #[default]
    None,
    /// This many bytes.
    Length(u64),
    /// Chunks, until the last one.
    Chunked(chunked::Decoder),
    /// Unknown: reading failed, the connection cannot carry another request.
    Broken,
}

impl Input {
    /// Starts reading a request's body, framed by `framing`.
    pub fn begin(&mut self, framing: Framing, expects_continue: bool) {
        self.left = match framing {
            Framing::Empty => Left::None,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(chunked::Decoder::default()),
        };
        self.continue_owed = expects_continue.then_some(0);
    }

    /// The next piece of the body from the bytes at hand: `Some(None)` at its end, `None` when
    /// more bytes are needed.
    fn next(&mut self) -> Result<Option<Option<Bytes>>, BodyError> {
        match &mut self.left {
            Left::None => Ok(Some(None)),
            Left::Broken => Err(BodyError::Closed),
            Left::Length(n) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(*n)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let data = self.buf.split_to(take).freeze();
                *n -= take as u64;
                if *n == 0 {
                    self.left = Left::None;
                }
                Ok(Some(Some(data)))
            }
            Left::Chunked(decoder) => {
                if self.pending.is_empty() && !self.buf.is_empty() {
                    self.pending = self.buf.split().freeze();
                }
                let decoded = decoder.decode(&mut self.pending);
                let done = decoder.is_done();
                let data = decoded.inspect_err(|_| self.left = Left::Broken)?;
                if done {
                    self.left = Left::None;
                    // What follows the last chunk is the next request.
                    if !self.pending.is_empty() {
                        let mut rest = BytesMut::from(&self.pending[..]);
                        rest.extend_from_slice(&self.buf);
                        self.buf = rest;
                        self.pending = Bytes::new();
                    }
                }
                match data {
                    Some(data) => Ok(Some(Some(data))),
                    None if done => Ok(Some(None)),
                    None => Ok(None),
                }
            }
        }
    }

    /// Whether the body is read whole.
    pub fn is_done(&self) -> bool {
        matches!(self.left, Left::None)
    }

    /// After the response: drops what the handler left of the body, from the bytes at hand and
    /// what the socket has ready, up to [`DRAIN_LIMIT`]. Whether the connection can carry the
    /// next request.
    pub fn finish(&mut self, stream: &TcpStream) -> bool {
        if self.is_done() {
            self.continue_owed = None;
            return true;
        }
        if self.continue_owed.is_some() {
            // The client has not sent the body and waits: it cannot tell where the next request
            // would start.
            return false;
        }
        let mut dropped = 0u64;
        loop {
            match self.next() {
                Ok(Some(None)) => return true,
                Ok(Some(Some(data))) => {
                    dropped += data.len() as u64;
                    if dropped > DRAIN_LIMIT {
                        return false;
                    }
                }
                Ok(None) => {
                    self.buf.reserve(READ_SIZE);
                    match stream.try_read_buf(&mut self.buf) {
                        Ok(n) if n > 0 => {}
                        _ => return false,
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Reads more of the body from `stream`, after what is owed of a `100 Continue`. A failure
    /// leaves the body broken.
    fn poll_fill(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BodyError>> {
        let filled = ready!(self.poll_read_more(stream, cx));
        if filled.is_err() {
            self.left = Left::Broken;
        }
        Poll::Ready(filled)
    }

    fn poll_read_more(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BodyError>> {
        ready!(self.poll_continue(stream, cx))?;
        let want = match self.left {
            Left::Length(n) => usize::try_from(n).unwrap_or(usize::MAX).min(READ_SIZE),
            _ => READ_SIZE,
        };
        self.buf.reserve(want);
        loop {
            match super::read_some(stream, &mut self.buf) {
                Ok(0) => return Poll::Ready(Err(BodyError::Closed)),
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(stream.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Writes what is owed of a `100 Continue`.
    fn poll_continue(&mut self, stream: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(written) = self.continue_owed {
            if written == CONTINUE.len() {
                self.continue_owed = None;
                break;
            }
            match stream.try_write(&CONTINUE[written..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.continue_owed = Some(written + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(stream.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// An HTTP/1.1 request's body.
pub struct Body {
    shared: Arc<Shared>,
    hint: SizeHint,
    ended: bool,
}

impl Body {
    /// The body of the request whose head was just read from `shared`'s connection.
    pub fn new(shared: Arc<Shared>, framing: Framing) -> Body {
        let hint = match framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked => SizeHint::default(),
        };
        Body {
            shared,
            hint,
            ended: framing == Framing::Empty,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let shared = &*this.shared;
        let mut input = shared.input();
        loop {
            match input.next() {
                Ok(Some(Some(data))) => {
                    if let Some(exact) = this.hint.exact() {
                        this.hint.set_exact(exact.saturating_sub(data.len() as u64));
                    }
                    if input.is_done() {
                        this.ended = true;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(None)) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if let Err(e) = ready!(input.poll_fill(&shared.stream, cx)) {
                this.ended = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
