//! One driver for every strategy. Before any change, every service is checked (`check_all`):
//! it exists, takes the strategy, and has no deployment in progress (waiting a bounded time
//! for one to finish). Then each service, in parallel, goes check → update → watch → decide →
//! settle → restore (`deploy_one`), and every service ends with a report — one that could not
//! even start included. `--all-or-nothing` then rolls back the ones that went live, and the
//! run's outcome and exit code are derived once, from all the reports.
//!
//! The strategy is chosen per service, once, from its deployment controller (as ecspresso
//! does): CODE_DEPLOY → the CodeDeploy strategy (its deployment group found at the check),
//! whatever `--strategy` says; ECS → the plan's strategy. A CodeDeploy start is a
//! CreateDeployment, each poll also reads the CodeDeploy deployment, the gate's `Continue`
//! is ContinueDeployment(READY_WAIT), and the way back goes through CodeDeploy.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DeploymentConfiguration, DeploymentLifecycleHookAction};

use super::codedeploy::{self, CodeDeploy, CodeDeployApi, Follow};
use super::codedeploy_lifecycle as cdl;
use super::codedeploy_view::GroupView;
use super::ecs::{Ecs, UpdateRequest};
use super::gate::{Decision, DeployGate, Failure, Observation};
use super::plan::{DeployPlan, Poll, Strategy as Kind};
use super::report::{DeployReport, DeployRun, LifecycleLog, Outcome, Restored, Step};
use super::rolling::Rolling;
use super::settle::{Route, Settle};
use super::strategy::{Start, Strategy};
use super::traffic::TrafficShift;
use super::view::{ServiceView, now_ms, short};
use super::watch::{Watched, Watcher};
use super::{Cancel, DeployError};

/// What every service's deploy shares: the clients and the cancel flag.
pub struct Context<'a> {
    pub ecs: &'a aws_sdk_ecs::Client,
    /// CodeDeploy, for services under the CODE_DEPLOY controller.
    pub codedeploy: &'a aws_sdk_codedeploy::Client,
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
    /// Under the CODE_DEPLOY controller: the deployment group that deploys it.
    pub code_deploy: Option<GroupView>,
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

/// The CodeDeploy strategy of a service whose deployment group is `group`.
fn code_deploy(plan: &DeployPlan, group: &GroupView) -> CodeDeploy {
    CodeDeploy { group: group.clone(), settings: plan.codedeploy.clone(), gate: plan.gate.clone() }
}

/// Before any change: every service exists, takes the strategy, and is not mid-deployment.
/// The first service that fails fails the run, with nothing changed.
pub async fn check_all(ctx: &Context<'_>, plan: &DeployPlan) -> Result<Vec<Checked>, ServiceError> {
    let checks = futures_util::future::join_all(plan.services.iter().map(|service| check(ctx, plan, service))).await;
    plan.services
        .iter()
        .zip(checks)
        .map(|(service, c)| c.map_err(|source| ServiceError { service: service.clone(), source }))
        .collect()
}

/// One service's check, with the strategy its deployment controller calls for.
async fn check(ctx: &Context<'_>, plan: &DeployPlan, service: &str) -> Result<Checked, DeployError> {
    let ecs = Ecs::new(ctx.ecs);
    let view = ecs.describe_service(&plan.cluster, service).await?;
    if view.controller_is_code_deploy() {
        let cd = CodeDeployApi::new(ctx.codedeploy);
        let group = codedeploy::find_group(&cd, &plan.cluster, service, &plan.codedeploy).await?;
        let s = &code_deploy(plan, &group);
        return check_one(ctx, plan, s, service, view, Some((&cd, &group))).await;
    }
    with_strategy!(plan, |s| check_one(ctx, plan, s, service, view, None).await)
}

