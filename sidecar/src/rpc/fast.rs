//! A fast path for [`super::scan`]: a single pass over the common shape of a body (a message
//! object or a batch of them, keys printable ASCII without escapes, `method`, `params.name` and
//! `params.uri` plain strings without escapes) that answers only when it is sure to give what the
//! serde_json scan gives. On anything else — an escape where a value is read, a duplicate or case
//! variant key, a key that is not printable ASCII, many keys, a read value of another type, deep
//! nesting, invalid JSON, trailing data — it answers `None` and the full scan decides, so it never
//! accepts a body the full scan refuses. Values it does not read are skipped as serde_json skips
//! them (`IgnoredAny`): syntax and escapes checked, numbers not converted.
//!
//! The usual keys of each level are known ahead (in lower case), so that for them the checks for
//! duplicates and case variants are a bit each; other keys are compared with one another.

use super::{MESSAGE_KEYS, PARAMS_KEYS, Scanned, Seen, plain_run};

/// The keys of a message object known ahead: those read first (the ones whose case variants
/// are refused), then the usual others.
const MESSAGE: [&str; 4] = [MESSAGE_KEYS[0], MESSAGE_KEYS[1], "jsonrpc", "id"];
/// The keys of `params` known ahead: `name` (case variants refused), `uri` (read), then the
/// usual others.
const PARAMS: [&str; 4] = [PARAMS_KEYS[0], "uri", "arguments", "_meta"];
/// Keys per object, other than those known ahead, beyond which the full scan decides.
const MAX_OTHER_KEYS: usize = 8;
/// Nesting beyond which the full scan decides (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// The messages in `body`, borrowed from it, or `None` when the full scan must decide.
pub(super) fn scan(body: &str) -> Option<Scanned<'_>> {
    let mut s = Scanner {
        body: body.as_bytes(),
        text: body,
        at: 0,
        depth: 0,
    };
    s.whitespace();
    let messages = match s.peek()? {
        b'{' => Scanned::One(s.message()?),
        b'[' => {
            s.enter()?;
            let mut messages = Vec::new();
            loop {
                s.whitespace();
                messages.push(s.message()?);
                s.whitespace();
                match s.next()? {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
            Scanned::Batch(messages)
        }
        _ => return None,
    };
    s.whitespace();
    (s.at == s.body.len()).then_some(messages)
}

/// `params.name` and `params.uri`, when plain strings.
#[derive(Default)]
struct Params<'a> {
    name: Option<&'a str>,
    uri: Option<&'a str>,
}

