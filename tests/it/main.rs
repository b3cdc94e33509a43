//! deployer's one integration-test binary (one link of the AWS SDK, as ripgrep does it):
//! a module per area, all talking to the local stack over loopback (DESIGN.md section 5).

mod action;
mod auth;
mod bluegreen;
mod codedeploy;
mod credentials;
mod deploy;
mod fleet;
mod injection;
mod params;
mod pins;
mod preflight;
mod push;
mod refresh;
mod release;
mod resources;
mod revisions;
mod run_task;
mod schedules;
mod schema;
mod secrets;
mod sim;
mod support;
mod taskdef;
mod workflows;
