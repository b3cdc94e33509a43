//! Services under the CODE_DEPLOY deployment controller: the third strategy of the driver, and
//! the CodeDeploy calls it needs. Before any change the deployment group is found (flags, else
//! the one ECS application's group that names the service, as ecspresso does) and checked, and
//! a deployment already running in it counts as busy. The start is a CreateDeployment of an
//! AppSpec built from the service's current task set; the watch adds GetDeployment and
//! GetDeploymentTarget to each poll (`Follow`); the gate (`codedeploy_lifecycle`) continues the
//! READY wait once the test listener answered well; a failure goes back through
//! StopDeployment(autoRollbackEnabled=true) (`settle` calls `CodeDeployApi`). Each call is a
//! thin wrapper that counts itself; no decisions here.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_codedeploy::Client;
use aws_sdk_codedeploy::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_codedeploy::types::{
    AppSpecContent, ComputePlatform, DeploymentInfo, DeploymentStatus, DeploymentWaitType, RevisionLocation,
    RevisionLocationType,
};
use sha2::{Digest, Sha256};

use super::codedeploy_lifecycle::{self as cdl, CodeDeployGate, CreateDeployment};
use super::codedeploy_view::{CodeDeployView, GroupView};
use super::gate::{Failure, Observation};
use super::plan::{CodeDeploySettings, GateConfig, Poll, Strategy as Kind};
use super::settle::Route;
use super::strategy::{Start, Strategy};
use super::view::{ServiceView, short};
use super::{Cancel, DeployError};

/// Pages of a list call deployer reads at most (100 names a page).
const MAX_PAGES: usize = 50;

fn api<E>(op: &'static str, e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> DeployError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    DeployError::CodeDeployApi {
        op,
        code: e.code().map(str::to_string),
        message: crate::aws::auth::sdk_message(&e),
        source: Box::new(e),
    }
}

/// A CodeDeploy client that counts the calls made through it.
pub struct CodeDeployApi<'a> {
    client: &'a Client,
    calls: AtomicU32,
}

