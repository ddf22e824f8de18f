//! A request body that streams to the app while its bytes are kept for the audit trail: the
//! app gets every chunk as it arrives, and the audit writer reads the JSON-RPC messages from the
//! kept copy once the body is complete. The copy is made as the chunks pass (holding on to the
//! chunks themselves would keep the connection's whole read buffer alive until the writer gets
//! to them), up to a limit, into a buffer sized by the body's length when it is known; a larger
//! body is forwarded all the same and audited without its messages. The copy is the tapped
//! body's own while it streams and is handed over once, whole, when the body ends: no lock.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What became of a tapped body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Still arriving.
    Open,
    /// Read to the end, within the limit.
    Complete,
    /// Larger than the limit: forwarded, not kept.
    TooLarge,
    /// Reading it from the client failed (the client went away, a broken chunk…).
    Failed,
    /// Dropped before its end without a failure (the app was unreachable or answered early).
    Abandoned,
}

impl State {
    fn of(n: u8) -> State {
        [
            State::Open,
            State::Complete,
            State::TooLarge,
            State::Failed,
            State::Abandoned,
        ][usize::from(n)]
    }
}

/// The kept copy of a tapped body, shared with whoever reads it afterwards.
#[derive(Debug)]
pub struct Tap {
    state: AtomicU8,
    /// Set once, when the body is complete (before the state says so).
    kept: Mutex<Vec<u8>>,
}

impl Tap {
    /// What became of the body so far.
    pub fn state(&self) -> State {
        State::of(self.state.load(Ordering::Acquire))
    }

    /// The whole body, once it is [`State::Complete`] (taken: a second call gets nothing).
    pub fn take(&self) -> Option<Vec<u8>> {
        if self.state() != State::Complete {
            return None;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut *kept))
    }
}

/// A request body on its way to the app, kept in its [`Tap`] as it passes.
#[derive(Debug)]
pub struct Tapped<B: Body<Data = Bytes> = Incoming> {
    body: B,
    tap: Arc<Tap>,
    /// The copy so far, while [`State::Open`].
    kept: Vec<u8>,
    limit: usize,
    /// The state last handed to the tap (only this body changes it).
    state: State,
}

impl<B: Body<Data = Bytes> + Unpin> Tapped<B> {
    /// Taps `body`, keeping at most `limit` bytes.
    pub fn new(body: B, limit: usize) -> (Tapped<B>, Arc<Tap>) {
        let tap = Arc::new(Tap {
            state: AtomicU8::new(State::Open as u8),
            kept: Mutex::default(),
        });
        (
            Tapped {
                body,
                tap: tap.clone(),
                kept: Vec::new(),
                limit,
                state: State::Open,
            },
            tap,
        )
    }
}

impl<B: Body<Data = Bytes>> Tapped<B> {
    /// Keeps `chunk`; `length` is the body's whole length when known before its first chunk.
    fn keep(&mut self, chunk: &[u8], length: Option<u64>) {
        if self.state != State::Open {
            return;
        }
        if self.kept.len() + chunk.len() > self.limit {
            self.kept = Vec::new();
            self.end(State::TooLarge);
            return;
        }
        if self.kept.capacity() == 0 {
            // The whole body in one allocation when its length is known (and within the limit).
            let length = length.and_then(|n| usize::try_from(n).ok());
            let length = length.filter(|n| *n <= self.limit).unwrap_or(0);
            self.kept.reserve_exact(length.max(chunk.len()));
        }
        self.kept.extend_from_slice(chunk);
    }

    fn end(&mut self, state: State) {
        if self.state != State::Open {
            return;
        }
        if state == State::Complete {
            let mut kept = self.tap.kept.lock().unwrap_or_else(|e| e.into_inner());
            *kept = std::mem::take(&mut self.kept);
        }
        self.state = state;
        self.tap.state.store(state as u8, Ordering::Release);
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tapped<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let length = (this.kept.capacity() == 0).then(|| this.body.size_hint().exact());
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data, length.flatten());
                }
                if this.body.is_end_stream() {
                    this.end(State::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(State::Failed),
            Poll::Ready(None) => this.end(State::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: Body<Data = Bytes>> Drop for Tapped<B> {
    fn drop(&mut self) {
        // An empty body may never be polled; any other one dropped early was not read through.
        let state = if self.body.is_end_stream() {
            State::Complete
        } else {
            State::Abandoned
        };
        self.end(state);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn chunks(parts: &[&str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_read_through_is_kept_whole() {
        let (tapped, tap) = Tapped::new(chunks(&["{\"a\":", "1", "}"]), 100);
        assert_eq!(tap.state(), State::Open);
        let forwarded = tapped.collect().await.unwrap().to_bytes();
        assert_eq!(&forwarded[..], b"{\"a\":1}");
        assert_eq!(tap.state(), State::Complete);
        assert_eq!(tap.take().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(tap.take().as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_body_of_known_length_is_kept_in_one_buffer_of_that_length() {
        let (mut tapped, tap) = Tapped::new(Full::new(Bytes::from_static(b"0123456789")), 100);
        let frame = tapped.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().len(), 10);
        assert!(tapped.frame().await.is_none());
        let kept = tap.take().unwrap();
        assert_eq!((&kept[..], kept.capacity()), (&b"0123456789"[..], 10));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_forwarded_but_not_kept() {
        let (tapped, tap) = Tapped::new(chunks(&["12345", "67890", "x"]), 10);
        let forwarded = tapped.collect().await.unwrap().to_bytes();
        assert_eq!(&forwarded[..], b"1234567890x");
        assert_eq!(tap.state(), State::TooLarge);
        assert_eq!(tap.take(), None);
        // Exactly the limit is kept.
        let (tapped, tap) = Tapped::new(chunks(&["12345", "67890"]), 10);
        tapped.collect().await.unwrap();
        assert_eq!(tap.take().as_deref(), Some(&b"1234567890"[..]));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_abandoned() {
        let (mut tapped, tap) = Tapped::new(chunks(&["{", "}"]), 100);
        tapped.frame().await.unwrap().unwrap();
        drop(tapped);
        assert_eq!(tap.state(), State::Abandoned);
        assert_eq!(tap.take(), None);
        // An empty body never polled is complete.
        let (tapped, tap) = Tapped::new(Full::new(Bytes::new()), 100);
        drop(tapped);
        assert_eq!(tap.state(), State::Complete);
        assert_eq!(tap.take().as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_broken_body_failed() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"{"))),
            Err(std::io::Error::other("reset")),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let (tapped, tap) = Tapped::new(body, 100);
        assert!(tapped.collect().await.is_err());
        assert_eq!(tap.state(), State::Failed);
        assert_eq!(tap.take(), None);
    }
}
