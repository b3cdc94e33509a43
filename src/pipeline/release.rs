//! `release` as one pipeline over a typed plan: auth → the deploy's checks (before any change:
//! a service that cannot take the deploy stops the release before anything is pushed or
//! registered; credentials that cannot be renewed must outlast the deploy) → push or promote
//! → render → verify → register → pre-deploy (the new revision's one-off task, when
//! configured: its failure stops the release with the service untouched) → deploy →
//! after-deploy (scheduled tasks, old revisions: only when every service succeeded), then the
//! GitHub Deployment's status and the release summary. The release record carries each
//! parameter's version and secret's version id. Each stage's result is written to the step
//! outputs as soon as it is known, so a failing release still leaves what it learned.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::after_deploy::{self, AfterDeploy};
use super::image::PushResult;
use super::plan::{ImagePlan, ReleasePlan, TaskDefPlan};
use super::run_task::{Site, run_task};
use super::{Session, http_client, image, taskdef};
use crate::aws::refresh::deploy_budget;
use crate::deploy::Cancel;
use crate::deploy::driver::{self, Context};
use crate::deploy::plan::DeployPlan;
use crate::deploy::report::{DeployRun, Outcome};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::github::deployments::Recorder;
use crate::github::runner::Runner;
use crate::runtask::TaskSpec;
use crate::runtask::report::RunTaskReport;
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
    /// The pre-deploy task (migrations), when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_deploy: Option<RunTaskReport>,
    /// Absent when the release stopped before the deploy (a failed pre-deploy task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployRun>,
    /// Scheduled tasks moved, old revisions deregistered (after a successful deploy).
    #[serde(skip_serializing_if = "AfterDeploy::is_empty")]
    pub after_deploy: AfterDeploy,
    #[serde(skip)]
    pub exit: Exit,
}

impl ReleaseResult {
    /// A release that registered `task_definition_arn`: failed until a stage says otherwise.
    fn new(environment: String, account: &str, published: Option<&PushResult>, registered: Registered) -> Self {
        let (task_definition_arn, configuration) = registered;
        ReleaseResult {
            environment,
            aws_account_id: account.to_string(),
            image_uri: published.map(|p| p.image_uri.clone()),
            image_digest: published.map(|p| p.image_digest.clone()),
            task_definition_arn,
            previous_task_definition_arn: String::new(),
            deployment_id: String::new(),
            result: Outcome::Failed,
            exit_code: Exit::Failed.code(),
            stages: Vec::new(),
            configuration,
            pre_deploy: None,
            deploy: None,
            after_deploy: AfterDeploy::default(),
            exit: Exit::Failed,
        }
    }

    /// The deploy's outcome is the release's.
    fn deployed(&mut self, run: DeployRun) {
        let first = run.services.first();
        self.previous_task_definition_arn = first.map(|r| r.previous_task_definition_arn.clone()).unwrap_or_default();
        self.deployment_id = first.and_then(|r| r.deployment_id.clone()).unwrap_or_default();
        (self.result, self.exit, self.exit_code) = (run.result, run.exit, run.exit_code);
        self.deploy = Some(run);
    }
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
        if let Some(pre) = &self.pre_deploy {
            writeln!(f, "  pre-deploy: {pre}")?;
        }
        match &self.deploy {
            Some(d) => write!(f, "{d}")?,
            None => write!(f, "  the service was not touched")?,
        }
        if !self.after_deploy.is_empty() {
            write!(f, "\n{}", self.after_deploy)?;
        }
        Ok(())
    }
}

