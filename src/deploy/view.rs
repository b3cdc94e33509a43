//! ECS state as deployer reads it: the service and its deployments (DescribeServices) — or,
//! under the CODE_DEPLOY controller, its task sets —, its service deployment
//! (DescribeServiceDeployments) and the new revision's tasks (DescribeTasks), as named structs
//! holding the SDK's own enums. They are built from the SDK
//! types here, once; every decision above compares enums and fields, never strings.

use std::fmt;

use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, DeploymentConfiguration, DeploymentControllerType, DeploymentLifecycleHookStatus,
    DeploymentRolloutState, HealthStatus, LaunchType, LoadBalancer, NetworkConfiguration, Service, ServiceDeployment,
    ServiceDeploymentLifecycleStage, ServiceDeploymentStatus, StabilityStatus, Task, TaskSet, TaskStopCode,
};

pub fn epoch_ms(t: &DateTime) -> u64 {
    (t.secs().max(0) as u64) * 1000 + u64::from(t.subsec_nanos() / 1_000_000)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The last path segment of an ARN (`shop:7` of `arn:...:task-definition/shop:7`).
pub fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// A service as DescribeServices shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub task_definition: String,
    pub controller: Option<DeploymentControllerType>,
    /// The whole configuration, so a strategy can send it back with its own changes.
    pub configuration: Option<DeploymentConfiguration>,
    pub load_balancers: Vec<LoadBalancer>,
    pub deployments: Vec<DeploymentView>,
    /// Newest first, as ECS lists them.
    pub events: Vec<EventView>,
    /// CODE_DEPLOY and EXTERNAL services: their task sets (their `deployments` is empty).
    pub task_sets: Vec<TaskSetView>,
    /// Where its tasks run (a one-off task of the service gets the same).
    pub placement: Placement,
}

/// Where and how a service's tasks run: network configuration, launch type or capacity
/// provider strategy (RunTask takes one or the other), platform version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub launch_type: Option<LaunchType>,
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    pub platform_version: Option<String>,
    pub network_configuration: Option<NetworkConfiguration>,
}

impl Placement {
    pub fn from_sdk(svc: &Service) -> Placement {
        let strategy = svc.capacity_provider_strategy().to_vec();
        // A launch type and a capacity provider strategy exclude each other in RunTask.
        let launch_type =
            svc.launch_type().filter(|l| strategy.is_empty() && LaunchType::values().contains(&l.as_str())).cloned();
        Placement {
            launch_type,
            capacity_provider_strategy: strategy,
            platform_version: svc.platform_version().filter(|p| !p.is_empty()).map(str::to_string),
            network_configuration: svc.network_configuration().cloned(),
        }
    }
}

/// One of a service's task sets (DescribeServices' `taskSets`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskSetView {
    pub id: String,
    /// `status` PRIMARY (the one whose task definition is the service's).
    pub primary: bool,
    pub task_definition: String,
    /// `stabilityStatus` STEADY_STATE.
    pub steady: bool,
    pub running: i32,
    pub desired: i32,
    pub load_balancers: Vec<LoadBalancer>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub platform_version: Option<String>,
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

impl TaskSetView {
    pub fn from_sdk(t: &TaskSet) -> TaskSetView {
        TaskSetView {
            id: t.id().unwrap_or_default().to_string(),
            primary: t.status() == Some("PRIMARY"),
            task_definition: t.task_definition().unwrap_or_default().to_string(),
            steady: t.stability_status() == Some(&StabilityStatus::SteadyState),
            running: t.running_count(),
            desired: t.computed_desired_count(),
            load_balancers: t.load_balancers().to_vec(),
            network_configuration: t.network_configuration().cloned(),
            platform_version: t.platform_version().map(str::to_string),
            capacity_provider_strategy: t.capacity_provider_strategy().to_vec(),
        }
    }
}

/// One entry of the service's `deployments[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentView {
    pub id: String,
    /// `status` PRIMARY (the rest are ACTIVE or draining).
    pub primary: bool,
    pub task_definition: String,
    pub rollout: Option<DeploymentRolloutState>,
    pub rollout_reason: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub failed_tasks: i32,
    pub created_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub id: String,
    pub at_ms: Option<u64>,
    pub message: String,
}

