//! One driver for every strategy. Before any change, every service is checked (`check_all`,
//! DescribeServices 10 at a time): it exists, takes the strategy, and has no deployment in
//! progress (waiting a bounded time for one to finish). Then each service, in parallel, goes
//! check → update → watch → decide → settle → restore (`deploy_one`), and every service ends
//! with a report — one that could not even start included. A fleet shares one watcher per
//! cluster (`watch::Fleet`, its rounds run beside the services) and one limiter of ECS's API
//! buckets (every call waits for its token); the updates are launched in order (`launch`):
//! a fresh DescribeServices per 10 services, then each UpdateService on its own token, with
//! jittered starts. With `--all-or-nothing` the first service that fails sets the run's fate:
//! services not updated yet are left alone, the ones still watching stop, and every one that
//! changed rolls back at once, concurrently (bounded by the limiter). The run's outcome and
//! exit code are derived once, from all the reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DeploymentConfiguration, DeploymentLifecycleHookAction};
use rand::Rng;
use tokio::sync::{oneshot, watch};

use super::ecs::{Ecs, Turn, UpdateRequest};
use super::gate::{Decision, DeployGate, Failure, Observation};
use super::plan::{DeployPlan, Poll, Strategy as Kind};
use super::report::{ApiUsage, DeployReport, DeployRun, LifecycleLog, Outcome, Restored, Step};
use super::rolling::Rolling;
use super::settle::{self, Route, Settle};
use super::strategy::Strategy;
use super::traffic::TrafficShift;
use super::view::{ServiceView, now_ms, short};
use super::watch::{Fleet, Watched, Watcher};
use super::{Cancel, DeployError};
use crate::aws::limiter::Limiter;

/// What every service's deploy shares: the clients, the cancel flag, and the limiter of
/// ECS's API buckets.
pub struct Context<'a> {
    pub ecs: &'a aws_sdk_ecs::Client,
    pub http: &'a reqwest::Client,
    pub cancel: &'a Cancel,
    pub limiter: &'a Limiter,
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
    /// The revision it goes to, when not the run's own (deployer.toml's per-service
    /// `task-definition` / `container`).
    pub task_definition: Option<String>,
}

/// Run `$body` with `$make` bound to a function from a service's name to its instance of the
/// plan's strategy (each service has its own gate settings). The trait is not object-safe:
/// its gate is an associated type, so each strategy gets its own monomorphic driver.
macro_rules! with_strategy {
    ($plan:expr, |$make:ident| $body:expr) => {
        match $plan.strategy {
            Kind::Rolling => {
                let $make = |service: &str| Rolling { gate: $plan.gate_of(service) };
                $body
            }
            kind => {
                let $make =
                    |service: &str| TrafficShift { kind, settings: $plan.shift.clone(), gate: $plan.gate_of(service) };
                $body
            }
        }
    };
}

/// A batch error names the first of its services, and how many more it was for.
fn batch_error(services: &[String], source: DeployError) -> ServiceError {
    let service = match services {
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
        [] => String::new(),
    };
    ServiceError { service, source }
}

/// Before any change: every service exists, takes the strategy, and is not mid-deployment
/// (DescribeServices 10 at a time; the busy ones again until they are not, bounded). The
/// first service (in the order given) that fails fails the run, with nothing changed.
pub async fn check_all(ctx: &Context<'_>, plan: &DeployPlan) -> Result<Vec<Checked>, ServiceError> {
    let started = Instant::now();
    let ecs = Ecs::new(ctx.ecs, ctx.limiter).labelled(format!("cluster {} (checks)", plan.cluster));
    let busy_limit = plan.gate.timeout.min(Duration::from_secs(300));
    let mut pacing = plan.poll.pacing();
    let mut pending: Vec<String> = plan.services.clone();
    let mut checked: HashMap<String, Checked> = HashMap::new();
    loop {
        let mut views = ecs.describe_services(&plan.cluster, &pending).await.map_err(|e| batch_error(&pending, e))?;
        let mut busy = Vec::new();
        for service in &pending {
            let failed = |source| ServiceError { service: service.clone(), source };
            let view = views.remove(service).unwrap_or_else(|| Err(DeployError::Precondition("not described".into())));
            let view = view.map_err(failed)?;
            with_strategy!(plan, |make| make(service).check(&view)).map_err(failed)?;
            if !view.in_progress() {
                let c = Checked { service: service.clone(), previous: view.task_definition, task_definition: None };
                checked.insert(service.clone(), c);
                continue;
            }
            if ctx.cancel.is_cancelled() {
                return Err(failed(DeployError::Cancelled));
            }
            if started.elapsed() >= busy_limit {
                let waited_s = started.elapsed().as_secs();
                return Err(failed(DeployError::Busy { waited_s, detail: view.progress_detail() }));
            }
            tracing::info!("{service}: waiting for the deployment already in progress to finish");
            busy.push(service.clone());
        }
        if busy.is_empty() {
            break;
        }
        pending = busy;
        ctx.cancel.sleep(pacing.next(false)).await;
    }
    Ok(plan.services.iter().filter_map(|s| checked.remove(s)).collect())
}

