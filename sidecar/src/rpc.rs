//! The parts of a JSON-RPC body that the scope rules and the audit trail read (`method`,
//! `params.name` of a `tools/call` or `prompts/get`, `params.uri` of a `resources/read`, and on
//! request `params.arguments`), found in one pass without building a JSON tree.
//!
//! The scan refuses bodies that different JSON parsers could read differently, because the
//! sidecar and the app must agree on which tool is called: a key given twice (`"name"` twice),
//! or twice up to case (`"name"` and `"NAME"`: Go's `encoding/json` matches keys without regard
//! to case, Unicode folding included), or a case variant of a key the rules read standing alone
//! (`"Method"`), in a message object or its `params`. Deeper levels (tool arguments) are not
//! inspected: no rule reads them.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

mod fast;

/// What the rules and the audit trail need from one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `method`; `None` for responses. MCP's own methods are not copied.
    pub method: Option<Cow<'static, str>>,
    /// `params.name`, for `tools/call` only.
    pub tool: Option<String>,
    /// `params.name` of a `prompts/get`, or `params.uri` of a `resources/read`, when a string.
    pub target: Option<String>,
    /// `params.arguments`, when asked for ([`scan_with_arguments`]).
    pub arguments: Option<Value>,
}

impl Message {
    /// What this message says, borrowed.
    pub fn seen(&self) -> Seen<'_> {
        Seen {
            method: self.method.as_deref(),
            tool: self.tool.as_deref(),
            target: self.target.as_deref(),
        }
    }
}

/// What the audit trail needs from one message (all of [`Message`] but `arguments`), borrowed
/// from the body where the scan could.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen<'a> {
    /// `method`; `None` for responses.
    pub method: Option<&'a str>,
    /// `params.name`, for `tools/call` only.
    pub tool: Option<&'a str>,
    /// `params.name` of a `prompts/get`, or `params.uri` of a `resources/read`, when a string.
    pub target: Option<&'a str>,
}

impl Seen<'_> {
    /// The message, owned. MCP's own methods are not copied.
    fn to_message(self) -> Message {
        Message {
            method: self
                .method
                .map(|m| known_method(m).map_or_else(|| Cow::Owned(m.to_owned()), Cow::Borrowed)),
            tool: self.tool.map(str::to_owned),
            target: self.target.map(str::to_owned),
            arguments: None,
        }
    }
}

/// The messages of a body as [`scan`] reads them, borrowed from the body where it could.
pub enum Scanned<'a> {
    /// A message object, read by the fast path.
    One(Seen<'a>),
    /// A batch, read by the fast path.
    Batch(Vec<Seen<'a>>),
    /// Read by the full scan.
    Owned(Vec<Message>),
}

impl Scanned<'_> {
    /// The messages.
    pub fn iter(&self) -> impl Iterator<Item = Seen<'_>> + Clone {
        let (seen, owned): (&[Seen], &[Message]) = match self {
            Scanned::One(message) => (std::slice::from_ref(message), &[]),
            Scanned::Batch(messages) => (messages, &[]),
            Scanned::Owned(messages) => (&[], messages),
        };
        seen.iter().copied().chain(owned.iter().map(Message::seen))
    }
}

/// Why a body was refused. The text is safe to send to the client.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all (JSON-RPC code -32700).
    #[error("the request body is not JSON: {0}")]
    Parse(String),
    /// JSON, but not an unambiguous JSON-RPC message or batch (code -32600).
    #[error("the request body is not an unambiguous JSON-RPC message: {0}")]
    Invalid(String),
}

impl BodyError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            BodyError::Parse(_) => -32700,
            BodyError::Invalid(_) => -32600,
        }
    }
}

/// Keys the rules read, at the level where they read them.
const MESSAGE_KEYS: [&str; 2] = ["method", "params"];
const PARAMS_KEYS: [&str; 1] = ["name"];

/// Scans `body`: a message object or a non-empty batch of them.
pub fn scan(body: &[u8]) -> Result<Vec<Message>, BodyError> {
    scan_body(body, false)
}

