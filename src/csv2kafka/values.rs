//! Typed message values (`csv.columns`, SPEC-csv2kafka.md): a column declared `number`
//! or `bool` becomes a JSON number or boolean, every other column stays a string (so an
//! identifier like `007` is never changed). A number is written exactly as the field
//! spells it, so nothing is rounded; a field that is not a JSON number (or `true` /
//! `false` for a bool) makes the row malformed, and an empty field becomes `null`.

use std::collections::BTreeMap;

use super::csv::{Fields, push_json_string};

/// A column's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    Bool,
}

impl Kind {
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "string" => Some(Kind::String),
            "number" => Some(Kind::Number),
            "bool" | "boolean" => Some(Kind::Bool),
            _ => None,
        }
    }
}

/// Each header column's kind (strings where `columns` says nothing); the declared
/// columns the header does not have.
pub fn kinds(header: &[String], columns: &BTreeMap<String, Kind>) -> (Vec<Kind>, Vec<String>) {
    let kinds = header
        .iter()
        .map(|h| columns.get(h).copied().unwrap_or(Kind::String))
        .collect();
    let missing = columns
        .keys()
        .filter(|c| !header.contains(c))
        .cloned()
        .collect();
    (kinds, missing)
}

/// The JSON object of a row with typed values, over `out`; `Err` names the first field
/// that is not of its column's type.
pub fn to_json_typed(
    keys: &[String],
    kinds: &[Kind],
    fields: &Fields,
    out: &mut String,
) -> Result<(), String> {
    out.clear();
    out.push('{');
    for (i, (key, value)) in keys.iter().zip(fields.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        match kinds.get(i).copied().unwrap_or(Kind::String) {
            Kind::String => push_json_string(out, value),
            _ if value.is_empty() => out.push_str("null"),
            Kind::Number if is_json_number(value) => out.push_str(value),
            Kind::Bool if value.eq_ignore_ascii_case("true") => out.push_str("true"),
            Kind::Bool if value.eq_ignore_ascii_case("false") => out.push_str("false"),
            kind => {
                let name = key.trim_end_matches(':');
                let mut shown = value.chars().take(40).collect::<String>();
                if shown.len() < value.len() {
                    shown.push('…');
                }
                return Err(format!(
                    "column {name} is {}: {shown:?} is not one",
                    match kind {
                        Kind::Number => "a number",
                        _ => "a bool (true or false)",
                    }
                ));
            }
        }
    }
    out.push('}');
    Ok(())
}

/// Whether `s` is a number as JSON writes one (RFC 8259 §6): `-`, then `0` or digits
/// without a leading zero, an optional fraction and exponent.
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::super::csv::json_keys;
    use super::*;

    #[test]
    fn json_numbers_as_serde_json_reads_them() {
        for s in [
            "0",
            "-0",
            "7",
            "12.5",
            "-3.25e-7",
            "1E+9",
            "6.02e23",
            "123456789012345678901234567890",
            "",
            "-",
            "007",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            " 1",
            "1 ",
            "NaN",
            "inf",
            "0x10",
            "1,5",
            "--1",
            "0.0.1",
        ] {
            // serde_json's reader, less the whitespace JSON allows around a value.
            let serde = s.trim() == s && serde_json::from_str::<serde_json::Number>(s).is_ok();
            assert_eq!(is_json_number(s), serde, "{s:?}");
        }
    }

    #[test]
    fn typed_columns_become_numbers_and_booleans_and_the_rest_stay_strings() {
        let header: Vec<String> = ["vin", "speed", "ok", "note"].map(String::from).to_vec();
        let columns = BTreeMap::from([
            ("speed".to_string(), Kind::Number),
            ("ok".to_string(), Kind::Bool),
            ("vin".to_string(), Kind::String),
            ("gone".to_string(), Kind::Number),
        ]);
        let (kinds, missing) = kinds(&header, &columns);
        assert_eq!(missing, vec!["gone".to_string()]);
        let keys = json_keys(&header);
        let mut out = String::new();
        let row = |v: [&str; 4]| Fields::from_strs(&v);
        to_json_typed(&keys, &kinds, &row(["007", "12.50", "TRUE", "x"]), &mut out).expect("ok");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"vin": "007", "speed": 12.50, "ok": true, "note": "x"})
        );
        assert!(out.contains("\"speed\":12.50"), "{out}");
        to_json_typed(&keys, &kinds, &row(["1", "", "", ""]), &mut out).expect("ok");
        assert_eq!(out, r#"{"vin":"1","speed":null,"ok":null,"note":""}"#);
        let bad = to_json_typed(&keys, &kinds, &row(["1", "fast", "true", ""]), &mut out);
        assert_eq!(
            bad,
            Err(r#"column "speed" is a number: "fast" is not one"#.to_string())
        );
        let bad = to_json_typed(&keys, &kinds, &row(["1", "1", "yes", ""]), &mut out);
        assert!(bad.is_err_and(|e| e.contains("a bool")));
    }
}
