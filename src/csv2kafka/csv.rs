//! A streaming RFC 4180 reader that never loses a row: quoted fields, doubled quotes,
//! delimiters and line breaks inside quotes, CRLF or LF, a byte-order mark on the first
//! line, a last line without a newline. Each record comes with its raw bytes and the byte
//! offset just past it, so a job can checkpoint where to start again.
//!
//! A malformed record (wrong field count, invalid UTF-8, a quote never closed) is
//! returned as such with its raw bytes and never swallows the rows after it: a record
//! that spans several physical lines and does not parse is cut back to its first line,
//! and the lines after it are read again as records of their own. Memory is bounded by
//! [`MAX_RECORD_BYTES`]. Pure: reads from any `BufRead`.

use std::collections::VecDeque;
use std::io::{self, BufRead};

/// The longest record accepted; a longer one is malformed (a quote left open).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    FieldCount { expected: usize, found: usize },
    Utf8,
    UnterminatedQuote,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::FieldCount { expected, found } => {
                write!(f, "{found} fields where the header has {expected}")
            }
            Malformed::Utf8 => f.write_str("not valid UTF-8"),
            Malformed::UnterminatedQuote => f.write_str("a quote that is never closed"),
        }
    }
}

/// One data record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1 for the first data row.
    pub line: u64,
    /// The record as it was in the object, without its final line break.
    pub raw: Vec<u8>,
    pub fields: Result<Fields, Malformed>,
    /// Offset in the (decompressed) stream just past this record.
    pub end: u64,
}

/// A record's fields, unquoted, end to end in one buffer: two allocations a row rather
/// than one a field (they were a fifth of the CPU).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split<T> {
    text: T,
    /// Where each field ends in `text`.
    ends: Vec<usize>,
}

/// Well-formed fields: UTF-8, each on character boundaries.
pub type Fields = Split<String>;

impl<T: AsRef<[u8]>> Split<T> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let end = *self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |j| self.ends[j]);
        Some(start..end)
    }

    fn bytes(&self, i: usize) -> Option<&[u8]> {
        self.range(i).map(|r| &self.text.as_ref()[r])
    }
}

