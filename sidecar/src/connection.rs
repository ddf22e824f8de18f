//! One client connection on the public port (HTTP/1.1 or HTTP/2), held to [`Limits`] so slow or
//! idle clients cannot keep connections open.
//!
//! A connection must deliver a request's headers within the header read timeout: counted from
//! when it opens, and on HTTP/1.1 from the first byte of each later request. A connection with no
//! request in flight is closed after the idle timeout. Both are enforced here rather than by
//! hyper, whose HTTP/1 header timer also runs while a keep-alive connection merely waits, which
//! would close pooled connections of a proxy in front (nginx keeps them 60 s) and race its reuse.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::workers::Peer;

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

/// Serves one accepted connection until it ends, times out, or `stop` resolves (then it finishes
/// its requests and closes).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
    _permit: OwnedSemaphorePermit,
    _open: tokio::sync::mpsc::Sender<()>,
) {
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        let busy = Busy::begin(tracked.clone());
        let router = router.clone();
        async move {
            let Ok(response) = router.oneshot(request).await;
            // The request counts as in flight until its response body is done (SSE streams).
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &busy;
                    frame
                }))
            }))
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .enable_connect_protocol()
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        read_before: false,
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::pin!(stop);
    let stopping = tokio::select! {
        result = conn.as_mut() => return log_end(result),
        () = &mut stop => true,
        () = activity.expired(&limits) => false,
    };
    conn.as_mut().graceful_shutdown();
    if stopping {
        // The server bounds the drain as a whole.
        return log_end(conn.await);
    }
    // Timed out: a request that is still in flight may finish; a client still sending headers
    // (or sending nothing) is dropped.
    loop {
        tokio::select! {
            result = conn.as_mut() => return log_end(result),
            () = tokio::time::sleep(CLOSE_GRACE) => {
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    tracing::debug!(%peer, "connection timed out; closed");
                    return;
                }
            }
        }
    }
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection is doing, for its timeouts.
struct Activity {
    opened: Instant,
    /// Requests whose response is not finished.
    in_flight: AtomicUsize,
    /// Whether a request has ever started.
    served: AtomicBool,
    /// Whether the client speaks HTTP/2 (decided by its first bytes).
    http2: AtomicBool,
    /// Nanoseconds after `opened` when the last request finished.
    idle_since: AtomicU64,
    /// Nanoseconds after `opened` when the first byte arrived while idle, or [`NEVER`].
    heard_at: AtomicU64,
    changed: Notify,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            heard_at: AtomicU64::new(NEVER),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(NEVER - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.opened + Duration::from_nanos(nanos)
    }

    /// Bytes arrived from the client.
    fn heard(&self, first: &[u8], first_read: bool) {
        if first_read && first.starts_with(b"PRI") {
            self.http2.store(true, Ordering::Release);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.heard_at.load(Ordering::Relaxed) == NEVER
            && self
                .heard_at
                .compare_exchange(NEVER, self.now(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// When the connection may be closed, or `None` while a request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some(self.opened + limits.header_read_timeout);
        }
        let heard = self.heard_at.load(Ordering::Acquire);
        // HTTP/2 frames between requests (pings, window updates) are not request headers; a
        // stream whose headers never complete is not in flight and ends with the idle timeout.
        if heard != NEVER && !self.http2.load(Ordering::Acquire) {
            return Some(self.at(heard) + limits.header_read_timeout);
        }
        Some(self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout)
    }

    /// Resolves once the connection has been idle, or slow to send headers, for too long.
    async fn expired(&self, limits: &Limits) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.deadline(limits) {
                None => changed.await,
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
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
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.heard_at.store(NEVER, Ordering::Release);
            activity.idle_since.store(activity.now(), Ordering::Release);
        }
        activity.changed.notify_one();
    }
}

/// The client's socket, noting when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    read_before: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity
                .heard(&buf.filled()[before..], !this.read_before);
            this.read_before = true;
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
