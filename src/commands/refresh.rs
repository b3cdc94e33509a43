//! `deployer refresh` (= `deploy --force-new-deployment`): roll the services' current revision
//! again under the same gate and rollback as any deploy, so new tasks read rotated secrets and
//! changed parameters; the report names which references changed since the running tasks
//! started (metadata only, see `crate::refresh`).

use std::fmt;

use serde::Serialize;

use crate::cli::{DeployArgs, GlobalArgs};
use crate::commands::deploy::{DeployResult, deploy_services, publish};
use crate::commands::taskdef::Session;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::refresh::{self, SecretsReport};

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RefreshResult {
    #[serde(flatten)]
    pub deploy: DeployResult,
    /// Which referenced parameters and secrets changed since the running tasks started.
    pub references: SecretsReport,
}

impl fmt::Display for RefreshResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.references, self.deploy)
    }
}

pub async fn run(args: &DeployArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    if !args.task_definition.is_empty() {
        return Err(Error::Usage(
            "refresh rolls the revision the service runs now; to change revisions, deploy --task-definition without --force-new-deployment".into(),
        ));
    }
    let session = Session::from_default_chain(global).await?;
    let mut current: Option<String> = None;
    for service in &args.services {
        let td = crate::taskdef::ecs::service_task_definition(&session.config, &args.cluster, service).await?;
        match &current {
            Some(c) if *c != td => {
                return Err(Error::Usage(format!(
                    "the services run different revisions ({c} and {td}); refresh them one at a time"
                )));
            }
            _ => current = Some(td),
        }
    }
    let task_definition = current.unwrap_or_default();
    let references = what_changed(&session, &args.cluster, &args.services, &task_definition).await?;
    tracing::info!("{references}");
    printer.runner.summary(&refresh::summary(&references))?;
    let deploy = deploy_services(&session, args, &task_definition, printer).await?;
    publish(printer, &deploy)?;
    let result = RefreshResult { deploy, references };
    printer.result(&result);
    Ok(result.deploy.exit())
}

/// The references of `task_definition` judged against the oldest running task's start.
async fn what_changed(
    session: &Session,
    cluster: &str,
    services: &[String],
    task_definition: &str,
) -> Result<SecretsReport> {
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let td = ecs.describe_task_definition().task_definition(task_definition).send().await.map_err(|e| {
        Error::Input(format!("ECS DescribeTaskDefinition {task_definition}: {}", crate::aws::auth::sdk_message(&e)))
    })?;
    let refs = td.task_definition().map(refresh::references).unwrap_or_default();
    let oldest = refresh::oldest_task_start(&ecs, cluster, services).await.map_err(Error::Input)?;
    let metas = refresh::metadata(&session.config, &refs).await;
    Ok(refresh::judge(&refs, &metas, oldest))
}
