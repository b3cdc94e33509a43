//! What a deploy leaves behind, for the JSON result, the outputs, the step summary and the exit
//! code: one `DeployReport` per service — every service gets one, a service that could not
//! even start included — and the run's outcome and exit code, derived once from all of them
//! (`RunOutcome::of`, pure and table-tested against DESIGN.md's exit codes).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::plan::Strategy;
use super::view::{now_ms, short};
use crate::exit::Exit;

/// How one service (or the run) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    RolledBack,
    Failed,
}

impl Outcome {
    /// The name outputs and JSON use (`result`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the service was sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackMethod {
    /// ECS rolled back by itself (circuit breaker, a hook's timeout); deployer only waited.
    Ecs,
    /// Deployer answered its own held hook with ROLLBACK.
    HookRollback,
    StopServiceDeployment,
    UpdateService,
    /// CodeDeploy rolled back by itself (auto-rollback), or had nothing to undo; deployer waited.
    CodeDeploy,
    /// StopDeployment with autoRollbackEnabled: CodeDeploy's rollback deployment.
    CodeDeployStop,
    /// A CodeDeploy deployment of the previous task definition (the failed one had finished).
    CodeDeployRedeploy,
}

impl fmt::Display for RollbackMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RollbackMethod::Ecs => "ECS's own rollback (deployer sent nothing and waited for it)",
            RollbackMethod::HookRollback => "ContinueServiceDeployment(ROLLBACK) on the held test-traffic hook",
            RollbackMethod::StopServiceDeployment => "StopServiceDeployment(ROLLBACK)",
            RollbackMethod::UpdateService => "UpdateService to the previous task definition",
            RollbackMethod::CodeDeploy => "CodeDeploy's own rollback (deployer sent nothing and waited for it)",
            RollbackMethod::CodeDeployStop => {
                "StopDeployment(autoRollbackEnabled=true): CodeDeploy's rollback deployment"
            }
            RollbackMethod::CodeDeployRedeploy => "a CodeDeploy deployment of the previous task definition",
        })
    }
}

/// The end of a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    Healthy,
    /// Not confirmed: the state as last seen.
    NotConfirmed(String),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Step {
    pub at_ms: u64,
    pub what: String,
}

/// One lifecycle stage: when it began (ms since the deploy began) and how long it lasted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StageSpan {
    pub stage: String,
    pub started_ms: u64,
    pub duration_ms: u64,
}

/// Green's share of traffic from `at_ms` on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrafficPoint {
    pub at_ms: u64,
    pub production_green_percent: f64,
    pub test_green_percent: f64,
}

/// Everything a deploy of one service leaves behind.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeployReport {
    pub cluster: String,
    pub service: String,
    pub result: Outcome,
    pub strategy: Strategy,
    pub task_definition_arn: String,
    pub previous_task_definition_arn: String,
    pub deployment_id: Option<String>,
    /// Which revision the service runs at the end, when known.
    pub final_task_definition_arn: Option<String>,
    pub failure: Option<String>,
    pub rollback: Option<String>,
    /// When the end state is not the plan's: the state as last seen.
    pub state: Option<String>,
    pub cancelled: bool,
    /// Deployer changed the service (UpdateService was accepted). A failed service that was
    /// never changed does not make the run's state unknown.
    #[serde(skip)]
    pub changed: bool,
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
    /// Epoch ms: the rollback ended (confirmed, not confirmed, or refused).
    pub rollback_finished_at_ms: Option<u64>,
    /// How the service ended, in one word: `live`, `rolled-back`, `failed-to-start` (never
    /// changed) or `unknown` (a human must look). Set when the run's report is made.
    pub outcome: &'static str,
    /// Blue/green, canary, linear: each lifecycle stage with its start and duration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<StageSpan>,
    /// Blue/green, canary, linear: green's share of production and test traffic over time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficPoint>,
}

