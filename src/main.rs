//! The `deployer` binary: parse the command line, set up logging, run, and map the outcome
//! to the exit codes of DESIGN.md section 3. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use deployer::cli::Cli;
use deployer::exit::Exit;
use deployer::output::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2 from clap itself
    deployer::init_logging(cli.global.verbose);
    let printer = Printer::new(cli.global.output);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"), Exit::Failed.code());
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(deployer::commands::run(cli, &printer)) {
        Ok(exit) => exit.into(),
        Err(err) => {
            let exit = err.exit();
            printer.error(&err.to_string(), exit.code());
            exit.into()
        }
    }
}
