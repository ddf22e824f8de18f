//! A token's claims, read in one pass into one string and one list: the names and the string
//! values end to end in the string, the list saying where each claim's name and value are, other
//! values kept as JSON beside them. A token's claims then cost two allocations (and one per value
//! that is neither a string nor a number), which matters most when a cached token is evicted:
//! each allocation freed is a cache line fetched.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::Text;
use crate::scopes::Granted;

/// Claims up to this many are checked for repeats as they are read, each against those before
/// it; a token with more is checked once read, by sorting the names.
const CHECKED_AS_READ: usize = 16;

/// A token's claims, in the token's order. Each name appears once: a token that repeats a claim
/// is refused, as two readers could take different values of it.
#[derive(Clone, Default, PartialEq)]
pub struct Claims {
    /// The names and string values, one after another.
    text: String,
    members: Vec<Member>,
}

/// Where one claim is.
#[derive(Clone, PartialEq)]
struct Member {
    /// Where the name starts and ends in `text`.
    name: (usize, usize),
    value: Stored,
}

#[derive(Clone, PartialEq)]
enum Stored {
    /// A string, in `text` from the end of the name to here.
    Text(usize),
    /// Any other value.
    Json(Value),
}

/// A claim's value.
#[derive(Clone, Copy, PartialEq)]
pub enum Claim<'a> {
    /// A string.
    Str(&'a str),
    /// Any other JSON value (never a string).
    Json(&'a Value),
}

impl<'a> Claim<'a> {
    /// The string, if the claim is one.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Claim::Str(text) => Some(text),
            Claim::Json(_) => None,
        }
    }

    /// The number, if the claim is a non-negative integer.
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Claim::Json(value) => value.as_u64(),
            Claim::Str(_) => None,
        }
    }

    /// Whether the claim is `null`.
    pub fn is_null(self) -> bool {
        matches!(self, Claim::Json(Value::Null))
    }
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Str(text) => fmt::Debug::fmt(text, f),
            Claim::Json(value) => fmt::Debug::fmt(value, f),
        }
    }
}

impl Claims {
    /// The scopes the token grants, from its `scope` and `scp` claims (string or array).
    pub fn granted(&self) -> Granted {
        Granted::collect(|f| self.each_scope(f))
    }

    /// Calls `f` with each scope of the `scope` and `scp` claims, in the token's order, repeats
    /// included, until `f` answers false; returns false if it did.
    fn each_scope<'a>(&'a self, f: &mut dyn FnMut(&'a str) -> bool) -> bool {
        for name in ["scope", "scp"] {
            let (text, items) = match self.get(name) {
                Some(Claim::Str(text)) => (text, &[][..]),
                Some(Claim::Json(Value::Array(items))) => ("", items.as_slice()),
                _ => continue,
            };
            let texts = std::iter::once(text).chain(items.iter().filter_map(Value::as_str));
            for scope in texts.flat_map(str::split_ascii_whitespace) {
                if !f(scope) {
                    return false;
                }
            }
        }
        true
    }

    /// The value of the claim `name`.
    pub fn get(&self, name: &str) -> Option<Claim<'_>> {
        let (text, name) = (self.text.as_bytes(), name.as_bytes());
        // Names are short and often of one length (`iss`, `aud`, `exp`…): compared byte by byte
        // in place, cheaper than a call to compare memory.
        self.members
            .iter()
            .find(|m| {
                let (start, end) = m.name;
                end - start == name.len() && text[start..end].iter().zip(name).all(|(a, b)| a == b)
            })
            .map(|m| self.value(m))
    }

    /// The claims, in the token's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Claim<'_>)> {
        self.members
            .iter()
            .map(|m| (&self.text[m.name.0..m.name.1], self.value(m)))
    }

    fn value<'a>(&'a self, member: &'a Member) -> Claim<'a> {
        match &member.value {
            Stored::Text(end) => Claim::Str(&self.text[member.name.1..*end]),
            Stored::Json(value) => Claim::Json(value),
        }
    }

    /// Adds a claim, not checking for a repeat.
    fn push(&mut self, name: &str, value: Parsed<'_>) {
        let start = self.text.len();
        self.text.push_str(name);
        let name = (start, self.text.len());
        let value = match value {
            Parsed::Str(text) => {
                self.text.push_str(&text);
                Stored::Text(self.text.len())
            }
            Parsed::Json(value) => Stored::Json(value),
        };
        self.members.push(Member { name, value });
    }

    /// Whether some name appears twice.
    fn has_repeats(&self) -> bool {
        let mut names: Vec<&str> = self.iter().map(|(name, _)| name).collect();
        names.sort_unstable();
        names.windows(2).any(|pair| pair[0] == pair[1])
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Self {
        let mut claims = Claims::default();
        for (name, value) in map {
            let value = match value {
                Value::String(text) => Parsed::Str(Cow::Owned(text)),
                other => Parsed::Json(other),
            };
            claims.push(&name, value);
        }
        claims
    }
}

