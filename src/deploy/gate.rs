//! The health gates: pure state machines fed with observations of a deployment (ECS's view,
//! the new revision's tasks, probe results, elapsed time) that answer `Wait`, `Continue`,
//! `Healthy` or `Failed` with the reason. No I/O, no clock: every timeline is a table test.
//!
//! `ecs_verdict` is ECS's own word on a deployment and every gate asks it first: ECS gave up
//! (rollout FAILED, the service deployment rolling back or stopped — and whether ECS rolls
//! back by itself), a new-revision task stopping with an error, or the primary deployment no
//! longer ours. Then each strategy's gate adds its own: the rolling gate (here) needs the
//! rollout COMPLETED, every new task running (HEALTHY where checked), each probe URL well N
//! times in a row, then the bake time with no doubt (any doubt restarts it); the
//! traffic-shift gate is in `lifecycle`. K probe failures in a row on one URL, or the
//! timeout, fail either.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_ecs::types::{DeploymentRolloutState, HealthStatus, ServiceDeploymentStatus};

use super::codedeploy_view::CodeDeployView;
use super::plan::GateConfig;
use super::view::{DeploymentView, ServiceDeploymentView, TaskView};

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

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} → HTTP {s}: {}", self.url, self.detail),
            None => write!(f, "{} → {}", self.url, self.detail),
        }
    }
}

/// Everything observed of one deployment at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub elapsed: Duration,
    /// Our deployment (the one running the new task definition); `None` once ECS dropped it.
    pub deployment: Option<DeploymentView>,
    /// The service's PRIMARY deployment still runs our task definition.
    pub primary_is_ours: bool,
    /// The service deployment our UpdateService created, once found.
    pub service_deployment: Option<ServiceDeploymentView>,
    pub tasks: Vec<TaskView>,
    pub probes: Vec<Probe>,
    /// A CODE_DEPLOY service: the CodeDeploy deployment, as this poll saw it.
    pub code_deploy: Option<CodeDeployView>,
}

impl Observation {
    fn sd_status_is(&self, status: ServiceDeploymentStatus) -> bool {
        self.service_deployment.as_ref().is_some_and(|s| s.status_is(status))
    }

    /// Deployer's hook holds the deployment: the hook id.
    pub fn held_by_us(&self) -> Option<&str> {
        self.service_deployment.as_ref().and_then(ServiceDeploymentView::held_by_us)
    }

    /// Poll at the base interval: a failure streak is building, or green waits on deployer.
    pub fn urgent(&self) -> bool {
        self.held_by_us().is_some() || self.probes.iter().any(|p| !p.ok)
    }
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
    /// CodeDeploy failed or stopped the deployment (and whether it is rolling back by itself).
    CodeDeploy {
        reason: String,
        rolls_back: bool,
    },
}

impl Failure {
    /// ECS is already returning the service to the previous revision by itself.
    pub fn ecs_rolls_back(&self) -> bool {
        matches!(self, Failure::EcsFailed { ecs_rolls_back: true, .. } | Failure::CodeDeploy { rolls_back: true, .. })
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
            Failure::CodeDeploy { reason, rolls_back } => {
                write!(f, "CodeDeploy ended the deployment: {reason}")?;
                if *rolls_back {
                    write!(f, " (CodeDeploy is rolling back by itself)")?;
                }
                Ok(())
            }
        }
    }
}

/// What a gate decides from one observation.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Wait(String),
    /// The test gate passed (or there is none): ContinueServiceDeployment(CONTINUE, hook).
    Continue {
        hook_id: String,
        note: String,
    },
    Healthy,
    Failed(Failure),
}

