//! Watching deployments, one watcher per cluster. A `Fleet` runs shared rounds: each round
//! reads every watched service of the cluster with DescribeServices in batches of 10, their
//! service deployments with DescribeServiceDeployments in batches of 20, lists the cluster's
//! running tasks once (filtered by family when every target shares one), and describes (in
//! batches of 100) only the tasks whose state may have changed: new ones, ones of a watched
//! deployment that are not yet running healthy, and ones that left the running list. A
//! deployment whose failed-task count grew, or whose running count fell, also gets its
//! stopped tasks listed (by `startedBy`, its deployment id) that round. Every service's gate
//! gets its view from the shared round (`Watcher::observe`), so the cost of a round grows by
//! one call per 10 services, not by five calls per service.
//!
//! Rounds are paced by the services themselves: a round runs when some service waits for one,
//! no sooner than the adaptive interval after the last one began (`Poll`: 2 s growing to 10 s,
//! back to 2 s when any service saw a change or is urgent). A service that is busy (answering
//! a hook, rolling back) does not hold the others up: it takes the newest round when it asks.
//!
//! Our deployment is the one running the new task definition — except in a redeploy of the
//! revision already running (`--force-new-deployment`, `refresh`), where the old deployment
//! runs it too: there ours is the deployment UpdateService created, by its id. Either way its
//! tasks are those it started (`startedBy`), so an earlier deployment's tasks never count.
//!
//! The pure parts: `observation` turns one round's answers into what a gate decides on;
//! `new_events` picks the events of this deploy; `belongs`, `tasks_to_describe`,
//! `stopped_listing` and `family_filter` decide which tasks to read. The `Watcher` of a
//! service also keeps what a failure report needs: the service events of this deploy (from
//! its own UpdateService on, none from before) and the new revision's stopped tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::HealthStatus;
use tokio::sync::{Notify, watch};

use super::ecs::{Ecs, TaskFilter};
use super::gate::{Observation, Probe};
use super::plan::Poll;
use super::probe::probe_all;
use super::view::{DeploymentView, EventView, ServiceDeploymentView, ServiceView, TaskView, short};
use super::{Cancel, DeployError};
use crate::aws::limiter::Limiter;

/// Which service, which revision, and where this deploy's events begin.
#[derive(Debug, Clone)]
pub struct Watched {
    pub cluster: String,
    pub service: String,
    pub task_definition: String,
    /// Set when the revision was already running (a redeploy): our deployment's id, which
    /// tells it and its tasks apart from the old deployment of the same revision.
    pub deployment_id: Option<String>,
    /// Our deployment's creation (ECS's clock, epoch ms): events before it are not ours.
    pub since_ms: u64,
    /// Events the service already had before the update.
    pub known_events: HashSet<String>,
    /// The service deployment the update started, when UpdateService named it.
    pub service_deployment_arn: Option<String>,
}

impl Watched {
    /// Is `d` the deployment this watch follows?
    pub fn is_ours(&self, d: &DeploymentView) -> bool {
        match &self.deployment_id {
            Some(id) => d.id == *id,
            None => d.task_definition == self.task_definition,
        }
    }
}

/// One observation from one round's answers: our deployment (`Watched::is_ours`), whether it
/// is still the primary, the service deployment, tasks, probes.
pub fn observation(
    view: &ServiceView,
    watched: &Watched,
    service_deployment: Option<ServiceDeploymentView>,
    tasks: Vec<TaskView>,
    probes: Vec<Probe>,
    elapsed: Duration,
) -> Observation {
    Observation {
        elapsed,
        deployment: view.deployments.iter().find(|d| watched.is_ours(d)).cloned(),
        primary_is_ours: view.primary().is_some_and(|d| watched.is_ours(d)),
        service_deployment,
        tasks,
        probes,
        code_deploy: None,
    }
}

/// The events of `view` that belong to this deploy and were not taken yet, oldest first: at
/// or after `since_ms`, and not among the events the service had before the update.
pub fn new_events<'v>(view: &'v ServiceView, w: &Watched, taken: &HashSet<String>) -> Vec<&'v EventView> {
    let mut fresh: Vec<&EventView> = view
        .events
        .iter()
        .filter(|e| e.at_ms.is_some_and(|t| t >= w.since_ms))
        .filter(|e| !w.known_events.contains(&e.id) && !taken.contains(&e.id))
        .collect();
    fresh.reverse();
    fresh
}

