//! A request body that streams to the app while its bytes are kept for the audit trail: the
//! app gets every chunk as it arrives, and the audit trail reads the JSON-RPC messages from the
//! kept copy once the body is complete. The copy is made as the chunks pass (holding on to the
//! chunks themselves would keep the connection's whole read buffer alive until the writer gets
//! to them), up to a limit, into a buffer sized by the body's length when it is known; a larger
//! body is forwarded all the same and audited without its messages. The tap is read on the
//! request's own thread once the response is out (by the writer only when the body was still
//! streaming then), and given back there ([`recycle`]) for the thread's next body: taps never
//! go from one thread to another's free list.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::request_body::RequestBody;

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
    /// Changed by the tapped body alone.
    state: AtomicU8,
    limit: usize,
    /// The copy so far; the whole body once [`State::Complete`].
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
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        Some(read(&kept))
    }
}

/// Taps this thread keeps free for its next bodies, at most.
const FREE_TAPS: usize = 16;
/// Largest copy whose buffer is kept for reuse.
const KEEP_CAPACITY: usize = 4096;

thread_local! {
    /// Taps read and given back on this thread, open and empty, held by nothing else.
    static FREE: RefCell<Vec<Arc<Tap>>> = const { RefCell::new(Vec::new()) };
}

/// Gives a read tap back for this thread's next body, when nothing else holds it (its body is
/// dropped); else it is let go of.
pub fn recycle(mut tap: Arc<Tap>) {
    let Some(free) = Arc::get_mut(&mut tap) else {
        return;
    };
    let kept = free.kept.get_mut().unwrap_or_else(|e| e.into_inner());
    if kept.capacity() > KEEP_CAPACITY {
        *kept = Vec::new();
    } else {
        kept.clear();
    }
    *free.state.get_mut() = State::Open as u8;
    FREE.with_borrow_mut(|taps| {
        if taps.len() < FREE_TAPS {
            taps.push(tap);
        }
    });
}

/// Taps free on this thread.
#[cfg(test)]
pub fn free_taps() -> usize {
    FREE.with_borrow(Vec::len)
}

/// A request body on its way to the app, kept in its [`Tap`] as it passes. As small as the body
/// itself and a pointer: requests with it are moved around whole.
#[derive(Debug)]
pub struct Tapped<B: Body<Data = Bytes> = RequestBody> {
    body: B,
    tap: Arc<Tap>,
}

impl<B: Body<Data = Bytes> + Unpin> Tapped<B> {
    /// Taps `body`, keeping at most `limit` bytes.
    pub fn new(body: B, limit: usize) -> (Tapped<B>, Arc<Tap>) {
        let tap = FREE
            .with_borrow_mut(Vec::pop)
            .map(|mut tap| {
                if let Some(free) = Arc::get_mut(&mut tap) {
                    free.limit = limit;
                }
                tap
            })
            .unwrap_or_else(|| {
                Arc::new(Tap {
                    state: AtomicU8::new(State::Open as u8),
                    limit,
                    kept: Mutex::default(),
                })
            });
        (
            Tapped {
                body,
                tap: tap.clone(),
            },
            tap,
        )
    }
}

impl Tap {
    /// Keeps `chunk`; `length` is what was left of the body before it, when known.
    fn keep(&self, chunk: &[u8], length: Option<u64>) {
        if self.state() != State::Open {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() + chunk.len() > self.limit {
            *kept = Vec::new();
            drop(kept);
            self.end(State::TooLarge);
            return;
        }
        if kept.is_empty() {
            // The whole body in one allocation when its length is known (and within the limit).
            let length = length.and_then(|n| usize::try_from(n).ok());
            let length = length.filter(|n| *n <= self.limit).unwrap_or(0);
            kept.reserve_exact(length.max(chunk.len()));
        }
        kept.extend_from_slice(chunk);
    }

    fn end(&self, state: State) {
        // Only the tapped body changes the state.
        if self.state() == State::Open {
            self.state.store(state as u8, Ordering::Release);
        }
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
        let length = this.body.size_hint().exact();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tap.keep(data, length);
                }
                if this.body.is_end_stream() {
                    this.tap.end(State::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.tap.end(State::Failed),
            Poll::Ready(None) => this.tap.end(State::Complete),
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
        self.tap.end(state);
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
    async fn many_taps_at_once_each_keep_their_own_body() {
        for round in 0..3 {
            let mut held = Vec::new();
            for i in 0..100 {
                let text = format!("{round}-{i}");
                let (tapped, tap) = Tapped::new(Full::new(Bytes::from(text.clone())), 100);
                tapped.collect().await.unwrap();
                held.push((tap, text));
            }
            for (tap, text) in &held {
                assert_eq!(body(tap).as_deref(), Some(text.as_bytes()));
            }
            let taps: std::collections::HashSet<_> =
                held.iter().map(|(tap, _)| Arc::as_ptr(tap)).collect();
            assert_eq!(taps.len(), 100);
        }
    }

    #[tokio::test]
    async fn taps_given_back_on_a_thread_are_reused_there_when_nothing_else_holds_them() {
        let (tapped, tap) = Tapped::new(
            Full::new(Bytes::from(vec![b' '; KEEP_CAPACITY + 1])),
            10_000,
        );
        tapped.collect().await.unwrap();
        let (large, at) = (tap.kept.lock().unwrap().capacity(), Arc::as_ptr(&tap));
        assert!(large > KEEP_CAPACITY);
        recycle(tap);
        // Reused open and empty, without the large copy's buffer.
        let (tapped, tap) = Tapped::new(chunks(&["{", "}"]), 10);
        assert_eq!(Arc::as_ptr(&tap), at);
        assert_eq!((tap.state(), tap.limit), (State::Open, 10));
        assert!(tap.kept.lock().unwrap().capacity() <= KEEP_CAPACITY);
        tapped.collect().await.unwrap();
        assert_eq!(body(&tap).as_deref(), Some(&b"{}"[..]));
        // Still held by its body: let go of, not reused.
        let (tapped, held) = Tapped::new(chunks(&["x"]), 10);
        let held_at = Arc::as_ptr(&held);
        recycle(held);
        let (_, other) = Tapped::new(chunks(&["y"]), 10);
        assert_ne!(Arc::as_ptr(&other), held_at);
        drop(tapped);
        // Another thread does not get this thread's taps.
        recycle(tap);
        let elsewhere = std::thread::spawn(|| {
            let (_, tap) = Tapped::new(chunks(&["z"]), 10);
            Arc::as_ptr(&tap) as usize
        })
        .join()
        .unwrap();
        assert_ne!(elsewhere, at as usize);
        let (_, again) = Tapped::new(chunks(&["z"]), 10);
        assert_eq!(Arc::as_ptr(&again), at);
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