impl Fields {
    pub fn get(&self, i: usize) -> Option<&str> {
        self.range(i).map(|r| &self.text[r])
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for Fields {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for Fields {
    fn eq(&self, other: &[S; N]) -> bool {
        self == &other[..]
    }
}

/// Fields as they were read, not yet checked.
type RawFields = Split<Vec<u8>>;

impl RawFields {
    fn push(&mut self, bytes: &[u8]) {
        self.text.extend_from_slice(bytes);
        self.ends.push(self.text.len());
    }

    /// The fields as text, or why they are not.
    fn into_text(self) -> Result<Fields, Malformed> {
        let text = String::from_utf8(self.text).map_err(|_| Malformed::Utf8)?;
        // Valid as a whole but cut inside a character: a field was not valid on its own.
        if !self.ends.iter().all(|&e| text.is_char_boundary(e)) {
            return Err(Malformed::Utf8);
        }
        Ok(Split {
            text,
            ends: self.ends,
        })
    }
}

pub struct Reader<R> {
    inner: R,
    delimiter: u8,
    /// Physical lines read but given back, with their start offsets.
    pending: VecDeque<(u64, Vec<u8>)>,
    /// Offset of the next byte `inner` gives.
    offset: u64,
    columns: Option<usize>,
    header: Option<Vec<String>>,
    next_line: u64,
    first: bool,
}

/// A record's raw bytes (no final line break) and its fields.
type Raw = (Vec<u8>, RawFields);

enum Parsed {
    Fields(RawFields),
    /// Ends inside quotes.
    Open,
}

impl<R: BufRead> Reader<R> {
    /// A reader of `inner`, which starts at `offset` of the stream; the next data row is
    /// numbered `next_line`. `header` is the header already read (on resume), or `None`
    /// to read it from the first line when `has_header`.
    pub fn new(inner: R, delimiter: u8, offset: u64, next_line: u64) -> Reader<R> {
        Reader {
            inner,
            delimiter,
            pending: VecDeque::new(),
            offset,
            columns: None,
            header: None,
            next_line,
            first: offset == 0,
        }
    }

    /// Reads the header line (the first record). `Ok(None)` for an empty stream.
    pub fn read_header(&mut self) -> io::Result<Option<Vec<String>>> {
        loop {
            let Some((start, record)) = self.record()? else {
                return Ok(None);
            };
            if is_blank(&record) {
                continue;
            }
            let fields = match self.parse_record(start, record)? {
                Some((_, f)) => f,
                None => {
                    // A header with an open quote: its first line is the header.
                    let (_, first) = self.take_line()?.unwrap_or_default();
                    match split(self.strip_bom(trim_break(&first)), self.delimiter) {
                        Parsed::Fields(f) => f,
                        Parsed::Open => {
                            let mut whole = RawFields::default();
                            whole.push(&first);
                            whole
                        }
                    }
                }
            };
            let names: Vec<String> = (0..fields.len())
                .filter_map(|i| fields.bytes(i))
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            self.columns = Some(names.len());
            self.header = Some(names.clone());
            return Ok(Some(names));
        }
    }

    /// Sets the header (read earlier, or made of column numbers).
    pub fn set_header(&mut self, names: Vec<String>) {
        self.columns = Some(names.len());
        self.header = Some(names);
    }

    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// The next data row, or `None` at the end of the stream.
    pub fn next_row(&mut self) -> io::Result<Option<Row>> {
        loop {
            let Some((start, record)) = self.record()? else {
                return Ok(None);
            };
            if is_blank(&record) {
                continue;
            }
            let line = self.next_line;
            let (raw, fields) = match self.parse_record(start, record)? {
                Some((raw, fields)) => (raw, self.check(fields)),
                None => {
                    // Cut back to its first physical line, given back by parse_record.
                    let (_, first) = self.take_line()?.unwrap_or_default();
                    (
                        trim_break(&first).to_vec(),
                        Err(Malformed::UnterminatedQuote),
                    )
                }
            };
            self.next_line += 1;
            if self.columns.is_none() {
                // No header: the first row sets the width.
                if let Ok(f) = &fields {
                    self.columns = Some(f.len());
                }
            }
            return Ok(Some(Row {
                line,
                raw,
                fields,
                end: self.position(),
            }));
        }
    }

    /// Offset of the first byte not yet returned in a record.
    pub fn position(&self) -> u64 {
        self.pending
            .front()
            .map_or(self.offset, |(start, _)| *start)
    }

    fn check(&self, fields: RawFields) -> Result<Fields, Malformed> {
        if let Some(expected) = self.columns
            && fields.len() != expected
        {
            return Err(Malformed::FieldCount {
                expected,
                found: fields.len(),
            });
        }
        fields.into_text()
    }

    /// Parses a record that starts with the line at `start`: its raw bytes and fields,
    /// or `None` when it does not close (or closes at the wrong width after spanning
    /// lines): then all its lines are given back, for the caller to take the first as
    /// malformed.
    fn parse_record(&mut self, start: u64, record: Vec<u8>) -> io::Result<Option<Raw>> {
        let mut joined = record;
        // The physical lines joined, once there is more than one.
        let mut lines = Vec::new();
        let first = (start, joined.len());
        loop {
            let parsed = split(self.strip_bom(trim_break(&joined)), self.delimiter);
            let open = matches!(parsed, Parsed::Open);
            if let Parsed::Fields(f) = parsed
                && (lines.is_empty() || self.columns.is_none_or(|c| c == f.len()))
            {
                self.first = false;
                let len = trim_break(&joined).len();
                joined.truncate(len);
                return Ok(Some((joined, f)));
            }
            let more = if open && joined.len() < MAX_RECORD_BYTES {
                self.take_line()?
            } else {
                None
            };
            match more {
                Some((at, line)) => {
                    if lines.is_empty() {
                        lines.push(first);
                    }
                    lines.push((at, line.len()));
                    joined.extend_from_slice(&line);
                }
                None => {
                    if lines.is_empty() {
                        lines.push(first);
                    }
                    let mut rest = joined.as_slice();
                    let mut back = Vec::with_capacity(lines.len());
                    for (at, len) in lines {
                        let (line, tail) = rest.split_at(len);
                        back.push((at, line.to_vec()));
                        rest = tail;
                    }
                    for line in back.into_iter().rev() {
                        self.pending.push_front(line);
                    }
                    self.first = false;
                    return Ok(None);
                }
            }
        }
    }

    fn strip_bom<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        if self.first {
            bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
        } else {
            bytes
        }
    }

    fn record(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        self.take_line()
    }

    /// The next physical line with its line break, and its start offset.
    fn take_line(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        if let Some(line) = self.pending.pop_front() {
            return Ok(Some(line));
        }
        let mut line = Vec::new();
        let n = read_line_bounded(&mut self.inner, &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        let start = self.offset;
        self.offset += n as u64;
        Ok(Some((start, line)))
    }
}

/// `read_until(b'\n')`, but a line longer than [`MAX_RECORD_BYTES`] is returned in
/// pieces rather than held whole.
fn read_line_bounded(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let (done, used) = {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(total);
            }
            let room = MAX_RECORD_BYTES.saturating_sub(out.len()).max(1);
            match buf.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&buf[..=i]);
                    (true, i + 1)
                }
                None => {
                    let n = buf.len().min(room);
                    out.extend_from_slice(&buf[..n]);
                    (out.len() >= MAX_RECORD_BYTES, n)
                }
            }
        };
        r.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    trim_break(line).is_empty()
}

