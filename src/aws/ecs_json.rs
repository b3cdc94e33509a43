//! ECS task definitions as raw JSON (the JSON 1.1 protocol, SigV4-signed).
//!
//! The SDK's typed model cannot be built from, or printed as, the AWS CLI's JSON, and a
//! hand-written mapping of the ~150 task-definition fields would drop whatever it forgot. So
//! RegisterTaskDefinition and DescribeTaskDefinition go over the wire as the JSON the user
//! wrote and the CLI shows: nothing is lost in between. Everything else uses aws-sdk-ecs.

use aws_config::SdkConfig;
use serde_json::Value;

use super::raw::{RawClient, RawError};

#[derive(Debug, thiserror::Error)]
pub enum EcsJsonError {
    #[error("ECS {op} failed: {code}: {message}")]
    Service { op: String, code: String, message: String },
    #[error("ECS {op} could not be reached at {endpoint}: {message}")]
    Transport { op: String, endpoint: String, message: String },
    #[error("no AWS credentials for ECS: {0}")]
    Credentials(String),
    #[error("cannot sign the ECS request: {0}")]
    Signing(String),
}

impl EcsJsonError {
    pub fn code(&self) -> Option<&str> {
        match self {
            EcsJsonError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<RawError> for EcsJsonError {
    fn from(e: RawError) -> Self {
        match e {
            RawError::Service { op, code, message, .. } => EcsJsonError::Service { op, code, message },
            RawError::Transport { op, endpoint, message, .. } => EcsJsonError::Transport { op, endpoint, message },
            RawError::Credentials(_, m) => EcsJsonError::Credentials(m),
            RawError::Signing(_, m) => EcsJsonError::Signing(m),
        }
    }
}

/// A minimal ECS JSON client sharing the SdkConfig's region, credentials and endpoint
/// (`AWS_ENDPOINT_URL_ECS`, then `AWS_ENDPOINT_URL`, then the public endpoint).
pub struct EcsJson {
    raw: RawClient,
}

impl EcsJson {
    pub fn new(config: &SdkConfig) -> Self {
        EcsJson { raw: RawClient::ecs(config) }
    }

    /// Call `op` with `body`, retrying throttling and 5xx with backoff.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, EcsJsonError> {
        Ok(self.raw.json("AmazonEC2ContainerServiceV20141113", op, body).await?)
    }
}
