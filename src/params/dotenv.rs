//! A literal `.env` parser (pure): Docker Compose's `.env` syntax, minus every kind of
//! substitution, so a value is stored exactly as written.
//!
//! What is interpreted:
//! - `KEY=VALUE` per line, optional `export ` before the key, spaces around `=` ignored; keys
//!   are letters, digits and `_.-`, not starting with a digit, `.` or `-`.
//! - Blank lines and lines whose first non-blank character is `#` are skipped.
//! - Unquoted values: surrounding spaces and tabs trimmed; a ` #` (space or tab, then `#`)
//!   starts a comment; everything else, backslashes included, is literal.
//! - `'single quotes'`: literal, may span lines; `\'` is a quote, any other backslash stays.
//! - `"double quotes"`: may span lines; `\n`, `\r`, `\t`, `\"`, `\\` and `\$` are escapes, any
//!   other backslash stays. After the closing quote only blanks and a `# comment` may follow.
//! - A UTF-8 byte-order mark at the start is skipped; CRLF line ends count as LF.
//!
//! What is not: `$VAR`, `${VAR}`, `${VAR:-default}`, `$$` and command substitution are kept as
//! they are (each such value is flagged in [`Pair::reference`] so the caller can warn); a bare
//! `KEY` without `=` (Compose reads it from the environment) is an error, as is YAML-style
//! `KEY: value`. Nothing here reads the process environment.

/// One `KEY=VALUE` assignment, in file order (duplicates included).
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub value: String,
    /// The line the assignment starts on (1-based).
    pub line: usize,
    /// The value holds something Compose or a shell would substitute (`$X`, `${X}`, `$$`,
    /// `$(…)`), unquoted or in double quotes; it was kept literally.
    pub reference: bool,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("key", &self.key)
            .field("line", &self.line)
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

/// Why a file is not a `.env` file; the line is where the offending assignment starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct SyntaxError {
    pub line: usize,
    pub reason: String,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'
}

/// Does `value` (as it appeared unquoted or in double quotes) hold a substitution?
fn has_reference(raw: &[u8]) -> bool {
    raw.windows(2).any(|w| {
        w[0] == b'$' && (w[1] == b'{' || w[1] == b'(' || w[1] == b'$' || w[1] == b'_' || w[1].is_ascii_alphabetic())
    })
}

struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.pos += 1;
        }
    }

    /// The rest of the current line, without its `\n`; the cursor moves past the `\n`.
    fn rest_of_line(&mut self) -> &'a [u8] {
        let text: &'a [u8] = self.text;
        let start = self.pos;
        let end = self.text[start..].iter().position(|&b| b == b'\n').map_or(self.text.len(), |i| start + i);
        self.pos = end;
        if self.pos < self.text.len() {
            self.pos += 1;
            self.line += 1;
        }
        &text[start..end]
    }
}

/// Parse a whole file. Linear in its size; bounding the input is the caller's job.
pub fn parse(text: &str) -> Result<Vec<Pair>, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let normalized;
    let text = if text.contains("\r\n") {
        normalized = text.replace("\r\n", "\n");
        normalized.as_str()
    } else {
        text
    };
    let mut c = Cursor { text: text.as_bytes(), pos: 0, line: 1 };
    let mut pairs = Vec::new();
    while c.pos < c.text.len() {
        c.skip_blanks();
        match c.peek() {
            None => break,
            Some(b'\n') | Some(b'#') => {
                c.rest_of_line();
                continue;
            }
            Some(_) => {}
        }
        pairs.push(assignment(&mut c)?);
    }
    Ok(pairs)
}

