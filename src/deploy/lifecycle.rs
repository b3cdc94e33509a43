//! The pure side of blue/green, canary and linear deployments: what the service needs before
//! anything changes (`advancedConfiguration`), the deployment configuration deployer sends
//! (the user's settings plus its own PAUSE hook at POST_TEST_TRAFFIC_SHIFT, which times out
//! to ROLLBACK a little after the run's own timeout, so a deployment a dead runner abandoned
//! rolls back by itself), and the lifecycle-aware gate that decides, from one observation,
//! whether to wait, release the test-traffic hold, declare success, or fail. No I/O: every
//! decision is a table test.

use std::time::Duration;

use aws_sdk_ecs::types::{
    CanaryConfiguration, DeploymentConfiguration, DeploymentLifecycleHook, DeploymentLifecycleHookAction,
    DeploymentLifecycleHookStage, DeploymentLifecycleHookTargetType, DeploymentLifecycleHookTimeoutConfiguration,
    DeploymentStrategy, LinearConfiguration, LoadBalancer, ServiceDeploymentLifecycleStage as Stage,
    ServiceDeploymentStatus,
};

use super::gate::{Decision, DeployGate, Failure, Observation, Probe, ProbeStreaks, ecs_verdict};
use super::plan::{GateConfig, ShiftSettings, Strategy};
use super::view::ServiceDeploymentView;

/// Lifecycle stages in ECS's order.
fn stage_index(stage: &Stage) -> Option<usize> {
    Some(match stage {
        Stage::ReconcileService => 0,
        Stage::PreScaleUp => 1,
        Stage::ScaleUp => 2,
        Stage::PostScaleUp => 3,
        Stage::TestTrafficShift => 4,
        Stage::PostTestTrafficShift => 5,
        Stage::ProductionTrafficShift => 6,
        Stage::PostProductionTrafficShift => 7,
        Stage::BakeTime => 8,
        Stage::CleanUp => 9,
        _ => return None,
    })
}

/// Past the test-traffic hold: production traffic is (being) shifted.
fn past_hold(sd: &ServiceDeploymentView) -> bool {
    sd.stage.as_ref().and_then(stage_index).is_some_and(|i| i > 5)
}

/// At or past the hold: the test listener serves green.
fn test_traffic_on_green(sd: &ServiceDeploymentView) -> bool {
    sd.stage.as_ref().and_then(stage_index).is_some_and(|i| i >= 5)
}

/// How long ECS holds deployer's hook before rolling back by itself: the run's timeout plus
/// this margin, in whole minutes within ECS's range (1 to 20160).
pub const HOOK_TIMEOUT_MARGIN: Duration = Duration::from_secs(120);

pub fn hook_timeout_minutes(timeout: Duration) -> i32 {
    let secs = timeout.saturating_add(HOOK_TIMEOUT_MARGIN).as_secs();
    secs.div_ceil(60).clamp(1, 20160) as i32
}

/// Is this hook the one deployer adds (PAUSE at POST_TEST_TRAFFIC_SHIFT, no target ARN)?
/// Its timeout may differ from run to run; it is still ours.
pub fn is_our_hook(h: &DeploymentLifecycleHook) -> bool {
    h.target_type() == Some(&DeploymentLifecycleHookTargetType::Pause)
        && h.hook_target_arn().is_none_or(str::is_empty)
        && h.lifecycle_stages() == [DeploymentLifecycleHookStage::PostTestTrafficShift]
}

