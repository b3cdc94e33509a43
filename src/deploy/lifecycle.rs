//! The pure side of blue/green, canary and linear deployments: what the service needs before
//! anything changes (`advancedConfiguration`), the deployment configuration deployer sends
//! (the user's settings plus its own PAUSE hook at POST_TEST_TRAFFIC_SHIFT), and the
//! lifecycle-aware gate that decides, from one observation of the ServiceDeployment, the green
//! tasks and the probes, whether to wait, release the test-traffic hold, declare success, or
//! fail (and in which phase, which decides how to roll back). Also the lifecycle and traffic
//! timeline for the summary. No I/O: every decision is a table test.

use std::time::Duration;

use aws_sdk_ecs::types::{
    CanaryConfiguration, DeploymentConfiguration, DeploymentLifecycleHook, DeploymentLifecycleHookStage,
    DeploymentLifecycleHookTargetType, DeploymentStrategy, LinearConfiguration, Service,
};
use serde::Serialize;

use super::gate::{Failure, Observation, Probe, ProbeStreaks};

/// Lifecycle stages in ECS's order.
pub const STAGES: &[&str] = &[
    "RECONCILE_SERVICE",
    "PRE_SCALE_UP",
    "SCALE_UP",
    "POST_SCALE_UP",
    "TEST_TRAFFIC_SHIFT",
    "POST_TEST_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
    "BAKE_TIME",
    "CLEAN_UP",
];

fn stage_index(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

/// ECS takes whole minutes; deployer takes seconds and rounds up (30 s → 1 min), so a bake is
/// never shorter than asked.
pub fn minutes(secs: u64) -> i32 {
    secs.div_ceil(60).min(i32::MAX as u64) as i32
}

/// The traffic-shifting settings deployer applies for one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftSettings {
    /// BLUE_GREEN | CANARY | LINEAR
    pub strategy: DeploymentStrategy,
    /// `bakeTimeInMinutes` (after the production shift, blue kept for an instant rollback).
    pub bake_minutes: Option<i32>,
    pub canary_percent: Option<f64>,
    pub canary_bake_minutes: Option<i32>,
    pub linear_percent: Option<f64>,
    pub linear_bake_minutes: Option<i32>,
}

impl ShiftSettings {
    /// Percent ranges ECS accepts.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.canary_percent
            && !(0.1..=100.0).contains(&p)
        {
            return Err(format!("--canary-percent {p}: ECS takes 0.1 to 100; pass a value in that range"));
        }
        if let Some(p) = self.linear_percent
            && !(3.0..=100.0).contains(&p)
        {
            return Err(format!("--linear-percent {p}: ECS takes 3 to 100; pass a value in that range"));
        }
        Ok(())
    }
}

/// Is this hook the one deployer adds (PAUSE at POST_TEST_TRAFFIC_SHIFT, no target ARN)?
pub fn is_our_hook(h: &DeploymentLifecycleHook) -> bool {
    h.target_type() == Some(&DeploymentLifecycleHookTargetType::Pause)
        && h.hook_target_arn().is_none_or(str::is_empty)
        && h.lifecycle_stages() == [DeploymentLifecycleHookStage::PostTestTrafficShift]
}

pub fn our_hook() -> DeploymentLifecycleHook {
    DeploymentLifecycleHook::builder()
        .target_type(DeploymentLifecycleHookTargetType::Pause)
        .lifecycle_stages(DeploymentLifecycleHookStage::PostTestTrafficShift)
        .build()
}

/// The service's configuration with `hooks` instead of its lifecycle hooks, every other
/// setting (circuit breaker, percents, alarms, …) kept as it is.
fn with_hooks(
    current: Option<&DeploymentConfiguration>,
    hooks: Vec<DeploymentLifecycleHook>,
) -> DeploymentConfiguration {
    let c = current.cloned().unwrap_or_else(|| DeploymentConfiguration::builder().build());
    DeploymentConfiguration::builder()
        .set_deployment_circuit_breaker(c.deployment_circuit_breaker().cloned())
        .set_maximum_percent(c.maximum_percent())
        .set_minimum_healthy_percent(c.minimum_healthy_percent())
        .set_alarms(c.alarms().cloned())
        .set_strategy(c.strategy().cloned())
        .set_bake_time_in_minutes(c.bake_time_in_minutes())
        .set_lifecycle_hooks(Some(hooks))
        .set_linear_configuration(c.linear_configuration().cloned())
        .set_canary_configuration(c.canary_configuration().cloned())
        .set_early_success_criteria(c.early_success_criteria().cloned())
        .build()
}

