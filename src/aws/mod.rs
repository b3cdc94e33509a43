//! AWS plumbing: one shared `SdkConfig` builder ([`clients`]) and the credential exchange
//! of the `auth` stage ([`auth`]), the signed JSON client ([`ecs_json`]) and the awslogs reader
//! built on it ([`logs`]). Service calls of later stages live beside their stage.

pub mod auth;
pub mod clients;
pub mod ecs_json;
pub mod logs;
