//! `deployer push`: check the flags and read the source (no network yet), then find (or create)
//! the ECR repository, get the registry credential (masked, and sent only where
//! `ecr::registry_base` allows), upload, and report the image URI by digest.

use std::fmt;
use std::sync::Arc;

use aws_config::SdkConfig;
use serde::Serialize;

use crate::aws::clients::{self, BaseCredentials};
use crate::cli::{GlobalArgs, PushArgs};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::image::cache::Cache;
use crate::image::ecr::{self, CreateOptions};
use crate::image::push::{self, DEFAULT_CONCURRENCY, Options, ProgressMode, Report};
use crate::image::registry::{Refresh, Registry};
use crate::image::source::{self, SourceSpec, human};
use crate::image::{check_repository, check_tag};
use crate::output::Printer;

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
    pub fn new(uri: &str, repository: &str, tags: &[String], source: String, report: &Report) -> Self {
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
pub struct Target {
    pub repository: ecr::Repository,
    pub registry: Arc<Registry>,
    pub ecr: aws_sdk_ecr::Client,
}

/// Find (or create) the repository and get the registry credential, masked before use.
pub async fn target(
    config: &SdkConfig,
    repository: &str,
    create: Option<CreateOptions>,
    registry_endpoint: Option<&str>,
    printer: &Printer,
) -> Result<Target> {
    let client = aws_sdk_ecr::Client::new(config);
    let sts = aws_sdk_sts::Client::new(config);
    let repo = ecr::repository(&client, &sts, repository, create).await?;
    let token = ecr::token(&client, None).await?;
    for secret in &token.secrets {
        printer.runner.mask(secret.expose());
    }
    let base = ecr::registry_base(&token.proxy_endpoint, registry_endpoint)?;
    let refresh: Refresh = {
        let client = client.clone();
        let runner = printer.runner.clone();
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
    Ok(Target { repository: repo, registry: Arc::new(registry), ecr: client })
}

pub fn check_tags(tags: &[String]) -> Result<()> {
    for tag in tags {
        check_tag(tag)?;
    }
    Ok(())
}

pub fn concurrency(flag: Option<usize>) -> Result<usize> {
    match flag {
        None => Ok(DEFAULT_CONCURRENCY),
        Some(n) if (1..=32).contains(&n) => Ok(n),
        Some(n) => Err(Error::Usage(format!("--concurrency {n}: use 1 to 32"))),
    }
}

/// The default credential chain's configuration (push and promote at a terminal, or with
/// credentials a previous step exported).
pub async fn default_config(global: &GlobalArgs) -> Result<SdkConfig> {
    clients::load(global.region.as_deref(), BaseCredentials::DefaultChain)
        .await
        .map_err(|e| Error::Input(e.to_string()))
}

pub async fn run(args: &PushArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let result = execute(&default_config(global).await?, args, printer).await?;
    printer.result(&result);
    Ok(Exit::Ok)
}

/// Push with `config`'s credentials and set the step outputs; `release` calls this too.
pub async fn execute(config: &SdkConfig, args: &PushArgs, printer: &Printer) -> Result<PushResult> {
    // Everything that can be checked locally is checked before any AWS call.
    check_repository("--repository", &args.repository)?;
    check_tags(&args.tags)?;
    let concurrency = concurrency(args.concurrency)?;
    if let Some(endpoint) = &args.registry_endpoint {
        ecr::check_endpoint("--registry-endpoint", endpoint)?;
    }
    let spec = SourceSpec::parse(&args.source)?;
    let cache = Cache::from_env();
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
    let create = args
        .create_repository
        .then_some(CreateOptions { immutable: args.immutable_tags, scan_on_push: args.scan_on_push });
    let target = target(config, &args.repository, create, args.registry_endpoint.as_deref(), printer).await?;
    printer.runner.group(&format!("push {} to {}", image.origin, target.repository.uri));
    let opts = Options {
        concurrency,
        immutable: target.repository.immutable,
        progress: ProgressMode::detect(printer.runner.in_actions()),
        mount_from: None,
    };
    let report = push::push(&target.registry, &args.repository, &image, &args.tags, opts).await;
    printer.runner.end_group();
    let report = report?;
    let result = PushResult::new(&target.repository.uri, &args.repository, &args.tags, image.origin.clone(), &report);
    set_outputs(printer, &result)?;
    Ok(result)
}

pub fn set_outputs(printer: &Printer, result: &PushResult) -> Result<()> {
    printer.runner.set_output("image-uri", &result.image_uri)?;
    printer.runner.set_output("image-digest", &result.image_digest)?;
    printer.runner.set_output("image-tags", &result.tags.join(","))?;
    Ok(())
}
