//! The strategy trait the driver runs: what a strategy checks before any change, how it starts
//! the deployment (UpdateService, or a CodeDeploy deployment), which gate judges it, which way
//! it goes back after a failure, and what it puts back afterwards. Rolling (`rolling`), the
//! traffic shifts (`traffic`: blue/green, canary, linear) and CodeDeploy (`codedeploy`: a
//! CreateDeployment, judged from the CodeDeploy deployment in the observation, rolled back
//! through StopDeployment) implement it; the driver owns the loop, the I/O and the settling,
//! so a strategy is a few pure functions.

use aws_sdk_ecs::types::DeploymentConfiguration;

use super::DeployError;
use super::codedeploy_lifecycle::CreateDeployment;
use super::gate::{DeployGate, Failure, Observation};
use super::plan::Strategy as Kind;
use super::settle::{self, Route};
use super::view::ServiceView;

/// What to send to start the deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The deployment configuration to set (`None`: keep the service's).
    pub configuration: Option<DeploymentConfiguration>,
    /// How the timeline describes it, after "UpdateService: old → new".
    pub note: Option<String>,
}

/// How a deployment starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// ECS's own controller: UpdateService with the new task definition and this.
    UpdateService(Update),
    /// A service under the CODE_DEPLOY controller: CreateDeployment.
    CodeDeploy(CreateDeployment),
}

pub trait Strategy: Sync {
    type Gate: DeployGate;

    /// The name in reports and flags.
    fn kind(&self) -> Kind;

    /// Before any change: can this service take this strategy? The error says what to fix
    /// (the caller names the service).
    fn check(&self, service: &ServiceView) -> Result<(), DeployError>;

    /// What UpdateService sends besides the task definition (default: nothing else, the
    /// service's own configuration).
    fn update(&self, _service: &ServiceView) -> Update {
        Update { configuration: None, note: None }
    }

    /// How the deployment of `task_definition` starts (default: UpdateService with `update`).
    fn start(&self, service: &ServiceView, _task_definition: &str) -> Result<Start, DeployError> {
        Ok(Start::UpdateService(self.update(service)))
    }

    /// The configuration to put back once the deployment settled (`None`: nothing to undo).
    fn restore(&self, service: &ServiceView) -> Option<DeploymentConfiguration>;

    /// A fresh gate for one deployment.
    fn gate(&self) -> Self::Gate;

    /// The way back after `failure` (a cancel: `None`), from the last observation and the
    /// deployment the start created (ECS's service deployment ARN, CodeDeploy's deployment id);
    /// `redeploy`: the deploy rolled the revision that was already running.
    fn route(
        &self,
        failure: Option<&Failure>,
        last: Option<&Observation>,
        deployment: Option<&str>,
        redeploy: bool,
    ) -> Route {
        settle::route(failure, last, deployment, redeploy)
    }
}

/// The controller check every ECS-native strategy shares.
pub fn check_ecs_controller(service: &ServiceView) -> Result<(), DeployError> {
    match &service.controller {
        Some(c) if !service.controller_is_ecs() => {
            Err(DeployError::UnsupportedController { controller: c.as_str().to_string() })
        }
        _ => Ok(()),
    }
}
