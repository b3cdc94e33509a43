//! The deploy stages: `gate` decides (pure), `watch` observes ECS and probes, `rolling`
//! drives UpdateService and the watch, `rollback` returns the service to a known revision.
//! `Cancel` turns SIGINT/SIGTERM into a flag the loops check between polls.

pub mod bluegreen;
pub mod gate;
pub mod lifecycle;
pub mod rollback;
pub mod rolling;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("service {service:?} was not found in cluster {cluster:?}: {reason}")]
    ServiceNotFound { cluster: String, service: String, reason: String },
    #[error("ECS {op} failed: {message}")]
    Api { op: &'static str, message: String },
    #[error(
        "service {service} uses the {controller} deployment controller; deployer drives services whose controller is ECS (rolling, blue/green, canary, linear) — {controller} is not supported yet"
    )]
    UnsupportedController { service: String, controller: String },
    #[error(
        "another deployment is still in progress on service {service} after waiting {waited_s}s ({detail}); nothing was changed — let it finish or stop it, then run again"
    )]
    Busy { service: String, waited_s: u64, detail: String },
    #[error("{0}")]
    Input(String),
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
