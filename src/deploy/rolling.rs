//! A deployment from start to settled: check the service (controller, nothing else in
//! progress), UpdateService, watch behind the gate at an adaptive interval, and on failure
//! or cancel roll back and confirm. Reads top to bottom: check → update → watch → settle.

use std::time::{Duration, Instant};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::primitives::DateTime;
use serde::Serialize;

use super::gate::{Failure, Gate, GateConfig, Verdict};
use super::rollback::{Restored, Rollback};
use super::watch::{Pacing, Watcher, describe_service};
use super::{Cancel, DeployError};
use crate::exit::Exit;

#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub cluster: String,
    pub service: String,
    pub task_definition: String,
    pub gate: GateConfig,
    pub no_rollback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    RolledBack,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Step {
    pub at_ms: u64,
    pub what: String,
}

/// Everything a deploy leaves behind, for outputs, summary and exit code.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeployReport {
    pub cluster: String,
    pub service: String,
    pub result: Outcome,
    pub task_definition_arn: String,
    pub previous_task_definition_arn: String,
    pub deployment_id: Option<String>,
    /// Which revision the service runs at the end, when known.
    pub final_task_definition_arn: Option<String>,
    pub failure: Option<String>,
    pub rollback: Option<String>,
    /// When the rollback could not be confirmed: the state as last seen.
    pub state: Option<String>,
    pub cancelled: bool,
    pub events: Vec<String>,
    pub stopped_tasks: Vec<String>,
    pub failing_probe: Option<String>,
    pub timeline: Vec<Step>,
    pub api_calls: u32,
    pub polls: u32,
    /// Epoch ms: the deploy began; ECS first began stopping a failed new-revision task;
    /// deployer began the rollback. The last two give the detection latency.
    pub started_at_ms: u64,
    pub failure_signal_at_ms: Option<u64>,
    pub rollback_started_at_ms: Option<u64>,
    /// BLUE_GREEN | CANARY | LINEAR; absent for rolling deployments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Blue/green, canary, linear: each lifecycle stage with its start and duration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<super::lifecycle::StageSpan>,
    /// Blue/green, canary, linear: green's share of production and test traffic over time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<super::lifecycle::TrafficPoint>,
}

impl DeployReport {
    /// A report of a deploy that is about to start: succeeded until something says otherwise.
    pub fn new(req: &DeployRequest, previous: &str, strategy: Option<String>) -> DeployReport {
        DeployReport {
            cluster: req.cluster.clone(),
            service: req.service.clone(),
            result: Outcome::Succeeded,
            task_definition_arn: req.task_definition.clone(),
            previous_task_definition_arn: previous.to_string(),
            deployment_id: None,
            final_task_definition_arn: None,
            failure: None,
            rollback: None,
            state: None,
            cancelled: false,
            events: Vec::new(),
            stopped_tasks: Vec::new(),
            failing_probe: None,
            timeline: Vec::new(),
            api_calls: 1,
            polls: 0,
            started_at_ms: super::watch::now_ms(),
            failure_signal_at_ms: None,
            rollback_started_at_ms: None,
            strategy,
            lifecycle: Vec::new(),
            traffic: Vec::new(),
        }
    }

    pub fn exit(&self) -> Exit {
        match (self.result, self.cancelled) {
            (Outcome::Succeeded, _) => Exit::Ok,
            (Outcome::RolledBack, true) => Exit::Cancelled,
            (Outcome::RolledBack, false) => Exit::RolledBack,
            (Outcome::Failed, _) => Exit::Unknown,
        }
    }
}

impl std::fmt::Display for DeployReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |arn: &str| arn.rsplit('/').next().unwrap_or(arn).to_string();
        match self.result {
            Outcome::Succeeded => write!(
                f,
                "{}: {} is live and healthy (was {})",
                self.service,
                short(&self.task_definition_arn),
                short(&self.previous_task_definition_arn)
            )?,
            Outcome::RolledBack => write!(
                f,
                "{}: {} failed and was rolled back; {} serves again",
                self.service,
                short(&self.task_definition_arn),
                short(&self.previous_task_definition_arn)
            )?,
            Outcome::Failed => write!(
                f,
                "{}: {} FAILED and the service is not confirmed healthy: a human must look",
                self.service,
                short(&self.task_definition_arn)
            )?,
        }
        if let Some(why) = &self.failure {
            write!(f, "\n  why: {why}")?;
        }
        if let Some(how) = &self.rollback {
            write!(f, "\n  rollback: {how}")?;
        }
        if let Some(state) = &self.state {
            write!(f, "\n  state: {state}")?;
        }
        for t in &self.stopped_tasks {
            write!(f, "\n  stopped: {t}")?;
        }
        if let Some(p) = &self.failing_probe {
            write!(f, "\n  probe: {p}")?;
        }
        if self.result != Outcome::Succeeded && !self.events.is_empty() {
            write!(f, "\n  ECS events:")?;
            for e in &self.events {
                write!(f, "\n    {e}")?;
            }
        }
        Ok(())
    }
}

