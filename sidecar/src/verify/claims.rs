//! A token's claims, read in one pass: the names kept end to end in one string, each value
//! beside where its name ends, so a token's claims cost two allocations and the values' own.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::Text;

/// Claims up to this many are checked for repeats as they are read, each against those before
/// it; a token with more is checked once read, by sorting the names.
const CHECKED_AS_READ: usize = 16;

/// A token's claims, in the token's order. Each name appears once: a token that repeats a claim
/// is refused, as two readers could take different values of it.
#[derive(Clone, Default, PartialEq)]
pub struct Claims {
    /// The names, one after another.
    names: String,
    /// Each claim: where its name ends in `names`, and its value.
    members: Vec<(usize, Value)>,
}

impl Claims {
    /// The value of the claim `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let (names, name) = (self.names.as_bytes(), name.as_bytes());
        let mut start = 0;
        for (end, value) in &self.members {
            if names[start..*end] == *name {
                return Some(value);
            }
            start = *end;
        }
        None
    }

    /// The claims, in the token's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let mut start = 0;
        self.members.iter().map(move |(end, value)| {
            let name = &self.names[start..*end];
            start = *end;
            (name, value)
        })
    }

    /// Adds a claim, not checking for a repeat.
    fn push(&mut self, name: &str, value: Value) {
        self.names.push_str(name);
        self.members.push((self.names.len(), value));
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
            claims.push(&name, value);
        }
        claims
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
                    names: String::with_capacity(64),
                    members: Vec::with_capacity(8),
                };
                while let Some(Text(name)) = access.next_key::<Text<'de>>()? {
                    if claims.members.len() < CHECKED_AS_READ && claims.get(&name).is_some() {
                        return Err(de::Error::custom("repeated claim"));
                    }
                    let value = access.next_value::<Value>()?;
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
    fn keeps_every_claim_in_order_with_escaped_names_read() {
        let claims = parse(r#"{"sub":"a","n\u0061me":"b","groups":["x"],"exp":5}"#).unwrap();
        assert_eq!(
            claims.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["sub", "name", "groups", "exp"]
        );
        assert_eq!(claims.get("name"), Some(&Value::from("b")));
        assert_eq!(claims.get("exp"), Some(&Value::from(5)));
        assert_eq!(claims.get("nam"), None);
        assert_eq!(claims.get("subname"), None);
        let map = serde_json::from_str::<Map<String, Value>>(r#"{"b":1,"a":[2]}"#).unwrap();
        assert_eq!(
            Claims::from(map),
            parse(r#"{"a":[2],"b":1}"#).unwrap(),
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
