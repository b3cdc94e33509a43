//! One driver for every strategy. Before any change, every service is checked (`check_all`):
//! it exists, takes the strategy, and has no deployment in progress (waiting a bounded time
//! for one to finish). Then each service, in parallel, goes check → update → watch → decide →
//! settle → restore (`deploy_one`), and every service ends with a report — one that could not
//! even start included. A fleet shares one watcher per cluster (`watch::Fleet`, its rounds
//! run beside the services) and one limiter of ECS's API buckets (every call waits for its
//! token); the checks read DescribeServices 10 at a time, and the updates are launched in
//! order (`launch`): a fresh DescribeServices per 10 services, then each UpdateService on its
//! own token, with jittered starts. With `--all-or-nothing` the first service that fails seals
//! the run's fate: services not updated yet are left alone, the ones still watching stop, and
//! every one that changed rolls back at once, concurrently (bounded by the limiter). The
//! run's outcome and exit code are derived once, from all the reports.
//!
//! The strategy is chosen per service, once, from its deployment controller (as ecspresso
//! does): CODE_DEPLOY → the CodeDeploy strategy (its deployment group found at the check),
//! whatever `--strategy` says; ECS → the plan's strategy. A CodeDeploy start is a
//! CreateDeployment, each poll also reads the CodeDeploy deployment, the gate's `Continue`
//! is ContinueDeployment(READY_WAIT), and the way back goes through CodeDeploy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DeploymentConfiguration, DeploymentLifecycleHookAction};
use rand::Rng;
use tokio::sync::{oneshot, watch};

use super::codedeploy::{self, CodeDeploy, CodeDeployApi, Follow};
use super::codedeploy_lifecycle as cdl;
use super::codedeploy_view::GroupView;
use super::ecs::{Ecs, Turn, UpdateRequest};
use super::gate::{Decision, DeployGate, Failure, Observation};
use super::plan::{DeployPlan, Poll, Strategy as Kind};
use super::report::{ApiUsage, DeployReport, DeployRun, LifecycleLog, Outcome, Restored, Step};
use super::rolling::Rolling;
use super::settle::{Route, Settle};
use super::strategy::{Start, Strategy};
use super::traffic::TrafficShift;
use super::view::{ServiceView, now_ms, short};
use super::watch::{Fleet, Watched, Watcher};
use super::{Cancel, DeployError};
use crate::aws::limiter::Limiter;

/// What every service's deploy shares: the clients, the cancel flag, and the limiter of
/// ECS's API buckets.
pub struct Context<'a> {
    pub ecs: &'a aws_sdk_ecs::Client,
    /// CodeDeploy, for services under the CODE_DEPLOY controller.
    pub codedeploy: &'a aws_sdk_codedeploy::Client,
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
    /// Under the CODE_DEPLOY controller: the deployment group that deploys it.
    pub code_deploy: Option<GroupView>,
    /// The revision it goes to, when not the run's own (deployer.toml's per-service
    /// `task-definition` / `container`).
    pub task_definition: Option<String>,
}

/// Run `$body` with `$s` bound to `$service`'s instance of the plan's strategy (each service
/// has its own gate settings; the trait is not object-safe: its gate is an associated type,
/// so each strategy gets its own monomorphic driver).
macro_rules! with_strategy {
    ($plan:expr, $service:expr, |$s:ident| $body:expr) => {
        match $plan.strategy {
            Kind::Rolling => {
                let $s = &Rolling { gate: $plan.gate_of($service) };
                $body
            }
            kind => {
                let $s = &TrafficShift { kind, settings: $plan.shift.clone(), gate: $plan.gate_of($service) };
                $body
            }
        }
    };
}

