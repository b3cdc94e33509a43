//! The pipeline below the commands: each stage a function over a typed request, and the
//! release (`release::run`) that calls them in order over one typed plan. Commands parse
//! flags, build the plan, call in here and print; nothing in here reads flags.
//!
//! `plan` holds the release's typed plan; `auth` the credential stage; `image` push and
//! promote; `taskdef` render, diff, verify, register; `run_task` a one-off task (release's
//! pre-deploy stage); `refresh` what changed under a running revision; `after_deploy` the
//! scheduled tasks and revisions after a successful deploy; `release` the whole pipeline. The
//! deploy stage is `crate::deploy`; `deploy` here wraps it with its outputs and summary.

pub mod after_deploy;
pub mod auth;
pub mod image;
pub mod plan;
pub mod refresh;
pub mod release;
pub mod run_task;
pub mod taskdef;

use std::time::Duration;

use aws_config::SdkConfig;

use crate::aws::{auth as aws_auth, clients};
use crate::cli::GlobalArgs;
use crate::deploy::driver::{self, Checked, Context};
use crate::deploy::plan::DeployPlan;
use crate::deploy::report::DeployRun;
use crate::error::{Error, Result};
use crate::github::runner::Runner;

/// The AWS session the stages work in.
pub struct Session {
    pub config: SdkConfig,
    pub account: String,
    pub region: String,
}

impl Session {
    /// The default credential chain (a terminal, or credentials a previous step exported).
    pub async fn from_default_chain(global: &GlobalArgs) -> Result<Session> {
        let config = clients::load(global.region.as_deref(), clients::BaseCredentials::DefaultChain)
            .await
            .map_err(aws_auth::AuthError::from)?;
        let (account, _) = aws_auth::caller_identity(&config, None).await?;
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        Ok(Session { config, account, region })
    }

    /// The session an authentication produced.
    pub fn from_auth(session: &aws_auth::Session) -> Session {
        Session { config: session.config.clone(), account: session.account_id.clone(), region: session.region() }
    }
}

/// The HTTP client probes and registry checks use (30 s per request at most).
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Input(format!("cannot build an HTTP client: {e}")))
}

/// The deploy stage as `deploy` and `release` run it, after the checks: deploy to every
/// checked service (one log group), then the outputs, summary and annotations.
pub async fn deploy(
    ctx: &Context<'_>,
    plan: &DeployPlan,
    checked: &[Checked],
    task_definition: &str,
    runner: &Runner,
) -> Result<DeployRun> {
    let short = task_definition.rsplit('/').next().unwrap_or(task_definition);
    runner.group(&format!("deploy {short} to {}", plan.services.join(", ")));
    let run = driver::deploy_all(ctx, plan, checked, task_definition).await;
    runner.end_group();
    crate::report::publish(runner, &run)?;
    Ok(run)
}
