//! `deployer run-task`, and `release`'s `pre-deploy` stage: turn flags (and deployer.toml's
//! `pre-deploy` table) into a one-off task request, run it with the service's placement, and
//! report (result, step summary, outputs). Everything is checked before any AWS call.

use std::time::Duration;

use crate::cli::{GlobalArgs, PreDeployArgs, RunTaskArgs};
use crate::commands::taskdef::Session;
use crate::deploy::Cancel;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::runtask::run::{Placement, Request};
use crate::runtask::{PreDeployConfig, RunTaskReport, parse_command, parse_duration, run, summary};
use crate::taskdef::render::parse_pair;

/// A one-off task's default time limit.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

fn env_pairs(flag: &'static str, pairs: &[String]) -> Result<Vec<(String, String)>> {
    Ok(pairs.iter().map(|p| parse_pair(flag, p)).collect::<Result<Vec<_>, _>>()?)
}

pub async fn run(args: &RunTaskArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let command = match (&args.command_json, args.command.is_empty()) {
        (Some(_), false) => {
            return Err(Error::Usage("give the command either with --command or after `--`, not both".into()));
        }
        (Some(json), true) => parse_command("--command", json).map_err(Error::Usage)?,
        (None, _) => args.command.clone(),
    };
    let env = env_pairs("--env", &args.env)?;
    let timeout = parse_duration(&args.timeout).map_err(|e| Error::Usage(format!("--timeout {e}")))?;
    if args.service.is_none() && args.task_definition.is_none() {
        return Err(Error::Usage(
            "run-task needs --service (its placement and current revision) or --task-definition".into(),
        ));
    }
    let session = Session::from_default_chain(global).await?;
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let (placement, current) = match &args.service {
        Some(service) => {
            let (p, current) = Placement::of_service(&ecs, &args.cluster, service).await?;
            (p, Some(current))
        }
        None => (Placement::default(), None),
    };
    let request = Request {
        cluster: args.cluster.clone(),
        task_definition: args.task_definition.clone().or(current).unwrap_or_default(),
        container: args.container.clone(),
        command,
        env,
        placement,
        timeout,
        log_lines: args.log_lines,
    };
    let cancel = Cancel::on_signals();
    let report = run::run(&ecs, &session.config, &request, &cancel).await?;
    publish(printer, "run-task", &report)?;
    printer.result(&report);
    Ok(report.exit())
}

/// Outputs and step summary of a one-off task (the task's ARN is in the JSON result; the
/// action declares no output for it).
pub fn publish(printer: &Printer, title: &str, report: &RunTaskReport) -> Result<()> {
    if title == "run-task" {
        printer.runner.set_output("result", report.result_name())?;
    }
    printer.runner.summary(&summary(title, report))?;
    Ok(())
}

/// `release`'s pre-deploy settings, flags over deployer.toml.
#[derive(Debug, Clone)]
pub struct PreDeployPlan {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub log_lines: usize,
}

/// Merge `--pre-deploy-*` over the environment's `pre-deploy`; `None` when neither names a
/// command. Checked before anything changes.
pub fn pre_deploy_plan(args: &PreDeployArgs, file: Option<&PreDeployConfig>) -> Result<Option<PreDeployPlan>> {
    let command = match (&args.pre_deploy_command, file) {
        (Some(json), _) => parse_command("--pre-deploy-command", json).map_err(Error::Usage)?,
        (None, Some(f)) if !f.command.is_empty() => f.command.clone(),
        (None, Some(_)) => return Err(Error::Usage("deployer.toml: pre-deploy.command is empty".into())),
        (None, None) => {
            let stray = args.pre_deploy_container.is_some()
                || args.pre_deploy_timeout.is_some()
                || args.pre_deploy_log_lines.is_some();
            if stray {
                return Err(Error::Usage(
                    "--pre-deploy-container/-timeout/-log-lines need a pre-deploy command (--pre-deploy-command or pre-deploy.command in deployer.toml)".into(),
                ));
            }
            return Ok(None);
        }
    };
    let timeout = match (&args.pre_deploy_timeout, file.and_then(|f| f.timeout.as_ref())) {
        (Some(t), _) => parse_duration(t).map_err(|e| Error::Usage(format!("--pre-deploy-timeout {e}")))?,
        (None, Some(t)) => t.duration().map_err(|e| Error::Usage(format!("deployer.toml: pre-deploy.timeout {e}")))?,
        (None, None) => DEFAULT_TIMEOUT,
    };
    Ok(Some(PreDeployPlan {
        command,
        container: args.pre_deploy_container.clone().or_else(|| file.and_then(|f| f.container.clone())),
        env: file.map(|f| f.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default(),
        timeout,
        log_lines: args.pre_deploy_log_lines.or_else(|| file.and_then(|f| f.log_lines)).unwrap_or(0),
    }))
}

/// Run the pre-deploy task of `task_definition` with `service`'s placement. A report comes
/// back whether the task succeeded or not, with the revision the service runs (untouched);
/// errors mean the task never ran.
pub async fn pre_deploy(
    session: &Session,
    plan: &PreDeployPlan,
    cluster: &str,
    service: &str,
    task_definition: &str,
    printer: &Printer,
) -> Result<(RunTaskReport, String)> {
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let (placement, current) = Placement::of_service(&ecs, cluster, service).await?;
    let request = Request {
        cluster: cluster.to_string(),
        task_definition: task_definition.to_string(),
        container: plan.container.clone(),
        command: plan.command.clone(),
        env: plan.env.clone(),
        placement,
        timeout: plan.timeout,
        log_lines: plan.log_lines,
    };
    printer.runner.group(&format!("pre-deploy: {}", plan.command.join(" ")));
    let report = run::run(&ecs, &session.config, &request, &Cancel::on_signals()).await;
    printer.runner.end_group();
    let report = report?;
    publish(printer, "pre-deploy", &report)?;
    Ok((report, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_stray_flags_are_refused() {
        let file: PreDeployConfig =
            toml::from_str("command = [\"bin/migrate\"]\ncontainer = \"web\"\ntimeout = \"2m\"\nlog-lines = 5")
                .unwrap();
        let none = PreDeployArgs::default();
        let p = pre_deploy_plan(&none, Some(&file)).unwrap().unwrap();
        assert_eq!(
            (p.command, p.container, p.timeout, p.log_lines),
            (vec!["bin/migrate".to_string()], Some("web".to_string()), Duration::from_secs(120), 5)
        );
        let flags = PreDeployArgs {
            pre_deploy_command: Some(r#"["bin/seed"]"#.into()),
            pre_deploy_timeout: Some("30".into()),
            ..Default::default()
        };
        let p = pre_deploy_plan(&flags, Some(&file)).unwrap().unwrap();
        assert_eq!((p.command, p.timeout), (vec!["bin/seed".to_string()], Duration::from_secs(30)));
        assert!(pre_deploy_plan(&none, None).unwrap().is_none());
        let stray = PreDeployArgs { pre_deploy_timeout: Some("1m".into()), ..Default::default() };
        assert!(pre_deploy_plan(&stray, None).unwrap_err().to_string().contains("need a pre-deploy command"));
        let bad = PreDeployArgs { pre_deploy_command: Some("bin/migrate".into()), ..Default::default() };
        assert!(pre_deploy_plan(&bad, None).unwrap_err().to_string().contains("JSON array"));
    }
}
