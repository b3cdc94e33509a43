//! `deployer deploy`, `deployer refresh` and `deployer rollback`. Deploy: the flags as a
//! deploy plan, credentials that cannot be renewed checked against the timeout, every service
//! checked before any change (a task-definition file is registered only after the checks
//! pass), the deploy stage, then the after-deploy stage when every service succeeded; the exit
//! code comes from every service. Refresh (`deploy --force-new-deployment`) deploys the
//! revision the services run already, after naming the references that changed since their
//! tasks started. Rollback warns about parameters and secrets that changed since the revision
//! it returned to, and moves scheduled tasks back when asked.

use std::fmt;

use serde::Serialize;

use super::plan::{after_deploy_plan, deploy_plan, poll_from_env};
use crate::aws::limiter::Limiter;
use crate::aws::refresh::{Reach, deploy_budget};
use crate::cli::{DeployArgs, GlobalArgs, RollbackArgs};
use crate::deploy::Cancel;
use crate::deploy::driver::{self, Checked, Context, ServiceError};
use crate::deploy::ecs::Ecs;
use crate::deploy::report::{DeployRun, Restored};
use crate::deploy::view::short;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::pipeline::after_deploy::{self, AfterDeploy};
use crate::pipeline::{Session, http_client, refresh, taskdef};
use crate::schedules::ScheduleReport;
use crate::taskdef::changed::SecretsReport;

/// `deploy`'s and `refresh`'s printed result: the deploy's own, the references a refresh
/// judged, and what the after-deploy stage did.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeployResult {
    #[serde(flatten)]
    pub deploy: DeployRun,
    /// Which referenced parameters and secrets changed since the running tasks started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<SecretsReport>,
    #[serde(skip_serializing_if = "AfterDeploy::is_empty")]
    pub after_deploy: AfterDeploy,
}

impl fmt::Display for DeployResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.references {
            writeln!(f, "{r}")?;
        }
        write!(f, "{}", self.deploy)?;
        if !self.after_deploy.is_empty() {
            write!(f, "\n{}", self.after_deploy)?;
        }
        Ok(())
    }
}

/// `deploy`, and `refresh` (`refresh`: true, as `--force-new-deployment`).
pub async fn run(args: &DeployArgs, global: &GlobalArgs, printer: &Printer, refresh: bool) -> Result<Exit> {
    let refresh = refresh || args.force_new_deployment;
    match (&args.task_definition, refresh) {
        (Some(_), true) => {
            return Err(Error::Usage(
                "refresh rolls the revision the service runs now; to change revisions, deploy --task-definition \
                 without --force-new-deployment"
                    .into(),
            ));
        }
        (None, false) => {
            return Err(Error::Usage(
                "deploy needs --task-definition (or --force-new-deployment to roll the current revision again)".into(),
            ));
        }
        _ => {}
    }
    let plan = deploy_plan(&args.cluster, &args.services, &args.gate)?;
    let session = Session::from_default_chain(global).await?;
    // Keys from the environment cannot be renewed: they must outlast the deploy.
    let timeout = plan.gate.timeout;
    Reach::from_env(|k| std::env::var(k).ok())
        .check(std::time::SystemTime::now(), deploy_budget(timeout), timeout)
        .map_err(Error::Input)?;
    let (ecs, http, cancel) = (crate::deploy::ecs::client(&session.config), http_client()?, Cancel::on_signals());
    let codedeploy = aws_sdk_codedeploy::Client::new(&session.config);
    let limiter = Limiter::new(&plan.api_limits);
    let ctx = Context { ecs: &ecs, codedeploy: &codedeploy, http: &http, cancel: &cancel, limiter: &limiter };
    let checked = driver::check_all(&ctx, &plan).await?;
    let (task_definition, references) = match &args.task_definition {
        Some(spec) => (taskdef::task_definition_arn(&session, spec, args.allow_unknown_fields).await?, None),
        None => what_runs(&session, &ctx, &plan.cluster, &checked, printer).await?,
    };
    let run = crate::pipeline::deploy(&ctx, &plan, &checked, &task_definition, &printer.runner).await?;
    let after = after_deploy_plan(&args.after);
    let after_deploy = after_deploy::run(&session, &after, &run, &task_definition, &printer.runner).await;
    let result = DeployResult { deploy: run, references, after_deploy };
    printer.result(&result);
    Ok(result.deploy.exit)
}

/// A refresh's revision (the one every service runs) and what changed under it.
async fn what_runs(
    session: &Session,
    ctx: &Context<'_>,
    cluster: &str,
    checked: &[Checked],
    printer: &Printer,
) -> Result<(String, Option<SecretsReport>)> {
    let task_definition = refresh::current_revision(checked)?;
    let references =
        refresh::what_changed(session, &Ecs::new(ctx.ecs, ctx.limiter), cluster, checked, &task_definition).await?;
    tracing::info!("{references}");
    printer.runner.summary(&crate::taskdef::changed::summary(&references))?;
    Ok((task_definition, Some(references)))
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
    /// `--update-scheduled-tasks`: the scheduled tasks pointed back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_tasks: Option<ScheduleReport>,
}

impl fmt::Display for RollbackResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (service, from, to) = (&self.service, short(&self.from), short(&self.to));
        match &self.state {
            None => write!(f, "{service}: rolled back from {from} to {to}; healthy")?,
            Some(state) => write!(f, "{service}: rollback to {to} NOT confirmed: {state}")?,
        }
        if let Some(s) = &self.scheduled_tasks {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

pub async fn run_rollback(args: &RollbackArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let to = match &args.to {
        Some(spec) => Some(taskdef::task_definition_arn(&session, spec, false).await?),
        None => None,
    };
    let (ecs, http, cancel) = (crate::deploy::ecs::client(&session.config), http_client()?, Cancel::default());
    let codedeploy = aws_sdk_codedeploy::Client::new(&session.config);
    let limiter = Limiter::default();
    let ctx = Context { ecs: &ecs, codedeploy: &codedeploy, http: &http, cancel: &cancel, limiter: &limiter };
    let (from, to, restored) = driver::roll_back(&ctx, &args.cluster, &args.service, to, poll_from_env())
        .await
        .map_err(|source| ServiceError { service: args.service.clone(), source })?;
    let state = match restored {
        Restored::Healthy => None,
        Restored::NotConfirmed(s) => Some(s),
    };
    let scheduled_tasks = match args.update_scheduled_tasks && state.is_none() {
        true => Some(after_deploy::move_scheduled_tasks(&session, &args.cluster, &to, &printer.runner).await),
        false => None,
    };
    // The task definition is back; its parameters and secrets may not be.
    let warnings = crate::taskdef::pins::warn_after_rollback(&session.config, &to, &printer.runner).await;
    let service = args.service.clone();
    let result = RollbackResult { service, from, to, healthy: state.is_none(), state, warnings, scheduled_tasks };
    printer.result(&result);
    Ok(if result.healthy { Exit::Ok } else { Exit::Unknown })
}