/// A gate the driver feeds, one per deployment of one service.
pub trait DeployGate: Send {
    fn observe(&mut self, obs: &Observation) -> Decision;
    /// The URLs the next poll probes, given the last observation.
    fn probe_urls(&self, last: Option<&Observation>) -> Vec<String>;
    /// The driver acted on `Decision::Continue`.
    fn continued(&mut self) {}
    /// Where the gate stands, for a failure line (" before production traffic shifted").
    fn phase_note(&self) -> &'static str {
        ""
    }
    /// A remark for the timeline, once (e.g. ECS walked past the hold).
    fn take_note(&mut self) -> Option<String> {
        None
    }
    /// The most recent bad probe answer (for the report).
    fn last_bad_probe(&self) -> Option<&Probe>;
}

/// ECS's own verdict, shared by every gate and checked first, the most telling reason first:
/// ECS gave up (and whether it rolls back by itself), a task of the new revision stopped with
/// an error, the primary deployment replaced. `None`: ECS sees nothing wrong.
pub fn ecs_verdict(obs: &Observation) -> Option<Failure> {
    let sd = obs.service_deployment.as_ref();
    let failed_rollout =
        obs.deployment.as_ref().filter(|d| d.rollout.as_ref() == Some(&DeploymentRolloutState::Failed));
    let gave_up = sd.filter(|s| s.given_up());
    if gave_up.is_some() || failed_rollout.is_some() {
        let mut reason = failed_rollout
            .and_then(|d| d.rollout_reason.clone())
            .or_else(|| gave_up.and_then(|s| s.status_reason.clone()))
            .unwrap_or_else(|| match gave_up {
                Some(s) => format!("service deployment {}", s.status_name()),
                None => "rolloutState FAILED".into(),
            });
        // The reason is generic ("tasks failed to start"); name a task that did.
        if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
            reason.push_str(&format!("; e.g. {task}"));
        }
        let ecs_rolls_back = gave_up.is_some_and(|s| s.rolling_back())
            || reason.contains("rolling back")
            || reason.contains("rolled back");
        return Some(Failure::EcsFailed { reason, ecs_rolls_back });
    }
    if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
        return Some(Failure::TaskStopped { task: task.to_string() });
    }
    if !obs.primary_is_ours && !obs.sd_status_is(ServiceDeploymentStatus::Successful) {
        return Some(Failure::Replaced);
    }
    None
}

/// Consecutive good and bad answers per probe URL, shared by every gate.
#[derive(Debug, Clone, Default)]
pub struct ProbeStreaks {
    ok: BTreeMap<String, u32>,
    bad: BTreeMap<String, u32>,
    last_bad: Option<Probe>,
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
            self.last_bad = Some(probe.clone());
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

    /// The first of `urls` without `needed` good answers in a row, with its count.
    pub fn unsatisfied<'u>(&self, urls: &'u [String], needed: u32) -> Option<(&'u str, u32)> {
        urls.iter().map(|u| (u.as_str(), self.ok(u))).find(|(_, n)| *n < needed)
    }

    /// The most recent bad answer.
    pub fn last_bad(&self) -> Option<&Probe> {
        self.last_bad.as_ref()
    }
}

/// The rolling gate's memory between observations: probe streaks and when steadiness began.
#[derive(Debug, Clone)]
pub struct RollingGate {
    config: GateConfig,
    probes: ProbeStreaks,
    steady_since: Option<Duration>,
}

impl RollingGate {
    pub fn new(config: GateConfig) -> RollingGate {
        RollingGate { config, probes: ProbeStreaks::default(), steady_since: None }
    }

