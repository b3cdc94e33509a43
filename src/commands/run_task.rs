//! `deployer run-task`: the one-off task flags (`cli::OneOffArgs`, shared with `release`'s
//! pre-deploy stage) as a task spec, the stage (`pipeline::run_task`) with the service's
//! placement, the `result` output and the report. Everything is checked before any AWS call.

use super::plan::{poll_from_env, task_spec};
use crate::cli::{GlobalArgs, RunTaskArgs};
use crate::deploy::Cancel;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::pipeline::Session;
use crate::pipeline::run_task::{Site, run_task};

pub async fn run(args: &RunTaskArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let spec = task_spec(&args.task, &args.argv)?;
    if args.service.is_none() && args.task_definition.is_none() {
        return Err(Error::Usage(
            "run-task needs --service (its placement and current revision) or --task-definition".into(),
        ));
    }
    let session = Session::from_default_chain(global).await?;
    let site = Site { cluster: &args.cluster, service: args.service.as_deref(), poll: poll_from_env() };
    let td = args.task_definition.as_deref();
    let cancel = Cancel::on_signals();
    let (report, _) = run_task(&session, &site, td, &spec, "run-task", &printer.runner, &cancel).await?;
    printer.runner.set_output("result", report.result_name())?;
    printer.result(&report);
    Ok(report.exit())
}
