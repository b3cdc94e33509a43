//! The last lines a container wrote through the awslogs driver, read from CloudWatch Logs with
//! GetLogEvents (through the raw signed client, `raw::RawClient::logs`, not another SDK crate).
//! Where they are comes from the task definition's `logConfiguration` (group, stream prefix,
//! region); the stream is `<prefix>/<container>/<task id>`, as the ECS agent names it. Callers
//! make it opt-in (`--log-lines N`): reading needs `logs:GetLogEvents`, and an app's output may
//! hold what a CI log should not show. `run-task` reads its task's lines here; the deploy gate's
//! stopped tasks can use the same two calls (`source`, `tail`).

use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_ecs::types::{ContainerDefinition, LogDriver};
use serde::Serialize;
use serde_json::json;

use super::raw::{RawClient, RawError};

/// Last lines of one container's awslogs stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ContainerLogs {
    pub container: String,
    pub group: String,
    pub stream: String,
    pub lines: Vec<String>,
    /// Why the lines could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where one container's awslogs lines are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    pub container: String,
    pub group: String,
    pub stream: String,
    pub region: Option<String>,
}

/// The container's awslogs stream for task `task_id`, when it logs with awslogs. Without a
/// stream prefix ECS names streams after Docker's container id, which deployer cannot know.
pub fn source(def: &ContainerDefinition, task_id: &str) -> Option<LogSource> {
    let config = def.log_configuration()?;
    if config.log_driver() != &LogDriver::Awslogs {
        return None;
    }
    let options = config.options()?;
    let group = options.get("awslogs-group")?;
    let prefix = options.get("awslogs-stream-prefix")?;
    let container = def.name()?;
    Some(LogSource {
        container: container.to_string(),
        group: group.clone(),
        stream: format!("{prefix}/{container}/{task_id}"),
        region: options.get("awslogs-region").cloned(),
    })
}

/// The last `n` lines of `src`, oldest first. CloudWatch Logs ingests with a delay, so an
/// empty answer is asked again a few times (bounded). A failure is kept in the result, never
/// an error of the run: the task's verdict does not depend on its logs.
pub async fn tail(config: &SdkConfig, src: &LogSource, n: usize) -> ContainerLogs {
    let mut out = ContainerLogs {
        container: src.container.clone(),
        group: src.group.clone(),
        stream: src.stream.clone(),
        lines: Vec::new(),
        error: None,
    };
    let config = match &src.region {
        Some(r) => config.to_builder().region(Region::new(r.clone())).build(),
        None => config.clone(),
    };
    let client = RawClient::logs(&config);
    let body = json!({
        "logGroupName": src.group,
        "logStreamName": src.stream,
        "limit": n.clamp(1, 10_000),
        "startFromHead": false,
    });
    for attempt in 0..4 {
        match client.json("Logs_20140328", "GetLogEvents", &body).await {
            Ok(v) => {
                out.lines = v["events"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|e| e["message"].as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                if !out.lines.is_empty() {
                    break;
                }
            }
            Err(e @ (RawError::Service { .. } | RawError::Transport { .. })) => {
                out.error = Some(e.to_string());
                break;
            }
            Err(e) => {
                out.error = Some(format!("CloudWatch Logs GetLogEvents: {e}"));
                break;
            }
        }
        if attempt < 3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let skip = out.lines.len().saturating_sub(n);
    out.lines.drain(..skip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::LogConfiguration;

    fn def(driver: LogDriver, options: &[(&str, &str)]) -> ContainerDefinition {
        let mut log = LogConfiguration::builder().log_driver(driver);
        for (k, v) in options {
            log = log.options(*k, *v);
        }
        ContainerDefinition::builder().name("web").log_configuration(log.build().unwrap()).build()
    }

    #[test]
    fn the_stream_is_the_agents_prefix_container_task_id() {
        let d = def(
            LogDriver::Awslogs,
            &[("awslogs-group", "/ecs/shop"), ("awslogs-stream-prefix", "shop"), ("awslogs-region", "eu-west-1")],
        );
        assert_eq!(
            source(&d, "0123abcd"),
            Some(LogSource {
                container: "web".into(),
                group: "/ecs/shop".into(),
                stream: "shop/web/0123abcd".into(),
                region: Some("eu-west-1".into()),
            })
        );
        assert_eq!(source(&def(LogDriver::Awslogs, &[("awslogs-group", "/ecs/shop")]), "x"), None, "no prefix");
        assert_eq!(source(&def(LogDriver::Awsfirelens, &[("awslogs-group", "g")]), "x"), None);
        assert_eq!(source(&ContainerDefinition::builder().name("web").build(), "x"), None);
    }
}
