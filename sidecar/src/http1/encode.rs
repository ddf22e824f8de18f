//! Response heads to HTTP/1.1 clients: the status line, the fields, a `Date` when the response
//! has none, and the framing of the body (RFC 9112 §6). The app's fields ([`AppFields`]) go out
//! as the app sent them, before those of the response's header map.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use hyper::body::SizeHint;

use crate::head_fields::{self, AppFields};

/// How a response's body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// Not at all (HEAD, 1xx, 204, 304).
    Nothing,
    /// This many bytes, as `Content-Length` says.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// What the connection decided about a response.
pub struct Decided {
    /// How the body goes out.
    pub out: Out,
    /// Whether the connection carries another request afterwards.
    pub keep_alive: bool,
}

/// Writes the head of a response to a request with `method` into `buf` (cleared first), and
/// decides how its body goes out. The fields are the app's (`app`: already without hop-by-hop
/// ones), then `headers`. `keep_alive` is what the client and the sidecar allow;
/// the response can still end the connection (`Connection: close`, or a body framed by closing).
#[allow(clippy::too_many_arguments)]
pub fn response_head(
    buf: &mut Vec<u8>,
    method: &Method,
    status: StatusCode,
    app: Option<&AppFields>,
    headers: &HeaderMap,
    body: &SizeHint,
    http11_client: bool,
    mut keep_alive: bool,
) -> Decided {
    buf.clear();
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let mut length = None;
    if let Some(app) = app {
        length = app.last(&header::CONTENT_LENGTH).and_then(parse_length);
        has_date = app.contains(&header::DATE);
        app.write_lines(buf);
    }
    for (name, value) in headers {
        match *name {
            // Hop-by-hop framing is the sidecar's to set.
            header::TRANSFER_ENCODING => continue,
            _ if name.as_str() == "keep-alive" => continue,
            header::CONNECTION => {
                if value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    keep_alive = false;
                }
                continue;
            }
            header::CONTENT_LENGTH => length = parse_length(value.as_bytes()),
            header::DATE => has_date = true,
            _ => {}
        }
        field(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    if !has_date {
        with_date(|date| field(buf, b"date", date));
    }
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let out = if no_body {
        Out::Nothing
    } else if let Some(length) = length {
        Out::Length(length)
    } else if let Some(exact) = body.exact() {
        let mut digits = itoa::Buffer::new();
        field(buf, b"content-length", digits.format(exact).as_bytes());
        Out::Length(exact)
    } else if http11_client {
        field(buf, b"transfer-encoding", b"chunked");
        Out::Chunked
    } else {
        keep_alive = false;
        Out::UntilClose
    };
    if !keep_alive {
        field(buf, b"connection", b"close");
    } else if !http11_client {
        field(buf, b"connection", b"keep-alive");
    }
    buf.extend_from_slice(b"\r\n");
    Decided { out, keep_alive }
}

/// A `Content-Length` value that is one number (a leading `+` allowed, as Rust's parser does).
fn parse_length(value: &[u8]) -> Option<u64> {
    head_fields::number(value.strip_prefix(b"+").unwrap_or(value))
}

fn field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Calls `f` with the current time as an HTTP date, formatted at most once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        f(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn head(
        method: Method,
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: SizeHint,
        http11: bool,
    ) -> (String, Decided) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let mut buf = Vec::new();
        let decided = response_head(
            &mut buf,
            &method,
            StatusCode::from_u16(status).unwrap(),
            None,
            &map,
            &body,
            http11,
            true,
        );
        (String::from_utf8(buf).unwrap(), decided)
    }

    #[test]
    fn a_known_length_is_sent_and_a_date_added() {
        let (text, decided) = head(
            Method::GET,
            200,
            &[("x-a", "1")],
            SizeHint::with_exact(5),
            true,
        );
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 5\r\n\r\n"),
            "{text}"
        );
        assert_eq!(decided.out, Out::Length(5));
        assert!(decided.keep_alive);
    }

    #[test]
    fn an_unknown_length_is_chunked_or_ends_the_connection() {
        let (text, decided) = head(
            Method::GET,
            200,
            &[("date", "x")],
            SizeHint::default(),
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: x\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(decided.out, Out::Chunked);
        let (text, decided) = head(
            Method::GET,
            200,
            &[("date", "x")],
            SizeHint::default(),
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(decided.out, Out::UntilClose);
        assert!(!decided.keep_alive);
    }

    #[test]
    fn hop_by_hop_fields_are_the_sidecars() {
        let fields = [
            ("date", "x"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("connection", "upgrade, close"),
            ("content-length", "3"),
        ];
        let (text, decided) = head(Method::GET, 200, &fields, SizeHint::default(), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(decided.out, Out::Length(3));
        assert!(!decided.keep_alive);
    }

    /// The fields of a response head from the app, as the pool keeps them.
    fn app_fields(wire: &'static [u8]) -> AppFields {
        let mut parsed = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut parsed);
        assert!(response.parse(wire).unwrap().is_complete());
        let mut spans = [[0; 4]; 8];
        let count = crate::head_fields::record(&mut spans, wire, response.headers);
        AppFields::new(bytes::Bytes::from_static(wire), &spans[..count])
    }

    #[test]
    fn the_apps_fields_go_out_as_sent_then_the_sidecars() {
        let app = app_fields(
            b"HTTP/1.1 200 OK\r\nX-B: 1\r\nDate: x\r\nx-b: 2\r\nX-Text: caf\xc3\xa9\r\nContent-Length: 3\r\n\r\n",
        );
        let mut added = HeaderMap::new();
        added.insert("x-request-id", HeaderValue::from_static("r-1"));
        let mut buf = Vec::new();
        let decided = response_head(
            &mut buf,
            &Method::GET,
            StatusCode::OK,
            Some(&app),
            &added,
            &SizeHint::default(),
            true,
            true,
        );
        // The app's `Date` stands, and its `Content-Length` frames the body.
        assert_eq!(
            buf,
            b"HTTP/1.1 200 OK\r\nX-B: 1\r\nDate: x\r\nx-b: 2\r\nX-Text: caf\xc3\xa9\r\nContent-Length: 3\r\nx-request-id: r-1\r\n\r\n"
        );
        assert_eq!(decided.out, Out::Length(3));
    }

    #[test]
    fn head_and_bodyless_statuses_send_no_body() {
        for (method, status) in [(Method::HEAD, 200), (Method::GET, 204), (Method::GET, 304)] {
            let (_, decided) = head(
                method,
                status,
                &[("date", "x")],
                SizeHint::with_exact(9),
                true,
            );
            assert_eq!(decided.out, Out::Nothing);
        }
        let (text, _) = head(
            Method::GET,
            200,
            &[("date", "x")],
            SizeHint::with_exact(0),
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
        );
    }
}
