//! GitHub runner I/O: step outputs (`$GITHUB_OUTPUT`), exported environment (`$GITHUB_ENV`),
//! `::add-mask::`, the step summary, `::group::` and annotations. Outside Actions the same
//! information goes to the terminal (stderr), so a maintainer sees what a workflow would.
//!
//! Every value that came from outside is escaped before it reaches a workflow command, and
//! file-command entries use a random delimiter that the value is checked not to contain, so
//! no input can inject a command, an output or an environment variable. This module builds
//! deployer's own workflow commands (`add-mask`, `group`, `endgroup`, `error`, `warning`,
//! `notice`) and is the only caller of `output::write_command`; everything else deployer prints
//! goes through `output::write_text`, which neutralises command-like lines.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::output::{self, Stream};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot write to {file} ({var}): {source}")]
    File { var: &'static str, file: PathBuf, source: io::Error },
    #[error("{what} name {name:?} is not usable: {reason}")]
    BadName { what: &'static str, name: String, reason: &'static str },
    #[error(
        "--export github-env needs $GITHUB_ENV, which is only set inside GitHub Actions; use --export shell or json here"
    )]
    NoGithubEnv,
}

/// Where the current process reports to.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    in_actions: bool,
    output_file: Option<PathBuf>,
    env_file: Option<PathBuf>,
    summary_file: Option<PathBuf>,
    /// Workflow commands go to stderr instead of stdout (when stdout carries a JSON result).
    commands_to_stderr: bool,
}

impl Runner {
    /// Reads `GITHUB_ACTIONS`, `GITHUB_OUTPUT`, `GITHUB_ENV` and `GITHUB_STEP_SUMMARY`.
    pub fn from_env(commands_to_stderr: bool) -> Self {
        let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Runner {
            in_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            output_file: path("GITHUB_OUTPUT"),
            env_file: path("GITHUB_ENV"),
            summary_file: path("GITHUB_STEP_SUMMARY"),
            commands_to_stderr,
        }
    }

    /// The runner as `Printer::new` set it up (commands on stderr with `--output json`), for
    /// code that must mask a credential the moment it holds one.
    pub fn current() -> Self {
        Runner::from_env(output::commands_to_stderr())
    }

    pub fn in_actions(&self) -> bool {
        self.in_actions
    }

    pub fn has_env_file(&self) -> bool {
        self.env_file.is_some()
    }

    fn command(&self, line: &str) {
        output::write_command(if self.commands_to_stderr { Stream::Stderr } else { Stream::Stdout }, line);
    }

    /// Ask the runner to hide `value` in every later log line. A no-op outside Actions.
    pub fn mask(&self, value: &str) {
        if !self.in_actions {
            return;
        }
        // A multi-line secret is masked line by line, as the runner matches per line.
        for line in value.lines().filter(|l| !l.trim().is_empty()) {
            self.command(&format!("::add-mask::{}", escape_data(line)));
        }
    }

    /// A step output; outside Actions it is only logged.
    pub fn set_output(&self, name: &str, value: &str) -> Result<(), RunnerError> {
        match &self.output_file {
            Some(file) => append(file, "GITHUB_OUTPUT", &file_command_entry("output", name, value, &delimiter())?),
            None => {
                check_name("output", name)?;
                tracing::debug!("output {name}={value}");
                Ok(())
            }
        }
    }

    /// Export an environment variable to later steps through `$GITHUB_ENV`.
    pub fn export_env(&self, name: &str, value: &str) -> Result<(), RunnerError> {
        let file = self.env_file.as_ref().ok_or(RunnerError::NoGithubEnv)?;
        append(file, "GITHUB_ENV", &file_command_entry("environment variable", name, value, &delimiter())?)
    }

    /// Append markdown to the step summary; outside Actions this does nothing (the text
    /// result already went to the terminal).
    pub fn summary(&self, markdown: &str) -> Result<(), RunnerError> {
        match &self.summary_file {
            Some(file) => append(file, "GITHUB_STEP_SUMMARY", markdown),
            None => Ok(()),
        }
    }

    /// Start a collapsible group in the log (a heading on a terminal).
    pub fn group(&self, title: &str) {
        if self.in_actions {
            self.command(&format!("::group::{}", escape_data(title)));
        } else {
            output::write_text(Stream::Stderr, &format!("== {title}"));
        }
    }

    pub fn end_group(&self) {
        if self.in_actions {
            self.command("::endgroup::");
        }
    }

