//! The image stage: push a built image (OCI layout, docker archive, docker daemon) to ECR, or
//! promote one already in a registry to another repository or registry without rebuilding.
//! Everything local (names, tags, registry addresses, the source's blobs) is checked before any
//! AWS call; the registry credential is masked before use and sent only where
//! `ecr::registry_base` / `promote::plan_source` allow. `image::push` / `image::promote` move
//! the bytes.

use std::fmt;
use std::sync::Arc;

use aws_config::SdkConfig;
use serde::Serialize;

use super::plan::{PromoteRequest, PushRequest};
use crate::aws::auth::{self, AuthRequest, Source};
use crate::error::{Error, Result};
use crate::github::runner::Runner;
use crate::image::ecr::{self, CreateOptions};
use crate::image::promote::{self as promotion, SourceInputs, SourcePlan, SourceRef};
use crate::image::push::{self as pushing, DEFAULT_CONCURRENCY, Options, ProgressMode, Report};
use crate::image::registry::{Refresh, Registry};
use crate::image::source::{self, SourceSpec, human};
use crate::image::{check_repository, check_tag};

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PushResult {
    pub result: &'static str,
    pub image_uri: String,
    pub image_digest: String,
    pub repository: String,
    pub tags: Vec<String>,
    pub source: String,
    pub blobs_total: usize,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    pub manifests_put: usize,
}

impl PushResult {
    fn new(uri: &str, repository: &str, tags: &[String], source: String, report: &Report) -> Self {
        PushResult {
            result: "succeeded",
            image_uri: format!("{uri}@{}", report.digest),
            image_digest: report.digest.clone(),
            repository: repository.to_string(),
            tags: tags.to_vec(),
            source,
            blobs_total: report.blobs_total,
            blobs_uploaded: report.blobs_uploaded,
            blobs_mounted: report.blobs_mounted,
            bytes_uploaded: report.bytes_uploaded,
            manifests_put: report.manifests_put,
        }
    }

    /// The step outputs of a push or promote (DESIGN.md section 3's names).
    pub fn set_outputs(&self, runner: &Runner) -> Result<()> {
        runner.set_output("image-uri", &self.image_uri)?;
        runner.set_output("image-digest", &self.image_digest)?;
        runner.set_output("image-tags", &self.tags.join(","))?;
        Ok(())
    }
}

impl fmt::Display for PushResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.image_uri)?;
        let tags = if self.tags.is_empty() { "untagged".to_string() } else { format!("tags {}", self.tags.join(", ")) };
        write!(
            f,
            "{} → {} ({tags}); {} of {} blobs uploaded ({}), {} mounted, {} manifests written",
            self.source,
            self.repository,
            self.blobs_uploaded,
            self.blobs_total,
            human(self.bytes_uploaded),
            self.blobs_mounted,
            self.manifests_put
        )
    }
}

/// Where images go: the ECR repository and a registry client with its credential.
struct Target {
    repository: ecr::Repository,
    registry: Arc<Registry>,
}

/// Find (or create) the repository and get the registry credential, masked before use.
async fn target(
    config: &SdkConfig,
    repository: &str,
    create: Option<CreateOptions>,
    registry_endpoint: Option<&str>,
    runner: &Runner,
) -> Result<Target> {
    let client = aws_sdk_ecr::Client::new(config);
    let sts = aws_sdk_sts::Client::new(config);
    let repo = ecr::repository(&client, &sts, repository, create).await?;
    let token = ecr::token(&client, None).await?;
    for secret in &token.secrets {
        runner.mask(secret.expose());
    }
    let base = ecr::registry_base(&token.proxy_endpoint, registry_endpoint)?;
    let refresh: Refresh = {
        let client = client.clone();
        let runner = runner.clone();
        Arc::new(move || {
            let client = client.clone();
            let runner = runner.clone();
            Box::pin(async move {
                tracing::info!("registry answered 401; refreshing the ECR authorization token");
                let t = ecr::token(&client, None).await?;
                for secret in &t.secrets {
                    runner.mask(secret.expose());
                }
                Ok(t.header)
            })
        })
    };
    let registry = Registry::new(&base, Some(token.header), Some(refresh))?;
    tracing::debug!("registry endpoint {}", registry.base());
    Ok(Target { repository: repo, registry: Arc::new(registry) })
}

fn check_tags(tags: &[String]) -> Result<()> {
    for tag in tags {
        check_tag(tag)?;
    }
    Ok(())
}

/// Parallel uploads: 1 to 32, default 4.
pub fn concurrency(flag: Option<usize>) -> Result<usize> {
    match flag {
        None => Ok(DEFAULT_CONCURRENCY),
        Some(n) if (1..=32).contains(&n) => Ok(n),
        Some(n) => Err(Error::Usage(format!("--concurrency {n}: use 1 to 32"))),
    }
}

