//! A streaming RFC 4180 reader that never loses a row: quoted fields, doubled quotes,
//! delimiters and line breaks inside quotes, CRLF or LF, a byte-order mark on the first
//! line, a last line without a newline. Each record comes with its raw bytes and the byte
//! offset just past it, so a job can checkpoint where to start again.
//!
//! Records end where Python's csv module ends them: at a line break outside quotes (a
//! quote opens a quoted field only at the start of a field). A malformed record (wrong
//! field count, invalid UTF-8, a quote never closed before the end of the object, longer
//! than the record limit) is returned as such, whole, and every record after it keeps
//! its number: nothing is cut back or read twice, so no row is made up. A record over
//! the limit is read through to its end but only its first `limit` bytes are kept
//! ([`Row::truncated`] says so). Memory is bounded by the limit. Pure: reads from any
//! `BufRead`.

use std::io::{self, BufRead};

/// The longest record accepted unless `csv.max_record_bytes` says otherwise; a longer
/// one is malformed.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// What is read at once while skipping the rest of a record past the limit.
const SKIP_PIECE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    FieldCount {
        expected: usize,
        found: usize,
    },
    Utf8,
    UnterminatedQuote,
    /// Longer than the record limit: `bytes` in all.
    TooLong {
        bytes: u64,
        limit: usize,
    },
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::FieldCount { expected, found } => {
                write!(f, "{found} fields where the header has {expected}")
            }
            Malformed::Utf8 => f.write_str("not valid UTF-8"),
            Malformed::UnterminatedQuote => f.write_str("a quote that is never closed"),
            Malformed::TooLong { bytes, limit } => write!(
                f,
                "a record of {bytes} bytes, longer than the limit of {limit} \
                 (csv.max_record_bytes); its first {limit} bytes are kept"
            ),
        }
    }
}

/// One data record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1 for the first data row.
    pub line: u64,
    /// The record as it was in the object, without its final line break; of a record
    /// past the limit, its first `limit` bytes.
    pub raw: Vec<u8>,
    /// The record's whole length when `raw` holds only its beginning.
    pub truncated: Option<u64>,
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

    /// Fields from strings (tests, and callers building a row by hand).
    pub fn from_strs(fields: &[&str]) -> Fields {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(fields.len());
        for f in fields {
            text.push_str(f);
            ends.push(text.len());
        }
        Split { text, ends }
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
    /// Offset of the next byte `inner` gives.
    offset: u64,
    columns: Option<usize>,
    header: Option<Vec<String>>,
    next_line: u64,
    first: bool,
    max_record_bytes: usize,
}

enum Parsed {
    Fields(RawFields),
    /// Ends inside quotes.
    Open,
}

/// Where a scan of a record stands after some bytes (Python's csv states, reduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// At the start of a field: a quote here opens a quoted field.
    FieldStart,
    /// In an unquoted field (a quote is a character like any other).
    Unquoted,
    /// In a quoted field: a line break is part of the field.
    Quoted,
    /// Just after a quote in a quoted field: doubled, or the field's close.
    Closing,
}

/// The state after `bytes` (no line break among them ends anything here).
fn scan(bytes: &[u8], mut state: Quote, delimiter: u8) -> Quote {
    // Fast path: without a quote, the state is the last byte's.
    if state != Quote::Quoted && !bytes.contains(&b'"') {
        return match bytes.last() {
            None => state,
            Some(&b) if b == delimiter => Quote::FieldStart,
            Some(_) => Quote::Unquoted,
        };
    }
    // Jump from one byte that matters to the next: in a quoted field only a quote, in
    // an unquoted one only the delimiter (a quote there is a character).
    let mut i = 0;
    while i < bytes.len() {
        match state {
            Quote::Quoted => match bytes[i..].iter().position(|&b| b == b'"') {
                None => return Quote::Quoted,
                Some(p) => {
                    i += p + 1;
                    state = Quote::Closing;
                }
            },
            Quote::Unquoted => match bytes[i..].iter().position(|&b| b == delimiter) {
                None => return Quote::Unquoted,
                Some(p) => {
                    i += p + 1;
                    state = Quote::FieldStart;
                }
            },
            Quote::FieldStart if bytes[i] == b'"' => {
                i += 1;
                state = Quote::Quoted;
            }
            Quote::FieldStart => state = Quote::Unquoted,
            Quote::Closing => {
                state = match bytes[i] {
                    b'"' => Quote::Quoted,
                    b if b == delimiter => Quote::FieldStart,
                    _ => Quote::Unquoted,
                };
                i += 1;
            }
        }
    }
    state
}