/// What UpdateService sends: the service's configuration, the strategy and bake settings
/// given, the user's own hooks, and one PAUSE hook of deployer's at POST_TEST_TRAFFIC_SHIFT.
pub fn deployment_configuration(
    current: Option<&DeploymentConfiguration>,
    s: &ShiftSettings,
) -> DeploymentConfiguration {
    let mut hooks: Vec<DeploymentLifecycleHook> =
        current.map(|c| c.lifecycle_hooks().iter().filter(|h| !is_our_hook(h)).cloned().collect()).unwrap_or_default();
    hooks.push(our_hook());
    let base = with_hooks(current, hooks);
    let mut b = DeploymentConfiguration::builder()
        .set_deployment_circuit_breaker(base.deployment_circuit_breaker().cloned())
        .set_maximum_percent(base.maximum_percent())
        .set_minimum_healthy_percent(base.minimum_healthy_percent())
        .set_alarms(base.alarms().cloned())
        .strategy(s.strategy.clone())
        .set_bake_time_in_minutes(s.bake_minutes.or(base.bake_time_in_minutes()))
        .set_lifecycle_hooks(Some(base.lifecycle_hooks().to_vec()))
        .set_linear_configuration(base.linear_configuration().cloned())
        .set_canary_configuration(base.canary_configuration().cloned())
        .set_early_success_criteria(base.early_success_criteria().cloned());
    if s.strategy == DeploymentStrategy::Canary {
        let cur = base.canary_configuration();
        b = b.canary_configuration(
            CanaryConfiguration::builder()
                .set_canary_percent(s.canary_percent.or(cur.and_then(|c| c.canary_percent())))
                .set_canary_bake_time_in_minutes(
                    s.canary_bake_minutes.or(cur.and_then(|c| c.canary_bake_time_in_minutes())),
                )
                .build(),
        );
    }
    if s.strategy == DeploymentStrategy::Linear {
        let cur = base.linear_configuration();
        b = b.linear_configuration(
            LinearConfiguration::builder()
                .set_step_percent(s.linear_percent.or(cur.and_then(|c| c.step_percent())))
                .set_step_bake_time_in_minutes(
                    s.linear_bake_minutes.or(cur.and_then(|c| c.step_bake_time_in_minutes())),
                )
                .build(),
        );
    }
    b.build()
}

/// The configuration to restore after the deployment: the same without deployer's hook, so
/// the next deployment (from the console, say) does not wait for a deployer that is gone.
pub fn without_our_hook(current: Option<&DeploymentConfiguration>) -> DeploymentConfiguration {
    let hooks = current.map(|c| c.lifecycle_hooks().iter().filter(|h| !is_our_hook(h)).cloned().collect());
    with_hooks(current, hooks.unwrap_or_default())
}