/// Deployer's hold: PAUSE at POST_TEST_TRAFFIC_SHIFT, ROLLBACK after `timeout_minutes`.
pub fn our_hook(timeout_minutes: i32) -> DeploymentLifecycleHook {
    DeploymentLifecycleHook::builder()
        .target_type(DeploymentLifecycleHookTargetType::Pause)
        .lifecycle_stages(DeploymentLifecycleHookStage::PostTestTrafficShift)
        .timeout_configuration(
            DeploymentLifecycleHookTimeoutConfiguration::builder()
                .timeout_in_minutes(timeout_minutes)
                .action(DeploymentLifecycleHookAction::Rollback)
                .build(),
        )
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

fn users_hooks(current: Option<&DeploymentConfiguration>) -> Vec<DeploymentLifecycleHook> {
    current.map(|c| c.lifecycle_hooks().iter().filter(|h| !is_our_hook(h)).cloned().collect()).unwrap_or_default()
}

/// What UpdateService sends: the service's configuration, the strategy and bake settings
/// given, the user's own hooks, and one PAUSE hook of deployer's at POST_TEST_TRAFFIC_SHIFT.
pub fn deployment_configuration(
    current: Option<&DeploymentConfiguration>,
    strategy: DeploymentStrategy,
    s: &ShiftSettings,
    hook_timeout_minutes: i32,
) -> DeploymentConfiguration {
    let mut hooks = users_hooks(current);
    hooks.push(our_hook(hook_timeout_minutes));
    let base = with_hooks(current, hooks);
    let mut b = DeploymentConfiguration::builder()
        .set_deployment_circuit_breaker(base.deployment_circuit_breaker().cloned())
        .set_maximum_percent(base.maximum_percent())
        .set_minimum_healthy_percent(base.minimum_healthy_percent())
        .set_alarms(base.alarms().cloned())
        .strategy(strategy.clone())
        .set_bake_time_in_minutes(s.bake_minutes.or(base.bake_time_in_minutes()))
        .set_lifecycle_hooks(Some(base.lifecycle_hooks().to_vec()))
        .set_linear_configuration(base.linear_configuration().cloned())
        .set_canary_configuration(base.canary_configuration().cloned())
        .set_early_success_criteria(base.early_success_criteria().cloned());
    if strategy == DeploymentStrategy::Canary {
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
    if strategy == DeploymentStrategy::Linear {
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
    with_hooks(current, users_hooks(current))
}

/// One line of the timeline for the update deployer sends.
pub fn describe_configuration(c: &DeploymentConfiguration, hook_timeout_minutes: i32) -> String {
    let strategy = c.strategy().map(|s| s.as_str()).unwrap_or("BLUE_GREEN");
    let shape = match (c.strategy(), c.canary_configuration(), c.linear_configuration()) {
        (Some(DeploymentStrategy::Canary), Some(cc), _) => format!(
            ", canary {}% for {} min",
            cc.canary_percent().unwrap_or(5.0),
            cc.canary_bake_time_in_minutes().unwrap_or(10)
        ),
        (Some(DeploymentStrategy::Linear), _, Some(l)) => {
            format!(", {}% every {} min", l.step_percent().unwrap_or(10.0), l.step_bake_time_in_minutes().unwrap_or(6))
        }
        _ => String::new(),
    };
    format!(
        "{strategy}, bake {} min{shape}; PAUSE hook at POST_TEST_TRAFFIC_SHIFT, ROLLBACK by ECS after {hook_timeout_minutes} min unanswered",
        c.bake_time_in_minutes().unwrap_or(0)
    )
}

/// Before any change: the service can do a traffic-shifting deployment. The error names what
/// to add (the caller names the service).
pub fn check_advanced_configuration(lbs: &[LoadBalancer], strategy: Strategy) -> Result<(), String> {
    if lbs.is_empty() {
        return Err(format!(
            "no loadBalancers; --strategy {strategy} shifts traffic between two target groups behind a load balancer. \
             Add loadBalancers[] with targetGroupArn, containerName, containerPort and advancedConfiguration \
             (alternateTargetGroupArn, productionListenerRule, testListenerRule, roleArn) to the service, or deploy \
             with --strategy rolling; nothing was changed"
        ));
    }
    for (i, lb) in lbs.iter().enumerate() {
        let tg = lb.target_group_arn().unwrap_or("?");
        let Some(a) = lb.advanced_configuration() else {
            return Err(format!(
                "loadBalancers[{i}] (target group {tg}) has no advancedConfiguration, which --strategy {strategy} needs. \
                 Add advancedConfiguration with alternateTargetGroupArn (the green target group), productionListenerRule, \
                 testListenerRule and roleArn (an infrastructure role ECS uses to change the listener rules) to the service's \
                 loadBalancers[{i}] (aws ecs update-service --load-balancers ...), then run again; nothing was changed"
            ));
        };
        let missing: Vec<&str> = [
            ("alternateTargetGroupArn", a.alternate_target_group_arn()),
            ("productionListenerRule", a.production_listener_rule()),
            ("roleArn", a.role_arn()),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none_or(str::is_empty))
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "loadBalancers[{i}].advancedConfiguration lacks {}, which --strategy {strategy} needs; \
                 add {} to it, then run again; nothing was changed",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
    }
    Ok(())
}

/// Which URLs a poll probes, given the last seen stage: test URLs once the test listener
/// serves green; health (production) URLs once production shifts or the deployment is done.
pub fn urls_to_probe(config: &GateConfig, sd: Option<&ServiceDeploymentView>) -> Vec<String> {
    let Some(sd) = sd else { return Vec::new() };
    let done = sd.status_is(ServiceDeploymentStatus::Successful);
    let mut urls = Vec::new();
    if done || test_traffic_on_green(sd) {
        urls.extend(config.test_urls.iter().cloned());
    }
    if done || past_hold(sd) {
        urls.extend(config.health_urls.iter().cloned());
    }
    urls
}

/// The lifecycle-aware gate: probe streaks, and whether the hold was released.
#[derive(Debug, Clone)]
pub struct TrafficGate {
    config: GateConfig,
    probes: ProbeStreaks,
    continued: bool,
    /// The deployment left POST_TEST_TRAFFIC_SHIFT without deployer's hold (not yet noted).
    hold_missed: Option<bool>,
}

impl TrafficGate {
    pub fn new(config: GateConfig) -> TrafficGate {
        TrafficGate { config, probes: ProbeStreaks::default(), continued: false, hold_missed: None }
    }

    fn wait_for(&self, urls: &[String], what: &str) -> Option<String> {
        let needed = self.config.probe_successes;
        self.probes
            .unsatisfied(urls, needed)
            .map(|(url, n)| format!("{what}{url} to answer well {needed} times in a row ({n} so far)"))
    }

    /// `Ok` with a decision to act on, `Err` with what the gate waits for.
    fn waiting(&mut self, sd: Option<&ServiceDeploymentView>) -> Result<Decision, String> {
        let Some(sd) = sd else { return Err("ECS to show the service deployment".into()) };
        if sd.status_is(ServiceDeploymentStatus::Successful) {
            let mut all = self.config.health_urls.clone();
            all.extend(self.config.test_urls.iter().cloned());
            return match self.wait_for(&all, "") {
                None => Ok(Decision::Healthy),
                Some(what) => Err(what.replace(" times in a row", " times in a row after the deployment completed")),
            };
        }
        if !self.continued {
            if past_hold(sd) {
                // ECS moved on without deployer's hold (the hook was not applied).
                self.hold_missed = Some(true);
                self.continued = true;
            } else if let Some(hook_id) = sd.held_by_us() {
                return self.release_hold(hook_id);
            }
        }
        let mut what = match &sd.stage {
            None => format!("ECS to start the deployment ({})", sd.status_name()),
            Some(s) => format!("lifecycle stage {}", s.as_str()),
        };
        if let Some(w) = sd.production_weight.filter(|_| past_hold(sd)) {
            what.push_str(&format!(" (production {w}% green)"));
        }
        if sd.others_waiting > 0 {
            what.push_str(&format!(", {} other lifecycle hook(s) awaiting action", sd.others_waiting));
        }
        Err(what)
    }

    /// Green is held on test traffic: continue once every test URL answered well.
    fn release_hold(&self, hook_id: &str) -> Result<Decision, String> {
        let hook_id = hook_id.to_string();
        if self.config.test_urls.is_empty() {
            let note = "no --test-url: green is up and healthy to ECS; continuing without a test-traffic gate";
            return Ok(Decision::Continue { hook_id, note: note.into() });
        }
        match self.wait_for(&self.config.test_urls, "test listener ") {
            Some(what) => Err(what),
            None => Ok(Decision::Continue {
                hook_id,
                note: format!(
                    "test traffic gate passed: {} answered well {} times in a row",
                    self.config.test_urls.join(", "),
                    self.config.probe_successes
                ),
            }),
        }
    }
}

impl DeployGate for TrafficGate {
    fn observe(&mut self, obs: &Observation) -> Decision {
        if let Some(failure) = ecs_verdict(obs) {
            return Decision::Failed(failure);
        }
        if let Some(failure) = self.probes.record(&obs.probes, self.config.probe_failures) {
            return Decision::Failed(failure);
        }
        match self.waiting(obs.service_deployment.as_ref()) {
            Ok(decision) => decision,
            Err(what) if obs.elapsed >= self.config.timeout => Decision::Failed(Failure::Timeout { waiting_for: what }),
            Err(what) => Decision::Wait(what),
        }
    }

    fn probe_urls(&self, last: Option<&Observation>) -> Vec<String> {
        urls_to_probe(&self.config, last.and_then(|o| o.service_deployment.as_ref()))
    }

    fn continued(&mut self) {
        self.continued = true;
    }

    fn phase_note(&self) -> &'static str {
        if self.continued { " with production traffic on green" } else { " before production traffic shifted" }
    }

    fn take_note(&mut self) -> Option<String> {
        match self.hold_missed {
            Some(true) => {
                self.hold_missed = Some(false);
                Some(
                    "ECS moved past POST_TEST_TRAFFIC_SHIFT without deployer's PAUSE hook holding it; no test-traffic gate ran"
                        .into(),
                )
            }
            _ => None,
        }
    }

    fn last_bad_probe(&self) -> Option<&Probe> {
        self.probes.last_bad()
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::{DeploymentView, HookView, TaskStatus, TaskView};
    use super::*;
    use aws_sdk_ecs::types::{
        AdvancedConfiguration, DeploymentCircuitBreaker, DeploymentLifecycleHookStatus, DeploymentRolloutState,
        TaskStopCode,
    };

    const TEST: &str = "http://127.0.0.1:9/test";
    const PROD: &str = "http://127.0.0.1:9/prod";

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
        let table: Vec<(Vec<LoadBalancer>, Option<&str>)> = vec![
            (vec![lb(Some(full))], None),
            (vec![], Some("no loadBalancers")),
            (vec![lb(None)], Some("loadBalancers[0] (target group arn:tg/blue) has no advancedConfiguration")),
            (
                vec![lb(Some(no_role))],
                Some("advancedConfiguration lacks roleArn, which --strategy canary needs; add it"),
            ),
        ];
        for (lbs, want) in table {
            match (check_advanced_configuration(&lbs, Strategy::Canary), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => {
                    assert!(e.contains(w), "{e} !~ {w}");
                    assert!(e.contains("advancedConfiguration") && e.ends_with("nothing was changed"), "{e}");
                }
                (got, want) => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn the_hook_times_out_to_rollback_after_the_run_plus_a_margin_within_ecs_range() {
        assert_eq!(hook_timeout_minutes(Duration::from_secs(1800)), 32);
        assert_eq!(hook_timeout_minutes(Duration::from_secs(60)), 3);
        assert_eq!(hook_timeout_minutes(Duration::ZERO), 2);
        assert_eq!(hook_timeout_minutes(Duration::from_secs(100 * 24 * 3600)), 20160);
        let t = our_hook(7).timeout_configuration().cloned().unwrap();
        assert_eq!((t.timeout_in_minutes(), t.action()), (Some(7), Some(&DeploymentLifecycleHookAction::Rollback)));
        assert!(is_our_hook(&our_hook(7)) && is_our_hook(&our_hook(99)), "the timeout does not change whose it is");
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
            .lifecycle_hooks(our_hook(1440)) // left over from an earlier run: not doubled
            .build();
        let s = ShiftSettings {
            bake_minutes: Some(2),
            canary_percent: None,
            canary_bake_minutes: None,
            linear_percent: Some(25.0),
            linear_bake_minutes: Some(1),
        };
        let c = deployment_configuration(Some(&current), DeploymentStrategy::Linear, &s, 32);
        assert_eq!(c.strategy(), Some(&DeploymentStrategy::Linear));
        assert_eq!(c.bake_time_in_minutes(), Some(2));
        assert_eq!(c.maximum_percent(), Some(200));
        assert!(c.deployment_circuit_breaker().is_some_and(|b| b.rollback()));
        assert_eq!(c.lifecycle_hooks(), [user_hook.clone(), our_hook(32)]);
        let l = c.linear_configuration().unwrap();
        assert_eq!((l.step_percent(), l.step_bake_time_in_minutes()), (Some(25.0), Some(1)));
        assert!(c.canary_configuration().is_none());
        assert_eq!(
            describe_configuration(&c, 32),
            "LINEAR, bake 2 min, 25% every 1 min; PAUSE hook at POST_TEST_TRAFFIC_SHIFT, ROLLBACK by ECS after 32 min unanswered"
        );
        // Without a --bake the service's own bake time stays.
        let c2 = deployment_configuration(
            Some(&current),
            DeploymentStrategy::Linear,
            &ShiftSettings { bake_minutes: None, ..s.clone() },
            32,
        );
        assert_eq!(c2.bake_time_in_minutes(), Some(15));
        let restored = without_our_hook(Some(&c));
        assert_eq!(restored.lifecycle_hooks(), [user_hook]);
        assert_eq!(restored.strategy(), Some(&DeploymentStrategy::Linear));
        assert!(without_our_hook(None).lifecycle_hooks.as_ref().is_some_and(|h| h.is_empty()));
    }

    fn config() -> GateConfig {
        GateConfig {
            test_urls: vec![TEST.into()],
            health_urls: vec![PROD.into()],
            probe_successes: 2,
            probe_failures: 2,
            timeout: Duration::from_secs(100),
            bake: Duration::ZERO,
        }
    }

    fn sd(
        status: ServiceDeploymentStatus,
        stage: Option<Stage>,
        hook: Option<DeploymentLifecycleHookStatus>,
        prod: f64,
    ) -> ServiceDeploymentView {
        ServiceDeploymentView {
            status: Some(status),
            stage,
            our_hook: hook.map(|status| HookView { id: "h1".into(), status: Some(status) }),
            production_weight: Some(prod),
            test_weight: Some(100.0),
            ..Default::default()
        }
    }

    fn held() -> ServiceDeploymentView {
        sd(
            ServiceDeploymentStatus::InProgress,
            Some(Stage::PostTestTrafficShift),
            Some(DeploymentLifecycleHookStatus::AwaitingAction),
            0.0,
        )
    }

    fn probe(url: &str, ok: bool) -> Probe {
        Probe {
            url: url.into(),
            ok,
            status: Some(if ok { 200 } else { 500 }),
            detail: if ok { "ok".into() } else { "bad".into() },
        }
    }

    fn obs(t: u64, probes: Vec<Probe>, sd: ServiceDeploymentView) -> Observation {
        Observation {
            elapsed: Duration::from_secs(t),
            deployment: Some(DeploymentView {
                rollout: Some(DeploymentRolloutState::InProgress),
                ..Default::default()
            }),
            primary_is_ours: true,
            service_deployment: Some(sd),
            tasks: vec![],
            probes,
            code_deploy: None,
        }
    }

    /// Feed observations; releasing the hold when the gate says so.
    fn run(config: GateConfig, timeline: Vec<Observation>) -> Vec<String> {
        let mut gate = TrafficGate::new(config);
        timeline
            .iter()
            .map(|o| match gate.observe(o) {
                Decision::Wait(w) => format!("wait: {w}"),
                Decision::Continue { hook_id, .. } => {
                    gate.continued();
                    format!("continue {hook_id}")
                }
                Decision::Healthy => "healthy".into(),
                Decision::Failed(failure) => format!("failed{}: {failure}", gate.phase_note()),
            })
            .collect()
    }

    #[test]
    fn a_good_blue_green_waits_for_the_test_gate_then_for_success_and_production_probes() {
        use ServiceDeploymentStatus::{InProgress, Successful};
        let succeeded = Some(DeploymentLifecycleHookStatus::Succeeded);
        let got = run(
            config(),
            vec![
                obs(0, vec![], sd(InProgress, Some(Stage::ScaleUp), None, 0.0)),
                obs(1, vec![probe(TEST, true)], held()),
                obs(2, vec![probe(TEST, true)], held()),
                obs(
                    3,
                    vec![probe(TEST, true), probe(PROD, true)],
                    sd(InProgress, Some(Stage::BakeTime), succeeded.clone(), 100.0),
                ),
                obs(4, vec![probe(TEST, true)], sd(Successful, Some(Stage::CleanUp), succeeded.clone(), 100.0)),
                obs(
                    5,
                    vec![probe(TEST, true), probe(PROD, true)],
                    sd(Successful, Some(Stage::CleanUp), succeeded, 100.0),
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
        let got =
            run(config(), vec![obs(1, vec![probe(TEST, false)], held()), obs(2, vec![probe(TEST, false)], held())]);
        assert_eq!(
            got[1],
            "failed before production traffic shifted: http://127.0.0.1:9/test failed 2 times in a row (last: HTTP 500: bad)"
        );

        let shifting = || {
            sd(
                ServiceDeploymentStatus::InProgress,
                Some(Stage::ProductionTrafficShift),
                Some(DeploymentLifecycleHookStatus::Succeeded),
                20.0,
            )
        };
        let crashed = TaskView {
            arn: "arn:task/c/abc".into(),
            status: TaskStatus::Stopped,
            stop_code: Some(TaskStopCode::EssentialContainerExited),
            ..Default::default()
        };
        let got = run(
            config(),
            vec![
                obs(1, vec![probe(TEST, true)], held()),
                obs(2, vec![probe(TEST, true)], held()),
                obs(3, vec![probe(PROD, true)], shifting()),
                Observation { tasks: vec![crashed], ..obs(4, vec![], shifting()) },
            ],
        );
        assert_eq!(got[2], "wait: lifecycle stage PRODUCTION_TRAFFIC_SHIFT (production 20% green)");
        assert_eq!(
            got[3],
            "failed with production traffic on green: a task of the new revision stopped: task abc [EssentialContainerExited]"
        );

        let rolling_back = ServiceDeploymentView {
            status_reason: Some("ECS deployment circuit breaker: tasks failed to start.".into()),
            ..sd(ServiceDeploymentStatus::RollbackInProgress, Some(Stage::ScaleUp), None, 0.0)
        };
        let got = run(config(), vec![obs(1, vec![], rolling_back)]);
        assert_eq!(
            got[0],
            "failed before production traffic shifted: ECS failed the deployment: ECS deployment circuit breaker: tasks failed to start. (ECS is rolling back by itself)"
        );
        let got = run(
            config(),
            vec![obs(100, vec![], sd(ServiceDeploymentStatus::InProgress, Some(Stage::ScaleUp), None, 0.0))],
        );
        assert_eq!(got[0], "failed before production traffic shifted: timed out waiting for lifecycle stage SCALE_UP");
    }

    #[test]
    fn without_test_urls_the_hold_is_released_at_once_and_a_missed_hold_is_noticed() {
        let cfg = GateConfig { test_urls: vec![], ..config() };
        assert_eq!(run(cfg.clone(), vec![obs(1, vec![], held())]), ["continue h1"]);
        let mut gate = TrafficGate::new(cfg);
        let baking = sd(ServiceDeploymentStatus::InProgress, Some(Stage::BakeTime), None, 100.0);
        assert!(matches!(gate.observe(&obs(1, vec![], baking)), Decision::Wait(_)));
        assert!(gate.take_note().is_some_and(|n| n.contains("no test-traffic gate ran")));
        assert_eq!(gate.take_note(), None, "noted once");
        assert_eq!(gate.phase_note(), " with production traffic on green");
    }

    #[test]
    fn probes_follow_the_stage() {
        let c = config();
        let at = |status: ServiceDeploymentStatus, stage: Option<Stage>| {
            urls_to_probe(&c, Some(&sd(status, stage, None, 0.0)))
        };
        assert!(at(ServiceDeploymentStatus::InProgress, Some(Stage::TestTrafficShift)).is_empty());
        assert_eq!(at(ServiceDeploymentStatus::InProgress, Some(Stage::PostTestTrafficShift)), [TEST]);
        assert_eq!(at(ServiceDeploymentStatus::InProgress, Some(Stage::ProductionTrafficShift)), [TEST, PROD]);
        assert_eq!(at(ServiceDeploymentStatus::Successful, None), [TEST, PROD]);
        assert!(urls_to_probe(&c, None).is_empty());
    }
}
