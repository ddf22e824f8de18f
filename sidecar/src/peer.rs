//! The client's address, carried with each request as a request extension from the connection
//! that received it to the handlers that need it (`X-Forwarded-For`, the OAuth endpoints' rate
//! limits). A leaf module, so handlers need not know how connections are served.

use std::net::SocketAddr;

/// The client's address (the extension the public port puts on every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Peer {
    /// The address a request carries, if it came through the public port (in-process tests
    /// send requests without one).
    pub fn of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
        Self::in_extensions(request.extensions())
    }

    /// Like [`Peer::of`], from a request's extensions.
    pub fn in_extensions(extensions: &http::Extensions) -> Option<SocketAddr> {
        extensions.get::<Peer>().map(|peer| peer.0)
    }
}
