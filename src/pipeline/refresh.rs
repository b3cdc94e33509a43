//! What a redeploy of the running revision (`refresh`, `deploy --force-new-deployment`) reports
//! before it rolls: which parameters and secrets the revision references changed since the
//! oldest running task started. The references and their metadata (never a value) are
//! `taskdef::metadata`'s, the running tasks' `startedAt` comes from `Ecs::tasks_of`, and the
//! judgement is `taskdef::changed`.

use super::Session;
use crate::aws::ecs_json::EcsJson;
use crate::deploy::driver::Checked;
use crate::deploy::ecs::Ecs;
use crate::error::{Error, Result};
use crate::taskdef::changed::{self, SecretsReport};
use crate::taskdef::{ecs, metadata};

/// The one revision every checked service runs (a refresh rolls that revision again).
pub fn current_revision(checked: &[Checked]) -> Result<String> {
    let mut revisions = checked.iter().map(|c| c.previous.as_str());
    let first = revisions.next().ok_or_else(|| Error::Usage("no service to refresh: pass --service".into()))?;
    match revisions.find(|r| *r != first) {
        Some(other) => Err(Error::Usage(format!(
            "the services run different revisions ({first} and {other}); refresh them one at a time"
        ))),
        None => Ok(first.to_string()),
    }
}

/// The references of `task_definition`, judged against the oldest running task's start.
pub async fn what_changed(
    session: &Session,
    tasks: &Ecs<'_>,
    cluster: &str,
    checked: &[Checked],
    task_definition: &str,
) -> Result<SecretsReport> {
    let (td, _) = ecs::describe(&EcsJson::new(&session.config), task_definition).await?;
    let refs = metadata::references(&td);
    let mut oldest: Option<u64> = None;
    for c in checked {
        let running = tasks
            .tasks_of(cluster, &c.service, task_definition, None)
            .await
            .map_err(|e| Error::Input(format!("{}: {e}", c.service)))?;
        for at in running.iter().filter(|t| t.running()).filter_map(|t| t.started_at_ms) {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    let (parameters, secrets) = metadata::targets(&refs);
    let meta = metadata::fetch(&session.config, &parameters, &secrets).await;
    Ok(changed::judge(&refs, &meta, oldest))
}
