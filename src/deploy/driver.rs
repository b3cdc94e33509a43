//! One driver for every strategy. Before any change, every service is checked (`check_all`):
//! it exists, takes the strategy, and has no deployment in progress (waiting a bounded time
//! for one to finish). Then each service, in parallel, goes check → update → watch → decide →
//! settle → restore (`deploy_one`), and every service ends with a report — one that could not
//! even start included. `--all-or-nothing` then rolls back the ones that went live, and the
//! run's outcome and exit code are derived once, from all the reports.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DeploymentConfiguration, DeploymentLifecycleHookAction};

use super::ecs::{Ecs, UpdateRequest};
use super::gate::{Decision, DeployGate, Failure, Observation};
use super::plan::{DeployPlan, Poll, Strategy as Kind};
use super::report::{DeployReport, DeployRun, LifecycleLog, Outcome, Restored, Step};
use super::rolling::Rolling;
use super::settle::{self, Route, Settle};
use super::strategy::Strategy;
use super::traffic::TrafficShift;
use super::view::{ServiceView, now_ms, short};
use super::watch::{Watched, Watcher};
use super::{Cancel, DeployError};

/// What every service's deploy shares: the clients and the cancel flag.
pub struct Context<'a> {
    pub ecs: &'a aws_sdk_ecs::Client,
    pub http: &'a reqwest::Client,
    pub cancel: &'a Cancel,
}

/// A deploy error of one service, named once.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {source}")]
pub struct ServiceError {
    pub service: String,
    #[source]
    pub source: DeployError,
}

/// A service that passed the checks.
#[derive(Debug, Clone)]
pub struct Checked {
    pub service: String,
    /// The revision it runs: where a rollback returns to.
    pub previous: String,
}

/// Run `$body` with `$s` bound to the plan's strategy (the trait is not object-safe: its
/// gate is an associated type, so each strategy gets its own monomorphic driver).
macro_rules! with_strategy {
    ($plan:expr, |$s:ident| $body:expr) => {
        match $plan.strategy {
            Kind::Rolling => {
                let $s = &Rolling { gate: $plan.gate_for_strategy() };
                $body
            }
            kind => {
                let $s = &TrafficShift { kind, settings: $plan.shift.clone(), gate: $plan.gate_for_strategy() };
                $body
            }
        }
    };
}

/// Before any change: every service exists, takes the strategy, and is not mid-deployment.
/// The first service that fails fails the run, with nothing changed.
pub async fn check_all(ctx: &Context<'_>, plan: &DeployPlan) -> Result<Vec<Checked>, ServiceError> {
    let checks = with_strategy!(plan, |s| {
        futures_util::future::join_all(plan.services.iter().map(|service| check_one(ctx, plan, s, service))).await
    });
    plan.services
        .iter()
        .zip(checks)
        .map(|(service, c)| c.map_err(|source| ServiceError { service: service.clone(), source }))
        .collect()
}

async fn check_one<S: Strategy>(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    strategy: &S,
    service: &str,
) -> Result<Checked, DeployError> {
    let started = Instant::now();
    let ecs = Ecs::new(ctx.ecs);
    let mut view = ecs.describe_service(&plan.cluster, service).await?;
    strategy.check(&view)?;
    let busy_limit = plan.gate.timeout.min(Duration::from_secs(300));
    let mut pacing = plan.poll.pacing();
    while view.in_progress() {
        if ctx.cancel.is_cancelled() {
            return Err(DeployError::Cancelled);
        }
        if started.elapsed() >= busy_limit {
            let waited_s = started.elapsed().as_secs();
            return Err(DeployError::Busy { waited_s, detail: view.progress_detail() });
        }
        tracing::info!("{service}: waiting for the deployment already in progress to finish");
        ctx.cancel.sleep(pacing.next(false)).await;
        view = ecs.describe_service(&plan.cluster, service).await?;
    }
    Ok(Checked { service: service.to_string(), previous: view.task_definition })
}

/// Deploy `task_definition` to every checked service in parallel, then `--all-or-nothing`.
pub async fn deploy_all(ctx: &Context<'_>, plan: &DeployPlan, checked: &[Checked], task_definition: &str) -> DeployRun {
    let mut reports = with_strategy!(plan, |s| {
        futures_util::future::join_all(checked.iter().map(|c| deploy_one(ctx, plan, s, c, task_definition))).await
    });
    if plan.all_or_nothing {
        all_or_nothing(ctx, plan, &mut reports).await;
    }
    DeployRun::new(reports)
}

