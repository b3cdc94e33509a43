//! `deployer promote`: give an image already in a registry new tags, or copy it to another
//! repository or registry, without rebuilding (`image::promote` explains how bytes move, or
//! do not, and which registry gets which credential).

use std::sync::Arc;

use aws_config::SdkConfig;

use crate::aws::auth::{self, AuthRequest, Source};
use crate::cli::{GlobalArgs, PromoteArgs};
use crate::commands::push::{PushResult, check_tags, default_config, set_outputs, target};
use crate::error::Result;
use crate::exit::Exit;
use crate::image::promote::{self, SourceInputs, SourcePlan, SourceRef};
use crate::image::push::{DEFAULT_CONCURRENCY, Options, ProgressMode};
use crate::image::registry::Registry;
use crate::image::{check_repository, ecr};
use crate::output::Printer;

/// An ECR client with the credentials of `role`, assumed with the current ones.
async fn source_client(region: Option<String>, role: &auth::RoleArn, printer: &Printer) -> Result<aws_sdk_ecr::Client> {
    let req = AuthRequest {
        role: Some(role.clone()),
        chain_role: None,
        session_name: auth::default_session_name(
            std::env::var("GITHUB_REPOSITORY").ok().as_deref(),
            std::env::var("GITHUB_RUN_ID").ok().as_deref(),
        ),
        duration_seconds: 900,
        audience: String::new(),
        allowed_account_ids: Vec::new(),
        region,
    };
    let http = reqwest::Client::new();
    let session = auth::authenticate(&req, Source::DefaultChain, &http).await?;
    printer.runner.mask(session.credentials.secret_access_key());
    if let Some(token) = session.credentials.session_token() {
        printer.runner.mask(token);
    }
    tracing::info!("reading the source as {}", session.caller_arn);
    Ok(aws_sdk_ecr::Client::new(&session.config))
}

fn host_of(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    rest.trim_end_matches('/')
}

pub async fn run(args: &PromoteArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let result = execute(&default_config(global).await?, args, printer).await?;
    printer.result(&result);
    Ok(Exit::Ok)
}

/// Promote with `config`'s credentials and set the step outputs; `release` calls this too.
pub async fn execute(config: &SdkConfig, args: &PromoteArgs, printer: &Printer) -> Result<PushResult> {
    check_repository("--repository", &args.repository)?;
    check_tags(&args.tags)?;
    let from = SourceRef::parse(&args.from)?;
    let from_role = args.from_role_arn.as_deref().map(|a| auth::check_role_arn("--from-role-arn", a)).transpose()?;
    if let Some(endpoint) = &args.registry_endpoint {
        ecr::check_endpoint("--registry-endpoint", endpoint)?;
    }
    // What can be refused without the network is refused before any AWS call: look-alike
    // hosts, ECR over http, an ECR credential for a registry that is not ECR.
    let inputs = SourceInputs {
        from_host: from.host.as_deref(),
        from_registry: args.from_registry.as_deref(),
        from_registry_endpoint: args.from_registry_endpoint.as_deref(),
        from_role: from_role.is_some(),
        dest_host: "",
        dest_base: args.registry_endpoint.as_deref().unwrap_or_default(),
    };
    promote::plan_source(&inputs)?;
    let target = target(config, &args.repository, None, args.registry_endpoint.as_deref(), printer).await?;
    let repo_host = target.repository.uri.split('/').next().unwrap_or_default().to_string();
    let plan =
        promote::plan_source(&SourceInputs { dest_host: &repo_host, dest_base: target.registry.base(), ..inputs })?;
    let (source, same) = match plan {
        SourcePlan::Same => (target.registry.clone(), true),
        SourcePlan::Anonymous { base } => {
            tracing::info!("reading the source from {base} without credentials (it is not an ECR registry)");
            (Arc::new(Registry::new(&base, None, None)?), false)
        }
        SourcePlan::Ecr { host, account, region, base } => {
            // Another ECR registry: a token for its account from its region's ECR, with
            // --from-role-arn's credentials when given, else ours; sent to `base` only.
            let client = match &from_role {
                Some(role) => source_client(Some(region.clone()), role, printer).await?,
                None => {
                    let conf = aws_sdk_ecr::config::Builder::from(config)
                        .region(aws_sdk_ecr::config::Region::new(region.clone()))
                        .build();
                    aws_sdk_ecr::Client::from_conf(conf)
                }
            };
            let t = ecr::token(&client, Some(&account)).await?;
            for s in &t.secrets {
                printer.runner.mask(s.expose());
            }
            tracing::info!("reading the source from {host} (account {account}, {region}) at {base}");
            (Arc::new(Registry::new(&base, Some(t.header), None)?), false)
        }
    };
    let image = promote::resolve(&source, &from).await?;
    tracing::info!(
        "promoting {}/{}:{} ({}) to {}{}",
        host_of(source.base()),
        from.repo,
        from.reference,
        image.top.digest,
        target.repository.uri,
        if same { " (same registry: no blob moves)" } else { "" }
    );
    let opts = Options {
        concurrency: DEFAULT_CONCURRENCY,
        immutable: target.repository.immutable,
        progress: ProgressMode::detect(printer.runner.in_actions()),
        mount_from: None,
    };
    printer.runner.group(&format!("promote {} to {}", image.origin, target.repository.uri));
    let report = promote::promote(&target.registry, same, &from, &image, &args.repository, &args.tags, opts).await;
    printer.runner.end_group();
    let report = report?;
    let result = PushResult::new(&target.repository.uri, &args.repository, &args.tags, image.origin.clone(), &report);
    set_outputs(printer, &result)?;
    Ok(result)
}