impl DeployReport {
    /// A deploy about to start: succeeded until something says otherwise.
    pub fn new(cluster: &str, service: &str, strategy: Strategy, task_definition: &str, previous: &str) -> Self {
        DeployReport {
            cluster: cluster.to_string(),
            service: service.to_string(),
            result: Outcome::Succeeded,
            strategy,
            task_definition_arn: task_definition.to_string(),
            previous_task_definition_arn: previous.to_string(),
            deployment_id: None,
            final_task_definition_arn: None,
            failure: None,
            rollback: None,
            state: None,
            cancelled: false,
            changed: false,
            events: Vec::new(),
            stopped_tasks: Vec::new(),
            failing_probe: None,
            timeline: Vec::new(),
            api_calls: 0,
            polls: 0,
            started_at_ms: now_ms(),
            failure_signal_at_ms: None,
            rollback_started_at_ms: None,
            rollback_finished_at_ms: None,
            outcome: "",
            lifecycle: Vec::new(),
            traffic: Vec::new(),
        }
    }

    /// The service could not be changed: failed, with the reason, still on `previous`.
    pub fn not_started(&mut self, reason: String) {
        self.result = Outcome::Failed;
        self.failure = Some(reason);
        self.state = Some(format!("unchanged: the service still runs {}", short(&self.previous_task_definition_arn)));
        self.final_task_definition_arn = Some(self.previous_task_definition_arn.clone()).filter(|p| !p.is_empty());
    }

    /// Record how a rollback to the previous revision ended; returns the timeline line.
    /// `state_if_not_started` says what runs when the rollback could not even start.
    pub fn record_rollback<E: fmt::Display>(
        &mut self,
        outcome: Result<(RollbackMethod, Restored), E>,
        state_if_not_started: Option<String>,
    ) -> String {
        let previous = short(&self.previous_task_definition_arn).to_string();
        self.rollback_finished_at_ms = Some(now_ms());
        match outcome {
            Ok((method, Restored::Healthy)) => {
                self.result = Outcome::RolledBack;
                self.rollback = Some(method.to_string());
                self.final_task_definition_arn = Some(self.previous_task_definition_arn.clone());
                format!("rolled back via {method}; {previous} serves and is healthy")
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

    /// How it ended, in one word (`outcome`).
    pub fn outcome_name(&self) -> &'static str {
        match (self.result, self.changed) {
            (Outcome::Succeeded, _) => "live",
            (Outcome::RolledBack, _) => "rolled-back",
            (Outcome::Failed, false) => "failed-to-start",
            (Outcome::Failed, true) => "unknown",
        }
    }

    /// This service's own exit code (DESIGN.md section 3).
    pub fn exit(&self) -> Exit {
        match (self.result, self.cancelled, self.changed) {
            (Outcome::Succeeded, _, _) => Exit::Ok,
            (Outcome::RolledBack, true, _) | (Outcome::Failed, true, false) => Exit::Cancelled,
            (Outcome::RolledBack, false, _) => Exit::RolledBack,
            (Outcome::Failed, false, false) => Exit::Failed,
            (Outcome::Failed, _, true) => Exit::Unknown,
        }
    }
}

/// The run's result and exit code, derived once from every service's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    pub result: Outcome,
    pub exit: Exit,
}

impl RunOutcome {
    /// Worst first: a state a human must look at (4), then a cancel (130), a rollback (3), a
    /// failure that changed nothing (1). A service that never changed next to one that went
    /// live is a half-done run: 4. No service at all: nothing happened, which is a failure.
    pub fn of(reports: &[DeployReport]) -> RunOutcome {
        let exits: Vec<Exit> = reports.iter().map(DeployReport::exit).collect();
        let partial = exits.contains(&Exit::Failed) && exits.contains(&Exit::Ok);
        let exit = if reports.is_empty() {
            Exit::Failed
        } else if partial {
            Exit::Unknown
        } else {
            [Exit::Unknown, Exit::Cancelled, Exit::RolledBack, Exit::Failed]
                .into_iter()
                .find(|e| exits.contains(e))
                .unwrap_or(Exit::Ok)
        };
        let result = if reports.is_empty() || reports.iter().any(|r| r.result == Outcome::Failed) {
            Outcome::Failed
        } else if reports.iter().any(|r| r.result == Outcome::RolledBack) {
            Outcome::RolledBack
        } else {
            Outcome::Succeeded
        };
        RunOutcome { result, exit }
    }
}

/// What the run asked of ECS's API: every call (per operation, retries included), the
/// ThrottlingExceptions ECS answered, the time spent waiting for the limiter's tokens, and
/// the cluster watcher's rounds and what they cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApiUsage {
    pub calls: BTreeMap<String, u64>,
    pub throttled: BTreeMap<String, u64>,
    pub waited_ms: u64,
    pub rounds: u64,
    pub round_calls: BTreeMap<String, u64>,
    pub most_services_in_a_round: usize,
}

