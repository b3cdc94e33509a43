//! Task definitions in and out of ECS: describe (by family, family:revision, ARN, or a
//! service's current one) and register, through the raw-JSON client so no field is lost.

use aws_config::SdkConfig;
use serde_json::{Value, json};

use super::template::{TaskDefinition, TemplateError};
use crate::aws::ecs_json::{EcsJson, EcsJsonError};

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error(transparent)]
    Api(#[from] EcsJsonError),
    #[error("task definition {0:?} does not exist in ECS (check the family name and revision, and the region)")]
    NotFound(String),
    #[error("service {service:?} was not found in cluster {cluster:?}: {reason}")]
    ServiceNotFound { cluster: String, service: String, reason: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("ECS answered {op} without {field}")]
    Incomplete { op: &'static str, field: &'static str },
}

/// A registered (or described) task definition's identity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Registered {
    pub task_definition_arn: String,
    pub family: String,
    pub revision: i64,
    /// When ECS registered it (epoch seconds), for "changed since" comparisons.
    #[serde(skip)]
    pub registered_at: Option<f64>,
}

/// DescribeTaskDefinition with tags; returns the template-shaped definition and its identity.
pub async fn describe(client: &EcsJson, spec: &str) -> Result<(TaskDefinition, Registered), EcsError> {
    let out = match client.call("DescribeTaskDefinition", &json!({"taskDefinition": spec, "include": ["TAGS"]})).await {
        Ok(v) => v,
        Err(e) if matches!(e.code(), Some("ClientException" | "InvalidParameterException")) => {
            return Err(EcsError::NotFound(spec.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let registered = identity(&out["taskDefinition"], "DescribeTaskDefinition")?;
    let td = TaskDefinition::from_value(out, &format!("ECS {}:{}", registered.family, registered.revision))?;
    Ok((td, registered))
}

fn identity(td: &Value, op: &'static str) -> Result<Registered, EcsError> {
    Ok(Registered {
        task_definition_arn: td["taskDefinitionArn"]
            .as_str()
            .ok_or(EcsError::Incomplete { op, field: "taskDefinitionArn" })?
            .to_string(),
        family: td["family"].as_str().unwrap_or_default().to_string(),
        revision: td["revision"].as_i64().unwrap_or_default(),
        registered_at: td["registeredAt"].as_f64(),
    })
}

/// The task definition ARN a service runs now.
pub async fn service_task_definition(config: &SdkConfig, cluster: &str, service: &str) -> Result<String, EcsError> {
    let out =
        aws_sdk_ecs::Client::new(config).describe_services().cluster(cluster).services(service).send().await.map_err(
            |e| EcsJsonError::Service {
                op: "DescribeServices".into(),
                code: aws_sdk_ecs::error::ProvideErrorMetadata::code(&e).unwrap_or("error").into(),
                message: aws_sdk_ecs::error::DisplayErrorContext(&e).to_string(),
            },
        )?;
    let not_found = |reason: String| EcsError::ServiceNotFound {
        cluster: cluster.to_string(),
        service: service.to_string(),
        reason,
    };
    if let Some(f) = out.failures().first() {
        return Err(not_found(f.reason().unwrap_or("MISSING").to_string()));
    }
    let svc = out
        .services()
        .iter()
        .find(|s| s.status() != Some("INACTIVE"))
        .ok_or_else(|| not_found("it is inactive".into()))?;
    svc.task_definition()
        .map(str::to_string)
        .ok_or(EcsError::Incomplete { op: "DescribeServices", field: "taskDefinition" })
}

pub async fn register(client: &EcsJson, td: &TaskDefinition) -> Result<Registered, EcsError> {
    let out = client.call("RegisterTaskDefinition", &td.to_json()).await?;
    identity(&out["taskDefinition"], "RegisterTaskDefinition")
}
