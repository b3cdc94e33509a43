//! The health gate: a pure state machine fed with observations of a deployment (ECS's view,
//! the new revision's tasks, probe results, elapsed time) that answers `Wait`, `Healthy` or
//! `Failed` with the reason. No I/O, no clock: every failure timeline is a table test.
//!
//! Healthy: ECS reports the deployment completed, every task of the new revision runs (and is
//! HEALTHY where a health check exists), each probe URL has answered well N times in a row,
//! and then the bake time passes with no failure signal (any doubt restarts the bake).
//! Failed: rollout FAILED or ECS rolling back (circuit breaker), a new-revision task stopping
//! with an error, the service's primary deployment no longer ours, K probe failures in a row
//! on one URL, or the timeout — checked in that order, the most telling reason first.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    pub bake: Duration,
    pub timeout: Duration,
    /// Consecutive good answers each probe URL needs.
    pub probe_successes: u32,
    /// Consecutive bad answers from one URL that fail the gate.
    pub probe_failures: u32,
    pub probe_urls: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            bake: Duration::ZERO,
            timeout: Duration::from_secs(1800),
            probe_successes: 3,
            probe_failures: 3,
            probe_urls: Vec::new(),
        }
    }
}

/// ECS's view of our deployment (DescribeServices `deployments[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentState {
    /// IN_PROGRESS | COMPLETED | FAILED
    pub rollout_state: String,
    pub rollout_reason: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub failed_tasks: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    pub name: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// A task of the new revision (DescribeTasks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskState {
    pub arn: String,
    /// PROVISIONING | PENDING | RUNNING | STOPPED …
    pub last_status: String,
    /// HEALTHY | UNHEALTHY | UNKNOWN
    pub health: String,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerState>,
    /// When ECS began stopping it (epoch ms), for detection-latency figures.
    pub stopping_at_ms: Option<u64>,
}