/// Before any change: the service can do a traffic-shifting deployment. The error names what
/// to add.
pub fn check_advanced_configuration(svc: &Service, strategy: &str) -> Result<(), String> {
    let name = svc.service_name().unwrap_or("the service");
    let lbs = svc.load_balancers();
    if lbs.is_empty() {
        return Err(format!(
            "service {name} has no loadBalancers; --strategy {strategy} shifts traffic between two target groups behind a load balancer. \
             Add loadBalancers[] with targetGroupArn, containerName, containerPort and advancedConfiguration \
             (alternateTargetGroupArn, productionListenerRule, testListenerRule, roleArn) to the service, or deploy with --strategy rolling"
        ));
    }
    for (i, lb) in lbs.iter().enumerate() {
        let tg = lb.target_group_arn().unwrap_or("?");
        let Some(a) = lb.advanced_configuration() else {
            return Err(format!(
                "service {name}: loadBalancers[{i}] (target group {tg}) has no advancedConfiguration, which --strategy {strategy} needs. \
                 Add advancedConfiguration with alternateTargetGroupArn (the green target group), productionListenerRule, \
                 testListenerRule and roleArn (an infrastructure role ECS uses to change the listener rules) to the service's \
                 loadBalancers[{i}] (aws ecs update-service --load-balancers ...), then run again; nothing was changed"
            ));
        };
        let mut missing = Vec::new();
        if a.alternate_target_group_arn().is_none_or(str::is_empty) {
            missing.push("alternateTargetGroupArn");
        }
        if a.production_listener_rule().is_none_or(str::is_empty) {
            missing.push("productionListenerRule");
        }
        if a.role_arn().is_none_or(str::is_empty) {
            missing.push("roleArn");
        }
        if !missing.is_empty() {
            return Err(format!(
                "service {name}: loadBalancers[{i}].advancedConfiguration lacks {}, which --strategy {strategy} needs; \
                 add {} to it, then run again; nothing was changed",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
    }
    Ok(())
}

/// The ServiceDeployment as one poll saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SdView {
    pub status: String,
    pub status_reason: Option<String>,
    pub stage: Option<String>,
    /// Deployer's hook: (hook id, status), when ECS has created it.
    pub our_hook: Option<(String, String)>,
    /// Other hooks awaiting action (the user's approvals).
    pub others_waiting: usize,
    /// Green's share of production / test traffic, in percent.
    pub production_weight: Option<f64>,
    pub test_weight: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficGateConfig {
    pub test_urls: Vec<String>,
    pub health_urls: Vec<String>,
    pub probe_successes: u32,
    pub probe_failures: u32,
    pub timeout: Duration,
}

/// Where a failure happened: before production traffic reached green (roll back by
/// answering the hold with ROLLBACK) or after (StopServiceDeployment ROLLBACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Test,
    Production,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Wait(String),
    /// The test gate passed (or there is none): ContinueServiceDeployment(CONTINUE, hook).
    Continue {
        hook_id: String,
        note: String,
    },
    Healthy,
    Failed {
        failure: Failure,
        phase: Phase,
    },
}

/// Which URLs a poll probes, given the last seen stage: test URLs once the test listener
/// serves green; health (production) URLs once production shifts or the deployment is done.
pub fn urls_to_probe(config: &TrafficGateConfig, sd: Option<&SdView>) -> Vec<String> {
    let Some(sd) = sd else { return Vec::new() };
    let idx = sd.stage.as_deref().and_then(stage_index);
    let post_test = stage_index("POST_TEST_TRAFFIC_SHIFT").unwrap_or(5);
    let done = sd.status == "SUCCESSFUL";
    let mut urls = Vec::new();
    if done || idx.is_some_and(|i| i >= post_test) {
        urls.extend(config.test_urls.iter().cloned());
    }
    if done || idx.is_some_and(|i| i > post_test) {
        urls.extend(config.health_urls.iter().cloned());
    }
    urls
}

/// The lifecycle-aware gate: probe streaks, whether the hold was released.
#[derive(Debug, Clone)]
pub struct TrafficGate {
    config: TrafficGateConfig,
    probes: ProbeStreaks,
    continued: bool,
    /// The deployment left POST_TEST_TRAFFIC_SHIFT without deployer's hold.
    pub hold_missed: bool,
}

impl TrafficGate {
    pub fn new(config: TrafficGateConfig) -> TrafficGate {
        TrafficGate { config, probes: ProbeStreaks::default(), continued: false, hold_missed: false }
    }

    pub fn config(&self) -> &TrafficGateConfig {
        &self.config
    }

    /// The driver released the hold: failures from now on are production-phase ones.
    pub fn mark_continued(&mut self) {
        self.continued = true;
    }

    pub fn phase(&self) -> Phase {
        if self.continued { Phase::Production } else { Phase::Test }
    }

    pub fn last_bad_probes(&self) -> impl Iterator<Item = &Probe> {
        self.probes.last_bad()
    }

    fn streak_ok(&self, url: &str) -> u32 {
        self.probes.ok(url)
    }

    /// The first URL of `urls` without N good answers in a row, with its count.
    fn unsatisfied<'u>(&self, urls: &'u [String]) -> Option<(&'u str, u32)> {
        urls.iter().map(|u| (u.as_str(), self.streak_ok(u))).find(|(_, n)| *n < self.config.probe_successes)
    }

    pub fn observe(&mut self, obs: &Observation, sd: Option<&SdView>) -> Decision {
        let fail = |failure: Failure, phase: Phase| Decision::Failed { failure, phase };
        let status = sd.map(|s| s.status.as_str()).unwrap_or("");
        // ECS's own verdict first.
        let failed_rollout = obs.deployment.as_ref().filter(|d| d.rollout_state == "FAILED");
        if status.starts_with("ROLLBACK") || status.starts_with("STOP") || failed_rollout.is_some() {
            let mut reason = sd
                .and_then(|s| s.status_reason.clone())
                .or_else(|| failed_rollout.and_then(|d| d.rollout_reason.clone()))
                .unwrap_or_else(|| format!("service deployment {status}"));
            if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
                reason.push_str(&format!("; e.g. {task}"));
            }
            let ecs_rolls_back = status.starts_with("ROLLBACK") || reason.contains("rolling back");
            return fail(Failure::EcsFailed { reason, ecs_rolls_back }, self.phase());
        }
        if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
            return fail(Failure::TaskStopped { task: task.to_string() }, self.phase());
        }
        if !obs.primary_is_ours && status != "SUCCESSFUL" {
            return fail(Failure::Replaced, self.phase());
        }
        if let Some(failure) = self.probes.record(&obs.probes, self.config.probe_failures) {
            return fail(failure, self.phase());
        }
        let waiting = self.waiting(sd);
        match waiting {
            Ok(decision) => decision,
            Err(what) => {
                if obs.elapsed >= self.config.timeout {
                    return fail(Failure::Timeout { waiting_for: what }, self.phase());
                }
                Decision::Wait(what)
            }
        }
    }

    /// `Ok` with a decision to act on, `Err` with what the gate waits for.
    fn waiting(&mut self, sd: Option<&SdView>) -> Result<Decision, String> {
        let Some(sd) = sd else { return Err("ECS to show the service deployment".into()) };
        let stage = sd.stage.as_deref().unwrap_or("");
        let idx = stage_index(stage);
        let post_test = stage_index("POST_TEST_TRAFFIC_SHIFT").unwrap_or(5);
        if sd.status == "SUCCESSFUL" {
            let mut all: Vec<String> = self.config.health_urls.clone();
            all.extend(self.config.test_urls.iter().cloned());
            return match self.unsatisfied(&all) {
                None => Ok(Decision::Healthy),
                Some((url, n)) => Err(format!(
                    "{url} to answer well {} times in a row after the deployment completed ({n} so far)",
                    self.config.probe_successes
                )),
            };
        }
        if !self.continued {
            if idx.is_some_and(|i| i > post_test) {
                // ECS moved on without deployer's hold (the hook was not applied).
                self.hold_missed = true;
                self.continued = true;
            } else if stage == "POST_TEST_TRAFFIC_SHIFT"
                && let Some((hook_id, hook_status)) = &sd.our_hook
                && hook_status == "AWAITING_ACTION"
            {
                if self.config.test_urls.is_empty() {
                    return Ok(Decision::Continue {
                        hook_id: hook_id.clone(),
                        note: "no --test-url: green is up and healthy to ECS; continuing without a test-traffic gate"
                            .into(),
                    });
                }
                return match self.unsatisfied(&self.config.test_urls) {
                    None => Ok(Decision::Continue {
                        hook_id: hook_id.clone(),
                        note: format!(
                            "test traffic gate passed: {} answered well {} times in a row",
                            self.config.test_urls.join(", "),
                            self.config.probe_successes
                        ),
                    }),
                    Some((url, n)) => Err(format!(
                        "test listener {url} to answer well {} times in a row ({n} so far)",
                        self.config.probe_successes
                    )),
                };
            }
        }
        let mut what = match stage {
            "" => format!("ECS to start the deployment ({})", sd.status),
            s => format!("lifecycle stage {s}"),
        };
        if let Some(w) = sd.production_weight.filter(|_| idx.is_some_and(|i| i > post_test)) {
            what.push_str(&format!(" (production {w}% green)"));
        }
        if sd.others_waiting > 0 {
            what.push_str(&format!(", {} other lifecycle hook(s) awaiting action", sd.others_waiting));
        }
        Err(what)
    }
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

