//! Request heads from HTTP/1.1 clients (RFC 9112), parsed with `httparse` into `http` request
//! parts. Anything that would let the sidecar and the app frame a request differently (request
//! smuggling) is refused: both `Content-Length` and `Transfer-Encoding`, disagreeing or signed
//! lengths, a transfer coding other than `chunked`, obsolete line folding, a missing or repeated
//! `Host` on HTTP/1.1.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version, request};

use crate::head_fields;
use crate::header_maps;

/// Most header fields in a request head; more get 431.
pub const MAX_HEADERS: usize = 100;

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and header fields.
    pub parts: request::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expects_continue: bool,
}

/// Why a request head is refused; the connection answers [`Refused::status`] and closes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Not a valid HTTP/1.x request head.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// Longer than the header limit, or with too many fields.
    #[error("request head too large")]
    TooLarge,
    /// A transfer coding other than `chunked`.
    #[error("unsupported transfer coding")]
    Coding,
}

impl Refused {
    /// The status answering the request.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Malformed(_) => StatusCode::BAD_REQUEST,
            Refused::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refused::Coding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl From<httparse::Error> for Refused {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => Refused::TooLarge,
            httparse::Error::HeaderName => Refused::Malformed("invalid header name"),
            httparse::Error::HeaderValue => Refused::Malformed("invalid header value"),
            httparse::Error::NewLine => Refused::Malformed("invalid line ending"),
            httparse::Error::Token => Refused::Malformed("invalid method or target"),
            httparse::Error::Version => Refused::Malformed("invalid version"),
            _ => Refused::Malformed("invalid request line"),
        }
    }
}

/// Parses a request head at the start of `buf`, at most `max_bytes` long: `None` while it is
/// incomplete; once complete its bytes are taken from `buf` (what follows is the body, or the
/// next request). The field values share the head's bytes.
pub fn read_request(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<RequestHead>, Refused> {
    // Where the target and each field lie in the head, so they can share its bytes once frozen.
    let mut spans = [[0u32; 4]; MAX_HEADERS];
    let (length, method, target, http11, count) = {
        let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut fields,
        )?;
        let length = match parsed {
            httparse::Status::Partial if buf.len() > max_bytes => return Err(Refused::TooLarge),
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(length) if length > max_bytes => {
                return Err(Refused::TooLarge);
            }
            httparse::Status::Complete(length) => length,
        };
        // The head is at most `max_bytes` (a u32 on any configuration the CLI accepts).
        let count = head_fields::record(&mut spans, buf, request.headers);
        let method = request.method.unwrap_or_default();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Refused::Malformed("invalid method"))?;
        let target = request.path.unwrap_or_default().as_bytes();
        let target = (head_fields::offset(buf, target), target.len() as u32);
        (length, method, target, request.version == Some(1), count)
    };
    let head = buf.split_to(length).freeze();
    let target = head.slice(target.0 as usize..(target.0 + target.1) as usize);
    let uri =
        Uri::from_maybe_shared(target).map_err(|_| Refused::Malformed("invalid request target"))?;
    let mut headers = header_maps::take(count);
    let mut facts = Facts::default();
    for (name, value) in head_fields::fields(&spans[..count], &head) {
        let name =
            HeaderName::from_bytes(name).map_err(|_| Refused::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| Refused::Malformed("invalid header value"))?;
        facts.note(&name, &value)?;
        headers.append(name, value);
    }
    let version = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    if http11 && facts.hosts != 1 {
        return Err(Refused::Malformed(
            "an HTTP/1.1 request needs one Host field",
        ));
    }
    let framing = facts.framing(http11)?;
    let keep_alive = !facts.close && (http11 || facts.keep_alive);
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        // HTTP/1.0 clients are never sent `100 Continue` (RFC 9110 §10.1.1).
        expects_continue: http11 && facts.expects_continue && framing != Framing::Empty,
    }))
}

