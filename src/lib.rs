//! deployer: GitHub OIDC → AWS credentials → ECR push → task definition with secret
//! references → ECS deployment behind a health gate that rolls back by itself.
//!
//! The pipeline stages of DESIGN.md section 2 each have a module; `commands` wires them to
//! the CLI, `main.rs` only parses and maps errors to exit codes.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod error;
pub mod exit;
pub mod github;
pub mod image;
pub mod image_ref;
pub mod lifecycle_policy;
pub mod output;
pub mod params;
pub mod pipeline;
pub mod report;
pub mod resolve;
pub mod retry;
pub mod revisions;
pub mod runtask;
pub mod schedules;
pub mod secret;
pub mod tags;
pub mod taskdef;

/// Logs go to stderr through the one writer (`output`), which keeps any line of theirs from
/// being read as a workflow command; panics go the same way. `-v` raises deployer's own level,
/// `DEPLOYER_LOG` (an EnvFilter directive) overrides everything.
pub fn init_logging(verbose: u8) {
    output::install_panic_hook();
    let default = match verbose {
        0 => "deployer=info,warn",
        1 => "deployer=debug,info",
        _ => "deployer=trace,info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPLOYER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let color = output::stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(output::stderr_writer as fn() -> output::SafeWriter)
        .with_target(false)
        .without_time()
        .try_init();
}
