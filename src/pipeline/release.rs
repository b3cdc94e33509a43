//! `release` as one pipeline over a typed plan: auth → the deploy's checks (before any change:
//! a service that cannot take the deploy stops the release before anything is pushed or
//! registered; credentials that cannot be renewed must outlast the deploy) → push or promote →
//! render → verify → register → deploy, then the GitHub Deployment's status and the release
//! summary. The release record carries each parameter's version and secret's version id. Each stage's result is written to the step
//! outputs as soon as it is known, so a failing release still leaves what it learned.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::image::PushResult;
use super::plan::{ImagePlan, ReleasePlan, TaskDefPlan};
use super::{Session, http_client, image, taskdef};
use crate::aws::refresh::deploy_budget;
use crate::deploy::Cancel;
use crate::deploy::driver::{self, Context};
use crate::deploy::report::{DeployRun, Outcome};
use crate::error::{Error, Result};
use crate::github::deployments::Recorder;
use crate::github::runner::Runner;
use crate::taskdef::pins::ConfigVersion;

/// How long each stage took, in order.
pub struct Laps {
    mark: Instant,
    stages: Vec<StageTime>,
}

impl Laps {
    /// Start timing (the release's first stage, resolve, runs before the plan exists).
    pub fn start() -> Laps {
        Laps { mark: Instant::now(), stages: Vec::new() }
    }

    fn since_mark(&mut self) -> u64 {
        let ms = self.mark.elapsed().as_millis() as u64;
        self.mark = Instant::now();
        ms
    }

    /// `stage` ends now; `extra_ms` (time spent on it earlier) is added.
    pub fn lap(&mut self, stage: &'static str, extra_ms: u64) {
        let ms = self.since_mark() + extra_ms;
        self.stages.push(StageTime { stage, ms });
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StageTime {
    pub stage: &'static str,
    pub ms: u64,
}

/// The release as the action's outputs name it (DESIGN.md section 3), plus each stage.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReleaseResult {
    pub environment: String,
    pub aws_account_id: String,
    pub image_uri: Option<String>,
    pub image_digest: Option<String>,
    pub task_definition_arn: String,
    pub previous_task_definition_arn: String,
    pub deployment_id: String,
    pub result: Outcome,
    pub exit_code: u8,
    pub stages: Vec<StageTime>,
    /// The version of each parameter and secret the task definition references (never a value).
    pub configuration: Vec<ConfigVersion>,
    pub deploy: DeployRun,
}

impl fmt::Display for ReleaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "environment {} (account {}): {}", self.environment, self.aws_account_id, self.result)?;
        if let Some(uri) = &self.image_uri {
            writeln!(f, "  image: {uri}")?;
        }
        let stages: Vec<String> =
            self.stages.iter().map(|s| format!("{} {:.1}s", s.stage, s.ms as f64 / 1000.0)).collect();
        writeln!(f, "  stages: {}", stages.join(" → "))?;
        write!(f, "{}", self.deploy)
    }
}