/// Which tasks are a watched deployment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskKey {
    pub service: String,
    pub task_definition: String,
    /// The id of the deployment (`ecs-svc/…`) that runs the new revision, once seen: the
    /// `startedBy` of its tasks, so a redeploy of the same revision never counts the tasks
    /// (or the failures) of an earlier deployment.
    pub deployment_id: Option<String>,
}

/// The task is the watched deployment's: started by it, or — when either side does not say —
/// a task of the service running the new revision.
pub fn belongs(task: &TaskView, key: &TaskKey) -> bool {
    match (&key.deployment_id, &task.started_by) {
        (Some(id), Some(by)) if by.starts_with("ecs-svc/") => by == id,
        _ => {
            task.task_definition == key.task_definition
                && task.group.as_deref().and_then(|g| g.strip_prefix("service:")) == Some(key.service.as_str())
        }
    }
}

/// Running, and HEALTHY: nothing about it will change unless it leaves the running list.
fn settled(task: &TaskView) -> bool {
    task.running() && task.health == Some(HealthStatus::Healthy)
}

/// The tasks to describe this round: every listed task never seen, and every task of a
/// watched deployment that is not final and not settled in the running list (starting,
/// running without a health verdict yet, stopping, or gone from the list).
pub fn tasks_to_describe(known: &HashMap<String, TaskView>, listed: &HashSet<String>, keys: &[TaskKey]) -> Vec<String> {
    let mut out: BTreeSet<String> = listed.iter().filter(|a| !known.contains_key(*a)).cloned().collect();
    for t in known.values() {
        if keys.iter().any(|k| belongs(t, k)) && !t.is_final() && !(listed.contains(&t.arn) && settled(t)) {
            out.insert(t.arn.clone());
        }
    }
    out.into_iter().collect()
}

/// The deployment may have lost a task the running list never showed (started and stopped
/// between two rounds): its failed-task count grew, or its running count fell.
pub fn stopped_listing(before: Option<&DeploymentView>, now: Option<&DeploymentView>) -> bool {
    let Some(now) = now else { return false };
    match before {
        None => now.failed_tasks > 0,
        Some(b) => now.failed_tasks > b.failed_tasks || now.running < b.running,
    }
}

/// One ListTasks filter for every watched target: their family, when they share one.
pub fn family_filter(keys: &[TaskKey]) -> Option<String> {
    let family = |td: &str| short(td).rsplit_once(':').map(|(f, _)| f.to_string()).unwrap_or_else(|| short(td).into());
    let families: BTreeSet<String> = keys.iter().map(|k| family(&k.task_definition)).collect();
    match families.len() {
        1 => families.into_iter().next(),
        _ => None,
    }
}

/// The deployment this deploy started: the one with `target`'s id when known (a redeploy),
/// else the one running its task definition created at or after its `since_ms` (a second of
/// slack), else the newest one running it.
pub fn our_deployment<'v>(view: &'v ServiceView, target: &Target) -> Option<&'v DeploymentView> {
    if let Some(id) = &target.deployment_id {
        return view.deployments.iter().find(|d| d.id == *id);
    }
    let (task_definition, since_ms) = (&target.task_definition, target.since_ms);
    let mut ours: Vec<&DeploymentView> =
        view.deployments.iter().filter(|d| d.task_definition == *task_definition).collect();
    ours.sort_by_key(|d| std::cmp::Reverse(d.created_at_ms));
    ours.iter().find(|d| d.created_at_ms.is_some_and(|c| c + 1000 >= since_ms)).or(ours.first()).copied()
}

/// The deployment a watch follows, as the rounds need it to find its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub task_definition: String,
    pub since_ms: u64,
    /// A redeploy's own deployment id.
    pub deployment_id: Option<String>,
}

/// What a service wants from each round.
#[derive(Debug, Clone)]
struct Interest {
    service: String,
    service_deployment: Option<String>,
    /// The deployment whose tasks are read too. `None`: the view only.
    tasks: Option<Target>,
}

/// What one round read for one service.
#[derive(Debug, Clone)]
pub struct Seen {
    pub view: ServiceView,
    pub service_deployment: Option<ServiceDeploymentView>,
    /// The watched deployment's tasks (running and stopped).
    pub tasks: Vec<TaskView>,
}

