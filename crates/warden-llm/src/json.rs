//! An order-preserving JSON value for the bodies warden rewrites: members keep their order (a rewritten request or
//! event differs from the original only where warden changed it), and an object with a repeated key is refused
//! (parsers disagree on which one wins, which would let a request show warden one model and the provider another).
//!
//! Parsed by serde_json (its recursion limit of 128 bounds the nesting); numbers are serde_json's (`u64`, `i64` or
//! `f64`).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use warden_mask::{Kind, Masker};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Json, String> {
        serde_json::from_slice(bytes).map_err(|error| error.to_string())
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a JSON value always serializes")
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(name, _)| name == key).map(|(_, value)| value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(members) => members.iter_mut().find(|(name, _)| name == key).map(|(_, value)| value),
            _ => None,
        }
    }

    /// Sets `key` (in place if present, appended otherwise); does nothing on a non-object.
    pub(crate) fn set(&mut self, key: &str, value: Json) {
        if let Json::Object(members) = self {
            match members.iter_mut().find(|(name, _)| name == key) {
                Some((_, slot)) => *slot = value,
                None => members.push((key.to_string(), value)),
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Json> {
        match self {
            Json::Object(members) => {
                let index = members.iter().position(|(name, _)| name == key)?;
                Some(members.remove(index).1)
            }
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(number) => number.as_u64(),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// A member that is absent or `null` is `None`.
    pub(crate) fn member(&self, key: &str) -> Option<&Json> {
        self.get(key).filter(|value| !value.is_null())
    }

    pub(crate) fn str_member(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }
}

/// Masks every string value in `value` (keys untouched) by content detection, and every number whose digits a
/// detector finds (a card number sent as a JSON number), which becomes a string of its masked form. Members named
/// in `skip` are left alone (embedding vectors: numbers or base64, never text). Returns the number of values masked.
pub(crate) fn mask_values(value: &mut Json, masker: &Masker, skip: &[&str], found: &mut dyn FnMut(Kind)) -> usize {
    let mut count = 0;
    mask_values_into(value, masker, skip, &mut |kind| {
        count += 1;
        found(kind);
    });
    count
}

fn mask_values_into(value: &mut Json, masker: &Masker, skip: &[&str], found: &mut dyn FnMut(Kind)) {
    match value {
        Json::String(text) => {
            if let std::borrow::Cow::Owned(masked) = masker.mask_counting(text, found) {
                *text = masked;
            }
        }
        Json::Number(number) => {
            let digits = number.to_string();
            if let std::borrow::Cow::Owned(masked) = masker.mask_counting(&digits, found) {
                *value = Json::String(masked);
            }
        }
        Json::Array(items) => {
            for item in items {
                mask_values_into(item, masker, skip, found);
            }
        }
        Json::Object(members) => {
            for (name, member) in members {
                if !skip.contains(&name.as_str()) {
                    mask_values_into(member, masker, skip, found);
                }
            }
        }
        Json::Null | Json::Bool(_) => {}
    }
}

/// Token-level log probabilities carry the answer's tokens one by one, where no detector can see a value split
/// across tokens: every `logprobs` member is emptied (an array becomes `[]`, anything else `null`).
pub(crate) fn drop_logprobs(value: &mut Json) {
    match value {
        Json::Array(items) => items.iter_mut().for_each(drop_logprobs),
        Json::Object(members) => {
            for (name, member) in members {
                if name == "logprobs" {
                    *member = match member {
                        Json::Array(_) => Json::Array(Vec::new()),
                        _ => Json::Null,
                    };
                } else {
                    drop_logprobs(member);
                }
            }
        }
        _ => {}
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(value) => serializer.serialize_bool(*value),
            Json::Number(number) => number.serialize(serializer),
            Json::String(text) => serializer.serialize_str(text),
            Json::Array(items) => {
                let mut sequence = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    sequence.serialize_element(item)?;
                }
                sequence.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (name, value) in members {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(value).map(Json::Number).ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some((name, value)) = access.next_entry::<String, Json>()? {
            members.push((name, value));
        }
        let mut names: Vec<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(de::Error::custom(format!("the key \"{}\" appears twice in one object", pair[0])));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_and_repeated_keys_refused() {
        let text = br#"{"z":1,"a":[true,null,"x",-2,1.5],"m":{"k":"v"}}"#;
        let value = Json::parse(text).unwrap();
        assert_eq!(value.to_vec(), text.to_vec());
        let error = Json::parse(br#"{"model":"a","x":{},"model":"b"}"#).unwrap_err();
        assert!(error.contains("the key \"model\" appears twice"), "{error}");
        assert!(Json::parse(&[b'['; 200]).is_err());
    }
}
