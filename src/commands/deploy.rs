//! `deployer deploy` and `deployer rollback`: resolve the task definition, deploy each
//! service in parallel behind the gate, settle (roll back on failure), and report.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::aws::ecs_json::EcsJson;
use crate::cli::{DeployArgs, GlobalArgs, RollbackArgs, Strategy};
use crate::commands::taskdef::Session;
use crate::deploy::bluegreen::ShiftRequest;
use crate::deploy::gate::GateConfig;
use crate::deploy::lifecycle::{self, ShiftSettings};
use crate::deploy::rollback::{Restored, Rollback};
use crate::deploy::rolling::{DeployReport, DeployRequest, Deployer, Outcome};
use crate::deploy::watch::describe_service;
use crate::deploy::{Cancel, DeployError};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::taskdef::{ecs, template::TaskDefinition};
use aws_sdk_ecs::types::DeploymentStrategy;

pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Input(format!("cannot build an HTTP client: {e}")))
}

/// A task definition ARN from `--task-definition`: a file is registered first, a family or
/// family:revision is looked up so the watch can match ECS's deployments by ARN.
pub async fn task_definition_arn(session: &Session, spec: &str) -> Result<String> {
    let client = EcsJson::new(&session.config);
    let path = std::path::Path::new(spec);
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Input(format!("--task-definition {spec}: {e}")))?;
        let td = TaskDefinition::parse(&text, spec)?;
        return Ok(ecs::register(&client, &td).await?.task_definition_arn);
    }
    Ok(ecs::describe(&client, spec).await?.1.task_definition_arn)
}

/// Several reports, printed as one result.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeployResult {
    pub result: Outcome,
    pub services: Vec<DeployReport>,
}

impl fmt::Display for DeployResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.services.iter().map(|r| r.to_string()).collect();
        f.write_str(&texts.join("\n"))
    }
}

impl DeployResult {
    pub fn exit(&self) -> Exit {
        let exits: Vec<Exit> = self.services.iter().map(DeployReport::exit).collect();
        [Exit::Unknown, Exit::Cancelled, Exit::RolledBack].into_iter().find(|e| exits.contains(e)).unwrap_or(Exit::Ok)
    }
}

pub fn gate_config(args: &DeployArgs) -> GateConfig {
    GateConfig {
        bake: Duration::from_secs(args.bake.unwrap_or(0)),
        timeout: Duration::from_secs(args.timeout),
        probe_successes: args.probe_successes.max(1),
        probe_failures: args.probe_failures.max(1),
        probe_urls: args.health_urls.clone(),
    }
}

/// Deploy `task_definition` to every service of `args`, in parallel.
pub async fn deploy_services(
    session: &Session,
    args: &DeployArgs,
    task_definition: &str,
    printer: &Printer,
) -> Result<DeployResult> {
    for url in &args.health_urls {
        reqwest::Url::parse(url).map_err(|e| Error::Input(format!("--health-url {url:?} is not a URL: {e}")))?;
    }
    if args.strategy != Strategy::Rolling {
        return deploy_traffic_shift(session, args, task_definition, printer).await;
    }
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let http = http_client()?;
    let cancel = Cancel::on_signals();
    let deployer = Deployer { ecs: &ecs, http: &http, cancel: &cancel };
    let requests: Vec<DeployRequest> = args
        .services
        .iter()
        .map(|service| DeployRequest {
            cluster: args.cluster.clone(),
            service: service.clone(),
            task_definition: task_definition.to_string(),
            gate: gate_config(args),
            no_rollback: args.no_rollback,
        })
        .collect();
    // Check every service before changing any: a missing or busy one fails the run with
    // nothing changed.
    let checks = futures_util::future::join_all(requests.iter().map(|r| deployer.check(r))).await;
    let mut previous = Vec::new();
    for (req, check) in requests.iter().zip(checks) {
        previous.push(check.map_err(|e| deploy_error(&req.service, e))?);
    }
    printer.runner.group(&format!("deploy {} to {}", short(task_definition), args.services.join(", ")));
    let results =
        futures_util::future::join_all(requests.iter().zip(previous).map(|(r, prev)| deployer.deploy(r, prev))).await;
    printer.runner.end_group();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (req, result) in requests.iter().zip(results) {
        match result {
            Ok(r) => reports.push(r),
            Err(e) => errors.push((req.service.clone(), e)),
        }
    }
    // A service that could not even start fails the run before anything changed, unless
    // others already changed: then report those and roll them back with --all-or-nothing.
    if !errors.is_empty() && reports.is_empty() {
        let (service, e) = errors.remove(0);
        return Err(deploy_error(&service, e));
    }
    for (service, e) in &errors {
        printer.runner.annotate(crate::github::runner::Level::Error, &format!("{service}: {e}"), None);
    }
    all_or_nothing(&ecs, &http, args, &mut reports, !errors.is_empty()).await;
    let result = if reports.iter().any(|r| r.result == Outcome::Failed) || !errors.is_empty() {
        Outcome::Failed
    } else if reports.iter().any(|r| r.result == Outcome::RolledBack) {
        Outcome::RolledBack
    } else {
        Outcome::Succeeded
    };
    Ok(DeployResult { result, services: reports })
}