/// One record as read: its bytes (at most the limit) and its whole length.
struct Record {
    bytes: Vec<u8>,
    total: u64,
    /// The object ended inside a quoted field.
    open: bool,
}

impl Record {
    fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }
}

impl<R: BufRead> Reader<R> {
    /// A reader of `inner`, which starts at `offset` of the stream; the next data row is
    /// numbered `next_line`. Records longer than [`MAX_RECORD_BYTES`] are malformed (see
    /// [`Reader::with_limit`]).
    pub fn new(inner: R, delimiter: u8, offset: u64, next_line: u64) -> Reader<R> {
        Reader {
            inner,
            delimiter,
            offset,
            columns: None,
            header: None,
            next_line,
            first: offset == 0,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }

    /// The record limit (`csv.max_record_bytes`).
    pub fn with_limit(mut self, max_record_bytes: usize) -> Reader<R> {
        self.max_record_bytes = max_record_bytes.max(1);
        self
    }

    /// Reads the header line (the first record). `Ok(None)` for an empty stream. A
    /// header that cannot name the columns (an open quote, over the limit, a bare CR,
    /// empty or repeated names) is an `InvalidData` error saying why.
    pub fn read_header(&mut self) -> io::Result<Option<Vec<String>>> {
        let record = loop {
            let Some(record) = self.read_record()? else {
                return Ok(None);
            };
            if !is_blank(&record.bytes) || record.truncated() {
                break record;
            }
        };
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        if record.truncated() {
            return Err(invalid(format!(
                "the header is longer than the record limit of {} bytes",
                self.max_record_bytes
            )));
        }
        let body = self.strip_bom(trim_break(&record.bytes)).to_vec();
        self.first = false;
        if body.contains(&b'\r') {
            return Err(invalid(
                "the header line ends in a bare CR (classic Mac OS line endings), which is \
                 not supported: convert the object to LF or CRLF"
                    .into(),
            ));
        }
        let fields = match split(&body, self.delimiter) {
            Parsed::Fields(f) if !record.open => f,
            _ => {
                return Err(invalid(
                    "the header has a quote that is never closed".into(),
                ));
            }
        };
        let names: Vec<String> = (0..fields.len())
            .filter_map(|i| fields.bytes(i))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        check_names(&names).map_err(invalid)?;
        self.columns = Some(names.len());
        self.header = Some(names.clone());
        Ok(Some(names))
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
            let Some(record) = self.read_record()? else {
                return Ok(None);
            };
            if is_blank(&record.bytes) && !record.truncated() {
                continue;
            }
            let line = self.next_line;
            self.next_line += 1;
            let truncated = record.truncated().then_some(record.total);
            let mut raw = record.bytes;
            if self.first && raw.starts_with(b"\xEF\xBB\xBF") {
                raw.drain(..3);
            }
            self.first = false;
            let fields = if let Some(bytes) = truncated {
                Err(Malformed::TooLong {
                    bytes,
                    limit: self.max_record_bytes,
                })
            } else {
                let len = trim_break(&raw).len();
                raw.truncate(len);
                match split(&raw, self.delimiter) {
                    Parsed::Fields(f) if !record.open => self.check(f),
                    _ => Err(Malformed::UnterminatedQuote),
                }
            };
            if self.columns.is_none() {
                // No header: the first row sets the width.
                if let Ok(f) = &fields {
                    self.columns = Some(f.len());
                }
            }
            return Ok(Some(Row {
                line,
                raw,
                truncated,
                fields,
                end: self.position(),
            }));
        }
    }