impl ServiceView {
    pub fn from_sdk(svc: &Service) -> ServiceView {
        ServiceView {
            name: svc.service_name().unwrap_or_default().to_string(),
            task_definition: svc.task_definition().unwrap_or_default().to_string(),
            controller: svc.deployment_controller().map(|c| c.r#type().clone()),
            configuration: svc.deployment_configuration().cloned(),
            load_balancers: svc.load_balancers().to_vec(),
            deployments: svc
                .deployments()
                .iter()
                .map(|d| DeploymentView {
                    id: d.id().unwrap_or_default().to_string(),
                    primary: d.status() == Some("PRIMARY"),
                    task_definition: d.task_definition().unwrap_or_default().to_string(),
                    rollout: d.rollout_state().cloned(),
                    rollout_reason: d.rollout_state_reason().map(str::to_string),
                    desired: d.desired_count(),
                    running: d.running_count(),
                    pending: d.pending_count(),
                    failed_tasks: d.failed_tasks(),
                    created_at_ms: d.created_at().map(epoch_ms),
                })
                .collect(),
            events: svc
                .events()
                .iter()
                .map(|e| EventView {
                    id: e.id().unwrap_or_default().to_string(),
                    at_ms: e.created_at().map(epoch_ms),
                    message: e.message().unwrap_or_default().to_string(),
                })
                .collect(),
            task_sets: svc.task_sets().iter().map(TaskSetView::from_sdk).collect(),
            placement: Placement::from_sdk(svc),
        }
    }

    /// The service's deployments are CodeDeploy's.
    pub fn controller_is_code_deploy(&self) -> bool {
        self.controller.as_ref() == Some(&DeploymentControllerType::CodeDeploy)
    }

    /// The PRIMARY task set (CODE_DEPLOY, EXTERNAL).
    pub fn primary_task_set(&self) -> Option<&TaskSetView> {
        self.task_sets.iter().find(|t| t.primary)
    }

    /// ECS unless the service names another controller (absent means ECS).
    pub fn controller_is_ecs(&self) -> bool {
        self.controller.as_ref().is_none_or(|c| *c == DeploymentControllerType::Ecs)
    }

    pub fn primary(&self) -> Option<&DeploymentView> {
        self.deployments.iter().find(|d| d.primary)
    }

    /// A deployment is under way: more than one deployment, or one still rolling out (or,
    /// under CODE_DEPLOY and EXTERNAL, more than one task set).
    pub fn in_progress(&self) -> bool {
        self.deployments.len() > 1
            || self.deployments.iter().any(|d| d.rollout.as_ref() == Some(&DeploymentRolloutState::InProgress))
            || self.task_sets.len() > 1
    }

    /// What is under way, in a few words, for an error message.
    pub fn progress_detail(&self) -> String {
        if !self.task_sets.is_empty() {
            return format!("{} task set(s)", self.task_sets.len());
        }
        let rollout = self.primary().and_then(|d| d.rollout.as_ref()).map(|r| r.as_str()).unwrap_or("unknown");
        format!("{} deployment(s), primary rollout {rollout}", self.deployments.len())
    }

    /// The service runs `task_definition` alone, rolled out. Under CODE_DEPLOY: its PRIMARY
    /// task set (the one production goes to) runs it and is steady; another task set may still
    /// drain or wait for termination.
    pub fn steady_on(&self, task_definition: &str) -> bool {
        if !self.task_sets.is_empty() {
            return self.primary_task_set().is_some_and(|t| t.task_definition == task_definition && t.steady);
        }
        self.deployments.len() == 1
            && self.primary().is_some_and(|d| {
                d.task_definition == task_definition && d.rollout.as_ref() == Some(&DeploymentRolloutState::Completed)
            })
    }
}

/// A lifecycle hook of a service deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookView {
    pub id: String,
    pub status: Option<DeploymentLifecycleHookStatus>,
}

