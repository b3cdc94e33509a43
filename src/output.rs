//! The one writer: every byte deployer puts on stdout or stderr goes through this module —
//! results (`--output text|json`), errors, tracing events (via [`stderr_writer`]), clap's usage
//! errors ([`print_clap_error`]), panics — so nothing that came from outside (a registry's error
//! body, a health endpoint's answer, a file name, a flag value) can be read by the GitHub
//! runner as a workflow command.
//!
//! The runner reads a line as a command when, after leading whitespace, it starts with `::`
//! (`::add-mask::x`), or when it contains `##[` anywhere (the older `##[add-mask]x` form);
//! it splits lines at `\n` and at `\r`. [`neutralize`] therefore prefixes every such line
//! with [`LINE_ESCAPE`] and writes `##[` as `##\u005b` (which JSON reads as the same string, so
//! `--output json` stays valid and exact). Deployer's own commands (`add-mask`, `group`,
//! `endgroup`, `error`/`warning`/`notice`) are the only lines written verbatim, through
//! [`write_command`], and only `github::runner` builds them, escaping their data.
//!
//! Every block is written whole under the stream's lock and always ends with a newline, so a
//! later write starts on a fresh line and cannot complete a half-written one into a command.
//! A source scan test keeps `println!`, `eprintln!` and direct stdout/stderr handles out of the
//! rest of the crate. The one exception is indicatif's progress bars, drawn only when stderr is
//! a terminal outside Actions (a runner never gives a step a terminal).

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::github::runner::Runner;

/// Put in front of a line that the runner would read as a workflow command.
pub const LINE_ESCAPE: &str = "\\";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Whether deployer's workflow commands go to stderr (`--output json`, where stdout is one
/// JSON object). Set once by [`Printer::new`]; read by code that masks a credential the
/// moment it has one (`github::oidc`, `aws::auth`).
static COMMANDS_TO_STDERR: AtomicBool = AtomicBool::new(false);

pub fn commands_to_stderr() -> bool {
    COMMANDS_TO_STDERR.load(Ordering::Relaxed)
}

/// Would the runner read this line (no line breaks in it) as a workflow command?
fn is_command_line(line: &str) -> bool {
    line.trim_start().starts_with("::") || line.contains("##[")
}

/// `text` with every line that the runner would read as a command made inert. Pure.
pub fn neutralize(text: &str) -> Cow<'_, str> {
    if !text.split(['\n', '\r']).any(is_command_line) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    loop {
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..end];
        if line.trim_start().starts_with("::") {
            out.push_str(LINE_ESCAPE);
        }
        out.push_str(&line.replace("##[", "##\\u005b"));
        match rest[end..].chars().next() {
            Some(sep) => {
                out.push(sep);
                rest = &rest[end + sep.len_utf8()..];
            }
            None => break,
        }
    }
    Cow::Owned(out)
}

fn write_raw(stream: Stream, bytes: &[u8]) {
    // A failed write to our own stdout/stderr (a closed pipe) is not worth failing a deploy over.
    match stream {
        Stream::Stdout => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
        Stream::Stderr => {
            let _ = io::stderr().lock().write_all(bytes);
        }
    }
}

/// Write text (any number of lines) with every line neutralised, ending with a newline.
pub fn write_text(stream: Stream, text: &str) {
    let safe = neutralize(text);
    let mut block = safe.into_owned();
    if !block.ends_with('\n') {
        block.push('\n');
    }
    write_raw(stream, block.as_bytes());
}

/// Write one of deployer's own workflow commands verbatim. Only `github::runner` calls this,
/// with data it escaped; a line break (which would let the rest start another command) makes
/// it fall back to [`write_text`].
pub(crate) fn write_command(stream: Stream, line: &str) {
    if line.contains(['\n', '\r']) {
        write_text(stream, line);
        return;
    }
    write_raw(stream, format!("{line}\n").as_bytes());
}

pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

pub fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}

/// An `io::Write` that collects what it is given and writes it through [`write_text`]: whole
/// lines on `flush`, the rest (with a newline) when dropped.
pub struct SafeWriter {
    stream: Stream,
    buf: Vec<u8>,
    sink: fn(Stream, &str),
}

impl SafeWriter {
    pub fn new(stream: Stream) -> Self {
        SafeWriter { stream, buf: Vec::new(), sink: write_text }
    }

    fn emit(&mut self, upto: usize) {
        if upto == 0 {
            return;
        }
        let chunk: Vec<u8> = self.buf.drain(..upto).collect();
        (self.sink)(self.stream, &String::from_utf8_lossy(&chunk));
    }
}

impl Write for SafeWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let upto = self.buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.emit(upto);
        Ok(())
    }
}

impl Drop for SafeWriter {
    fn drop(&mut self) {
        let all = self.buf.len();
        self.emit(all);
    }
}

/// The writer tracing's fmt layer uses: one [`SafeWriter`] per event, on stderr.
pub fn stderr_writer() -> SafeWriter {
    SafeWriter::new(Stream::Stderr)
}

/// A panic's message through the one writer (it may quote a value from outside).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        let trace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => "\nnote: run with RUST_BACKTRACE=1 to see a backtrace".to_string(),
        };
        write_text(Stream::Stderr, &format!("deployer panicked: {info}{trace}"));
    }));
}

