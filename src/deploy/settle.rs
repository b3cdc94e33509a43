//! Sending a service back to its previous revision, knowing what ECS is doing. `route` (pure)
//! picks the way from what was last seen: ECS already rolling back → only wait for it;
//! deployer's own hook holding green → answer it with ROLLBACK; a deployment in progress →
//! StopServiceDeployment(ROLLBACK); a finished one → UpdateService back, sending the service's
//! configuration without deployer's hook in the same call, so the rollback deployment is
//! never held by deployer's own hook. When ECS refuses a stop because it is rolling back
//! already (the circuit breaker won the race), deployer sends nothing more and reports ECS's
//! rollback. Then it waits until the previous revision runs alone, rolled out, and answers
//! well — bounded, and never cut short by a cancel (the point is a known state). In a fleet
//! deploy that wait reads the service from the cluster watcher's shared rounds (`watching`),
//! so twenty concurrent rollbacks cost two DescribeServices a round, not twenty.
//!
//! A redeploy of the revision already running (`refresh`) goes back only while its deployment
//! is under way (ECS's rollback, a stop): the old deployment of the same revision is then
//! primary again, which is what the wait checks. Once it is over, the old tasks are gone and
//! there is nothing to go back to (`Route::NoWayBack`).
//!
//! A CodeDeploy deployment goes back through CodeDeploy (its routes come from
//! `codedeploy_lifecycle::route`): StopDeployment with auto-rollback while it runs, nothing
//! while CodeDeploy rolls back by itself, a deployment of the previous task definition once it
//! finished (ECS refuses UpdateService of a task definition under CODE_DEPLOY); restored is
//! then the previous revision's PRIMARY task set, steady, answering well.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DeploymentConfiguration, DeploymentLifecycleHookAction};

use super::codedeploy::CodeDeployApi;
use super::codedeploy_lifecycle::CreateDeployment;
use super::ecs::{Ecs, UpdateRequest};
use super::gate::{Failure, Observation};
use super::plan::Poll;
use super::probe::probe;
use super::report::{Restored, RollbackMethod};
use super::view::{ServiceDeploymentView, ServiceView, short};
use super::watch::Fleet;
use super::{Cancel, DeployError};

/// How to send the service back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// ECS is rolling back by itself: send nothing, wait.
    WaitForEcs,
    /// Deployer's hook holds green on test traffic: ContinueServiceDeployment(ROLLBACK).
    AnswerHook { service_deployment: String, hook_id: String },
    /// The deployment is in progress: StopServiceDeployment(ROLLBACK).
    Stop { service_deployment: String },
    /// The deployment is over (or unknown): UpdateService to the previous revision.
    Update,
    /// CodeDeploy rolls back by itself (or has nothing to undo): send nothing, wait.
    WaitForCodeDeploy,
    /// A CodeDeploy deployment still running: StopDeployment(autoRollbackEnabled=true).
    StopCodeDeploy { deployment: String },
    /// A CodeDeploy deployment that finished: a new one of the previous task definition.
    Redeploy,
    /// A redeploy of the revision already running whose deployment is over: an UpdateService
    /// back would change nothing, and the tasks it replaced are gone.
    NoWayBack,
}

/// The way back, from the failure and the last observation; `redeploy`: the deploy rolled the
/// revision that was already running.
pub fn route(
    failure: Option<&Failure>,
    last: Option<&Observation>,
    service_deployment: Option<&str>,
    redeploy: bool,
) -> Route {
    if failure.is_some_and(Failure::ecs_rolls_back) {
        return Route::WaitForEcs;
    }
    let over = if redeploy { Route::NoWayBack } else { Route::Update };
    let Some(arn) = service_deployment.map(str::to_string) else { return over };
    if let Some(hook_id) = last.and_then(Observation::held_by_us) {
        return Route::AnswerHook { service_deployment: arn, hook_id: hook_id.to_string() };
    }
    match last.and_then(|o| o.service_deployment.as_ref()) {
        Some(sd) if !sd.in_progress() => over,
        _ => Route::Stop { service_deployment: arn },
    }
}

/// After ECS refused a StopServiceDeployment (`ConflictException`): its status says whether
/// ECS is rolling back already (wait for it) or the deployment finished (send the service
/// back). Unknown: send it back.
pub fn refused_stop_means_ecs_rolls_back(status: Option<&ServiceDeploymentView>) -> bool {
    status.is_some_and(ServiceDeploymentView::rolling_back)
}