/// The ShiftSettings of `args`: ECS takes minutes, deployer seconds (rounded up).
pub fn shift_settings(args: &DeployArgs) -> ShiftSettings {
    let t = &args.traffic;
    ShiftSettings {
        strategy: match args.strategy {
            Strategy::Canary => DeploymentStrategy::Canary,
            Strategy::Linear => DeploymentStrategy::Linear,
            _ => DeploymentStrategy::BlueGreen,
        },
        bake_minutes: args.bake.map(lifecycle::minutes),
        canary_percent: t.canary_percent,
        canary_bake_minutes: t.canary_bake.map(lifecycle::minutes),
        linear_percent: t.linear_percent,
        linear_bake_minutes: t.linear_bake.map(lifecycle::minutes),
    }
}

/// Blue/green, canary, linear: check every service, then deploy them in parallel. ECS bakes
/// (`bakeTimeInMinutes`, blue kept for an instant rollback), so deployer's own post-success
/// bake is zero here.
async fn deploy_traffic_shift(
    session: &Session,
    args: &DeployArgs,
    task_definition: &str,
    printer: &Printer,
) -> Result<DeployResult> {
    for url in &args.traffic.test_urls {
        reqwest::Url::parse(url).map_err(|e| Error::Input(format!("--test-url {url:?} is not a URL: {e}")))?;
    }
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let http = http_client()?;
    let cancel = Cancel::on_signals();
    let deployer = Deployer { ecs: &ecs, http: &http, cancel: &cancel };
    let requests: Vec<ShiftRequest> = args
        .services
        .iter()
        .map(|service| ShiftRequest {
            base: DeployRequest {
                cluster: args.cluster.clone(),
                service: service.clone(),
                task_definition: task_definition.to_string(),
                gate: GateConfig { bake: Duration::ZERO, ..gate_config(args) },
                no_rollback: args.no_rollback,
            },
            settings: shift_settings(args),
            test_urls: args.traffic.test_urls.clone(),
        })
        .collect();
    let checks = futures_util::future::join_all(requests.iter().map(|r| deployer.check_traffic_shift(r))).await;
    let mut previous = Vec::new();
    for (req, check) in requests.iter().zip(checks) {
        previous.push(check.map_err(|e| deploy_error(&req.base.service, e))?);
    }
    printer.runner.group(&format!("deploy {} to {}", short(task_definition), args.services.join(", ")));
    let results = futures_util::future::join_all(
        requests.iter().zip(previous).map(|(r, prev)| deployer.deploy_traffic_shift(r, prev)),
    )
    .await;
    printer.runner.end_group();
    let mut reports = Vec::new();
    for (req, result) in requests.iter().zip(results) {
        match result {
            Ok(r) => reports.push(r),
            Err(e) if reports.is_empty() && requests.len() == 1 => return Err(deploy_error(&req.base.service, e)),
            Err(e) => printer.runner.annotate(
                crate::github::runner::Level::Error,
                &format!("{}: {e}", req.base.service),
                None,
            ),
        }
    }
    let some_errored = reports.len() < requests.len();
    all_or_nothing(&ecs, &http, args, &mut reports, some_errored).await;
    let result = if reports.len() < requests.len() || reports.iter().any(|r| r.result == Outcome::Failed) {
        Outcome::Failed
    } else if reports.iter().any(|r| r.result == Outcome::RolledBack) {
        Outcome::RolledBack
    } else {
        Outcome::Succeeded
    };
    Ok(DeployResult { result, services: reports })
}

/// --all-or-nothing: when any service failed, roll back the ones that succeeded.
async fn all_or_nothing(
    ecs: &aws_sdk_ecs::Client,
    http: &reqwest::Client,
    args: &DeployArgs,
    reports: &mut [DeployReport],
    any_error: bool,
) {
    let any_failed = any_error || reports.iter().any(|r| r.result != Outcome::Succeeded);
    if args.all_or_nothing && any_failed {
        for r in reports.iter_mut().filter(|r| r.result == Outcome::Succeeded) {
            let rollback = Rollback {
                ecs,
                http,
                cluster: &r.cluster,
                service: &r.service,
                to: &r.previous_task_definition_arn,
                probe_urls: &args.health_urls,
                timeout: Duration::from_secs(args.timeout.max(60)),
            };
            let outcome = rollback.run(false, None).await;
            r.failure = Some("--all-or-nothing: another service failed".into());
            let line = r.record_rollback(outcome.map(|(m, r)| (m.to_string(), r)), None);
            tracing::info!("{}: {line}", r.service);
        }
    }
}

