//! One module per command: each turns its parsed flags into a request for the stage modules,
//! runs it, and returns a result that is both `Display` (text) and `Serialize` (`--output json`).

pub mod auth;

use crate::cli::{Cli, Command};
use crate::error::{Error, Result};
use crate::output::Printer;

/// Run the parsed command line; the caller maps the error to an exit code.
pub async fn run(cli: Cli, printer: &Printer) -> Result<crate::exit::Exit> {
    match cli.command {
        Command::Auth(args) => auth::run(&args, &cli.global, printer).await,
        Command::Push(_) => Err(Error::NotImplemented("push")),
        Command::Promote(_) => Err(Error::NotImplemented("promote")),
        Command::Render(_) => Err(Error::NotImplemented("render")),
        Command::Diff(_) => Err(Error::NotImplemented("diff")),
        Command::Verify(_) => Err(Error::NotImplemented("verify")),
        Command::Register(_) => Err(Error::NotImplemented("register")),
        Command::Deploy(_) => Err(Error::NotImplemented("deploy")),
        Command::Rollback(_) => Err(Error::NotImplemented("rollback")),
        Command::Release(_) => Err(Error::NotImplemented("release")),
        Command::Params(_) => Err(Error::NotImplemented("params import")),
    }
}