/// A service deployment (DescribeServiceDeployments) as one poll saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceDeploymentView {
    pub arn: String,
    pub status: Option<ServiceDeploymentStatus>,
    pub status_reason: Option<String>,
    pub stage: Option<ServiceDeploymentLifecycleStage>,
    /// Deployer's hold (PAUSE without a target), once ECS has created it.
    pub our_hook: Option<HookView>,
    /// Other hooks awaiting action (the user's approvals).
    pub others_waiting: usize,
    /// Green's share of production / test traffic, in percent.
    pub production_weight: Option<f64>,
    pub test_weight: Option<f64>,
}

impl ServiceDeploymentView {
    pub fn from_sdk(sd: &ServiceDeployment) -> ServiceDeploymentView {
        let hooks = sd.lifecycle_hook_details();
        let ours = hooks
            .iter()
            .find(|h| h.target_type().map(|t| t.as_str()) == Some("PAUSE") && h.target_arn().is_none_or(str::is_empty));
        let awaiting = Some(&DeploymentLifecycleHookStatus::AwaitingAction);
        let others_waiting =
            hooks.iter().filter(|h| h.hook_id() != ours.and_then(|o| o.hook_id()) && h.status() == awaiting).count();
        let target = sd.target_service_revision();
        ServiceDeploymentView {
            arn: sd.service_deployment_arn().unwrap_or_default().to_string(),
            status: sd.status().cloned(),
            status_reason: sd.status_reason().map(str::to_string),
            stage: sd.lifecycle_stage().cloned(),
            our_hook: ours
                .map(|h| HookView { id: h.hook_id().unwrap_or_default().to_string(), status: h.status().cloned() }),
            others_waiting,
            production_weight: target.and_then(|t| t.requested_production_traffic_weight()),
            test_weight: target.and_then(|t| t.requested_test_traffic_weight()),
        }
    }

    pub fn status_is(&self, status: ServiceDeploymentStatus) -> bool {
        self.status.as_ref() == Some(&status)
    }

    /// PENDING or IN_PROGRESS: StopServiceDeployment still applies.
    pub fn in_progress(&self) -> bool {
        matches!(self.status, Some(ServiceDeploymentStatus::Pending | ServiceDeploymentStatus::InProgress))
    }

    /// ECS is returning (or has returned, or failed to return) to the previous revision.
    pub fn rolling_back(&self) -> bool {
        matches!(
            self.status,
            Some(
                ServiceDeploymentStatus::RollbackRequested
                    | ServiceDeploymentStatus::RollbackInProgress
                    | ServiceDeploymentStatus::RollbackSuccessful
                    | ServiceDeploymentStatus::RollbackFailed
            )
        )
    }

    /// ECS gave up on it: rolling back, or stopped.
    pub fn given_up(&self) -> bool {
        self.rolling_back()
            || matches!(self.status, Some(ServiceDeploymentStatus::Stopped | ServiceDeploymentStatus::StopRequested))
    }

    /// Deployer's hook holds it at POST_TEST_TRAFFIC_SHIFT: the hook id to answer.
    pub fn held_by_us(&self) -> Option<&str> {
        let held = self.stage.as_ref() == Some(&ServiceDeploymentLifecycleStage::PostTestTrafficShift);
        self.our_hook
            .as_ref()
            .filter(|h| held && h.status.as_ref() == Some(&DeploymentLifecycleHookStatus::AwaitingAction))
            .map(|h| h.id.as_str())
    }

    pub fn status_name(&self) -> &str {
        self.status.as_ref().map(|s| s.as_str()).unwrap_or("UNKNOWN")
    }
}

/// A task's `lastStatus` (ECS's task lifecycle).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TaskStatus {
    #[default]
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
    Other(String),
}

impl TaskStatus {
    pub fn parse(s: &str) -> TaskStatus {
        use TaskStatus::*;
        let known = [Provisioning, Pending, Activating, Running, Deactivating, Stopping, Deprovisioning, Stopped];
        known.into_iter().find(|t| t.as_str() == s).unwrap_or_else(|| Other(s.to_string()))
    }