fn trim_break(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits one record's bytes (no final line break) into fields.
fn split(body: &[u8], delimiter: u8) -> Parsed {
    let mut fields = Split {
        text: Vec::with_capacity(body.len()),
        ends: Vec::with_capacity(16),
    };
    let mut i = 0;
    loop {
        if body.get(i) == Some(&b'"') {
            // A quoted field: doubled quotes are one; it ends at a quote not doubled.
            i += 1;
            loop {
                let Some(rel) = body[i..].iter().position(|&b| b == b'"') else {
                    return Parsed::Open;
                };
                fields.text.extend_from_slice(&body[i..i + rel]);
                i += rel + 1;
                if body.get(i) == Some(&b'"') {
                    fields.text.push(b'"');
                    i += 1;
                } else {
                    break;
                }
            }
        }
        // Up to the delimiter: an unquoted field whole (a quote inside it is kept as it
        // is), or what follows a closing quote (lenient).
        let end = body[i..]
            .iter()
            .position(|&b| b == delimiter)
            .map_or(body.len(), |p| i + p);
        fields.push(&body[i..end]);
        i = end;
        if i >= body.len() {
            return Parsed::Fields(fields);
        }
        i += 1; // the delimiter
        if i == body.len() {
            fields.push(b"");
            return Parsed::Fields(fields);
        }
    }
}

/// The JSON keys of a header, `"name":` each, escaped once for every row.
pub fn json_keys(header: &[String]) -> Vec<String> {
    header
        .iter()
        .map(|name| {
            let mut key = String::new();
            push_json_string(&mut key, name);
            key.push(':');
            key
        })
        .collect()
}

/// The JSON object of a row: header names (as [`json_keys`]) to fields, in header
/// order, written over `out` (one buffer for every row).
pub fn to_json(keys: &[String], fields: &Fields, out: &mut String) {
    out.clear();
    out.push('{');
    for (i, (key, value)) in keys.iter().zip(fields.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        push_json_string(out, value);
    }
    out.push('}');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    // Most fields need no escape: a check without early exit (which the compiler
    // vectorizes) and a copy whole.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    while let Some(rel) = bytes[start..].iter().position(|&b| needs_escape(b)) {
        let i = start + rel;
        out.push_str(&s[start..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b => out.push_str(&format!("\\u{b:04x}")),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &[u8]) -> (Vec<String>, Vec<Row>) {
        let mut r = Reader::new(text, b',', 0, 1);
        let header = r.read_header().expect("read").unwrap_or_default();
        let mut out = Vec::new();
        while let Some(row) = r.next_row().expect("read") {
            out.push(row);
        }
        (header, out)
    }

    fn ok(row: &Row) -> Vec<&str> {
        row.fields.as_ref().expect("well-formed").iter().collect()
    }

    #[test]
    fn rfc4180_quoting_crlf_bom_and_a_last_line_without_newline() {
        let text =
            "\u{feff}id,text,n\r\n1,\"a, \"\"quoted\"\"\r\nline\",3\r\n2,,\r\n3,ünï,x".as_bytes();
        let (header, rows) = rows(text);
        assert_eq!(header, ["id", "text", "n"]);
        assert_eq!(rows.len(), 3);
        assert_eq!(ok(&rows[0]), ["1", "a, \"quoted\"\r\nline", "3"]);
        assert_eq!(ok(&rows[1]), ["2", "", ""]);
        assert_eq!(ok(&rows[2]), ["3", "ünï", "x"]);
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(rows[2].end, text.len() as u64);
        assert_eq!(rows[0].raw, b"1,\"a, \"\"quoted\"\"\r\nline\",3");
    }

    #[test]
    fn malformed_rows_are_returned_and_never_swallow_the_next() {
        // "\xc3" and "\xa9" are each invalid, though "é" together.
        let text = b"a,b\n1,2,3\n\xff,x\n1,\"open\n2,y\n\xc3,\xa9\n3,z\n";
        let (_, rows) = rows(text);
        let verdicts: Vec<_> = rows.iter().map(|r| r.fields.clone().err()).collect();
        assert_eq!(
            verdicts,
            [
                Some(Malformed::FieldCount {
                    expected: 2,
                    found: 3
                }),
                Some(Malformed::Utf8),
                Some(Malformed::UnterminatedQuote),
                None,
                Some(Malformed::Utf8),
                None,
            ]
        );
        assert_eq!(rows[2].raw, b"1,\"open");
        assert_eq!(ok(&rows[3]), ["2", "y"]);
        assert_eq!(rows.last().map(|r| r.line), Some(6));
    }

    #[test]
    fn resuming_at_an_end_offset_reads_the_same_rows() {
        let text = b"a,b\n1,\"x\ny\"\n2,z\n\n3,w\n";
        let (header, all) = rows(text);
        for (i, row) in all.iter().enumerate() {
            let rest = &text[row.end as usize..];
            let mut r = Reader::new(rest, b',', row.end, row.line + 1);
            r.set_header(header.clone());
            let mut again = Vec::new();
            while let Some(x) = r.next_row().expect("read") {
                again.push(x);
            }
            assert_eq!(again, all[i + 1..].to_vec());
        }
    }

    #[test]
    fn empty_and_header_only_objects_have_no_rows() {
        assert_eq!(rows(b""), (vec![], vec![]));
        assert_eq!(rows(b"a,b\r\n").1, vec![]);
        assert_eq!(rows(b"a,b").0, ["a", "b"]);
    }

    #[test]
    fn other_delimiters_and_json_escaping() {
        let mut r = Reader::new(&b"x;y\n\"a;b\";\"q\"\"\\\t\"\n"[..], b';', 0, 1);
        let header = r.read_header().expect("read").expect("header");
        let row = r.next_row().expect("read").expect("row");
        let fields = row.fields.expect("ok");
        assert_eq!(fields, ["a;b", "q\"\\\t"]);
        let mut json = String::new();
        to_json(&json_keys(&header), &fields, &mut json);
        assert_eq!(json, r#"{"x":"a;b","y":"q\"\\\t"}"#);
    }

    #[test]
    fn every_character_survives_the_json_round_trip() {
        let all: String = (0u8..0x80)
            .map(char::from)
            .chain("ünï €😀".chars())
            .collect();
        let header = vec!["plain".to_string(), all.clone(), "q\"k".to_string()];
        let mut raw = RawFields::default();
        for f in ["abc", &all, ""] {
            raw.push(f.as_bytes());
        }
        let fields = raw.into_text().expect("text");
        let mut json = String::new();
        to_json(&json_keys(&header), &fields, &mut json);
        let back: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let want = serde_json::json!({"plain": "abc", all.as_str(): all.as_str(), "q\"k": ""});
        assert_eq!(back, want);
        assert!(
            json.starts_with(r#"{"plain":"abc","#),
            "header order: {json}"
        );
    }

    #[test]
    fn a_record_past_the_limit_is_cut_and_the_rest_read_on() {
        let mut text = b"a,b\n1,\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        text.extend_from_slice(b"\n2,ok\n");
        let (_, rows) = rows(&text);
        assert_eq!(rows.last().map(ok), Some(vec!["2", "ok"]));
        assert!(rows.iter().all(|r| r.raw.len() <= MAX_RECORD_BYTES));
    }
}