struct Slot {
    interest: Interest,
    /// Waiting for a round after this one.
    waiting_after: Option<u64>,
    /// The newest round's answer for it, and that round's number.
    result: Option<(u64, Result<Seen, DeployError>)>,
    /// Its deployment as the last round saw it.
    last_deployment: Option<DeploymentView>,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<u64, Slot>,
    next_id: u64,
    round: u64,
    hurry: bool,
    /// Services that may still join.
    open: usize,
    known: HashMap<String, TaskView>,
    stats: RoundStats,
}

/// What the rounds cost, for the run's report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RoundStats {
    pub rounds: u64,
    /// Calls per operation over all rounds.
    pub calls: BTreeMap<String, u64>,
    /// The most services one round read.
    pub most_services: usize,
    /// Each service's share of the rounds' calls.
    #[serde(skip)]
    pub shares: BTreeMap<String, f64>,
}

/// The watcher of one cluster: its shared rounds and who waits for them.
pub struct Fleet<'a> {
    ecs: Ecs<'a>,
    cluster: String,
    poll: Poll,
    cancel: &'a Cancel,
    state: Mutex<State>,
    wake: Notify,
    rounds: watch::Sender<u64>,
}

impl<'a> Fleet<'a> {
    /// A watcher of `cluster` for `services` services (the loop ends when each has finished).
    pub fn new(
        client: &'a aws_sdk_ecs::Client,
        limiter: &'a Limiter,
        cluster: &str,
        poll: Poll,
        cancel: &'a Cancel,
        services: usize,
    ) -> Fleet<'a> {
        Fleet {
            ecs: Ecs::new(client, limiter).labelled(format!("cluster {cluster} (shared rounds)")),
            cluster: cluster.to_string(),
            poll,
            cancel,
            state: Mutex::new(State { open: services, ..State::default() }),
            wake: Notify::new(),
            rounds: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One service is done with the watcher for good (deployed, settled, or never started).
    pub fn finished(&self) {
        let mut st = self.lock();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.wake.notify_one();
    }

    /// What the rounds cost so far.
    pub fn stats(&self) -> RoundStats {
        self.lock().stats.clone()
    }

    fn join(&self, interest: Interest) -> (u64, u64) {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.slots.insert(id, Slot { interest, waiting_after: None, result: None, last_deployment: None });
        (id, st.round)
    }

    fn leave(&self, id: u64) {
        self.lock().slots.remove(&id);
        self.wake.notify_one();
    }

    fn set_service_deployment(&self, id: u64, arn: &str) {
        if let Some(slot) = self.lock().slots.get_mut(&id) {
            slot.interest.service_deployment = Some(arn.to_string());
        }
    }

    /// The answer of the first round after `after` that read this member.
    async fn next(&self, id: u64, after: &mut u64, hurry: bool) -> Result<Seen, DeployError> {
        let mut rx = self.rounds.subscribe();
        loop {
            let target = {
                let mut st = self.lock();
                st.hurry |= hurry;
                let latest = st.round;
                let slot = st.slots.get_mut(&id).ok_or_else(|| DeployError::Precondition("not watched".into()))?;
                if slot.result.as_ref().is_some_and(|(r, _)| *r > *after)
                    && let Some((r, result)) = slot.result.take()
                {
                    *after = r;
                    slot.waiting_after = None;
                    return result;
                }
                // A round that began before this member joined did not read it: wait for one
                // after the latest.
                let target = (*after).max(latest);
                slot.waiting_after = Some(target);
                target
            };
            self.wake.notify_one();
            if rx.wait_for(|r| *r > target).await.is_err() {
                return Err(DeployError::Precondition("the cluster watcher stopped".into()));
            }
        }
    }

    /// The rounds, until every service has finished. Run it beside the services' deploys.
    pub async fn run(&self) {
        let mut pacing = self.poll.pacing();
        let mut last_start: Option<Instant> = None;
        loop {
            loop {
                let woken = self.wake.notified();
                {
                    let st = self.lock();
                    if st.open == 0 && st.slots.is_empty() {
                        return;
                    }
                    if st.slots.values().any(|s| s.waiting_after.is_some_and(|a| a >= st.round)) {
                        break;
                    }
                }
                woken.await;
            }
            if let Some(started) = last_start {
                let hurry = std::mem::take(&mut self.lock().hurry);
                let due = started + pacing.next(hurry);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    self.cancel.sleep(wait).await;
                }
            }
            last_start = Some(Instant::now());
            self.round().await;
        }
    }

