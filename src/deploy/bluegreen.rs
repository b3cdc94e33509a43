//! BLUE_GREEN, CANARY and LINEAR deployments driven by ECS's own lifecycle, gated by deployer:
//! check (controller, nothing in progress, `advancedConfiguration`) → UpdateService with the
//! strategy and a PAUSE hook of deployer's at POST_TEST_TRAFFIC_SHIFT → watch the
//! ServiceDeployment; while held, probe the test listener until the gate passes, then
//! ContinueServiceDeployment(CONTINUE) (or ROLLBACK) → during the production shift and bake,
//! probe the production URLs and watch green's tasks; a failure → StopServiceDeployment
//! (ROLLBACK) and wait until blue serves again → restore the service's own lifecycle hooks.
//! The decisions are `lifecycle::TrafficGate`'s; this file only does the I/O.

use std::time::{Duration, Instant};

use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{DeploymentLifecycleHookAction, ServiceDeployment};

use super::gate::Failure;
use super::lifecycle::{
    self, Decision, LifecycleLog, Phase, SdView, ShiftSettings, TrafficGate, TrafficGateConfig, urls_to_probe,
};
use super::rollback::{Method, Restored, Rollback};
use super::rolling::{DeployReport, DeployRequest, Deployer, Outcome, Step};
use super::watch::{Pacing, Watcher, describe_service, now_ms};
use super::{Cancel, DeployError};

#[derive(Debug, Clone)]
pub struct ShiftRequest {
    pub base: DeployRequest,
    pub settings: ShiftSettings,
    /// Test-listener URLs probed while deployer holds the deployment.
    pub test_urls: Vec<String>,
}

impl ShiftRequest {
    fn strategy_flag(&self) -> &'static str {
        match self.settings.strategy.as_str() {
            "CANARY" => "canary",
            "LINEAR" => "linear",
            _ => "blue-green",
        }
    }
}