pub struct Deployer<'a> {
    pub ecs: &'a Client,
    pub http: &'a reqwest::Client,
    pub cancel: &'a Cancel,
}

impl Deployer<'_> {
    /// Before anything changes: the service exists, ECS controls it, and no other deployment
    /// is in progress (waiting a bounded time for one to finish). Returns the task definition
    /// it runs now — where a rollback returns to.
    pub async fn check(&self, req: &DeployRequest) -> Result<String, DeployError> {
        let started = Instant::now();
        let (_, mut view) = describe_service(self.ecs, &req.cluster, &req.service).await?;
        if view.controller != "ECS" {
            return Err(DeployError::UnsupportedController {
                service: req.service.clone(),
                controller: view.controller,
            });
        }
        let busy_limit = req.gate.timeout.min(Duration::from_secs(300));
        let mut pacing = Pacing::from_env();
        while view.in_progress() {
            if started.elapsed() >= busy_limit || self.cancel.is_cancelled() {
                return Err(DeployError::Busy {
                    service: req.service.clone(),
                    waited_s: started.elapsed().as_secs(),
                    detail: format!(
                        "{} deployments, rollout {:?}",
                        view.deployments.len(),
                        view.deployments.first().map(|d| d.3.clone())
                    ),
                });
            }
            tracing::info!("{}: waiting for the deployment already in progress to finish", req.service);
            self.cancel.sleep(pacing.next(false)).await;
            view = describe_service(self.ecs, &req.cluster, &req.service).await?.1;
        }
        Ok(view.task_definition)
    }

    /// Update, watch behind the gate, and settle; `previous` comes from [`Deployer::check`].
    pub async fn deploy(&self, req: &DeployRequest, previous: String) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
        let mut timeline = Vec::new();
        let mut step = |what: String| {
            tracing::info!("{what}");
            timeline.push(Step { at_ms: started.elapsed().as_millis() as u64, what });
        };
        let mut pacing = Pacing::from_env();
        let mut report = DeployReport::new(req, &previous, None);

        // update
        let started_at = DateTime::from(std::time::SystemTime::now());
        let updated = self
            .ecs
            .update_service()
            .cluster(&req.cluster)
            .service(&req.service)
            .task_definition(&req.task_definition)
            .set_force_new_deployment(Some(previous == req.task_definition))
            .send()
            .await
            .map_err(|e| DeployError::Api { op: "UpdateService", message: crate::aws::auth::sdk_message(&e) })?;
        report.api_calls += 1;
        report.deployment_id = updated
            .service()
            .and_then(|s| s.deployments().iter().find(|d| d.status() == Some("PRIMARY")))
            .and_then(|d| d.id())
            .map(str::to_string);
        step(format!("UpdateService: {} → {}", short(&previous), short(&req.task_definition)));

        // watch
        let mut watcher = Watcher::new(self.ecs, self.http, req, started_at);
        if previous == req.task_definition {
            // A forced new deployment of the same revision: only the id tells ours apart.
            watcher.deployment_id = report.deployment_id.clone();
        }
        let mut gate = Gate::new(req.gate.clone());
        let mut api_errors = 0;
        let mut last_wait = String::new();
        let failure: Option<Failure> = loop {
            if self.cancel.is_cancelled() {
                report.cancelled = true;
                step("cancelled (SIGINT/SIGTERM)".into());
                break None;
            }
            let obs = match watcher.observe().await {
                Ok(o) => {
                    api_errors = 0;
                    o
                }
                Err(e) => {
                    api_errors += 1;
                    tracing::warn!("observing the deployment failed ({api_errors} in a row): {e}");
                    if api_errors >= 5 {
                        break Some(Failure::Timeout { waiting_for: format!("ECS to answer ({e})") });
                    }
                    self.cancel.sleep(pacing.next(false)).await;
                    continue;
                }
            };
            report.polls += 1;
            let changed = watcher.changed(&obs);
            match gate.observe(&obs) {
                Verdict::Wait(what) => {
                    if what != last_wait {
                        step(format!("waiting: {what}"));
                        last_wait = what;
                    }
                    self.cancel.sleep(pacing.next(changed)).await;
                }
                Verdict::Healthy => {
                    step("healthy: the gate passed".into());
                    break None;
                }
                Verdict::Failed(f) => {
                    step(format!("gate failed: {f}"));
                    break Some(f);
                }
            }
        };
        if failure.is_some() || report.cancelled {
            watcher.sweep().await;
        }
        report.service_deployment_arn_into(&watcher);
        report.api_calls += watcher.api_calls;
        report.events = watcher.events.iter().map(|(_, m)| m.clone()).collect();
        report.stopped_tasks = watcher.stopped.clone();
        report.failure_signal_at_ms = watcher.first_failure_ms;
        report.failing_probe = gate.last_bad_probes().last().filter(|_| failure.is_some()).map(|p| match p.status {
            Some(s) => format!("{} → HTTP {s}: {}", p.url, p.detail),
            None => format!("{} → {}", p.url, p.detail),
        });

        // settle
        if failure.is_none() && !report.cancelled {
            report.final_task_definition_arn = Some(req.task_definition.clone());
            report.timeline = timeline;
            return Ok(report);
        }
        report.failure =
            failure.as_ref().map(|f| f.to_string()).or_else(|| Some("cancelled before the gate passed".into()));
        let ecs_rolls_back = failure.as_ref().is_some_and(Failure::ecs_rolls_back);
        if req.no_rollback && !ecs_rolls_back {
            report.result = Outcome::Failed;
            report.state =
                Some(format!("--no-rollback: the service stays on {} as ECS left it", short(&req.task_definition)));
            report.timeline = timeline;
            return Ok(report);
        }
        step(format!("rolling back to {}", short(&previous)));
        report.rollback_started_at_ms = Some(super::watch::now_ms());
        let rollback = Rollback {
            ecs: self.ecs,
            http: self.http,
            cluster: &req.cluster,
            service: &req.service,
            to: &previous,
            probe_urls: &req.gate.probe_urls,
            timeout: req.gate.timeout.max(Duration::from_secs(60)),
        };
        let outcome = rollback.run(ecs_rolls_back, watcher.service_deployment_arn.as_deref()).await;
        let still_running = format!("the service may still run {}", short(&req.task_definition));
        step(report.record_rollback(outcome.map(|(m, r)| (m.to_string(), r)), Some(still_running)));
        report.timeline = timeline;
        Ok(report)
    }
}