/// How the watch ended.
enum End {
    Healthy,
    Failed(Failure),
    Cancelled,
}

/// One service's deploy in progress: its report, timeline clock and lifecycle log.
struct Run {
    report: DeployReport,
    started: Instant,
    log: LifecycleLog,
    last_stage: Option<String>,
}

impl Run {
    fn at(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn step(&mut self, what: String) {
        tracing::info!("{}: {what}", self.report.service);
        self.report.timeline.push(Step { at_ms: self.at(), what });
    }

    /// Lifecycle stages and traffic splits as observed (traffic shifts only show them).
    fn lifecycle(&mut self, obs: &Observation) {
        let Some(sd) = &obs.service_deployment else { return };
        let stage = sd.stage.as_ref().map(|s| s.as_str().to_string());
        if stage.is_some() && stage != self.last_stage {
            self.step(format!("lifecycle stage {}", stage.as_deref().unwrap_or_default()));
            self.last_stage = stage.clone();
        }
        let at = self.at();
        if self.log.record(at, stage.as_deref(), sd.production_weight, sd.test_weight)
            && let Some(t) = self.log.traffic.last()
        {
            let line = format!(
                "traffic: production {}% green, test {}% green",
                t.production_green_percent, t.test_green_percent
            );
            self.step(line);
        }
    }

    fn finish(mut self, ecs: &Ecs<'_>) -> DeployReport {
        let at = self.at();
        self.log.close(at);
        self.report.api_calls += ecs.calls();
        self.report.lifecycle = std::mem::take(&mut self.log.stages);
        self.report.traffic = std::mem::take(&mut self.log.traffic);
        self.report
    }
}

/// check → update → watch → decide → settle → restore, for one service.
async fn deploy_one<S: Strategy>(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    strategy: &S,
    checked: &Checked,
    task_definition: &str,
) -> DeployReport {
    let ecs = Ecs::new(ctx.ecs);
    let report =
        DeployReport::new(&plan.cluster, &checked.service, strategy.kind(), task_definition, &checked.previous);
    let mut run = Run { report, started: Instant::now(), log: LifecycleLog::default(), last_stage: None };
    let (view, watched) = match update(ctx, &ecs, plan, strategy, &mut run).await {
        Ok(started) => started,
        Err(e) => {
            run.report.cancelled = matches!(e, DeployError::Cancelled);
            run.step(format!("not deployed: {e}"));
            run.report.not_started(e.to_string());
            return run.finish(&ecs);
        }
    };
    let mut watcher = Watcher::new(&ecs, ctx.http, watched);
    let mut gate = strategy.gate();
    let end = watch(ctx, &ecs, &mut run, &mut watcher, &mut gate, plan.poll).await;
    record_watch(&mut run, &mut watcher, &gate, &end).await;
    let previous = run.report.previous_task_definition_arn.clone();
    let restore = strategy.restore(&view);
    let (cluster, service, urls) = (&plan.cluster, &checked.service, &plan.gate.health_urls);
    let settle = Settle::new(&ecs, ctx.http, cluster, service, &previous, urls, plan.gate.timeout, plan.poll)
        .restoring(restore.as_ref());
    settle_end(plan, &mut run, &settle, &watcher, end).await;
    match restore {
        Some(_) if settle.config_restored() => {
            run.step("the rollback's UpdateService also restored the service's lifecycle hooks".into())
        }
        Some(config) => restore_configuration(&ecs, plan, &mut run, config).await,
        None => {}
    }
    run.finish(&ecs)
}

/// The update: a fresh look (still nothing in progress), then UpdateService. Returns the view
/// before the update and what the watch follows.
async fn update<S: Strategy>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    plan: &DeployPlan,
    strategy: &S,
    run: &mut Run,
) -> Result<(ServiceView, Watched), DeployError> {
    if ctx.cancel.is_cancelled() {
        return Err(DeployError::Cancelled);
    }
    let service = run.report.service.clone();
    let view = ecs.describe_service(&plan.cluster, &service).await?;
    if view.in_progress() {
        let detail = format!("one started after the check: {}", view.progress_detail());
        return Err(DeployError::Busy { waited_s: 0, detail });
    }
    let target = run.report.task_definition_arn.clone();
    run.report.previous_task_definition_arn = view.task_definition.clone();
    let update = strategy.update(&view);
    let req = UpdateRequest {
        task_definition: Some(target.clone()),
        force: view.task_definition == target,
        configuration: update.configuration,
    };
    let sent_at = now_ms();
    let primary = ecs.update_service(&plan.cluster, &service, &req).await?;
    run.report.changed = true;
    run.report.deployment_id = primary.as_ref().map(|d| d.id.clone());
    let note = update.note.map(|n| format!(" ({n})")).unwrap_or_default();
    run.step(format!("UpdateService: {} → {}{note}", short(&view.task_definition), short(&target)));
    let watched = Watched {
        cluster: plan.cluster.clone(),
        service,
        task_definition: target,
        since_ms: primary.and_then(|d| d.created_at_ms).unwrap_or(sent_at),
        known_events: view.events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(),
    };
    Ok((view, watched))
}