/// Deploy to every checked service in parallel (each to its own revision, else
/// `task_definition`), one watcher for the cluster, the updates launched in order.
pub async fn deploy_all(ctx: &Context<'_>, plan: &DeployPlan, checked: &[Checked], task_definition: &str) -> DeployRun {
    let fleet = Fleet::new(ctx.ecs, ctx.limiter, &plan.cluster, plan.poll, ctx.cancel, checked.len());
    let fate = Fate::new(plan.all_or_nothing, checked.len());
    let launcher = Ecs::new(ctx.ecs, ctx.limiter).labelled(format!("cluster {} (updates)", plan.cluster));
    let mut gos = HashMap::new();
    let mut receivers = Vec::new();
    for c in checked {
        let (tx, rx) = oneshot::channel();
        gos.insert(c.service.clone(), tx);
        receivers.push(rx);
    }
    let order: Vec<String> = checked.iter().map(|c| c.service.clone()).collect();
    let (_, _, mut reports) = with_strategy!(plan, |make| {
        let deploys = checked.iter().zip(receivers).map(|(c, go)| {
            let (fleet, fate, make) = (&fleet, &fate, &make);
            async move {
                let strategy = make(&c.service);
                let td = c.task_definition.as_deref().unwrap_or(task_definition);
                let shared = Shared { fleet, fate, go };
                let report = deploy_one(ctx, plan, &strategy, c, td, shared).await;
                fleet.finished();
                report
            }
        });
        tokio::join!(
            fleet.run(),
            launch(ctx, plan, &launcher, &order, gos, &fate),
            futures_util::future::join_all(deploys)
        )
    });
    // Each service's share of the calls made for all: the rounds it was read in, and the
    // launcher's look before its update.
    let stats = fleet.stats();
    let launch_share = launcher.calls() as f64 / checked.len().max(1) as f64;
    for r in &mut reports {
        let share = stats.shares.get(&r.service).copied().unwrap_or(0.0) + launch_share;
        r.api_calls += share.round() as u32;
    }
    let usage = ctx.limiter.usage();
    let mut run = DeployRun::new(reports);
    run.api = Some(ApiUsage {
        calls: usage.calls,
        throttled: usage.throttled,
        waited_ms: usage.waited.as_millis() as u64,
        rounds: stats.rounds,
        round_calls: stats.calls,
        most_services_in_a_round: stats.most_services,
    });
    run
}

/// What a service's deploy shares with the others: the cluster's watcher, the run's fate,
/// and the launcher's go-ahead for its UpdateService.
struct Shared<'f, 'a> {
    fleet: &'f Fleet<'a>,
    fate: &'f Fate,
    go: oneshot::Receiver<Go>,
}

/// The launcher's go-ahead: a fresh look at the service and an UpdateService token.
struct Go {
    view: Result<ServiceView, DeployError>,
    turn: Turn,
}

/// The gap before each UpdateService after the first, at most (uniformly drawn): starts are
/// jittered so a fleet's new tasks do not all begin in the same instant.
const START_JITTER: Duration = Duration::from_millis(50);

