//! The task-definition stages: load a template ([`template`]), parse secret references
//! ([`refs`]) and expand them to ARNs ([`resolve`]), render images/env/secrets into it
//! ([`render`]), check it against ECS's model of RegisterTaskDefinition ([`schema`]), diff it
//! against what runs ([`diff`]), check that everything it references exists ([`verify`]), and
//! talk to ECS ([`ecs`]). `template`, `refs`, `render`, `schema` and `diff` are pure;
//! `resolve`, `verify` and `ecs` do I/O.

pub mod diff;
pub mod ecs;
pub mod refs;
pub mod render;
pub mod resolve;
pub mod schema;
pub mod template;
pub mod verify;
