//! Where the fields of a head parsed by `httparse` lie in the bytes it was parsed from, so that
//! once those bytes are frozen the names and values are taken from them without copying. Both
//! heads the proxy parses use it: the client's requests and the app's responses.
//!
//! A request's spans live in an array the parser keeps on its stack (a struct holding it would
//! be copied when made and moved: kilobytes per head).
//!
//! The app's response fields are not made into a header map at all: [`AppFields`] keeps the
//! spans of those passed on, and an HTTP/1.1 client gets them as the app sent them (an HTTP/2
//! client's connection makes a map of them, [`AppFields::into_map`]).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// Where one field lies: its name's offset and length, its value's offset and length (in a head
/// shorter than 4 GiB).
pub type Span = [u32; 4];

/// Records in `spans` where `fields`, parsed from `buf`, lie in it; how many were recorded.
pub fn record(spans: &mut [Span], buf: &[u8], fields: &[httparse::Header<'_>]) -> usize {
    for (span, field) in spans.iter_mut().zip(fields) {
        *span = self::span(buf, field);
    }
    fields.len().min(spans.len())
}

/// Where `field`, parsed from `buf`, lies in it.
pub fn span(buf: &[u8], field: &httparse::Header<'_>) -> Span {
    let name = field.name.as_bytes();
    [
        offset(buf, name),
        name.len() as u32,
        offset(buf, field.value),
        field.value.len() as u32,
    ]
}

/// Each field's name and value, taken from `head` (the bytes the fields were parsed from,
/// frozen) at the places `spans` recorded.
pub fn fields<'h>(spans: &'h [Span], head: &'h Bytes) -> impl Iterator<Item = (&'h [u8], Bytes)> {
    spans.iter().map(|&[name, name_len, value, value_len]| {
        (
            &head[name as usize..(name + name_len) as usize],
            head.slice(value as usize..(value + value_len) as usize),
        )
    })
}

/// The name and value of the field at `span` in `head`.
pub fn field<'h>(span: &Span, head: &'h [u8]) -> (&'h [u8], &'h [u8]) {
    let &[name, name_len, value, value_len] = span;
    (
        &head[name as usize..(name + name_len) as usize],
        &head[value as usize..(value + value_len) as usize],
    )
}

/// The end-to-end fields of a response head from the app, as it sent them (names in its case,
/// in its order, repeated fields apart), kept as spans over the head's frozen bytes. They go
/// with the response next to its header map, which holds only the fields the sidecar adds;
/// a field the sidecar replaces is removed from here first ([`AppFields::remove`]).
///
/// Boxed, with room for the usual few spans inside: one allocation, and the response it goes
/// with stays small as it moves.
#[derive(Debug, Default)]
pub struct AppFields(Box<Fields>);

#[derive(Debug, Default)]
struct Fields {
    head: Bytes,
    spans: SmallVec<[Span; INLINE_SPANS]>,
}

/// Spans kept without another allocation.
const INLINE_SPANS: usize = 12;

impl AppFields {
    /// The fields at `spans` in `head`: valid field names and values (as `httparse` accepts
    /// them: the same bytes the `http` types accept).
    pub fn new(head: Bytes, spans: &[Span]) -> AppFields {
        let mut fields = AppFields::default();
        spans.iter().for_each(|&span| fields.push(span));
        fields.set_head(head);
        fields
    }

    /// Adds the field at `span`, in the head [`AppFields::set_head`] gives.
    pub fn push(&mut self, span: Span) {
        self.0.spans.push(span);
    }

    /// Keeps the fields whose span `keep` accepts.
    pub fn retain_spans(&mut self, keep: impl FnMut(&mut Span) -> bool) {
        self.0.spans.retain(keep);
    }

    /// Sets the head (frozen) that the spans lie in.
    pub fn set_head(&mut self, head: Bytes) {
        self.0.head = head;
    }

