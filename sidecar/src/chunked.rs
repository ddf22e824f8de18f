//! The chunked transfer coding (RFC 9112 §7.1) of the app's responses and of clients' request
//! bodies, decoded as the bytes arrive: data is handed on as slices of what was read, without copying; size lines and
//! trailers, which may arrive split across reads, are held until complete, within limits.

use bytes::{Buf, Bytes};

/// Longest chunk-size line, with its extensions.
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes of trailer fields (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body is malformed.
#[derive(Debug, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct Malformed(&'static str);

/// Where the decoder stands.
#[derive(Debug)]
enum State {
    /// Reading a chunk-size line (held in `line` until its LF).
    Size,
    /// Inside a chunk's data: this many bytes to go.
    Data(u64),
    /// After a chunk's data: this many bytes of its CRLF seen.
    DataEnd(u8),
    /// Reading trailer lines after the last chunk, until an empty one.
    Trailers,
    /// The last chunk and the trailers are read.
    Done,
}

/// A chunked body's decoder.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// The incomplete size or trailer line read so far.
    line: Vec<u8>,
    /// Bytes of trailers read so far.
    trailers: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size,
            line: Vec::new(),
            trailers: 0,
        }
    }
}

impl Decoder {
    /// Whether the body has ended (the last chunk and the trailers are read).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Decodes from `input`, consuming what it reads: the next piece of data, or `None` once
    /// `input` is used up or the body has ended (see [`Decoder::is_done`]). Bytes after the
    /// end stay in `input`.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, Malformed> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match self.state {
                State::Done => return Ok(None),
                State::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let data = input.split_to(take);
                    self.state = match left - take as u64 {
                        0 => State::DataEnd(0),
                        left => State::Data(left),
                    };
                    return Ok(Some(data));
                }
                State::DataEnd(seen) => {
                    let expected = b"\r\n"[usize::from(seen)];
                    if input[0] != expected {
                        return Err(Malformed("a chunk's data does not end with CRLF"));
                    }
                    input.advance(1);
                    self.state = if seen == 0 {
                        State::DataEnd(1)
                    } else {
                        State::Size
                    };
                }
                State::Size => {
                    let Some(line) = self.line(input, MAX_SIZE_LINE)? else {
                        return Ok(None);
                    };
                    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
                        return Err(Malformed("a chunk-size line has no size"));
                    }
                    self.state = match httparse::parse_chunk_size(&line) {
                        Ok(httparse::Status::Complete((_, 0))) => State::Trailers,
                        Ok(httparse::Status::Complete((_, size))) => State::Data(size),
                        _ => return Err(Malformed("a chunk-size line is not valid")),
                    };
                }
                State::Trailers => {
                    let Some(line) = self.line(input, MAX_TRAILERS)? else {
                        return Ok(None);
                    };
                    self.trailers += line.len();
                    if self.trailers > MAX_TRAILERS {
                        return Err(Malformed("the trailer fields are too large"));
                    }
                    if line.as_slice() == b"\r\n" {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// Takes bytes of `input` up to and including the next LF: the whole line once its LF has
    /// arrived (it must end in CRLF), else `None` with the part kept for the next call.
    fn line(&mut self, input: &mut Bytes, limit: usize) -> Result<Option<Vec<u8>>, Malformed> {
        let end = input.iter().position(|&b| b == b'\n');
        let take = end.map_or(input.len(), |i| i + 1);
        if self.line.len() + take > limit {
            return Err(Malformed("a line is too long"));
        }
        self.line.extend_from_slice(&input[..take]);
        input.advance(take);
        if end.is_none() {
            return Ok(None);
        }
        let line = std::mem::take(&mut self.line);
        if !line.ends_with(b"\r\n") {
            return Err(Malformed("a line does not end with CRLF"));
        }
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the data, whether it ended, what is left.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool, Vec<u8>), Malformed> {
        let mut decoder = Decoder::default();
        let mut data = Vec::new();
        let mut rest = Vec::new();
        for piece in wire.chunks(step) {
            let mut input = Bytes::copy_from_slice(piece);
            while let Some(bytes) = decoder.decode(&mut input)? {
                data.extend_from_slice(&bytes);
            }
            rest.extend_from_slice(&input);
        }
        Ok((data, decoder.is_done(), rest))
    }

    #[test]
    fn decodes_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n1;ext=\"x\"\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (data, done, rest) = decode(wire, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(done, "step {step}");
            assert_eq!(rest, b"NEXT", "step {step}");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (data, done, _) = decode(b"5\r\nhel", 2).unwrap();
        assert_eq!(data, b"hel");
        assert!(!done);
        let (_, done, _) = decode(b"0\r\n", 1).unwrap();
        assert!(!done, "the empty line after the last chunk has not arrived");
    }

    #[test]
    fn refuses_malformed_bodies() {
        let bad: [&[u8]; 9] = [
            b"\r\n",
            b";x\r\n",
            b"x\r\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n",
            b"-1\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nX: y\n\r\n",
            b"5 5\r\nhello\r\n",
        ];
        for wire in bad {
            for step in [1, 3, wire.len()] {
                assert!(
                    decode(wire, step).is_err(),
                    "{:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        long.extend_from_slice(b"\r\nhello\r\n");
        assert!(decode(&long, 100).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS / 10 + 1 {
            trailers.extend_from_slice(b"X-T: 123\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert!(decode(&trailers, 64).is_err());
    }
}
