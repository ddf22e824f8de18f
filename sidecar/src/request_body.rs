//! A request's body as the client sends it: read by the sidecar's own HTTP/1.1 server, or by
//! hyper's HTTP/2 server.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::http1;

/// The body of a request from a client.
pub enum RequestBody {
    /// From an HTTP/1.1 connection.
    Http1(http1::body::Body),
    /// From an HTTP/2 stream.
    Http2(Incoming),
}

/// Why a client's request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// On an HTTP/1.1 connection.
    #[error(transparent)]
    Http1(#[from] http1::body::BodyError),
    /// On an HTTP/2 stream.
    #[error(transparent)]
    Http2(#[from] hyper::Error),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReadError>>> {
        match self.get_mut() {
            RequestBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(body) => body.is_end_stream(),
            RequestBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http1(body) => body.size_hint(),
            RequestBody::Http2(body) => body.size_hint(),
        }
    }
}
