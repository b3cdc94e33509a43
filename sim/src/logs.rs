//! The `awslogs` log driver, as the ECS agent runs it: a container whose
//! `logConfiguration.logDriver` is `awslogs` has its stdout and stderr lines written to
//! CloudWatch Logs (moto, at `--aws-endpoint`) in group `awslogs-group`, stream
//! `<awslogs-stream-prefix>/<container name>/<task id>`, region `awslogs-region`. The group is
//! created when `awslogs-create-group` is `"true"`; otherwise a missing group fails the task
//! before it starts, with the agent's ResourceInitializationError.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::resolve::moto_call;

/// Where one container's lines go.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub endpoint: String,
    pub account: String,
    pub region: String,
    pub group: String,
    pub stream: String,
    pub create_group: bool,
}

/// The container's awslogs destination, when it has one and the sim knows where moto is.
pub fn target(def: &Value, endpoint: Option<&str>, account: &str, region: &str, task_id: &str) -> Option<Target> {
    let endpoint = endpoint?;
    let config = def.get("logConfiguration")?;
    if config.get("logDriver").and_then(Value::as_str) != Some("awslogs") {
        return None;
    }
    let opt = |k: &str| config.pointer(&format!("/options/{k}")).and_then(Value::as_str).filter(|s| !s.is_empty());
    let container = def.get("name").and_then(Value::as_str).unwrap_or("app");
    let stream = match opt("awslogs-stream-prefix") {
        Some(prefix) => format!("{prefix}/{container}/{task_id}"),
        None => format!("{container}/{task_id}"),
    };
    Some(Target {
        endpoint: endpoint.to_string(),
        account: account.to_string(),
        region: opt("awslogs-region").unwrap_or(region).to_string(),
        group: opt("awslogs-group")?.to_string(),
        stream,
        create_group: opt("awslogs-create-group") == Some("true"),
    })
}

async fn call(http: &reqwest::Client, t: &Target, op: &str, body: Value) -> Result<Value, String> {
    moto_call(http, &t.endpoint, "logs", &format!("Logs_20140328.{op}"), &t.account, &t.region, body).await
}

/// Before the container starts: the group (when asked to create it) and the stream. The error
/// text is the agent's, for the task's stoppedReason.
pub async fn prepare(http: &reqwest::Client, t: &Target) -> Result<(), String> {
    if t.create_group {
        match call(http, t, "CreateLogGroup", json!({"logGroupName": t.group})).await {
            Ok(_) => {}
            Err(e) if e.starts_with("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(format!("ResourceInitializationError: failed to create Cloudwatch log group: {e}")),
        }
    }
    match call(http, t, "CreateLogStream", json!({"logGroupName": t.group, "logStreamName": t.stream})).await {
        Ok(_) => Ok(()),
        Err(e) if e.starts_with("ResourceAlreadyExistsException") => Ok(()),
        Err(e) => Err(format!(
            "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: failed to create Cloudwatch log stream: {e}"
        )),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

async fn put(http: &reqwest::Client, t: &Target, batch: &mut Vec<(i64, String)>) {
    if batch.is_empty() {
        return;
    }
    let events: Vec<Value> = batch.drain(..).map(|(ts, m)| json!({"timestamp": ts, "message": m})).collect();
    let body = json!({"logGroupName": t.group, "logStreamName": t.stream, "logEvents": events});
    if let Err(e) = call(http, t, "PutLogEvents", body).await {
        tracing::warn!(group = t.group, stream = t.stream, "awslogs: PutLogEvents failed: {e}");
    }
}

fn read_lines<R: AsyncRead + Unpin + Send + 'static>(reader: R, tx: mpsc::Sender<(i64, String)>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        // Bounded by the process: its end closes the pipe.
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send((now_ms(), line)).await.is_err() {
                return;
            }
        }
    });
}

/// Ships the lines of `stdout` and `stderr` until both close (the process ended), in batches
/// at most 100 ms or 100 lines apart. Returns once the last batch is written, so the sim can
/// record the container's exit after its output is in CloudWatch Logs.
pub async fn pump<A, B>(http: reqwest::Client, t: Target, stdout: A, stderr: B)
where
    A: AsyncRead + Unpin + Send + 'static,
    B: AsyncRead + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(1024);
    read_lines(stdout, tx.clone());
    read_lines(stderr, tx);
    let mut batch = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(event)) => {
                batch.push(event);
                if batch.len() >= 100 {
                    put(&http, &t, &mut batch).await;
                }
            }
            Ok(None) => break,
            Err(_) => put(&http, &t, &mut batch).await,
        }
    }
    put(&http, &t, &mut batch).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_prefix_container_task_id_and_only_awslogs_counts() {
        let def = json!({"name": "web", "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": "/ecs/shop", "awslogs-stream-prefix": "shop", "awslogs-region": "eu-west-1"}}});
        let t = target(&def, Some("http://moto"), "111122223333", "us-east-1", "abc").unwrap();
        assert_eq!(t.stream, "shop/web/abc");
        assert_eq!(t.region, "eu-west-1");
        assert_eq!(t.group, "/ecs/shop");
        assert!(!t.create_group);
        assert!(target(&def, None, "1", "r", "abc").is_none(), "no moto, no shipping");
        let fluent = json!({"name": "web", "logConfiguration": {"logDriver": "awsfirelens"}});
        assert!(target(&fluent, Some("http://moto"), "1", "r", "abc").is_none());
        let no_prefix = json!({"name": "web", "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": "g", "awslogs-create-group": "true"}}});
        let t = target(&no_prefix, Some("http://moto"), "1", "us-east-1", "abc").unwrap();
        assert_eq!((t.stream.as_str(), t.region.as_str(), t.create_group), ("web/abc", "us-east-1", true));
    }
}