    /// One round: every member's service, service deployment and tasks, as few calls as ECS
    /// allows; each member gets its answer.
    async fn round(&self) {
        let members: Vec<(u64, Interest)> = self.lock().slots.iter().map(|(id, s)| (*id, s.interest.clone())).collect();
        if members.is_empty() {
            return;
        }
        let calls_before = self.ecs.calls_by_op();
        let services: Vec<String> =
            members.iter().map(|(_, i)| i.service.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let views = self.ecs.describe_services(&self.cluster, &services).await;
        let arns: Vec<String> = members
            .iter()
            .filter_map(|(_, i)| i.service_deployment.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let sds = if arns.is_empty() { Ok(BTreeMap::new()) } else { self.ecs.service_deployments(&arns).await };
        // Each watched deployment, as this round's DescribeServices shows it.
        let mut keys: BTreeMap<u64, (TaskKey, Option<DeploymentView>)> = BTreeMap::new();
        if let Ok(views) = &views {
            for (id, i) in &members {
                let (Some(target), Some(Ok(view))) = (&i.tasks, views.get(&i.service)) else { continue };
                let ours = our_deployment(view, target).cloned();
                let key = TaskKey {
                    service: i.service.clone(),
                    task_definition: target.task_definition.clone(),
                    deployment_id: ours.as_ref().map(|d| d.id.clone()).or(target.deployment_id.clone()),
                };
                keys.insert(*id, (key, ours));
            }
        }
        let tasks = if keys.is_empty() { Ok(()) } else { self.refresh_tasks(&keys).await };

        let spent = diff_calls(&calls_before, &self.ecs.calls_by_op());
        let mut st = self.lock();
        let round = st.round + 1;
        let share = spent.values().sum::<u64>() as f64 / members.len() as f64;
        for (id, interest) in &members {
            let key = keys.get(id);
            let result = member_result(interest, key.map(|(k, _)| k), &views, &sds, &tasks, &st.known);
            *st.stats.shares.entry(interest.service.clone()).or_default() += share;
            if let Some(slot) = st.slots.get_mut(id) {
                slot.last_deployment = key.and_then(|(_, d)| d.clone());
                slot.result = Some((round, result));
            }
        }
        st.round = round;
        st.stats.rounds += 1;
        st.stats.most_services = st.stats.most_services.max(services.len());
        for (op, n) in spent {
            *st.stats.calls.entry(op).or_default() += n;
        }
        drop(st);
        tracing::debug!("{}: round {round} read {} service(s)", self.cluster, services.len());
        self.rounds.send_replace(round);
    }

    /// The running list (once), the stopped tasks of deployments that lost some, and a
    /// DescribeTasks of what may have changed.
    async fn refresh_tasks(&self, keys: &BTreeMap<u64, (TaskKey, Option<DeploymentView>)>) -> Result<(), DeployError> {
        let key_list: Vec<TaskKey> = keys.values().map(|(k, _)| k.clone()).collect();
        let filter = TaskFilter { family: family_filter(&key_list), ..TaskFilter::default() };
        let listed: HashSet<String> = self.ecs.list_tasks(&self.cluster, &filter).await?.into_iter().collect();
        let lost: Vec<TaskFilter> = {
            let st = self.lock();
            keys.iter()
                .filter(|(id, (_, now))| {
                    let before = st.slots.get(id).and_then(|s| s.last_deployment.as_ref());
                    stopped_listing(before, now.as_ref())
                })
                .map(|(_, (k, _))| stopped_filter(k))
                .collect()
        };
        let mut stopped = Vec::new();
        for f in &lost {
            stopped.extend(self.ecs.list_tasks(&self.cluster, f).await?);
        }
        let describe = {
            let st = self.lock();
            let mut d = tasks_to_describe(&st.known, &listed, &key_list);
            d.extend(stopped.into_iter().filter(|a| st.known.get(a).is_none_or(|t| !t.is_final())));
            d.sort();
            d.dedup();
            d
        };
        let described =
            if describe.is_empty() { Vec::new() } else { self.ecs.describe_tasks(&self.cluster, &describe).await? };
        let mut st = self.lock();
        for t in described {
            st.known.insert(t.arn.clone(), t);
        }
        // Forget what no longer runs and is no watched deployment's.
        st.known.retain(|arn, t| listed.contains(arn) || key_list.iter().any(|k| belongs(t, k)));
        Ok(())
    }

    /// One more look at a deployment's stopped tasks (after a failure, for the report).
    async fn sweep(&self, ecs: &Ecs<'_>, key: &TaskKey) -> Result<Vec<TaskView>, DeployError> {
        let arns = ecs.list_tasks(&self.cluster, &stopped_filter(key)).await?;
        let describe: Vec<String> = {
            let st = self.lock();
            arns.into_iter().filter(|a| st.known.get(a).is_none_or(|t| !t.is_final())).collect()
        };
        let described =
            if describe.is_empty() { Vec::new() } else { ecs.describe_tasks(&self.cluster, &describe).await? };
        let mut st = self.lock();
        for t in described {
            st.known.insert(t.arn.clone(), t);
        }
        Ok(st.known.values().filter(|t| belongs(t, key)).cloned().collect())
    }

    /// A service's view (and service deployment) from the rounds, for waiting on a rollback.
    pub fn member(&self, service: &str, service_deployment: Option<&str>) -> Member<'_, 'a> {
        let interest = Interest {
            service: service.to_string(),
            service_deployment: service_deployment.map(str::to_string),
            tasks: None,
        };
        let (id, round) = self.join(interest);
        Member { fleet: self, id, seen: round }
    }

    /// Start watching a deploy of `watched.service`; `ecs` makes its own calls (finding the
    /// service deployment, the last look after a failure).
    pub fn watch<'f>(&'f self, ecs: &'f Ecs<'a>, http: &'a reqwest::Client, watched: Watched) -> Watcher<'f, 'a> {
        let interest = Interest {
            service: watched.service.clone(),
            service_deployment: watched.service_deployment_arn.clone(),
            tasks: Some(Target {
                task_definition: watched.task_definition.clone(),
                since_ms: watched.since_ms,
                deployment_id: watched.deployment_id.clone(),
            }),
        };
        let (id, round) = self.join(interest);
        Watcher {
            member: Member { fleet: self, id, seen: round },
            ecs,
            http,
            service_deployment_arn: watched.service_deployment_arn.clone(),
            watched,
            started: Instant::now(),
            hurry: false,
            key: None,
            events: Vec::new(),
            taken: HashSet::new(),
            stopped: Vec::new(),
            first_failure_ms: None,
            last: None,
        }
    }
}

fn stopped_filter(key: &TaskKey) -> TaskFilter {
    match &key.deployment_id {
        Some(id) => TaskFilter { started_by: Some(id.clone()), stopped: true, ..TaskFilter::default() },
        None => TaskFilter { service: Some(key.service.clone()), stopped: true, ..TaskFilter::default() },
    }
}

fn diff_calls(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect()
}

/// The same error again, for each member a failed batch read was for.
fn again(e: &DeployError) -> DeployError {
    match e {
        DeployError::Api { op, code, message, .. } => {
            DeployError::Api { op, code: code.clone(), message: message.clone(), source: message.clone().into() }
        }
        DeployError::ServiceNotFound { cluster, service, reason } => {
            DeployError::ServiceNotFound { cluster: cluster.clone(), service: service.clone(), reason: reason.clone() }
        }
        other => DeployError::Precondition(other.to_string()),
    }
}

type Views = Result<BTreeMap<String, Result<ServiceView, DeployError>>, DeployError>;

fn member_result(
    interest: &Interest,
    key: Option<&TaskKey>,
    views: &Views,
    sds: &Result<BTreeMap<String, ServiceDeploymentView>, DeployError>,
    tasks: &Result<(), DeployError>,
    known: &HashMap<String, TaskView>,
) -> Result<Seen, DeployError> {
    let views = views.as_ref().map_err(again)?;
    let view = match views.get(&interest.service) {
        Some(Ok(v)) => v.clone(),
        Some(Err(e)) => return Err(again(e)),
        None => return Err(DeployError::Precondition(format!("{} was not read", interest.service))),
    };
    let service_deployment = match &interest.service_deployment {
        Some(arn) => sds.as_ref().map_err(again)?.get(arn).cloned(),
        None => None,
    };
    let tasks = match (key, interest.tasks.is_some()) {
        (Some(key), _) => {
            tasks.as_ref().map_err(again)?;
            let mut ts: Vec<TaskView> = known.values().filter(|t| belongs(t, key)).cloned().collect();
            ts.sort_by(|a, b| a.arn.cmp(&b.arn));
            ts
        }
        _ => Vec::new(),
    };
    Ok(Seen { view, service_deployment, tasks })
}

/// One service's place in the rounds; leaving (drop) ends it.
pub struct Member<'f, 'a> {
    fleet: &'f Fleet<'a>,
    id: u64,
    seen: u64,
}

impl Member<'_, '_> {
    /// The next round's answer for this service; `hurry` asks for the base interval.
    pub async fn next(&mut self, hurry: bool) -> Result<Seen, DeployError> {
        self.fleet.next(self.id, &mut self.seen, hurry).await
    }
}

impl Drop for Member<'_, '_> {
    fn drop(&mut self) {
        self.fleet.leave(self.id);
    }
}

/// One service's deploy as the cluster's rounds show it.
pub struct Watcher<'f, 'a> {
    member: Member<'f, 'a>,
    ecs: &'f Ecs<'a>,
    http: &'a reqwest::Client,
    watched: Watched,
    started: Instant,
    hurry: bool,
    key: Option<TaskKey>,
    pub service_deployment_arn: Option<String>,
    /// Service events of this deploy, oldest first.
    pub events: Vec<String>,
    taken: HashSet<String>,
    /// Stopped tasks of the new revision (their descriptions).
    pub stopped: Vec<String>,
    /// When ECS first began stopping a failed task of the new revision (epoch ms).
    pub first_failure_ms: Option<u64>,
    last: Option<Observation>,
}

impl Watcher<'_, '_> {
    /// One observation: this service's part of the next round, and one probe of each URL.
    pub async fn observe(&mut self, probe_urls: &[String]) -> Result<Observation, DeployError> {
        if self.service_deployment_arn.is_none() {
            let w = &self.watched;
            self.service_deployment_arn = self.ecs.find_service_deployment(&w.cluster, &w.service, w.since_ms).await;
            if let Some(arn) = &self.service_deployment_arn {
                self.member.fleet.set_service_deployment(self.member.id, arn);
            }
        }
        let seen = self.member.next(std::mem::take(&mut self.hurry)).await?;
        let service = &self.watched.service;
        for e in new_events(&seen.view, &self.watched, &self.taken) {
            tracing::info!("{service}: ECS: {}", e.message);
            self.taken.insert(e.id.clone());
            self.events.push(e.message.clone());
        }
        let w = &self.watched;
        let target = Target {
            task_definition: w.task_definition.clone(),
            since_ms: w.since_ms,
            deployment_id: w.deployment_id.clone(),
        };
        let ours = our_deployment(&seen.view, &target);
        self.key = Some(TaskKey {
            service: service.clone(),
            task_definition: w.task_definition.clone(),
            deployment_id: ours.map(|d| d.id.clone()).or(w.deployment_id.clone()),
        });
        self.record_stopped(&seen.tasks);
        let probes = probe_all(self.http, probe_urls).await;
        Ok(observation(&seen.view, &self.watched, seen.service_deployment, seen.tasks, probes, self.started.elapsed()))
    }

