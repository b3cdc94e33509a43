//! The deploy stage: take services from the revision they run to a new one behind a health
//! gate, and settle — roll back on failure, confirm, put the service's configuration back.
//!
//! One driver runs every strategy (`driver`: check → update → watch → decide → settle →
//! restore); a strategy (`strategy`, implemented by `rolling` and `traffic`) only says what
//! to check, what to send and which gate judges. Bottom up, each module imports only those
//! below it: `plan` (what to do, plain data) and `view` (ECS state as typed data); `gate` and
//! `lifecycle` (pure decisions); `report` (what a deploy leaves behind, the exit code);
//! `ecs` and `probe` (I/O); `watch` (one poll → one observation); `settle` (the way back);
//! `strategy`, `rolling`, `traffic`; `driver`. `Cancel` turns SIGINT/SIGTERM into a flag the
//! loops check between polls.
//!
//! A service under the CODE_DEPLOY controller is deployed by the same driver through a third
//! strategy: `codedeploy_view` (CodeDeploy's state as data, beside `view`),
//! `codedeploy_lifecycle` (its pure decisions, beside `lifecycle`), and `codedeploy` (the
//! CodeDeploy calls, like `ecs`, and the strategy itself, which `settle` also calls back
//! through for StopDeployment and redeploys).

pub mod codedeploy;
pub mod codedeploy_lifecycle;
pub mod codedeploy_view;
pub mod driver;
pub mod ecs;
pub mod gate;
pub mod lifecycle;
pub mod plan;
pub mod probe;
pub mod report;
pub mod rolling;
pub mod settle;
pub mod strategy;
pub mod traffic;
pub mod view;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// What goes wrong deploying one service. The messages do not name the service: whoever
/// reports the error for several services puts the name in front, once.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("service {service:?} was not found in cluster {cluster:?}: {reason}")]
    ServiceNotFound { cluster: String, service: String, reason: String },
    #[error("ECS {op} failed: {message}")]
    Api {
        op: &'static str,
        /// The service's error code (`ConflictException`, `AccessDeniedException`, ...).
        code: Option<String>,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("CodeDeploy {op} failed: {message}")]
    CodeDeployApi {
        op: &'static str,
        code: Option<String>,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "it uses the {controller} deployment controller; deployer drives services whose controller is ECS (rolling, blue/green, canary, linear) or CODE_DEPLOY (through CodeDeploy) — {controller} is not supported"
    )]
    UnsupportedController { controller: String },
    #[error(
        "another deployment is still in progress after waiting {waited_s}s ({detail}); nothing was changed — let it finish or stop it, then run again"
    )]
    Busy { waited_s: u64, detail: String },
    /// The service cannot take the deploy as asked; the message says what to change.
    #[error("{0}")]
    Precondition(String),
    #[error("cancelled (SIGINT/SIGTERM) before anything changed")]
    Cancelled,
}

impl DeployError {
    /// ECS refused because of the resource's state (e.g. a deployment that cannot be stopped).
    pub fn is_conflict(&self) -> bool {
        matches!(self, DeployError::Api { code: Some(code), .. } if code == "ConflictException")
    }

    /// ECS kept refusing for throttling (after deployer's own backoff): a slow API, not a
    /// failed check, so it never counts toward "N API errors in a row".
    pub fn is_throttling(&self) -> bool {
        matches!(self, DeployError::Api { code: Some(code), .. } if ecs::is_throttling_code(code))
    }

    /// The service's error code (ECS's or CodeDeploy's), e.g. `DeploymentAlreadyCompletedException`.
    pub fn code(&self) -> Option<&str> {
        match self {
            DeployError::Api { code, .. } | DeployError::CodeDeployApi { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Set by SIGINT/SIGTERM; loops check it between polls and sleeps end early.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Cancel {
    /// A token that SIGINT or SIGTERM sets.
    pub fn on_signals() -> Cancel {
        let cancel = Cancel::default();
        let c = cancel.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            tracing::warn!("cancel requested: leaving the service in a known state before exiting");
            c.cancel();
        });
        cancel
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleep unless cancelled; true when the sleep was cut short by a cancel.
    pub async fn sleep(&self, d: Duration) -> bool {
        if self.is_cancelled() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_cancelled(),
            _ = self.notify.notified() => true,
        }
    }
}