impl<'a> CodeDeployApi<'a> {
    pub fn new(client: &'a Client) -> CodeDeployApi<'a> {
        CodeDeployApi { client, calls: AtomicU32::new(0) }
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Every application's name (paged).
    async fn application_names(&self) -> Result<Vec<String>, DeployError> {
        let (mut names, mut token) = (Vec::new(), None);
        for _ in 0..MAX_PAGES {
            self.count();
            let out = self
                .client
                .list_applications()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api("ListApplications", e))?;
            names.extend(out.applications().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(names)
    }

    /// Those of `names` whose compute platform is ECS.
    async fn ecs_applications(&self, names: &[String]) -> Result<Vec<String>, DeployError> {
        let mut ecs = Vec::new();
        for chunk in names.chunks(100) {
            self.count();
            let out = self
                .client
                .batch_get_applications()
                .set_application_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api("BatchGetApplications", e))?;
            let infos = out.applications_info().iter();
            let on_ecs = infos.filter(|a| a.compute_platform() == Some(&ComputePlatform::Ecs));
            ecs.extend(on_ecs.filter_map(|a| a.application_name().map(str::to_string)));
        }
        Ok(ecs)
    }

    /// Every deployment group of `application`, read.
    async fn groups_of(&self, application: &str) -> Result<Vec<GroupView>, DeployError> {
        let (mut names, mut token) = (Vec::new(), None);
        for _ in 0..MAX_PAGES {
            self.count();
            let out = self
                .client
                .list_deployment_groups()
                .application_name(application)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api("ListDeploymentGroups", e))?;
            names.extend(out.deployment_groups().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut groups = Vec::new();
        for chunk in names.chunks(100) {
            self.count();
            let out = self
                .client
                .batch_get_deployment_groups()
                .application_name(application)
                .set_deployment_group_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api("BatchGetDeploymentGroups", e))?;
            groups.extend(out.deployment_groups_info().iter().map(GroupView::from_sdk));
        }
        Ok(groups)
    }

    async fn group(&self, application: &str, name: &str) -> Result<GroupView, DeployError> {
        self.count();
        let out = self
            .client
            .get_deployment_group()
            .application_name(application)
            .deployment_group_name(name)
            .send()
            .await
            .map_err(|e| api("GetDeploymentGroup", e))?;
        let info = out.deployment_group_info().ok_or_else(|| {
            DeployError::Precondition(format!("CodeDeploy returned no deployment group {application}/{name}"))
        })?;
        Ok(GroupView::from_sdk(info))
    }

    /// GetDeploymentConfig: the named deployment configuration exists.
    async fn deployment_config(&self, name: &str) -> Result<(), DeployError> {
        self.count();
        self.client
            .get_deployment_config()
            .deployment_config_name(name)
            .send()
            .await
            .map_err(|e| api("GetDeploymentConfig", e))?;
        Ok(())
    }

    /// Deployments of the group not finished yet (Created, Queued, InProgress, Ready, Baking).
    pub async fn active_deployments(&self, group: &GroupView) -> Result<Vec<String>, DeployError> {
        self.count();
        let out = self
            .client
            .list_deployments()
            .application_name(&group.application)
            .deployment_group_name(&group.name)
            .include_only_statuses(DeploymentStatus::Created)
            .include_only_statuses(DeploymentStatus::Queued)
            .include_only_statuses(DeploymentStatus::InProgress)
            .include_only_statuses(DeploymentStatus::Ready)
            .include_only_statuses(DeploymentStatus::Baking)
            .send()
            .await
            .map_err(|e| api("ListDeployments", e))?;
        Ok(out.deployments().to_vec())
    }

    /// CreateDeployment of `req`'s AppSpec (with its sha256); the deployment id.
    pub async fn create_deployment(&self, req: &CreateDeployment) -> Result<String, DeployError> {
        self.count();
        let sha256 = format!("{:x}", Sha256::digest(req.appspec.as_bytes()));
        let revision = RevisionLocation::builder()
            .revision_type(RevisionLocationType::AppSpecContent)
            .app_spec_content(AppSpecContent::builder().content(&req.appspec).sha256(sha256).build())
            .build();
        let out = self
            .client
            .create_deployment()
            .application_name(&req.application)
            .deployment_group_name(&req.deployment_group)
            .set_deployment_config_name(req.deployment_config.clone())
            .description(&req.description)
            .revision(revision)
            .send()
            .await
            .map_err(|e| api("CreateDeployment", e))?;
        out.deployment_id()
            .map(str::to_string)
            .ok_or_else(|| DeployError::Precondition("CodeDeploy's CreateDeployment returned no deployment id".into()))
    }

    /// The deployment's ECS target (`cluster:service`), once CodeDeploy lists it.
    async fn target_id(&self, deployment: &str) -> Result<Option<String>, DeployError> {
        self.count();
        let out = self
            .client
            .list_deployment_targets()
            .deployment_id(deployment)
            .send()
            .await
            .map_err(|e| api("ListDeploymentTargets", e))?;
        Ok(out.target_ids().first().cloned())
    }

    /// One look at the deployment: GetDeployment, and GetDeploymentTarget when `target` is known.
    pub async fn view(&self, deployment: &str, target: Option<&str>) -> Result<CodeDeployView, DeployError> {
        self.count();
        let out =
            self.client.get_deployment().deployment_id(deployment).send().await.map_err(|e| api("GetDeployment", e))?;
        let info = out.deployment_info().cloned().unwrap_or_else(|| DeploymentInfo::builder().build());
        let ecs_target = match target {
            Some(t) => {
                self.count();
                let out = self
                    .client
                    .get_deployment_target()
                    .deployment_id(deployment)
                    .target_id(t)
                    .send()
                    .await
                    .map_err(|e| api("GetDeploymentTarget", e))?;
                out.deployment_target().and_then(|t| t.ecs_target()).cloned()
            }
            None => None,
        };
        Ok(CodeDeployView::from_sdk(&info, ecs_target.as_ref()))
    }

    pub async fn continue_deployment(&self, deployment: &str, wait: DeploymentWaitType) -> Result<(), DeployError> {
        self.count();
        self.client
            .continue_deployment()
            .deployment_id(deployment)
            .deployment_wait_type(wait)
            .send()
            .await
            .map_err(|e| api("ContinueDeployment", e))?;
        Ok(())
    }

    /// StopDeployment with auto-rollback: CodeDeploy sends traffic back to the original task set.
    pub async fn stop(&self, deployment: &str) -> Result<(), DeployError> {
        self.count();
        self.client
            .stop_deployment()
            .deployment_id(deployment)
            .auto_rollback_enabled(true)
            .send()
            .await
            .map_err(|e| api("StopDeployment", e))?;
        Ok(())
    }

    /// Follow `deployment` until it is past its READY wait (continuing it there) or over, within
    /// `timeout`: a rollback's redeploy is not held on test traffic.
    pub async fn release_ready(&self, deployment: &str, timeout: Duration, poll: Poll) -> Result<(), DeployError> {
        let (started, never, mut pacing) = (Instant::now(), Cancel::default(), poll.pacing());
        while started.elapsed() < timeout {
            let v = self.view(deployment, None).await?;
            if v.ready_wait() {
                return self.continue_deployment(deployment, DeploymentWaitType::ReadyWait).await;
            }
            if !v.active() || v.termination_wait_started {
                return Ok(());
            }
            never.sleep(pacing.next(false).min(poll.initial * 2)).await;
        }
        Ok(())
    }
}

/// The deployment group of `cluster`/`service`: the one `settings` names, else the one deployment
/// group of an ECS application that deploys the service; and the deployment configuration
/// `settings` names exists.
pub async fn find_group(
    cd: &CodeDeployApi<'_>,
    cluster: &str,
    service: &str,
    settings: &CodeDeploySettings,
) -> Result<GroupView, DeployError> {
    let groups = match (&settings.application, &settings.deployment_group) {
        (Some(app), Some(group)) => vec![cd.group(app, group).await?],
        (Some(app), None) => cd.groups_of(app).await?,
        (None, _) => {
            let apps = cd.ecs_applications(&cd.application_names().await?).await?;
            let mut groups = Vec::new();
            for app in apps {
                groups.extend(cd.groups_of(&app).await?);
            }
            groups
        }
    };
    let group = cdl::pick_group(&groups, cluster, service, settings).map_err(DeployError::Precondition)?;
    cdl::check_group(group).map_err(DeployError::Precondition)?;
    if let Some(name) = &settings.deployment_config {
        cd.deployment_config(name).await?;
    }
    Ok(group.clone())
}

/// A deployment of the group already running, for the busy check.
pub async fn busy(cd: &CodeDeployApi<'_>, group: &GroupView) -> Result<Option<String>, DeployError> {
    let active = cd.active_deployments(group).await?;
    Ok(active
        .first()
        .map(|id| format!("CodeDeploy deployment {id} of {}/{} is still running", group.application, group.name)))
}

/// The deployment a watch follows: its id, its ECS target once listed, the last view.
pub struct Follow<'a> {
    api: &'a CodeDeployApi<'a>,
    pub deployment: String,
    target: Option<String>,
    last: Option<CodeDeployView>,
}

impl<'a> Follow<'a> {
    pub fn new(api: &'a CodeDeployApi<'a>, deployment: String) -> Follow<'a> {
        Follow { api, deployment, target: None, last: None }
    }

