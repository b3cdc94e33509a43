//! The ECS calls a deploy makes, each a thin wrapper that returns the typed views of `view`
//! and counts itself, so a report can say how many calls a deploy cost. No decisions here.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    CreatedAt, DeploymentConfiguration, DeploymentLifecycleHookAction, DesiredStatus, SortOrder,
    StopServiceDeploymentStopType, TaskDefinitionStatus,
};

use super::DeployError;
use super::view::{DeploymentView, ServiceDeploymentView, ServiceView, TaskView, short};

/// An SDK error as a `DeployError::Api` that keeps the error as its source and the service's
/// error code for decisions (`ConflictException`).
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

/// What UpdateService sends.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    pub task_definition: Option<String>,
    pub force: bool,
    pub configuration: Option<DeploymentConfiguration>,
}

/// An ECS client that counts the calls made through it.
pub struct Ecs<'a> {
    client: &'a Client,
    calls: AtomicU32,
}

impl<'a> Ecs<'a> {
    pub fn new(client: &'a Client) -> Ecs<'a> {
        Ecs { client, calls: AtomicU32::new(0) }
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn describe_service(&self, cluster: &str, service: &str) -> Result<ServiceView, DeployError> {
        self.count();
        let out = self
            .client
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
        let svc = out.services().first().ok_or_else(|| not_found("no such service"))?;
        if svc.status() == Some("INACTIVE") {
            return Err(not_found("it is INACTIVE (deleted)"));
        }
        Ok(ServiceView::from_sdk(svc))
    }

    /// UpdateService; returns the service's PRIMARY deployment afterwards (the new one when
    /// the update started a deployment).
    pub async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        req: &UpdateRequest,
    ) -> Result<Option<DeploymentView>, DeployError> {
        self.count();
        let out = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .set_task_definition(req.task_definition.clone())
            .set_force_new_deployment(Some(req.force).filter(|f| *f))
            .set_deployment_configuration(req.configuration.clone())
            .send()
            .await
            .map_err(|e| api("UpdateService", e))?;
        Ok(out.service().map(ServiceView::from_sdk).and_then(|v| v.primary().cloned()))
    }

    /// The newest service deployment created around or after `since_ms` (ours, right after
    /// UpdateService; a second of slack for the two records' clocks, the newest wins).
    pub async fn find_service_deployment(&self, cluster: &str, service: &str, since_ms: u64) -> Option<String> {
        self.count();
        let after = aws_sdk_ecs::primitives::DateTime::from_millis(since_ms.saturating_sub(1000) as i64);
        let out = self
            .client
            .list_service_deployments()
            .cluster(cluster)
            .service(service)
            .created_at(CreatedAt::builder().after(after).build())
            .send()
            .await
            .ok()?;
        let mut briefs: Vec<_> = out.service_deployments().to_vec();
        briefs.sort_by_key(|b| b.created_at().map(|t| (t.secs(), t.subsec_nanos())));
        briefs.last().and_then(|b| b.service_deployment_arn()).map(str::to_string)
    }

    pub async fn service_deployment(&self, arn: &str) -> Result<Option<ServiceDeploymentView>, DeployError> {
        self.count();
        let out = self
            .client
            .describe_service_deployments()
            .service_deployment_arns(arn)
            .send()
            .await
            .map_err(|e| api("DescribeServiceDeployments", e))?;
        Ok(out.service_deployments().first().map(ServiceDeploymentView::from_sdk))
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
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            self.count();
            let out = self
                .client
                .list_tasks()
                .cluster(cluster)
                .service_name(service)
                .desired_status(status)
                .send()
                .await
                .map_err(|e| api("ListTasks", e))?;
            arns.extend(out.task_arns().iter().cloned());
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            self.count();
            let out = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api("DescribeTasks", e))?;
            let ours = out.tasks().iter().filter(|t| {
                t.task_definition_arn() == Some(task_definition)
                    && started_by.is_none_or(|by| t.started_by() == Some(by))
            });
            tasks.extend(ours.map(TaskView::from_sdk));
        }
        tracing::debug!("{} of {} listed tasks run {}", tasks.len(), arns.len(), short(task_definition));
        Ok(tasks)
    }

    pub async fn stop_service_deployment(&self, arn: &str) -> Result<(), DeployError> {
        self.count();
        self.client
            .stop_service_deployment()
            .service_deployment_arn(arn)
            .stop_type(StopServiceDeploymentStopType::Rollback)
            .send()
            .await
            .map_err(|e| api("StopServiceDeployment", e))?;
        Ok(())
    }

    pub async fn answer_hook(
        &self,
        arn: &str,
        hook_id: &str,
        action: DeploymentLifecycleHookAction,
    ) -> Result<(), DeployError> {
        self.count();
        self.client
            .continue_service_deployment()
            .service_deployment_arn(arn)
            .hook_id(hook_id)
            .action(action)
            .send()
            .await
            .map_err(|e| api("ContinueServiceDeployment", e))?;
        Ok(())
    }

    /// The ACTIVE revision of the same family just below `current`.
    pub async fn previous_revision(&self, current: &str) -> Result<String, DeployError> {
        let no_revision = |why: String| DeployError::Precondition(why);
        let (family, revision) = short(current)
            .rsplit_once(':')
            .and_then(|(f, r)| Some((f.to_string(), r.parse::<i64>().ok()?)))
            .ok_or_else(|| no_revision(format!("cannot read the family and revision of {current}")))?;
        self.count();
        let out = self
            .client
            .list_task_definitions()
            .family_prefix(&family)
            .status(TaskDefinitionStatus::Active)
            .sort(SortOrder::Desc)
            .send()
            .await
            .map_err(|e| api("ListTaskDefinitions", e))?;
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
