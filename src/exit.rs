//! Exit codes of DESIGN.md section 3, in one place.

use std::process::ExitCode;

/// How a run ended, as the shell sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// Deployed and healthy (or the command did what it was asked).
    Ok,
    /// Failed before anything changed: bad input, auth, push, verify.
    Failed,
    /// Usage error (clap reports these itself with the same code).
    Usage,
    /// The new revision failed the gate; the service was rolled back and is healthy again.
    RolledBack,
    /// Failed and the rollback failed or the state is unknown: a human must look.
    Unknown,
    /// Cancelled by SIGINT/SIGTERM after leaving the service in a known state.
    Cancelled,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::RolledBack => 3,
            Exit::Unknown => 4,
            Exit::Cancelled => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}