fn deploy_error(service: &str, e: DeployError) -> Error {
    Error::Input(format!("{service}: {e}"))
}

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Outputs and summary of a deploy (DESIGN.md section 3's names).
pub fn publish(printer: &Printer, result: &DeployResult) -> Result<()> {
    let runner = &printer.runner;
    if let Some(first) = result.services.first() {
        runner.set_output("task-definition-arn", &first.task_definition_arn)?;
        runner.set_output("previous-task-definition-arn", &first.previous_task_definition_arn)?;
        runner.set_output("deployment-id", first.deployment_id.as_deref().unwrap_or_default())?;
    }
    let result_name = match result.result {
        Outcome::Succeeded => "succeeded",
        Outcome::RolledBack => "rolled-back",
        Outcome::Failed => "failed",
    };
    runner.set_output("result", result_name)?;
    runner.summary(&crate::report::summary(&result.services))?;
    // In Actions, each failure is also an annotation; a terminal has the text result already.
    for r in result.services.iter().filter(|r| r.result != Outcome::Succeeded && runner.in_actions()) {
        let level = crate::github::runner::Level::Error;
        runner.annotate(level, &format!("{}: {}", r.service, r.failure.as_deref().unwrap_or("failed")), None);
    }
    Ok(())
}

pub async fn run(args: &DeployArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let timeout = Duration::from_secs(args.timeout);
    crate::aws::refresh::Reach::from_env(|k| std::env::var(k).ok())
        .check(std::time::SystemTime::now(), crate::aws::refresh::deploy_budget(timeout), timeout)
        .map_err(Error::Input)?;
    let arn = task_definition_arn(&session, &args.task_definition).await?;
    let result = deploy_services(&session, args, &arn, printer).await?;
    publish(printer, &result)?;
    printer.result(&result);
    Ok(result.exit())
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RollbackResult {
    pub service: String,
    pub from: String,
    pub to: String,
    pub healthy: bool,
    pub state: Option<String>,
    /// Parameters and secrets the revision references that changed after it was registered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl fmt::Display for RollbackResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.healthy {
            write!(f, "{}: rolled back from {} to {}; healthy", self.service, short(&self.from), short(&self.to))
        } else {
            write!(
                f,
                "{}: rollback to {} NOT confirmed: {}",
                self.service,
                short(&self.to),
                self.state.as_deref().unwrap_or("unknown")
            )
        }
    }
}

/// The ACTIVE revision of the same family just below `current`.
async fn previous_revision(ecs: &aws_sdk_ecs::Client, current: &str) -> Result<String> {
    let (family, revision) = short(current)
        .rsplit_once(':')
        .and_then(|(f, r)| Some((f.to_string(), r.parse::<i64>().ok()?)))
        .ok_or_else(|| Error::Input(format!("cannot read the family and revision of {current}")))?;
    let out = ecs
        .list_task_definitions()
        .family_prefix(&family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .sort(aws_sdk_ecs::types::SortOrder::Desc)
        .send()
        .await
        .map_err(|e| Error::Input(format!("ListTaskDefinitions {family}: {}", crate::aws::auth::sdk_message(&e))))?;
    out.task_definition_arns()
        .iter()
        .find(|arn| {
            short(arn)
                .rsplit_once(':')
                .is_some_and(|(f, r)| f == family && r.parse::<i64>().is_ok_and(|r| r < revision))
        })
        .cloned()
        .ok_or_else(|| Error::Input(format!("{family} has no ACTIVE revision before {revision}; pass --to ARN")))
}

pub async fn run_rollback(args: &RollbackArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let (_, view) =
        describe_service(&ecs, &args.cluster, &args.service).await.map_err(|e| deploy_error(&args.service, e))?;
    let to = match &args.to {
        Some(spec) => task_definition_arn(&session, spec).await?,
        None => previous_revision(&ecs, &view.task_definition).await?,
    };
    let warnings = crate::taskdef::pins::warn_before_rollback(&session.config, &to, printer).await;
    let http = http_client()?;
    let rollback = Rollback {
        ecs: &ecs,
        http: &http,
        cluster: &args.cluster,
        service: &args.service,
        to: &to,
        probe_urls: &[],
        timeout: Duration::from_secs(900),
    };
    let (_, restored) = rollback.run(false, None).await.map_err(|e| deploy_error(&args.service, e))?;
    let result = RollbackResult {
        service: args.service.clone(),
        from: view.task_definition,
        to,
        healthy: restored == Restored::Healthy,
        state: match restored {
            Restored::Healthy => None,
            Restored::NotConfirmed(s) => Some(s),
        },
        warnings,
    };
    printer.result(&result);
    Ok(if result.healthy { Exit::Ok } else { Exit::Unknown })
}