/// The CodeDeploy strategy of `service`, whose deployment group is `group`.
fn code_deploy(plan: &DeployPlan, service: &str, group: &GroupView) -> CodeDeploy {
    CodeDeploy { group: group.clone(), settings: plan.codedeploy.clone(), gate: plan.gate_of(service) }
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
/// (one DescribeServices per 10 services; a busy one is looked at again alone, bounded). The
/// first service (in the order given) that fails fails the run, with nothing changed.
pub async fn check_all(ctx: &Context<'_>, plan: &DeployPlan) -> Result<Vec<Checked>, ServiceError> {
    let ecs = Ecs::new(ctx.ecs, ctx.limiter).labelled(format!("cluster {} (checks)", plan.cluster));
    let mut views =
        ecs.describe_services(&plan.cluster, &plan.services).await.map_err(|e| batch_error(&plan.services, e))?;
    let views: Vec<Result<ServiceView, DeployError>> = plan
        .services
        .iter()
        .map(|s| views.remove(s).unwrap_or_else(|| Err(DeployError::Precondition("not described".into()))))
        .collect();
    let checks = plan.services.iter().zip(views).map(|(service, view)| check(ctx, plan, service, view));
    let checks = futures_util::future::join_all(checks).await;
    plan.services
        .iter()
        .zip(checks)
        .map(|(service, c)| c.map_err(|source| ServiceError { service: service.clone(), source }))
        .collect()
}

/// One service's check, with the strategy its deployment controller calls for.
async fn check(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    service: &str,
    view: Result<ServiceView, DeployError>,
) -> Result<Checked, DeployError> {
    let view = view?;
    if view.controller_is_code_deploy() {
        let cd = CodeDeployApi::new(ctx.codedeploy);
        let group = codedeploy::find_group(&cd, &plan.cluster, service, &plan.codedeploy).await?;
        let s = &code_deploy(plan, service, &group);
        return check_one(ctx, plan, s, service, view, Some((&cd, &group))).await;
    }
    with_strategy!(plan, service, |s| check_one(ctx, plan, s, service, view, None).await)
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
    let ecs = Ecs::new(ctx.ecs, ctx.limiter).labelled(service);
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
    Ok(Checked { service: service.to_string(), previous: view.task_definition, code_deploy, task_definition: None })
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
    let deploys = checked.iter().zip(receivers).map(|(c, go)| {
        let (fleet, fate) = (&fleet, &fate);
        async move {
            let td = c.task_definition.as_deref().unwrap_or(task_definition);
            let report = deploy_checked(ctx, plan, c, td, Shared { fleet, fate, go }).await;
            fleet.finished();
            report
        }
    });
    let (_, _, mut reports) = tokio::join!(
        fleet.run(),
        launch(ctx, plan, &launcher, &order, gos, &fate),
        futures_util::future::join_all(deploys)
    );
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

/// One service's deploy with the strategy its check chose.
async fn deploy_checked(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    c: &Checked,
    task_definition: &str,
    shared: Shared<'_, '_>,
) -> DeployReport {
    match &c.code_deploy {
        Some(group) => {
            let s = &code_deploy(plan, &c.service, group);
            deploy_one(ctx, plan, s, c, task_definition, shared).await
        }
        None => with_strategy!(plan, &c.service, |s| deploy_one(ctx, plan, s, c, task_definition, shared).await),
    }
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
    shared: Shared<'_, '_>,
) -> DeployReport {
    let Shared { fleet, fate, go } = shared;
    let ecs = Ecs::new(ctx.ecs, ctx.limiter).labelled(checked.service.clone());
    let cd = CodeDeployApi::new(ctx.codedeploy);
    let report =
        DeployReport::new(&plan.cluster, &checked.service, strategy.kind(), task_definition, &checked.previous);
    let group = checked.code_deploy.clone();
    let mut run = Run { report, started: Instant::now(), log: LifecycleLog::default(), last_stage: None, group };
    let (view, watched, mut follow) = match update(ctx, &ecs, &cd, plan, strategy, &mut run, go, fate).await {
        Ok(started) => started,
        Err(e) => {
            run.report.cancelled = matches!(e, DeployError::Cancelled);
            run.step(format!("not deployed: {e}"));
            run.report.not_started(e.to_string());
            fate.fail(&checked.service);
            return run.finish(&ecs, &cd);
        }
    };
    let leaving = watched.deployment_id.clone();
    let mut watcher = fleet.watch(&ecs, ctx.http, watched);
    let mut gate = strategy.gate();
    let end = watch(ctx, &ecs, &mut run, &mut watcher, follow.as_mut(), &mut gate, fate).await;
    if !matches!(end, End::Healthy | End::Aborted) {
        fate.fail(&checked.service);
    }
    record_watch(&mut run, &mut watcher, &gate, &end).await;
    let previous = run.report.previous_task_definition_arn.clone();
    let restore = strategy.restore(&view);
    let gate_config = plan.gate_of(&checked.service);
    let (cluster, service, urls) = (&plan.cluster, &checked.service, &gate_config.health_urls);
    let mut settle = Settle::new(&ecs, ctx.http, cluster, service, &previous, urls, plan.gate.timeout, plan.poll)
        .restoring(restore.as_ref())
        .leaving(leaving.as_deref())
        .watching(fleet);
    if let Some(group) = &checked.code_deploy {
        match code_deploy(plan, service, group).request(&view, &previous) {
            Ok(redeploy) => settle = settle.via_code_deploy(&cd, redeploy),
            Err(e) => tracing::warn!("{service}: no way back through a redeploy: {e}"),
        }
    }
    settle_end(plan, strategy, &mut run, &settle, &watcher, follow.as_ref(), end).await;
    drop(watcher);
    if run.report.result == Outcome::Succeeded && !fate.healthy().await {
        all_or_nothing(&mut run, &settle, checked.code_deploy.is_some(), fate).await;
    }
    match restore {
        Some(_) if settle.config_restored() => {
            run.step("the rollback's UpdateService also restored the service's lifecycle hooks".into())
        }
        Some(config) => restore_configuration(&ecs, plan, &mut run, config).await,
        None => {}
    }
    run.finish(&ecs, &cd)
}

/// The update: the launcher's go-ahead with a fresh look (still nothing in progress), then
/// UpdateService on the token it took or, for a CODE_DEPLOY service, CreateDeployment. Returns
/// the view before the update, what the watch follows, and the CodeDeploy deployment when
/// there is one.
#[allow(clippy::too_many_arguments)]
async fn update<'c, S: Strategy>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    cd: &'c CodeDeployApi<'c>,
    plan: &DeployPlan,
    strategy: &S,
    run: &mut Run,
    go: oneshot::Receiver<Go>,
    fate: &Fate,
) -> Result<(ServiceView, Watched, Option<Follow<'c>>), DeployError> {
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
    // The revision already running (`--force-new-deployment`, `refresh`): a new deployment of it.
    let redeploy = view.task_definition == target;
    let sent_at = now_ms();
    let (since_ms, deployment_id, service_deployment, follow) = match strategy.start(&view, &target)? {
        Start::UpdateService(update) => {
            let req = UpdateRequest {
                task_definition: Some(target.clone()),
                force: redeploy,
                configuration: update.configuration,
            };
            let updated = ecs.update_service_after(Some(turn), &plan.cluster, &service, &req).await?;
            let primary = updated.primary;
            run.report.changed = true;
            run.report.deployment_id = primary.as_ref().map(|d| d.id.clone());
            let note = update.note.map(|n| format!(" ({n})")).unwrap_or_default();
            run.step(format!("UpdateService: {} → {}{note}", short(&view.task_definition), short(&target)));
            let deployment_id = primary.as_ref().filter(|_| redeploy).map(|d| d.id.clone());
            let since = primary.and_then(|d| d.created_at_ms).unwrap_or(sent_at);
            (since, deployment_id, updated.service_deployment, None)
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
                Some(group) => code_deploy(plan, &service, group).describe(&id),
                None => format!("CreateDeployment {id}"),
            };
            run.step(format!("{line}: {} → {}", short(&view.task_definition), short(&target)));
            (sent_at, None, None, Some(Follow::new(cd, id)))
        }
    };
    let watched = Watched {
        cluster: plan.cluster.clone(),
        service,
        task_definition: target,
        deployment_id,
        since_ms,
        known_events: view.events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(),
        service_deployment_arn: service_deployment,
    };
    Ok((view, watched, follow))
}