    /// One poll's look at the deployment.
    pub async fn observe(&mut self) -> Result<CodeDeployView, DeployError> {
        if self.target.is_none() {
            self.target = self.api.target_id(&self.deployment).await?;
        }
        self.api.view(&self.deployment, self.target.as_deref()).await
    }

    /// Did the deployment change since the last poll? Keeps `v` as the last one.
    pub fn changed(&mut self, v: &CodeDeployView) -> bool {
        let changed = self.last.as_ref() != Some(v);
        self.last = Some(v.clone());
        changed
    }

    /// ContinueDeployment(READY_WAIT): production traffic may be rerouted.
    pub async fn continue_ready(&self) -> Result<(), DeployError> {
        self.api.continue_deployment(&self.deployment, DeploymentWaitType::ReadyWait).await
    }

    /// How the deployment ended, and its rollback deployment, for the timeline (bounded wait
    /// for the rollback deployment to finish).
    pub async fn final_line(&self, poll: Poll) -> Option<String> {
        let v = self.api.view(&self.deployment, None).await.ok()?;
        let mut line = format!("CodeDeploy deployment {} {}", v.id, v.status_name());
        if let Some(e) = &v.error {
            line.push_str(&format!(" ({e})"));
        }
        if let Some(r) = &v.rollback_deployment {
            let never = Cancel::default();
            let mut status = String::from("unknown");
            for _ in 0..20 {
                let Ok(rv) = self.api.view(r, None).await else { break };
                status = rv.status_name().to_string();
                if !rv.active() {
                    break;
                }
                never.sleep(poll.initial).await;
            }
            line.push_str(&format!("; rollback deployment {r} {status}"));
        }
        Some(line)
    }
}