    /// What keeps the deployment from being steady, or `None` when it is.
    fn waiting_for(&self, obs: &Observation) -> Option<String> {
        let Some(d) = &obs.deployment else {
            return Some("ECS to show the deployment".into());
        };
        let done = d.rollout.as_ref() == Some(&DeploymentRolloutState::Completed)
            || obs.sd_status_is(ServiceDeploymentStatus::Successful);
        if !done {
            return Some(format!(
                "ECS to complete the rollout ({} of {} tasks running, {} pending)",
                d.running, d.desired, d.pending
            ));
        }
        if d.running < d.desired {
            return Some(format!("{} of {} tasks running", d.running, d.desired));
        }
        let running: Vec<&TaskView> = obs.tasks.iter().filter(|t| t.running()).collect();
        if let Some(t) = running.iter().find(|t| t.health == Some(HealthStatus::Unhealthy)) {
            return Some(format!("{t} to become healthy"));
        }
        let known = |h: &HealthStatus| {
            matches!(h, HealthStatus::Healthy | HealthStatus::Unhealthy | HealthStatus::UnknownValue)
        };
        if running.iter().any(|t| t.health.as_ref().is_some_and(|h| !known(h))) {
            return Some("container health checks".into());
        }
        let (urls, needed) = (&self.config.health_urls, self.config.probe_successes);
        self.probes
            .unsatisfied(urls, needed)
            .map(|(url, n)| format!("{url} to answer well {needed} times in a row ({n} so far)"))
    }
}

impl DeployGate for RollingGate {
    fn observe(&mut self, obs: &Observation) -> Decision {
        if let Some(failure) = ecs_verdict(obs) {
            return Decision::Failed(failure);
        }
        if let Some(failure) = self.probes.record(&obs.probes, self.config.probe_failures) {
            return Decision::Failed(failure);
        }
        match self.waiting_for(obs) {
            Some(what) => {
                self.steady_since = None;
                if obs.elapsed >= self.config.timeout {
                    return Decision::Failed(Failure::Timeout { waiting_for: what });
                }
                Decision::Wait(what)
            }
            None => {
                let since = *self.steady_since.get_or_insert(obs.elapsed);
                let baked = obs.elapsed.saturating_sub(since);
                if baked >= self.config.bake {
                    return Decision::Healthy;
                }
                if obs.elapsed >= self.config.timeout {
                    return Decision::Failed(Failure::Timeout { waiting_for: "the bake time to pass".into() });
                }
                Decision::Wait(format!("baking: {}s of {}s", baked.as_secs(), self.config.bake.as_secs()))
            }
        }
    }

    fn probe_urls(&self, _last: Option<&Observation>) -> Vec<String> {
        self.config.health_urls.clone()
    }

