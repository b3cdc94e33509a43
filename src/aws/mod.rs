//! AWS plumbing: one shared `SdkConfig` builder ([`clients`]), the credential exchange of the
//! `auth` stage ([`auth`]), raw SigV4 calls for task definitions ([`ecs_json`]) and for the few
//! operations without an SDK crate here ([`raw`]: IAM, KMS, CloudWatch Logs), and the awslogs
//! reader built on it ([`logs`]). Service calls of later stages live beside their stage.

pub mod auth;
pub mod clients;
pub mod ecs_json;
pub mod iam;
pub mod logs;
pub mod raw;
pub mod refresh;