/// The CodeDeploy strategy of one service: its deployment group, the deploy's CodeDeploy
/// settings and the gate's.
pub struct CodeDeploy {
    pub group: GroupView,
    pub settings: CodeDeploySettings,
    pub gate: GateConfig,
}

impl CodeDeploy {
    /// CreateDeployment of `task_definition` to the service as it is now.
    pub fn request(&self, service: &ServiceView, task_definition: &str) -> Result<CreateDeployment, DeployError> {
        let appspec = cdl::appspec(service, task_definition).map_err(DeployError::Precondition)?;
        Ok(CreateDeployment {
            application: self.group.application.clone(),
            deployment_group: self.group.name.clone(),
            deployment_config: self.settings.deployment_config.clone(),
            appspec,
            description: format!("deployer: {} → {}", short(&service.task_definition), short(task_definition)),
        })
    }

    /// One line for the timeline: where CreateDeployment went and how it will shift traffic.
    pub fn describe(&self, deployment: &str) -> String {
        let config = self.settings.deployment_config.as_deref().or(self.group.config_name.as_deref());
        let ready = match self.group.ready_wait_minutes {
            Some(m) => format!("held Ready on test traffic up to {m} min"),
            None => "no wait before rerouting".into(),
        };
        format!(
            "CreateDeployment {deployment} ({}/{}, {}; {ready}; original task set kept {} min)",
            self.group.application,
            self.group.name,
            config.unwrap_or("the group's deployment config"),
            self.group.termination_wait_minutes
        )
    }
}

impl Strategy for CodeDeploy {
    type Gate = CodeDeployGate;

    fn kind(&self) -> Kind {
        Kind::CodeDeploy
    }

    fn check(&self, service: &ServiceView) -> Result<(), DeployError> {
        if !service.controller_is_code_deploy() {
            let controller = service.controller.as_ref().map(|c| c.as_str()).unwrap_or("ECS").to_string();
            return Err(DeployError::UnsupportedController { controller });
        }
        cdl::check_group(&self.group).map_err(DeployError::Precondition)?;
        self.request(service, &service.task_definition).map(drop)
    }

    fn start(&self, service: &ServiceView, task_definition: &str) -> Result<Start, DeployError> {
        Ok(Start::CodeDeploy(self.request(service, task_definition)?))
    }

    fn restore(&self, _service: &ServiceView) -> Option<aws_sdk_ecs::types::DeploymentConfiguration> {
        None
    }

    fn gate(&self) -> CodeDeployGate {
        CodeDeployGate::new(self.gate.clone(), self.group.clone(), self.settings.wait_for_termination)
    }

    /// A redeploy of the running revision goes back the same way: CodeDeploy keeps the original
    /// task set until the deployment is over.
    fn route(&self, failure: Option<&Failure>, last: Option<&Observation>, deployment: Option<&str>, _: bool) -> Route {
        cdl::route(failure, last, deployment.unwrap_or_default())
    }
}