/// Poll, decide, act, until the gate says healthy or failed, or a cancel.
async fn watch<G: DeployGate>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    run: &mut Run,
    watcher: &mut Watcher<'_>,
    gate: &mut G,
    poll: Poll,
) -> End {
    let mut pacing = poll.pacing();
    let (mut api_errors, mut last_wait) = (0, String::new());
    loop {
        if ctx.cancel.is_cancelled() {
            run.step("cancelled (SIGINT/SIGTERM)".into());
            return End::Cancelled;
        }
        let urls = gate.probe_urls(watcher.last());
        let obs = match watcher.observe(&urls).await {
            Ok(o) => o,
            Err(e) => {
                api_errors += 1;
                tracing::warn!("{}: observing the deployment failed ({api_errors} in a row): {e}", run.report.service);
                if api_errors >= 5 {
                    return End::Failed(Failure::Timeout { waiting_for: format!("ECS to answer ({e})") });
                }
                ctx.cancel.sleep(pacing.next(false)).await;
                continue;
            }
        };
        api_errors = 0;
        run.report.polls += 1;
        let changed = watcher.changed(&obs);
        run.lifecycle(&obs);
        let decision = gate.observe(&obs);
        if let Some(note) = gate.take_note() {
            run.step(note);
        }
        match decision {
            Decision::Wait(what) => {
                if what != last_wait {
                    run.step(format!("waiting: {what}"));
                    last_wait = what;
                }
                ctx.cancel.sleep(pacing.next(changed || obs.urgent())).await;
            }
            Decision::Continue { hook_id, note } => {
                let arn = watcher.service_deployment_arn.clone().unwrap_or_default();
                match ecs.answer_hook(&arn, &hook_id, DeploymentLifecycleHookAction::Continue).await {
                    Ok(()) => {
                        gate.continued();
                        run.step(format!("{note}; ContinueServiceDeployment(CONTINUE): production traffic may shift"));
                    }
                    Err(e) => {
                        api_errors += 1;
                        tracing::warn!("{}: {e}", run.report.service);
                        if api_errors >= 5 {
                            return End::Failed(Failure::Timeout { waiting_for: format!("ECS to continue ({e})") });
                        }
                    }
                }
                ctx.cancel.sleep(pacing.next(true)).await;
            }
            Decision::Healthy => {
                run.step("healthy: the gate passed".into());
                return End::Healthy;
            }
            Decision::Failed(f) => {
                run.step(format!("gate failed{}: {f}", gate.phase_note()));
                return End::Failed(f);
            }
        }
    }
}

/// What the watch leaves for the report: the service deployment, events, stopped tasks (one
/// more look after a failure), the failing probe.
async fn record_watch<G: DeployGate>(run: &mut Run, watcher: &mut Watcher<'_>, gate: &G, end: &End) {
    let failed = !matches!(end, End::Healthy);
    if failed {
        watcher.sweep().await;
    }
    if let Some(arn) = &watcher.service_deployment_arn {
        run.report.deployment_id = Some(arn.clone());
    }
    run.report.events = watcher.events.clone();
    run.report.stopped_tasks = watcher.stopped.clone();
    run.report.failure_signal_at_ms = watcher.first_failure_ms;
    run.report.failing_probe = gate.last_bad_probe().filter(|_| failed).map(|p| p.to_string());
}

