//! CodeDeploy state as deployer reads it: a deployment group (what it deploys, whether it waits
//! before rerouting, how long it keeps the original task set, its auto-rollback) and one poll of
//! a deployment (GetDeployment, GetDeploymentTarget: status, error, rollback, lifecycle events,
//! the blue and green task sets with their traffic). Built from the SDK's types here, once;
//! the decisions above (`codedeploy_lifecycle`) compare enums and fields.

use aws_sdk_codedeploy::types::{
    AutoRollbackEvent, DeploymentGroupInfo, DeploymentInfo, DeploymentReadyAction, DeploymentStatus, EcsTarget,
    LifecycleEventStatus, TargetLabel, TargetStatus,
};

/// CodeDeploy's ECS lifecycle events, in order.
pub const EVENTS: [&str; 8] = [
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "AllowTestTraffic",
    "AfterAllowTestTraffic",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
];

/// A deployment group, as far as a deploy needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    pub application: String,
    pub name: String,
    pub config_name: Option<String>,
    /// (cluster, service) pairs it deploys.
    pub services: Vec<(String, String)>,
    /// `deploymentReadyOption` STOP_DEPLOYMENT: CodeDeploy holds green on test traffic for this
    /// many minutes until ContinueDeployment(READY_WAIT), then stops the deployment. `None`:
    /// it reroutes production without waiting.
    pub ready_wait_minutes: Option<i32>,
    /// Minutes the original (blue) task set is kept after the traffic shift.
    pub termination_wait_minutes: i32,
    /// The group names a test listener.
    pub test_route: bool,
    /// Auto-rollback when the deployment fails.
    pub rolls_back_on_failure: bool,
    pub blue_green: bool,
}

impl GroupView {
    pub fn from_sdk(g: &DeploymentGroupInfo) -> GroupView {
        let bg = g.blue_green_deployment_configuration();
        let ready = bg.and_then(|b| b.deployment_ready_option());
        let stops = ready.and_then(|r| r.action_on_timeout()) == Some(&DeploymentReadyAction::StopDeployment);
        let pair = g.load_balancer_info().and_then(|l| l.target_group_pair_info_list().first());
        let rollback = g.auto_rollback_configuration();
        GroupView {
            application: g.application_name().unwrap_or_default().to_string(),
            name: g.deployment_group_name().unwrap_or_default().to_string(),
            config_name: g.deployment_config_name().map(str::to_string),
            services: g
                .ecs_services()
                .iter()
                .map(|s| {
                    (s.cluster_name().unwrap_or_default().to_string(), s.service_name().unwrap_or_default().to_string())
                })
                .collect(),
            ready_wait_minutes: stops.then(|| ready.map(|r| r.wait_time_in_minutes()).unwrap_or(0)),
            termination_wait_minutes: bg
                .and_then(|b| b.terminate_blue_instances_on_deployment_success())
                .map(|t| t.termination_wait_time_in_minutes())
                .unwrap_or(0),
            test_route: pair.and_then(|p| p.test_traffic_route()).is_some_and(|r| !r.listener_arns().is_empty()),
            rolls_back_on_failure: rollback
                .is_some_and(|r| r.enabled() && r.events().contains(&AutoRollbackEvent::DeploymentFailure)),
            blue_green: pair.is_some(),
        }
    }

    /// Does it deploy `service` of `cluster` (a name or an ARN)?
    pub fn deploys(&self, cluster: &str, service: &str) -> bool {
        let short = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
        self.services.iter().any(|(c, s)| short(c) == short(cluster) && short(s) == short(service))
    }
}

/// A task set of the deployment (GetDeploymentTarget's `taskSetsInfo`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskSetInfo {
    pub id: String,
    /// PRIMARY, ACTIVE or DRAINING.
    pub status: String,
    /// Share of production traffic, in percent.
    pub weight: f64,
    pub desired: i64,
    pub running: i64,
}

/// One poll of a CodeDeploy deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodeDeployView {
    pub id: String,
    pub status: Option<DeploymentStatus>,
    /// `errorInformation`: code and message.
    pub error: Option<String>,
    /// The rollback deployment CodeDeploy started for this one, and its message.
    pub rollback_deployment: Option<String>,
    pub rollback_message: Option<String>,
    /// The original task set is kept for the termination wait (traffic already shifted).
    pub termination_wait_started: bool,
    pub target_status: Option<TargetStatus>,
    /// Lifecycle events in CodeDeploy's order, with their status.
    pub events: Vec<(String, LifecycleEventStatus)>,
    pub blue: Option<TaskSetInfo>,
    pub green: Option<TaskSetInfo>,
}