    fn last_bad_probe(&self) -> Option<&Probe> {
        self.probes.last_bad()
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::{ContainerView, TaskStatus};
    use super::*;
    use aws_sdk_ecs::types::TaskStopCode;

    const URL: &str = "http://127.0.0.1:9/health";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn deployment(state: DeploymentRolloutState, running: i32) -> DeploymentView {
        DeploymentView { rollout: Some(state), desired: 2, running, primary: true, ..Default::default() }
    }

    fn completed(running: i32) -> Option<DeploymentView> {
        Some(deployment(DeploymentRolloutState::Completed, running))
    }

    fn in_progress(running: i32) -> Option<DeploymentView> {
        Some(deployment(DeploymentRolloutState::InProgress, running))
    }

    fn task(status: TaskStatus, health: HealthStatus) -> TaskView {
        TaskView { arn: "arn:aws:ecs:r:1:task/c/abc123".into(), status, health: Some(health), ..Default::default() }
    }

    fn healthy_task() -> TaskView {
        task(TaskStatus::Running, HealthStatus::Healthy)
    }

    fn probe(ok: bool) -> Probe {
        Probe {
            url: URL.into(),
            ok,
            status: Some(if ok { 200 } else { 500 }),
            detail: if ok { "{\"status\":\"healthy\"}".into() } else { "{\"status\":\"unhealthy\"}".into() },
        }
    }

    fn sd(status: ServiceDeploymentStatus, reason: Option<&str>) -> Option<ServiceDeploymentView> {
        Some(ServiceDeploymentView {
            status: Some(status),
            status_reason: reason.map(str::to_string),
            ..Default::default()
        })
    }

    fn obs(t: u64, d: Option<DeploymentView>, tasks: Vec<TaskView>, probes: Vec<Probe>) -> Observation {
        Observation {
            elapsed: secs(t),
            deployment: d,
            primary_is_ours: true,
            service_deployment: None,
            tasks,
            probes,
            code_deploy: None,
        }
    }

    fn config(bake: u64) -> GateConfig {
        GateConfig { bake: secs(bake), timeout: secs(100), health_urls: vec![URL.into()], ..Default::default() }
    }

    /// Feed a timeline; return each decision's short form.
    fn run(config: GateConfig, timeline: Vec<Observation>) -> Vec<String> {
        let mut gate = RollingGate::new(config);
        timeline
            .iter()
            .map(|o| match gate.observe(o) {
                Decision::Wait(w) => format!("wait: {w}"),
                Decision::Healthy => "healthy".into(),
                Decision::Failed(f) => format!("failed: {f}"),
                Decision::Continue { hook_id, .. } => format!("continue {hook_id}"),
            })
            .collect()
    }

    #[test]
    fn a_good_rollout_bakes_then_passes() {
        let healthy = || vec![healthy_task(), healthy_task()];
        let got = run(
            config(10),
            vec![
                obs(0, in_progress(0), vec![], vec![probe(true)]),
                obs(2, completed(2), healthy(), vec![probe(true)]),
                obs(4, completed(2), healthy(), vec![probe(true)]),
                obs(10, completed(2), healthy(), vec![probe(true)]),
                obs(14, completed(2), healthy(), vec![probe(true)]),
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
        let healthy = || vec![task(TaskStatus::Running, HealthStatus::UnknownValue)];
        let d = || {
            Some(DeploymentView {
                desired: 1,
                running: 1,
                rollout: Some(DeploymentRolloutState::Completed),
                ..Default::default()
            })
        };
        let got = run(
            config(5),
            [true, true, true, false, true, true, true, true, true]
                .into_iter()
                .zip([0, 1, 2, 4, 6, 7, 8, 12, 13])
                .map(|(ok, t)| obs(t, d(), healthy(), vec![probe(ok)]))
                .collect(),
        );
        assert_eq!(got[2], "wait: baking: 0s of 5s");
        assert!(got[3].contains("(0 so far)"), "{got:?}");
        assert_eq!(got[6], "wait: baking: 0s of 5s");
        assert_eq!(got[7], "wait: baking: 4s of 5s");
        assert_eq!(got[8], "healthy");
    }

    #[test]
    fn failure_signals_fail_at_once_with_their_reason() {
        let crashed = TaskView {
            stop_code: Some(TaskStopCode::EssentialContainerExited),
            stopped_reason: Some("Essential container in task exited".into()),
            containers: vec![ContainerView { name: "web".into(), exit_code: Some(1), reason: None }],
            ..task(TaskStatus::Stopped, HealthStatus::UnknownValue)
        };
        let secret = TaskView {
            stop_code: Some(TaskStopCode::TaskFailedToStart),
            stopped_reason: Some(
                "ResourceInitializationError: unable to pull secrets or registry auth: parameter /p/x not found".into(),
            ),
            ..task(TaskStatus::Stopped, HealthStatus::UnknownValue)
        };
        let breaker = "ECS deployment circuit breaker: tasks failed to start.";
        let table: Vec<(Observation, &str)> = vec![
            (
                Observation {
                    service_deployment: sd(ServiceDeploymentStatus::RollbackInProgress, None),
                    deployment: Some(DeploymentView {
                        rollout: Some(DeploymentRolloutState::Failed),
                        rollout_reason: Some(breaker.into()),
                        ..Default::default()
                    }),
                    ..obs(3, None, vec![], vec![])
                },
                "failed: ECS failed the deployment: ECS deployment circuit breaker: tasks failed to start. (ECS is rolling back by itself)",
            ),
            (
                obs(3, Some(deployment(DeploymentRolloutState::Failed, 0)), vec![], vec![]),
                "failed: ECS failed the deployment: rolloutState FAILED",
            ),
            (
                Observation {
                    service_deployment: sd(ServiceDeploymentStatus::RollbackInProgress, None),
                    ..obs(3, in_progress(0), vec![crashed.clone()], vec![])
                },
                "failed: ECS failed the deployment: service deployment ROLLBACK_IN_PROGRESS; e.g. task abc123 [EssentialContainerExited]",
            ),
            (
                Observation {
                    service_deployment: sd(ServiceDeploymentStatus::RollbackInProgress, Some(breaker)),
                    ..obs(3, in_progress(0), vec![], vec![])
                },
                "failed: ECS failed the deployment: ECS deployment circuit breaker: tasks failed to start. (ECS is rolling back by itself)",
            ),
            (
                Observation {
                    service_deployment: sd(
                        ServiceDeploymentStatus::Stopped,
                        Some("Stopped: a newer service deployment started."),
                    ),
                    primary_is_ours: false,
                    ..obs(3, in_progress(1), vec![], vec![])
                },
                "failed: ECS failed the deployment: Stopped: a newer service deployment started.",
            ),
            (
                Observation { primary_is_ours: false, ..obs(3, in_progress(1), vec![], vec![]) },
                "failed: the service's primary deployment is no longer this revision",
            ),
            (
                obs(3, in_progress(1), vec![healthy_task(), crashed], vec![]),
                "failed: a task of the new revision stopped: task abc123 [EssentialContainerExited]: Essential container in task exited; container web exit code 1",
            ),
            (
                obs(3, in_progress(1), vec![secret], vec![]),
                "failed: a task of the new revision stopped: task abc123 [TaskFailedToStart]: ResourceInitializationError: unable to pull secrets",
            ),
            (
                obs(100, in_progress(1), vec![], vec![]),
                "failed: timed out waiting for ECS to complete the rollout (1 of 2 tasks running, 0 pending)",
            ),
        ];
        for (o, want) in table {
            let got = run(config(0), vec![o]);
            assert!(got[0].starts_with(want), "{} !~ {want}", got[0]);
        }
    }

    #[test]
    fn ecs_rolling_back_is_ecs_work_and_a_stop_is_not() {
        let rolling_back = Observation {
            service_deployment: sd(ServiceDeploymentStatus::RollbackInProgress, None),
            ..obs(1, in_progress(0), vec![], vec![])
        };
        assert!(ecs_verdict(&rolling_back).is_some_and(|f| f.ecs_rolls_back()));
        let stopped = Observation {
            service_deployment: sd(ServiceDeploymentStatus::Stopped, Some("ECS deployment circuit breaker")),
            ..obs(1, in_progress(0), vec![], vec![])
        };
        assert!(ecs_verdict(&stopped).is_some_and(|f| !f.ecs_rolls_back()));
        let done = Observation {
            primary_is_ours: false,
            service_deployment: sd(ServiceDeploymentStatus::Successful, None),
            ..obs(1, completed(2), vec![], vec![])
        };
        assert_eq!(ecs_verdict(&done), None, "after SUCCESSFUL the primary may be reported late");
    }

    #[test]
    fn k_probe_failures_in_a_row_fail_even_when_ecs_is_happy() {
        let tasks = || vec![healthy_task(), healthy_task()];
        let got = run(
            config(0),
            [false, true, false, false, false]
                .into_iter()
                .enumerate()
                .map(|(t, ok)| obs(t as u64, completed(2), tasks(), vec![probe(ok)]))
                .collect(),
        );
        assert_eq!(got[3], format!("wait: {URL} to answer well 3 times in a row (0 so far)"));
        assert_eq!(
            got[4],
            format!("failed: {URL} failed 3 times in a row (last: HTTP 500: {{\"status\":\"unhealthy\"}})")
        );
    }

    #[test]
    fn an_unhealthy_container_keeps_the_gate_waiting() {
        let got = run(
            GateConfig { health_urls: vec![], ..config(0) },
            vec![obs(
                1,
                completed(2),
                vec![healthy_task(), task(TaskStatus::Running, HealthStatus::Unhealthy)],
                vec![],
            )],
        );
        assert_eq!(got, ["wait: task abc123 to become healthy"]);
    }
}