/// Launch the updates in order: per 10 services one DescribeServices (the look just before
/// the update: still nothing in progress), then each service's UpdateService token (the
/// limiter paces them: ECS's burst at once, then its rate), with a jittered gap between
/// starts. Stops launching when the run is cancelled or its fate is sealed: the services not
/// launched are told so and never change.
async fn launch(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    ecs: &Ecs<'_>,
    order: &[String],
    mut gos: HashMap<String, oneshot::Sender<Go>>,
    fate: &Fate,
) {
    let mut first = true;
    for chunk in order.chunks(super::ecs::SERVICES_PER_CALL) {
        if ctx.cancel.is_cancelled() || fate.aborted().is_some() {
            return;
        }
        let mut views = match ecs.describe_services(&plan.cluster, chunk).await {
            Ok(v) => v.into_iter().map(|(k, v)| (k, Some(v))).collect::<BTreeMap<_, _>>(),
            Err(e) => {
                let text = e.to_string();
                chunk.iter().map(|s| (s.clone(), Some(Err(DeployError::Precondition(text.clone()))))).collect()
            }
        };
        for service in chunk {
            if !first {
                let gap = Duration::from_millis(rand::rng().random_range(0..=START_JITTER.as_millis() as u64));
                ctx.cancel.sleep(gap).await;
            }
            first = false;
            if ctx.cancel.is_cancelled() || fate.aborted().is_some() {
                return;
            }
            let turn = ecs.update_turn().await;
            let view = views
                .get_mut(service)
                .and_then(Option::take)
                .unwrap_or_else(|| Err(DeployError::Precondition("ECS did not describe it before the update".into())));
            if let Some(tx) = gos.remove(service) {
                let _ = tx.send(Go { view, turn });
            }
        }
    }
}

/// `--all-or-nothing`: the first failure seals the run's fate; until then, how many services
/// are healthy. Without the flag nothing is ever sealed.
struct Fate {
    all_or_nothing: bool,
    total: usize,
    first: Mutex<Option<String>>,
    /// (services healthy, sealed)
    state: watch::Sender<(usize, bool)>,
    abort: Cancel,
}

impl Fate {
    fn new(all_or_nothing: bool, total: usize) -> Fate {
        Fate {
            all_or_nothing,
            total,
            first: Mutex::new(None),
            state: watch::Sender::new((0, false)),
            abort: Cancel::default(),
        }
    }

    /// `service` failed (or never started): with `--all-or-nothing`, everyone goes back.
    fn fail(&self, service: &str) {
        if !self.all_or_nothing {
            return;
        }
        self.first.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| service.to_string());
        self.state.send_modify(|s| s.1 = true);
        self.abort.cancel();
    }

    /// The service whose failure sealed the run, once sealed.
    fn aborted(&self) -> Option<String> {
        if !self.abort.is_cancelled() {
            return None;
        }
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A service went live; with `--all-or-nothing`, wait until every one has (true) or one
    /// failed (false).
    async fn healthy(&self) -> bool {
        self.state.send_modify(|s| s.0 += 1);
        if !self.all_or_nothing {
            return true;
        }
        let mut rx = self.state.subscribe();
        let total = self.total;
        match rx.wait_for(|(healthy, sealed)| *sealed || *healthy >= total).await {
            Ok(s) => !s.1,
            Err(_) => false,
        }
    }
}

/// How the watch ended.
enum End {
    Healthy,
    Failed(Failure),
    Cancelled,
    /// `--all-or-nothing`: another service failed first.
    Aborted,
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
    shared: Shared<'_, '_>,
) -> DeployReport {
    let Shared { fleet, fate, go } = shared;
    let ecs = Ecs::new(ctx.ecs, ctx.limiter).labelled(checked.service.clone());
    let report =
        DeployReport::new(&plan.cluster, &checked.service, strategy.kind(), task_definition, &checked.previous);
    let mut run = Run { report, started: Instant::now(), log: LifecycleLog::default(), last_stage: None };
    let (view, watched) = match update(ctx, &ecs, plan, strategy, &mut run, go, fate).await {
        Ok(started) => started,
        Err(e) => {
            run.report.cancelled = matches!(e, DeployError::Cancelled);
            run.step(format!("not deployed: {e}"));
            run.report.not_started(e.to_string());
            fate.fail(&checked.service);
            return run.finish(&ecs);
        }
    };
    let leaving = watched.deployment_id.clone();
    let mut watcher = fleet.watch(&ecs, ctx.http, watched);
    let mut gate = strategy.gate();
    let end = watch(ctx, &ecs, &mut run, &mut watcher, &mut gate, fate).await;
    if !matches!(end, End::Healthy | End::Aborted) {
        fate.fail(&checked.service);
    }
    record_watch(&mut run, &mut watcher, &gate, &end).await;
    let previous = run.report.previous_task_definition_arn.clone();
    let restore = strategy.restore(&view);
    let gate_config = plan.gate_of(&checked.service);
    let (cluster, service, urls) = (&plan.cluster, &checked.service, &gate_config.health_urls);
    let settle = Settle::new(&ecs, ctx.http, cluster, service, &previous, urls, plan.gate.timeout, plan.poll)
        .restoring(restore.as_ref())
        .leaving(leaving.as_deref())
        .watching(fleet);
    settle_end(plan, &mut run, &settle, &watcher, end).await;
    drop(watcher);
    if run.report.result == Outcome::Succeeded && !fate.healthy().await {
        all_or_nothing(&mut run, &settle, fate).await;
    }
    match restore {
        Some(_) if settle.config_restored() => {
            run.step("the rollback's UpdateService also restored the service's lifecycle hooks".into())
        }
        Some(config) => restore_configuration(&ecs, plan, &mut run, config).await,
        None => {}
    }
    run.finish(&ecs)
}