async fn check_one<S: Strategy>(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    strategy: &S,
    service: &str,
    mut view: ServiceView,
    code_deploy: Option<(&CodeDeployApi<'_>, &GroupView)>,
) -> Result<Checked, DeployError> {
    let started = Instant::now();
    let ecs = Ecs::new(ctx.ecs);
    strategy.check(&view)?;
    let busy_limit = plan.gate.timeout.min(Duration::from_secs(300));
    let mut pacing = plan.poll.pacing();
    let busy = |view: &ServiceView| {
        let ecs_busy = view.in_progress().then(|| view.progress_detail());
        async move {
            match (ecs_busy, code_deploy) {
                (Some(detail), _) => Ok(Some(detail)),
                (None, Some((cd, group))) => codedeploy::busy(cd, group).await,
                (None, None) => Ok(None),
            }
        }
    };
    while let Some(detail) = busy(&view).await? {
        if ctx.cancel.is_cancelled() {
            return Err(DeployError::Cancelled);
        }
        if started.elapsed() >= busy_limit {
            let waited_s = started.elapsed().as_secs();
            return Err(DeployError::Busy { waited_s, detail });
        }
        tracing::info!("{service}: waiting for the deployment already in progress to finish ({detail})");
        ctx.cancel.sleep(pacing.next(false)).await;
        view = ecs.describe_service(&plan.cluster, service).await?;
    }
    let code_deploy = code_deploy.map(|(_, g)| g.clone());
    Ok(Checked { service: service.to_string(), previous: view.task_definition, code_deploy })
}

/// Deploy `task_definition` to every checked service in parallel, then `--all-or-nothing`.
pub async fn deploy_all(ctx: &Context<'_>, plan: &DeployPlan, checked: &[Checked], task_definition: &str) -> DeployRun {
    let deploys = checked.iter().map(|c| deploy_checked(ctx, plan, c, task_definition));
    let mut reports = futures_util::future::join_all(deploys).await;
    if plan.all_or_nothing {
        all_or_nothing(ctx, plan, checked, &mut reports).await;
    }
    DeployRun::new(reports)
}

/// One service's deploy with the strategy its check chose.
async fn deploy_checked(ctx: &Context<'_>, plan: &DeployPlan, c: &Checked, task_definition: &str) -> DeployReport {
    match &c.code_deploy {
        Some(group) => deploy_one(ctx, plan, &code_deploy(plan, group), c, task_definition).await,
        None => with_strategy!(plan, |s| deploy_one(ctx, plan, s, c, task_definition).await),
    }
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
    /// A CodeDeploy deployment: its group (whether test traffic reaches green).
    group: Option<GroupView>,
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
        if let (Some(cd), Some(group)) = (&obs.code_deploy, self.group.clone()) {
            return self.code_deploy_lifecycle(cd, &group);
        }
        let Some(sd) = &obs.service_deployment else { return };
        let stage = sd.stage.as_ref().map(|s| s.as_str().to_string());
        if stage.is_some() && stage != self.last_stage {
            self.step(format!("lifecycle stage {}", stage.as_deref().unwrap_or_default()));
            self.last_stage = stage.clone();
        }
        let at = self.at();
        if self.log.record(at, stage.as_deref(), sd.production_weight, sd.test_weight) {
            self.traffic_step();
        }
    }

    /// CodeDeploy's lifecycle events (each once, in order, those passed between two polls
    /// included) and green's share of traffic.
    fn code_deploy_lifecycle(&mut self, cd: &super::codedeploy_view::CodeDeployView, group: &GroupView) {
        for stage in cdl::stages_seen(cd) {
            if self.log.stages.iter().any(|s| s.stage == stage) {
                continue;
            }
            self.step(format!("lifecycle event {stage}"));
            let at = self.at();
            self.log.record(at, Some(&stage), None, None);
        }
        let (production, test) = cdl::traffic(cd, group);
        let at = self.at();
        if self.log.record(at, None, Some(production), Some(test)) {
            self.traffic_step();
        }
    }

    fn traffic_step(&mut self) {
        if let Some(t) = self.log.traffic.last() {
            let line = format!(
                "traffic: production {}% green, test {}% green",
                t.production_green_percent, t.test_green_percent
            );
            self.step(line);
        }
    }

    fn finish(mut self, ecs: &Ecs<'_>, cd: &CodeDeployApi<'_>) -> DeployReport {
        let at = self.at();
        self.log.close(at);
        self.report.api_calls += ecs.calls() + cd.calls();
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
    let cd = CodeDeployApi::new(ctx.codedeploy);
    let report =
        DeployReport::new(&plan.cluster, &checked.service, strategy.kind(), task_definition, &checked.previous);
    let group = checked.code_deploy.clone();
    let mut run = Run { report, started: Instant::now(), log: LifecycleLog::default(), last_stage: None, group };
    let (view, watched, mut follow) = match update(ctx, &ecs, &cd, plan, strategy, &mut run).await {
        Ok(started) => started,
        Err(e) => {
            run.report.cancelled = matches!(e, DeployError::Cancelled);
            run.step(format!("not deployed: {e}"));
            run.report.not_started(e.to_string());
            return run.finish(&ecs, &cd);
        }
    };
    let leaving = watched.deployment_id.clone();
    let mut watcher = Watcher::new(&ecs, ctx.http, watched);
    let mut gate = strategy.gate();
    let end = watch(ctx, &ecs, &mut run, &mut watcher, follow.as_mut(), &mut gate, plan.poll).await;
    record_watch(&mut run, &mut watcher, &gate, &end).await;
    let previous = run.report.previous_task_definition_arn.clone();
    let restore = strategy.restore(&view);
    let (cluster, service, urls) = (&plan.cluster, &checked.service, &plan.gate.health_urls);
    let mut settle = Settle::new(&ecs, ctx.http, cluster, service, &previous, urls, plan.gate.timeout, plan.poll)
        .restoring(restore.as_ref())
        .leaving(leaving.as_deref());
    if let Some(group) = &checked.code_deploy {
        match code_deploy(plan, group).request(&view, &previous) {
            Ok(redeploy) => settle = settle.via_code_deploy(&cd, redeploy),
            Err(e) => tracing::warn!("{service}: no way back through a redeploy: {e}"),
        }
    }
    settle_end(plan, strategy, &mut run, &settle, &watcher, follow.as_ref(), end).await;
    match restore {
        Some(_) if settle.config_restored() => {
            run.step("the rollback's UpdateService also restored the service's lifecycle hooks".into())
        }
        Some(config) => restore_configuration(&ecs, plan, &mut run, config).await,
        None => {}
    }
    run.finish(&ecs, &cd)
}

/// The update: a fresh look (still nothing in progress), then UpdateService or, for a
/// CODE_DEPLOY service, CreateDeployment. Returns the view before the update, what the watch
/// follows, and the CodeDeploy deployment when there is one.
async fn update<'c, S: Strategy>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    cd: &'c CodeDeployApi<'c>,
    plan: &DeployPlan,
    strategy: &S,
    run: &mut Run,
) -> Result<(ServiceView, Watched, Option<Follow<'c>>), DeployError> {
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
    // The revision already running (`--force-new-deployment`, `refresh`): a new deployment of it.
    let redeploy = view.task_definition == target;
    let sent_at = now_ms();
    let (since_ms, deployment_id, follow) = match strategy.start(&view, &target)? {
        Start::UpdateService(update) => {
            let req = UpdateRequest {
                task_definition: Some(target.clone()),
                force: redeploy,
                configuration: update.configuration,
            };
            let primary = ecs.update_service(&plan.cluster, &service, &req).await?;
            run.report.changed = true;
            run.report.deployment_id = primary.as_ref().map(|d| d.id.clone());
            let note = update.note.map(|n| format!(" ({n})")).unwrap_or_default();
            run.step(format!("UpdateService: {} → {}{note}", short(&view.task_definition), short(&target)));
            let deployment_id = primary.as_ref().filter(|_| redeploy).map(|d| d.id.clone());
            (primary.and_then(|d| d.created_at_ms).unwrap_or(sent_at), deployment_id, None)
        }
        Start::CodeDeploy(request) => {
            if plan.strategy != Kind::Rolling {
                run.step(format!(
                    "--strategy {} does not apply: the service's CODE_DEPLOY controller deploys through CodeDeploy, \
                     whose deployment configuration shapes the traffic",
                    plan.strategy
                ));
            }
            let id = cd.create_deployment(&request).await?;
            run.report.changed = true;
            run.report.deployment_id = Some(id.clone());
            let line = match &run.group {
                Some(group) => code_deploy(plan, group).describe(&id),
                None => format!("CreateDeployment {id}"),
            };
            run.step(format!("{line}: {} → {}", short(&view.task_definition), short(&target)));
            (sent_at, None, Some(Follow::new(cd, id)))
        }
    };
    let watched = Watched {
        cluster: plan.cluster.clone(),
        service,
        task_definition: target,
        deployment_id,
        since_ms,
        known_events: view.events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(),
    };
    Ok((view, watched, follow))
}

