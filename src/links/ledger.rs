//! The bytes each link carried today, kept durably in `{state_dir}/links.jsonl`: one
//! line `{"link":"cellular","day":20793,"bytes":1234}` per body admitted, carrying the
//! link's new total for that local day, appended (and, for a link with a budget,
//! fsynced) before the body is sent. A power cut can so only overcount what was about to
//! go, never let a link carry more than its budget. Compacted to today's totals when
//! opened; a torn last line is skipped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const LEDGER_FILE: &str = "links.jsonl";

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    link: String,
    day: i64,
    bytes: u64,
}

/// Today's totals from the ledger's text: for each link, the largest total of `day`.
pub fn totals(text: &str, day: i64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(l) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        if l.day == day {
            let t = out.entry(l.link).or_insert(0);
            *t = (*t).max(l.bytes);
        }
    }
    out
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: Option<File>,
    day: i64,
    used: BTreeMap<String, u64>,
}

impl Ledger {
    /// Opens the ledger in `state_dir` for local day `day`, compacted to that day's totals.
    pub fn open(state_dir: &Path, day: i64) -> io::Result<Ledger> {
        let path = state_dir.join(LEDGER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let used = totals(&text, day);
        let mut ledger = Ledger {
            path,
            file: None,
            day,
            used,
        };
        ledger.rewrite()?;
        Ok(ledger)
    }

    /// The ledger as it is, for reading only (`status` while no daemon runs).
    pub fn read(state_dir: &Path, day: i64) -> Ledger {
        let path = state_dir.join(LEDGER_FILE);
        let text = fs::read_to_string(&path).unwrap_or_default();
        Ledger {
            used: totals(&text, day),
            path,
            file: None,
            day,
        }
    }

    /// Writes today's totals whole (temporary file, fsync, rename) and reopens for
    /// appending.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = File::create(&tmp)?;
        for (link, bytes) in &self.used {
            f.write_all(&line(link, self.day, *bytes))?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        Ok(())
    }

    /// Bytes `link` carried on local day `day`.
    pub fn used(&mut self, link: &str, day: i64) -> u64 {
        self.roll(day);
        self.used.get(link).copied().unwrap_or(0)
    }

    /// Every link's bytes on `day`.
    pub fn all(&mut self, day: i64) -> BTreeMap<String, u64> {
        self.roll(day);
        self.used.clone()
    }

    /// A new day starts from nothing (the file is compacted at the next open).
    fn roll(&mut self, day: i64) {
        if day != self.day {
            self.day = day;
            self.used.clear();
        }
    }

    /// Adds `bytes` to `link`'s total of `day`, appended; fsynced when `durable`. The
    /// total is counted even when the write fails (the error is returned to be logged).
    pub fn add(&mut self, link: &str, bytes: u64, day: i64, durable: bool) -> io::Result<u64> {
        self.roll(day);
        let total = self.used.entry(link.to_string()).or_insert(0);
        *total += bytes;
        let total = *total;
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("the ledger is not open"))?;
        f.write_all(&line(link, day, total))?;
        if durable {
            f.sync_data()?;
        }
        Ok(total)
    }
}

fn line(link: &str, day: i64, bytes: u64) -> Vec<u8> {
    let mut v = serde_json::to_vec(&Line {
        link: link.to_string(),
        day,
        bytes,
    })
    .unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tvm-ledger-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn totals_survive_a_reopen_and_a_torn_line_and_a_new_day_starts_at_zero() {
        let dir = temp("reopen");
        let mut l = Ledger::open(&dir, 100).expect("open");
        assert_eq!(l.add("cellular", 700, 100, true).expect("add"), 700);
        assert_eq!(l.add("cellular", 300, 100, true).expect("add"), 1000);
        l.add("depot", 5, 100, false).expect("add");
        drop(l);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(LEDGER_FILE))
            .expect("append");
        f.write_all(b"{\"link\":\"cellular\",\"day\":100,\"by")
            .expect("torn");
        drop(f);
        let mut l = Ledger::open(&dir, 100).expect("reopen");
        assert_eq!(l.used("cellular", 100), 1000);
        assert_eq!(l.used("depot", 100), 5);
        let text = fs::read_to_string(dir.join(LEDGER_FILE)).expect("read");
        assert_eq!(text.lines().count(), 2, "compacted: {text}");
        assert_eq!(l.used("cellular", 101), 0, "midnight");
        assert_eq!(l.add("cellular", 1, 101, true).expect("add"), 1);
        drop(l);
        let mut l = Ledger::open(&dir, 101).expect("next day");
        assert_eq!(l.all(101), BTreeMap::from([("cellular".to_string(), 1)]));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_day_asked_for_counts() {
        let text = "{\"link\":\"a\",\"day\":1,\"bytes\":9}\n{\"link\":\"a\",\"day\":2,\"bytes\":3}\nnot json\n";
        assert_eq!(totals(text, 2), BTreeMap::from([("a".to_string(), 3)]));
        assert!(totals(text, 3).is_empty());
    }
}
