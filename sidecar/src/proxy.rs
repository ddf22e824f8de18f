//! The streaming reverse proxy to the app. Bodies flow through unbuffered in both directions, so
//! SSE responses and long-lived GET streams work, and a client that goes away drops the
//! upstream connection with it.

use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, StatusCode, Uri};

use crate::challenge::error_body;
use crate::forward::Rewrite;
pub use crate::pool::Outgoing;
use crate::pool::{self, Pool};

static X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// Why the upstream URL is unusable.
#[derive(Debug, thiserror::Error)]
#[error("--upstream must be an http://host:port URL without query: {0}")]
pub struct BadUpstream(String);

/// The app, and a serving thread's connections to it.
#[derive(Clone)]
pub struct Upstream {
    pool: Pool,
    authority: http::uri::Authority,
    base_path: String,
    authority_header: HeaderValue,
}

impl Upstream {
    /// Parses `--upstream` (`http://127.0.0.1:8080`, optionally with a path prefix).
    pub fn new(base: &str) -> Result<Self, BadUpstream> {
        let uri: Uri = base
            .parse()
            .map_err(|e: http::uri::InvalidUri| BadUpstream(e.to_string()))?;
        if uri.scheme() != Some(&Scheme::HTTP) || uri.query().is_some() {
            return Err(BadUpstream(base.to_owned()));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| BadUpstream(base.to_owned()))?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let authority_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| BadUpstream(e.to_string()))?;
        Ok(Upstream {
            pool: Pool::new(&address),
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            authority_header,
        })
    }

    /// The request target on the app, in origin form (`/base/path?query`).
    fn target(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = original.path_and_query();
        if self.base_path.is_empty() {
            // The client's own target, shared rather than copied.
            return Ok(Uri::from(
                path_and_query
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            ));
        }
        let path_and_query = path_and_query.map_or("/", PathAndQuery::as_str);
        let pq: PathAndQuery = format!("{}{}", self.base_path, path_and_query).parse()?;
        Ok(Uri::from(pq))
    }

    /// Sends the request to the app with the header fields `fields` gives (plus `Host` and
    /// `X-Forwarded-Host`) and streams the answer back. Connection failures become a clean 502;
    /// the app's own statuses pass through. The request head is written before the future is
    /// returned.
    // The error is the response the client gets, as large as any other.
    #[allow(clippy::result_large_err)]
    pub fn forward<'u>(
        &'u self,
        mut request: Request<Outgoing>,
        mut fields: Rewrite<'u>,
    ) -> impl Future<Output = Result<http::Response<pool::Reply>, Response>> + use<'u> {
        if let Some(host) = fields.take_client_host() {
            fields.set(&X_FORWARDED_HOST, host);
        }
        fields.set_host(&self.authority_header);
        let target = match self.target(request.uri()) {
            Ok(target) => target,
            Err(_) => {
                let response = error_body(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "bad request target",
                );
                return Either::Right(std::future::ready(Err(response)));
            }
        };
        *request.uri_mut() = target;
        // A combinator rather than an async block, which would hold the exchange twice.
        // The response comes without hop-by-hop fields: the pool leaves them out.
        Either::Left(self.pool.send(request, &fields).map(move |sent| {
            sent.map_err(|e| {
                tracing::warn!(error = %e, upstream = %self.authority, "upstream request failed");
                error_body(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the MCP server is not reachable",
                )
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_targets_and_rejects_bad_bases() {
        let u = Upstream::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.target(&"/mcp?x=1".parse().unwrap()).unwrap(), "/mcp?x=1");
        let u = Upstream::new("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(u.target(&"/mcp".parse().unwrap()).unwrap(), "/base/mcp");
        assert!(Upstream::new("https://x:1").is_err());
        assert!(Upstream::new("http://x:1/?q").is_err());
        assert!(Upstream::new("not a url").is_err());
    }
}