/// The update: the launcher's go-ahead with a fresh look (still nothing in progress), then
/// UpdateService on the token it took. Returns the view before the update and what the
/// watch follows.
async fn update<S: Strategy>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    plan: &DeployPlan,
    strategy: &S,
    run: &mut Run,
    go: oneshot::Receiver<Go>,
    fate: &Fate,
) -> Result<(ServiceView, Watched), DeployError> {
    let not_launched = || match fate.aborted() {
        Some(first) => DeployError::Precondition(format!(
            "--all-or-nothing: {first} failed before this service was updated, so it was left as it was"
        )),
        None => DeployError::Cancelled,
    };
    let Ok(Go { view, turn }) = go.await else { return Err(not_launched()) };
    if ctx.cancel.is_cancelled() || fate.aborted().is_some() {
        return Err(not_launched());
    }
    let service = run.report.service.clone();
    let view = view?;
    if view.in_progress() {
        let detail = format!("one started after the check: {}", view.progress_detail());
        return Err(DeployError::Busy { waited_s: 0, detail });
    }
    let target = run.report.task_definition_arn.clone();
    run.report.previous_task_definition_arn = view.task_definition.clone();
    let update = strategy.update(&view);
    // The revision already running (`--force-new-deployment`, `refresh`): a new deployment of it.
    let redeploy = view.task_definition == target;
    let req =
        UpdateRequest { task_definition: Some(target.clone()), force: redeploy, configuration: update.configuration };
    let sent_at = now_ms();
    let updated = ecs.update_service_after(Some(turn), &plan.cluster, &service, &req).await?;
    let primary = updated.primary;
    run.report.changed = true;
    run.report.deployment_id = primary.as_ref().map(|d| d.id.clone());
    let note = update.note.map(|n| format!(" ({n})")).unwrap_or_default();
    run.step(format!("UpdateService: {} → {}{note}", short(&view.task_definition), short(&target)));
    let watched = Watched {
        cluster: plan.cluster.clone(),
        service,
        task_definition: target,
        deployment_id: primary.as_ref().filter(|_| redeploy).map(|d| d.id.clone()),
        since_ms: primary.and_then(|d| d.created_at_ms).unwrap_or(sent_at),
        known_events: view.events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(),
        service_deployment_arn: updated.service_deployment,
    };
    Ok((view, watched))
}

