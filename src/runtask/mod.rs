//! One-off tasks (`deployer run-task`, and `release`'s `pre-deploy` stage, e.g. migrations):
//! RunTask of a revision with a service's placement and command overrides, wait until it
//! STOPPED, and succeed only when every essential container exited 0.
//!
//! This file holds the plain data and the decisions (pure, table-tested): the task's spec
//! (command, container, environment, time limit) as flags and deployer.toml give it, and the
//! verdict on a stopped task. `run` does the ECS calls and the wait, `report` says what
//! happened (text, JSON, step summary).

pub mod report;
pub mod run;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RunTaskError {
    #[error("ECS {op} failed: {message}")]
    Api { op: &'static str, message: String },
    #[error("{0}")]
    Input(String),
    #[error("ECS did not start the task: {0}; nothing ran and the service was not touched")]
    NotStarted(String),
}

/// A one-off task's time limit when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What a one-off task runs and how long it may take: flags over deployer.toml, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Empty: the task definition's own command.
    pub command: Vec<String>,
    /// The container the command and environment apply to (optional with one container).
    pub container: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Last awslogs lines to show on failure (0: none).
    pub log_lines: usize,
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

/// How a task ended, reduced to what the verdict needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskEnd {
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCommand(pub Vec<String>);

impl FromStr for TaskCommand {
    type Err = String;

    fn from_str(input: &str) -> Result<TaskCommand, String> {
        let v: Vec<String> = serde_json::from_str(input).map_err(|_| {
            format!("{input:?} is not a JSON array of strings; write it as '[\"bin/migrate\", \"--all\"]'")
        })?;
        if v.is_empty() {
            return Err("an empty command; name the program, e.g. '[\"bin/migrate\"]'".into());
        }
        Ok(TaskCommand(v))
    }
}

/// `timeout` in deployer.toml: seconds or a duration string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TimeoutSetting {
    Seconds(u64),
    Text(String),
}

impl TimeoutSetting {
    /// As the flag takes it.
    pub fn as_flag(&self) -> String {
        match self {
            TimeoutSetting::Seconds(s) => s.to_string(),
            TimeoutSetting::Text(t) => t.clone(),
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
    pub env: BTreeMap<String, String>,
    /// Show this many of the container's last awslogs lines when it fails (0: off).
    pub log_lines: Option<usize>,
}

impl PreDeployConfig {
    /// What can be wrong in the file itself: an empty command, a timeout that is no duration.
    pub fn check(&self) -> Result<(), String> {
        if self.command.is_empty() {
            return Err("pre-deploy.command is empty; name the program, e.g. [\"bin/migrate\"]".into());
        }
        if let Some(t) = &self.timeout {
            parse_duration(&t.as_flag()).map_err(|e| format!("pre-deploy.timeout {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, essential: bool, exit_code: Option<i32>) -> ContainerExit {
        ContainerExit { name: name.into(), essential, exit_code, reason: None }
    }

    fn stopped(containers: Vec<ContainerExit>) -> TaskEnd {
        TaskEnd {
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
        let parse = |s: &str| s.parse::<TaskCommand>();
        assert_eq!(parse(r#"["bin/migrate", "--all"]"#).unwrap().0, ["bin/migrate", "--all"]);
        assert!(parse("bin/migrate --all").unwrap_err().contains("is not a JSON array of strings"));
        assert!(parse("[]").unwrap_err().contains("an empty command"));
        assert!(parse("[1]").is_err());
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
        assert_eq!(c.timeout.as_ref().map(TimeoutSetting::as_flag).as_deref(), Some("10m"));
        assert!(c.check().is_ok());
        let c: PreDeployConfig = toml::from_str("command = [\"m\"]\ntimeout = 30").unwrap();
        assert_eq!(c.timeout.unwrap().as_flag(), "30");
        assert!(toml::from_str::<PreDeployConfig>("command = [\"m\"]\ncontainr = \"x\"").is_err());
        let bad: PreDeployConfig = toml::from_str("command = []\n").unwrap();
        assert!(bad.check().unwrap_err().contains("pre-deploy.command is empty"));
        let bad: PreDeployConfig = toml::from_str("command = [\"m\"]\ntimeout = \"soon\"").unwrap();
        assert!(bad.check().unwrap_err().contains("pre-deploy.timeout \"soon\" is not a duration"));
    }
}