/// Run the release. `laps` started before the plan was resolved.
pub async fn run(plan: ReleasePlan, runner: &Runner, cancel: &Cancel, mut laps: Laps) -> Result<ReleaseResult> {
    let ReleasePlan { environment, auth, auth_source, image, taskdef, deploy, github } = plan;
    let authed = super::auth::session(&auth, auth_source).await?;
    runner.set_output("aws-account-id", &authed.account_id)?;
    let session = Session::from_auth(&authed);
    // Credentials deployer cannot renew must outlast the whole deploy, checked before any change.
    let timeout = deploy.gate.timeout;
    authed.reach.check(std::time::SystemTime::now(), deploy_budget(timeout), timeout).map_err(Error::Input)?;
    laps.lap("auth", 0);

    let (ecs, http) = (aws_sdk_ecs::Client::new(&session.config), http_client()?);
    let codedeploy = aws_sdk_codedeploy::Client::new(&session.config);
    let ctx = Context { ecs: &ecs, codedeploy: &codedeploy, http: &http, cancel };
    let checked = driver::check_all(&ctx, &deploy).await?;
    let check_ms = laps.since_mark();

    let published = publish_image(&image, &session, runner).await?;
    let mut taskdef = taskdef;
    if let Some(p) = &published {
        p.set_outputs(runner)?;
        let target = match &taskdef.render.container {
            Some(c) => format!("{c}={}", p.image_uri),
            None => p.image_uri.clone(),
        };
        taskdef.render.images.insert(0, target);
        laps.lap("push", 0);
    }
    let (task_definition, configuration) = render_verify_register(&session, &taskdef, runner, &mut laps).await?;

    let payload = serde_json::json!({
        "image-uri": published.as_ref().map(|p| p.image_uri.as_str()),
        "image-digest": published.as_ref().map(|p| p.image_digest.as_str()),
        "task-definition-arn": task_definition,
        "services": deploy.services,
        "cluster": deploy.cluster,
        "configuration": configuration,
    });
    let url = github.environment_url.clone().or_else(|| deploy.gate.health_urls.first().cloned());
    let recorder = Recorder::start(runner, github.token, github.api_url, &environment, url, &payload).await;
    let run = super::deploy(&ctx, &deploy, &checked, &task_definition, runner).await?;
    recorder.finish(run.result == Outcome::Succeeded, run.result.as_str()).await;
    if let Some(id) = recorder.id() {
        runner.set_output("github-deployment-id", &id.to_string())?;
    }
    laps.lap("deploy", check_ms);

    let first = run.services.first();
    let result = ReleaseResult {
        environment,
        aws_account_id: authed.account_id.clone(),
        image_uri: published.as_ref().map(|p| p.image_uri.clone()),
        image_digest: published.as_ref().map(|p| p.image_digest.clone()),
        task_definition_arn: task_definition,
        previous_task_definition_arn: first.map(|r| r.previous_task_definition_arn.clone()).unwrap_or_default(),
        deployment_id: first.and_then(|r| r.deployment_id.clone()).unwrap_or_default(),
        result: run.result,
        exit_code: run.exit_code,
        stages: laps.stages,
        configuration,
        deploy: run,
    };
    // The strategy each service took (a CODE_DEPLOY service's is CodeDeploy's, whatever the plan said).
    let strategy = result.deploy.services.first().map_or(deploy.strategy, |r| r.strategy);
    runner.summary(&summary(&result, strategy.as_str()))?;
    Ok(result)
}

/// Push or promote, as the plan says; `None` when `--image` names the image.
async fn publish_image(plan: &ImagePlan, session: &Session, runner: &Runner) -> Result<Option<PushResult>> {
    Ok(match plan {
        ImagePlan::Given => None,
        ImagePlan::Push(req) => Some(image::push(&session.config, req, runner).await?),
        ImagePlan::Promote(req) => Some(image::promote(&session.config, req, runner).await?),
    })
}

/// Render (with the diff in the summary), verify, register; returns the new ARN and the
/// configuration record (each reference's version, metadata only).
async fn render_verify_register(
    session: &Session,
    plan: &TaskDefPlan,
    runner: &Runner,
    laps: &mut Laps,
) -> Result<(String, Vec<ConfigVersion>)> {
    let rendered = taskdef::prepare(session, plan).await?;
    let diff = taskdef::diff_against_current(session, plan, &rendered).await?;
    runner.summary(&diff.markdown())?;
    laps.lap("render", 0);
    taskdef::verify_rendered(session, plan, &rendered).await?;
    let configuration = crate::taskdef::pins::configuration(&session.config, &rendered.rendered).await;
    laps.lap("verify", 0);
    let registered = taskdef::register(session, &rendered).await?;
    runner.set_output("task-definition-arn", &registered.task_definition_arn)?;
    laps.lap("register", 0);
    Ok((registered.task_definition_arn, configuration))
}

fn summary(result: &ReleaseResult, strategy: &str) -> String {
    crate::report::release_summary(&crate::report::ReleaseSummary {
        environment: &result.environment,
        image_uri: result.image_uri.as_deref(),
        image_digest: result.image_digest.as_deref(),
        task_definition_arn: &result.task_definition_arn,
        previous_task_definition_arn: &result.previous_task_definition_arn,
        strategy,
        result: result.result.as_str(),
        stages: result.stages.iter().map(|s| (s.stage, s.ms)).collect(),
    })
}
