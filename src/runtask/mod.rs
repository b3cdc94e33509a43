//! One-off tasks (`deployer run-task`, and `release`'s `pre-deploy` stage, e.g. migrations):
//! RunTask of a revision with a service's placement and command overrides, wait until it
//! STOPPED, and succeed only when every essential container exited 0.
//!
//! This file holds the plain data and the decisions (pure, table-tested); `run` does the ECS
//! calls and the wait, `logs` reads the last awslogs lines of a container.

pub mod logs;
pub mod run;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum RunTaskError {
    #[error("ECS {op} failed: {message}")]
    Api { op: &'static str, message: String },
    #[error("{0}")]
    Input(String),
    #[error("ECS did not start the task: {0}; nothing ran and the service was not touched")]
    NotStarted(String),
}

/// One container of a stopped (or stopping) task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ContainerExit {
    pub name: String,
    pub essential: bool,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// A task as DescribeTasks shows it, reduced to what the verdict needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskEnd {
    pub last_status: String,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerExit>,
}

/// How a one-off task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    Succeeded,
    Failed,
    /// `--timeout` passed: deployer stopped the task.
    TimedOut,
    /// SIGINT/SIGTERM: deployer stopped the task.
    Cancelled,
}

/// The verdict on a STOPPED task: `None` when it succeeded (every essential container exited
/// 0), otherwise why it failed. Non-essential containers never decide it.
pub fn failure(task: &TaskEnd) -> Option<String> {
    let essential: Vec<&ContainerExit> = task.containers.iter().filter(|c| c.essential).collect();
    if essential.is_empty() {
        return Some(format!("the task has no essential container that exited{}", stop_detail(task)));
    }
    let bad: Vec<String> = essential
        .iter()
        .filter(|c| c.exit_code != Some(0))
        .map(|c| match (c.exit_code, &c.reason) {
            (Some(code), _) => format!("container {} exited with code {code}", c.name),
            (None, Some(reason)) => format!("container {} did not run to an exit code ({reason})", c.name),
            (None, None) => format!("container {} did not run to an exit code", c.name),
        })
        .collect();
    (!bad.is_empty()).then(|| format!("{}{}", bad.join("; "), stop_detail(task)))
}

fn stop_detail(task: &TaskEnd) -> String {
    match (&task.stop_code, &task.stopped_reason) {
        (Some(code), Some(reason)) => format!(" [{code}: {reason}]"),
        (Some(code), None) => format!(" [{code}]"),
        (None, Some(reason)) => format!(" [{reason}]"),
        (None, None) => String::new(),
    }
}

/// `10m`, `90s`, `1h30m`, or plain seconds (`600`): how long a one-off task may run.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let bad = || format!("{input:?} is not a duration: use seconds (600) or units like 90s, 10m, 1h30m");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        total = total.checked_add(n.checked_mul(unit).ok_or_else(bad)?).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A command given as a JSON array of strings (flags and `DEPLOYER_*` variables), so nothing
/// is split or re-parsed by a shell.
pub fn parse_command(flag: &str, input: &str) -> Result<Vec<String>, String> {
    let v: Vec<String> = serde_json::from_str(input).map_err(|_| {
        format!("{flag} {input:?} is not a JSON array of strings; write it as '[\"bin/migrate\", \"--all\"]'")
    })?;
    if v.is_empty() {
        return Err(format!("{flag} is an empty command"));
    }
    Ok(v)
}

/// `timeout` in deployer.toml: seconds or a duration string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TimeoutSetting {
    Seconds(u64),
    Text(String),
}

impl TimeoutSetting {
    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            TimeoutSetting::Seconds(s) => Ok(Duration::from_secs(*s)),
            TimeoutSetting::Text(t) => parse_duration(t),
        }
    }
}

/// `pre-deploy = { command = ["bin/migrate"], container = "web", timeout = "10m" }` in an
/// environment of deployer.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PreDeployConfig {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub timeout: Option<TimeoutSetting>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Show this many of the container's last awslogs lines when it fails (0: off).
    pub log_lines: Option<usize>,
}