fn api<E>(op: &'static str, e: aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> DeployError
where
    E: std::error::Error + aws_sdk_ecs::error::ProvideErrorMetadata + 'static,
{
    DeployError::Api { op, message: crate::aws::auth::sdk_message(&e) }
}

fn short(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

/// The parts of a ServiceDeployment the gate reads.
pub fn sd_view(sd: &ServiceDeployment) -> SdView {
    let ours = sd
        .lifecycle_hook_details()
        .iter()
        .find(|h| h.target_type().map(|t| t.as_str()) == Some("PAUSE") && h.target_arn().is_none_or(str::is_empty));
    let others_waiting = sd
        .lifecycle_hook_details()
        .iter()
        .filter(|h| h.hook_id() != ours.and_then(|o| o.hook_id()))
        .filter(|h| h.status().map(|s| s.as_str()) == Some("AWAITING_ACTION"))
        .count();
    let target = sd.target_service_revision();
    SdView {
        status: sd.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        status_reason: sd.status_reason().map(str::to_string),
        stage: sd.lifecycle_stage().map(|s| s.as_str().to_string()),
        our_hook: ours.map(|h| {
            (
                h.hook_id().unwrap_or_default().to_string(),
                h.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            )
        }),
        others_waiting,
        production_weight: target.and_then(|t| t.requested_production_traffic_weight()),
        test_weight: target.and_then(|t| t.requested_test_traffic_weight()),
    }
}

impl Deployer<'_> {
    /// Before anything changes: what [`Deployer::check`] checks, plus a load balancer with
    /// `advancedConfiguration` and settings ECS accepts. Returns the running task definition.
    pub async fn check_traffic_shift(&self, req: &ShiftRequest) -> Result<String, DeployError> {
        req.settings.validate().map_err(DeployError::Input)?;
        let previous = self.check(&req.base).await?;
        let (svc, _) = describe_service(self.ecs, &req.base.cluster, &req.base.service).await?;
        lifecycle::check_advanced_configuration(&svc, req.strategy_flag()).map_err(DeployError::Input)?;
        Ok(previous)
    }

    /// UpdateService with the strategy, hold at POST_TEST_TRAFFIC_SHIFT until the test gate
    /// passes, watch the production shift and bake, settle (roll back on failure), restore.
    pub async fn deploy_traffic_shift(
        &self,
        req: &ShiftRequest,
        previous: String,
    ) -> Result<DeployReport, DeployError> {
        let base = &req.base;
        let started = Instant::now();
        let mut timeline = Vec::new();
        let mut step = |what: String| {
            tracing::info!("{}: {what}", base.service);
            timeline.push(Step { at_ms: started.elapsed().as_millis() as u64, what });
        };
        let mut report = DeployReport::new(base, &previous, Some(req.settings.strategy.as_str().to_string()));

        // update: the service's configuration + strategy + bake + deployer's PAUSE hook
        let (svc, _) = describe_service(self.ecs, &base.cluster, &base.service).await?;
        let config = lifecycle::deployment_configuration(svc.deployment_configuration(), &req.settings);
        let started_at = DateTime::from(std::time::SystemTime::now());
        let updated = self
            .ecs
            .update_service()
            .cluster(&base.cluster)
            .service(&base.service)
            .task_definition(&base.task_definition)
            .deployment_configuration(config.clone())
            .set_force_new_deployment(Some(previous == base.task_definition))
            .send()
            .await
            .map_err(|e| api("UpdateService", e))?;
        report.api_calls += 2;
        report.deployment_id = updated
            .service()
            .and_then(|s| s.deployments().iter().find(|d| d.status() == Some("PRIMARY")))
            .and_then(|d| d.id())
            .map(str::to_string);
        step(format!(
            "UpdateService: {} → {} ({}, bake {} min{}; PAUSE hook at POST_TEST_TRAFFIC_SHIFT)",
            short(&previous),
            short(&base.task_definition),
            req.settings.strategy.as_str(),
            config.bake_time_in_minutes().unwrap_or(0),
            match (config.canary_configuration(), config.linear_configuration()) {
                (Some(c), _) if req.settings.strategy.as_str() == "CANARY" => format!(
                    ", canary {}% for {} min",
                    c.canary_percent().unwrap_or(5.0),
                    c.canary_bake_time_in_minutes().unwrap_or(10)
                ),
                (_, Some(l)) if req.settings.strategy.as_str() == "LINEAR" => format!(
                    ", {}% every {} min",
                    l.step_percent().unwrap_or(10.0),
                    l.step_bake_time_in_minutes().unwrap_or(6)
                ),
                _ => String::new(),
            }
        ));

        // watch
        let gate_config = TrafficGateConfig {
            test_urls: req.test_urls.clone(),
            health_urls: base.gate.probe_urls.clone(),
            probe_successes: base.gate.probe_successes,
            probe_failures: base.gate.probe_failures,
            timeout: base.gate.timeout,
        };
        let mut gate = TrafficGate::new(gate_config.clone());
        let mut watcher = Watcher::new(self.ecs, self.http, base, started_at);
        let mut log = LifecycleLog::default();
        let mut pacing = Pacing::from_env();
        let mut view: Option<SdView> = None;
        let mut api_errors = 0;
        let mut last_wait = String::new();
        let mut hold_noted = false;
        let failure: Option<(Failure, Phase)> = loop {
            if self.cancel.is_cancelled() {
                report.cancelled = true;
                step("cancelled (SIGINT/SIGTERM)".into());
                break None;
            }
            watcher.probe_urls = urls_to_probe(&gate_config, view.as_ref());
            let obs = match watcher.observe().await {
                Ok(o) => {
                    api_errors = 0;
                    o
                }
                Err(e) => {
                    api_errors += 1;
                    tracing::warn!("observing the deployment failed ({api_errors} in a row): {e}");
                    if api_errors >= 5 {
                        break Some((Failure::Timeout { waiting_for: format!("ECS to answer ({e})") }, gate.phase()));
                    }
                    self.cancel.sleep(pacing.next(false)).await;
                    continue;
                }
            };
            report.polls += 1;
            let changed = watcher.changed(&obs);
            let seen = watcher.last_service_deployment.as_ref().map(sd_view);
            if let Some(v) = &seen {
                let at = started.elapsed().as_millis() as u64;
                if v.stage.is_some() && v.stage != view.as_ref().and_then(|p| p.stage.clone()) {
                    step(format!("lifecycle stage {}", v.stage.as_deref().unwrap_or("")));
                }
                let before = log.traffic.len();
                log.record(at, v.stage.as_deref(), v.production_weight, v.test_weight);
                if log.traffic.len() > before
                    && let Some(t) = log.traffic.last()
                {
                    step(format!(
                        "traffic: production {}% green, test {}% green",
                        t.production_green_percent, t.test_green_percent
                    ));
                }
            }
            view = seen.or(view);
            let decision = gate.observe(&obs, view.as_ref());
            if gate.hold_missed && !hold_noted {
                hold_noted = true;
                step("ECS moved past POST_TEST_TRAFFIC_SHIFT without deployer's PAUSE hook holding it; no test-traffic gate ran".into());
            }
            match decision {
                Decision::Wait(what) => {
                    if what != last_wait {
                        step(format!("waiting: {what}"));
                        last_wait = what;
                    }
                    // Poll at the base interval while a failure streak builds or while green
                    // is held on test traffic: both end sooner the faster deployer looks.
                    let held = view.as_ref().is_some_and(|v| v.stage.as_deref() == Some("POST_TEST_TRAFFIC_SHIFT"));
                    let urgent = held || obs.probes.iter().any(|p| !p.ok);
                    self.cancel.sleep(pacing.next(changed || urgent)).await;
                }
                Decision::Continue { hook_id, note } => {
                    let arn = watcher.service_deployment_arn.clone().unwrap_or_default();
                    report.api_calls += 1;
                    match self
                        .ecs
                        .continue_service_deployment()
                        .service_deployment_arn(&arn)
                        .hook_id(&hook_id)
                        .action(DeploymentLifecycleHookAction::Continue)
                        .send()
                        .await
                    {
                        Ok(_) => {
                            gate.mark_continued();
                            step(format!("{note}; ContinueServiceDeployment(CONTINUE): production traffic may shift"));
                        }
                        Err(e) => {
                            api_errors += 1;
                            let e = api("ContinueServiceDeployment", e);
                            tracing::warn!("{e}");
                            if api_errors >= 5 {
                                break Some((
                                    Failure::Timeout { waiting_for: format!("ECS to continue ({e})") },
                                    Phase::Test,
                                ));
                            }
                        }
                    }
                    self.cancel.sleep(pacing.next(true)).await;
                }
                Decision::Healthy => {
                    step("healthy: ECS finished the deployment and every probe passed".into());
                    break None;
                }
                Decision::Failed { failure, phase } => {
                    step(format!(
                        "gate failed {}: {failure}",
                        if phase == Phase::Test {
                            "before production traffic shifted"
                        } else {
                            "with production traffic on green"
                        }
                    ));
                    break Some((failure, phase));
                }
            }
        };
        if failure.is_some() || report.cancelled {
            watcher.sweep().await;
        }
        if let Some(arn) = &watcher.service_deployment_arn {
            report.deployment_id = Some(arn.clone());
        }
        report.events = watcher.events.iter().map(|(_, m)| m.clone()).collect();
        report.stopped_tasks = watcher.stopped.clone();
        report.failure_signal_at_ms = watcher.first_failure_ms;
        report.failing_probe = gate.last_bad_probes().last().filter(|_| failure.is_some()).map(|p| match p.status {
            Some(s) => format!("{} → HTTP {s}: {}", p.url, p.detail),
            None => format!("{} → {}", p.url, p.detail),
        });
        let sd_arn = watcher.service_deployment_arn.clone();
        report.api_calls += watcher.api_calls;

        // settle
        if failure.is_none() && !report.cancelled {
            report.final_task_definition_arn = Some(base.task_definition.clone());
        } else {
            report.failure = failure
                .as_ref()
                .map(|(f, _)| f.to_string())
                .or_else(|| Some("cancelled before the gate passed".into()));
            let ecs_rolls_back = failure.as_ref().is_some_and(|(f, _)| f.ecs_rolls_back());
            let held = view
                .as_ref()
                .filter(|v| v.stage.as_deref() == Some("POST_TEST_TRAFFIC_SHIFT"))
                .and_then(|v| v.our_hook.clone())
                .filter(|(_, status)| status == "AWAITING_ACTION")
                .map(|(id, _)| id);
            if base.no_rollback && !ecs_rolls_back {
                report.result = Outcome::Failed;
                report.state = Some(match &held {
                    Some(_) => format!(
                        "--no-rollback: {} is held at POST_TEST_TRAFFIC_SHIFT (production still on {}); \
                         continue or roll back with `aws ecs continue-service-deployment`",
                        short(&base.task_definition),
                        short(&previous)
                    ),
                    None => format!(
                        "--no-rollback: the service deployment stays as ECS left it ({})",
                        short(&base.task_definition)
                    ),
                });
            } else {
                step(format!("rolling back to {}", short(&previous)));
                report.rollback_started_at_ms = Some(now_ms());
                let rollback = Rollback {
                    ecs: self.ecs,
                    http: self.http,
                    cluster: &base.cluster,
                    service: &base.service,
                    to: &previous,
                    probe_urls: &base.gate.probe_urls,
                    timeout: base.gate.timeout.max(Duration::from_secs(60)),
                };
                let outcome = match (held, &sd_arn, ecs_rolls_back) {
                    (Some(hook_id), Some(arn), false) => {
                        report.api_calls += 1;
                        match self
                            .ecs
                            .continue_service_deployment()
                            .service_deployment_arn(arn)
                            .hook_id(&hook_id)
                            .action(DeploymentLifecycleHookAction::Rollback)
                            .send()
                            .await
                        {
                            Ok(_) => Ok((
                                "ContinueServiceDeployment(ROLLBACK) on the held test-traffic hook".to_string(),
                                rollback.wait_restored().await,
                            )),
                            Err(e) => {
                                tracing::info!(
                                    "ContinueServiceDeployment(ROLLBACK) did not apply ({}); stopping the deployment instead",
                                    crate::aws::auth::sdk_message(&e)
                                );
                                rollback.run(false, Some(arn)).await.map(|(m, r)| (m.to_string(), r))
                            }
                        }
                    }
                    _ => rollback.run(ecs_rolls_back, sd_arn.as_deref()).await.map(|(m, r)| {
                        let how = match m {
                            Method::EcsCircuitBreaker => "ECS's own rollback (deployer waited)".to_string(),
                            m => m.to_string(),
                        };
                        (how, r)
                    }),
                };
                let at = started.elapsed().as_millis() as u64;
                if matches!(outcome, Ok((_, Restored::Healthy))) {
                    log.back_to_blue(at);
                }
                let still_serving = format!("the service may still send traffic to {}", short(&base.task_definition));
                step(report.record_rollback(outcome, Some(still_serving)));
                if let Some(status) = self.final_status(sd_arn.as_deref(), &mut report).await {
                    step(format!("service deployment {status}"));
                }
            }
        }
        log.close(started.elapsed().as_millis() as u64);

        // restore: the service's own hooks, without deployer's hold, for the next deployment
        report.api_calls += 1;
        match self
            .ecs
            .update_service()
            .cluster(&base.cluster)
            .service(&base.service)
            .deployment_configuration(lifecycle::without_our_hook(Some(&config)))
            .send()
            .await
        {
            Ok(_) => step("restored the service's lifecycle hooks (deployer's PAUSE hook removed)".into()),
            Err(e) => step(format!(
                "could not remove deployer's PAUSE hook from the service ({}); the next deployment will wait at POST_TEST_TRAFFIC_SHIFT until continued",
                crate::aws::auth::sdk_message(&e)
            )),
        }
        report.lifecycle = log.stages;
        report.traffic = log.traffic;
        report.timeline = timeline;
        Ok(report)
    }

    /// The service deployment's status after a rollback, waiting a bounded time for ECS to
    /// call it ROLLBACK_SUCCESSFUL.
    async fn final_status(&self, arn: Option<&str>, report: &mut DeployReport) -> Option<String> {
        let arn = arn?;
        let never = Cancel::default();
        let mut last = None;
        for _ in 0..20 {
            report.api_calls += 1;
            let out = self.ecs.describe_service_deployments().service_deployment_arns(arn).send().await.ok()?;
            last = out.service_deployments().first().and_then(|d| d.status()).map(|s| s.as_str().to_string());
            if last.as_deref().is_some_and(|s| s != "ROLLBACK_REQUESTED" && s != "ROLLBACK_IN_PROGRESS") {
                break;
            }
            never.sleep(Pacing::from_env().initial).await;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{
        DeploymentLifecycleHookDetail, DeploymentLifecycleHookStatus, DeploymentLifecycleHookTargetType,
        ServiceDeploymentLifecycleStage, ServiceDeploymentStatus, ServiceRevisionSummary,
    };

    #[test]
    fn the_view_finds_deployers_hook_among_the_users_and_reads_the_weights() {
        let hook = |id: &str, target: DeploymentLifecycleHookTargetType, arn: Option<&str>| {
            DeploymentLifecycleHookDetail::builder()
                .hook_id(id)
                .target_type(target)
                .set_target_arn(arn.map(str::to_string))
                .status(DeploymentLifecycleHookStatus::AwaitingAction)
                .build()
        };
        let sd = ServiceDeployment::builder()
            .status(ServiceDeploymentStatus::InProgress)
            .lifecycle_stage(ServiceDeploymentLifecycleStage::PostTestTrafficShift)
            .lifecycle_hook_details(hook(
                "user",
                DeploymentLifecycleHookTargetType::AwsLambda,
                Some("arn:aws:lambda:r:1:function:pause-for-approval"),
            ))
            .lifecycle_hook_details(hook("ours", DeploymentLifecycleHookTargetType::Pause, None))
            .target_service_revision(
                ServiceRevisionSummary::builder()
                    .requested_production_traffic_weight(0.0)
                    .requested_test_traffic_weight(100.0)
                    .build(),
            )
            .build();
        let v = sd_view(&sd);
        assert_eq!(v.status, "IN_PROGRESS");
        assert_eq!(v.stage.as_deref(), Some("POST_TEST_TRAFFIC_SHIFT"));
        assert_eq!(v.our_hook, Some(("ours".to_string(), "AWAITING_ACTION".to_string())));
        assert_eq!(v.others_waiting, 1);
        assert_eq!((v.production_weight, v.test_weight), (Some(0.0), Some(100.0)));
    }
}
