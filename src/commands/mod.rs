//! One module per command: each turns its parsed flags into a typed request (`plan` builds
//! them from the shared flag groups), calls the stage modules (`pipeline`, `deploy`), and
//! prints a result that is both `Display` (text) and `Serialize` (`--output json`).

pub mod auth;
pub mod deploy;
pub mod params;
pub mod plan;
pub mod promote;
pub mod push;
pub mod release;
pub mod revisions;
pub mod run_task;
pub mod taskdef;

use crate::cli::{Cli, Command, ParamsCommand};
use crate::error::Result;
use crate::output::Printer;

/// Run the parsed command line; the caller maps the error to an exit code.
pub async fn run(cli: Cli, printer: &Printer) -> Result<crate::exit::Exit> {
    match cli.command {
        Command::Auth(args) => auth::run(&args, &cli.global, printer).await,
        Command::Push(args) => push::run(&args, &cli.global, printer).await,
        Command::Promote(args) => promote::run(&args, &cli.global, printer).await,
        Command::Render(args) => taskdef::run_render(&args, &cli.global, printer).await,
        Command::Diff(args) => taskdef::run_diff(&args, &cli.global, printer).await,
        Command::Verify(args) => taskdef::run_verify(&args, &cli.global, printer).await,
        Command::Register(args) => taskdef::run_register(&args, &cli.global, printer).await,
        Command::Deploy(args) => deploy::run(&args, &cli.global, printer, false).await,
        Command::Rollback(args) => deploy::run_rollback(&args, &cli.global, printer).await,
        Command::Refresh(args) => deploy::run(&args, &cli.global, printer, true).await,
        Command::Release(args) => release::run(&args, &cli.global, printer).await,
        Command::Params(ParamsCommand::Import(args)) => params::run_import(&args, &cli.global, printer).await,
        Command::RunTask(args) => run_task::run(&args, &cli.global, printer).await,
        Command::Revisions(args) => revisions::run(&args, &cli.global, printer).await,
    }
}