/// Every service's report, and the run's result and exit code derived from them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeployRun {
    pub result: Outcome,
    pub exit_code: u8,
    pub services: Vec<DeployReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiUsage>,
    #[serde(skip)]
    pub exit: Exit,
}

impl DeployRun {
    pub fn new(mut services: Vec<DeployReport>) -> DeployRun {
        for s in &mut services {
            s.outcome = s.outcome_name();
        }
        let RunOutcome { result, exit } = RunOutcome::of(&services);
        DeployRun { result, exit_code: exit.code(), services, api: None, exit }
    }

    /// One line per service: name, outcome, revision, and why when it did not go live.
    pub fn table(&self) -> String {
        let width = self.services.iter().map(|r| r.service.chars().count()).max().unwrap_or(0).max(7);
        let mut out = format!("{:<width$}  {:<15}  {:<24}  detail", "service", "outcome", "task definition");
        for r in &self.services {
            let td = match r.result {
                Outcome::Succeeded => short(&r.task_definition_arn).to_string(),
                _ => format!("{} (not {})", short(&r.previous_task_definition_arn), short(&r.task_definition_arn)),
            };
            let detail = r.failure.as_deref().unwrap_or("");
            let detail: String = detail.chars().take(120).collect();
            out.push_str(&format!("\n{:<width$}  {:<15}  {:<24}  {detail}", r.service, r.outcome_name(), td));
        }
        out
    }
}

impl fmt::Display for DeployRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.services.len() > 1 {
            writeln!(f, "{}\n", self.table())?;
        }
        let texts: Vec<String> = self
            .services
            .iter()
            .filter(|r| r.result != Outcome::Succeeded || self.services.len() == 1)
            .map(|r| r.to_string())
            .collect();
        f.write_str(&texts.join("\n"))?;
        if let Some(api) = &self.api
            && self.services.len() > 1
        {
            let calls: u64 = api.calls.values().sum();
            let throttled: u64 = api.throttled.values().sum();
            write!(f, "\nECS API: {calls} calls ({} rounds), {throttled} throttled", api.rounds)?;
        }
        Ok(())
    }
}

/// Stage spans and traffic changes, built from successive observations.
#[derive(Debug, Clone, Default)]
pub struct LifecycleLog {
    pub stages: Vec<StageSpan>,
    pub traffic: Vec<TrafficPoint>,
}

impl LifecycleLog {
    /// Record what one poll saw at `at_ms`; true when the traffic split changed.
    pub fn record(&mut self, at_ms: u64, stage: Option<&str>, production: Option<f64>, test: Option<f64>) -> bool {
        if let Some(stage) = stage.filter(|s| !s.is_empty())
            && self.stages.last().is_none_or(|l| l.stage != stage)
        {
            self.close(at_ms);
            self.stages.push(StageSpan { stage: stage.to_string(), started_ms: at_ms, duration_ms: 0 });
        }
        if production.is_none() && test.is_none() {
            return false;
        }
        let last = self.traffic.last();
        let p = production.or(last.map(|l| l.production_green_percent)).unwrap_or(0.0);
        let t = test.or(last.map(|l| l.test_green_percent)).unwrap_or(0.0);
        if last.is_some_and(|l| l.production_green_percent == p && l.test_green_percent == t) {
            return false;
        }
        self.traffic.push(TrafficPoint { at_ms, production_green_percent: p, test_green_percent: t });
        true
    }

