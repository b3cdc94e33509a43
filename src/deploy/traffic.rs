//! The traffic-shifting strategies (BLUE_GREEN, CANARY, LINEAR) driven by ECS's own lifecycle:
//! the check wants a load balancer with `advancedConfiguration`; the update sends the
//! service's configuration with the strategy, the bake settings and deployer's PAUSE hook at
//! POST_TEST_TRAFFIC_SHIFT (timing out to ROLLBACK after the run's timeout plus a margin); the
//! lifecycle gate holds green on test traffic until `--test-url` passes; afterwards the
//! service's own hooks are put back. The decisions are `lifecycle`'s.

use aws_sdk_ecs::types::DeploymentConfiguration;

use super::DeployError;
use super::lifecycle::{self, TrafficGate};
use super::plan::{GateConfig, ShiftSettings, Strategy as Kind};
use super::strategy::{Strategy, Update, check_ecs_controller};
use super::view::ServiceView;

pub struct TrafficShift {
    pub kind: Kind,
    pub settings: ShiftSettings,
    pub gate: GateConfig,
}

impl TrafficShift {
    fn hook_timeout_minutes(&self) -> i32 {
        lifecycle::hook_timeout_minutes(self.gate.timeout)
    }

    fn configuration(&self, service: &ServiceView) -> DeploymentConfiguration {
        let current = service.configuration.as_ref();
        lifecycle::deployment_configuration(current, self.kind.ecs(), &self.settings, self.hook_timeout_minutes())
    }
}

impl Strategy for TrafficShift {
    type Gate = TrafficGate;

    fn kind(&self) -> Kind {
        self.kind
    }

    fn check(&self, service: &ServiceView) -> Result<(), DeployError> {
        check_ecs_controller(service)?;
        lifecycle::check_advanced_configuration(&service.load_balancers, self.kind).map_err(DeployError::Precondition)
    }

    fn update(&self, service: &ServiceView) -> Update {
        let configuration = self.configuration(service);
        let note = lifecycle::describe_configuration(&configuration, self.hook_timeout_minutes());
        Update { configuration: Some(configuration), note: Some(note) }
    }

    fn restore(&self, service: &ServiceView) -> Option<DeploymentConfiguration> {
        Some(lifecycle::without_our_hook(Some(&self.configuration(service))))
    }

    fn gate(&self) -> TrafficGate {
        TrafficGate::new(self.gate.clone())
    }
}
