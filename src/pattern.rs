//! Include/exclude globs of SPEC.md, and the rules for which files are never uploaded
//! (hidden, temporary, non-UTF-8 names). Pure: no IO.
//!
//! A pattern without `/` matches the file name; one with `/` matches the path relative to
//! the source root. `*` and `?` stay within one path segment, `**` crosses them, and
//! `[abc]`/`[a-z]`/`[!a]` match one character of a class.

/// A compiled glob, keeping its text for display.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
    /// Whether it matches the relative path (it has a `/`) or only the file name.
    anchored: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters, `/` included.
    DoubleStar,
    /// `**/`: zero or more whole directories.
    DoubleStarSlash,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing".to_string());
        }
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    i += 2;
                    // `**/` matches zero or more whole directories, so that `a/**/b`
                    // also matches `a/b`.
                    if chars.get(i) == Some(&'/') {
                        tokens.push(Token::DoubleStarSlash);
                        i += 1;
                    } else {
                        tokens.push(Token::DoubleStar);
                    }
                }
                '*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '[' => {
                    let close = chars[i + 1..]
                        .iter()
                        .skip(1)
                        .position(|&c| c == ']')
                        .map(|p| i + 2 + p)
                        .ok_or_else(|| format!("{text:?}: unclosed ["))?;
                    let mut body = &chars[i + 1..close];
                    let negated = matches!(body.first(), Some('!') | Some('^'));
                    if negated {
                        body = &body[1..];
                    }
                    let mut ranges = Vec::new();
                    let mut j = 0;
                    while j < body.len() {
                        if j + 2 < body.len() && body[j + 1] == '-' {
                            ranges.push((body[j], body[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((body[j], body[j]));
                            j += 1;
                        }
                    }
                    tokens.push(Token::Class { negated, ranges });
                    i = close + 1;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            anchored: text.contains('/'),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the file at `rel` (relative to the source root, `/`-separated) matches.
    pub fn matches(&self, rel: &str) -> bool {
        let subject = if self.anchored {
            rel
        } else {
            rel.rsplit('/').next().unwrap_or(rel)
        };
        let chars: Vec<char> = subject.chars().collect();
        match_tokens(&self.tokens, &chars)
    }
}

fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Literal(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Token::One => s.first().is_some_and(|&c| c != '/') && match_tokens(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first().is_some_and(|&c| {
                let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                c != '/' && inside != *negated
            }) && match_tokens(rest, &s[1..])
        }
        Token::Star => {
            // Try every split that stays within the current segment.
            for k in 0..=s.len() {
                if match_tokens(rest, &s[k..]) {
                    return true;
                }
                if k < s.len() && s[k] == '/' {
                    break;
                }
            }
            false
        }
        Token::DoubleStar => (0..=s.len()).any(|k| match_tokens(rest, &s[k..])),
        // What follows `**/` starts a path segment.
        Token::DoubleStarSlash => {
            (0..=s.len()).any(|k| (k == 0 || s[k - 1] == '/') && match_tokens(rest, &s[k..]))
        }
    }
}

/// Whether a file is never uploaded whatever the patterns say: a hidden file, anything
/// under a hidden directory, or a temporary file of a common editor or writer.
pub fn always_skipped(rel: &str) -> bool {
    rel.split('/').any(|seg| seg.starts_with('.'))
        || is_temporary(rel.rsplit('/').next().unwrap_or(rel))
}

/// Names that writers use for files still being written (`x.tmp`, `x~`, `x.swp`,
/// `x.part`, `x.partial`, `x.crdownload`).
pub fn is_temporary(name: &str) -> bool {
    name.ends_with('~')
        || [".tmp", ".swp", ".swx", ".part", ".partial", ".crdownload"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// The upload rule of SPEC.md for one file: not hidden or temporary; matching `include`
/// when one is given; matching no `exclude`.
pub fn wanted(rel: &str, include: &[Pattern], exclude: &[Pattern]) -> bool {
    !always_skipped(rel)
        && (include.is_empty() || include.iter().any(|p| p.matches(rel)))
        && !exclude.iter().any(|p| p.matches(rel))
}

/// Whether a directory's files may be wanted at all; hidden directories are never entered.
pub fn dir_wanted(rel_dir: &str) -> bool {
    !rel_dir.split('/').any(|seg| seg.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).expect("pattern")
    }

    #[test]
    fn name_patterns_match_the_file_name_at_any_depth() {
        assert!(p("*.tmp").matches("a/b/c.tmp"));
        assert!(p("messages*").matches("messages.1"));
        assert!(!p("messages*").matches("old/syslog"));
        assert!(p("log?.txt").matches("x/log1.txt"));
        assert!(p("[a-c]*.bag").matches("b1.bag"));
        assert!(!p("[!a-c]*.bag").matches("b1.bag"));
    }

    #[test]
    fn slash_patterns_match_the_relative_path() {
        assert!(p("bags/*.mcap").matches("bags/run1.mcap"));
        assert!(!p("bags/*.mcap").matches("bags/sub/run1.mcap"));
        assert!(p("bags/**/*.mcap").matches("bags/sub/deep/run1.mcap"));
        assert!(p("bags/**/*.mcap").matches("bags/run1.mcap"));
        assert!(p("**/core").matches("a/b/core"));
        assert!(!p("*/x").matches("a/b/x"));
        assert!(!p("**/core").matches("a/b/xcore"));
    }

    #[test]
    fn exclude_wins_over_include_and_hidden_is_never_wanted() {
        let inc = [p("*.log")];
        let exc = [p("debug*")];
        assert!(wanted("a/run.log", &inc, &exc));
        assert!(!wanted("a/debug.log", &inc, &exc));
        assert!(!wanted("a/run.txt", &inc, &exc));
        assert!(!wanted(".hidden.log", &[], &[]));
        assert!(!wanted("a/.git/config.log", &[], &[]));
        assert!(!wanted("a/b.tmp", &[], &[]));
        assert!(wanted("a b/ünï+%.log", &[], &[]));
        assert!(!dir_wanted("x/.cache"));
    }

    #[test]
    fn unclosed_class_is_an_error() {
        assert!(Pattern::new("[abc").is_err());
        assert!(Pattern::new("").is_err());
    }
}
