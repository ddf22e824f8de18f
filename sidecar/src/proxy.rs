//! The streaming reverse proxy to the app. Bodies flow through unbuffered in both directions, so
//! SSE responses and long-lived GET streams work, and a client that goes away drops the
//! upstream connection with it.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::challenge::error_body;
use crate::forward::strip_hop_by_hop;

const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// Why the upstream URL is unusable.
#[derive(Debug, thiserror::Error)]
#[error("--upstream must be an http://host:port URL without query: {0}")]
pub struct BadUpstream(String);

/// A request body on its way to the app: as the client sent it, or rebuilt after the sidecar
/// read it.
pub type Outgoing = Either<Incoming, Body>;

/// A connection pool to the app.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Outgoing>,
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        let authority_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| BadUpstream(e.to_string()))?;
        Ok(Upstream {
            client,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            authority_header,
        })
    }

    fn target(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = original.path_and_query().map_or("/", PathAndQuery::as_str);
        let pq: PathAndQuery = if self.base_path.is_empty() {
            PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(
                path_and_query.as_bytes(),
            ))?
        } else {
            format!("{}{}", self.base_path, path_and_query).parse()?
        };
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }

    /// Sends the (already sanitised) request to the app and streams the answer back.
    /// Connection failures become a clean 502; the app's own statuses pass through.
    pub async fn forward(
        &self,
        mut request: Request<Outgoing>,
    ) -> Result<http::Response<Incoming>, Response> {
        let original_host = request.headers().get(header::HOST).cloned();
        *request.uri_mut() = self.target(request.uri()).map_err(|_| {
            error_body(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "bad request target",
            )
        })?;
        *request.version_mut() = http::Version::HTTP_11;
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.authority_header.clone());
        if let Some(host) = original_host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        match self.client.request(request).await {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Err(e) => {
                tracing::warn!(error = %e, upstream = %self.authority, "upstream request failed");
                Err(error_body(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the MCP server is not reachable",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_targets_and_rejects_bad_bases() {
        let u = Upstream::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            u.target(&"/mcp?x=1".parse().unwrap()).unwrap(),
            "http://127.0.0.1:8080/mcp?x=1"
        );
        let u = Upstream::new("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(
            u.target(&"/mcp".parse().unwrap()).unwrap(),
            "http://127.0.0.1:8080/base/mcp"
        );
        assert!(Upstream::new("https://x:1").is_err());
        assert!(Upstream::new("http://x:1/?q").is_err());
        assert!(Upstream::new("not a url").is_err());
    }
}