    /// ECS's name (`RUNNING`, `STOPPED`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
            TaskStatus::Other(s) => s,
        }
    }

    /// On its way out (ECS stops a task in stages; the first already tells).
    pub fn stopping(&self) -> bool {
        matches!(
            self,
            TaskStatus::Deactivating | TaskStatus::Stopping | TaskStatus::Deprovisioning | TaskStatus::Stopped
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// A task of the new revision (DescribeTasks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskView {
    pub arn: String,
    pub status: TaskStatus,
    pub health: Option<HealthStatus>,
    pub stop_code: Option<TaskStopCode>,
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerView>,
    /// When ECS began stopping it (epoch ms), for detection-latency figures.
    pub stopping_at_ms: Option<u64>,
    /// When its containers started (epoch ms).
    pub started_at_ms: Option<u64>,
    /// Who started it: a service deployment's id, or `deployer` for a one-off task.
    pub started_by: Option<String>,
    pub task_definition: String,
    /// `group`: `service:NAME` for a service's tasks.
    pub group: Option<String>,
}

impl TaskView {
    pub fn from_sdk(t: &Task) -> TaskView {
        TaskView {
            arn: t.task_arn().unwrap_or_default().to_string(),
            status: TaskStatus::parse(t.last_status().unwrap_or_default()),
            health: t.health_status().cloned(),
            stop_code: t.stop_code().cloned(),
            stopped_reason: t.stopped_reason().map(str::to_string),
            containers: t
                .containers()
                .iter()
                .map(|c| ContainerView {
                    name: c.name().unwrap_or_default().to_string(),
                    exit_code: c.exit_code(),
                    reason: c.reason().map(str::to_string),
                })
                .collect(),
            stopping_at_ms: t.stopping_at().or(t.stopped_at()).map(epoch_ms),
            started_at_ms: t.started_at().map(epoch_ms),
            started_by: t.started_by().map(str::to_string),
            task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
            group: t.group().map(str::to_string),
        }
    }

    /// STOPPED: nothing about it changes any more.
    pub fn is_final(&self) -> bool {
        self.status == TaskStatus::Stopped
    }

    /// Stopped because something went wrong (not scaled in, not stopped by a user).
    pub fn failed(&self) -> bool {
        if !self.status.stopping() {
            return false;
        }
        let reason = self.stopped_reason.as_deref().unwrap_or_default();
        matches!(self.stop_code, Some(TaskStopCode::TaskFailedToStart | TaskStopCode::EssentialContainerExited))
            || reason.contains("health check")
            || reason.contains("Error")
            || self.containers.iter().any(|c| c.exit_code.is_some_and(|code| code != 0))
    }

    pub fn running(&self) -> bool {
        self.status == TaskStatus::Running
    }
}

impl fmt::Display for TaskView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", short(&self.arn))?;
        if let Some(code) = &self.stop_code {
            write!(f, " [{}]", code.as_str())?;
        }
        if let Some(reason) = &self.stopped_reason {
            write!(f, ": {reason}")?;
        }
        for c in self.containers.iter().filter(|c| c.exit_code.is_some() || c.reason.is_some()) {
            write!(f, "; container {}", c.name)?;
            if let Some(code) = c.exit_code {
                write!(f, " exit code {code}")?;
            }
            if let Some(reason) = &c.reason {
                write!(f, " ({reason})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{
        DeploymentLifecycleHookDetail, DeploymentLifecycleHookTargetType, ServiceRevisionSummary,
    };

    fn task(status: &str, code: Option<TaskStopCode>, reason: &str) -> TaskView {
        TaskView {
            arn: "arn:aws:ecs:r:1:task/c/abc123".into(),
            status: TaskStatus::parse(status),
            stop_code: code,
            stopped_reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
            ..TaskView::default()
        }
    }

    #[test]
    fn a_code_deploy_service_is_steady_on_its_primary_task_set_and_busy_with_two() {
        let set = |id: &str, td: &str, primary: bool, steady: bool| TaskSetView {
            id: id.into(),
            primary,
            task_definition: td.into(),
            steady,
            ..Default::default()
        };
        let service = |sets: Vec<TaskSetView>| ServiceView {
            controller: Some(DeploymentControllerType::CodeDeploy),
            task_sets: sets,
            ..Default::default()
        };
        let one = service(vec![set("a", "td:1", true, true)]);
        assert!(one.controller_is_code_deploy() && !one.controller_is_ecs());
        assert!(one.steady_on("td:1") && !one.steady_on("td:2") && !one.in_progress());
        let two = service(vec![set("b", "td:2", false, true), set("a", "td:1", true, true)]);
        assert!(two.in_progress() && two.steady_on("td:1"), "blue still primary while green is installed");
        assert_eq!(two.progress_detail(), "2 task set(s)");
        let stabilizing = service(vec![set("a", "td:1", true, false)]);
        assert!(!stabilizing.steady_on("td:1"));
        assert!(!ServiceView::default().steady_on("td:1"), "an ECS service without deployments is not steady");
    }

    #[test]
    fn scaled_in_or_user_stopped_tasks_are_not_failures() {
        let scaled = "Scaling activity initiated by (deployment ecs-svc/1)";
        assert!(!task("STOPPED", Some(TaskStopCode::ServiceSchedulerInitiated), scaled).failed());
        assert!(!task("STOPPED", Some(TaskStopCode::UserInitiated), scaled).failed());
        assert!(task("STOPPED", Some(TaskStopCode::TaskFailedToStart), scaled).failed());
        assert!(!task("RUNNING", None, "").failed());
        let elb = task(
            "DEACTIVATING",
            Some(TaskStopCode::ServiceSchedulerInitiated),
            "Task failed ELB health checks in (target-group arn:aws:elasticloadbalancing:r:1:targetgroup/web/1)",
        );
        assert!(elb.failed(), "ECS stops a task in stages; the first one already tells");
        let crashed = TaskView {
            containers: vec![ContainerView { name: "web".into(), exit_code: Some(1), reason: None }],
            ..task("STOPPED", Some(TaskStopCode::EssentialContainerExited), "Essential container in task exited")
        };
        assert_eq!(
            crashed.to_string(),
            "task abc123 [EssentialContainerExited]: Essential container in task exited; container web exit code 1"
        );
    }

    #[test]
    fn the_service_deployment_view_finds_deployers_hook_among_the_users_and_reads_the_weights() {
        let hook = |id: &str, target: DeploymentLifecycleHookTargetType, arn: Option<&str>| {
            DeploymentLifecycleHookDetail::builder()
                .hook_id(id)
                .target_type(target)
                .set_target_arn(arn.map(str::to_string))
                .status(DeploymentLifecycleHookStatus::AwaitingAction)
                .build()
        };
        let sd = ServiceDeployment::builder()
            .status(ServiceDeploymentStatus::InProgress)
            .lifecycle_stage(ServiceDeploymentLifecycleStage::PostTestTrafficShift)
            .lifecycle_hook_details(hook(
                "user",
                DeploymentLifecycleHookTargetType::AwsLambda,
                Some("arn:aws:lambda:r:1:function:pause-for-approval"),
            ))
            .lifecycle_hook_details(hook("ours", DeploymentLifecycleHookTargetType::Pause, None))
            .target_service_revision(
                ServiceRevisionSummary::builder()
                    .requested_production_traffic_weight(0.0)
                    .requested_test_traffic_weight(100.0)
                    .build(),
            )
            .build();
        let v = ServiceDeploymentView::from_sdk(&sd);
        assert!(v.in_progress() && !v.given_up());
        assert_eq!(v.held_by_us(), Some("ours"));
        assert_eq!(v.others_waiting, 1);
        assert_eq!((v.production_weight, v.test_weight), (Some(0.0), Some(100.0)));
        let done = ServiceDeploymentView { status: Some(ServiceDeploymentStatus::RollbackInProgress), ..v };
        assert!(done.rolling_back() && done.given_up() && !done.in_progress());
    }
}
