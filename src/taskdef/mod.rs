//! The task-definition stages: load a template ([`template`]), parse secret references
//! ([`refs`]) and expand them to ARNs ([`resolve`]), render images/env/secrets into it
//! ([`render`]), check it against ECS's model of RegisterTaskDefinition ([`schema`]), diff it
//! against what runs ([`diff`]), check that everything it references exists ([`verify`]), and
//! talk to ECS ([`ecs`]); with `--permissions`, prove the execution role can start the tasks
//! ([`preflight`] decides, [`permissions`] asks IAM, Logs and the registry); for a refresh, say
//! which references changed since the running tasks started ([`changed`]). `template`, `refs`,
//! `render`, `schema`, `preflight`, `changed` and `diff` are pure; `resolve`, `metadata`,
//! `verify`, `permissions` and `ecs` do I/O.

pub mod changed;
pub mod diff;
pub mod ecs;
pub mod metadata;
pub mod permissions;
pub mod pins;
pub mod preflight;
pub mod refs;
pub mod render;
pub mod resolve;
pub mod schema;
pub mod template;
pub mod verify;
