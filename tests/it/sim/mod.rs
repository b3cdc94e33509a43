//! ecs-sim driven through aws-sdk-ecs only (no deployer code): rolling updates under load,
//! the circuit breaker, agent-side failures, blue/green with a PAUSE hook, and shutdown.
//! Each test starts its own ecs-sim at `--time-scale 0.05` and uses its own account.

// The bounded load generator lives in support/; included here by path so this module
// builds whether or not support/mod.rs declares it.
#[allow(dead_code)]
#[path = "../support/load.rs"]
mod load;

mod agent;
mod api;
mod bluegreen;
pub(crate) mod common;
pub(crate) mod harness;
mod rolling;
mod shutdown;