/// Like [`scan`], and keeps `params.arguments` of each message.
pub fn scan_with_arguments(body: &[u8]) -> Result<Vec<Message>, BodyError> {
    scan_body(body, true)
}

/// Like [`scan`], for readers that need the messages only while the body lives: where the fast
/// path answers, nothing is copied.
pub fn scan_borrowed(body: &[u8]) -> Result<Scanned<'_>, BodyError> {
    let body = utf8(body)?;
    if let Some(messages) = fast::scan(body) {
        return Ok(messages);
    }
    full_scan_str(body, false).map(Scanned::Owned)
}

fn scan_body(body: &[u8], arguments: bool) -> Result<Vec<Message>, BodyError> {
    let body = utf8(body)?;
    if !arguments && let Some(messages) = fast::scan(body) {
        return Ok(owned(messages));
    }
    full_scan_str(body, arguments)
}

/// Fast-path messages, owned.
fn owned(messages: Scanned) -> Vec<Message> {
    match messages {
        Scanned::One(message) => vec![message.to_message()],
        Scanned::Batch(messages) => messages.into_iter().map(Seen::to_message).collect(),
        Scanned::Owned(messages) => messages,
    }
}

/// The length of the run of `bytes` that a JSON string holds as it is: up to its first quote,
/// backslash or control character (or all of it); with `PRINTABLE`, up to its first byte that is
/// not printable ASCII too. Eight bytes at a time.
fn plain_run<const PRINTABLE: bool>(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Each mask flags its first match exactly (a borrow only runs upwards from a match), so the
    // lowest byte flagged in any of them is the first to stop at.
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let mut found =
            control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')));
        if PRINTABLE {
            found |= (w & HIGH) | zero(w ^ (ONES * 0x7f));
        }
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = words.remainder();
    let stop = |b: u8| b == b'"' || b == b'\\' || b < 0x20 || (PRINTABLE && b >= 0x7f);
    at + rest.iter().position(|&b| stop(b)).unwrap_or(rest.len())
}

/// The length of the run of printable ASCII at the start of `bytes` that a JSON string holds as
/// it is (no quote, no backslash).
pub(crate) fn printable_run(bytes: &[u8]) -> usize {
    plain_run::<true>(bytes)
}

/// The length of the run at the start of `bytes` that a JSON string holds as it is (no quote,
/// backslash or control character).
pub(crate) fn unescaped_run(bytes: &[u8]) -> usize {
    plain_run::<false>(bytes)
}

/// JSON is UTF-8 (RFC 8259 §8.1). The scans skip values they do not read without decoding them,
/// so the whole body is checked first: an app's decoder could read invalid bytes (an overlong
/// `"`, say) as structure the scan never saw.
fn utf8(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|_| BodyError::Parse("the body is not UTF-8".into()))
}

/// [`scan`]'s fast path alone: `None` where it leaves the answer to the full scan. For the
/// equality tests and the `rpc_fast` fuzz target.
#[doc(hidden)]
pub fn fast_scan(body: &[u8]) -> Option<Vec<Message>> {
    fast::scan(utf8(body).ok()?).map(owned)
}

/// [`scan`] without its fast path. For the equality tests and the `rpc_fast` fuzz target.
#[doc(hidden)]
pub fn full_scan(body: &[u8]) -> Result<Vec<Message>, BodyError> {
    full_scan_str(utf8(body)?, false)
}

fn full_scan_str(body: &str, arguments: bool) -> Result<Vec<Message>, BodyError> {
    let mut de = serde_json::Deserializer::from_str(body);
    let messages = de.deserialize_any(BodyVisitor { arguments }).and_then(|m| {
        de.end()?;
        Ok(m)
    });
    messages.map_err(|e| {
        let text = e.to_string();
        // The position is of no use to the client.
        let why = text.split(" at line ").next().unwrap_or(&text).to_owned();
        if e.is_data() {
            BodyError::Invalid(why)
        } else {
            BodyError::Parse(why)
        }
    })
}