/// A claim's value as read: a string borrowed from the input when it holds no escapes.
enum Parsed<'a> {
    Str(Cow<'a, str>),
    Json(Value),
}

impl<'de> Deserialize<'de> for Parsed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Parsed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Str(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Str(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Str(Cow::Owned(text)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Json(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Json(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Json(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Json(Value::from(n)))
            }
            fn visit_unit<E>(self) -> Result<Parsed<'de>, E> {
                Ok(Parsed::Json(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Parsed<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Parsed::Json)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Parsed<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Parsed::Json)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Claims;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Claims, A::Error> {
                let mut claims = Claims {
                    text: String::with_capacity(256),
                    members: Vec::with_capacity(8),
                };
                while let Some(Text(name)) = access.next_key::<Text<'de>>()? {
                    if claims.members.len() < CHECKED_AS_READ && claims.get(&name).is_some() {
                        return Err(de::Error::custom("repeated claim"));
                    }
                    let value = access.next_value::<Parsed<'de>>()?;
                    claims.push(&name, value);
                }
                if claims.members.len() > CHECKED_AS_READ && claims.has_repeats() {
                    return Err(de::Error::custom("repeated claim"));
                }
                Ok(claims)
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Claims, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn keeps_every_claim_in_order_with_escapes_read() {
        let json = r#"{"sub":"a","n\u0061me":"b\"\u00e9","groups":["x",{"y":[1.5]}],"exp":5,
            "neg":-2,"ok":true,"none":null,"obj":{"k":"v"},"":""}"#;
        let claims = parse(json).unwrap();
        let names = [
            "sub", "name", "groups", "exp", "neg", "ok", "none", "obj", "",
        ];
        assert_eq!(claims.iter().map(|(n, _)| n).collect::<Vec<_>>(), names);
        let read: Map<String, Value> = serde_json::from_str(json).unwrap();
        for name in names {
            let expected = &read[name];
            match claims.get(name).unwrap() {
                Claim::Str(text) => assert_eq!(Some(text), expected.as_str(), "{name}"),
                Claim::Json(value) => assert_eq!(value, expected, "{name}"),
            }
        }
        assert_eq!(claims.get("name"), Some(Claim::Str("b\"é")));
        assert_eq!(claims.get("exp").and_then(Claim::as_u64), Some(5));
        assert!(claims.get("none").is_some_and(Claim::is_null));
        assert_eq!(claims.get("nam"), None);
        assert_eq!(claims.get("subname"), None);
        assert_eq!(claims.get("a"), None, "a value is not a name");
        let map = serde_json::from_str::<Map<String, Value>>(r#"{"b":"1","a":[2]}"#).unwrap();
        assert_eq!(
            Claims::from(map),
            parse(r#"{"a":[2],"b":"1"}"#).unwrap(),
            "a map's claims are the same claims"
        );
    }

    #[test]
    fn refuses_a_repeated_claim_however_many_there_are() {
        assert!(parse(r#"{"a":1,"b":2,"a":3}"#).is_err());
        assert!(parse(r#"{"a":1,"\u0061":1}"#).is_err());
        assert!(parse(r#"{"":1,"":1}"#).is_err());
        for count in [CHECKED_AS_READ, CHECKED_AS_READ + 1, 100] {
            let names: Vec<String> = (0..count).map(|i| format!("c{i}")).collect();
            let object = |names: &[String]| {
                let members: Vec<String> = names.iter().map(|n| format!(r#""{n}":0"#)).collect();
                format!("{{{}}}", members.join(","))
            };
            assert_eq!(parse(&object(&names)).unwrap().iter().count(), count);
            for (first, second) in [(0, 1), (0, count - 1), (count - 2, count - 1)] {
                let mut repeated = names.clone();
                repeated[second] = repeated[first].clone();
                assert!(
                    parse(&object(&repeated)).is_err(),
                    "{count}: {first} {second}"
                );
            }
        }
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for json in [r#"["a"]"#, "null", r#"{"a":1"#, r#"{"a":1} x"#, r#"{"a":}"#] {
            assert!(parse(json).is_err(), "{json}");
        }
    }
}
