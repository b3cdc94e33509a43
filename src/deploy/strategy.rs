//! The strategy trait the driver runs: what a strategy checks before any change, what its
//! UpdateService sends, which gate judges it, and what it puts back afterwards. Rolling
//! (`rolling`) and the traffic shifts (`traffic`: blue/green, canary, linear) implement it;
//! the driver owns the loop, the I/O and the settling, so a strategy is a few pure functions.
//! A CodeDeploy strategy fits the same shape: its check wants the CODE_DEPLOY controller, its
//! update becomes a CreateDeployment (`Update` grows a variant), its gate reads the CodeDeploy
//! deployment's status from the observation.

use aws_sdk_ecs::types::DeploymentConfiguration;

use super::DeployError;
use super::gate::DeployGate;
use super::plan::Strategy as Kind;
use super::view::ServiceView;

/// What to send to start the deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The deployment configuration to set (`None`: keep the service's).
    pub configuration: Option<DeploymentConfiguration>,
    /// How the timeline describes it, after "UpdateService: old → new".
    pub note: Option<String>,
}

pub trait Strategy: Sync {
    type Gate: DeployGate;

    /// The name in reports and flags.
    fn kind(&self) -> Kind;

    /// Before any change: can this service take this strategy? The error says what to fix
    /// (the caller names the service).
    fn check(&self, service: &ServiceView) -> Result<(), DeployError>;

    /// What UpdateService sends besides the task definition.
    fn update(&self, service: &ServiceView) -> Update;

    /// The configuration to put back once the deployment settled (`None`: nothing to undo).
    fn restore(&self, service: &ServiceView) -> Option<DeploymentConfiguration>;

    /// A fresh gate for one deployment.
    fn gate(&self) -> Self::Gate;
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