impl DeployReport {
    /// Record how a rollback to `previous_task_definition_arn` ended; returns the timeline
    /// line. `state_if_not_started` says what runs when the rollback could not even start.
    pub fn record_rollback(
        &mut self,
        outcome: Result<(String, Restored), DeployError>,
        state_if_not_started: Option<String>,
    ) -> String {
        match outcome {
            Ok((method, Restored::Healthy)) => {
                let line = format!(
                    "rolled back via {method}; {} serves and is healthy",
                    short(&self.previous_task_definition_arn)
                );
                self.result = Outcome::RolledBack;
                self.rollback = Some(method);
                self.final_task_definition_arn = Some(self.previous_task_definition_arn.clone());
                line
            }
            Ok((method, Restored::NotConfirmed(state))) => {
                let line = format!("rollback via {method} not confirmed: {state}");
                self.result = Outcome::Failed;
                self.rollback = Some(format!("{method} (not confirmed healthy)"));
                self.state = Some(state);
                line
            }
            Err(e) => {
                self.result = Outcome::Failed;
                self.rollback = Some(format!("could not start: {e}"));
                if state_if_not_started.is_some() {
                    self.state = state_if_not_started;
                }
                format!("rollback could not start: {e}")
            }
        }
    }

    fn service_deployment_arn_into(&mut self, watcher: &Watcher<'_>) {
        if let Some(arn) = &watcher.service_deployment_arn {
            self.deployment_id = Some(arn.clone());
        }
    }
}

fn short(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}
