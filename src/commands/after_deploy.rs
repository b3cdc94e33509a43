//! Housekeeping after a successful deploy, shared by `deploy` and `release`: scheduled tasks
//! moved to the new revision (`--update-scheduled-tasks`) and old revisions deregistered
//! (`--keep-revisions N`). Nothing here can fail a deploy that already succeeded: problems are
//! reported and annotated, and anything uncertain keeps revisions rather than deregistering.

use std::fmt;

use serde::Serialize;

use crate::cli::AfterDeployArgs;
use crate::commands::deploy::DeployResult;
use crate::commands::taskdef::Session;
use crate::config::Environment;
use crate::deploy::rolling::Outcome;
use crate::error::{Error, Result};
use crate::output::Printer;
use crate::revisions::{Cleanup, Users, family_revision, scan};

/// Flags over the environment's keys.
pub fn merge(args: &AfterDeployArgs, env: &Environment) -> Result<AfterDeployArgs> {
    if env.keep_revisions == Some(0) {
        return Err(Error::Usage("deployer.toml: keep-revisions must be at least 1".into()));
    }
    Ok(AfterDeployArgs {
        update_scheduled_tasks: args.update_scheduled_tasks || env.update_scheduled_tasks.unwrap_or(false),
        keep_revisions: args.keep_revisions.or(env.keep_revisions),
    })
}

/// What the housekeeping did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AfterDeploy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisions: Option<Cleanup>,
}

impl AfterDeploy {
    pub fn is_empty(&self) -> bool {
        self.revisions.is_none()
    }
}

impl fmt::Display for AfterDeploy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.revisions {
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Revisions a rollback or a running service still needs, from the deploy's own reports.
fn protected(result: &DeployResult, task_definition: &str) -> Users {
    let mut users = Users::new();
    for r in &result.services {
        let name = format!("{}/{}", r.cluster, r.service);
        users.entry(task_definition.to_string()).or_default().push(format!("live: {name}"));
        if !r.previous_task_definition_arn.is_empty() {
            users.entry(r.previous_task_definition_arn.clone()).or_default().push(format!("rollback target: {name}"));
        }
    }
    users
}

/// After a deploy: nothing unless every service succeeded.
pub async fn run(
    session: &Session,
    args: &AfterDeployArgs,
    result: &DeployResult,
    task_definition: &str,
    printer: &Printer,
) -> AfterDeploy {
    let mut out = AfterDeploy::default();
    if result.result != Outcome::Succeeded || result.services.is_empty() {
        return out;
    }
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    if let Some(keep) = args.keep_revisions {
        let family = family_revision(task_definition).map(|(f, _)| f).unwrap_or_default();
        let cleanup = clean(&ecs, &family, keep as usize, protected(result, task_definition)).await;
        for e in &cleanup.errors {
            printer.runner.annotate(crate::github::runner::Level::Warning, &format!("revision cleanup: {e}"), None);
        }
        if let Some(why) = &cleanup.skipped {
            printer.runner.annotate(
                crate::github::runner::Level::Warning,
                &format!("revision cleanup skipped: {why}"),
                None,
            );
        }
        printer
            .runner
            .summary(&format!("\n### revisions\n\n```text\n{}\n```\n", cleanup.to_string().replace("```", "'''")))
            .unwrap_or_else(|e| tracing::warn!("step summary: {e}"));
        out.revisions = Some(cleanup);
    }
    out
}

/// Gather every user of the family's revisions, then clean up; any failure to look keeps all.
async fn clean(ecs: &aws_sdk_ecs::Client, family: &str, keep: usize, mut users: Users) -> Cleanup {
    let skipped = |why: String| Cleanup {
        family: family.to_string(),
        keep: Some(keep),
        skipped: Some(why),
        ..Cleanup::default()
    };
    match scan::service_users(ecs, family).await {
        Ok(u) => scan::merge(&mut users, u),
        Err(e) => return skipped(format!("cannot tell which revisions services use ({e}); every revision kept")),
    }
    match scan::cleanup(ecs, family, keep, &users, false).await {
        Ok(c) => c,
        Err(e) => skipped(format!("{e}; every revision kept")),
    }
}

/// `deploy`'s printed result: the deploy's own, plus what the housekeeping did.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct WithAfterDeploy<'a> {
    #[serde(flatten)]
    pub deploy: &'a DeployResult,
    #[serde(skip_serializing_if = "AfterDeploy::is_empty")]
    pub after_deploy: AfterDeploy,
}

impl fmt::Display for WithAfterDeploy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.deploy)?;
        if !self.after_deploy.is_empty() {
            write!(f, "\n{}", self.after_deploy)?;
        }
        Ok(())
    }
}
