//! Where the fields of a head parsed by `httparse` lie in the bytes it was parsed from, so that
//! once those bytes are frozen the names and values are taken from them without copying. Both
//! heads the proxy parses use it: the client's requests and the app's responses.
//!
//! The spans live in an array the parser keeps on its stack (a struct holding it would be
//! copied when made and moved: kilobytes per head).

use bytes::Bytes;

/// Where one field lies: its name's offset and length, its value's offset and length (in a head
/// shorter than 4 GiB).
pub type Span = [u32; 4];

/// Records in `spans` where `fields`, parsed from `buf`, lie in it; how many were recorded.
pub fn record(spans: &mut [Span], buf: &[u8], fields: &[httparse::Header<'_>]) -> usize {
    for (span, field) in spans.iter_mut().zip(fields) {
        let name = field.name.as_bytes();
        *span = [
            offset(buf, name),
            name.len() as u32,
            offset(buf, field.value),
            field.value.len() as u32,
        ];
    }
    fields.len().min(spans.len())
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
}
