//! Housekeeping after a successful deploy, shared by `deploy` and `release` (`rollback` moves
//! scheduled tasks back with the same code): scheduled tasks
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
use crate::schedules::ScheduleReport;

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
    pub scheduled_tasks: Option<ScheduleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisions: Option<Cleanup>,
}

impl AfterDeploy {
    pub fn is_empty(&self) -> bool {
        self.revisions.is_none() && self.scheduled_tasks.is_none()
    }
}

impl fmt::Display for AfterDeploy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schedules = self.scheduled_tasks.as_ref().map(|s| s.to_string());
        let revisions = self.revisions.as_ref().map(|c| c.to_string());
        let parts: Vec<String> = [schedules, revisions].into_iter().flatten().collect();
        f.write_str(&parts.join("\n"))
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

fn warn(printer: &Printer, message: &str) {
    printer.runner.annotate(crate::github::runner::Level::Warning, message, None);
}

/// A text block of the step summary.
fn summary_block(printer: &Printer, title: &str, text: &str) {
    let md = format!("\n### {title}\n\n```text\n{}\n```\n", text.replace("```", "'''"));
    printer.runner.summary(&md).unwrap_or_else(|e| tracing::warn!("step summary: {e}"));
}

/// After a deploy: nothing unless every service succeeded. Scheduled tasks move first, so the
/// cleanup sees them on the new revision.
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
    if args.update_scheduled_tasks {
        let clusters: std::collections::BTreeSet<&str> = result.services.iter().map(|r| r.cluster.as_str()).collect();
        let mut report = ScheduleReport::default();
        for cluster in clusters {
            let r = move_scheduled_tasks(session, cluster, task_definition, printer).await;
            report.moved.extend(r.moved);
            report.errors.extend(r.errors);
        }
        out.scheduled_tasks = Some(report);
    }
    if let Some(keep) = args.keep_revisions {
        let family = family_revision(task_definition).map(|(f, _)| f).unwrap_or_default();
        let cleanup = clean(session, &family, keep as usize, protected(result, task_definition)).await;
        for e in &cleanup.errors {
            warn(printer, &format!("revision cleanup: {e}"));
        }
        if let Some(why) = &cleanup.skipped {
            warn(printer, &format!("revision cleanup skipped: {why}"));
        }
        summary_block(printer, "revisions", &cleanup.to_string());
        out.revisions = Some(cleanup);
    }
    out
}

/// Gather every user of the family's revisions, then clean up; any failure to look keeps all.
async fn clean(session: &Session, family: &str, keep: usize, mut users: Users) -> Cleanup {
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let skipped = |why: String| Cleanup {
        family: family.to_string(),
        keep: Some(keep),
        skipped: Some(why),
        ..Cleanup::default()
    };
    match scan::all_users(&ecs, &session.config, family).await {
        Ok(u) => scan::merge(&mut users, u),
        Err(e) => return skipped(format!("cannot tell which revisions are in use ({e}); every revision kept")),
    }
    match scan::cleanup(&ecs, family, keep, &users, false).await {
        Ok(c) => c,
        Err(e) => skipped(format!("{e}; every revision kept")),
    }
}

/// `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME` for a cluster name (an ARN stays as it is).
pub fn cluster_arn(session: &Session, cluster: &str) -> String {
    if cluster.starts_with("arn:") {
        return cluster.to_string();
    }
    let partition = crate::taskdef::refs::partition_of(&session.region);
    format!("arn:{partition}:ecs:{}:{}:cluster/{cluster}", session.region, session.account)
}

/// Point the family's scheduled tasks on `cluster` at `to` (deploy: the new revision;
/// rollback: the one rolled back to).
pub async fn move_scheduled_tasks(session: &Session, cluster: &str, to: &str, printer: &Printer) -> ScheduleReport {
    let cluster_arn = cluster_arn(session, cluster);
    let family = family_revision(to).map(|(f, _)| f).unwrap_or_default();
    let report = match crate::schedules::aws::discover(&session.config, std::slice::from_ref(&cluster_arn)).await {
        Ok(found) => {
            let moves = crate::schedules::plan(&found.scheduled, &cluster_arn, &family, to);
            crate::schedules::aws::apply(&session.config, &found, &moves).await
        }
        Err(e) => ScheduleReport {
            errors: vec![format!("cannot list the scheduled tasks: {e}")],
            ..ScheduleReport::default()
        },
    };
    for e in &report.errors {
        warn(printer, &format!("scheduled tasks: {e}"));
    }
    summary_block(printer, "scheduled tasks", &report.to_string());
    report
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