/// Poll, decide, act, until the gate says healthy or failed, or a cancel.
async fn watch<G: DeployGate>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    run: &mut Run,
    watcher: &mut Watcher<'_>,
    mut follow: Option<&mut Follow<'_>>,
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
        let observed = match watcher.observe(&urls).await {
            Ok(mut obs) => match follow.as_deref_mut() {
                Some(f) => f.observe().await.map(|cd| {
                    obs.code_deploy = Some(cd);
                    obs
                }),
                None => Ok(obs),
            },
            Err(e) => Err(e),
        };
        let obs = match observed {
            Ok(o) => o,
            Err(e) => {
                api_errors += 1;
                tracing::warn!("{}: observing the deployment failed ({api_errors} in a row): {e}", run.report.service);
                if api_errors >= 5 {
                    let who = if follow.is_some() { "ECS and CodeDeploy" } else { "ECS" };
                    return End::Failed(Failure::Timeout { waiting_for: format!("{who} to answer ({e})") });
                }
                ctx.cancel.sleep(pacing.next(false)).await;
                continue;
            }
        };
        api_errors = 0;
        run.report.polls += 1;
        let cd_changed = match (follow.as_deref_mut(), &obs.code_deploy) {
            (Some(f), Some(v)) => f.changed(v),
            _ => false,
        };
        let changed = watcher.changed(&obs) || cd_changed;
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
                let held = obs.code_deploy.as_ref().is_some_and(|cd| cd.ready_wait());
                ctx.cancel.sleep(pacing.next(changed || obs.urgent() || held)).await;
            }
            Decision::Continue { hook_id, note } => {
                let answered = match follow.as_deref() {
                    Some(f) => {
                        f.continue_ready().await.map(|()| "ContinueDeployment(READY_WAIT): CodeDeploy may reroute")
                    }
                    None => {
                        let arn = watcher.service_deployment_arn.clone().unwrap_or_default();
                        let answer = ecs.answer_hook(&arn, &hook_id, DeploymentLifecycleHookAction::Continue).await;
                        answer.map(|()| "ContinueServiceDeployment(CONTINUE): production traffic may shift")
                    }
                };
                match answered {
                    Ok(what) => {
                        gate.continued();
                        run.step(format!("{note}; {what}"));
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

/// Settle: success is done; a failure (or cancel) is rolled back by the way ECS's (or
/// CodeDeploy's) state allows, unless `--no-rollback` (and ECS is not rolling back by itself
/// anyway).
async fn settle_end<S: Strategy>(
    plan: &DeployPlan,
    strategy: &S,
    run: &mut Run,
    settle: &Settle<'_>,
    watcher: &Watcher<'_>,
    follow: Option<&Follow<'_>>,
    end: End,
) {
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
        let previous = &run.report.previous_task_definition_arn;
        run.report.state = Some(match follow {
            Some(f) => no_rollback_code_deploy(watcher.last(), &f.deployment, &target),
            None => no_rollback_state(watcher.last(), &target, previous),
        });
        return;
    }
    run.step(format!("rolling back to {}", short(settle.to)));
    run.report.rollback_started_at_ms = Some(now_ms());
    let sd = watcher.service_deployment_arn.as_deref();
    let deployment = follow.map(|f| f.deployment.as_str()).or(sd);
    let redeploy = run.report.previous_task_definition_arn == target;
    let route = strategy.route(failure.as_ref(), watcher.last(), deployment, redeploy);
    let outcome = settle.rollback(route).await;
    if matches!(outcome, Ok((_, Restored::Healthy))) {
        let at = run.at();
        run.log.back_to_blue(at);
    }
    let still_running = format!("the service may still run {}", short(&target));
    let line = run.report.record_rollback(outcome, Some(still_running));
    run.step(line);
    let last = match (follow, sd) {
        (Some(f), _) => f.final_line(plan.poll).await,
        (None, Some(arn)) => settle.final_status(arn).await.map(|status| format!("service deployment {status}")),
        (None, None) => None,
    };
    if let Some(line) = last {
        run.step(line);
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

/// `--no-rollback` under CodeDeploy: the deployment as it was left, and how to end it.
fn no_rollback_code_deploy(last: Option<&Observation>, deployment: &str, target: &str) -> String {
    let cd = last.and_then(|o| o.code_deploy.as_ref());
    let held = cd.is_some_and(|c| c.ready_wait());
    let status = cd.map(|c| c.status_name().to_string()).unwrap_or_else(|| "unknown".into());
    let mut line = format!("--no-rollback: CodeDeploy deployment {deployment} of {} is left {status}", short(target));
    if held {
        line.push_str(" (held Ready on test traffic; CodeDeploy stops it when the ready wait ends)");
    }
    line.push_str(&format!(
        "; end it with `aws deploy continue-deployment --deployment-id {deployment}` or `aws deploy stop-deployment \
         --deployment-id {deployment} --auto-rollback-enabled`"
    ));
    line
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

/// `--all-or-nothing`: when any service did not succeed, send the ones that did back (a
/// CODE_DEPLOY one by a CodeDeploy deployment of its previous task definition).
async fn all_or_nothing(ctx: &Context<'_>, plan: &DeployPlan, checked: &[Checked], reports: &mut [DeployReport]) {
    if reports.iter().all(|r| r.result == Outcome::Succeeded) {
        return;
    }
    for r in reports.iter_mut().filter(|r| r.result == Outcome::Succeeded) {
        let (ecs, cd) = (Ecs::new(ctx.ecs), CodeDeployApi::new(ctx.codedeploy));
        let previous = r.previous_task_definition_arn.clone();
        let urls = &plan.gate.health_urls;
        let mut settle =
            Settle::new(&ecs, ctx.http, &plan.cluster, &r.service, &previous, urls, plan.gate.timeout, plan.poll);
        let group = checked.iter().find(|c| c.service == r.service).and_then(|c| c.code_deploy.as_ref());
        let redeploy = previous == r.task_definition_arn;
        let outcome = match group {
            Some(group) => match ecs.describe_service(&plan.cluster, &r.service).await {
                Ok(view) => match code_deploy(plan, group).request(&view, &previous) {
                    Ok(request) => {
                        settle = settle.via_code_deploy(&cd, request);
                        settle.rollback(Route::Redeploy).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            None => settle.rollback(if redeploy { Route::NoWayBack } else { Route::Update }).await,
        };
        r.failure = Some("--all-or-nothing: another service failed".into());
        let line = r.record_rollback(outcome, None);
        tracing::info!("{}: {line}", r.service);
        r.timeline.push(Step { at_ms: now_ms().saturating_sub(r.started_at_ms), what: line });
        r.api_calls += ecs.calls() + cd.calls();
    }
}

/// `deployer rollback`: send `service` back to `to` (default: the ACTIVE revision of its
/// family just below the one it runs) and confirm. A CODE_DEPLOY service goes back by a
/// CodeDeploy deployment of `to` through the deployment group that deploys it. Returns (from,
/// to, how it ended).
pub async fn roll_back(
    ctx: &Context<'_>,
    cluster: &str,
    service: &str,
    to: Option<String>,
    poll: Poll,
) -> Result<(String, String, Restored), DeployError> {
    let (ecs, cd) = (Ecs::new(ctx.ecs), CodeDeployApi::new(ctx.codedeploy));
    let view = ecs.describe_service(cluster, service).await?;
    let from = view.task_definition.clone();
    let to = match to {
        Some(to) => to,
        None => ecs.previous_revision(&from).await?,
    };
    let mut settle = Settle::new(&ecs, ctx.http, cluster, service, &to, &[], Duration::from_secs(900), poll);
    let route = if view.controller_is_code_deploy() {
        let settings = super::plan::CodeDeploySettings::default();
        let group = codedeploy::find_group(&cd, cluster, service, &settings).await?;
        let strategy = CodeDeploy { group, settings, gate: super::plan::GateConfig::default() };
        settle = settle.via_code_deploy(&cd, strategy.request(&view, &to)?);
        Route::Redeploy
    } else {
        Route::Update
    };
    let (_, restored) = settle.rollback(route).await?;
    Ok((from, to, restored))
}