/// The `id` to echo in an error answer: a string or number `id` of a single message, when the
/// body parses at all.
pub fn id_of(body: &[u8]) -> Value {
    match serde_json::from_slice::<serde_json::Map<String, Value>>(body) {
        Ok(mut message) => match message.remove("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => id,
            _ => Value::Null,
        },
        Err(_) => Value::Null,
    }
}

fn invalid<E: de::Error>(why: impl fmt::Display) -> E {
    E::custom(why)
}

/// A key compared the way the most lenient JSON decoders compare them: ASCII case folded, and the
/// two non-ASCII characters whose simple case folding gives an ASCII letter (`ſ` → `s`, the Kelvin
/// sign → `k`) mapped too.
fn fold(key: &str) -> String {
    key.chars()
        .flat_map(|c| match c {
            '\u{17f}' => 's'.to_lowercase(),
            '\u{212a}' => 'k'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .collect()
}

/// Tracks the keys of one object and refuses duplicates, case-folded duplicates and case
/// variants of the keys the rules read there.
struct Keys<'de, const N: usize> {
    read: [&'static str; N],
    /// The first keys seen (folded), without an allocation: a message has four.
    first: [Cow<'de, str>; FIRST_KEYS],
    count: usize,
    /// Keys seen after those.
    more: Vec<Cow<'de, str>>,
}

const FIRST_KEYS: usize = 6;

impl<'de, const N: usize> Keys<'de, N> {
    fn new(read: [&'static str; N]) -> Self {
        Keys {
            read,
            first: Default::default(),
            count: 0,
            more: Vec::new(),
        }
    }

    /// Records `key`; `Some(index)` when it is exactly one of the keys the rules read.
    // A `Cow`, not a `&str`: a key borrowed from the body is kept without a copy.
    #[allow(clippy::ptr_arg)]
    fn check<E: de::Error>(&mut self, key: &Cow<'de, str>) -> Result<Option<usize>, E> {
        // Printable ASCII without upper case (the usual key) has no control characters and is
        // its own folding.
        let usual = key
            .bytes()
            .all(|b| matches!(b, b' '..=b'~') && !b.is_ascii_uppercase());
        if !usual && key.chars().any(char::is_control) {
            return Err(invalid(format_args!("key {key:?} has control characters")));
        }
        let folded = if usual { key.clone() } else { fold(key).into() };
        let seen = &self.first[..self.count.min(FIRST_KEYS)];
        if seen.contains(&folded) || self.more.contains(&folded) {
            return Err(invalid(format_args!("key {key:?} appears more than once")));
        }
        let exact = self.read.iter().position(|k| *k == key);
        if exact.is_none() && self.read.contains(&&*folded) {
            return Err(invalid(format_args!("key {key:?} is a case variant")));
        }
        match self.first.get_mut(self.count) {
            Some(slot) => *slot = folded,
            None => self.more.push(folded),
        }
        self.count += 1;
        Ok(exact)
    }
}

/// `method` as one of MCP's own methods, when it is one.
fn known_method(method: &str) -> Option<&'static str> {
    const KNOWN: [&str; 17] = [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ];
    KNOWN.into_iter().find(|known| *known == method)
}

/// A string as found in the body: borrowed from it unless it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(s.to_owned())))
    }
}

/// Any JSON value: a string when it is one (see [`Text`]), skipped otherwise.
enum Found<'de> {
    Text(Cow<'de, str>),
    Other,
}

impl<'de> de::Deserialize<'de> for Found<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FoundVisitor)
    }
}

struct FoundVisitor;

impl<'de> Visitor<'de> for FoundVisitor {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Found::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Found::Text(Cow::Owned(s.to_owned())))
    }

    // Read as a `Value` would be (numbers beyond `f64` refused, as they were when these values
    // were read into a `Value`).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, Value>()?.is_some() {}
        Ok(Found::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Found::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }
}

/// `arguments`: whether `params.arguments` is kept.
#[derive(Clone, Copy)]
struct BodyVisitor {
    arguments: bool,
}

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Vec<Message>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message or a non-empty batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![MessageVisitor(self).visit_map(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(message) = seq.next_element_seed(MessageSeed(self))? {
            messages.push(message);
        }
        if messages.is_empty() {
            return Err(invalid("an empty batch"));
        }
        Ok(messages)
    }
}