    /// Each field's name (as the app spelled it) and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.spans.iter().map(|span| field(span, &self.0.head))
    }

    /// Appends the fields to `buf` as HTTP/1.1 field lines. Lines the head holds as
    /// `name: value` CRLF, one after the other, go in one copy.
    pub fn write_lines(&self, buf: &mut Vec<u8>) {
        let head = &self.0.head[..];
        // The lines at hand, not written yet.
        let mut run = 0..0;
        for span in &self.0.spans {
            let line = as_sent(span, head);
            match line {
                Some(line) if line.start == run.end => run.end = line.end,
                _ => {
                    buf.extend_from_slice(&head[run]);
                    run = line.unwrap_or_else(|| {
                        let (name, value) = field(span, head);
                        for piece in [name, b": ", value, b"\r\n"] {
                            buf.extend_from_slice(piece);
                        }
                        0..0
                    });
                }
            }
        }
        buf.extend_from_slice(&head[run]);
    }

    /// The value of the first field named `name` (any case).
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        self.named(name).next()
    }

    /// The value of the last field named `name` (any case).
    pub fn last(&self, name: &HeaderName) -> Option<&[u8]> {
        self.named(name).next_back()
    }

    /// The values of the fields named `name` (any case), told by their length first.
    fn named(&self, name: &HeaderName) -> impl DoubleEndedIterator<Item = &[u8]> {
        let name = name.as_str().as_bytes();
        self.0
            .spans
            .iter()
            .filter(move |span| span[1] as usize == name.len())
            .map(|span| field(span, &self.0.head))
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Whether there is a field named `name` (any case).
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Removes every field named `name` (any case).
    pub fn remove(&mut self, name: &HeaderName) {
        let name = name.as_str().as_bytes();
        self.retain(|n| !n.eq_ignore_ascii_case(name));
    }

    /// Keeps the fields whose name `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let Fields { head, spans } = &mut *self.0;
        spans.retain(|span| keep(field(span, head).0));
    }

    /// A header map of these fields followed by those of `added` (for an HTTP/2 client).
    pub fn into_map(self, added: &HeaderMap) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.spans.len() + added.len());
        for span in &self.0.spans {
            let (name, _) = field(span, &self.0.head);
            let [.., value, value_len] = *span;
            let value = self
                .0
                .head
                .slice(value as usize..(value + value_len) as usize);
            // Both were valid when parsed; checked again all the same.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value),
            ) {
                map.append(name, value);
            }
        }
        for (name, value) in added {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

/// Where the line of the field at `span` lies in `head`, if it is `name: value` CRLF exactly
/// (one space, no trailing whitespace, CRLF).
fn as_sent(span: &Span, head: &[u8]) -> Option<std::ops::Range<usize>> {
    let [name, name_len, value, value_len] = span.map(|n| n as usize);
    let (colon, end) = (name + name_len, value + value_len);
    (value == colon + 2
        && head.get(colon..value) == Some(b": ")
        && head.get(end..end + 2) == Some(b"\r\n"))
    .then_some(name..end + 2)
}

/// A response body that may bring the app's fields with it.
pub trait WithAppFields {
    /// Takes the app's fields out of the body, if it has them.
    fn take_app_fields(&mut self) -> Option<AppFields>;
}

/// A field value that is one decimal number (digits only, no sign).
pub fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        (digit < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Where `part`, a slice of `buf`, starts in it (`buf` is shorter than 4 GiB).
pub fn offset(buf: &[u8], part: &[u8]) -> u32 {
    (part.as_ptr() as usize - buf.as_ptr() as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_taken_from_the_frozen_head() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one two\r\n\r\n";
        let mut parsed = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut parsed);
        assert!(request.parse(text).unwrap().is_complete());
        let mut spans = [[0; 4]; 4];
        let count = record(&mut spans, text, request.headers);
        let head = Bytes::from_static(text);
        let found: Vec<_> = fields(&spans[..count], &head).collect();
        assert_eq!(count, 2);
        assert_eq!(found[0], (&b"Host"[..], Bytes::from_static(b"a")));
        assert_eq!(found[1], (&b"X-Long"[..], Bytes::from_static(b"one two")));
        assert_eq!(offset(text, &text[4..]), 4);
    }

    #[test]
    fn lines_go_out_as_sent_or_rewritten_when_spelled_otherwise() {
        let text =
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nC:  3 \r\nD: 4\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n";
        let mut parsed = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut parsed);
        assert!(response.parse(text).unwrap().is_complete());
        let mut spans = [[0; 4]; 8];
        let count = record(&mut spans, text, response.headers);
        // F left out: E and G are lines apart.
        let kept = [0, 1, 2, 3, 4, 6].map(|i| spans[i]);
        let fields = AppFields::new(Bytes::from_static(text), &kept);
        assert_eq!(count, 7);
        let mut out = Vec::new();
        fields.write_lines(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nG: 7\r\n"
        );
    }
}
