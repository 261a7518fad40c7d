//! Reading the config's JSON strictly: a UTF-8 byte-order mark is skipped, a key given
//! twice in one object is an error naming it (serde_json would silently keep the last),
//! and a value of the wrong type is reported at its own field (`s3.concurrency`), not at
//! the section holding it. Pure.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ConfigError;

/// Parses config text into a JSON value, rejecting duplicate keys. The error is
/// serde_json's, with its line and column.
pub fn parse(text: &str) -> Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict {
        path: String::new(),
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Builds a [`Value`] like serde_json's own, but fails on a duplicate key. `path` is
/// where in the document the value is, for the message.
struct Strict {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = format!("{}[{}]", self.path, items.len());
            match seq.next_element_seed(Strict { path })? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "`{path}` is given twice (JSON keeps only one: remove the other)"
                )));
            }
            let value = map.next_value_seed(Strict { path })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Reads `value` (found at `field`) as `T`. A type error names the field it is in and
/// says what was expected in words; unknown and missing keys name the full path.
pub fn typed<T: DeserializeOwned>(field: &str, value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let at = join(field, if inner == "." { "" } else { &inner });
        let msg = e.into_inner().to_string();
        // serde says "unknown field `x`, expected ...", the path ending at `x`; and
        // "missing field `x`", the path ending at the object that lacks it.
        if msg.starts_with("unknown field `") {
            return ConfigError::field(at, "unknown key");
        }
        if let Some(rest) = msg.strip_prefix("missing field `")
            && let Some(end) = rest.find('`')
        {
            return ConfigError::field(join(&at, &rest[..end]), "missing");
        }
        ConfigError::field(at, plain(&msg))
    })
}

fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (_, true) => parent.to_string(),
        (true, false) => child.to_string(),
        // An index joins without a dot: `sources` + `[0]`.
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

/// serde's type words in an operator's: "expected i64" → "expected a whole number".
fn plain(msg: &str) -> String {
    const WORDS: [(&str, &str); 10] = [
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected a string"),
        ("expected a sequence", "expected a list [...]"),
        ("expected struct", "expected an object {...}:"),
        (
            "data did not match any variant of untagged enum Quantity",
            "expected a number, or a string with a unit such as \"8MiB\" or \"90s\"",
        ),
    ];
    let mut out = msg.to_string();
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_named_with_their_path() {
        let e = parse(r#"{"s3": {"bucket": "a", "bucket": "b"}}"#).expect_err("dup");
        assert!(e.contains("`s3.bucket` is given twice"), "{e}");
        let e =
            parse(r#"{"sources": [{"name": "a"}, {"name": "b", "name": "c"}]}"#).expect_err("dup");
        assert!(e.contains("`sources[1].name` is given twice"), "{e}");
        assert!(parse(r#"{"a": {"x": 1}, "b": {"x": 1}}"#).is_ok());
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_trailing_text_refused() {
        let v = parse("\u{feff}{\"a\": 1}").expect("bom");
        assert_eq!(v["a"], 1);
        assert!(parse("{\"a\": 1} x").is_err());
        assert_eq!(parse("[1, 2.5, null, true]").expect("array")[1], 2.5);
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        concurrency: Option<i64>,
        flag: Option<bool>,
    }

    #[test]
    fn type_errors_name_the_field_itself() {
        let e = typed::<Inner>("s3", serde_json::json!({"concurrency": "2"})).expect_err("type");
        assert_eq!(
            e.to_string(),
            "config field `s3.concurrency`: invalid type: string \"2\", expected a whole number"
        );
        let e = typed::<Inner>("s3", serde_json::json!({"flag": 1})).expect_err("type");
        assert!(e.to_string().contains("`s3.flag`"), "{e}");
        let e = typed::<Inner>("s3", serde_json::json!({"nope": 1})).expect_err("unknown");
        assert_eq!(e.to_string(), "config field `s3.nope`: unknown key");
        let e = typed::<Vec<Inner>>("xs", serde_json::json!([{}, {"flag": "y"}])).expect_err("t");
        assert!(e.to_string().contains("`xs[1].flag`"), "{e}");
    }
}