struct Scanner<'a> {
    body: &'a [u8],
    /// `body` as text (checked UTF-8 by the caller).
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// JSON whitespace (RFC 8259 §2), as serde_json skips it.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Steps into an array or object (at its opening bracket).
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        self.at += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// A key of printable ASCII without escapes, as it stands in the body.
    #[inline(always)]
    fn printable_key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + plain_run::<true>(self.body.get(start..)?);
        self.at = end + 1;
        (*self.body.get(end)? == b'"').then(|| &self.body[start..end])
    }

    /// Which of `known` the key at the cursor is, when it is one of them exactly and its colon
    /// follows at once (`"method":`): the cursor is then past the colon. Otherwise the cursor
    /// stays and [`Scanner::printable_key`] reads the key.
    #[inline(always)]
    fn known_key<const N: usize>(&mut self, known: &[&str; N]) -> Option<usize> {
        let rest = self.body.get(self.at..)?;
        let i = known.iter().position(|k| {
            let k = k.as_bytes();
            rest.len() > k.len() + 2
                && rest[0] == b'"'
                && rest[1..=k.len()] == *k
                && rest[k.len() + 1..k.len() + 3] == *b"\":"
        })?;
        self.at += known[i].len() + 3;
        Some(i)
    }

    /// A string without escapes, as it stands in the body.
    #[inline(always)]
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + plain_run::<false>(self.body.get(start..)?);
        self.at = end + 1;
        (*self.body.get(end)? == b'"').then(|| &self.text[start..end])
    }

    /// A message object.
    fn message(&mut self) -> Option<Seen<'a>> {
        let mut method = None;
        let mut params = Params::default();
        self.object(&MESSAGE, MESSAGE_KEYS.len(), |s, key| {
            match key {
                Some(0) => method = Some(s.plain_string()?),
                Some(1) => params = s.params()?,
                _ => s.skip_usual()?,
            }
            Some(())
        })?;
        let (tool, target) = match method {
            Some("tools/call") => (params.name, None),
            Some("prompts/get") => (None, params.name),
            Some("resources/read") => (None, params.uri),
            _ => (None, None),
        };
        Some(Seen {
            method,
            tool,
            target,
        })
    }

    /// `params`: an object is read; an array, a literal or a plain string holds nothing read.
    fn params(&mut self) -> Option<Params<'a>> {
        let mut params = Params::default();
        match self.peek()? {
            b'{' => self.object(&PARAMS, PARAMS_KEYS.len(), |s, key| {
                match key {
                    Some(0) => params.name = Some(s.plain_string()?),
                    Some(1) => params.uri = Some(s.plain_string()?),
                    _ => s.skip_value()?,
                }
                Some(())
            })?,
            b'[' | b't' | b'f' | b'n' => self.skip_value()?,
            b'"' => {
                self.plain_string()?;
            }
            // A number is converted by the full scan (and may be out of range).
            _ => return None,
        }
        Some(params)
    }

    /// An object whose keys pass the full scan's key check (see `Keys` there) without needing
    /// to be folded: `member` reads or skips the value of each key, told which of `known` it is
    /// (exactly). Keys that are printable ASCII fold to their ASCII lower case; the first
    /// `variants` of `known` (lower case, as all of them) refuse their case variants.
    #[inline(always)]
    fn object<const N: usize>(
        &mut self,
        known: &[&str; N],
        variants: usize,
        mut member: impl FnMut(&mut Self, Option<usize>) -> Option<()>,
    ) -> Option<()> {
        if self.peek()? != b'{' {
            return None;
        }
        self.enter()?;
        self.whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            self.depth -= 1;
            return Some(());
        }
        // The known keys seen (in any case), a bit each.
        let mut seen = 0u32;
        let mut others: [&[u8]; MAX_OTHER_KEYS] = [&[]; MAX_OTHER_KEYS];
        let mut count = 0;
        loop {
            let exact = match self.known_key(known) {
                // The usual shape: a known key, its colon right after it.
                Some(i) => {
                    if seen & (1 << i) != 0 {
                        return None;
                    }
                    seen |= 1 << i;
                    Some(i)
                }
                None => {
                    let key = self.printable_key()?;
                    let exact = known.iter().position(|k| k.as_bytes() == key);
                    let folded = exact.or_else(|| {
                        known
                            .iter()
                            .position(|k| k.as_bytes().eq_ignore_ascii_case(key))
                    });
                    match folded {
                        // A case variant of a key read.
                        Some(i) if exact.is_none() && i < variants => return None,
                        Some(i) => {
                            if seen & (1 << i) != 0 {
                                return None;
                            }
                            seen |= 1 << i;
                        }
                        None => {
                            if count == MAX_OTHER_KEYS
                                || others[..count].iter().any(|k| k.eq_ignore_ascii_case(key))
                            {
                                return None;
                            }
                            others[count] = key;
                            count += 1;
                        }
                    }
                    self.whitespace();
                    self.expect(b':')?;
                    exact
                }
            };
            self.whitespace();
            member(self, exact)?;
            self.whitespace();
            match self.next()? {
                b',' => self.whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Any JSON value, as [`Scanner::skip_value`] skips it; a string without escapes or a
    /// positive integer (the usual `jsonrpc` and `id`) skipped here, without a call.
    #[inline(always)]
    fn skip_usual(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let rest = self.body.get(self.at + 1..)?;
                let end = plain_run::<false>(rest);
                if rest.get(end) != Some(&b'"') {
                    return self.skip_string();
                }
                self.at += end + 2;
                Some(())
            }
            b'1'..=b'9' => {
                let start = self.at;
                self.digits();
                if let Some(b'.' | b'e' | b'E') = self.peek() {
                    self.at = start;
                    return self.skip_number();
                }
                Some(())
            }
            _ => self.skip_value(),
        }
    }

    /// Any JSON value, checked but not read.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' => {
                self.enter()?;
                self.whitespace();
                if self.peek()? == b'}' {
                    self.at += 1;
                } else {
                    loop {
                        self.whitespace();
                        self.skip_string()?;
                        self.whitespace();
                        self.expect(b':')?;
                        self.whitespace();
                        self.skip_value()?;
                        self.whitespace();
                        match self.next()? {
                            b',' => {}
                            b'}' => break,
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(())
            }
            b'[' => {
                self.enter()?;
                self.whitespace();
                if self.peek()? == b']' {
                    self.at += 1;
                } else {
                    loop {
                        self.whitespace();
                        self.skip_value()?;
                        self.whitespace();
                        match self.next()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.skip_number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.body.get(self.at..)?;
        rest.starts_with(word).then(|| self.at += word.len())
    }

    /// A string, escapes checked as serde_json checks skipped ones (`\u` takes any four hex
    /// digits).
    fn skip_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            self.at += plain_run::<false>(self.body.get(self.at..)?);
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            if !self.next()?.is_ascii_hexdigit() {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn skip_number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(body: &str) -> Scanner<'_> {
        Scanner {
            body: body.as_bytes(),
            text: body,
            at: 0,
            depth: 0,
        }
    }

    #[test]
    fn a_known_key_is_taken_only_exactly_and_right_before_its_colon() {
        for (body, known) in [
            (r#""method":"ping""#, Some((0, 9))),
            (r#""params":{}"#, Some((1, 9))),
            (r#""id":1"#, Some((3, 5))),
            (r#""jsonrpc":"2.0""#, Some((2, 10))),
            // Left to the general key reading.
            (r#""method" :"ping""#, None),
            (r#""Method":"ping""#, None),
            (r#""methods":"ping""#, None),
            (r#""metho":"ping""#, None),
            (r#""method""#, None),
            (r#""method":"#, Some((0, 9))),
            (r#""method"#, None),
            (r#"method":"#, None),
            ("", None),
        ] {
            let mut s = scanner(body);
            let taken = s.known_key(&MESSAGE).map(|i| (i, s.at));
            assert_eq!(taken, known, "{body}");
            if known.is_none() {
                assert_eq!(s.at, 0, "{body}");
            }
        }
    }
}
