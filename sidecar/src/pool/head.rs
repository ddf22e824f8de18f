//! HTTP/1.1 message heads on the connection to the app: the request head written, and the
//! response head read, with how the response body is framed (RFC 9112 §6).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header;
use http::{Method, StatusCode, request};

use crate::forward::Rewrite;
use crate::head_fields::{self, AppFields};

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
    pub fields: AppFields,
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
        let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        )?;
        let length = match parsed {
            httparse::Status::Partial if buf.len() >= MAX_HEAD => return Err(BadHead::TooLarge),
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(length) => length,
        };
        let code = response.code.unwrap_or_default();
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(BadHead::Status(code));
            }
            let _ = buf.split_to(length);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| BadHead::Status(code))?;
        let http11 = response.version == Some(1);
        let (mut kept, facts) = passed_on(buf, response.headers)?;
        let framing = facts.framing(status, method);
        let keep_alive = http11
            && !(facts.chunked.is_some() && facts.length.is_some())
            && framing != Framing::UntilClose
            && !facts.close;
        // The head is at most MAX_HEAD bytes: its spans fit.
        kept.set_head(buf.split_to(length).freeze());
        return Ok(Some(ResponseHead {
            status,
            fields: kept,
            framing,
            keep_alive,
        }));
    }
}

/// Where the fields passed on lie in `buf` (the head they were parsed from), and what all of
/// `fields` say about the body and the connection.
fn passed_on(buf: &[u8], fields: &[httparse::Header<'_>]) -> Result<(AppFields, Facts), BadHead> {
    let mut kept = AppFields::default();
    let mut facts = Facts::default();
    let mut names_fields = false;
    // At most one `Content-Length` goes on: the first, when it is written as one number. A
    // repeat or a list of the same number is left out, so a client never sees two lengths; the
    // client's connection writes the length itself when the body has one.
    let mut length_seen = false;
    for field in fields {
        let kind = Kind::of(field.name.as_bytes());
        match facts.note(kind, field.value)? {
            Pass::On if kind == Kind::ContentLength => {
                if !length_seen && head_fields::number(field.value).is_some() {
                    kept.push(head_fields::span(buf, field));
                }
                length_seen = true;
            }
            Pass::On => kept.push(head_fields::span(buf, field)),
            Pass::NotOn => {}
            Pass::NotOnNamesFields => names_fields = true,
        }
    }
    if names_fields {
        drop_named(&mut kept, fields, buf);
    }
    // A length beside a transfer coding is not the body's (RFC 9112 §6.1, §6.3).
    if length_seen && facts.chunked.is_some() {
        kept.retain_spans(|span| Kind::of(head_fields::field(span, buf).0) != Kind::ContentLength);
    }
    Ok((kept, facts))
}

/// Leaves out of `kept` (spans in `head`) the fields that the `Connection` fields among
/// `fields` name: they are hop-by-hop too.
fn drop_named(kept: &mut AppFields, fields: &[httparse::Header<'_>], head: &[u8]) {
    let named: Vec<&[u8]> = fields
        .iter()
        .filter(|field| Kind::of(field.name.as_bytes()) == Kind::Connection)
        .flat_map(|field| field.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    kept.retain_spans(|span| {
        let (name, _) = head_fields::field(span, head);
        !named.iter().any(|n| n.eq_ignore_ascii_case(name))
    });
}

/// The fields of a response head the proxy reads or leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Another hop-by-hop field (RFC 9110 §7.6.1): not passed on.
    HopByHop,
    /// An end-to-end field, passed on as it is.
    Other,
}

impl Kind {
    /// The kind of a field named `name` (any case), told by its length first.
    fn of(name: &[u8]) -> Kind {
        // `known` is lowercase letters and `-`: OR-ing 0x20 into a byte of a field name (a
        // token) folds its case and makes no other token character equal to one of them.
        let is = |known: &str| {
            let known = known.as_bytes();
            name.len() == known.len() && name.iter().zip(known).all(|(&a, &b)| a | 0x20 == b)
        };
        match name.len() {
            14 if is("content-length") => Kind::ContentLength,
            17 if is("transfer-encoding") => Kind::TransferEncoding,
            10 if is("connection") => Kind::Connection,
            10 if is("keep-alive") => Kind::HopByHop,
            2 if is("te") => Kind::HopByHop,
            7 if is("trailer") || is("upgrade") => Kind::HopByHop,
            18 if is("proxy-authenticate") => Kind::HopByHop,
            19 if is("proxy-authorization") => Kind::HopByHop,
            _ => Kind::Other,
        }
    }
}

/// Whether a field is passed on.
enum Pass {
    On,
    NotOn,
    /// A `Connection` field naming other fields, which are not passed on either.
    NotOnNamesFields,
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

/// `value` as text, if it is visible ASCII (with spaces and tabs) only.
fn ascii_text(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

impl Facts {
    /// Notes what a field says, and whether it is passed on: hop-by-hop fields stay here.
    fn note(&mut self, kind: Kind, value: &[u8]) -> Result<Pass, BadHead> {
        // Each field's usual value first: one number, one coding, one token (no list to split).
        match kind {
            Kind::Other => Ok(Pass::On),
            Kind::HopByHop => Ok(Pass::NotOn),
            Kind::ContentLength => {
                if head_fields::number(value).is_some() {
                    self.note_length(value)?;
                } else {
                    for part in value.split(|&b| b == b',') {
                        self.note_length(part.trim_ascii())?;
                    }
                }
                Ok(Pass::On)
            }
            Kind::TransferEncoding => {
                let chunked = value.eq_ignore_ascii_case(b"chunked") || {
                    let last = ascii_text(value).and_then(|v| v.rsplit(',').next());
                    last.is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
                };
                self.chunked = Some(chunked);
                Ok(Pass::NotOn)
            }
            Kind::Connection => Ok(self.note_connection(value)),
        }
    }

    /// Notes a `Connection` field: `close`, and whether it names other fields.
    fn note_connection(&mut self, value: &[u8]) -> Pass {
        if value.eq_ignore_ascii_case(b"keep-alive") {
            return Pass::NotOn;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return Pass::NotOn;
        }
        let Some(text) = ascii_text(value) else {
            return Pass::NotOn;
        };
        let mut names_fields = false;
        for token in text.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if !token.eq_ignore_ascii_case("keep-alive") {
                names_fields = true;
            }
        }
        if names_fields {
            Pass::NotOnNamesFields
        } else {
            Pass::NotOn
        }
    }

    /// Notes one value of `Content-Length`: digits only, and the same number as any other.
    fn note_length(&mut self, part: &[u8]) -> Result<(), BadHead> {
        let n = head_fields::number(part).ok_or(BadHead::ContentLength)?;
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

    /// The fields passed on, as `name: value` lines.
    fn fields_of(head: &ResponseHead) -> Vec<String> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let line = |(n, v)| format!("{}: {}", text(n), text(v));
        head.fields.iter().map(line).collect()
    }

    fn framing_of(wire: &str) -> Framing {
        parse(wire, &Method::GET).unwrap().unwrap().framing
    }

    #[test]
    fn passes_on_one_length_and_only_when_it_frames_the_body() {
        let fields = |wire: &str| fields_of(&parse(wire, &Method::GET).unwrap().unwrap());
        assert_eq!(
            fields("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"),
            ["Content-Length: 5", "X-A: 1"]
        );
        // Repeated or listed, the same number frames the body; it is passed on once.
        assert_eq!(
            fields("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\ncontent-length: 5\r\n\r\n"),
            ["Content-Length: 5", "X-A: 1"]
        );
        assert_eq!(
            fields("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nX-A: 1\r\n\r\n"),
            ["X-A: 1"]
        );
        // Beside a transfer coding the length is not the body's.
        let chunked = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(fields(chunked), Vec::<String>::new());
        assert_eq!(framing_of(chunked), Framing::Chunked);
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
        assert_eq!(fields_of(&head), ["Content-Length: 5", "X-A: 1", "x-a: 2"]);
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
        assert_eq!(fields_of(&head), ["X-A: 1"]);
        // A field that `Connection` names goes too.
        let head = parse(
            "HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!head.keep_alive);
        assert_eq!(fields_of(&head), ["Content-Length: 0"]);
    }

    #[test]
    fn tells_the_fields_it_reads_in_any_case() {
        for (raw, kind) in [
            ("Content-Length", Kind::ContentLength),
            ("CONTENT-LENGTH", Kind::ContentLength),
            ("transfer-Encoding", Kind::TransferEncoding),
            ("Connection", Kind::Connection),
            ("Keep-Alive", Kind::HopByHop),
            ("TE", Kind::HopByHop),
            ("Trailer", Kind::HopByHop),
            ("upgrade", Kind::HopByHop),
            ("Proxy-Authenticate", Kind::HopByHop),
            ("Proxy-Authorization", Kind::HopByHop),
            ("Content-Type", Kind::Other),
            ("Connectionx", Kind::Other),
            ("X-Other", Kind::Other),
        ] {
            assert_eq!(Kind::of(raw.as_bytes()), kind, "{raw}");
        }
    }

    #[test]
    fn passes_fields_on_as_the_app_sent_them() {
        // Order, case and repeated fields as sent; a value with obs-text bytes unchanged;
        // hop-by-hop fields (any case) and those `Connection` names (any case) left out.
        let wire = b"HTTP/1.1 200 OK\r\nX-B: 2\r\nconnection: X-Gone, keep-alive\r\nMcp-Session-Id: s\r\nx-b: 3\r\nKEEP-ALIVE: timeout=5\r\nX-Text: caf\xc3\xa9 \xff\r\nx-gone: 1\r\nX-GONE: 2\r\nte: trailers\r\nContent-Length: 0\r\n\r\n";
        let mut buf = BytesMut::from(&wire[..]);
        let head = read_response(&mut buf, &Method::GET).unwrap().unwrap();
        let passed: Vec<(&[u8], &[u8])> = head.fields.iter().collect();
        assert_eq!(
            passed,
            [
                (&b"X-B"[..], &b"2"[..]),
                (b"Mcp-Session-Id", b"s"),
                (b"x-b", b"3"),
                (b"X-Text", b"caf\xc3\xa9 \xff"),
                (b"Content-Length", b"0"),
            ]
        );
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