    /// Offset of the first byte not yet returned in a record.
    pub fn position(&self) -> u64 {
        self.offset
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

    fn strip_bom<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        if self.first {
            bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
        } else {
            bytes
        }
    }

    /// The next record: physical lines up to a line break outside quotes, or the end of
    /// the stream. Past the limit, the rest is read in pieces and only scanned.
    fn read_record(&mut self) -> io::Result<Option<Record>> {
        let mut bytes = Vec::new();
        let mut scratch = Vec::new();
        let mut total = 0u64;
        let mut state = Quote::FieldStart;
        loop {
            let keep = bytes.len() < self.max_record_bytes;
            let piece = if keep { &mut bytes } else { &mut scratch };
            let from = piece.len();
            let room = match keep {
                true => self.max_record_bytes - from,
                false => SKIP_PIECE_BYTES,
            };
            let n = read_line_bounded(&mut self.inner, piece, room)?;
            if n == 0 {
                if total == 0 {
                    return Ok(None);
                }
                break;
            }
            self.offset += n as u64;
            total += n as u64;
            let new = &piece[from..];
            let ends_line = new.last() == Some(&b'\n');
            let body = if ends_line {
                &new[..new.len() - 1]
            } else {
                new
            };
            state = scan(body, state, self.delimiter);
            if !keep {
                scratch.clear();
            }
            if ends_line && state != Quote::Quoted {
                break;
            }
        }
        Ok(Some(Record {
            bytes,
            total,
            open: state == Quote::Quoted,
        }))
    }
}

/// Header names must name the JSON keys: none empty, none twice.
fn check_names(names: &[String]) -> Result<(), String> {
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(format!(
            "header column {} has no name: every column needs one",
            i + 1
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(format!(
                "header name {name:?} appears twice: each message would have the key twice"
            ));
        }
    }
    Ok(())
}

