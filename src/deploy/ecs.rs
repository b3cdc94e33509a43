//! The ECS calls a deploy makes, each a thin wrapper that returns the typed views of `view`.
//! No decisions here, except how to send: every call first takes a token from the run's
//! shared limiter (`aws::limiter`, ECS's buckets), is counted, and is retried by deployer
//! itself — a `ThrottlingException` with a jittered backoff that starts at the bucket's refill
//! interval (the SDK's own retries are off for this client, so a fleet never drains the SDK's
//! process-wide retry budget), a transient error (5xx, timeout, connection) a few times.
//! Reads batch as ECS allows: DescribeServices 10 services per call, DescribeServiceDeployments
//! 20 ARNs, DescribeTasks 100 tasks; ListTasks pages through `nextToken`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    CreatedAt, DeploymentConfiguration, DeploymentLifecycleHookAction, DesiredStatus, SortOrder,
    StopServiceDeploymentStopType, TaskDefinitionStatus,
};
use futures_util::StreamExt;
use rand::Rng;

use super::DeployError;
use super::view::{DeploymentView, ServiceDeploymentView, ServiceView, TaskView, short};
use crate::aws::limiter::Limiter;

/// Services per DescribeServices, ARNs per DescribeServiceDeployments, tasks per
/// DescribeTasks: ECS's own maximums.
pub const SERVICES_PER_CALL: usize = 10;
pub const SERVICE_DEPLOYMENTS_PER_CALL: usize = 20;
pub const TASKS_PER_CALL: usize = 100;
/// Batches of one read in flight at once (the limiter paces them anyway).
const BATCHES_IN_FLIGHT: usize = 4;
/// ThrottlingExceptions one call rides out before it gives up: a change (UpdateService, a
/// stop, a hook's answer) about a minute of backoff; a read a few seconds, as the watch asks
/// again next round anyway (and never counts throttling as a failed check).
fn throttle_retries(op: &str) -> u32 {
    if op.starts_with("Describe") || op.starts_with("List") { 5 } else { 8 }
}
/// Transient failures (5xx, timeouts, connection errors) one call rides out.
const TRANSIENT_RETRIES: u32 = 3;

/// ECS's error codes for "slow down".
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
    )
}

/// An SDK error as a `DeployError::Api` that keeps the error as its source and the service's
/// error code for decisions (`ConflictException`, throttling).
fn api<E>(op: &'static str, e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> DeployError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    DeployError::Api {
        op,
        code: e.code().map(str::to_string),
        message: crate::aws::auth::sdk_message(&e),
        source: Box::new(e),
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    Throttled,
    Transient,
    Final,
}

fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> Failed {
    if e.code().is_some_and(is_throttling_code) {
        return Failed::Throttled;
    }
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Failed::Transient,
        SdkError::ServiceError(s) if s.raw().status().as_u16() >= 500 => Failed::Transient,
        _ => Failed::Final,
    }
}

/// The wait before retry `n` (1-based) of a throttled call: the bucket's refill interval,
/// doubling, at most 20 s (AWS's advice), jittered in the upper half.
pub fn throttle_backoff(refill: Duration, n: u32) -> Duration {
    let ceiling = refill.max(Duration::from_millis(20)).saturating_mul(1u32 << n.min(16)).min(Duration::from_secs(20));
    let half = ceiling / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=(ceiling - half).as_millis() as u64))
}

/// The ECS client a deploy uses: the session's configuration without the SDK's retries
/// (`Ecs` retries itself, per call, without a shared budget).
pub fn client(config: &aws_config::SdkConfig) -> Client {
    let conf = aws_sdk_ecs::config::Builder::from(config)
        .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// What UpdateService sends.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    pub task_definition: Option<String>,
    pub force: bool,
    pub configuration: Option<DeploymentConfiguration>,
}

/// What UpdateService answered.
#[derive(Debug, Clone, Default)]
pub struct Updated {
    /// The service's PRIMARY deployment afterwards (the new one when the update started one).
    pub primary: Option<DeploymentView>,
    /// `currentServiceDeployment`: the service deployment the update started, when ECS says.
    pub service_deployment: Option<String>,
}

/// Which tasks ListTasks lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub family: Option<String>,
    pub started_by: Option<String>,
    pub service: Option<String>,
    pub stopped: bool,
}

