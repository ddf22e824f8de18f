//! Connections to the app: HTTP/1.1 over TCP, one request at a time per connection, kept by
//! each serving thread for the next request.
//!
//! A connection goes back to its pool once the app's response has been read to the end; one
//! whose response was abandoned (the client went away) is closed. Idle connections are reused
//! newest first and dropped after [`IDLE_TIMEOUT`] (checked when a connection is taken), or as
//! soon as the app closes them. A request that a pooled connection could not even start (the
//! app closed it meanwhile) is retried once on a new connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::tap::Tapped;

/// A request body on its way to the app: as the client sent it, tapped for the audit trail, or
/// rebuilt after the sidecar read it.
pub type Outgoing = Either<Incoming, Either<Tapped, axum::body::Body>>;

/// How long an unused connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most unused connections kept per serving thread.
const MAX_IDLE: usize = 64;
/// How long connecting to the app may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    sender: SendRequest<Outgoing>,
    since: Instant,
}

impl Pool {
    /// A pool of connections to `host:port`.
    pub fn new(address: &str) -> Pool {
        Pool(Arc::new(Inner {
            address: address.to_owned(),
            idle: Mutex::default(),
        }))
    }

    /// Sends `request` (its URI in origin form) on an idle connection or a new one, and returns
    /// the response head; the body streams from the connection.
    pub async fn send(&self, mut request: Request<Outgoing>) -> Result<Response<Reply>, Error> {
        loop {
            let (mut sender, reused) = match self.take() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let mut reply = Reply {
                        body,
                        give_back: Some((sender, self.clone())),
                    };
                    reply.release_if_done();
                    return Ok(Response::from_parts(parts, reply));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never sent: the app closed this idle connection meanwhile.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    /// The newest idle connection that is ready, dropping closed and expired ones.
    fn take(&self) -> Option<SendRequest<Outgoing>> {
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.is_empty() {
            return None;
        }
        let now = Instant::now();
        idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
        let ready = idle.iter().rposition(|c| c.sender.is_ready())?;
        Some(idle.swap_remove(ready).sender)
    }

    fn give_back(&self, sender: SendRequest<Outgoing>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Outgoing>, Error> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.0.address))
            .await
            .map_err(|_| "connecting to the app timed out")??;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
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

/// The body of the app's response. Its connection returns to the pool once the body has been
/// read to the end.
pub struct Reply {
    body: Incoming,
    give_back: Option<(SendRequest<Outgoing>, Pool)>,
}

impl Reply {
    fn release_if_done(&mut self) {
        if self.body.is_end_stream()
            && let Some((sender, pool)) = self.give_back.take()
        {
            pool.give_back(sender);
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some((sender, pool)) = this.give_back.take() {
                    pool.give_back(sender);
                }
            }
            Poll::Ready(Some(Ok(_))) => this.release_if_done(),
            // A broken response: its connection is not reused.
            Poll::Ready(Some(Err(_))) => this.give_back = None,
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

impl Drop for Reply {
    fn drop(&mut self) {
        // An empty body is never polled; one dropped unfinished closes its connection.
        self.release_if_done();
    }
}
