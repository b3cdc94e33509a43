//! `ecs-sim`: command line entry point. Binds the API, prints the one line tests read to learn
//! the port, runs the scheduler, and on SIGTERM/SIGINT (or stdin closing with
//! `--exit-on-stdin-close`) kills and reaps every task process before exiting.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ecs_sim::{Config, Sim};

/// A local Amazon ECS control plane whose tasks are real local processes.
#[derive(Parser, Debug)]
#[command(name = "ecs-sim", version)]
struct Args {
    /// Address of the ECS API and the /_sim/ control endpoints.
    #[arg(long, default_value = "127.0.0.1:0", env = "ECS_SIM_LISTEN")]
    listen: String,
    /// moto endpoint used to resolve task secrets (SSM, Secrets Manager).
    #[arg(long, env = "ECS_SIM_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
    /// OCI registry that must hold task images (the image's own host is ignored).
    #[arg(long, env = "ECS_SIM_REGISTRY_ENDPOINT")]
    registry_endpoint: Option<String>,
    /// Multiplies every modelled duration (bake times, health-check intervals, drains).
    #[arg(long, default_value_t = 1.0, env = "ECS_SIM_TIME_SCALE")]
    time_scale: f64,
    /// The sample app tasks run (default: `sim-app` next to this executable).
    #[arg(long, env = "ECS_SIM_APP_BIN")]
    app_bin: Option<PathBuf>,
    /// Enforce ECS's API throttling (per-account token buckets, `ThrottlingException`).
    #[arg(long, env = "ECS_SIM_THROTTLE")]
    throttle: bool,
    /// Exit (after killing all tasks) when standard input reaches end of file.
    #[arg(long)]
    exit_on_stdin_close: bool,
}

fn default_app_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sim-app")))
        .unwrap_or_else(|| PathBuf::from("sim-app"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ECS_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.time_scale.is_nan() || args.time_scale <= 0.0 {
        eprintln!("ecs-sim: --time-scale must be greater than 0");
        return std::process::ExitCode::from(2);
    }
    let cfg = Config {
        time_scale: args.time_scale,
        aws_endpoint: args.aws_endpoint.map(|s| s.trim_end_matches('/').to_string()),
        registry_endpoint: args.registry_endpoint.map(|s| s.trim_end_matches('/').to_string()),
        app_bin: args.app_bin.unwrap_or_else(default_app_bin),
        throttle: args.throttle,
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ecs-sim: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().expect("local addr");
    tracing::info!(?cfg, "starting");
    let sim = Arc::new(Sim::new(cfg));
    tokio::spawn(ecs_sim::engine::run(sim.clone()));
    let app = ecs_sim::control::router(sim.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ecs-sim listening on http://{addr}");
        let _ = out.flush();
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if args.exit_on_stdin_close {
        // A plain thread: blocking reads until EOF or an error.
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = eof_tx.send(());
        });
    } else {
        std::mem::forget(eof_tx);
    }
    let stdin_closed = async {
        let _ = eof_rx.await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        _ = stdin_closed => tracing::info!("stdin closed"),
    }
    sim.kill_all_tasks().await;
    tracing::info!("all task processes stopped; exiting");
    // Exit now rather than wait for the runtime to wind down its servers and blocking threads.
    std::process::exit(0)
}
