//! `sim-app`: the sample HTTP app ecs-sim runs as each task container. Its behaviour comes from
//! its environment, so a test deploys a "bad release" the way a user would:
//! `PORT`, `SIM_VERSION` (echoed by `/` and `/health`), `SIM_HEALTH=ok|fail|flap|<other>`,
//! `SIM_CRASH_AFTER=S` (exit 1 after S seconds), `SIM_START_DELAY=S` (listen after S seconds),
//! `SIM_REQUIRE_ENV=A,B` (exit 1 naming missing variables); seconds scale by `SIM_TIME_SCALE`.
//!
//! Given arguments (the container's `command`, or a RunTask command override) it is a one-off
//! job instead of a server, like a migration: it prints what it runs, each `say=TEXT`, and exits
//! with `exit=N` (or `SIM_EXIT_CODE`, default 0) after `after=S` seconds (or `SIM_EXIT_AFTER`,
//! default 0). SIGTERM ends it with the default action (exit code 143 as ECS reports it). A first
//! argument `serve` keeps the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

struct App {
    version: String,
    health: String,
    calls: AtomicU64,
}

fn secs(var: &str, scale: f64) -> Option<Duration> {
    let s: f64 = std::env::var(var).ok()?.trim().parse().ok()?;
    Some(Duration::from_secs_f64((s * scale).max(0.0)))
}

async fn answer(app: Arc<App>) -> impl IntoResponse {
    let n = app.calls.fetch_add(1, Ordering::Relaxed);
    let healthy = match app.health.as_str() {
        "ok" | "" => true,
        "fail" => false,
        "flap" => n % 2 == 0,
        // Any other value (e.g. "degraded") answers 200 with that status: load balancers
        // and ECS stay happy, only a probe that reads the body can tell.
        other => return (StatusCode::OK, Json(json!({"status": other, "version": app.version}))),
    };
    if healthy {
        (StatusCode::OK, Json(json!({"status": "healthy", "version": app.version})))
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"status": "unhealthy", "version": app.version})))
    }
}

/// What a job run asks for: its output lines, exit code and run time (before scaling).
#[derive(Debug, PartialEq)]
struct Job {
    say: Vec<String>,
    exit: i32,
    after: f64,
}

/// `exit=N`, `after=S` and `say=TEXT` among the arguments; the environment gives the defaults.
fn job(args: &[String], env_exit: Option<&str>, env_after: Option<&str>) -> Job {
    let mut job = Job {
        say: Vec::new(),
        exit: env_exit.and_then(|v| v.trim().parse().ok()).unwrap_or(0),
        after: env_after.and_then(|v| v.trim().parse().ok()).filter(|s: &f64| s.is_finite()).unwrap_or(0.0),
    };
    for a in args {
        if let Some(v) = a.strip_prefix("exit=") {
            job.exit = v.trim().parse().unwrap_or(job.exit);
        } else if let Some(v) = a.strip_prefix("after=") {
            job.after = v.trim().parse().ok().filter(|s: &f64| s.is_finite()).unwrap_or(job.after);
        } else if let Some(v) = a.strip_prefix("say=") {
            job.say.push(v.to_string());
        }
    }
    job
}

async fn run_job(args: &[String], scale: f64) -> ! {
    use std::io::Write;
    let job =
        job(args, std::env::var("SIM_EXIT_CODE").ok().as_deref(), std::env::var("SIM_EXIT_AFTER").ok().as_deref());
    let mut out = std::io::stdout();
    let _ = writeln!(out, "sim-app job: running {}", args.join(" "));
    for line in &job.say {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    tokio::time::sleep(Duration::from_secs_f64((job.after * scale).max(0.0))).await;
    if job.exit == 0 {
        let _ = writeln!(out, "sim-app job: done");
    } else {
        eprintln!("sim-app job: failed with exit code {}", job.exit);
    }
    let _ = out.flush();
    std::process::exit(job.exit)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let scale: f64 =
        std::env::var("SIM_TIME_SCALE").ok().and_then(|s| s.parse().ok()).filter(|s: &f64| *s > 0.0).unwrap_or(1.0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a != "serve") {
        run_job(&args, scale).await;
    }
    if let Ok(req) = std::env::var("SIM_REQUIRE_ENV") {
        let missing: Vec<&str> =
            req.split(',').map(str::trim).filter(|n| !n.is_empty() && std::env::var_os(n).is_none()).collect();
        if !missing.is_empty() {
            eprintln!("sim-app: missing required environment variables: {}", missing.join(", "));
            std::process::exit(1);
        }
    }
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
    let app = Arc::new(App {
        version: std::env::var("SIM_VERSION").unwrap_or_else(|_| "unknown".into()),
        health: std::env::var("SIM_HEALTH").unwrap_or_else(|_| "ok".into()),
        calls: AtomicU64::new(0),
    });
    if let Some(d) = secs("SIM_CRASH_AFTER", scale) {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            eprintln!("sim-app: crashing as SIM_CRASH_AFTER asked");
            std::process::exit(1);
        });
    }
    if let Some(d) = secs("SIM_START_DELAY", scale) {
        tokio::time::sleep(d).await;
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sim-app: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let a1 = app.clone();
    let a2 = app.clone();
    let router = axum::Router::new()
        .route("/health", axum::routing::get(move || answer(a1.clone())))
        .fallback(move || answer(a2.clone()));
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        term.recv().await;
    };
    let _ = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_arguments_override_the_environment() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(job(&args(&["bin/migrate"]), None, None), Job { say: vec![], exit: 0, after: 0.0 });
        assert_eq!(job(&args(&["bin/migrate"]), Some("3"), Some("1.5")), Job { say: vec![], exit: 3, after: 1.5 });
        assert_eq!(
            job(&args(&["m", "exit=1", "after=2", "say=step 1", "say=step 2"]), Some("3"), None),
            Job { say: vec!["step 1".into(), "step 2".into()], exit: 1, after: 2.0 }
        );
        assert_eq!(
            job(&args(&["m", "exit=x", "after=inf"]), Some("4"), None),
            Job { say: vec![], exit: 4, after: 0.0 }
        );
    }
}