/// Stage spans and traffic changes, built from successive observations.
#[derive(Debug, Clone, Default)]
pub struct LifecycleLog {
    pub stages: Vec<StageSpan>,
    pub traffic: Vec<TrafficPoint>,
}

impl LifecycleLog {
    /// Record what one poll saw at `at_ms`.
    pub fn record(&mut self, at_ms: u64, stage: Option<&str>, production: Option<f64>, test: Option<f64>) {
        if let Some(stage) = stage.filter(|s| !s.is_empty())
            && self.stages.last().is_none_or(|l| l.stage != stage)
        {
            self.close(at_ms);
            self.stages.push(StageSpan { stage: stage.to_string(), started_ms: at_ms, duration_ms: 0 });
        }
        if production.is_some() || test.is_some() {
            let last = self.traffic.last();
            let p = production.or(last.map(|l| l.production_green_percent)).unwrap_or(0.0);
            let t = test.or(last.map(|l| l.test_green_percent)).unwrap_or(0.0);
            if last.is_none_or(|l| l.production_green_percent != p || l.test_green_percent != t) {
                self.traffic.push(TrafficPoint { at_ms, production_green_percent: p, test_green_percent: t });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::super::gate::{DeploymentState, TaskState};
    use super::*;
    use aws_sdk_ecs::types::{AdvancedConfiguration, DeploymentCircuitBreaker, LoadBalancer};

    const TEST: &str = "http://127.0.0.1:9/test";
    const PROD: &str = "http://127.0.0.1:9/prod";

    #[test]
    fn bake_seconds_round_up_to_whole_minutes() {
        assert_eq!([0, 1, 59, 60, 61, 120, 3600].map(minutes), [0, 1, 1, 1, 2, 2, 60]);
    }

    fn lb(advanced: Option<AdvancedConfiguration>) -> LoadBalancer {
        LoadBalancer::builder()
            .target_group_arn("arn:tg/blue")
            .container_name("app")
            .container_port(8080)
            .set_advanced_configuration(advanced)
            .build()
    }

    #[test]
    fn advanced_configuration_is_required_and_the_error_names_the_fix() {
        let full = AdvancedConfiguration::builder()
            .alternate_target_group_arn("arn:tg/green")
            .production_listener_rule("arn:rule/1")
            .test_listener_rule("arn:rule/2")
            .role_arn("arn:role")
            .build();
        let no_role = AdvancedConfiguration::builder()
            .alternate_target_group_arn("arn:tg/green")
            .production_listener_rule("arn:rule/1")
            .build();
        let svc = |lbs: Vec<LoadBalancer>| Service::builder().service_name("web").set_load_balancers(Some(lbs)).build();
        let table: Vec<(Service, Option<&str>)> = vec![
            (svc(vec![lb(Some(full))]), None),
            (svc(vec![]), Some("service web has no loadBalancers")),
            (svc(vec![lb(None)]), Some("loadBalancers[0] (target group arn:tg/blue) has no advancedConfiguration")),
            (
                svc(vec![lb(Some(no_role))]),
                Some("advancedConfiguration lacks roleArn, which --strategy canary needs; add it"),
            ),
        ];
        for (s, want) in table {
            match (check_advanced_configuration(&s, "canary"), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => {
                    assert!(e.contains(w), "{e} !~ {w}");
                    assert!(e.contains("advancedConfiguration"), "{e}");
                }
                (got, want) => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn the_configuration_keeps_the_users_settings_and_hooks_and_adds_one_pause_hook() {
        let user_hook = DeploymentLifecycleHook::builder()
            .hook_target_arn("arn:aws:lambda:r:1:function:smoke")
            .role_arn("arn:role")
            .lifecycle_stages(DeploymentLifecycleHookStage::PostScaleUp)
            .build();
        let current = DeploymentConfiguration::builder()
            .deployment_circuit_breaker(DeploymentCircuitBreaker::builder().enable(true).rollback(true).build())
            .maximum_percent(200)
            .bake_time_in_minutes(15)
            .lifecycle_hooks(user_hook.clone())
            .lifecycle_hooks(our_hook()) // left over from an earlier run: not doubled
            .build();
        let s = ShiftSettings {
            strategy: DeploymentStrategy::Linear,
            bake_minutes: Some(2),
            canary_percent: None,
            canary_bake_minutes: None,
            linear_percent: Some(25.0),
            linear_bake_minutes: Some(1),
        };
        let c = deployment_configuration(Some(&current), &s);
        assert_eq!(c.strategy(), Some(&DeploymentStrategy::Linear));
        assert_eq!(c.bake_time_in_minutes(), Some(2));
        assert_eq!(c.maximum_percent(), Some(200));
        assert!(c.deployment_circuit_breaker().is_some_and(|b| b.rollback()));
        assert_eq!(c.lifecycle_hooks(), [user_hook.clone(), our_hook()]);
        let l = c.linear_configuration().unwrap();
        assert_eq!((l.step_percent(), l.step_bake_time_in_minutes()), (Some(25.0), Some(1)));
        assert!(c.canary_configuration().is_none());
        // Without a --bake the service's own bake time stays.
        let c2 = deployment_configuration(Some(&current), &ShiftSettings { bake_minutes: None, ..s.clone() });
        assert_eq!(c2.bake_time_in_minutes(), Some(15));
        let restored = without_our_hook(Some(&c));
        assert_eq!(restored.lifecycle_hooks(), [user_hook]);
        assert_eq!(restored.strategy(), Some(&DeploymentStrategy::Linear));
        assert!(without_our_hook(None).lifecycle_hooks.as_ref().is_some_and(|h| h.is_empty()));
        assert!(ShiftSettings { linear_percent: Some(1.0), ..s.clone() }.validate().is_err());
        assert!(ShiftSettings { canary_percent: Some(0.0), ..s.clone() }.validate().is_err());
        assert!(s.validate().is_ok());
    }

    fn config() -> TrafficGateConfig {
        TrafficGateConfig {
            test_urls: vec![TEST.into()],
            health_urls: vec![PROD.into()],
            probe_successes: 2,
            probe_failures: 2,
            timeout: Duration::from_secs(100),
        }
    }

    fn sd(status: &str, stage: &str, hook: Option<&str>, prod: f64) -> SdView {
        SdView {
            status: status.into(),
            stage: Some(stage.into()).filter(|s: &String| !s.is_empty()),
            our_hook: hook.map(|h| ("h1".to_string(), h.to_string())),
            production_weight: Some(prod),
            test_weight: Some(100.0),
            ..Default::default()
        }
    }

    fn probe(url: &str, ok: bool) -> Probe {
        Probe {
            url: url.into(),
            ok,
            status: Some(if ok { 200 } else { 500 }),
            detail: if ok { "ok".into() } else { "bad".into() },
        }
    }

    fn obs(t: u64, probes: Vec<Probe>) -> Observation {
        Observation {
            elapsed: Duration::from_secs(t),
            deployment: Some(DeploymentState { rollout_state: "IN_PROGRESS".into(), ..Default::default() }),
            primary_is_ours: true,
            service_deployment_status: None,
            tasks: vec![],
            probes,
        }
    }

    /// Feed (observation, sd) pairs; releasing the hold when the gate says so.
    fn run(config: TrafficGateConfig, timeline: Vec<(Observation, SdView)>) -> Vec<String> {
        let mut gate = TrafficGate::new(config);
        timeline
            .iter()
            .map(|(o, s)| match gate.observe(o, Some(s)) {
                Decision::Wait(w) => format!("wait: {w}"),
                Decision::Continue { hook_id, .. } => {
                    gate.mark_continued();
                    format!("continue {hook_id}")
                }
                Decision::Healthy => "healthy".into(),
                Decision::Failed { failure, phase } => format!("failed in {phase:?}: {failure}"),
            })
            .collect()
    }

    #[test]
    fn a_good_blue_green_waits_for_the_test_gate_then_for_success_and_production_probes() {
        let got = run(
            config(),
            vec![
                (obs(0, vec![]), sd("IN_PROGRESS", "SCALE_UP", None, 0.0)),
                (
                    obs(1, vec![probe(TEST, true)]),
                    sd("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT", Some("AWAITING_ACTION"), 0.0),
                ),
                (
                    obs(2, vec![probe(TEST, true)]),
                    sd("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT", Some("AWAITING_ACTION"), 0.0),
                ),
                (
                    obs(3, vec![probe(TEST, true), probe(PROD, true)]),
                    sd("IN_PROGRESS", "BAKE_TIME", Some("SUCCEEDED"), 100.0),
                ),
                (obs(4, vec![probe(TEST, true)]), sd("SUCCESSFUL", "CLEAN_UP", Some("SUCCEEDED"), 100.0)),
                (
                    obs(5, vec![probe(TEST, true), probe(PROD, true)]),
                    sd("SUCCESSFUL", "CLEAN_UP", Some("SUCCEEDED"), 100.0),
                ),
            ],
        );
        assert_eq!(
            got,
            [
                "wait: lifecycle stage SCALE_UP",
                "wait: test listener http://127.0.0.1:9/test to answer well 2 times in a row (1 so far)",
                "continue h1",
                "wait: lifecycle stage BAKE_TIME (production 100% green)",
                "wait: http://127.0.0.1:9/prod to answer well 2 times in a row after the deployment completed (1 so far)",
                "healthy",
            ]
        );
    }

    #[test]
    fn failures_are_placed_in_their_phase() {
        let held = || sd("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT", Some("AWAITING_ACTION"), 0.0);
        let got =
            run(config(), vec![(obs(1, vec![probe(TEST, false)]), held()), (obs(2, vec![probe(TEST, false)]), held())]);
        assert_eq!(got[1], "failed in Test: http://127.0.0.1:9/test failed 2 times in a row (last: HTTP 500: bad)");

        let shifting = || sd("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some("SUCCEEDED"), 20.0);
        let crashed = TaskState {
            arn: "arn:task/c/abc".into(),
            last_status: "STOPPED".into(),
            stop_code: Some("EssentialContainerExited".into()),
            ..Default::default()
        };
        let got = run(
            config(),
            vec![
                (obs(1, vec![probe(TEST, true)]), held()),
                (obs(2, vec![probe(TEST, true)]), held()),
                (obs(3, vec![probe(PROD, true)]), shifting()),
                (Observation { tasks: vec![crashed], ..obs(4, vec![]) }, shifting()),
            ],
        );
        assert_eq!(got[2], "wait: lifecycle stage PRODUCTION_TRAFFIC_SHIFT (production 20% green)");
        assert_eq!(
            got[3],
            "failed in Production: a task of the new revision stopped: task abc [EssentialContainerExited]"
        );

        let rolling_back = SdView {
            status_reason: Some("ECS deployment circuit breaker: tasks failed to start.".into()),
            ..sd("ROLLBACK_IN_PROGRESS", "SCALE_UP", None, 0.0)
        };
        let got = run(config(), vec![(obs(1, vec![]), rolling_back)]);
        assert_eq!(
            got[0],
            "failed in Test: ECS failed the deployment: ECS deployment circuit breaker: tasks failed to start. (ECS is rolling back by itself)"
        );
        let got = run(config(), vec![(obs(100, vec![]), sd("IN_PROGRESS", "SCALE_UP", None, 0.0))]);
        assert_eq!(got[0], "failed in Test: timed out waiting for lifecycle stage SCALE_UP");
    }

    #[test]
    fn without_test_urls_the_hold_is_released_at_once_and_a_missed_hold_is_noticed() {
        let cfg = TrafficGateConfig { test_urls: vec![], ..config() };
        let got = run(
            cfg.clone(),
            vec![(obs(1, vec![]), sd("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT", Some("AWAITING_ACTION"), 0.0))],
        );
        assert_eq!(got, ["continue h1"]);
        let mut gate = TrafficGate::new(cfg);
        let d = gate.observe(&obs(1, vec![]), Some(&sd("IN_PROGRESS", "BAKE_TIME", None, 100.0)));
        assert!(matches!(d, Decision::Wait(_)));
        assert!(gate.hold_missed);
        assert_eq!(gate.phase(), Phase::Production);
    }

    #[test]
    fn probes_follow_the_stage() {
        let c = config();
        let at = |status: &str, stage: &str| urls_to_probe(&c, Some(&sd(status, stage, None, 0.0)));
        assert!(at("IN_PROGRESS", "TEST_TRAFFIC_SHIFT").is_empty());
        assert_eq!(at("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT"), [TEST]);
        assert_eq!(at("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT"), [TEST, PROD]);
        assert_eq!(at("SUCCESSFUL", ""), [TEST, PROD]);
        assert!(urls_to_probe(&c, None).is_empty());
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