/// Observe (the cluster's next round, and the CodeDeploy deployment when there is one),
/// decide, act, until the gate says healthy or failed, a cancel, or (`--all-or-nothing`)
/// another service failing. ECS throttling that outlasted deployer's own backoff is a slow
/// API, not a failed check: only other errors count toward the five in a row that end the
/// watch.
async fn watch<G: DeployGate>(
    ctx: &Context<'_>,
    ecs: &Ecs<'_>,
    run: &mut Run,
    watcher: &mut Watcher<'_, '_>,
    mut follow: Option<&mut Follow<'_>>,
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
        let observed = match observed {
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
            Err(e) if e.is_throttling() => {
                tracing::warn!("{service}: ECS is throttling deployer's calls ({e}); not counted as a failed check");
                watcher.pace(false);
                continue;
            }
            Err(e) => {
                api_errors += 1;
                tracing::warn!("{service}: observing the deployment failed ({api_errors} in a row): {e}");
                if api_errors >= 5 {
                    let who = if follow.is_some() { "ECS and CodeDeploy" } else { "ECS" };
                    return End::Failed(Failure::Timeout { waiting_for: format!("{who} to answer ({e})") });
                }
                watcher.pace(false);
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
                watcher.pace(changed || obs.urgent() || held);
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

/// Settle: success is done; a failure (or cancel) is rolled back by the way ECS's (or
/// CodeDeploy's) state allows, unless `--no-rollback` (and ECS is not rolling back by itself
/// anyway).
async fn settle_end<S: Strategy>(
    plan: &DeployPlan,
    strategy: &S,
    run: &mut Run,
    settle: &Settle<'_>,
    watcher: &Watcher<'_, '_>,
    follow: Option<&Follow<'_>>,
    end: End,
) {
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

/// Why a service that was fine goes back under `--all-or-nothing`.
const ALL_OR_NOTHING: &str = "--all-or-nothing: another service failed";

/// `--all-or-nothing`, for a service that went live: another one failed, so send it back now
/// (every such service at once; the limiter bounds the calls). A CODE_DEPLOY service goes back
/// by a CodeDeploy deployment of its previous task definition (`settle` carries it); a
/// redeploy of the revision that was already running has no way back once it is over.
async fn all_or_nothing(run: &mut Run, settle: &Settle<'_>, code_deploy: bool, fate: &Fate) {
    let first = fate.aborted().unwrap_or_else(|| "another service".into());
    run.step(format!("--all-or-nothing: {first} failed; rolling back to {}", short(settle.to)));
    run.report.rollback_started_at_ms = Some(now_ms());
    let redeploy = run.report.previous_task_definition_arn == run.report.task_definition_arn;
    let route = match (code_deploy, redeploy) {
        (true, _) => Route::Redeploy,
        (false, true) => Route::NoWayBack,
        (false, false) => Route::Update,
    };
    let outcome = settle.rollback(route).await;
    run.report.failure = Some(ALL_OR_NOTHING.into());
    run.report.final_task_definition_arn = None;
    let line = run.report.record_rollback(outcome, None);
    run.step(line);
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
    let (ecs, cd) = (Ecs::new(ctx.ecs, ctx.limiter).labelled(service), CodeDeployApi::new(ctx.codedeploy));
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
