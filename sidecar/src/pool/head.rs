//! HTTP/1.1 message heads on the connection to the app: the request head written, and the
//! response head read, with how the response body is framed (RFC 9112 §6).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, request};

use crate::forward::{Rewrite, is_hop_by_hop, strip_hop_by_hop};
use crate::head_fields;
use crate::header_maps;

/// Most header fields in a response head from the app.
const MAX_HEADERS: usize = 128;
/// Largest response head from the app.
pub const MAX_HEAD: usize = 64 * 1024;

/// Why a response head from the app is unusable.
#[derive(Debug, thiserror::Error)]
pub enum BadHead {
    /// Not HTTP/1.x, or malformed.
    #[error("malformed response head from the app: {0}")]
    Malformed(#[from] httparse::Error),
    /// Larger than [`MAX_HEAD`].
    #[error("the app's response head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    /// A status the proxy does not pass on.
    #[error("the app answered with status {0}, which the proxy does not pass on")]
    Status(u16),
    /// A header the `http` types refuse.
    #[error("the app's response has an invalid header field")]
    Header,
    /// `Content-Length` values that are not one number.
    #[error("the app's response has an invalid Content-Length")]
    ContentLength,
}

/// How a request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sending {
    /// Exactly this many bytes (`Content-Length`, or nothing for an empty body of a method
    /// without one).
    Length(u64),
    /// In chunks, length unknown.
    Chunked,
}

