//! Everything that talks to GitHub: the runner's file and workflow-command protocol
//! ([`runner`]) and the OIDC token endpoint plus the token's claims ([`oidc`]).

pub mod oidc;
pub mod runner;