impl TaskState {
    /// Stopped because something went wrong (not scaled in, not stopped by a user).
    pub fn failed(&self) -> bool {
        if !matches!(self.last_status.as_str(), "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" | "STOPPED") {
            return false;
        }
        let reason = self.stopped_reason.as_deref().unwrap_or_default();
        matches!(self.stop_code.as_deref(), Some("TaskFailedToStart" | "EssentialContainerExited"))
            || reason.contains("health check")
            || reason.contains("Error")
            || self.containers.iter().any(|c| c.exit_code.is_some_and(|code| code != 0))
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.arn.rsplit('/').next().unwrap_or(&self.arn);
        write!(f, "task {id}")?;
        if let Some(code) = &self.stop_code {
            write!(f, " [{code}]")?;
        }
        if let Some(reason) = &self.stopped_reason {
            write!(f, ": {reason}")?;
        }
        for c in &self.containers {
            match (c.exit_code, &c.reason) {
                (None, None) => {}
                (code, reason) => {
                    write!(f, "; container {}", c.name)?;
                    if let Some(code) = code {
                        write!(f, " exit code {code}")?;
                    }
                    if let Some(reason) = reason {
                        write!(f, " ({reason})")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One probe of one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub url: String,
    pub ok: bool,
    /// HTTP status, if the request got an answer.
    pub status: Option<u16>,
    /// The first bytes of the body, or the transport error.
    pub detail: String,
}

/// Everything observed at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub elapsed: Duration,
    /// Our deployment; `None` once ECS has dropped it.
    pub deployment: Option<DeploymentState>,
    /// The service's PRIMARY deployment still runs our task definition.
    pub primary_is_ours: bool,
    /// ServiceDeployment status (SUCCESSFUL, ROLLBACK_IN_PROGRESS, …) when known.
    pub service_deployment_status: Option<String>,
    pub tasks: Vec<TaskState>,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// ECS gave up on the deployment (circuit breaker, or the deployment failed).
    EcsFailed {
        reason: String,
        ecs_rolls_back: bool,
    },
    /// The service's primary deployment is no longer the new revision.
    Replaced,
    TaskStopped {
        task: String,
    },
    Probe {
        url: String,
        failures: u32,
        status: Option<u16>,
        detail: String,
    },
    Timeout {
        waiting_for: String,
    },
}

impl Failure {
    /// ECS is already returning the service to the previous revision by itself.
    pub fn ecs_rolls_back(&self) -> bool {
        matches!(self, Failure::EcsFailed { ecs_rolls_back: true, .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::EcsFailed { reason, ecs_rolls_back } => {
                write!(f, "ECS failed the deployment: {reason}")?;
                if *ecs_rolls_back {
                    write!(f, " (ECS is rolling back by itself)")?;
                }
                Ok(())
            }
            Failure::Replaced => write!(
                f,
                "the service's primary deployment is no longer this revision (another deployment replaced it)"
            ),
            Failure::TaskStopped { task } => write!(f, "a task of the new revision stopped: {task}"),
            Failure::Probe { url, failures, status, detail } => {
                write!(f, "{url} failed {failures} times in a row")?;
                match status {
                    Some(s) => write!(f, " (last: HTTP {s}: {detail})"),
                    None => write!(f, " (last: {detail})"),
                }
            }
            Failure::Timeout { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Wait(String),
    Healthy,
    Failed(Failure),
}

/// Consecutive good and bad answers per probe URL, shared by every gate.
#[derive(Debug, Clone, Default)]
pub struct ProbeStreaks {
    ok: BTreeMap<String, u32>,
    bad: BTreeMap<String, u32>,
    last_bad: BTreeMap<String, Probe>,
}

impl ProbeStreaks {
    /// Count `probes`; the first URL reaching `failures` bad answers in a row fails.
    pub fn record(&mut self, probes: &[Probe], failures: u32) -> Option<Failure> {
        for probe in probes {
            if probe.ok {
                *self.ok.entry(probe.url.clone()).or_default() += 1;
                self.bad.insert(probe.url.clone(), 0);
                continue;
            }
            self.ok.insert(probe.url.clone(), 0);
            let n = self.bad.entry(probe.url.clone()).or_default();
            *n += 1;
            self.last_bad.insert(probe.url.clone(), probe.clone());
            if *n >= failures {
                return Some(Failure::Probe {
                    url: probe.url.clone(),
                    failures: *n,
                    status: probe.status,
                    detail: probe.detail.clone(),
                });
            }
        }
        None
    }

    /// Good answers in a row from `url`.
    pub fn ok(&self, url: &str) -> u32 {
        self.ok.get(url).copied().unwrap_or(0)
    }

    /// The last bad answer of each URL (for diagnostics).
    pub fn last_bad(&self) -> impl Iterator<Item = &Probe> {
        self.last_bad.values()
    }
}

/// The gate's memory between observations: probe streaks and when steadiness began.
#[derive(Debug, Clone)]
pub struct Gate {
    config: GateConfig,
    probes: ProbeStreaks,
    steady_since: Option<Duration>,
}

impl Gate {
    pub fn new(config: GateConfig) -> Gate {
        Gate { config, probes: ProbeStreaks::default(), steady_since: None }
    }

    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    pub fn observe(&mut self, obs: &Observation) -> Verdict {
        // ECS's own verdict first: it decides whether ECS rolls back by itself.
        let failed_rollout = obs.deployment.as_ref().filter(|d| d.rollout_state == "FAILED");
        let rolling_back = obs.service_deployment_status.as_deref().filter(|s| s.starts_with("ROLLBACK"));
        if failed_rollout.is_some() || rolling_back.is_some() {
            let mut reason = match (failed_rollout.and_then(|d| d.rollout_reason.clone()), rolling_back) {
                (Some(r), _) => r,
                (None, Some(status)) => format!("service deployment {status}"),
                (None, None) => "rolloutState FAILED".into(),
            };
            // The rollout reason is generic ("tasks failed to start"); name a task that did.
            if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
                reason.push_str(&format!("; e.g. {task}"));
            }
            let ecs_rolls_back =
                rolling_back.is_some() || reason.contains("rolling back") || reason.contains("rolled back");
            return Verdict::Failed(Failure::EcsFailed { reason, ecs_rolls_back });
        }
        if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
            return Verdict::Failed(Failure::TaskStopped { task: task.to_string() });
        }
        if !obs.primary_is_ours {
            return Verdict::Failed(Failure::Replaced);
        }
        if let Some(failure) = self.probes.record(&obs.probes, self.config.probe_failures) {
            return Verdict::Failed(failure);
        }
        let waiting_for = self.waiting_for(obs);
        match waiting_for {
            Some(what) => {
                self.steady_since = None;
                if obs.elapsed >= self.config.timeout {
                    return Verdict::Failed(Failure::Timeout { waiting_for: what });
                }
                Verdict::Wait(what)
            }
            None => {
                let since = *self.steady_since.get_or_insert(obs.elapsed);
                let baked = obs.elapsed.saturating_sub(since);
                if baked >= self.config.bake {
                    return Verdict::Healthy;
                }
                if obs.elapsed >= self.config.timeout {
                    return Verdict::Failed(Failure::Timeout { waiting_for: "the bake time to pass".into() });
                }
                Verdict::Wait(format!("baking: {}s of {}s", baked.as_secs(), self.config.bake.as_secs()))
            }
        }
    }

    /// What keeps the deployment from being steady, or `None` when it is.
    fn waiting_for(&self, obs: &Observation) -> Option<String> {
        let Some(d) = &obs.deployment else {
            return Some("ECS to show the deployment".into());
        };
        let done = d.rollout_state == "COMPLETED" || obs.service_deployment_status.as_deref() == Some("SUCCESSFUL");
        if !done {
            return Some(format!(
                "ECS to complete the rollout ({} of {} tasks running, {} pending)",
                d.running, d.desired, d.pending
            ));
        }
        if d.running < d.desired {
            return Some(format!("{} of {} tasks running", d.running, d.desired));
        }
        let running: Vec<&TaskState> = obs.tasks.iter().filter(|t| t.last_status == "RUNNING").collect();
        if let Some(t) = running.iter().find(|t| t.health == "UNHEALTHY") {
            return Some(format!("{t} to become healthy"));
        }
        if running.iter().any(|t| t.health != "HEALTHY" && t.health != "UNKNOWN" && !t.health.is_empty()) {
            return Some("container health checks".into());
        }
        for url in &self.config.probe_urls {
            let n = self.probes.ok(url);
            if n < self.config.probe_successes {
                return Some(format!(
                    "{url} to answer well {} times in a row ({n} so far)",
                    self.config.probe_successes
                ));
            }
        }
        None
    }

    /// The last bad answer of each URL (for diagnostics).
    pub fn last_bad_probes(&self) -> impl Iterator<Item = &Probe> {
        self.probes.last_bad()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:9/health";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn deployment(state: &str, running: i32) -> DeploymentState {
        DeploymentState { rollout_state: state.into(), desired: 2, running, ..Default::default() }
    }

    fn task(status: &str, health: &str) -> TaskState {
        TaskState {
            arn: "arn:aws:ecs:r:1:task/c/abc123".into(),
            last_status: status.into(),
            health: health.into(),
            ..Default::default()
        }
    }

    fn probe(ok: bool) -> Probe {
        Probe {
            url: URL.into(),
            ok,
            status: Some(if ok { 200 } else { 500 }),
            detail: if ok { "{\"status\":\"healthy\"}".into() } else { "{\"status\":\"unhealthy\"}".into() },
        }
    }

    fn obs(t: u64, d: Option<DeploymentState>, tasks: Vec<TaskState>, probes: Vec<Probe>) -> Observation {
        Observation {
            elapsed: secs(t),
            deployment: d,
            primary_is_ours: true,
            service_deployment_status: None,
            tasks,
            probes,
        }
    }

    fn config(bake: u64) -> GateConfig {
        GateConfig { bake: secs(bake), timeout: secs(100), probe_urls: vec![URL.into()], ..Default::default() }
    }

    /// Feed a timeline; return each verdict's short form.
    fn run(config: GateConfig, timeline: Vec<Observation>) -> Vec<String> {
        let mut gate = Gate::new(config);
        timeline
            .iter()
            .map(|o| match gate.observe(o) {
                Verdict::Wait(w) => format!("wait: {w}"),
                Verdict::Healthy => "healthy".into(),
                Verdict::Failed(f) => format!("failed: {f}"),
            })
            .collect()
    }

    #[test]
    fn a_good_rollout_bakes_then_passes() {
        let healthy = || vec![task("RUNNING", "HEALTHY"), task("RUNNING", "HEALTHY")];
        let got = run(
            config(10),
            vec![
                obs(0, Some(deployment("IN_PROGRESS", 0)), vec![], vec![probe(true)]),
                obs(2, Some(deployment("COMPLETED", 2)), healthy(), vec![probe(true)]),
                obs(4, Some(deployment("COMPLETED", 2)), healthy(), vec![probe(true)]),
                obs(10, Some(deployment("COMPLETED", 2)), healthy(), vec![probe(true)]),
                obs(14, Some(deployment("COMPLETED", 2)), healthy(), vec![probe(true)]),
            ],
        );
        assert_eq!(
            got,
            [
                "wait: ECS to complete the rollout (0 of 2 tasks running, 0 pending)",
                format!("wait: {URL} to answer well 3 times in a row (2 so far)").as_str(),
                "wait: baking: 0s of 10s",
                "wait: baking: 6s of 10s",
                "healthy",
            ]
        );
    }

    #[test]
    fn a_probe_failure_restarts_the_bake() {
        let healthy = || vec![task("RUNNING", "UNKNOWN")];
        let d = || {
            Some(DeploymentState { desired: 1, running: 1, rollout_state: "COMPLETED".into(), ..Default::default() })
        };
        let got = run(
            config(5),
            vec![
                obs(0, d(), healthy(), vec![probe(true)]),
                obs(1, d(), healthy(), vec![probe(true)]),
                obs(2, d(), healthy(), vec![probe(true)]),
                obs(4, d(), healthy(), vec![probe(false)]),
                obs(6, d(), healthy(), vec![probe(true)]),
                obs(7, d(), healthy(), vec![probe(true)]),
                obs(8, d(), healthy(), vec![probe(true)]),
                obs(12, d(), healthy(), vec![probe(true)]),
                obs(13, d(), healthy(), vec![probe(true)]),
            ],
        );
        assert_eq!(got[2], "wait: baking: 0s of 5s");
        assert!(got[3].contains("(0 so far)"), "{got:?}");
        assert_eq!(got[6], "wait: baking: 0s of 5s");
        assert_eq!(got[7], "wait: baking: 4s of 5s");
        assert_eq!(got[8], "healthy");
    }

    #[test]
    fn failure_signals_fail_at_once_with_their_reason() {
        let running = || Some(deployment("IN_PROGRESS", 1));
        let crashed = TaskState {
            last_status: "STOPPED".into(),
            stop_code: Some("EssentialContainerExited".into()),
            stopped_reason: Some("Essential container in task exited".into()),
            containers: vec![ContainerState { name: "web".into(), exit_code: Some(1), reason: None }],
            ..task("STOPPED", "UNKNOWN")
        };
        let secret = TaskState {
            stop_code: Some("TaskFailedToStart".into()),
            stopped_reason: Some(
                "ResourceInitializationError: unable to pull secrets or registry auth: parameter /p/x not found".into(),
            ),
            ..task("STOPPED", "UNKNOWN")
        };
        let table: Vec<(Observation, &str)> = vec![
            (
                Observation {
                    service_deployment_status: Some("ROLLBACK_IN_PROGRESS".into()),
                    deployment: Some(DeploymentState {
                        rollout_state: "FAILED".into(),
                        rollout_reason: Some("ECS deployment circuit breaker: tasks failed to start.".into()),
                        ..Default::default()
                    }),
                    ..obs(3, None, vec![], vec![])
                },
                "failed: ECS failed the deployment: ECS deployment circuit breaker: tasks failed to start. (ECS is rolling back by itself)",
            ),
            (
                obs(3, Some(DeploymentState { rollout_state: "FAILED".into(), ..Default::default() }), vec![], vec![]),
                "failed: ECS failed the deployment: rolloutState FAILED",
            ),
            (
                Observation {
                    service_deployment_status: Some("ROLLBACK_IN_PROGRESS".into()),
                    ..obs(3, Some(deployment("IN_PROGRESS", 0)), vec![crashed.clone()], vec![])
                },
                "failed: ECS failed the deployment: service deployment ROLLBACK_IN_PROGRESS; e.g. task abc123 [EssentialContainerExited]",
            ),
            (
                Observation { primary_is_ours: false, ..obs(3, running(), vec![], vec![]) },
                "failed: the service's primary deployment is no longer this revision",
            ),
            (
                obs(3, running(), vec![task("RUNNING", "HEALTHY"), crashed], vec![]),
                "failed: a task of the new revision stopped: task abc123 [EssentialContainerExited]: Essential container in task exited; container web exit code 1",
            ),
            (
                obs(3, running(), vec![secret], vec![]),
                "failed: a task of the new revision stopped: task abc123 [TaskFailedToStart]: ResourceInitializationError: unable to pull secrets",
            ),
            (
                obs(100, running(), vec![], vec![]),
                "failed: timed out waiting for ECS to complete the rollout (1 of 2 tasks running, 0 pending)",
            ),
        ];
        for (o, want) in table {
            let got = run(config(0), vec![o]);
            assert!(got[0].starts_with(want), "{} !~ {want}", got[0]);
        }
    }

    #[test]
    fn k_probe_failures_in_a_row_fail_even_when_ecs_is_happy() {
        let d = || Some(deployment("COMPLETED", 2));
        let tasks = || vec![task("RUNNING", "HEALTHY"), task("RUNNING", "HEALTHY")];
        let got = run(
            config(0),
            vec![
                obs(0, d(), tasks(), vec![probe(false)]),
                obs(1, d(), tasks(), vec![probe(true)]),
                obs(2, d(), tasks(), vec![probe(false)]),
                obs(3, d(), tasks(), vec![probe(false)]),
                obs(4, d(), tasks(), vec![probe(false)]),
            ],
        );
        assert_eq!(got[3], format!("wait: {URL} to answer well 3 times in a row (0 so far)"));
        assert_eq!(
            got[4],
            format!("failed: {URL} failed 3 times in a row (last: HTTP 500: {{\"status\":\"unhealthy\"}})")
        );
    }

    #[test]
    fn an_unhealthy_container_keeps_the_gate_waiting() {
        let d = Some(deployment("COMPLETED", 2));
        let got = run(
            GateConfig { probe_urls: vec![], ..config(0) },
            vec![obs(1, d, vec![task("RUNNING", "HEALTHY"), task("RUNNING", "UNHEALTHY")], vec![])],
        );
        assert_eq!(got, ["wait: task abc123 to become healthy"]);
    }

    #[test]
    fn scaled_in_or_user_stopped_tasks_are_not_failures() {
        let stopped = |code: &str| TaskState {
            stop_code: Some(code.into()),
            stopped_reason: Some("Scaling activity initiated by (deployment ecs-svc/1)".into()),
            ..task("STOPPED", "UNKNOWN")
        };
        assert!(!stopped("ServiceSchedulerInitiated").failed());
        assert!(!stopped("UserInitiated").failed());
        assert!(stopped("TaskFailedToStart").failed());
        assert!(!task("RUNNING", "UNHEALTHY").failed());
        let elb = TaskState {
            stop_code: Some("ServiceSchedulerInitiated".into()),
            stopped_reason: Some(
                "Task failed ELB health checks in (target-group arn:aws:elasticloadbalancing:r:1:targetgroup/web/1)"
                    .into(),
            ),
            ..task("DEACTIVATING", "UNKNOWN")
        };
        assert!(elb.failed(), "ECS stops a task in stages; the first one already tells");
    }
}