/// Appends the head of a request to `out`: request line, the header fields `fields` gives except
/// those that frame the body (the sidecar sets its own: `exact` is the body's length when known)
/// and `Expect` (the body is sent without waiting for the app).
pub fn write_request(
    parts: &request::Parts,
    fields: &Rewrite<'_>,
    exact: Option<u64>,
    out: &mut Vec<u8>,
) -> Sending {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields.for_each_field(&parts.headers, |name, value| {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            return;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    let sending = match exact {
        Some(0) if !method_has_body(&parts.method) => Sending::Length(0),
        Some(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
            Sending::Length(length)
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Sending::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    sending
}

/// Methods whose requests normally carry a body: an empty one is sent as `Content-Length: 0`.
fn method_has_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// How a response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a response to HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the app closes the connection.
    UntilClose,
}

/// A response head from the app.
#[derive(Debug)]
pub struct ResponseHead {
    /// The final status (interim responses are skipped).
    pub status: StatusCode,
    /// The header fields, as sent, less hop-by-hop ones (those `Connection` names included).
    pub headers: HeaderMap,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request once this response is read.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`: `None` while it is incomplete; once complete,
/// its bytes are taken from `buf` (what follows is the body). Interim (1xx) responses are
/// skipped.
pub fn read_response(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, BadHead> {
    loop {
        // Where each field's name and value lie in the head (it is at most MAX_HEAD bytes), so
        // the values can share the head's bytes once they are frozen.
        let mut spans = [[0u32; 4]; MAX_HEADERS];
        let (length, code, http11, count) = {
            let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buf,
                &mut fields,
            )?;
            let length = match parsed {
                httparse::Status::Partial if buf.len() >= MAX_HEAD => {
                    return Err(BadHead::TooLarge);
                }
                httparse::Status::Partial => return Ok(None),
                httparse::Status::Complete(length) => length,
            };
            let count = head_fields::record(&mut spans, buf, response.headers);
            let code = response.code.unwrap_or_default();
            (length, code, response.version == Some(1), count)
        };
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(BadHead::Status(code));
            }
            let _ = buf.split_to(length);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| BadHead::Status(code))?;
        let bytes: Bytes = buf.split_to(length).freeze();
        let mut headers = header_maps::take(count);
        let mut facts = Facts::default();
        let mut names_fields = false;
        for (name, value) in head_fields::fields(&spans[..count], &bytes) {
            let name = field_name(name)?;
            let value = HeaderValue::from_maybe_shared(value).map_err(|_| BadHead::Header)?;
            if facts.note(&name, &value)? {
                names_fields |= name == header::CONNECTION;
                headers.append(name, value);
            }
        }
        if names_fields {
            // What `Connection` names goes too, with it.
            strip_hop_by_hop(&mut headers);
        }
        let framing = facts.framing(status, method);
        let keep_alive = http11
            && !(facts.chunked.is_some() && facts.length.is_some())
            && framing != Framing::UntilClose
            && !facts.close;
        return Ok(Some(ResponseHead {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// `Mcp-Session-Id`, which MCP apps send on most responses (made once, not per response).
static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// The name of a response field. The names apps send on most responses, as they usually spell
/// them, are known without parsing (and a custom one without an allocation).
fn field_name(raw: &[u8]) -> Result<HeaderName, BadHead> {
    Ok(match raw {
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Date" | b"date" => header::DATE,
        b"Server" | b"server" => header::SERVER,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Vary" | b"vary" => header::VARY,
        b"Mcp-Session-Id" | b"mcp-session-id" => MCP_SESSION_ID.clone(),
        _ => HeaderName::from_bytes(raw).map_err(|_| BadHead::Header)?,
    })
}

/// What a response head's fields say about its body and its connection.
#[derive(Default)]
struct Facts {
    /// `Content-Length`, every value the same number.
    length: Option<u64>,
    /// `Transfer-Encoding`: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// `Connection: close`.
    close: bool,
}

impl Facts {
    /// Notes what a field says, and whether it is passed on: hop-by-hop fields stay here, but a
    /// `Connection` naming other fields is kept for the proxy to remove those too.
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<bool, BadHead> {
        // Each field's usual value first: one number, one coding, one token (no list to split).
        if name == header::CONTENT_LENGTH {
            let text = value.to_str().map_err(|_| BadHead::ContentLength)?;
            if text.bytes().all(|b| b.is_ascii_digit()) {
                self.note_length(text)?;
            } else {
                for part in text.split(',').map(str::trim) {
                    self.note_length(part)?;
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            let chunked = value.as_bytes().eq_ignore_ascii_case(b"chunked") || {
                let last = value.to_str().ok().and_then(|v| v.rsplit(',').next());
                last.is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            };
            self.chunked = Some(chunked);
        } else if name == header::CONNECTION {
            let bytes = value.as_bytes();
            if bytes.eq_ignore_ascii_case(b"keep-alive") {
                return Ok(false);
            }
            if bytes.eq_ignore_ascii_case(b"close") {
                self.close = true;
                return Ok(false);
            }
            let Ok(text) = value.to_str() else {
                return Ok(true);
            };
            let mut names_fields = false;
            for token in text.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    self.close = true;
                } else if !token.eq_ignore_ascii_case("keep-alive") {
                    names_fields = true;
                }
            }
            return Ok(names_fields);
        }
        Ok(!is_hop_by_hop(name))
    }

    /// Notes one value of `Content-Length`: digits only, and the same number as any other.
    fn note_length(&mut self, part: &str) -> Result<(), BadHead> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadHead::ContentLength);
        }
        let n: u64 = part.parse().map_err(|_| BadHead::ContentLength)?;
        if self.length.is_some_and(|l| l != n) {
            return Err(BadHead::ContentLength);
        }
        self.length = Some(n);
        Ok(())
    }

    /// The framing of the body (RFC 9112 §6.3): `Transfer-Encoding` over `Content-Length`.
    fn framing(&self, status: StatusCode, method: &Method) -> Framing {
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Empty;
        }
        match (self.chunked, self.length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &str, method: &Method) -> Result<Option<ResponseHead>, BadHead> {
        read_response(&mut BytesMut::from(wire.as_bytes()), method)
    }

    fn framing_of(wire: &str) -> Framing {
        parse(wire, &Method::GET).unwrap().unwrap().framing
    }

    #[test]
    fn writes_request_heads_with_its_own_framing() {
        let request = http::Request::post("/mcp?x=1")
            .header("host", "app:8080")
            .header("content-length", "999")
            .header("transfer-encoding", "chunked")
            .header("expect", "100-continue")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        assert_eq!(
            write_request(&parts, &Rewrite::default(), Some(5), &mut out),
            Sending::Length(5)
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /mcp?x=1 HTTP/1.1\r\nhost: app:8080\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
        );
        let mut out = Vec::new();
        assert_eq!(
            write_request(&parts, &Rewrite::default(), None, &mut out),
            Sending::Chunked
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("transfer-encoding: chunked\r\n\r\n")
        );
        let (get, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut out = Vec::new();
        assert_eq!(
            write_request(&get, &Rewrite::default(), Some(0), &mut out),
            Sending::Length(0)
        );
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn reads_heads_and_their_framing() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"[..],
        );
        let head = read_response(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(
            head.headers.get_all("x-a").iter().collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(&buf[..], b"hello");

        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Framing::UntilClose
        );
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 304 Not Modified\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n"),
            Framing::Length(7)
        );
        let head = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn decides_which_connections_are_reused() {
        let keep = |wire: &str| parse(wire, &Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        ));
        // A lone token, any case.
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(keep(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn leaves_hop_by_hop_fields_out() {
        let head = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nTrailer: x\r\nX-A: 1\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(head.headers.keys().collect::<Vec<_>>(), ["x-a"]);
        // A field that `Connection` names goes too.
        let head = parse(
            "HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!head.keep_alive);
        assert_eq!(head.headers.keys().collect::<Vec<_>>(), ["content-length"]);
    }

    #[test]
    fn knows_the_usual_names_as_parsing_would() {
        for raw in [
            "Content-Type",
            "content-length",
            "Date",
            "server",
            "Connection",
            "Transfer-Encoding",
            "cache-control",
            "Vary",
            "Mcp-Session-Id",
            "mcp-session-id",
            "X-Other",
        ] {
            let parsed = HeaderName::from_bytes(raw.as_bytes()).unwrap();
            assert_eq!(field_name(raw.as_bytes()).unwrap(), parsed, "{raw}");
        }
        assert!(field_name(b"Bad Name").is_err());
    }

    #[test]
    fn skips_interim_responses() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..]);
        let head = read_response(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_the_rest_of_a_head_within_a_limit() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
                .unwrap()
                .is_none()
        );
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&big, &Method::GET), Err(BadHead::TooLarge)));
    }

    #[test]
    fn refuses_bad_heads() {
        for wire in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(parse(wire, &Method::GET).is_err(), "{wire:?}");
        }
    }
}