/// What a request head's fields say about its body and its connection.
#[derive(Default)]
struct Facts {
    /// `Content-Length`, every field the same number.
    length: Option<u64>,
    /// `Transfer-Encoding` fields seen, and whether they name `chunked` alone.
    coding: Option<bool>,
    /// `Host` fields seen.
    hosts: u8,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive` (HTTP/1.0).
    keep_alive: bool,
    /// `Expect: 100-continue`.
    expects_continue: bool,
}

impl Facts {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Refused> {
        match *name {
            header::CONTENT_LENGTH => {
                let length = content_length(value.as_bytes())?;
                if self.length.is_some_and(|seen| seen != length) {
                    return Err(Refused::Malformed("Content-Length fields disagree"));
                }
                self.length = Some(length);
            }
            header::TRANSFER_ENCODING => {
                // Only `chunked`, once: a list or a second field names another coding too.
                let chunked = self.coding.is_none()
                    && value
                        .as_bytes()
                        .trim_ascii()
                        .eq_ignore_ascii_case(b"chunked");
                self.coding = Some(chunked);
            }
            header::HOST => self.hosts = self.hosts.saturating_add(1),
            header::CONNECTION => {
                for token in value.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            header::EXPECT => {
                self.expects_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        Ok(())
    }

    fn framing(&self, http11: bool) -> Result<Framing, Refused> {
        match (self.coding, self.length) {
            (Some(_), Some(_)) => Err(Refused::Malformed(
                "both Content-Length and Transfer-Encoding",
            )),
            (Some(_), None) if !http11 => Err(Refused::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            )),
            (Some(true), None) => Ok(Framing::Chunked),
            (Some(false), None) => Err(Refused::Coding),
            (None, Some(0) | None) => Ok(Framing::Empty),
            (None, Some(length)) => Ok(Framing::Length(length)),
        }
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no list), within 19 digits.
fn content_length(value: &[u8]) -> Result<u64, Refused> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Refused::Malformed("invalid Content-Length"));
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The bytes of a head, for tests.
#[cfg(test)]
fn head(text: &str) -> BytesMut {
    BytesMut::from(text.replace('\n', "\r\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 * 1024;

    fn parse(text: &str) -> Result<Option<RequestHead>, Refused> {
        read_request(&mut head(text), LIMIT)
    }

    #[test]
    fn a_complete_head_becomes_request_parts_and_leaves_the_body() {
        let mut buf =
            head("POST /mcp?x=1 HTTP/1.1\nHost: a\nContent-Length: 5\nX-A: 1\nX-A: 2\n\nhello");
        let head = read_request(&mut buf, LIMIT).unwrap().unwrap();
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/mcp?x=1");
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_waits_for_more_within_the_limit() {
        assert_eq!(
            parse("GET / HTTP/1.1\nHost: a\n").unwrap().map(|_| ()),
            None
        );
        let mut long = head(&format!("GET /{} HTTP/1.1\nHost: a\n", "a".repeat(LIMIT)));
        assert_eq!(
            read_request(&mut long, LIMIT).unwrap_err(),
            Refused::TooLarge
        );
        let complete_but_long = format!("GET / HTTP/1.1\nHost: a\nX: {}\n\n", "a".repeat(LIMIT));
        assert_eq!(parse(&complete_but_long).unwrap_err(), Refused::TooLarge);
    }

    #[test]
    fn too_many_fields_are_too_large() {
        let fields: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\n")).collect();
        let text = format!("GET / HTTP/1.1\nHost: a\n{fields}\n");
        assert_eq!(parse(&text).unwrap_err(), Refused::TooLarge);
        assert_eq!(parse(&text).unwrap_err().status(), 431);
    }

    #[test]
    fn framing_that_could_be_read_two_ways_is_refused() {
        for (text, expected) in [
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n",
                400,
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 4\n\n",
                400,
            ),
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 6\n\n",
                400,
            ),
            ("POST / HTTP/1.1\nHost: a\nContent-Length: +5\n\n", 400),
            ("POST / HTTP/1.1\nHost: a\nContent-Length: 5, 5\n\n", 400),
            ("POST / HTTP/1.1\nHost: a\nContent-Length: \n\n", 400),
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: 99999999999999999999\n\n",
                400,
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: xchunked\n\n",
                501,
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, identity\n\n",
                501,
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n",
                501,
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n",
                501,
            ),
            ("POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n", 400),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding : chunked\n\n",
                400,
            ),
            ("GET / HTTP/1.1\nHost: a\nX-Long: one\n\ttwo\n\n", 400),
            ("GET / HTTP/1.1\nHost: a\nX-Nul: a\0b\n\n", 400),
            ("GET / HTTP/1.1\nHost: a\nX Bad: v\n\n", 400),
            ("GET / HTTP/1.1\n\n", 400),
            ("GET / HTTP/1.1\nHost: a\nHost: b\n\n", 400),
            ("GET / HTTP/2.0\nHost: a\n\n", 400),
            ("G@T / HTTP/1.1\nHost: a\n\n", 400),
        ] {
            let refused = parse(text).expect_err(text);
            assert_eq!(refused.status(), expected, "{text:?}: {refused}");
        }
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunks() {
        let framing = |text| parse(text).unwrap().unwrap().framing;
        assert_eq!(framing("GET / HTTP/1.1\nHost: a\n\n"), Framing::Empty);
        assert_eq!(
            framing("POST / HTTP/1.1\nHost: a\nContent-Length: 0\n\n"),
            Framing::Empty
        );
        assert_eq!(
            framing("POST / HTTP/1.1\nHost: a\nContent-Length: 7\ncontent-length: 7\n\n"),
            Framing::Length(7)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: Chunked \n\n"),
            Framing::Chunked
        );
    }

    #[test]
    fn connection_and_expect_fields_are_read() {
        let head = |text| parse(text).unwrap().unwrap();
        assert!(!head("GET / HTTP/1.1\nHost: a\nConnection: foo, Close\n\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\n\n").keep_alive);
        assert!(head("GET / HTTP/1.0\nConnection: keep-alive\n\n").keep_alive);
        assert!(
            head("POST / HTTP/1.1\nHost: a\nExpect: 100-Continue\nContent-Length: 3\n\n")
                .expects_continue
        );
        assert!(!head("GET / HTTP/1.1\nHost: a\nExpect: 100-continue\n\n").expects_continue);
        assert!(
            !head("POST / HTTP/1.0\nExpect: 100-continue\nContent-Length: 3\n\n").expects_continue
        );
    }

    #[test]
    fn absolute_form_and_asterisk_targets_parse() {
        let head = |text| parse(text).unwrap().unwrap();
        assert_eq!(
            head("GET http://a/mcp HTTP/1.1\nHost: a\n\n")
                .parts
                .uri
                .path(),
            "/mcp"
        );
        assert_eq!(head("OPTIONS * HTTP/1.1\nHost: a\n\n").parts.uri, "*");
    }
}
