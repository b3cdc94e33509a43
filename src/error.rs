//! The error every command returns, and the exit code each kind maps to. Library modules have
//! their own typed errors; this enum only gathers them so `main` can pick the exit code.

use crate::aws::auth::AuthError;
use crate::exit::Exit;
use crate::github::oidc::OidcError;
use crate::github::runner::RunnerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or configuration cannot work as given.
    #[error("{0}")]
    Usage(String),
    /// Input that was understood but is wrong (a file, a value); nothing was changed.
    #[error("{0}")]
    Input(String),
    #[error("`deployer {0}` is not implemented yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Template(#[from] crate::taskdef::template::TemplateError),
    #[error(transparent)]
    Render(#[from] crate::taskdef::render::RenderError),
    #[error(transparent)]
    Resolve(#[from] crate::taskdef::resolve::ResolveError),
    #[error(transparent)]
    Ecs(#[from] crate::taskdef::ecs::EcsError),
    #[error(transparent)]
    Verify(#[from] crate::taskdef::verify::VerifyError),
    #[error(transparent)]
    Schema(#[from] crate::taskdef::schema::SchemaError),
    #[error(transparent)]
    Pin(#[from] crate::taskdef::pins::PinError),
    #[error(transparent)]
    Params(#[from] crate::params::ParamsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    RunTask(#[from] crate::runtask::RunTaskError),
    /// A service failed the deploy's checks before anything changed (its name in front).
    #[error(transparent)]
    Deploy(#[from] crate::deploy::driver::ServiceError),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Template(_)
            | Error::Render(_)
            | Error::Resolve(_)
            | Error::Ecs(_)
            | Error::Verify(_)
            | Error::Schema(_)
            | Error::Pin(_)
            | Error::Params(_)
            | Error::Config(_) => Exit::Failed,
            Error::Deploy(e) if matches!(e.source, crate::deploy::DeployError::Cancelled) => Exit::Cancelled,
            Error::Image(_) | Error::RunTask(_) | Error::Deploy(_) => Exit::Failed,
            Error::Input(_) | Error::NotImplemented(_) | Error::Oidc(_) | Error::Auth(_) | Error::Runner(_) => {
                Exit::Failed
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
