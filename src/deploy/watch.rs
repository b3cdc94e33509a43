//! Observing a deployment: one `observe` call makes the DescribeServices /
//! DescribeServiceDeployments / ListTasks / DescribeTasks calls and the probe requests of one
//! poll, and turns the answers into the plain `Observation` the gate decides on. It also keeps
//! what a failure report needs: service events since the deploy began and stopped tasks.

use std::time::{Duration, Instant};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{DesiredStatus, Service};

use super::DeployError;
use super::gate::{ContainerState, DeploymentState, Observation, Probe, TaskState};

/// The adaptive poll interval: starts short, grows while nothing changes, resets on change,
/// never above the ceiling. `DEPLOYER_POLL_MS` scales it (tests run against a fast sim).
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub initial: Duration,
    pub max: Duration,
    current: Duration,
}

impl Pacing {
    /// 2 s growing to 10 s; `DEPLOYER_POLL_MS` / `DEPLOYER_POLL_MAX_MS` change both (tests
    /// against a fast sim, and bench/deploy.sh's fixed 15 s comparison).
    pub fn from_env() -> Pacing {
        let ms = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok());
        let initial = ms("DEPLOYER_POLL_MS").unwrap_or(2000);
        let max = ms("DEPLOYER_POLL_MAX_MS").unwrap_or(initial * 5).max(initial);
        Pacing::new(Duration::from_millis(initial), Duration::from_millis(max))
    }

    pub fn new(initial: Duration, max: Duration) -> Pacing {
        Pacing { initial, max, current: initial }
    }

    /// The next wait: ×1.5 when nothing changed, back to the start when something did.
    pub fn next(&mut self, changed: bool) -> Duration {
        self.current = if changed { self.initial } else { (self.current.mul_f64(1.5)).min(self.max) };
        self.current
    }
}

/// The service as DescribeServices shows it, reduced to what deploy needs.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub task_definition: String,
    pub controller: String,
    pub strategy: Option<String>,
    pub deployments: Vec<(String, String, String, String)>, // (id, status, task definition, rollout state)
    pub desired: i32,
}

impl ServiceView {
    pub fn in_progress(&self) -> bool {
        self.deployments.len() > 1 || self.deployments.iter().any(|d| d.3 == "IN_PROGRESS")
    }
}

pub struct Watcher<'a> {
    pub ecs: &'a Client,
    pub http: &'a reqwest::Client,
    pub cluster: String,
    pub service: String,
    pub task_definition: String,
    pub probe_urls: Vec<String>,
    pub started: Instant,
    pub started_at: DateTime,
    pub service_deployment_arn: Option<String>,
    pub api_calls: u32,
    /// Service events seen since the deploy began, oldest first (id, message).
    pub events: Vec<(String, String)>,
    /// Stopped tasks of the new revision (their descriptions).
    pub stopped: Vec<String>,
    /// When ECS first began stopping a failed task of the new revision (epoch ms).
    pub first_failure_ms: Option<u64>,
    /// The ServiceDeployment as the last poll described it (blue/green reads its stage).
    pub last_service_deployment: Option<aws_sdk_ecs::types::ServiceDeployment>,
    /// Our deployment's id, when the task definition cannot tell it apart (a forced new
    /// deployment of the revision already running): ours is this deployment, and its tasks
    /// are those it started (`startedBy`).
    pub deployment_id: Option<String>,
    last: Option<Observation>,
}

fn api<E>(op: &'static str, e: aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> DeployError
where
    E: std::error::Error + aws_sdk_ecs::error::ProvideErrorMetadata + 'static,
{
    DeployError::Api { op, message: crate::aws::auth::sdk_message(&e) }
}

pub async fn describe_service(
    ecs: &Client,
    cluster: &str,
    service: &str,
) -> Result<(Service, ServiceView), DeployError> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| api("DescribeServices", e))?;
    let not_found = |reason: &str| DeployError::ServiceNotFound {
        cluster: cluster.to_string(),
        service: service.to_string(),
        reason: reason.to_string(),
    };
    if let Some(f) = out.failures().first() {
        return Err(not_found(f.reason().unwrap_or("MISSING")));
    }
    let svc = out.services().first().cloned().ok_or_else(|| not_found("no such service"))?;
    if svc.status() == Some("INACTIVE") {
        return Err(not_found("it is INACTIVE (deleted)"));
    }
    let view = ServiceView {
        task_definition: svc.task_definition().unwrap_or_default().to_string(),
        controller: svc
            .deployment_controller()
            .map(|c| c.r#type().as_str().to_string())
            .unwrap_or_else(|| "ECS".into()),
        strategy: svc.deployment_configuration().and_then(|c| c.strategy()).map(|s| s.as_str().to_string()),
        deployments: svc
            .deployments()
            .iter()
            .map(|d| {
                (
                    d.id().unwrap_or_default().to_string(),
                    d.status().unwrap_or_default().to_string(),
                    d.task_definition().unwrap_or_default().to_string(),
                    d.rollout_state().map(|r| r.as_str().to_string()).unwrap_or_default(),
                )
            })
            .collect(),
        desired: svc.desired_count(),
    };
    Ok((svc, view))
}