/// Observe (the cluster's next round), decide, act, until the gate says healthy or failed,
/// a cancel, or (`--all-or-nothing`) another service failing. ECS throttling that outlasted
/// deployer's own backoff is a slow API, not a failed check: only other errors count toward
/// the five in a row that end the watch.
async fn watch<G: DeployGate>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    run: &mut Run,
    watcher: &mut Watcher<'_, '_>,
    gate: &mut G,
    fate: &Fate,
) -> End {
    let (mut api_errors, mut last_wait) = (0, String::new());
    let service = run.report.service.clone();
    loop {
        if ctx.cancel.is_cancelled() {
            run.step("cancelled (SIGINT/SIGTERM)".into());
            return End::Cancelled;
        }
        if let Some(first) = fate.aborted() {
            run.step(format!("--all-or-nothing: {first} failed; stopping this deploy"));
            return End::Aborted;
        }
        let urls = gate.probe_urls(watcher.last());
        let observed = tokio::select! {
            o = watcher.observe(&urls) => Some(o),
            _ = fate.abort.sleep(Duration::from_secs(86_400)) => None,
        };
        let Some(observed) = observed else { continue };
        // A cancel that came while waiting for the round wins over what the round saw.
        if ctx.cancel.is_cancelled() {
            continue;
        }
        let obs = match observed {
            Ok(o) => o,
            Err(e) if e.is_throttling() => {
                tracing::warn!("{service}: ECS is throttling deployer's calls ({e}); not counted as a failed check");
                watcher.pace(false);
                continue;
            }
            Err(e) => {
                api_errors += 1;
                tracing::warn!("{service}: observing the deployment failed ({api_errors} in a row): {e}");
                if api_errors >= 5 {
                    return End::Failed(Failure::Timeout { waiting_for: format!("ECS to answer ({e})") });
                }
                watcher.pace(false);
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
                watcher.pace(changed || obs.urgent());
            }
            Decision::Continue { hook_id, note } => {
                let arn = watcher.service_deployment_arn.clone().unwrap_or_default();
                match ecs.answer_hook(&arn, &hook_id, DeploymentLifecycleHookAction::Continue).await {
                    Ok(()) => {
                        gate.continued();
                        run.step(format!("{note}; ContinueServiceDeployment(CONTINUE): production traffic may shift"));
                    }
                    Err(e) if e.is_throttling() => tracing::warn!("{service}: {e}; not counted as a failed check"),
                    Err(e) => {
                        api_errors += 1;
                        tracing::warn!("{service}: {e}");
                        if api_errors >= 5 {
                            return End::Failed(Failure::Timeout { waiting_for: format!("ECS to continue ({e})") });
                        }
                    }
                }
                watcher.pace(true);
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
async fn record_watch<G: DeployGate>(run: &mut Run, watcher: &mut Watcher<'_, '_>, gate: &G, end: &End) {
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
async fn settle_end(plan: &DeployPlan, run: &mut Run, settle: &Settle<'_>, watcher: &Watcher<'_, '_>, end: End) {
    let target = run.report.task_definition_arn.clone();
    let (failure, why) = match end {
        End::Healthy => {
            run.report.final_task_definition_arn = Some(target);
            return;
        }
        End::Failed(f) => {
            let why = f.to_string();
            (Some(f), why)
        }
        End::Cancelled => {
            run.report.cancelled = true;
            (None, "cancelled before the gate passed".into())
        }
        End::Aborted => (None, ALL_OR_NOTHING.into()),
    };
    run.report.failure = Some(why);
    if plan.no_rollback && !failure.as_ref().is_some_and(Failure::ecs_rolls_back) {
        run.report.result = Outcome::Failed;
        run.report.state = Some(no_rollback_state(watcher.last(), &target, &run.report.previous_task_definition_arn));
        return;
    }
    run.step(format!("rolling back to {}", short(settle.to)));
    run.report.rollback_started_at_ms = Some(now_ms());
    let sd = watcher.service_deployment_arn.as_deref();
    let redeploy = run.report.previous_task_definition_arn == target;
    let route = settle::route(failure.as_ref(), watcher.last(), sd, redeploy);
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

/// Why a service that was fine goes back under `--all-or-nothing`.
const ALL_OR_NOTHING: &str = "--all-or-nothing: another service failed";

/// `--all-or-nothing`, for a service that went live: another one failed, so send it back now
/// (every such service at once; the limiter bounds the calls). A redeploy of the revision that
/// was already running has no way back once it is over.
async fn all_or_nothing(run: &mut Run, settle: &Settle<'_>, fate: &Fate) {
    let first = fate.aborted().unwrap_or_else(|| "another service".into());
    run.step(format!("--all-or-nothing: {first} failed; rolling back to {}", short(settle.to)));
    run.report.rollback_started_at_ms = Some(now_ms());
    let redeploy = run.report.previous_task_definition_arn == run.report.task_definition_arn;
    let outcome = settle.rollback(if redeploy { Route::NoWayBack } else { Route::Update }).await;
    run.report.failure = Some(ALL_OR_NOTHING.into());
    run.report.final_task_definition_arn = None;
    let line = run.report.record_rollback(outcome, None);
    run.step(line);
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
    let ecs = Ecs::new(ctx.ecs, ctx.limiter).labelled(service);
    let from = ecs.describe_service(cluster, service).await?.task_definition;
    let to = match to {
        Some(to) => to,
        None => ecs.previous_revision(&from).await?,
    };
    let settle = Settle::new(&ecs, ctx.http, cluster, service, &to, &[], Duration::from_secs(900), poll);
    let (_, restored) = settle.rollback(Route::Update).await?;
    Ok((from, to, restored))
}
