//! The image stage of `release`: push a built image (`--source`), promote an existing one
//! (`--from`, the manual production release), or nothing (the image comes with `--image`).
//! Uses the release's session, so OIDC credentials reach ECR too.

use crate::cli::{PromoteArgs, PushArgs, ReleaseArgs};
use crate::commands::release::{Plan, Published};
use crate::commands::taskdef::Session;
use crate::commands::{promote, push};
use crate::error::{Error, Result};
use crate::output::Printer;

pub async fn publish(
    args: &ReleaseArgs,
    plan: &Plan,
    session: &Session,
    printer: &Printer,
) -> Result<Option<Published>> {
    if args.source.is_none() && args.from.is_none() {
        return Ok(None);
    }
    let repository = plan.repository.clone().ok_or_else(|| {
        Error::Usage(format!(
            "--source/--from need a repository: pass --repository or set `repository` for environment {:?}",
            plan.environment
        ))
    })?;
    let result = match (&args.source, &args.from) {
        (Some(source), _) => {
            let push_args = PushArgs {
                source: source.clone(),
                repository,
                tags: args.tags.clone(),
                create_repository: args.create_repository,
                registry_endpoint: args.registry_endpoint.clone(),
                concurrency: args.concurrency,
                immutable_tags: false,
                scan_on_push: false,
            };
            push::execute(&session.config, &push_args, printer).await?
        }
        (None, Some(from)) => {
            let promote_args = PromoteArgs {
                from: from.clone(),
                from_registry: args.from_registry.clone(),
                from_role_arn: None,
                from_registry_endpoint: None,
                repository,
                tags: args.tags.clone(),
                registry_endpoint: args.registry_endpoint.clone(),
            };
            promote::execute(&session.config, &promote_args, printer).await?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(Published { uri: result.image_uri, digest: result.image_digest }))
}