/// Appends to `out` through the next `\n` or up to `room` bytes, whichever comes first;
/// the count appended (0 at the end of the stream).
fn read_line_bounded(r: &mut impl BufRead, out: &mut Vec<u8>, room: usize) -> io::Result<usize> {
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
            let room = (room - total).max(1);
            match buf.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&buf[..=i]);
                    (true, i + 1)
                }
                None => {
                    let n = buf.len().min(room);
                    out.extend_from_slice(&buf[..n]);
                    (n >= room, n)
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

pub fn push_json_string(out: &mut String, s: &str) {
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
        // "\xc3" and "\xa9" are each invalid, though "é" together. A quoted field that
        // spans lines and ends at the wrong width is one malformed record, not three.
        let text = b"a,b\n1,2,3\n\xff,x\n1,\"two\nlines\",x\n2,y\n\xc3,\xa9\n3,z\n4,\"open\n5,y\n";
        let (_, rows) = rows(text);
        let verdicts: Vec<_> = rows.iter().map(|r| r.fields.clone().err()).collect();
        let count = |found| Some(Malformed::FieldCount { expected: 2, found });
        assert_eq!(
            verdicts,
            [
                count(3),
                Some(Malformed::Utf8),
                count(3),
                None,
                Some(Malformed::Utf8),
                None,
                Some(Malformed::UnterminatedQuote),
            ]
        );
        assert_eq!(rows[2].raw, b"1,\"two\nlines\",x");
        assert_eq!(ok(&rows[3]), ["2", "y"]);
        assert_eq!(rows[6].raw, b"4,\"open\n5,y");
        assert_eq!(rows.last().map(|r| r.line), Some(7));
    }

    /// The jumping scan against the byte-by-byte state machine it stands for, over
    /// random records of quotes, delimiters and letters from every state.
    #[test]
    fn the_fast_scan_agrees_with_the_byte_machine() {
        fn reference(bytes: &[u8], mut state: Quote, delimiter: u8) -> Quote {
            for &b in bytes {
                state = match (state, b) {
                    (Quote::FieldStart, b'"') => Quote::Quoted,
                    (Quote::Quoted, b'"') => Quote::Closing,
                    (Quote::Quoted, _) => Quote::Quoted,
                    (Quote::Closing, b'"') => Quote::Quoted,
                    (_, b) if b == delimiter => Quote::FieldStart,
                    _ => Quote::Unquoted,
                };
            }
            state
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let states = [
            Quote::FieldStart,
            Quote::Unquoted,
            Quote::Quoted,
            Quote::Closing,
        ];
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| b"\",ab"[((seed >> (i * 2 + 8)) % 4) as usize])
                .collect();
            let start = states[((seed >> 40) % 4) as usize];
            assert_eq!(
                scan(&bytes, start, b','),
                reference(&bytes, start, b','),
                "{:?} from {start:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_a_character() {
        let (_, rows) = rows(b"a,b\nx\"y,z\n1,2\n");
        assert_eq!(ok(&rows[0]), ["x\"y", "z"]);
        assert_eq!(ok(&rows[1]), ["1", "2"]);
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

    fn limited(text: &[u8], limit: usize) -> Vec<Row> {
        let mut r = Reader::new(text, b',', 0, 1).with_limit(limit);
        r.read_header().expect("read");
        std::iter::from_fn(|| r.next_row().expect("read")).collect()
    }

    /// The issue's two records over the limit (scaled down): each is one malformed
    /// record, kept by its first `limit` bytes, and `2,z` is line 2.
    #[test]
    fn a_record_past_the_limit_is_one_malformed_record() {
        let mut quoted = b"a,b\n1,\"".to_vec();
        quoted.extend(b"p,q\n".repeat(3000));
        quoted.extend(b"\"\n2,z\n");
        let mut unquoted = b"a,b\n1,".to_vec();
        unquoted.extend(std::iter::repeat_n(b'y', 15_000));
        unquoted.extend(b"\n2,z\n");
        for text in [quoted, unquoted] {
            let rows = limited(&text, 4096);
            assert_eq!(rows.len(), 2);
            let total = text.len() as u64 - 4 - 4;
            assert_eq!(
                rows[0].fields,
                Err(Malformed::TooLong {
                    bytes: total,
                    limit: 4096
                })
            );
            assert_eq!(rows[0].truncated, Some(total));
            assert_eq!(rows[0].raw.len(), 4096);
            assert_eq!((rows[1].line, ok(&rows[1])), (2, vec!["2", "z"]));
            assert_eq!(rows[1].end, text.len() as u64);
        }
    }

    #[test]
    fn headers_that_cannot_name_the_columns_are_errors() {
        for (text, why) in [
            (&b"a,b,a\n1,2,3\n"[..], "appears twice"),
            (b"a,,b\n1,2,3\n", "has no name"),
            (b"a,b\r1,2\r3,4\r", "bare CR"),
            (b"a,\"b\n1,2\n", "never closed"),
        ] {
            let mut r = Reader::new(text, b',', 0, 1);
            let e = r.read_header().expect_err(why);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }

    /// Python's csv module as the oracle, over records that span lines, quotes inside
    /// unquoted fields and after closing ones, blank lines, CRLF.
    #[test]
    fn records_end_where_pythons_csv_module_ends_them() {
        let text: &[u8] =
            b"h1,h2\r\n1,\"a\nb\"\r\nx\"y,\"\"\"q\"\"\"\n\n\"m\nn\",\"o,p\"\n3,\"\"\n4,\"tail\"x\n";
        let script = "import csv,io,json,sys\n\
            t=sys.stdin.buffer.read().decode()\n\
            r=[row for row in csv.reader(io.StringIO(t, newline=''), strict=False) if row]\n\
            print(json.dumps(r))";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text)
            .expect("write");
        let out = child.wait_with_output().expect("python3");
        let python: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).expect("json");
        let (header, rows) = rows(text);
        let mut ours = vec![header];
        ours.extend(
            rows.iter()
                .map(|r| ok(r).iter().map(|s| s.to_string()).collect()),
        );
        assert_eq!(ours, python);
    }
}
