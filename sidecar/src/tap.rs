//! A request body that streams to the app while its bytes are kept for the audit trail: the
//! app gets every chunk as it arrives, and the audit writer reads the JSON-RPC messages from the
//! kept copy once the body is complete. The copy is made as the chunks pass (holding on to the
//! chunks themselves would keep the connection's whole read buffer alive until the writer gets
//! to them), up to a limit, into a buffer sized by the body's length when it is known; a larger
//! body is forwarded all the same and audited without its messages. The copy is the tapped
//! body's own while it streams and is handed over once, whole, when the body ends: no lock.

use std::cell::RefCell;
use std::collections::VecDeque;
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

    /// Reads the whole body with `read`, once it is [`State::Complete`].
    pub fn read<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.state() != State::Complete {
            return None;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let answer = read(&kept);
        if kept.capacity() > KEEP_CAPACITY {
            *kept = Vec::new();
        }
        Some(answer)
    }
}

/// Taps kept per thread for reuse.
const POOL: usize = 64;
/// Largest copy whose buffer is kept for reuse.
const KEEP_CAPACITY: usize = 4096;

thread_local! {
    /// The taps made on this thread, oldest first, reused once nothing else holds them: the
    /// audit writer's thread would otherwise free each tap and its copy, and this thread
    /// allocate new ones (costly across threads).
    static TAPS: RefCell<VecDeque<Arc<Tap>>> = const { RefCell::new(VecDeque::new()) };
}

/// A tap for a new body, and a buffer for its copy: reused when the oldest one made on this
/// thread is free.
fn new_tap() -> (Arc<Tap>, Vec<u8>) {
    TAPS.with_borrow_mut(|taps| {
        if let Some(mut oldest) = taps.pop_front() {
            if let Some(tap) = Arc::get_mut(&mut oldest) {
                let kept = tap.kept.get_mut().unwrap_or_else(|e| e.into_inner());
                let mut kept = std::mem::take(kept);
                kept.clear();
                *tap.state.get_mut() = State::Open as u8;
                taps.push_back(oldest.clone());
                return (oldest, kept);
            }
            // Still read (and so are the younger ones).
            taps.push_front(oldest);
        }
        let tap = Arc::new(Tap {
            state: AtomicU8::new(State::Open as u8),
            kept: Mutex::default(),
        });
        if taps.len() < POOL {
            taps.push_back(tap.clone());
        }
        (tap, Vec::new())
    })
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
        let (tap, kept) = new_tap();
        (
            Tapped {
                body,
                tap: tap.clone(),
                kept,
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
        if self.kept.is_empty() {
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
        // Kept whatever the state, for the tap's next use.
        let mut kept = self.tap.kept.lock().unwrap_or_else(|e| e.into_inner());
        *kept = std::mem::take(&mut self.kept);
        drop(kept);
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
        let length = this.kept.is_empty().then(|| this.body.size_hint().exact());
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

    fn body(tap: &Tap) -> Option<Vec<u8>> {
        tap.read(<[u8]>::to_vec)
    }

    #[tokio::test]
    async fn taps_are_reused_once_nothing_holds_them() {
        let (tapped, first) = Tapped::new(chunks(&["{\"a\":", "1}"]), 100);
        tapped.collect().await.unwrap();
        let held = Arc::as_ptr(&first);
        // Still held: a new one.
        let (tapped, second) = Tapped::new(chunks(&["[1]"]), 100);
        assert_ne!(Arc::as_ptr(&second), held);
        assert_eq!(second.state(), State::Open);
        tapped.collect().await.unwrap();
        assert_eq!(body(&second).as_deref(), Some(&b"[1]"[..]));
        drop(first);
        // The oldest, free again: reused, open and empty.
        let (mut tapped, third) = Tapped::new(chunks(&["{}", "x"]), 100);
        assert_eq!(Arc::as_ptr(&third), held);
        assert_eq!(third.state(), State::Open);
        assert_eq!(body(&third), None);
        tapped.frame().await.unwrap().unwrap();
        drop(tapped);
        assert_eq!(third.state(), State::Abandoned);
        assert_eq!(body(&third), None);
        assert_eq!(body(&second).as_deref(), Some(&b"[1]"[..]));
        // The oldest now is the second.
        let second_ptr = Arc::as_ptr(&second);
        drop((second, third));
        let (tapped, fourth) = Tapped::new(chunks(&["{", "}"]), 100);
        assert_eq!(Arc::as_ptr(&fourth), second_ptr);
        tapped.collect().await.unwrap();
        assert_eq!(body(&fourth).as_deref(), Some(&b"{}"[..]));
    }

    #[tokio::test]
    async fn a_body_read_through_is_kept_whole() {
        let (tapped, tap) = Tapped::new(chunks(&["{\"a\":", "1", "}"]), 100);
        assert_eq!(tap.state(), State::Open);
        let forwarded = tapped.collect().await.unwrap().to_bytes();
        assert_eq!(&forwarded[..], b"{\"a\":1}");
        assert_eq!(tap.state(), State::Complete);
        assert_eq!(body(&tap).as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[tokio::test]
    async fn a_body_of_known_length_is_kept_in_one_buffer_of_that_length() {
        let (mut tapped, tap) = Tapped::new(Full::new(Bytes::from_static(b"0123456789")), 100);
        let frame = tapped.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().len(), 10);
        assert!(tapped.frame().await.is_none());
        assert_eq!(body(&tap).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(tap.kept.lock().unwrap().capacity(), 10);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_forwarded_but_not_kept() {
        let (tapped, tap) = Tapped::new(chunks(&["12345", "67890", "x"]), 10);
        let forwarded = tapped.collect().await.unwrap().to_bytes();
        assert_eq!(&forwarded[..], b"1234567890x");
        assert_eq!(tap.state(), State::TooLarge);
        assert_eq!(body(&tap), None);
        // Exactly the limit is kept.
        let (tapped, tap) = Tapped::new(chunks(&["12345", "67890"]), 10);
        tapped.collect().await.unwrap();
        assert_eq!(body(&tap).as_deref(), Some(&b"1234567890"[..]));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_abandoned() {
        let (mut tapped, tap) = Tapped::new(chunks(&["{", "}"]), 100);
        tapped.frame().await.unwrap().unwrap();
        drop(tapped);
        assert_eq!(tap.state(), State::Abandoned);
        assert_eq!(body(&tap), None);
        // An empty body never polled is complete.
        let (tapped, tap) = Tapped::new(Full::new(Bytes::new()), 100);
        drop(tapped);
        assert_eq!(tap.state(), State::Complete);
        assert_eq!(body(&tap).as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_broken_body_failed() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"{"))),
            Err(std::io::Error::other("reset")),
        ];
        let broken = StreamBody::new(futures_util::stream::iter(frames));
        let (tapped, tap) = Tapped::new(broken, 100);
        assert!(tapped.collect().await.is_err());
        assert_eq!(tap.state(), State::Failed);
        assert_eq!(body(&tap), None);
    }
}