/// Print clap's help, version or usage error (which quotes the offending value) through the
/// one writer, as `clap::Error::print` would: usage errors on stderr, help on stdout.
pub fn print_clap_error(e: &clap::Error) {
    let (stream, color) =
        if e.use_stderr() { (Stream::Stderr, stderr_is_terminal()) } else { (Stream::Stdout, stdout_is_terminal()) };
    let styled = e.render();
    let text =
        if color && std::env::var_os("NO_COLOR").is_none() { styled.ansi().to_string() } else { styled.to_string() };
    write_text(stream, text.trim_end_matches('\n'));
}

pub struct Printer {
    pub format: OutputFormat,
    pub runner: Runner,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        // With a JSON result on stdout, workflow commands move to stderr (the runner reads both).
        let to_stderr = format == OutputFormat::Json;
        COMMANDS_TO_STDERR.store(to_stderr, Ordering::Relaxed);
        Printer { format, runner: Runner::from_env(to_stderr) }
    }

    pub fn result<T: Serialize + std::fmt::Display>(&self, result: &T) {
        let text = match self.format {
            OutputFormat::Text => result.to_string(),
            OutputFormat::Json => match serde_json::to_string_pretty(result) {
                Ok(json) => json,
                Err(e) => serde_json::json!({"error": format!("cannot encode the result: {e}")}).to_string(),
            },
        };
        write_text(Stream::Stdout, &text);
    }

    /// Report a failure: on stderr (and as an `::error::` annotation in Actions); with
    /// `--output json` also as `{"result":"failed","error":...,"exit-code":N}` on stdout.
    pub fn error(&self, message: &str, exit_code: u8) {
        self.runner.annotate(crate::github::runner::Level::Error, message, None);
        if self.runner.in_actions() {
            // The annotation carries the message; repeat it plainly for the raw log.
            write_text(Stream::Stderr, &format!("error: {message}"));
        }
        if self.format == OutputFormat::Json {
            let body = serde_json::json!({"result": "failed", "error": message, "exit-code": exit_code});
            write_text(Stream::Stdout, &body.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_would_be_commands_are_made_inert() {
        let table: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("a :: b", "a :: b"),
            ("::add-mask::x", "\\::add-mask::x"),
            ("   ::warning::x", "\\   ::warning::x"),
            ("\t\u{a0}\u{2003}::error::x", "\\\t\u{a0}\u{2003}::error::x"),
            ("oops\n::set-output name=result::succeeded\nend", "oops\n\\::set-output name=result::succeeded\nend"),
            ("oops\r::add-mask::x", "oops\r\\::add-mask::x"),
            ("oops\r\n::add-mask::x\r\n", "oops\r\n\\::add-mask::x\r\n"),
            ("say ##[add-mask]x", "say ##\\u005badd-mask]x"),
            ("###[x] ##[y", "###\\u005bx] ##\\u005by"),
            ("::stop-commands::tok", "\\::stop-commands::tok"),
            ("\n\n::x::\n", "\n\n\\::x::\n"),
        ];
        for (input, want) in table {
            let got = neutralize(input);
            assert_eq!(got, *want, "{input:?}");
            for line in got.split(['\n', '\r']) {
                assert!(!line.trim_start().starts_with("::") && !line.contains("##["), "{input:?} → {line:?}");
            }
        }
        assert!(matches!(neutralize("nothing to do\nhere"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_valid_and_means_the_same() {
        let value = serde_json::json!({
            "error": "registry said:\n::add-mask::x\r\n##[set-output name=a;]b",
            "##[key]": ["::warning::y"],
        });
        for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
            let safe = neutralize(&text);
            assert!(!safe.contains("##["));
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back, value);
        }
    }

    std::thread_local! {
        static SEEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn record(_: Stream, text: &str) {
        SEEN.with(|s| s.borrow_mut().push(text.to_string()));
    }

    #[test]
    fn the_safe_writer_hands_over_whole_lines_and_the_rest_on_drop() {
        let mut w = SafeWriter { stream: Stream::Stderr, buf: Vec::new(), sink: record };
        w.write_all(b"first\nsec").unwrap();
        w.flush().unwrap();
        w.write_all(b"ond\n::partial").unwrap();
        w.flush().unwrap();
        drop(w);
        // write_text then neutralises each block and ends it with a newline.
        assert_eq!(SEEN.with(|s| s.take()), ["first\n", "second\n", "::partial"]);
    }

    /// Everything that writes to stdout/stderr must go through this module.
    #[test]
    fn nothing_else_writes_to_stdout_or_stderr() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let forbidden = ["println!", "eprintln!", "print!(", "eprint!(", "dbg!(", "stdout()", "stderr()"];
        // (file, text) pairs that are allowed: a TTY check, and progress bars drawn only on a
        // terminal outside Actions (never read by a runner).
        let allowed = [
            ("image/push.rs", "std::io::stderr().is_terminal()"),
            ("image/push.rs", "ProgressDrawTarget::stderr()"),
            ("commands/taskdef.rs", "std::io::stdout().is_terminal()"),
        ];
        let mut offenders = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                if rel == "output.rs" || path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let mut line = line.to_string();
                    for (file, ok) in allowed {
                        if rel == file {
                            line = line.replace(ok, "");
                        }
                    }
                    // A whole word only: `commands_to_stderr()` is not `stderr()`.
                    let found = forbidden.iter().find(|f| {
                        line.match_indices(**f).any(|(i, _)| {
                            !line[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_')
                        })
                    });
                    if let Some(f) = found {
                        offenders.push(format!("src/{rel}:{}: {f}", n + 1));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "write through crate::output instead:\n{}", offenders.join("\n"));
    }
}