/// Settle: success is done; a failure (or cancel) is rolled back by the way ECS's state
/// allows, unless `--no-rollback` (and ECS is not rolling back by itself anyway).
async fn settle_end(plan: &DeployPlan, run: &mut Run, settle: &Settle<'_>, watcher: &Watcher<'_>, end: End) {
    let target = run.report.task_definition_arn.clone();
    let failure = match end {
        End::Healthy => {
            run.report.final_task_definition_arn = Some(target);
            return;
        }
        End::Failed(f) => Some(f),
        End::Cancelled => {
            run.report.cancelled = true;
            None
        }
    };
    run.report.failure =
        Some(failure.as_ref().map(|f| f.to_string()).unwrap_or_else(|| "cancelled before the gate passed".into()));
    if plan.no_rollback && !failure.as_ref().is_some_and(Failure::ecs_rolls_back) {
        run.report.result = Outcome::Failed;
        run.report.state = Some(no_rollback_state(watcher.last(), &target, &run.report.previous_task_definition_arn));
        return;
    }
    run.step(format!("rolling back to {}", short(settle.to)));
    run.report.rollback_started_at_ms = Some(now_ms());
    let sd = watcher.service_deployment_arn.as_deref();
    let route = settle::route(failure.as_ref(), watcher.last(), sd);
    let outcome = settle.rollback(route).await;
    if matches!(outcome, Ok((_, Restored::Healthy))) {
        let at = run.at();
        run.log.back_to_blue(at);
    }
    let still_running = format!("the service may still run {}", short(&target));
    let line = run.report.record_rollback(outcome, Some(still_running));
    run.step(line);
    if let Some(status) = match sd {
        Some(arn) => settle.final_status(arn).await,
        None => None,
    } {
        run.step(format!("service deployment {status}"));
    }
}

fn no_rollback_state(last: Option<&Observation>, target: &str, previous: &str) -> String {
    match last.and_then(Observation::held_by_us) {
        Some(_) => format!(
            "--no-rollback: {} is held at POST_TEST_TRAFFIC_SHIFT (production still on {}); continue or roll back \
             with `aws ecs continue-service-deployment`, or ECS rolls it back when deployer's hook times out",
            short(target),
            short(previous)
        ),
        None => format!("--no-rollback: the service stays on {} as ECS left it", short(target)),
    }
}

/// Put the service's own configuration back (deployer's hook off), so the next deployment
/// does not wait for a deployer that is gone.
async fn restore_configuration(ecs: &Ecs<'_>, plan: &DeployPlan, run: &mut Run, config: DeploymentConfiguration) {
    let req = UpdateRequest { configuration: Some(config), ..UpdateRequest::default() };
    let line = match ecs.update_service(&plan.cluster, &run.report.service, &req).await {
        Ok(_) => "restored the service's lifecycle hooks (deployer's PAUSE hook removed)".to_string(),
        Err(e) => format!(
            "could not remove deployer's PAUSE hook from the service ({e}); the next deployment will wait at \
             POST_TEST_TRAFFIC_SHIFT until continued or until the hook times out"
        ),
    };
    run.step(line);
}

/// `--all-or-nothing`: when any service did not succeed, send the ones that did back.
async fn all_or_nothing(ctx: &Context<'_>, plan: &DeployPlan, reports: &mut [DeployReport]) {
    if reports.iter().all(|r| r.result == Outcome::Succeeded) {
        return;
    }
    for r in reports.iter_mut().filter(|r| r.result == Outcome::Succeeded) {
        let ecs = Ecs::new(ctx.ecs);
        let previous = r.previous_task_definition_arn.clone();
        let urls = &plan.gate.health_urls;
        let settle =
            Settle::new(&ecs, ctx.http, &plan.cluster, &r.service, &previous, urls, plan.gate.timeout, plan.poll);
        let outcome = settle.rollback(Route::Update).await;
        r.failure = Some("--all-or-nothing: another service failed".into());
        let line = r.record_rollback(outcome, None);
        tracing::info!("{}: {line}", r.service);
        r.timeline.push(Step { at_ms: now_ms().saturating_sub(r.started_at_ms), what: line });
        r.api_calls += ecs.calls();
    }
}

/// `deployer rollback`: send `service` back to `to` (default: the ACTIVE revision of its
/// family just below the one it runs) and confirm. Returns (from, to, how it ended).
pub async fn roll_back(
    ctx: &Context<'_>,
    cluster: &str,
    service: &str,
    to: Option<String>,
    poll: Poll,
) -> Result<(String, String, Restored), DeployError> {
    let ecs = Ecs::new(ctx.ecs);
    let from = ecs.describe_service(cluster, service).await?.task_definition;
    let to = match to {
        Some(to) => to,
        None => ecs.previous_revision(&from).await?,
    };
    let settle = Settle::new(&ecs, ctx.http, cluster, service, &to, &[], Duration::from_secs(900), poll);
    let (_, restored) = settle.rollback(Route::Update).await?;
    Ok((from, to, restored))
}