    /// Ask for the next round at the base interval (something changed, or a failure streak
    /// is building) or let the interval grow.
    pub fn pace(&mut self, hurry: bool) {
        self.hurry = hurry;
    }

    /// Did anything but time and probe answers change since the last observation? Keeps
    /// `obs` as the last one.
    pub fn changed(&mut self, obs: &Observation) -> bool {
        let strip =
            |o: &Observation| (o.deployment.clone(), o.primary_is_ours, o.service_deployment.clone(), o.tasks.clone());
        let changed = self.last.as_ref().is_none_or(|l| strip(l) != strip(obs));
        self.last = Some(obs.clone());
        changed
    }

    /// The last observation (what a rollback decides its route from).
    pub fn last(&self) -> Option<&Observation> {
        self.last.as_ref()
    }

    /// One more look at the new revision's stopped tasks after a failure, so the report names
    /// every task that stopped (ECS may have stopped more since the deciding observation).
    pub async fn sweep(&mut self) {
        let Some(key) = self.key.clone() else { return };
        match self.member.fleet.sweep(self.ecs, &key).await {
            Ok(tasks) => self.record_stopped(&tasks),
            Err(e) => tracing::debug!("{}: final look at the tasks failed: {e}", self.watched.service),
        }
    }

    fn record_stopped(&mut self, tasks: &[TaskView]) {
        for t in tasks.iter().filter(|t| t.failed()) {
            if let Some(at) = t.stopping_at_ms {
                self.first_failure_ms = Some(self.first_failure_ms.map_or(at, |f| f.min(at)));
            }
            let text = t.to_string();
            if !self.stopped.contains(&text) {
                self.stopped.push(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::TaskStatus;
    use super::*;

    fn event(id: &str, at_ms: u64) -> EventView {
        EventView { id: id.into(), at_ms: Some(at_ms), message: format!("event {id}") }
    }

    #[test]
    fn the_event_window_starts_at_the_deploys_own_update() {
        // Newest first, as ECS lists them. "steady" is the previous deploy's last word, a few
        // hundred ms before our UpdateService; "same-ms" was there before the update too.
        let view = ServiceView {
            events: vec![event("started", 10_400), event("same-ms", 10_000), event("steady", 9_700)],
            ..Default::default()
        };
        let w = Watched {
            cluster: "c".into(),
            service: "web".into(),
            task_definition: "td:2".into(),
            deployment_id: None,
            since_ms: 10_000,
            known_events: HashSet::from(["same-ms".to_string(), "steady".to_string()]),
            service_deployment_arn: None,
        };
        let got: Vec<&str> = new_events(&view, &w, &HashSet::new()).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, ["started"]);
        let taken = HashSet::from(["started".to_string()]);
        assert!(new_events(&view, &w, &taken).is_empty(), "each event once");
    }

    #[test]
    fn the_observation_finds_our_deployment_and_whether_it_is_primary() {
        let d = |id: &str, td: &str, primary: bool| DeploymentView {
            id: id.into(),
            task_definition: td.into(),
            primary,
            ..Default::default()
        };
        let watching = |td: &str, deployment_id: Option<&str>| Watched {
            cluster: "c".into(),
            service: "web".into(),
            task_definition: td.into(),
            deployment_id: deployment_id.map(str::to_string),
            since_ms: 0,
            known_events: HashSet::new(),
            service_deployment_arn: None,
        };
        let view =
            ServiceView { deployments: vec![d("new", "td:2", true), d("old", "td:1", false)], ..Default::default() };
        let o = observation(&view, &watching("td:2", None), None, vec![], vec![], Duration::from_secs(1));
        assert!(o.primary_is_ours && o.deployment.is_some_and(|d| d.id == "new"));
        let o = observation(&view, &watching("td:1", None), None, vec![], vec![], Duration::ZERO);
        assert!(!o.primary_is_ours);
        // A redeploy of td:1: the old deployment runs it too (listed first here); ours is ours
        // by id, primary or not.
        let redeploy =
            ServiceView { deployments: vec![d("old", "td:1", false), d("new", "td:1", true)], ..Default::default() };
        let o = observation(&redeploy, &watching("td:1", Some("new")), None, vec![], vec![], Duration::ZERO);
        assert!(o.primary_is_ours && o.deployment.is_some_and(|d| d.id == "new"));
        let o = observation(&redeploy, &watching("td:1", None), None, vec![], vec![], Duration::ZERO);
        assert!(o.deployment.is_some_and(|d| d.id == "old"), "by revision alone the old one is found first");
        let rolled_back =
            ServiceView { deployments: vec![d("old", "td:1", true), d("new", "td:1", false)], ..Default::default() };
        let o = observation(&rolled_back, &watching("td:1", Some("new")), None, vec![], vec![], Duration::ZERO);
        assert!(!o.primary_is_ours, "the old deployment is primary again");
    }

    fn task(arn: &str, status: &str, health: Option<HealthStatus>, by: &str, td: &str) -> TaskView {
        TaskView {
            arn: arn.into(),
            status: TaskStatus::parse(status),
            health,
            task_definition: td.into(),
            started_by: Some(by.into()).filter(|b: &String| !b.is_empty()),
            group: Some("service:web".into()),
            ..TaskView::default()
        }
    }

    fn key(id: Option<&str>) -> TaskKey {
        TaskKey {
            service: "web".into(),
            task_definition: "arn:td/shop:2".into(),
            deployment_id: id.map(str::to_string),
        }
    }

    #[test]
    fn a_task_is_the_deployments_by_started_by_else_by_service_and_revision() {
        let ours = task("a", "RUNNING", None, "ecs-svc/2", "arn:td/shop:2");
        let earlier_same_revision = task("b", "STOPPED", None, "ecs-svc/1", "arn:td/shop:2");
        let unlabelled = task("c", "RUNNING", None, "", "arn:td/shop:2");
        let old = task("d", "RUNNING", None, "ecs-svc/0", "arn:td/shop:1");
        let k = key(Some("ecs-svc/2"));
        assert!(belongs(&ours, &k));
        assert!(!belongs(&earlier_same_revision, &k), "a redeploy never inherits an earlier deployment's failures");
        assert!(belongs(&unlabelled, &k));
        assert!(!belongs(&old, &k));
        // Before the deployment is seen: the service's tasks of the new revision.
        assert!(belongs(&earlier_same_revision, &key(None)));
        let other_service = TaskView { group: Some("service:api".into()), ..unlabelled };
        assert!(!belongs(&other_service, &key(None)));
    }

    #[test]
    fn only_tasks_whose_state_may_have_changed_are_described() {
        let td = "arn:td/shop:2";
        let known: HashMap<String, TaskView> = [
            task("settled", "RUNNING", Some(HealthStatus::Healthy), "ecs-svc/2", td),
            task("starting", "PENDING", None, "ecs-svc/2", td),
            task("no-verdict", "RUNNING", Some(HealthStatus::from("UNKNOWN")), "ecs-svc/2", td),
            task("stopped", "STOPPED", None, "ecs-svc/2", td),
            task("gone", "RUNNING", Some(HealthStatus::Healthy), "ecs-svc/2", td),
            task("old", "RUNNING", Some(HealthStatus::from("UNKNOWN")), "ecs-svc/1", "arn:td/shop:1"),
        ]
        .into_iter()
        .map(|t| (t.arn.clone(), t))
        .collect();
        let listed: HashSet<String> =
            ["settled", "starting", "no-verdict", "old", "new"].into_iter().map(String::from).collect();
        let got = tasks_to_describe(&known, &listed, &[key(Some("ecs-svc/2"))]);
        // New to us; not running healthy yet; left the running list. Not: settled, final,
        // another deployment's.
        assert_eq!(got, ["gone", "new", "no-verdict", "starting"]);
    }

    #[test]
    fn stopped_tasks_are_listed_only_when_the_deployment_lost_some() {
        let d = |failed: i32, running: i32| DeploymentView { failed_tasks: failed, running, ..Default::default() };
        let table = [
            (None, Some(d(0, 0)), false),
            (None, Some(d(1, 0)), true),
            (Some(d(0, 1)), Some(d(0, 2)), false),
            (Some(d(0, 2)), Some(d(1, 2)), true),
            (Some(d(0, 2)), Some(d(0, 1)), true),
            (Some(d(2, 2)), Some(d(2, 2)), false),
            (Some(d(2, 2)), None, false),
        ];
        for (before, now, want) in table {
            assert_eq!(stopped_listing(before.as_ref(), now.as_ref()), want, "{before:?} → {now:?}");
        }
    }

    #[test]
    fn one_family_filters_the_listing_several_do_not() {
        let k = |td: &str| TaskKey { service: "s".into(), task_definition: td.into(), deployment_id: None };
        let same = [k("arn:aws:ecs:r:1:task-definition/shop:3"), k("arn:aws:ecs:r:1:task-definition/shop:3")];
        assert_eq!(family_filter(&same).as_deref(), Some("shop"));
        let mixed = [k("arn:aws:ecs:r:1:task-definition/shop:3"), k("arn:aws:ecs:r:1:task-definition/api:9")];
        assert_eq!(family_filter(&mixed), None);
        assert_eq!(family_filter(&[]), None);
    }

    #[test]
    fn our_deployment_is_the_one_this_deploy_started() {
        let d = |id: &str, td: &str, at: u64| DeploymentView {
            id: id.into(),
            task_definition: td.into(),
            created_at_ms: Some(at),
            ..Default::default()
        };
        let t = |td: &str, since_ms: u64, id: Option<&str>| Target {
            task_definition: td.into(),
            since_ms,
            deployment_id: id.map(str::to_string),
        };
        // A forced redeploy of the same revision: two deployments run it.
        let view = ServiceView {
            deployments: vec![d("ecs-svc/2", "td:2", 50_000), d("ecs-svc/1", "td:2", 10_000)],
            ..Default::default()
        };
        assert_eq!(our_deployment(&view, &t("td:2", 49_500, None)).map(|d| d.id.as_str()), Some("ecs-svc/2"));
        assert_eq!(our_deployment(&view, &t("td:2", 90_000, None)).map(|d| d.id.as_str()), Some("ecs-svc/2"), "newest");
        assert_eq!(our_deployment(&view, &t("td:2", 0, Some("ecs-svc/1"))).map(|d| d.id.as_str()), Some("ecs-svc/1"));
        assert!(our_deployment(&view, &t("td:3", 0, None)).is_none());
    }
}