impl CodeDeployView {
    /// From GetDeployment and, once there is one, the ECS target of GetDeploymentTarget.
    pub fn from_sdk(d: &DeploymentInfo, target: Option<&EcsTarget>) -> CodeDeployView {
        let set = |label: TargetLabel| {
            target.and_then(|t| {
                t.task_sets_info().iter().find(|s| s.task_set_label() == Some(&label)).map(|s| TaskSetInfo {
                    id: s.identifer().unwrap_or_default().to_string(),
                    status: s.status().unwrap_or_default().to_string(),
                    weight: s.traffic_weight(),
                    desired: s.desired_count(),
                    running: s.running_count(),
                })
            })
        };
        let rollback = d.rollback_info();
        CodeDeployView {
            id: d.deployment_id().unwrap_or_default().to_string(),
            status: d.status().cloned(),
            error: d.error_information().map(|e| match (e.code(), e.message()) {
                (Some(code), Some(m)) => format!("{}: {m}", code.as_str()),
                (Some(code), None) => code.as_str().to_string(),
                (None, m) => m.unwrap_or("no error information").to_string(),
            }),
            rollback_deployment: rollback.and_then(|r| r.rollback_deployment_id()).map(str::to_string),
            rollback_message: rollback.and_then(|r| r.rollback_message()).map(str::to_string),
            termination_wait_started: d.instance_termination_wait_time_started(),
            target_status: target.and_then(|t| t.status()).cloned(),
            events: target
                .map(|t| {
                    t.lifecycle_events()
                        .iter()
                        .map(|e| {
                            let status = e.status().cloned().unwrap_or(LifecycleEventStatus::Pending);
                            (e.lifecycle_event_name().unwrap_or_default().to_string(), status)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            blue: set(TargetLabel::Blue),
            green: set(TargetLabel::Green),
        }
    }

    pub fn status_is(&self, status: DeploymentStatus) -> bool {
        self.status.as_ref() == Some(&status)
    }

    pub fn status_name(&self) -> &str {
        self.status.as_ref().map(|s| s.as_str()).unwrap_or("Unknown")
    }

    pub fn event(&self, name: &str) -> Option<&LifecycleEventStatus> {
        self.events.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    pub fn event_done(&self, name: &str) -> bool {
        matches!(self.event(name), Some(LifecycleEventStatus::Succeeded | LifecycleEventStatus::Skipped))
    }

    /// Created, Queued, InProgress, Ready or Baking: StopDeployment still applies.
    pub fn active(&self) -> bool {
        matches!(
            self.status,
            Some(
                DeploymentStatus::Created
                    | DeploymentStatus::Queued
                    | DeploymentStatus::InProgress
                    | DeploymentStatus::Ready
                    | DeploymentStatus::Baking
            )
        )
    }

    /// CodeDeploy gave up on it: Failed or Stopped.
    pub fn given_up(&self) -> bool {
        matches!(self.status, Some(DeploymentStatus::Failed | DeploymentStatus::Stopped))
    }

    /// Held on test traffic, waiting for ContinueDeployment(READY_WAIT).
    pub fn ready_wait(&self) -> bool {
        self.status_is(DeploymentStatus::Ready) || self.target_status.as_ref() == Some(&TargetStatus::Ready)
    }

    /// Green's share of production traffic, in percent.
    pub fn production_weight(&self) -> f64 {
        self.green.as_ref().map(|g| g.weight).unwrap_or(0.0)
    }

    /// Rerouting has begun: production traffic is (being) shifted to green.
    pub fn rerouting(&self) -> bool {
        self.production_weight() > 0.0
            || matches!(self.event("AllowTraffic"), Some(LifecycleEventStatus::InProgress))
            || self.event_done("BeforeAllowTraffic")
    }

    /// Production traffic is all on green: AllowTraffic is done (the termination wait, or the
    /// end).
    pub fn rerouted(&self) -> bool {
        self.status_is(DeploymentStatus::Succeeded)
            || self.termination_wait_started
            || self.status_is(DeploymentStatus::Baking)
            || self.event_done("AllowTraffic")
    }

    /// Where the deployment stands, as a stage name for the timeline: the lifecycle event
    /// running, `Ready` (held before rerouting), `TerminationWait` (blue kept), or the last
    /// event done.
    pub fn stage(&self) -> Option<String> {
        if self.ready_wait() {
            return Some("Ready".into());
        }
        if self.status_is(DeploymentStatus::Succeeded) {
            return None;
        }
        if self.rerouted() && (self.termination_wait_started || self.status_is(DeploymentStatus::Baking)) {
            return Some("TerminationWait".into());
        }
        if let Some((name, _)) = self.events.iter().find(|(_, s)| *s == LifecycleEventStatus::InProgress) {
            return Some(name.clone());
        }
        self.events.iter().rev().find(|(n, _)| self.event_done(n)).map(|(n, _)| n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_codedeploy::types::{
        AutoRollbackConfiguration, BlueGreenDeploymentConfiguration, BlueInstanceTerminationOption,
        DeploymentReadyOption, EcsService, EcsTaskSet, ErrorCode, ErrorInformation, LifecycleEvent, LoadBalancerInfo,
        RollbackInfo, TargetGroupPairInfo, TrafficRoute,
    };

    #[test]
    fn the_group_view_reads_the_ready_wait_termination_wait_test_route_and_rollback() {
        let g = DeploymentGroupInfo::builder()
            .application_name("app")
            .deployment_group_name("dg")
            .ecs_services(EcsService::builder().cluster_name("main").service_name("web").build())
            .blue_green_deployment_configuration(
                BlueGreenDeploymentConfiguration::builder()
                    .deployment_ready_option(
                        DeploymentReadyOption::builder()
                            .action_on_timeout(DeploymentReadyAction::StopDeployment)
                            .wait_time_in_minutes(30)
                            .build(),
                    )
                    .terminate_blue_instances_on_deployment_success(
                        BlueInstanceTerminationOption::builder().termination_wait_time_in_minutes(5).build(),
                    )
                    .build(),
            )
            .load_balancer_info(
                LoadBalancerInfo::builder()
                    .target_group_pair_info_list(
                        TargetGroupPairInfo::builder()
                            .test_traffic_route(TrafficRoute::builder().listener_arns("arn:l/2").build())
                            .build(),
                    )
                    .build(),
            )
            .auto_rollback_configuration(
                AutoRollbackConfiguration::builder().enabled(true).events(AutoRollbackEvent::DeploymentFailure).build(),
            )
            .build();
        let v = GroupView::from_sdk(&g);
        assert_eq!((v.ready_wait_minutes, v.termination_wait_minutes), (Some(30), 5));
        assert!(v.test_route && v.rolls_back_on_failure && v.blue_green);
        assert!(v.deploys("arn:aws:ecs:us-east-1:1:cluster/main", "web") && !v.deploys("main", "api"));
        let plain = GroupView::from_sdk(&DeploymentGroupInfo::builder().build());
        assert_eq!((plain.ready_wait_minutes, plain.test_route, plain.blue_green), (None, false, false));
    }

    #[test]
    fn the_deployment_view_knows_where_it_stands() {
        let events = |done: usize, running: bool| -> Vec<LifecycleEvent> {
            EVENTS
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let s = match i {
                        i if i < done => LifecycleEventStatus::Succeeded,
                        i if i == done && running => LifecycleEventStatus::InProgress,
                        _ => LifecycleEventStatus::Pending,
                    };
                    LifecycleEvent::builder().lifecycle_event_name(*n).status(s).build()
                })
                .collect()
        };
        let target = |done: usize, running: bool, weight: f64| {
            EcsTarget::builder()
                .set_lifecycle_events(Some(events(done, running)))
                .task_sets_info(
                    EcsTaskSet::builder()
                        .identifer("g")
                        .task_set_label(TargetLabel::Green)
                        .traffic_weight(weight)
                        .build(),
                )
                .build()
        };
        let info = |status: DeploymentStatus| DeploymentInfo::builder().deployment_id("d-1").status(status).build();
        let v = CodeDeployView::from_sdk(&info(DeploymentStatus::InProgress), Some(&target(1, true, 0.0)));
        assert_eq!(v.stage().as_deref(), Some("Install"));
        assert!(!v.rerouting() && !v.rerouted() && v.active());
        let v = CodeDeployView::from_sdk(&info(DeploymentStatus::Ready), Some(&target(5, false, 0.0)));
        assert_eq!(v.stage().as_deref(), Some("Ready"));
        assert!(v.ready_wait() && !v.rerouting());
        let v = CodeDeployView::from_sdk(&info(DeploymentStatus::InProgress), Some(&target(6, true, 10.0)));
        assert_eq!((v.stage().as_deref(), v.production_weight()), (Some("AllowTraffic"), 10.0));
        assert!(v.rerouting() && !v.rerouted());
        let waiting = DeploymentInfo::builder()
            .deployment_id("d-1")
            .status(DeploymentStatus::InProgress)
            .instance_termination_wait_time_started(true)
            .build();
        let v = CodeDeployView::from_sdk(&waiting, Some(&target(8, false, 100.0)));
        assert_eq!(v.stage().as_deref(), Some("TerminationWait"));
        assert!(v.rerouted());
        let failed = DeploymentInfo::builder()
            .deployment_id("d-1")
            .status(DeploymentStatus::Failed)
            .error_information(
                ErrorInformation::builder().code(ErrorCode::EcsUpdateError).message("no steady state").build(),
            )
            .rollback_info(RollbackInfo::builder().rollback_deployment_id("d-2").build())
            .build();
        let v = CodeDeployView::from_sdk(&failed, None);
        assert!(v.given_up() && !v.active());
        assert_eq!(v.error.as_deref(), Some("ECS_UPDATE_ERROR: no steady state"));
        assert_eq!(v.rollback_deployment.as_deref(), Some("d-2"));
    }
}