impl<'a> Watcher<'a> {
    pub fn new(
        ecs: &'a Client,
        http: &'a reqwest::Client,
        req: &super::rolling::DeployRequest,
        started_at: DateTime,
    ) -> Self {
        Watcher {
            ecs,
            http,
            cluster: req.cluster.clone(),
            service: req.service.clone(),
            task_definition: req.task_definition.clone(),
            probe_urls: req.gate.probe_urls.clone(),
            started: Instant::now(),
            started_at,
            service_deployment_arn: None,
            api_calls: 0,
            events: Vec::new(),
            stopped: Vec::new(),
            first_failure_ms: None,
            last_service_deployment: None,
            deployment_id: None,
            last: None,
        }
    }

    /// Is `d` the deployment this watch is about?
    fn is_ours(&self, d: &aws_sdk_ecs::types::Deployment) -> bool {
        match &self.deployment_id {
            Some(id) => d.id() == Some(id.as_str()),
            None => d.task_definition() == Some(self.task_definition.as_str()),
        }
    }

    /// One poll: ECS state, tasks of the new revision, one probe per URL.
    pub async fn observe(&mut self) -> Result<Observation, DeployError> {
        let (svc, _) = describe_service(self.ecs, &self.cluster, &self.service).await?;
        self.api_calls += 1;
        for e in svc.events().iter().rev() {
            let after_start = e.created_at().is_some_and(|t| t.secs() >= self.started_at.secs() - 1);
            let id = e.id().unwrap_or_default().to_string();
            if after_start && !self.events.iter().any(|(seen, _)| *seen == id) {
                let message = e.message().unwrap_or_default().to_string();
                tracing::info!("ECS: {message}");
                self.events.push((id, message));
            }
        }
        let ours = svc.deployments().iter().find(|d| self.is_ours(d));
        let deployment = ours.map(|d| DeploymentState {
            rollout_state: d.rollout_state().map(|r| r.as_str().to_string()).unwrap_or_default(),
            rollout_reason: d.rollout_state_reason().map(str::to_string),
            desired: d.desired_count(),
            running: d.running_count(),
            pending: d.pending_count(),
            failed_tasks: d.failed_tasks(),
        });
        let primary_is_ours =
            svc.deployments().iter().find(|d| d.status() == Some("PRIMARY")).map(|d| self.is_ours(d)).unwrap_or(false);
        let service_deployment_status = self.service_deployment_status().await?;
        let tasks = self.tasks().await?;
        let probes = self.probe_all().await;
        let obs = Observation {
            elapsed: self.started.elapsed(),
            deployment,
            primary_is_ours,
            service_deployment_status,
            tasks,
            probes,
        };
        Ok(obs)
    }

    /// Did anything but time and probe answers change since the last observation?
    pub fn changed(&mut self, obs: &Observation) -> bool {
        let strip = |o: &Observation| {
            (o.deployment.clone(), o.primary_is_ours, o.service_deployment_status.clone(), o.tasks.clone())
        };
        let changed = self.last.as_ref().is_none_or(|l| strip(l) != strip(obs));
        self.last = Some(obs.clone());
        changed
    }

    /// Find (once) and read the ServiceDeployment our UpdateService created.
    async fn service_deployment_status(&mut self) -> Result<Option<String>, DeployError> {
        if self.service_deployment_arn.is_none() {
            self.service_deployment_arn =
                find_service_deployment(self.ecs, &self.cluster, &self.service, self.started_at).await;
            self.api_calls += 1;
        }
        let Some(arn) = &self.service_deployment_arn else { return Ok(None) };
        let out = self
            .ecs
            .describe_service_deployments()
            .service_deployment_arns(arn)
            .send()
            .await
            .map_err(|e| api("DescribeServiceDeployments", e))?;
        self.api_calls += 1;
        self.last_service_deployment = out.service_deployments().first().cloned();
        Ok(out.service_deployments().first().and_then(|d| d.status()).map(|s| s.as_str().to_string()))
    }

    /// One more look at the new revision's tasks after a failure, so the report names every
    /// task that stopped (ECS may have stopped more since the deciding observation).
    pub async fn sweep(&mut self) {
        if let Err(e) = self.tasks().await {
            tracing::debug!("final look at the tasks failed: {e}");
        }
    }