struct MessageSeed(BodyVisitor);

impl<'de> DeserializeSeed<'de> for MessageSeed {
    type Value = Message;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        d.deserialize_any(MessageVisitor(self.0))
    }
}

struct MessageVisitor(BodyVisitor);

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut keys = Keys::new(MESSAGE_KEYS);
        let mut method = None;
        let mut params = Params::default();
        while let Some(Text(key)) = map.next_key()? {
            match keys.check(&key)? {
                Some(0) => match map.next_value()? {
                    Found::Text(m) => {
                        method = Some(
                            known_method(&m).map_or_else(|| m.into_owned().into(), Cow::Borrowed),
                        )
                    }
                    Found::Other => return Err(invalid("method must be a string")),
                },
                Some(_) => params = map.next_value_seed(ParamsSeed(self.0))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (tool, target) = match (method.as_deref(), params.name) {
            (Some("tools/call"), Some(Name::Text(name))) => (Some(name), None),
            (Some("tools/call"), Some(Name::Other)) => {
                return Err(invalid("params.name must be a string"));
            }
            (Some("prompts/get"), Some(Name::Text(name))) => (None, Some(name)),
            (Some("resources/read"), _) => (None, params.uri),
            _ => (None, None),
        };
        Ok(Message {
            method,
            tool,
            target,
            arguments: params.arguments,
        })
    }

    // Anything but an object in a batch.
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Message, A::Error> {
        Err(invalid("batch entries must be objects"))
    }
}

/// `params.name` as found.
enum Name {
    Text(String),
    Other,
}

/// What `params` holds for the rules and the audit trail.
#[derive(Default)]
struct Params {
    name: Option<Name>,
    /// `uri`, when a string (audit only: no rule reads it, so its case variants are not refused).
    uri: Option<String>,
    arguments: Option<Value>,
}

struct ParamsSeed(BodyVisitor);

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Params;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Params, D::Error> {
        d.deserialize_any(ParamsVisitor(self.0))
    }
}

