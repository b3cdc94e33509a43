//! ecs-sim driven through aws-sdk-ecs only (no deployer code): rolling updates under load,
//! the circuit breaker, agent-side failures, blue/green with a PAUSE hook, task sets and
//! CodeDeploy, and shutdown.
//! Each test starts its own ecs-sim at `--time-scale 0.05` and uses its own account.

use crate::support::load;

mod agent;
mod api;
mod bluegreen;
pub(crate) mod codedeploy;
pub(crate) mod common;
pub(crate) mod harness;
mod rolling;
mod shutdown;
