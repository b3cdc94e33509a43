//! The rolling strategy: UpdateService with the new task definition and the service's own
//! deployment configuration (percents, circuit breaker), judged by the rolling gate (rollout
//! completed, tasks healthy, probes, then deployer's bake). Nothing to put back afterwards.

use super::DeployError;
use super::gate::RollingGate;
use super::plan::{GateConfig, Strategy as Kind};
use super::strategy::{Strategy, Update, check_ecs_controller};
use super::view::ServiceView;

pub struct Rolling {
    pub gate: GateConfig,
}

impl Strategy for Rolling {
    type Gate = RollingGate;

    fn kind(&self) -> Kind {
        Kind::Rolling
    }

    fn check(&self, service: &ServiceView) -> Result<(), DeployError> {
        check_ecs_controller(service)
    }

    fn update(&self, _service: &ServiceView) -> Update {
        Update { configuration: None, note: None }
    }

    fn restore(&self, _service: &ServiceView) -> Option<aws_sdk_ecs::types::DeploymentConfiguration> {
        None
    }

    fn gate(&self) -> RollingGate {
        RollingGate::new(self.gate.clone())
    }
}