/// Last lines of one container's awslogs stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ContainerLogs {
    pub container: String,
    pub group: String,
    pub stream: String,
    pub lines: Vec<String>,
    /// Why the lines could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

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

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
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

    fn c(name: &str, essential: bool, exit_code: Option<i32>) -> ContainerExit {
        ContainerExit { name: name.into(), essential, exit_code, reason: None }
    }

    fn stopped(containers: Vec<ContainerExit>) -> TaskEnd {
        TaskEnd {
            last_status: "STOPPED".into(),
            stop_code: Some("EssentialContainerExited".into()),
            stopped_reason: Some("Essential container in task exited".into()),
            containers,
        }
    }

    #[test]
    fn only_essential_containers_that_all_exited_zero_succeed() {
        let cases: Vec<(&str, TaskEnd, Option<&str>)> = vec![
            ("one container, exit 0", stopped(vec![c("web", true, Some(0))]), None),
            ("sidecar killed after the job", stopped(vec![c("web", true, Some(0)), c("log", false, Some(137))]), None),
            (
                "exit 1",
                stopped(vec![c("web", true, Some(1))]),
                Some("container web exited with code 1 [EssentialContainerExited: Essential container in task exited]"),
            ),
            (
                "two essential, one failed",
                stopped(vec![c("web", true, Some(0)), c("init", true, Some(2))]),
                Some(
                    "container init exited with code 2 [EssentialContainerExited: Essential container in task exited]",
                ),
            ),
            (
                "never started",
                TaskEnd {
                    last_status: "STOPPED".into(),
                    stop_code: Some("TaskFailedToStart".into()),
                    stopped_reason: Some("CannotPullContainerError: not found".into()),
                    containers: vec![ContainerExit {
                        name: "web".into(),
                        essential: true,
                        exit_code: None,
                        reason: Some("CannotPullContainerError: not found".into()),
                    }],
                },
                Some(
                    "container web did not run to an exit code (CannotPullContainerError: not found) [TaskFailedToStart: CannotPullContainerError: not found]",
                ),
            ),
            (
                "no essential container at all",
                stopped(vec![c("web", false, Some(0))]),
                Some(
                    "the task has no essential container that exited [EssentialContainerExited: Essential container in task exited]",
                ),
            ),
        ];
        for (name, task, want) in cases {
            assert_eq!(failure(&task).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn durations_take_seconds_or_units() {
        for (input, want) in [("600", 600), ("90s", 90), ("10m", 600), ("1h30m", 5400), (" 2m ", 120)] {
            assert_eq!(parse_duration(input), Ok(Duration::from_secs(want)), "{input}");
        }
        for bad in ["", "m", "10x", "1.5m", "-3s", "0s", "99999999999999999999h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn commands_are_json_arrays_never_shell_words() {
        assert_eq!(parse_command("--command", r#"["bin/migrate", "--all"]"#).unwrap(), ["bin/migrate", "--all"]);
        assert!(parse_command("--command", "bin/migrate --all").unwrap_err().contains("not a JSON array"));
        assert!(parse_command("--command", "[]").unwrap_err().contains("empty command"));
        assert!(parse_command("--command", "[1]").is_err());
    }

    #[test]
    fn foreign_lines_cannot_start_a_workflow_command() {
        assert_eq!(safe_line("::set-output name=x::y"), "| ::set-output name=x::y");
        assert_eq!(safe_line("a\r\n::error::x\u{1b}[31m"), "| a\\r\\n::error::x\\u{1b}[31m");
        let long = "x".repeat(5000);
        assert_eq!(safe_line(&long).len(), 1002);
    }

    #[test]
    fn the_pre_deploy_key_reads_as_the_issue_writes_it() {
        let c: PreDeployConfig = toml::from_str(
            r#"command = ["bin/migrate"]
container = "web"
timeout = "10m""#,
        )
        .unwrap();
        assert_eq!(c.command, ["bin/migrate"]);
        assert_eq!(c.timeout.unwrap().duration(), Ok(Duration::from_secs(600)));
        let c: PreDeployConfig = toml::from_str("command = [\"m\"]\ntimeout = 30").unwrap();
        assert_eq!(c.timeout.unwrap().duration(), Ok(Duration::from_secs(30)));
        assert!(toml::from_str::<PreDeployConfig>("command = [\"m\"]\ncontainr = \"x\"").is_err());
    }
}