/// Push `req.source` to `req.repository` with `config`'s credentials.
pub async fn push(config: &SdkConfig, req: &PushRequest, runner: &Runner) -> Result<PushResult> {
    // Everything that can be checked locally is checked before any AWS call.
    check_repository("--repository", &req.repository)?;
    check_tags(&req.tags)?;
    let concurrency = concurrency(req.concurrency)?;
    if let Some(endpoint) = &req.registry_endpoint {
        ecr::check_endpoint("--registry-endpoint", endpoint)?;
    }
    let spec = SourceSpec::parse(&req.source)?;
    let cache = req.cache.clone();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let image = tokio::task::spawn_blocking(move || source::load(&spec, &cache, threads))
        .await
        .map_err(|e| Error::Input(format!("reading the source failed: {e}")))??;
    tracing::info!(
        "{}: {} ({} blobs, {}{})",
        image.origin,
        image.top.digest,
        image.blobs.len(),
        human(image.blobs.iter().map(|b| b.size).sum()),
        if image.children.is_empty() { String::new() } else { format!(", {} platforms", image.children.len()) }
    );
    let target = target(config, &req.repository, req.create.clone(), req.registry_endpoint.as_deref(), runner).await?;
    runner.group(&format!("push {} to {}", image.origin, target.repository.uri));
    let opts = Options {
        concurrency,
        immutable: target.repository.immutable,
        progress: ProgressMode::detect(runner.in_actions()),
        mount_from: None,
    };
    let report = pushing::push(&target.registry, &req.repository, &image, &req.tags, opts).await;
    runner.end_group();
    let report = report?;
    Ok(PushResult::new(&target.repository.uri, &req.repository, &req.tags, image.origin.clone(), &report))
}

/// An ECR client with the credentials of `role`, assumed with the current ones.
async fn source_client(
    region: Option<String>,
    role: &auth::RoleArn,
    session_name: &str,
    runner: &Runner,
) -> Result<aws_sdk_ecr::Client> {
    let req = AuthRequest {
        role: Some(role.clone()),
        chain_role: None,
        session_name: session_name.to_string(),
        duration_seconds: 900,
        audience: String::new(),
        allowed_account_ids: Vec::new(),
        region,
    };
    let http = reqwest::Client::new();
    let session = auth::authenticate(&req, Source::DefaultChain, &http).await?;
    runner.mask(session.credentials.secret_access_key());
    if let Some(token) = session.credentials.session_token() {
        runner.mask(token);
    }
    tracing::info!("reading the source as {}", session.caller_arn);
    Ok(aws_sdk_ecr::Client::new(&session.config))
}

fn host_of(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    rest.trim_end_matches('/')
}

/// The registry to read `from` from, as `plan`: its client (with the credential the plan allows)
/// and whether it is the destination's own (no bytes move).
async fn promote_source(
    config: &SdkConfig,
    target: &Target,
    plan: SourcePlan,
    from_role: Option<(&auth::RoleArn, &str)>,
    runner: &Runner,
) -> Result<(Arc<Registry>, bool)> {
    match plan {
        SourcePlan::Same => Ok((target.registry.clone(), true)),
        SourcePlan::Anonymous { base } => {
            tracing::info!("reading the source from {base} without credentials (it is not an ECR registry)");
            Ok((Arc::new(Registry::new(&base, None, None)?), false))
        }
        SourcePlan::Ecr { host, account, region, base } => {
            // Another ECR registry: a token for its account from its region's ECR, with the
            // source role's credentials when given, else ours; sent to `base` only.
            let client = match from_role {
                Some((role, session)) => source_client(Some(region.clone()), role, session, runner).await?,
                None => {
                    let conf = aws_sdk_ecr::config::Builder::from(config)
                        .region(aws_sdk_ecr::config::Region::new(region.clone()))
                        .build();
                    aws_sdk_ecr::Client::from_conf(conf)
                }
            };
            let t = ecr::token(&client, Some(&account)).await?;
            for s in &t.secrets {
                runner.mask(s.expose());
            }
            tracing::info!("reading the source from {host} (account {account}, {region}) at {base}");
            Ok((Arc::new(Registry::new(&base, Some(t.header), None)?), false))
        }
    }
}

/// Promote `req.from` to `req.repository` with `config`'s credentials.
pub async fn promote(config: &SdkConfig, req: &PromoteRequest, runner: &Runner) -> Result<PushResult> {
    check_repository("--repository", &req.repository)?;
    check_tags(&req.tags)?;
    let from = SourceRef::parse(&req.from)?;
    let from_role = req.from_role_arn.as_deref().map(|a| auth::check_role_arn("--from-role-arn", a)).transpose()?;
    if let Some(endpoint) = &req.registry_endpoint {
        ecr::check_endpoint("--registry-endpoint", endpoint)?;
    }
    // What can be refused without the network is refused before any AWS call: look-alike
    // hosts, ECR over http, an ECR credential for a registry that is not ECR.
    let inputs = SourceInputs {
        from_host: from.host.as_deref(),
        from_registry: req.from_registry.as_deref(),
        from_registry_endpoint: req.from_registry_endpoint.as_deref(),
        from_role: from_role.is_some(),
        dest_host: "",
        dest_base: req.registry_endpoint.as_deref().unwrap_or_default(),
    };
    promotion::plan_source(&inputs)?;
    let target = target(config, &req.repository, None, req.registry_endpoint.as_deref(), runner).await?;
    let repo_host = target.repository.uri.split('/').next().unwrap_or_default().to_string();
    let plan =
        promotion::plan_source(&SourceInputs { dest_host: &repo_host, dest_base: target.registry.base(), ..inputs })?;
    let from_role = from_role.as_ref().map(|r| (r, req.session_name.as_str()));
    let (source, same) = promote_source(config, &target, plan, from_role, runner).await?;
    let image = promotion::resolve(&source, &from).await?;
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
        progress: ProgressMode::detect(runner.in_actions()),
        mount_from: None,
    };
    runner.group(&format!("promote {} to {}", image.origin, target.repository.uri));
    let report = promotion::promote(&target.registry, same, &from, &image, &req.repository, &req.tags, opts).await;
    runner.end_group();
    let report = report?;
    Ok(PushResult::new(&target.repository.uri, &req.repository, &req.tags, image.origin.clone(), &report))
}
