//! The `deployer` binary: parse the command line, set up logging, run, and map the outcome
//! to the exit codes of DESIGN.md section 3. Nothing else lives here, except the one promise
//! a workflow relies on: `exit-code` is written on every run and `result=failed` on every
//! failure (usage errors, refusals and early errors included), so
//! `if: steps.deploy.outputs.result == 'failed'` always fires when it should.

use std::process::ExitCode;

use clap::Parser;
use deployer::cli::Cli;
use deployer::exit::Exit;
use deployer::github::runner::Runner;
use deployer::output::Printer;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap's own message and code: 2 for usage errors, 0 for --help / --version. The
            // message quotes the offending value, so it goes through the one writer.
            deployer::output::print_clap_error(&err);
            let code = u8::try_from(err.exit_code()).unwrap_or(Exit::Usage.code());
            let runner = Runner::from_env(false);
            if code != 0 {
                write_output(&runner, "result", "failed");
            }
            write_output(&runner, "exit-code", &code.to_string());
            return ExitCode::from(code);
        }
    };
    deployer::init_logging(cli.global.verbose);
    let printer = Printer::new(cli.global.output);
    let exit = run(cli, &printer);
    write_output(&printer.runner, "exit-code", &exit.code().to_string());
    exit.into()
}

fn run(cli: Cli, printer: &Printer) -> Exit {
    let failed = |message: &str, exit: Exit| {
        printer.error(message, exit.code());
        write_output(&printer.runner, "result", "failed");
        exit
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return failed(&format!("cannot start the async runtime: {e}"), Exit::Failed),
    };
    match runtime.block_on(deployer::commands::run(cli, printer)) {
        Ok(exit) => exit,
        Err(err) => failed(&err.to_string(), err.exit()),
    }
}

/// A step output at the edge: failing to write it must not hide the run's own outcome.
fn write_output(runner: &Runner, name: &str, value: &str) {
    if let Err(e) = runner.set_output(name, value) {
        deployer::output::write_text(
            deployer::output::Stream::Stderr,
            &format!("warning: cannot write the step output {name}: {e}"),
        );
    }
}