    /// Traffic went back to blue (a rollback).
    pub fn back_to_blue(&mut self, at_ms: u64) {
        if self.traffic.last().is_some_and(|l| l.production_green_percent != 0.0 || l.test_green_percent != 0.0) {
            self.traffic.push(TrafficPoint { at_ms, production_green_percent: 0.0, test_green_percent: 0.0 });
        }
    }

    /// The last stage ends at `at_ms`.
    pub fn close(&mut self, at_ms: u64) {
        if let Some(l) = self.stages.last_mut() {
            l.duration_ms = at_ms.saturating_sub(l.started_ms);
        }
    }
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (new, old) = (short(&self.task_definition_arn), short(&self.previous_task_definition_arn));
        match (self.result, self.changed) {
            (Outcome::Succeeded, _) => write!(f, "{}: {new} is live and healthy (was {old})", self.service)?,
            (Outcome::RolledBack, _) => {
                write!(f, "{}: {new} failed and was rolled back; {old} serves again", self.service)?
            }
            (Outcome::Failed, false) => {
                write!(f, "{}: {new} was not deployed; the service is unchanged", self.service)?
            }
            (Outcome::Failed, true) => {
                write!(f, "{}: {new} FAILED and the service is not confirmed healthy: a human must look", self.service)?
            }
        }
        let lines = [("why", &self.failure), ("rollback", &self.rollback), ("state", &self.state)];
        for (label, value) in lines {
            if let Some(v) = value {
                write!(f, "\n  {label}: {v}")?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(result: Outcome, changed: bool, cancelled: bool) -> DeployReport {
        let mut r = DeployReport::new("c", "s", Strategy::Rolling, "td:2", "td:1");
        r.result = result;
        r.changed = changed;
        r.cancelled = cancelled;
        r
    }

    #[test]
    fn the_run_exit_comes_from_every_service_and_a_failure_is_never_exit_0() {
        use Outcome::*;
        let live = || report(Succeeded, true, false);
        let rolled_back = || report(RolledBack, true, false);
        let refused = || report(Failed, false, false);
        let unknown = || report(Failed, true, false);
        let table: Vec<(Vec<DeployReport>, Outcome, Exit)> = vec![
            (vec![live(), live()], Succeeded, Exit::Ok),
            (vec![live(), rolled_back()], RolledBack, Exit::RolledBack),
            // A live, B's UpdateService refused: half deployed, a human must look.
            (vec![live(), refused()], Failed, Exit::Unknown),
            // Both refused: nothing changed.
            (vec![refused(), refused()], Failed, Exit::Failed),
            // B refused, A rolled back (--all-or-nothing): all back where they were.
            (vec![rolled_back(), refused()], Failed, Exit::RolledBack),
            (vec![rolled_back(), unknown()], Failed, Exit::Unknown),
            (vec![report(RolledBack, true, true), live()], RolledBack, Exit::Cancelled),
            (vec![report(Failed, false, true)], Failed, Exit::Cancelled),
            (vec![], Failed, Exit::Failed),
        ];
        for (reports, result, exit) in table {
            let got = RunOutcome::of(&reports);
            let shape: Vec<(Outcome, bool)> = reports.iter().map(|r| (r.result, r.changed)).collect();
            assert_eq!((got.result, got.exit), (result, exit), "{shape:?}");
        }
    }

    #[test]
    fn the_run_shows_one_row_per_service_with_its_outcome() {
        let mut live = DeployReport::new("c", "web", Strategy::Rolling, "arn:td/shop:2", "arn:td/shop:1");
        live.changed = true;
        let mut back = DeployReport::new("c", "api", Strategy::Rolling, "arn:td/shop:2", "arn:td/shop:1");
        (back.result, back.changed, back.failure) = (Outcome::RolledBack, true, Some("gate failed".into()));
        let mut refused = DeployReport::new("c", "worker", Strategy::Rolling, "arn:td/shop:2", "arn:td/shop:1");
        refused.not_started("ECS UpdateService failed: AccessDeniedException".into());
        let mut lost = DeployReport::new("c", "cron", Strategy::Rolling, "arn:td/shop:2", "arn:td/shop:1");
        (lost.result, lost.changed) = (Outcome::Failed, true);
        let run = DeployRun::new(vec![live, back, refused, lost]);
        let outcomes: Vec<&str> = run.services.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, ["live", "rolled-back", "failed-to-start", "unknown"]);
        let table = run.table();
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 5, "{table}");
        assert!(rows[0].starts_with("service  outcome"), "{table}");
        assert!(rows[1].starts_with("web      live             shop:2"), "{table}");
        assert!(
            rows[2].contains("rolled-back")
                && rows[2].contains("shop:1 (not shop:2)")
                && rows[2].ends_with("gate failed")
        );
        assert!(rows[3].contains("failed-to-start") && rows[3].contains("AccessDeniedException"), "{table}");
        let text = run.to_string();
        assert!(text.starts_with(&table), "{text}");
        assert!(!text.contains("web: shop:2 is live"), "live services are in the table only: {text}");
        assert!(text.contains("worker: shop:2 was not deployed"), "{text}");
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["services"][2]["outcome"], "failed-to-start");
        assert_eq!(json["exit-code"], 4);
    }

    #[test]
    fn a_service_that_never_started_is_failed_with_its_reason() {
        let mut r = DeployReport::new("c", "web", Strategy::BlueGreen, "arn:td/shop:2", "arn:td/shop:1");
        r.not_started("ECS UpdateService failed: AccessDenied".into());
        assert_eq!(r.result, Outcome::Failed);
        assert_eq!(r.exit(), Exit::Failed);
        assert_eq!(r.state.as_deref(), Some("unchanged: the service still runs shop:1"));
        let text = r.to_string();
        assert!(
            text.starts_with("web: shop:2 was not deployed; the service is unchanged\n  why: ECS UpdateService"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["result"], "failed");
        assert_eq!(json["strategy"], "BLUE_GREEN");
        assert_eq!(json["failure"], "ECS UpdateService failed: AccessDenied");
    }

    #[test]
    fn the_log_keeps_stage_spans_and_traffic_changes() {
        let mut log = LifecycleLog::default();
        log.record(0, Some("SCALE_UP"), Some(0.0), Some(0.0));
        log.record(500, Some("SCALE_UP"), Some(0.0), Some(0.0));
        log.record(1000, Some("POST_TEST_TRAFFIC_SHIFT"), Some(0.0), Some(100.0));
        log.record(2000, Some("PRODUCTION_TRAFFIC_SHIFT"), Some(25.0), Some(100.0));
        log.record(3000, Some("PRODUCTION_TRAFFIC_SHIFT"), Some(50.0), None);
        log.back_to_blue(3500);
        log.close(4000);
        let stages: Vec<(&str, u64, u64)> =
            log.stages.iter().map(|s| (s.stage.as_str(), s.started_ms, s.duration_ms)).collect();
        assert_eq!(
            stages,
            [("SCALE_UP", 0, 1000), ("POST_TEST_TRAFFIC_SHIFT", 1000, 1000), ("PRODUCTION_TRAFFIC_SHIFT", 2000, 2000)]
        );
        let traffic: Vec<(u64, f64, f64)> =
            log.traffic.iter().map(|t| (t.at_ms, t.production_green_percent, t.test_green_percent)).collect();
        assert_eq!(
            traffic,
            [(0, 0.0, 0.0), (1000, 0.0, 100.0), (2000, 25.0, 100.0), (3000, 50.0, 100.0), (3500, 0.0, 0.0)]
        );
    }
}
