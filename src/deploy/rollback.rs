//! Returning a service to a known revision: StopServiceDeployment(ROLLBACK) while the
//! deployment is in progress, otherwise UpdateService back to the previous task definition
//! (or ECS's own circuit-breaker rollback, which is only waited for), then wait until the
//! previous revision runs steadily and, with probe URLs, answers well.

use std::time::{Duration, Instant};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::StopServiceDeploymentStopType;

use super::watch::{Pacing, describe_service, probe};
use super::{Cancel, DeployError};

/// How the service was sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ECS's circuit breaker did it; deployer only waited.
    EcsCircuitBreaker,
    StopServiceDeployment,
    UpdateService,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::EcsCircuitBreaker => "ECS's deployment circuit breaker",
            Method::StopServiceDeployment => "StopServiceDeployment(ROLLBACK)",
            Method::UpdateService => "UpdateService to the previous task definition",
        })
    }
}

pub struct Rollback<'a> {
    pub ecs: &'a Client,
    pub http: &'a reqwest::Client,
    pub cluster: &'a str,
    pub service: &'a str,
    pub to: &'a str,
    pub probe_urls: &'a [String],
    pub timeout: Duration,
}

/// The end of a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    Healthy,
    /// Not confirmed: the state as last seen.
    NotConfirmed(String),
}

impl Rollback<'_> {
    /// Start the rollback (unless ECS already does it) and wait for the previous revision.
    pub async fn run(
        &self,
        ecs_is_rolling_back: bool,
        service_deployment: Option<&str>,
    ) -> Result<(Method, Restored), DeployError> {
        let method =
            if ecs_is_rolling_back { Method::EcsCircuitBreaker } else { self.start(service_deployment).await? };
        tracing::info!("rolling back to {} via {method}", self.to);
        Ok((method, self.wait_restored().await))
    }

    async fn start(&self, service_deployment: Option<&str>) -> Result<Method, DeployError> {
        if let Some(arn) = service_deployment {
            match self
                .ecs
                .stop_service_deployment()
                .service_deployment_arn(arn)
                .stop_type(StopServiceDeploymentStopType::Rollback)
                .send()
                .await
            {
                Ok(_) => return Ok(Method::StopServiceDeployment),
                // Finished deployments cannot be stopped; fall through to UpdateService.
                Err(e) => tracing::info!(
                    "StopServiceDeployment did not apply ({}); updating the service instead",
                    crate::aws::auth::sdk_message(&e)
                ),
            }
        }
        self.ecs
            .update_service()
            .cluster(self.cluster)
            .service(self.service)
            .task_definition(self.to)
            .send()
            .await
            .map_err(|e| DeployError::Api { op: "UpdateService", message: crate::aws::auth::sdk_message(&e) })?;
        Ok(Method::UpdateService)
    }

    /// Wait until the service's only deployment runs `to`, completed, at its desired count,
    /// and each probe URL answers well twice in a row. Bounded by the timeout; a cancel does
    /// not cut it short (the point is to leave a known state).
    pub async fn wait_restored(&self) -> Restored {
        let start = Instant::now();
        let mut pacing = Pacing::from_env();
        let mut streak = 0u32;
        let mut last = String::from("not observed yet");
        let never = Cancel::default();
        while start.elapsed() < self.timeout {
            match describe_service(self.ecs, self.cluster, self.service).await {
                Ok((_, view)) => {
                    let primary = view.deployments.iter().find(|d| d.1 == "PRIMARY");
                    let steady =
                        view.deployments.len() == 1 && primary.is_some_and(|d| d.2 == self.to && d.3 == "COMPLETED");
                    last = match primary {
                        Some(d) => format!(
                            "primary deployment {} runs {} ({}), {} deployment(s) active",
                            d.0,
                            d.2,
                            d.3,
                            view.deployments.len()
                        ),
                        None => "no primary deployment".into(),
                    };
                    if steady {
                        let mut all_ok = true;
                        for url in self.probe_urls {
                            let p = probe(self.http, url).await;
                            if !p.ok {
                                all_ok = false;
                                last = format!("{url} answered {:?}: {}", p.status, p.detail);
                            }
                        }
                        streak = if all_ok { streak + 1 } else { 0 };
                        if streak >= 2 || (streak >= 1 && self.probe_urls.is_empty()) {
                            return Restored::Healthy;
                        }
                    }
                }
                Err(e) => last = format!("cannot describe the service: {e}"),
            }
            never.sleep(pacing.next(false).min(pacing.initial * 2)).await;
        }
        Restored::NotConfirmed(last)
    }
}