fn assignment(c: &mut Cursor<'_>) -> Result<Pair, SyntaxError> {
    let line = c.line;
    let err = |reason: String| SyntaxError { line, reason };
    // `export KEY=…` (but a key named `export`, as in `export=1`, is a key).
    if c.text[c.pos..].starts_with(b"export") && c.text.get(c.pos + 6).copied().is_some_and(is_blank) {
        c.pos += 6;
        c.skip_blanks();
    }
    let start = c.pos;
    while c.peek().is_some_and(is_key_byte) {
        c.pos += 1;
    }
    let key = String::from_utf8_lossy(&c.text[start..c.pos]).into_owned();
    if key.is_empty() {
        let shown: String = String::from_utf8_lossy(&c.text[start..]).chars().take(1).collect();
        return Err(err(format!(
            "expected a KEY=VALUE assignment, found {shown:?}; keys hold letters, digits and _.- (a comment starts with #)"
        )));
    }
    if !(key.as_bytes()[0].is_ascii_alphabetic() || key.as_bytes()[0] == b'_') {
        return Err(err(format!("key {key:?} must start with a letter or _")));
    }
    c.skip_blanks();
    match c.peek() {
        Some(b'=') => c.pos += 1,
        None | Some(b'\n') => {
            return Err(err(format!(
                "{key} has no `=`: write {key}=VALUE (deployer never takes a value from the environment)"
            )));
        }
        Some(b':') => return Err(err(format!("{key}: use {key}=VALUE, not YAML's `{key}: VALUE`"))),
        Some(_) => {
            let shown: String = String::from_utf8_lossy(&c.text[c.pos..]).chars().take(1).collect();
            return Err(err(format!(
                "{key} is followed by {shown:?} where `=` belongs; keys hold letters, digits and _.-"
            )));
        }
    }
    let blank_after_eq = c.peek().is_some_and(is_blank);
    c.skip_blanks();
    let (value, reference) = match c.peek() {
        Some(b'\'') => (quoted(c, &key, line, b'\'')?, false),
        Some(b'"') => {
            let raw_start = c.pos;
            let value = quoted(c, &key, line, b'"')?;
            (value, has_unescaped_reference(&c.text[raw_start..c.pos]))
        }
        _ => {
            let raw = c.rest_of_line();
            // A comment starts at a `#` that follows a blank (`A=b #c`, `A= #c`), not at `A=#c`.
            let mut end = raw.len();
            for i in 0..raw.len() {
                if raw[i] == b'#' && ((i == 0 && blank_after_eq) || (i > 0 && is_blank(raw[i - 1]))) {
                    end = i;
                    break;
                }
            }
            let raw = trim_blanks(&raw[..end]);
            (String::from_utf8_lossy(raw).into_owned(), has_reference(raw))
        }
    };
    Ok(Pair { key, value, line, reference })
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_blank(*first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_blank(*last)
    {
        s = rest;
    }
    s
}

/// `$` substitutions in a double-quoted value as written (with its quotes), not counting `\$`.
fn has_unescaped_reference(raw: &[u8]) -> bool {
    let mut i = 0;
    while i + 1 < raw.len() {
        match raw[i] {
            b'\\' => i += 2,
            b'$' if has_reference(&raw[i..i + 2]) => return true,
            _ => i += 1,
        }
    }
    false
}

/// A quoted value starting at the cursor's quote; the cursor ends after the line holding the
/// closing quote, which may carry only blanks and a comment.
fn quoted(c: &mut Cursor<'_>, key: &str, line: usize, quote: u8) -> Result<String, SyntaxError> {
    let kind = if quote == b'\'' { "single" } else { "double" };
    c.pos += 1;
    let mut out: Vec<u8> = Vec::new();
    loop {
        let Some(b) = c.peek() else {
            return Err(SyntaxError {
                line,
                reason: format!("the {kind}-quoted value of {key} is never closed (it opens on this line)"),
            });
        };
        c.pos += 1;
        match b {
            b'\n' => {
                c.line += 1;
                out.push(b);
            }
            b'\\' => match (quote, c.peek()) {
                (b'\'', Some(b'\'')) => {
                    out.push(b'\'');
                    c.pos += 1;
                }
                (b'"', Some(e @ (b'n' | b'r' | b't' | b'"' | b'\\' | b'$'))) => {
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                    c.pos += 1;
                }
                _ => out.push(b'\\'),
            },
            b if b == quote => break,
            b => out.push(b),
        }
    }
    let closing_line = c.line;
    let rest = c.rest_of_line();
    let rest = trim_blanks(rest);
    if !rest.is_empty() && rest[0] != b'#' {
        return Err(SyntaxError {
            line: closing_line,
            reason: format!("unexpected text after the closing quote of {key}; only a # comment may follow it"),
        });
    }
    // Every byte came from valid UTF-8 and only ASCII escapes were replaced by ASCII.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (String, String, bool) {
        let pairs = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(pairs.len(), 1, "{text:?}: {pairs:?}");
        let p = &pairs[0];
        (p.key.clone(), p.value.clone(), p.reference)
    }

    #[test]
    fn values_are_taken_as_written() {
        // (line, key, value, flagged as a reference)
        let table: &[(&str, &str, &str, bool)] = &[
            ("A=b", "A", "b", false),
            ("A = b ", "A", "b", false),
            ("  export   A=b", "A", "b", false),
            ("export=1", "export", "1", false),
            ("A=", "A", "", false),
            ("A=b # comment", "A", "b", false),
            ("A=b\t# comment", "A", "b", false),
            ("A=b#not-a-comment", "A", "b#not-a-comment", false),
            ("A=#not-a-comment", "A", "#not-a-comment", false),
            ("A= # only a comment", "A", "", false),
            ("A=pa$sword", "A", "pa$sword", true),
            ("A=${AWS_SECRET_ACCESS_KEY}", "A", "${AWS_SECRET_ACCESS_KEY}", true),
            ("A=${", "A", "${", true),
            ("A=pa$$word", "A", "pa$$word", true),
            ("A=$(whoami)", "A", "$(whoami)", true),
            ("A=cost: 5$", "A", "cost: 5$", false),
            ("A=postgres://u:p@h/d", "A", "postgres://u:p@h/d", false),
            ("A=back\\slash\\n", "A", "back\\slash\\n", false),
            ("A='single $HOME \\n'", "A", "single $HOME \\n", false),
            ("A='it\\'s'", "A", "it's", false),
            ("A='# not a comment'  # comment", "A", "# not a comment", false),
            ("A=\"tab\\there\\nnew \\\"q\\\" \\\\ \\$HOME \\x\"", "A", "tab\there\nnew \"q\" \\ $HOME \\x", false),
            ("A=\"$HOME\"", "A", "$HOME", true),
            ("A=\"\"", "A", "", false),
            ("A=''", "A", "", false),
            ("A=\"p#ss\" # c", "A", "p#ss", false),
            ("a.b-c_d=1", "a.b-c_d", "1", false),
            ("_A=1", "_A", "1", false),
            ("A=é ü 日本", "A", "é ü 日本", false),
            ("\u{feff}A=1", "A", "1", false),
            ("A=1\r\n", "A", "1", false),
        ];
        for (text, key, value, reference) in table {
            assert_eq!(one(text), (key.to_string(), value.to_string(), *reference), "{text:?}");
        }
    }

    #[test]
    fn multi_line_values_keep_their_lines_and_numbering() {
        let text = "# head\n\nA=\"one\ntwo\"\nB='x\r\ny'\nC=3\n";
        let pairs = parse(text).unwrap();
        let got: Vec<(&str, &str, usize)> = pairs.iter().map(|p| (p.key.as_str(), p.value.as_str(), p.line)).collect();
        assert_eq!(got, [("A", "one\ntwo", 3), ("B", "x\ny", 5), ("C", "3", 7)]);
    }

    #[test]
    fn mistakes_name_the_right_line() {
        let table: &[(&str, usize, &str)] = &[
            ("A=1\nthis is not a pair\n", 2, "this is followed by \"i\" where `=` belongs"),
            ("A=1\n\nB\n", 3, "B has no `=`"),
            ("A=1\nB: 2\n", 2, "not YAML"),
            ("1A=x\n", 1, "must start with a letter"),
            ("=x\n", 1, "expected a KEY=VALUE"),
            ("A=1\nB=\"open\nstill open\n", 2, "double-quoted value of B is never closed"),
            ("A='x\n", 1, "single-quoted value of A is never closed"),
            ("A=\"x\ny\" trailing\n", 2, "unexpected text after the closing quote of A"),
            ("A=\"x\\\"\n", 1, "never closed"),
            ("export\n", 1, "export has no `=`"),
        ];
        for (text, line, reason) in table {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.reason.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn debug_never_shows_a_value() {
        let pairs = parse("DB_PASSWORD=hunter2\n").unwrap();
        assert!(!format!("{pairs:?}").contains("hunter2"));
    }

    #[test]
    fn a_200k_line_file_parses_in_one_pass() {
        let text: String = (0..200_000).map(|i| format!("KEY_{i}=value-{i} # c\n")).collect();
        let pairs = parse(&text).unwrap();
        assert_eq!(pairs.len(), 200_000);
        assert_eq!((pairs[199_999].key.as_str(), pairs[199_999].line), ("KEY_199999", 200_000));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::parse;

        proptest! {
            /// Any value written in single quotes (with `'` escaped) comes back byte for byte.
            #[test]
            fn single_quoted_values_round_trip(value in "[^\\\\'\r]*") {
                let text = format!("K='{value}'\n");
                let pairs = parse(&text).unwrap();
                prop_assert_eq!(&pairs[0].value, &value);
            }

            /// Any value written in double quotes with its specials escaped comes back byte for byte.
            #[test]
            fn double_quoted_values_round_trip(value in "\\PC*") {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").replace('\r', "\\r");
                let text = format!("K=\"{escaped}\"\n");
                let pairs = parse(&text).unwrap();
                prop_assert_eq!(&pairs[0].value, &value);
            }

            /// Unquoted values without blanks-then-# and without surrounding blanks round-trip.
            #[test]
            fn unquoted_values_round_trip(value in "[^\\s'\"#][^\\s#]*") {
                let text = format!("K={value}\n");
                let pairs = parse(&text).unwrap();
                prop_assert_eq!(&pairs[0].value, &value);
            }

            /// Whatever the input, the parser answers (a list or an error), never panics.
            #[test]
            fn arbitrary_input_never_panics(text in "\\PC*(\n\\PC*){0,5}") {
                let _ = parse(&text);
            }
        }
    }
}