/// An ECS client that paces, retries and counts the calls made through it.
pub struct Ecs<'a> {
    client: &'a Client,
    limiter: &'a Limiter,
    calls: AtomicU32,
    by_op: Mutex<BTreeMap<String, u64>>,
    /// Whom the calls are for (a service, or a cluster's rounds), for the log.
    label: String,
}

/// A token of the UpdateService bucket taken ahead of the call (so what is checked just
/// before the update is not made stale by the wait for a token).
#[derive(Debug)]
pub struct Turn(());

impl<'a> Ecs<'a> {
    pub fn new(client: &'a Client, limiter: &'a Limiter) -> Ecs<'a> {
        Ecs { client, limiter, calls: AtomicU32::new(0), by_op: Mutex::default(), label: "deployer".into() }
    }

    /// Name whom the calls are for in log lines (a service, a cluster's rounds).
    pub fn labelled(self, label: impl Into<String>) -> Ecs<'a> {
        Ecs { label: label.into(), ..self }
    }

    /// Wait for an UpdateService token now; `update_service` with it sends at once.
    pub async fn update_turn(&self) -> Turn {
        self.limiter.acquire("UpdateService").await;
        Turn(())
    }

    /// Calls sent through this wrapper, per operation.
    pub fn calls_by_op(&self) -> BTreeMap<String, u64> {
        self.by_op.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Calls sent through this wrapper (retries included).
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// One call of `op`: a token, the request, deployer's own retries.
    async fn call<T, E, F, Fut>(&self, op: &'static str, send: F) -> Result<T, DeployError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        self.call_after(op, None, send).await
    }

    /// `call`, the first attempt on a token already taken (`turn`).
    async fn call_after<T, E, F, Fut>(
        &self,
        op: &'static str,
        turn: Option<Turn>,
        mut send: F,
    ) -> Result<T, DeployError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let (mut throttled, mut transient) = (0, 0);
        let mut turn = turn;
        loop {
            if turn.take().is_none() {
                self.limiter.acquire(op).await;
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            *self.by_op.lock().unwrap_or_else(|e| e.into_inner()).entry(op.to_string()).or_default() += 1;
            let e = match send().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(&e) {
                Failed::Throttled => {
                    let refill = self.limiter.throttled(op);
                    throttled += 1;
                    if throttled > throttle_retries(op) {
                        return Err(api(op, e));
                    }
                    let wait = throttle_backoff(refill, throttled);
                    tracing::debug!(
                        "{}: ECS throttled {op} ({throttled} in a row); trying again in {wait:?}",
                        self.label
                    );
                    tokio::time::sleep(wait).await;
                }
                Failed::Transient if transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    let wait = crate::retry::Backoff::default().delay(transient);
                    let e = crate::aws::auth::sdk_message(&e);
                    tracing::debug!("{}: {op} failed ({e}); trying again in {wait:?}", self.label);
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(api(op, e)),
            }
        }
    }

    /// `read` over `items` in batches of `size`, a few batches in flight at once, answers in
    /// the batches' order.
    async fn batched<'x, T, R, F, Fut>(&self, items: &'x [T], size: usize, read: F) -> Vec<Result<R, DeployError>>
    where
        F: Fn(&'x [T]) -> Fut,
        Fut: Future<Output = Result<R, DeployError>>,
    {
        futures_util::stream::iter(items.chunks(size)).map(read).buffered(BATCHES_IN_FLIGHT).collect().await
    }

    /// One service (a batch of one).
    pub async fn describe_service(&self, cluster: &str, service: &str) -> Result<ServiceView, DeployError> {
        let mut found = self.describe_services(cluster, &[service.to_string()]).await?;
        found.remove(service).unwrap_or_else(|| Err(not_found(cluster, service, "no such service")))
    }

    /// Services by name, 10 per DescribeServices call; each missing or INACTIVE one is an
    /// error of its own. An error of a whole call fails the lot.
    pub async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<BTreeMap<String, Result<ServiceView, DeployError>>, DeployError> {
        let answers = self
            .batched(services, SERVICES_PER_CALL, |chunk| {
                self.call("DescribeServices", move || {
                    self.client.describe_services().cluster(cluster).set_services(Some(chunk.to_vec())).send()
                })
            })
            .await;
        let mut out = BTreeMap::new();
        for answer in answers {
            let answer = answer?;
            for svc in answer.services() {
                let name = svc.service_name().unwrap_or_default().to_string();
                let view = if svc.status() == Some("INACTIVE") {
                    Err(not_found(cluster, &name, "it is INACTIVE (deleted)"))
                } else {
                    Ok(ServiceView::from_sdk(svc))
                };
                out.insert(name, view);
            }
            for f in answer.failures() {
                let name = short(f.arn().unwrap_or_default()).to_string();
                out.insert(name.clone(), Err(not_found(cluster, &name, f.reason().unwrap_or("MISSING"))));
            }
        }
        for s in services {
            out.entry(s.clone()).or_insert_with(|| Err(not_found(cluster, s, "ECS did not answer for it")));
        }
        Ok(out)
    }

    /// UpdateService.
    pub async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        req: &UpdateRequest,
    ) -> Result<Updated, DeployError> {
        self.update_service_after(None, cluster, service, req).await
    }

    /// UpdateService on a token taken ahead (`update_turn`).
    pub async fn update_service_after(
        &self,
        turn: Option<Turn>,
        cluster: &str,
        service: &str,
        req: &UpdateRequest,
    ) -> Result<Updated, DeployError> {
        let out = self
            .call_after("UpdateService", turn, || {
                self.client
                    .update_service()
                    .cluster(cluster)
                    .service(service)
                    .set_task_definition(req.task_definition.clone())
                    .set_force_new_deployment(Some(req.force).filter(|f| *f))
                    .set_deployment_configuration(req.configuration.clone())
                    .send()
            })
            .await?;
        let svc = out.service();
        Ok(Updated {
            primary: svc.map(ServiceView::from_sdk).and_then(|v| v.primary().cloned()),
            service_deployment: svc.and_then(|s| s.current_service_deployment()).map(str::to_string),
        })
    }

    /// The newest service deployment created around or after `since_ms` (ours, right after
    /// UpdateService; a second of slack for the two records' clocks, the newest wins).
    pub async fn find_service_deployment(&self, cluster: &str, service: &str, since_ms: u64) -> Option<String> {
        let after = aws_sdk_ecs::primitives::DateTime::from_millis(since_ms.saturating_sub(1000) as i64);
        let out = self
            .call("ListServiceDeployments", || {
                self.client
                    .list_service_deployments()
                    .cluster(cluster)
                    .service(service)
                    .created_at(CreatedAt::builder().after(after).build())
                    .send()
            })
            .await
            .ok()?;
        let mut briefs: Vec<_> = out.service_deployments().to_vec();
        briefs.sort_by_key(|b| b.created_at().map(|t| (t.secs(), t.subsec_nanos())));
        briefs.last().and_then(|b| b.service_deployment_arn()).map(str::to_string)
    }

    pub async fn service_deployment(&self, arn: &str) -> Result<Option<ServiceDeploymentView>, DeployError> {
        Ok(self.service_deployments(&[arn.to_string()]).await?.remove(arn))
    }

    /// Service deployments by ARN, 20 per DescribeServiceDeployments call.
    pub async fn service_deployments(
        &self,
        arns: &[String],
    ) -> Result<BTreeMap<String, ServiceDeploymentView>, DeployError> {
        let answers = self
            .batched(arns, SERVICE_DEPLOYMENTS_PER_CALL, |chunk| {
                self.call("DescribeServiceDeployments", move || {
                    self.client.describe_service_deployments().set_service_deployment_arns(Some(chunk.to_vec())).send()
                })
            })
            .await;
        let mut out = BTreeMap::new();
        for answer in answers {
            for sd in answer?.service_deployments() {
                let view = ServiceDeploymentView::from_sdk(sd);
                out.insert(view.arn.clone(), view);
            }
        }
        Ok(out)
    }

    /// Task ARNs of `cluster` that `filter` selects (every page).
    pub async fn list_tasks(&self, cluster: &str, filter: &TaskFilter) -> Result<Vec<String>, DeployError> {
        let status = if filter.stopped { DesiredStatus::Stopped } else { DesiredStatus::Running };
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: 100 pages of 100 tasks is more than any cluster deployer watches.
        for _ in 0..100 {
            let out = self
                .call("ListTasks", || {
                    self.client
                        .list_tasks()
                        .cluster(cluster)
                        .set_family(filter.family.clone())
                        .set_started_by(filter.started_by.clone())
                        .set_service_name(filter.service.clone())
                        .desired_status(status.clone())
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            arns.extend(out.task_arns().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(arns)
    }

    /// Running and stopped tasks of `service` that run `task_definition` and, when given, were
    /// started by `started_by` (a deployment's id: a redeploy of the revision already running
    /// tells its tasks apart by it).
    pub async fn tasks_of(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        started_by: Option<&str>,
    ) -> Result<Vec<TaskView>, DeployError> {
        let mut arns = Vec::new();
        for stopped in [false, true] {
            let filter = TaskFilter { service: Some(service.to_string()), stopped, ..TaskFilter::default() };
            arns.extend(self.list_tasks(cluster, &filter).await?);
        }
        let tasks = self.describe_tasks(cluster, &arns).await?;
        let ours: Vec<TaskView> = tasks
            .into_iter()
            .filter(|t| {
                t.task_definition == task_definition && started_by.is_none_or(|by| t.started_by.as_deref() == Some(by))
            })
            .collect();
        tracing::debug!("{}: {} of {} listed tasks run {}", self.label, ours.len(), arns.len(), short(task_definition));
        Ok(ours)
    }

    /// Tasks by ARN, 100 per DescribeTasks call.
    pub async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<TaskView>, DeployError> {
        let answers = self
            .batched(arns, TASKS_PER_CALL, |chunk| {
                self.call("DescribeTasks", move || {
                    self.client.describe_tasks().cluster(cluster).set_tasks(Some(chunk.to_vec())).send()
                })
            })
            .await;
        let mut tasks = Vec::new();
        for answer in answers {
            tasks.extend(answer?.tasks().iter().map(TaskView::from_sdk));
        }
        Ok(tasks)
    }

    pub async fn stop_service_deployment(&self, arn: &str) -> Result<(), DeployError> {
        self.call("StopServiceDeployment", || {
            self.client
                .stop_service_deployment()
                .service_deployment_arn(arn)
                .stop_type(StopServiceDeploymentStopType::Rollback)
                .send()
        })
        .await?;
        Ok(())
    }

    pub async fn answer_hook(
        &self,
        arn: &str,
        hook_id: &str,
        action: DeploymentLifecycleHookAction,
    ) -> Result<(), DeployError> {
        self.call("ContinueServiceDeployment", || {
            self.client
                .continue_service_deployment()
                .service_deployment_arn(arn)
                .hook_id(hook_id)
                .action(action.clone())
                .send()
        })
        .await?;
        Ok(())
    }

    /// The ACTIVE revision of the same family just below `current`.
    pub async fn previous_revision(&self, current: &str) -> Result<String, DeployError> {
        let no_revision = |why: String| DeployError::Precondition(why);
        let (family, revision) = short(current)
            .rsplit_once(':')
            .and_then(|(f, r)| Some((f.to_string(), r.parse::<i64>().ok()?)))
            .ok_or_else(|| no_revision(format!("cannot read the family and revision of {current}")))?;
        let out = self
            .call("ListTaskDefinitions", || {
                self.client
                    .list_task_definitions()
                    .family_prefix(&family)
                    .status(TaskDefinitionStatus::Active)
                    .sort(SortOrder::Desc)
                    .send()
            })
            .await?;
        let below = |arn: &&String| {
            short(arn)
                .rsplit_once(':')
                .is_some_and(|(f, r)| f == family && r.parse::<i64>().is_ok_and(|r| r < revision))
        };
        out.task_definition_arns()
            .iter()
            .find(below)
            .cloned()
            .ok_or_else(|| no_revision(format!("{family} has no ACTIVE revision before {revision}; pass --to ARN")))
    }
}

fn not_found(cluster: &str, service: &str, reason: &str) -> DeployError {
    DeployError::ServiceNotFound {
        cluster: cluster.to_string(),
        service: service.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_backoff_starts_at_the_refill_interval_and_stops_at_20_s() {
        let refill = Duration::from_millis(200);
        for n in 1..=12 {
            let d = throttle_backoff(refill, n);
            let ceiling = (refill * (1 << n)).min(Duration::from_secs(20));
            assert!(d >= ceiling / 2 && d <= ceiling, "retry {n}: {d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
        }
        assert!(throttle_backoff(Duration::ZERO, 1) >= Duration::from_millis(20));
        assert!(throttle_backoff(refill, 40) <= Duration::from_secs(20));
    }

    #[test]
    fn throttling_codes_are_recognised() {
        for code in ["ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"] {
            assert!(is_throttling_code(code), "{code}");
        }
        assert!(!is_throttling_code("AccessDeniedException"));
        assert!(!is_throttling_code("ConflictException"));
    }
}
