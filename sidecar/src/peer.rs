//! The client's address, handed with each request from the connection that received it to the
//! handler (`X-Forwarded-For`), which puts it on the requests of the OAuth endpoints as a request
//! extension (their rate limits). A leaf module, so handlers need not know how connections are
//! served.

use std::net::SocketAddr;

use http::HeaderValue;

/// The client's address (on the OAuth endpoints' requests, a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    addr: SocketAddr,
    /// The address as `X-Forwarded-For` gives it, formatted once per connection.
    forwarded_for: HeaderValue,
}

impl Peer {
    /// The peer of a connection.
    pub fn new(addr: SocketAddr) -> Peer {
        // IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`; the app sees `a.b.c.d`.
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            addr,
            forwarded_for: HeaderValue::from_str(&ip).expect("an IP address is a header value"),
        }
    }

    /// The address a request carries, if it came through the public port (in-process tests
    /// send requests without one).
    pub fn of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
        Self::in_extensions(request.extensions())
    }

    /// Like [`Peer::of`], from a request's extensions.
    pub fn in_extensions(extensions: &http::Extensions) -> Option<SocketAddr> {
        extensions.get::<Peer>().map(|peer| peer.addr)
    }

    /// The client's IP address as `X-Forwarded-For` gives it.
    pub fn forwarded_for(&self) -> &HeaderValue {
        &self.forwarded_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_the_canonical_ip() {
        for (addr, ip) in [
            ("192.0.2.7:1234", "192.0.2.7"),
            ("[::ffff:192.0.2.7]:1234", "192.0.2.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
        ] {
            assert_eq!(Peer::new(addr.parse().unwrap()).forwarded_for(), ip);
        }
    }
}