struct ParamsVisitor(BodyVisitor);

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Keys::new(PARAMS_KEYS);
        let mut params = Params::default();
        while let Some(Text(key)) = map.next_key()? {
            if keys.check(&key)?.is_some() {
                params.name = Some(match map.next_value()? {
                    Found::Text(s) => Name::Text(s.into_owned()),
                    Found::Other => Name::Other,
                });
            } else if key == "uri" {
                if let Found::Text(uri) = map.next_value()? {
                    params.uri = Some(uri.into_owned());
                }
            } else if key == "arguments" && self.0.arguments {
                params.arguments = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(params)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Params::default())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Params::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Params::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Params::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Params::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Params::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Params::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<Message, BodyError> {
        scan(body.as_bytes()).map(|mut m| m.remove(0))
    }

    fn refused(body: &str) -> bool {
        matches!(scan(body.as_bytes()), Err(BodyError::Invalid(_)))
    }

    #[test]
    fn invalid_utf8_anywhere_is_refused_even_in_values_the_scan_skips() {
        // Found by the rpc_rules fuzz target: skipped strings were not decoded.
        let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":""#.to_vec();
        body.extend_from_slice(b"\xc0\xa2,\"name\":\"delete_all");
        body.extend_from_slice(br#""}}}"#);
        assert!(matches!(scan(&body), Err(BodyError::Parse(_))));
        let mut version = br#"{"jsonrpc":""#.to_vec();
        version.extend_from_slice(b"\xff\xff");
        version.extend_from_slice(br#"","id":1,"method":"tools/list"}"#);
        assert!(matches!(scan(&version), Err(BodyError::Parse(_))));
    }

    #[test]
    fn reads_method_and_tool() {
        let m = one(
            r#"{"params":{"arguments":{"name":"x"},"name":"echo"},"method":"tools/call","id":1}"#,
        )
        .unwrap();
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.tool.as_deref(), Some("echo"));
        let m = one(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap();
        assert_eq!(m, Message::default());
        // Escapes decode before comparison.
        let m =
            one(r#"{"m\u0065thod":"tools/call","params":{"n\u0061me":"delete_repo"}}"#).unwrap();
        assert_eq!(m.tool.as_deref(), Some("delete_repo"));
        // params.name of other methods is not a tool.
        assert_eq!(
            one(r#"{"method":"prompts/get","params":{"name":"p"}}"#)
                .unwrap()
                .tool,
            None
        );
    }

    #[test]
    fn refuses_duplicate_and_case_variant_keys() {
        for body in [
            r#"{"method":"tools/call","params":{"name":"echo","NAME":"delete_repo"}}"#,
            r#"{"method":"tools/call","params":{"name":"echo","name":"delete_repo"}}"#,
            r#"{"method":"tools/call","params":{"name":"echo"},"Params":{"name":"delete_repo"}}"#,
            r#"{"method":"ping","Method":"tools/call","params":{"name":"delete_repo"}}"#,
            r#"{"method":"ping","method":"tools/call","params":{"name":"delete_repo"}}"#,
            r#"{"Method":"tools/call","Params":{"Name":"delete_repo"}}"#,
            r#"{"method":"tools/call","params":{"Name":"delete_repo"}}"#,
            r#"{"method":"tools/call","paramſ":{"name":"delete_repo"}}"#,
            r#"{"method":"tools/call","params":{"name":"echo"},"params":{"name":"delete_repo"}}"#,
            r#"{"id":1,"ID":2,"method":"ping"}"#,
            r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"method":"ping","Method":"x"}"#,
            r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"A":9}"#,
            r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"H":9}"#,
            r#"{"method\u0000":"tools/call"}"#,
            r#"[{"method":"ping"},{"method":"tools/call","params":{"name":"a","nAme":"b"}}]"#,
            r#"{"method":"tools/call","params":{"name":{"x":1}}}"#,
            r#"{"method":5}"#,
            "[]",
            "[1]",
            "5",
        ] {
            assert!(refused(body), "{body}");
        }
        // Arguments are the tool's business.
        assert!(
            one(r#"{"method":"tools/call","params":{"name":"a","arguments":{"x":1,"X":2,"x":3}}}"#)
                .is_ok()
        );
    }

    #[test]
    fn syntax_errors_are_parse_errors() {
        for body in [
            "not json",
            "{",
            r#"{"method":"ping"} trailing"#,
            "",
            // Numbers beyond f64 where the scan reads a value.
            r#"{"method":{"x":[1e400]}}"#,
            r#"{"method":"prompts/get","params":{"name":{"x":1e400}}}"#,
            r#"{"method":"resources/read","params":{"uri":[1e400]}}"#,
        ] {
            assert!(
                matches!(scan(body.as_bytes()), Err(BodyError::Parse(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn reads_audit_targets_and_arguments_on_request() {
        let m = one(r#"{"method":"resources/read","params":{"uri":"file:///a"}}"#).unwrap();
        assert_eq!(m.target.as_deref(), Some("file:///a"));
        let m =
            one(r#"{"method":"prompts/get","params":{"name":"p","arguments":{"a":1}}}"#).unwrap();
        assert_eq!((m.target.as_deref(), m.arguments), (Some("p"), None));
        let body = br#"{"method":"tools/call","params":{"name":"t","arguments":{"a":1}}}"#;
        let m = scan_with_arguments(body).unwrap().remove(0);
        assert_eq!(m.arguments, Some(serde_json::json!({"a": 1})));
        assert_eq!(m.target, None);
    }

    #[test]
    fn ids_are_echoed_when_readable() {
        assert_eq!(id_of(br#"{"id":7,"method":"x","method":"y"}"#), 7);
        assert_eq!(id_of(br#"{"id":"a"}"#), "a");
        assert_eq!(id_of(br#"{"id":{"x":1}}"#), Value::Null);
        assert_eq!(id_of(b"[1]"), Value::Null);
        assert_eq!(id_of(b"nope"), Value::Null);
    }
}

#[cfg(test)]
mod plain_run_tests {
    use super::plain_run;

    #[test]
    fn plain_runs_end_at_the_first_quote_backslash_or_control_character() {
        let slow = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let slow_printable = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || !matches!(c, b' '..=b'~'))
                .unwrap_or(b.len())
        };
        let specials = [b'"', b'\\', 0, 0x1f, b'\n', 0x7f, 0x80, 0xff];
        let others = [
            b' ', b'!', b'#', b'[', b']', b'a', 0x7f, 0x80, 0xc3, 0xff, 0x20, 0x21,
        ];
        for len in 0..40 {
            for at in 0..=len {
                for &s in &specials {
                    for &o in &others {
                        let mut b = vec![o; len];
                        if at < len {
                            b[at] = s;
                        }
                        // A second special after the first must not hide it.
                        if at + 1 < len {
                            b[at + 1] = b'"';
                        }
                        assert_eq!(plain_run::<false>(&b), slow(&b), "{b:?}");
                        assert_eq!(plain_run::<true>(&b), slow_printable(&b), "{b:?}");
                    }
                }
            }
        }
        let mixed: Vec<u8> = (0u8..=255).collect();
        for start in 0..256 {
            let b = &mixed[start..];
            assert_eq!(plain_run::<false>(b), slow(b), "{start}");
            assert_eq!(plain_run::<true>(b), slow_printable(b), "{start}");
            let reversed: Vec<u8> = b.iter().rev().copied().collect();
            assert_eq!(plain_run::<false>(&reversed), slow(&reversed), "{start}");
            assert_eq!(
                plain_run::<true>(&reversed),
                slow_printable(&reversed),
                "{start}"
            );
        }
    }
}

#[cfg(test)]
mod fast_tests {
    use super::*;

    /// Bodies around every rule of the fast path: it must answer as the full scan does, or not
    /// at all.
    const TRICKY: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a \"quoted\" \\ line\n","n":[1,-2.5e+3,0,true,false,null,{}]}}}"#,
        r#"{"jsonrpc":"2.0","id":"x","method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
        r#"{"method":"resources/read","params":{"uri":"file:///a"}}"#,
        r#"{"method":"resources/read","params":{"uri":5}}"#,
        r#"{"method":"resources/read","params":{"uri":"a","URI":"b"}}"#,
        r#"{"method":"resources/read","params":{"URI":"b"}}"#,
        r#"{"method":"prompts/get","params":{"name":"p","arguments":{"a":1}}}"#,
        r#"{"method":"custom/thing","params":{"name":"p"}}"#,
        r#"{"method":"tools/call"}"#,
        r#"{"method":"tools/call","params":null}"#,
        r#"{"method":"tools/call","params":[1,{"name":"x"}]}"#,
        r#"{"method":"tools/call","params":"name"}"#,
        r#"{"method":"tools/call","params":"\ud800"}"#,
        r#"{"method":"tools/call","params":1e400}"#,
        r#"{"method":"tools/call","params":7}"#,
        r#"{"method":"tools/call","params":true}"#,
        r#"{"method":"tools/call","params":{"name":"a","arguments":{"x":1e400,"s":"\ud800"}}}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":1e400}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":"\uZZZZ"}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":"\x"}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":01}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":-}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":1.}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":1e}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":-0.0E-0}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"id":tru}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"x":[1,]}"#,
        r#"{"method":"tools/call","params":{"name":"a"},"x":{"a":1,}}"#,
        r#"{"method":"tools/call","params":{"name":"a"},}"#,
        r#"{"method":"tools/call","params":{"name":"a",}}"#,
        r#"{"method":"tools/call","params":{"name":"a"}} "#,
        r#"{"method":"tools/call","params":{"name":"a"}} x"#,
        r#"{"method":"tools/call","params":{"name":"a"}}{}"#,
        " \t\r\n{ \"method\" : \"tools/call\" , \"params\" : { \"name\" : \"a\" } } \n",
        r#"{"method":"tools/call","params":{"name":"a\u0062"}}"#,
        r#"{"method":"tools/c\u0061ll","params":{"name":"delete_all"}}"#,
        r#"{"m\u0065thod":"tools/call","params":{"n\u0061me":"delete_repo"}}"#,
        r#"{"method":"tools/call","params":{"name":"echo","NAME":"delete_repo"}}"#,
        r#"{"method":"tools/call","params":{"name":"echo","name":"delete_repo"}}"#,
        r#"{"method":"tools/call","params":{"name":"echo"},"Params":{"name":"delete_repo"}}"#,
        r#"{"method":"ping","Method":"tools/call","params":{"name":"delete_repo"}}"#,
        r#"{"method":"tools/call","paramſ":{"name":"delete_repo"}}"#,
        r#"{"Method":"tools/call","Params":{"Name":"delete_repo"}}"#,
        r#"{"method":"tools/call","params":{"Name":"delete_repo"}}"#,
        r#"{"method":"tools/call","PARAMS":{"name":"delete_repo"}}"#,
        r#"{"method":"tools/call","params":{"naKe":"x","name":"y"}}"#,
        r#"{"id":1,"ID":2,"method":"ping"}"#,
        r#"{"ID":1,"id":2,"method":"ping"}"#,
        r#"{"JSONRPC":"2.0","id":1,"method":"ping"}"#,
        r#"{"JSONRPC":"2.0","jsonrpc":"2.0","method":"ping"}"#,
        r#"{"jsonrpc":"2.0","jsonRPC":"2.0","method":"ping"}"#,
        r#"{"jsonrpc":"2.0","jsonrpc":"2.0","method":"ping"}"#,
        r#"{"method":"ping","method":"ping"}"#,
        r#"{"params":{},"params":{},"method":"ping"}"#,
        r#"{"x":1,"X":2,"method":"ping"}"#,
        r#"{"x":1,"y":2,"x":3,"method":"ping"}"#,
        r#"{"method":"tools/call","params":{"arguments":{},"Arguments":{},"name":"a"}}"#,
        r#"{"method":"tools/call","params":{"_META":{},"_meta":{},"name":"a"}}"#,
        r#"{"method":"tools/call","params":{"_meta":{"name":"b"},"name":"a","arguments":{"name":1}}}"#,
        r#"{"method":"tools/call","params":{"Uri":"x","name":"a"}}"#,
        r#"{"method":"resources/read","params":{"URI":"x","uri":"y"}}"#,
        r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"method":"ping"}"#,
        r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"method":"ping"}"#,
        r#"{"id":12x,"method":"ping"}"#,
        r#"{"id":123,"method":"ping"}"#,
        r#"{"id":1.5e3,"method":"ping"}"#,
        r#"{"id":9E2,"method":"ping"}"#,
        r#"{"id":"a\"b","method":"ping"}"#,
        "{\"id\":\"a\tb\",\"method\":\"ping\"}",
        r#"{"jsonrpc":"2.0\u0000","method":"ping"}"#,
        r#"{"jsonrpc":"2.0,"method":"ping"}"#,
        r#"{"x":"é","y":7,"method":"ping"}"#,
        r#"{"id":1,"Id":2}"#,
        r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"method":"ping"}"#,
        r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"method":"ping","Method":"x"}"#,
        r#"{"method\u0000":"tools/call"}"#,
        "{\"meth\x7fod\":\"tools/call\"}",
        "{\"method\":\"tools/call\",\"params\":{\"name\":\"\u{e9}t\u{e9}\"}}",
        "{\"method\":\"tools/call\",\"params\":{\"name\":\"a\tb\"}}",
        r#"{"method":"tools/call","params":{"name":{"x":1}}}"#,
        r#"{"method":"tools/call","params":{"name":["x"]}}"#,
        r#"{"method":"prompts/get","params":{"name":{"x":1e400}}}"#,
        r#"{"method":{"x":[1e400]}}"#,
        r#"{"method":5}"#,
        r#"{"method":null}"#,
        r#"{"method":"ping"} trailing"#,
        r#"[{"method":"ping"},{"method":"tools/call","params":{"name":"a"}}]"#,
        r#"[{"method":"ping"},{"method":"tools/call","params":{"name":"a","nAme":"b"}}]"#,
        r#"[{"method":"ping"},]"#,
        r#"[{"method":"ping"} , {"id":1} ]"#,
        r#"[{"method":"ping"},1]"#,
        r#"[[{"method":"ping"}]]"#,
        "[]",
        "[1]",
        "5",
        "{}",
        "",
        "{",
        "not json",
        "null",
        r#""str""#,
    ];

    fn agree(body: &[u8]) {
        // The borrowed scan reads what the owned one reads.
        let borrowed = scan_borrowed(body);
        let borrowed = borrowed.as_ref().map(|s| s.iter().collect::<Vec<_>>());
        let owned = scan(body);
        let owned = owned
            .as_ref()
            .map(|m| m.iter().map(Message::seen).collect::<Vec<_>>());
        assert_eq!(borrowed, owned, "{}", String::from_utf8_lossy(body));
        if let Some(fast) = fast_scan(body) {
            assert_eq!(
                Ok(fast),
                full_scan(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn fast_path_agrees_with_the_full_scan() {
        for body in TRICKY {
            agree(body.as_bytes());
            // Every prefix too: truncated bodies are refused by both.
            for end in 0..body.len() {
                agree(&body.as_bytes()[..end]);
            }
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        agree(deep.as_bytes());
        let nested = format!("{{\"x\":{}{}}}", "[".repeat(20), "]".repeat(20));
        agree(nested.as_bytes());
        assert!(fast_scan(nested.as_bytes()).is_some());
        agree(b"{\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}");
    }

    #[test]
    fn fast_path_agrees_with_the_full_scan_on_keys_in_any_case_and_order() {
        // Known keys, their case variants and other keys, at both levels, in many orders.
        const TOP: &[&str] = &[
            "\"method\":\"tools/call\"",
            "\"Method\":\"x\"",
            "\"method\" :\"prompts/get\"",
            "\"params\":{@P@}",
            "\"PARAMS\":{}",
            "\"jsonrpc\":\"2.0\"",
            "\"JsonRpc\":\"2.0\"",
            "\"id\":1",
            "\"ID\":2",
            "\"x\":1",
            "\"X\":1",
        ];
        const PARAMS: &[&str] = &[
            "\"name\":\"a\"",
            "\"Name\":\"b\"",
            "\"name\"\t: \"c\"",
            "\"uri\":\"u\"",
            "\"URI\":\"v\"",
            "\"arguments\":{\"name\":1}",
            "\"ARGUMENTS\":{}",
            "\"_meta\":{}",
            "\"y\":[]",
            "\"Y\":null",
        ];
        // A small linear congruential generator: the same bodies on every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize % n
        };
        let mut answered = 0;
        for _ in 0..20_000 {
            let mut pick = |from: &[&str]| -> Vec<String> {
                (0..1 + next(5))
                    .map(|_| from[next(from.len())].to_owned())
                    .collect()
            };
            let params = pick(PARAMS).join(",");
            let body = format!("{{{}}}", pick(TOP).join(",")).replace("@P@", &params);
            agree(body.as_bytes());
            answered += usize::from(fast_scan(body.as_bytes()).is_some());
        }
        // Not all left to the full scan.
        assert!(answered > 1000, "{answered}");
    }

    #[test]
    fn fast_path_answers_the_usual_bodies() {
        for body in [
            TRICKY[0],
            TRICKY[1],
            TRICKY[2],
            TRICKY[3],
            TRICKY[7],
            r#"[{"method":"ping"},{"method":"tools/call","params":{"name":"a"}}]"#,
            r#"{"params":{"_meta":{"progressToken":1},"arguments":{},"name":"a"},"id":"x","method":"tools/call","jsonrpc":"2.0"}"#,
            r#"{"JSONRPC":"2.0","Id":1,"method":"ping","x":1,"X-y":2}"#,
        ] {
            assert!(fast_scan(body.as_bytes()).is_some(), "{body}");
        }
        let m = fast_scan(TRICKY[0].as_bytes()).unwrap().remove(0);
        assert_eq!(
            (m.method.as_deref(), m.tool.as_deref()),
            (Some("tools/call"), Some("echo"))
        );
    }
}
