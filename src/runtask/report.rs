//! What a one-off task leaves behind: the report for the result (text and JSON), the exit
//! code and the step summary. Everything the task wrote (stop reasons, log lines) is someone
//! else's output, shown so that no line of it can start a workflow command.

use std::fmt;

use serde::Serialize;

use super::{ContainerExit, RunResult};
use crate::aws::logs::ContainerLogs;
use crate::deploy::view::short;
use crate::exit::Exit;

/// Everything a one-off task leaves behind, for the result, the summary and the exit code.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunTaskReport {
    pub cluster: String,
    pub task_definition_arn: String,
    pub task_arn: String,
    pub container: String,
    pub command: Vec<String>,
    pub result: RunResult,
    pub failure: Option<String>,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerExit>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<ContainerLogs>,
    pub duration_ms: u64,
    pub polls: u32,
}

impl RunTaskReport {
    pub fn exit(&self) -> Exit {
        match self.result {
            RunResult::Succeeded => Exit::Ok,
            RunResult::Cancelled => Exit::Cancelled,
            RunResult::Failed | RunResult::TimedOut => Exit::Failed,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.result == RunResult::Succeeded
    }

    /// `running`/`succeeded`/... as the summary and `result` output name it.
    pub fn result_name(&self) -> &'static str {
        match self.result {
            RunResult::Succeeded => "succeeded",
            RunResult::Failed => "failed",
            RunResult::TimedOut => "timed-out",
            RunResult::Cancelled => "cancelled",
        }
    }
}

/// A line of someone else's output made safe to print on its own line: control characters
/// shown as escapes, and never at the start of a line where the runner reads `::commands::`.
pub fn safe_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 2);
    out.push_str("| ");
    for ch in line.chars().take(1000) {
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for RunTaskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = format!("task {} of {}", short(&self.task_arn), short(&self.task_definition_arn));
        let secs = self.duration_ms as f64 / 1000.0;
        match self.result {
            RunResult::Succeeded => write!(f, "{what} succeeded in {secs:.1}s")?,
            RunResult::Failed => write!(f, "{what} FAILED after {secs:.1}s")?,
            RunResult::TimedOut => write!(f, "{what} timed out after {secs:.1}s and was stopped")?,
            RunResult::Cancelled => write!(f, "{what} was cancelled and stopped")?,
        }
        if let Some(why) = &self.failure {
            write!(f, "\n  why: {}", safe_line(why).trim_start_matches("| "))?;
        }
        for c in &self.containers {
            let code = c.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
            let essential = if c.essential { "" } else { " (not essential)" };
            write!(f, "\n  container {}{essential}: exit code {code}", c.name)?;
            if let Some(r) = &c.reason {
                write!(f, " ({})", safe_line(r).trim_start_matches("| "))?;
            }
        }
        for l in &self.logs {
            write!(f, "\n  last log lines of {} ({} {}):", l.container, l.group, l.stream)?;
            if let Some(e) = &l.error {
                write!(f, " could not be read: {e}")?;
            }
            for line in &l.lines {
                write!(f, "\n    {}", safe_line(line))?;
            }
        }
        Ok(())
    }
}

/// The markdown section of a one-off task for `$GITHUB_STEP_SUMMARY`.
pub fn summary(title: &str, r: &RunTaskReport) -> String {
    let code = |s: &str| format!("`{}`", s.replace('`', "'").replace(['\n', '\r'], " "));
    let icon = if r.succeeded() { "✅" } else { "❌" };
    let mut md = format!("### {title}: {icon} {}\n\n", r.result_name());
    md.push_str(&format!(
        "{} in {} of {}, {:.1}s\n\n",
        code(&r.command.join(" ")),
        code(&r.container),
        code(short(&r.task_definition_arn)),
        r.duration_ms as f64 / 1000.0
    ));
    if let Some(why) = &r.failure {
        md.push_str(&format!("**Why:** {}\n\n", code(why)));
    }
    if !r.containers.is_empty() {
        md.push_str("| container | essential | exit code | reason |\n| --- | --- | ---: | --- |\n");
        for c in &r.containers {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                code(&c.name),
                if c.essential { "yes" } else { "no" },
                c.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
                c.reason.as_deref().map(code).unwrap_or_default().replace('|', "\\|")
            ));
        }
        md.push('\n');
    }
    for l in &r.logs {
        md.push_str(&format!("<details><summary>last log lines of {}</summary>\n\n```text\n", code(&l.container)));
        for line in &l.lines {
            md.push_str(&safe_line(line).replace("```", "'''"));
            md.push('\n');
        }
        md.push_str("```\n\n</details>\n\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_lines_cannot_start_a_workflow_command() {
        assert_eq!(safe_line("::set-output name=x::y"), "| ::set-output name=x::y");
        assert_eq!(safe_line("a\r\n::error::x\u{1b}[31m"), "| a\\r\\n::error::x\\u{1b}[31m");
        let long = "x".repeat(5000);
        assert_eq!(safe_line(&long).len(), 1002);
    }
}
