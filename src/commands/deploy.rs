//! `deployer deploy` and `deployer rollback`. Deploy: the flags as a deploy plan, credentials
//! that cannot be renewed checked against the timeout, every service checked before any
//! change (a task-definition file is registered only after the checks pass), the deploy stage,
//! the result; the exit code comes from every service. Rollback warns about parameters and
//! secrets that changed since the revision it returned to.

use std::fmt;

use serde::Serialize;

use super::plan::{deploy_plan, poll_from_env};
use crate::aws::refresh::{Reach, deploy_budget};
use crate::cli::{DeployArgs, GlobalArgs, RollbackArgs};
use crate::deploy::Cancel;
use crate::deploy::driver::{self, Context, ServiceError};
use crate::deploy::report::Restored;
use crate::deploy::view::short;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::pipeline::{Session, http_client, taskdef};

pub async fn run(args: &DeployArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let plan = deploy_plan(&args.cluster, &args.services, &args.gate)?;
    let session = Session::from_default_chain(global).await?;
    // Keys from the environment cannot be renewed: they must outlast the deploy.
    let timeout = plan.gate.timeout;
    Reach::from_env(|k| std::env::var(k).ok())
        .check(std::time::SystemTime::now(), deploy_budget(timeout), timeout)
        .map_err(Error::Input)?;
    let (ecs, http, cancel) = (aws_sdk_ecs::Client::new(&session.config), http_client()?, Cancel::on_signals());
    let codedeploy = aws_sdk_codedeploy::Client::new(&session.config);
    let ctx = Context { ecs: &ecs, codedeploy: &codedeploy, http: &http, cancel: &cancel };
    let checked = driver::check_all(&ctx, &plan).await?;
    let task_definition = taskdef::task_definition_arn(&session, &args.task_definition).await?;
    let run = crate::pipeline::deploy(&ctx, &plan, &checked, &task_definition, &printer.runner).await?;
    printer.result(&run);
    Ok(run.exit)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RollbackResult {
    pub service: String,
    pub from: String,
    pub to: String,
    pub healthy: bool,
    pub state: Option<String>,
    /// Parameters and secrets the revision references that changed after it was registered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl fmt::Display for RollbackResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (service, from, to) = (&self.service, short(&self.from), short(&self.to));
        match &self.state {
            None => write!(f, "{service}: rolled back from {from} to {to}; healthy"),
            Some(state) => write!(f, "{service}: rollback to {to} NOT confirmed: {state}"),
        }
    }
}

pub async fn run_rollback(args: &RollbackArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let to = match &args.to {
        Some(spec) => Some(taskdef::task_definition_arn(&session, spec).await?),
        None => None,
    };
    let (ecs, http, cancel) = (aws_sdk_ecs::Client::new(&session.config), http_client()?, Cancel::default());
    let codedeploy = aws_sdk_codedeploy::Client::new(&session.config);
    let ctx = Context { ecs: &ecs, codedeploy: &codedeploy, http: &http, cancel: &cancel };
    let (from, to, restored) = driver::roll_back(&ctx, &args.cluster, &args.service, to, poll_from_env())
        .await
        .map_err(|source| ServiceError { service: args.service.clone(), source })?;
    let state = match restored {
        Restored::Healthy => None,
        Restored::NotConfirmed(s) => Some(s),
    };
    // The task definition is back; its parameters and secrets may not be.
    let warnings = crate::taskdef::pins::warn_after_rollback(&session.config, &to, &printer.runner).await;
    let result = RollbackResult { service: args.service.clone(), from, to, healthy: state.is_none(), state, warnings };
    printer.result(&result);
    Ok(if result.healthy { Exit::Ok } else { Exit::Unknown })
}