pub struct Settle<'a> {
    pub ecs: &'a Ecs<'a>,
    pub http: &'a reqwest::Client,
    pub cluster: &'a str,
    pub service: &'a str,
    /// The revision to return to.
    pub to: &'a str,
    /// Production URLs that must answer well after the rollback.
    pub probe_urls: &'a [String],
    pub timeout: Duration,
    pub poll: Poll,
    /// The service's configuration without deployer's hook, sent with an UpdateService back.
    pub restore: Option<&'a DeploymentConfiguration>,
    /// A redeploy's own deployment: back means another deployment of `to` is primary.
    pub leaving: Option<&'a str>,
    /// The cluster's watcher, when the run has one: views come from its rounds.
    fleet: Option<&'a Fleet<'a>>,
    config_restored: AtomicBool,
    /// A CODE_DEPLOY service: the CodeDeploy calls, and the deployment of the previous task
    /// definition to send if it comes to that.
    code_deploy: Option<(&'a CodeDeployApi<'a>, CreateDeployment)>,
}

impl<'a> Settle<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ecs: &'a Ecs<'a>,
        http: &'a reqwest::Client,
        cluster: &'a str,
        service: &'a str,
        to: &'a str,
        probe_urls: &'a [String],
        timeout: Duration,
        poll: Poll,
    ) -> Settle<'a> {
        let timeout = timeout.max(Duration::from_secs(60));
        Settle {
            ecs,
            http,
            cluster,
            service,
            to,
            probe_urls,
            timeout,
            poll,
            restore: None,
            leaving: None,
            fleet: None,
            config_restored: false.into(),
            code_deploy: None,
        }
    }

    /// Go back through CodeDeploy; `redeploy` deploys the previous task definition.
    pub fn via_code_deploy(self, api: &'a CodeDeployApi<'a>, redeploy: CreateDeployment) -> Settle<'a> {
        Settle { code_deploy: Some((api, redeploy)), ..self }
    }

    pub fn restoring(self, restore: Option<&'a DeploymentConfiguration>) -> Settle<'a> {
        Settle { restore, ..self }
    }

    /// A redeploy of `to` itself: the way back leaves `deployment_id`.
    pub fn leaving(self, deployment_id: Option<&'a str>) -> Settle<'a> {
        Settle { leaving: deployment_id, ..self }
    }

    /// Read the service from `fleet`'s rounds instead of describing it alone.
    pub fn watching(self, fleet: &'a Fleet<'a>) -> Settle<'a> {
        Settle { fleet: Some(fleet), ..self }
    }

    /// The UpdateService back also put the service's configuration back.
    pub fn config_restored(&self) -> bool {
        self.config_restored.load(Ordering::Relaxed)
    }

    /// Start the rollback by `route` (falling back when ECS refuses) and wait for the previous
    /// revision.
    pub async fn rollback(&self, route: Route) -> Result<(RollbackMethod, Restored), DeployError> {
        let method = self.start(route).await?;
        tracing::info!("{}: rolling back to {} via {method}", self.service, short(self.to));
        Ok((method, self.wait_restored().await))
    }

    async fn start(&self, route: Route) -> Result<RollbackMethod, DeployError> {
        match route {
            Route::WaitForEcs => Ok(RollbackMethod::Ecs),
            Route::AnswerHook { service_deployment, hook_id } => {
                let rollback = DeploymentLifecycleHookAction::Rollback;
                match self.ecs.answer_hook(&service_deployment, &hook_id, rollback).await {
                    Ok(()) => Ok(RollbackMethod::HookRollback),
                    Err(e) => {
                        tracing::info!("{}: {e}; stopping the deployment instead", self.service);
                        self.stop(&service_deployment).await
                    }
                }
            }
            Route::Stop { service_deployment } => self.stop(&service_deployment).await,
            Route::Update => self.send_back().await,
            Route::WaitForCodeDeploy => Ok(RollbackMethod::CodeDeploy),
            Route::StopCodeDeploy { deployment } => self.stop_code_deploy(&deployment).await,
            Route::Redeploy => self.redeploy().await,
            Route::NoWayBack => Err(DeployError::Precondition(format!(
                "{} was deployed again over itself and that deployment is over: the tasks it replaced are gone and \
                 there is no earlier revision to return to; fix what the new tasks read and deploy again",
                short(self.to)
            ))),
        }
    }

    fn code_deploy(&self) -> Result<&(&'a CodeDeployApi<'a>, CreateDeployment), DeployError> {
        self.code_deploy.as_ref().ok_or_else(|| {
            DeployError::Precondition(format!("{}: no CodeDeploy deployment group to go back through", self.service))
        })
    }

    /// StopDeployment with rollback. Refused because it already completed: CodeDeploy's own
    /// rollback, or — when it had succeeded — a deployment of the previous task definition.
    async fn stop_code_deploy(&self, deployment: &str) -> Result<RollbackMethod, DeployError> {
        let (api, _) = self.code_deploy()?;
        match api.stop(deployment).await {
            Ok(()) => Ok(RollbackMethod::CodeDeployStop),
            Err(e) if e.code() == Some("DeploymentAlreadyCompletedException") => {
                let view = api.view(deployment, None).await?;
                tracing::info!("{}: {e}; CodeDeploy says {}", self.service, view.status_name());
                if view.status_is(aws_sdk_codedeploy::types::DeploymentStatus::Succeeded) {
                    self.redeploy().await
                } else {
                    Ok(RollbackMethod::CodeDeploy)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A CodeDeploy deployment of the previous task definition, continued past its READY wait.
    async fn redeploy(&self) -> Result<RollbackMethod, DeployError> {
        let (api, request) = self.code_deploy()?;
        let id = api.create_deployment(request).await?;
        tracing::info!("{}: CodeDeploy deployment {id} sends the service back to {}", self.service, short(self.to));
        api.release_ready(&id, self.timeout, self.poll).await?;
        Ok(RollbackMethod::CodeDeployRedeploy)
    }

    async fn stop(&self, service_deployment: &str) -> Result<RollbackMethod, DeployError> {
        match self.ecs.stop_service_deployment(service_deployment).await {
            Ok(()) => Ok(RollbackMethod::StopServiceDeployment),
            Err(e) if e.is_conflict() => {
                let now = self.ecs.service_deployment(service_deployment).await.ok().flatten();
                tracing::info!(
                    "{}: {e}; the service deployment is {}",
                    self.service,
                    now.as_ref().map(|s| s.status_name()).unwrap_or("not readable")
                );
                if refused_stop_means_ecs_rolls_back(now.as_ref()) {
                    return Ok(RollbackMethod::Ecs);
                }
                self.send_back().await
            }
            Err(e) => {
                tracing::info!("{}: {e}; updating the service instead", self.service);
                self.send_back().await
            }
        }
    }

    /// UpdateService to the previous revision, with the restored configuration when there is
    /// one (deployer's hook off before the rollback deployment starts).
    async fn send_back(&self) -> Result<RollbackMethod, DeployError> {
        let req = UpdateRequest {
            task_definition: Some(self.to.to_string()),
            force: false,
            configuration: self.restore.cloned(),
        };
        self.ecs.update_service(self.cluster, self.service, &req).await?;
        self.config_restored.store(self.restore.is_some(), Ordering::Relaxed);
        Ok(RollbackMethod::UpdateService)
    }

    /// Wait until the service's only deployment runs `to`, rolled out, and each probe URL
    /// answers well twice in a row (once without URLs).
    pub async fn wait_restored(&self) -> Restored {
        let start = Instant::now();
        let mut pacing = self.poll.pacing();
        let mut streak = 0u32;
        let mut last = String::from("not observed yet");
        let never = Cancel::default();
        let mut member = self.fleet.map(|f| f.member(self.service, None));
        while start.elapsed() < self.timeout {
            let view: Result<ServiceView, DeployError> = match &mut member {
                Some(m) => m.next(true).await.map(|seen| seen.view),
                None => self.ecs.describe_service(self.cluster, self.service).await,
            };
            match view {
                Ok(view) => {
                    last = match view.primary() {
                        Some(d) => format!(
                            "primary deployment {} runs {} ({}), {} deployment(s) active",
                            d.id,
                            short(&d.task_definition),
                            d.rollout.as_ref().map(|r| r.as_str()).unwrap_or("unknown"),
                            view.deployments.len()
                        ),
                        None => match view.primary_task_set() {
                            Some(t) => format!(
                                "primary task set {} runs {} ({}), {} task set(s)",
                                t.id,
                                short(&t.task_definition),
                                if t.steady { "STEADY_STATE" } else { "STABILIZING" },
                                view.task_sets.len()
                            ),
                            None => "no primary deployment".into(),
                        },
                    };
                    let left = self.leaving.is_none_or(|id| view.primary().is_some_and(|d| d.id != id));
                    if view.steady_on(self.to) && left {
                        let mut all_ok = true;
                        for url in self.probe_urls {
                            let p = probe(self.http, url).await;
                            if !p.ok {
                                all_ok = false;
                                last = format!("{url} answered {:?}: {}", p.status, p.detail);
                            }
                        }
                        streak = if all_ok { streak + 1 } else { 0 };
                        if streak >= 2 || (streak >= 1 && self.probe_urls.is_empty()) {
                            return Restored::Healthy;
                        }
                    }
                }
                Err(e) => last = format!("cannot describe the service: {e}"),
            }
            if member.is_none() {
                never.sleep(pacing.next(false).min(self.poll.initial * 2)).await;
            }
        }
        Restored::NotConfirmed(last)
    }

    /// The service deployment's status after a rollback, waiting a bounded time for ECS to
    /// finish it (ROLLBACK_SUCCESSFUL).
    pub async fn final_status(&self, service_deployment: &str) -> Option<String> {
        let never = Cancel::default();
        let mut last = None;
        let mut member = self.fleet.map(|f| f.member(self.service, Some(service_deployment)));
        for _ in 0..20 {
            let sd = match &mut member {
                Some(m) => m.next(false).await.ok().and_then(|seen| seen.service_deployment),
                None => self.ecs.service_deployment(service_deployment).await.ok().flatten(),
            }?;
            use aws_sdk_ecs::types::ServiceDeploymentStatus::{RollbackInProgress, RollbackRequested};
            let settled = !matches!(sd.status, Some(RollbackRequested | RollbackInProgress));
            last = Some(sd.status_name().to_string());
            if settled {
                break;
            }
            if member.is_none() {
                never.sleep(self.poll.initial).await;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::HookView;
    use super::*;
    use aws_sdk_ecs::types::{DeploymentLifecycleHookStatus, ServiceDeploymentLifecycleStage, ServiceDeploymentStatus};

    fn seen(status: ServiceDeploymentStatus, held: bool) -> Observation {
        let sd = ServiceDeploymentView {
            arn: "sd".into(),
            status: Some(status),
            stage: held.then_some(ServiceDeploymentLifecycleStage::PostTestTrafficShift),
            our_hook: held
                .then(|| HookView { id: "h1".into(), status: Some(DeploymentLifecycleHookStatus::AwaitingAction) }),
            ..Default::default()
        };
        Observation { service_deployment: Some(sd), ..Default::default() }
    }

    #[test]
    fn the_way_back_follows_what_ecs_is_doing() {
        use ServiceDeploymentStatus::*;
        let breaker = Failure::EcsFailed { reason: "circuit breaker".into(), ecs_rolls_back: true };
        let probe = Failure::Probe { url: "u".into(), failures: 3, status: Some(500), detail: String::new() };
        let stop = || Route::Stop { service_deployment: "sd".into() };
        type Case<'a> = (Option<&'a Failure>, Option<Observation>, Option<&'a str>, Route);
        let table: Vec<Case> = vec![
            (Some(&breaker), Some(seen(RollbackInProgress, false)), Some("sd"), Route::WaitForEcs),
            (
                Some(&probe),
                Some(seen(InProgress, true)),
                Some("sd"),
                Route::AnswerHook { service_deployment: "sd".into(), hook_id: "h1".into() },
            ),
            (Some(&probe), Some(seen(InProgress, false)), Some("sd"), stop()),
            // ECS already called it SUCCESSFUL: a stop would be refused; send the service back.
            (Some(&probe), Some(seen(Successful, false)), Some("sd"), Route::Update),
            (Some(&probe), Some(seen(Stopped, false)), Some("sd"), Route::Update),
            (None, Some(seen(InProgress, false)), Some("sd"), stop()),
            (Some(&probe), None, Some("sd"), stop()),
            (Some(&probe), Some(seen(InProgress, false)), None, Route::Update),
        ];
        for (failure, last, sd, want) in table {
            assert_eq!(route(failure, last.as_ref(), sd, false), want, "{failure:?} {last:?}");
        }
        // A redeploy of the running revision goes back only while its deployment is under way.
        let redeploy: Vec<Case> = vec![
            (Some(&breaker), Some(seen(RollbackInProgress, false)), Some("sd"), Route::WaitForEcs),
            (Some(&probe), Some(seen(InProgress, false)), Some("sd"), stop()),
            (Some(&probe), Some(seen(Successful, false)), Some("sd"), Route::NoWayBack),
            (Some(&probe), Some(seen(InProgress, false)), None, Route::NoWayBack),
        ];
        for (failure, last, sd, want) in redeploy {
            assert_eq!(route(failure, last.as_ref(), sd, true), want, "redeploy: {failure:?} {last:?}");
        }
    }

    #[test]
    fn a_stop_refused_because_ecs_rolls_back_is_left_to_ecs() {
        let sd = |status| Some(ServiceDeploymentView { status: Some(status), ..Default::default() });
        assert!(refused_stop_means_ecs_rolls_back(sd(ServiceDeploymentStatus::RollbackInProgress).as_ref()));
        assert!(refused_stop_means_ecs_rolls_back(sd(ServiceDeploymentStatus::RollbackSuccessful).as_ref()));
        assert!(!refused_stop_means_ecs_rolls_back(sd(ServiceDeploymentStatus::Successful).as_ref()));
        assert!(!refused_stop_means_ecs_rolls_back(None));
    }
}
