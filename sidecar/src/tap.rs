//! A request body that streams to the app while its bytes are kept for the audit trail: the
//! app gets every chunk as it arrives, and the audit writer reads the JSON-RPC messages from the
//! kept copy once the body is complete. The copy is made as the chunks pass (holding on to the
//! chunks themselves would keep the connection's whole read buffer alive until the writer gets
//! to them), up to a limit; a larger body is forwarded all the same and audited without its
//! messages.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What became of a tapped body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The kept copy of a tapped body, shared with whoever reads it afterwards.
#[derive(Debug)]
pub struct Tap {
    limit: usize,
    kept: Mutex<Kept>,
}

#[derive(Debug)]
struct Kept {
    bytes: Vec<u8>,
    state: State,
}

impl Tap {
    /// What became of the body so far.
    pub fn state(&self) -> State {
        self.lock().state
    }

    /// The whole body, once it is [`State::Complete`] (taken: a second call gets nothing).
    pub fn take(&self) -> Option<Vec<u8>> {
        let mut kept = self.lock();
        if kept.state != State::Complete {
            return None;
        }
        Some(std::mem::take(&mut kept.bytes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, chunk: &[u8]) {
        let mut kept = self.lock();
        if kept.state != State::Open {
            return;
        }
        if kept.bytes.len() + chunk.len() > self.limit {
            kept.bytes = Vec::new();
            kept.state = State::TooLarge;
        } else {
            kept.bytes.extend_from_slice(chunk);
        }
    }

    fn end(&self, state: State) {
        let mut kept = self.lock();
        if kept.state == State::Open {
            kept.state = state;
        }
    }
}

/// A request body on its way to the app, kept in its [`Tap`] as it passes.
#[derive(Debug)]
pub struct Tapped {
    body: Incoming,
    tap: Arc<Tap>,
}

impl Tapped {
    /// Taps `body`, keeping at most `limit` bytes.
    pub fn new(body: Incoming, limit: usize) -> (Tapped, Arc<Tap>) {
        let tap = Arc::new(Tap {
            limit,
            kept: Mutex::new(Kept {
                bytes: Vec::new(),
                state: State::Open,
            }),
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

impl Body for Tapped {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tap.keep(data);
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

impl Drop for Tapped {
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