    /// An annotation (`::error::`, `::warning::`, `::notice::`), optionally on a file.
    pub fn annotate(&self, level: Level, message: &str, file: Option<&Path>) {
        if self.in_actions {
            self.command(&annotation(level, message, file));
        } else {
            output::write_text(Stream::Stderr, &format!("{}: {message}", level.as_str()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }
}

fn append(file: &Path, var: &'static str, text: &str) -> Result<(), RunnerError> {
    let err = |source| RunnerError::File { var, file: file.to_path_buf(), source };
    let mut f = OpenOptions::new().create(true).append(true).open(file).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

fn delimiter() -> String {
    let mut rng = rand::rng();
    let mut d = String::from("ghadelimiter_");
    for _ in 0..32 {
        let _ = write!(d, "{:x}", rng.random_range(0..16u8));
    }
    d
}

fn check_name(what: &'static str, name: &str) -> Result<(), RunnerError> {
    let bad = |reason| RunnerError::BadName { what, name: name.to_string(), reason };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.contains(['\n', '\r']) {
        return Err(bad("it contains a line break"));
    }
    if name.contains('=') || name.contains("<<") {
        return Err(bad("it contains '=' or '<<'"));
    }
    Ok(())
}

/// One `NAME<<DELIM\nVALUE\nDELIM\n` entry of a runner file command. Fails rather than write
/// an entry whose value could end it early.
pub fn file_command_entry(what: &'static str, name: &str, value: &str, delimiter: &str) -> Result<String, RunnerError> {
    check_name(what, name)?;
    if value.contains(delimiter) || name.contains(delimiter) {
        return Err(RunnerError::BadName {
            what,
            name: name.to_string(),
            reason: "its value contains the random delimiter (try again)",
        });
    }
    Ok(format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"))
}

/// Escape a workflow command's message, as the runner unescapes it.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escape a workflow command's property value (`file=`, `title=`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

pub fn annotation(level: Level, message: &str, file: Option<&Path>) -> String {
    match file {
        Some(f) => {
            format!("::{} file={}::{}", level.as_str(), escape_property(&f.to_string_lossy()), escape_data(message))
        }
        None => format!("::{}::{}", level.as_str(), escape_data(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_escaping_neutralises_line_breaks_and_percent() {
        for (input, want) in [
            ("plain", "plain"),
            ("100%", "100%25"),
            ("a\nb", "a%0Ab"),
            ("a\r\n::set-env name=X::y", "a%0D%0A::set-env name=X::y"),
            ("%0A", "%250A"),
        ] {
            assert_eq!(escape_data(input), want, "{input:?}");
        }
    }

    #[test]
    fn property_escaping_also_covers_colon_and_comma() {
        assert_eq!(escape_property("a:b,c\n"), "a%3Ab%2Cc%0A");
    }

    #[test]
    fn annotations_cannot_start_a_second_command() {
        let line = annotation(Level::Error, "bad\n::add-mask::x", Some(Path::new("d,e:f.json")));
        assert_eq!(line, "::error file=d%2Ce%3Af.json::bad%0A::add-mask::x");
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn file_command_entries_use_the_delimiter_and_refuse_injection() {
        let entry = file_command_entry("output", "image-uri", "a\nb", "DELIM").unwrap();
        assert_eq!(entry, "image-uri<<DELIM\na\nb\nDELIM\n");
        for (name, value) in [("", "v"), ("a\nb", "v"), ("a=b", "v"), ("n", "x\nDELIM\nEVIL=1")] {
            assert!(file_command_entry("output", name, value, "DELIM").is_err(), "{name:?}={value:?}");
        }
    }

    #[test]
    fn delimiters_are_random_and_long() {
        let (a, b) = (delimiter(), delimiter());
        assert_ne!(a, b);
        assert_eq!(a.len(), "ghadelimiter_".len() + 32);
    }

    #[test]
    fn exported_values_round_trip_through_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        let runner = Runner { env_file: Some(file.clone()), ..Runner::default() };
        runner.export_env("A", "one").unwrap();
        runner.export_env("B", "two\nlines").unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        let parsed = parse_file_commands(&text);
        assert_eq!(parsed, vec![("A".into(), "one".into()), ("B".into(), "two\nlines".into())]);
    }

    /// The runner's own reading of a file command, for the round-trip test.
    fn parse_file_commands(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let (name, delim) = line.split_once("<<").unwrap();
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.push((name.to_string(), value.join("\n")));
        }
        out
    }
}