    /// Running and stopped tasks of the new revision.
    async fn tasks(&mut self) -> Result<Vec<TaskState>, DeployError> {
        let mut arns = Vec::new();
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let out = self
                .ecs
                .list_tasks()
                .cluster(&self.cluster)
                .service_name(&self.service)
                .desired_status(status)
                .send()
                .await
                .map_err(|e| api("ListTasks", e))?;
            self.api_calls += 1;
            arns.extend(out.task_arns().iter().cloned());
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api("DescribeTasks", e))?;
            self.api_calls += 1;
            for t in out.tasks() {
                if t.task_definition_arn() != Some(self.task_definition.as_str()) {
                    continue;
                }
                if self.deployment_id.as_deref().is_some_and(|id| t.started_by() != Some(id)) {
                    continue;
                }
                let state = TaskState {
                    arn: t.task_arn().unwrap_or_default().to_string(),
                    last_status: t.last_status().unwrap_or_default().to_string(),
                    health: t.health_status().map(|h| h.as_str().to_string()).unwrap_or_default(),
                    stop_code: t.stop_code().map(|c| c.as_str().to_string()),
                    stopped_reason: t.stopped_reason().map(str::to_string),
                    containers: t
                        .containers()
                        .iter()
                        .map(|c| ContainerState {
                            name: c.name().unwrap_or_default().to_string(),
                            exit_code: c.exit_code(),
                            reason: c.reason().map(str::to_string),
                        })
                        .collect(),
                    stopping_at_ms: t.stopping_at().or(t.stopped_at()).map(epoch_ms),
                };
                if state.failed() {
                    if let Some(at) = state.stopping_at_ms {
                        self.first_failure_ms = Some(self.first_failure_ms.map_or(at, |f| f.min(at)));
                    }
                    let text = state.to_string();
                    if !self.stopped.contains(&text) {
                        self.stopped.push(text);
                    }
                }
                tasks.push(state);
            }
        }
        tracing::debug!(
            "{} of {} listed tasks are of the new revision: {:?}",
            tasks.len(),
            arns.len(),
            tasks.iter().map(|t| format!("{} {} {:?}", t.last_status, t.health, t.stopped_reason)).collect::<Vec<_>>()
        );
        Ok(tasks)
    }

    async fn probe_all(&self) -> Vec<Probe> {
        let mut out = Vec::new();
        for url in &self.probe_urls {
            out.push(probe(self.http, url).await);
        }
        out
    }
}

pub fn epoch_ms(t: &DateTime) -> u64 {
    (t.secs().max(0) as u64) * 1000 + u64::from(t.subsec_nanos() / 1_000_000)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The newest ServiceDeployment created since `since` (ours, right after UpdateService).
pub async fn find_service_deployment(ecs: &Client, cluster: &str, service: &str, since: DateTime) -> Option<String> {
    let after = DateTime::from_secs(since.secs() - 1);
    let out = ecs
        .list_service_deployments()
        .cluster(cluster)
        .service(service)
        .created_at(aws_sdk_ecs::types::CreatedAt::builder().after(after).build())
        .send()
        .await
        .ok()?;
    let mut briefs: Vec<_> = out.service_deployments().to_vec();
    briefs.sort_by_key(|b| b.created_at().map(|t| (t.secs(), t.subsec_nanos())));
    briefs.last().and_then(|b| b.service_deployment_arn()).map(str::to_string)
}

/// GET `url`: good is 2xx, and for a JSON body a `status` of ok/healthy/up/pass when present.
pub async fn probe(http: &reqwest::Client, url: &str) -> Probe {
    match http.get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let detail: String = body.chars().take(200).collect();
            let json_ok = match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => match v.get("status").and_then(|s| s.as_str()) {
                    Some(s) => matches!(s.to_ascii_lowercase().as_str(), "ok" | "healthy" | "up" | "pass"),
                    None => true,
                },
                Err(_) => true,
            };
            Probe { url: url.to_string(), ok: (200..300).contains(&status) && json_ok, status: Some(status), detail }
        }
        Err(e) => Probe { url: url.to_string(), ok: false, status: None, detail: crate::github::oidc::without_url(&e) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_grows_on_quiet_and_resets_on_change_never_above_the_ceiling() {
        let mut p = Pacing::new(Duration::from_secs(2), Duration::from_secs(10));
        let waits: Vec<u64> =
            [false, false, false, false, false, true, false].iter().map(|c| p.next(*c).as_millis() as u64).collect();
        assert_eq!(waits, [3000, 4500, 6750, 10000, 10000, 2000, 3000]);
    }
}