/// Run the release. `laps` started before the plan was resolved.
pub async fn run(plan: ReleasePlan, runner: &Runner, cancel: &Cancel, mut laps: Laps) -> Result<ReleaseResult> {
    let ReleasePlan {
        environment,
        auth,
        auth_source,
        image,
        taskdef,
        service_taskdefs,
        pre_deploy,
        deploy,
        after,
        github,
    } = plan;
    let authed = super::auth::session(&auth, auth_source).await?;
    runner.set_output("aws-account-id", &authed.account_id)?;
    let session = Session::from_auth(&authed);
    // Credentials deployer cannot renew must outlast the whole deploy, checked before any change.
    let timeout = deploy.gate.timeout;
    authed.reach.check(std::time::SystemTime::now(), deploy_budget(timeout), timeout).map_err(Error::Input)?;
    laps.lap("auth", 0);

    let (ecs, http) = (crate::deploy::ecs::client(&session.config), http_client()?);
    let codedeploy = aws_sdk_codedeploy::Client::new(&session.config);
    let limiter = crate::aws::limiter::Limiter::new(&deploy.api_limits);
    let ctx = Context { ecs: &ecs, codedeploy: &codedeploy, http: &http, cancel, limiter: &limiter };
    let mut checked = driver::check_all(&ctx, &deploy).await?;
    let check_ms = laps.since_mark();

    let published = publish_image(&image, &session, runner).await?;
    let with_image = |mut plan: TaskDefPlan| {
        if let Some(p) = &published {
            let target = match &plan.render.container {
                Some(c) => format!("{c}={}", p.image_uri),
                None => p.image_uri.clone(),
            };
            plan.render.images.insert(0, target);
        }
        plan
    };
    if let Some(p) = &published {
        p.set_outputs(runner)?;
        laps.lap("push", 0);
    }
    let taskdef = with_image(taskdef);
    let registered = render_verify_register(&session, &taskdef, runner, &mut laps, true).await?;
    // Services with their own template or container: one revision per distinct pair.
    let mut own_revisions: std::collections::BTreeMap<(Option<String>, Option<String>), String> = Default::default();
    for c in checked.iter_mut() {
        let Some(own) = service_taskdefs.get(&c.service) else { continue };
        let key = (own.task_definition.clone(), own.render.container.clone());
        let arn = match own_revisions.get(&key) {
            Some(arn) => arn.clone(),
            None => {
                let (arn, _) =
                    render_verify_register(&session, &with_image(own.clone()), runner, &mut laps, false).await?;
                own_revisions.insert(key, arn.clone());
                arn
            }
        };
        c.task_definition = Some(arn);
    }
    let mut result = ReleaseResult::new(environment, &authed.account_id, published.as_ref(), registered);
    if let Some(spec) = &pre_deploy {
        let went_well = pre_deploy_stage(&session, spec, &deploy, &mut result, runner, cancel).await?;
        laps.lap("pre-deploy", 0);
        if !went_well {
            runner.set_output("result", Outcome::Failed.as_str())?;
            return finish(result, laps, deploy.strategy.as_str(), runner);
        }
    }

    let payload = serde_json::json!({
        "image-uri": result.image_uri,
        "image-digest": result.image_digest,
        "task-definition-arn": result.task_definition_arn,
        "services": deploy.services,
        "cluster": deploy.cluster,
        "configuration": result.configuration,
        "tags": crate::tags::as_object(&taskdef.tags),
    });
    let url = github.environment_url.clone().or_else(|| deploy.gate.health_urls.first().cloned());
    let recorder = Recorder::start(runner, github.token, github.api_url, &result.environment, url, &payload).await;
    let run = super::deploy(&ctx, &deploy, &checked, &result.task_definition_arn, runner).await?;
    recorder.finish(run.result == Outcome::Succeeded, run.result.as_str()).await;
    if let Some(id) = recorder.id() {
        runner.set_output("github-deployment-id", &id.to_string())?;
    }
    laps.lap("deploy", check_ms);
    result.after_deploy = after_deploy::run(&session, &after, &run, &result.task_definition_arn, runner).await;
    if !result.after_deploy.is_empty() {
        laps.lap("after-deploy", 0);
    }
    // The strategy each service took (a CODE_DEPLOY service's is CodeDeploy's, whatever the plan said).
    let strategy = run.services.first().map_or(deploy.strategy, |r| r.strategy);
    result.deployed(run);
    finish(result, laps, strategy.as_str(), runner)
}

/// The pre-deploy stage: the new revision's one-off task with the first service's placement.
/// True when it succeeded; otherwise the release stops here, the service untouched (its
/// report and exit code in `result`).
async fn pre_deploy_stage(
    session: &Session,
    spec: &TaskSpec,
    deploy: &DeployPlan,
    result: &mut ReleaseResult,
    runner: &Runner,
    cancel: &Cancel,
) -> Result<bool> {
    let site =
        Site { cluster: &deploy.cluster, service: deploy.services.first().map(String::as_str), poll: deploy.poll };
    let td = Some(result.task_definition_arn.as_str());
    let (report, current) = run_task(session, &site, td, spec, "pre-deploy", runner, cancel).await?;
    let went_well = report.succeeded();
    if !went_well {
        result.previous_task_definition_arn = current.unwrap_or_default();
        result.exit = report.exit();
        result.exit_code = result.exit.code();
    }
    result.pre_deploy = Some(report);
    Ok(went_well)
}

/// The release summary section; the stages' times go into the result.
fn finish(mut result: ReleaseResult, laps: Laps, strategy: &str, runner: &Runner) -> Result<ReleaseResult> {
    result.stages = laps.stages;
    runner.summary(&summary(&result, strategy))?;
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

/// The registered ARN and the configuration record (each reference's version, metadata only).
type Registered = (String, Vec<ConfigVersion>);

/// Render (with the diff in the summary), verify, register (the release's
/// `task-definition-arn` output when `output`).
async fn render_verify_register(
    session: &Session,
    plan: &TaskDefPlan,
    runner: &Runner,
    laps: &mut Laps,
    output: bool,
) -> Result<Registered> {
    let rendered = taskdef::prepare(session, plan).await?;
    let diff = taskdef::diff_against_current(session, plan, &rendered).await?;
    runner.summary(&diff.markdown())?;
    laps.lap("render", 0);
    taskdef::verify_rendered(session, plan, &rendered).await?;
    let configuration = crate::taskdef::pins::configuration(&session.config, &rendered.rendered).await;
    laps.lap("verify", 0);
    let registered = taskdef::register(session, &rendered).await?;
    if output {
        runner.set_output("task-definition-arn", &registered.task_definition_arn)?;
    }
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
