//! Everything that talks to GitHub: the runner's file and workflow-command protocol
//! ([`runner`]), the OIDC token endpoint plus the token's claims ([`oidc`]), and the
//! Deployments API ([`deployments`]).

pub mod deployments;
pub mod oidc;
pub mod runner;
