//! Printing results: `--output text` prints the result's `Display`, `--output json` one JSON
//! object on stdout. Errors get the same treatment, so a script always reads one object.
//! Logs never go to stdout.

use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::github::runner::Runner;

pub struct Printer {
    pub format: OutputFormat,
    pub runner: Runner,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer {
            format,
            // With a JSON result on stdout, workflow commands move to stderr (the runner reads both).
            runner: Runner::from_env(format == OutputFormat::Json),
        }
    }

    pub fn result<T: Serialize + std::fmt::Display>(&self, result: &T) {
        let mut out = std::io::stdout().lock();
        let _ = match self.format {
            OutputFormat::Text => writeln!(out, "{result}"),
            OutputFormat::Json => match serde_json::to_string_pretty(result) {
                Ok(json) => writeln!(out, "{json}"),
                Err(e) => writeln!(out, "{{\"error\":\"cannot encode the result: {e}\"}}"),
            },
        };
        let _ = out.flush();
    }

    /// Report a failure: on stderr (and as an `::error::` annotation in Actions); with
    /// `--output json` also as `{"result":"failed","error":...,"exit-code":N}` on stdout.
    pub fn error(&self, message: &str, exit_code: u8) {
        self.runner.annotate(crate::github::runner::Level::Error, message, None);
        if self.runner.in_actions() {
            // The annotation carries the message; repeat it plainly for the raw log.
            eprintln!("error: {message}");
        }
        if self.format == OutputFormat::Json {
            let body = serde_json::json!({"result": "failed", "error": message, "exit-code": exit_code});
            println!("{body}");
        }
    }
}
