//! The simulator's in-memory state (clusters, task definitions, services and their deployments,
//! tasks, service deployment records) and its rendering to ECS JSON shapes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::util::{Ctx, now_epoch, short_name};

#[derive(Default)]
pub struct State {
    pub clusters: BTreeMap<String, Cluster>,
    /// Key: `region:account:family`; revisions in order (revision = index + 1).
    pub task_defs: BTreeMap<String, Vec<TaskDef>>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub service_deployments: BTreeMap<String, SvcDeployment>,
    pub faults: Vec<Fault>,
    /// ECS API requests received, per operation (faulted ones included), for `GET /_sim/calls`.
    pub calls: BTreeMap<String, u64>,
    /// Task sets of CODE_DEPLOY and EXTERNAL services, by ARN.
    pub task_sets: BTreeMap<String, crate::tasksets::TaskSet>,
    /// CodeDeploy's applications, deployment groups and deployments.
    pub codedeploy: crate::codedeploy::Store,
}

pub struct Cluster {
    pub arn: String,
    pub name: String,
    pub tags: Value,
    pub settings: Value,
}

pub struct TaskDef {
    /// The full task definition as ECS returns it (input plus read-only fields).
    pub body: Value,
    pub tags: Value,
}

pub struct Fault {
    pub operation: String,
    pub error: String,
    pub message: String,
    pub count: u64,
    /// Instead of an error, something ECS does just before the call is handled (the call then
    /// runs normally): `circuit-breaker` trips the breaker of the service deployment a
    /// StopServiceDeployment names, so the stop meets ECS's own rollback, as in a real race.
    pub effect: Option<String>,
}

#[derive(Clone)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub essential: bool,
    pub has_health_check: bool,
    pub arn: String,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub last_status: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub health_status: String,
}

pub struct Task {
    pub arn: String,
    pub id: String,
    pub ctx: Ctx,
    pub cluster_arn: String,
    pub task_def_arn: String,
    pub service_arn: Option<String>,
    pub deployment_id: Option<String>,
    pub started_by: Option<String>,
    pub group: String,
    pub last_status: String,
    pub desired_status: String,
    pub containers: Vec<Container>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub stopping_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    /// Container (by index) that the load balancer targets, if the service has one.
    pub lb_container: Option<usize>,
    pub lb_healthy: bool,
    pub lb_fail_streak: u32,
    pub draining: bool,
    pub launch_type: String,
    pub cpu: Value,
    pub memory: Value,
    pub version: i64,
    /// Counted against its deployment's failedTasks already.
    pub failure_counted: bool,
    /// Epoch seconds after which a RUNNING task counts as stable for its deployment.
    pub stable_at: f64,
    /// RunTask `overrides` (containerOverrides' command and environment are applied).
    pub overrides: Value,
    /// The rest of a RunTask request (network configuration, platform version, capacity
    /// provider strategy, ...), echoed by DescribeTasks where ECS shows it and by `/_sim/tasks`.
    pub run_request: Value,
}

impl Task {
    pub fn is_live(&self) -> bool {
        self.desired_status == "RUNNING" && self.last_status != "STOPPED"
    }

    /// ECS task health: UNHEALTHY if an essential container is, HEALTHY if all essential
    /// containers with a health check are, otherwise UNKNOWN.
    pub fn health_status(&self) -> &'static str {
        let checked: Vec<&Container> = self.containers.iter().filter(|c| c.essential && c.has_health_check).collect();
        if checked.iter().any(|c| c.health_status == "UNHEALTHY") {
            "UNHEALTHY"
        } else if !checked.is_empty() && checked.iter().all(|c| c.health_status == "HEALTHY") {
            "HEALTHY"
        } else {
            "UNKNOWN"
        }
    }

    /// Counts as healthy for a deployment: running, container checks pass, target healthy.
    pub fn is_healthy(&self) -> bool {
        if !self.is_live() || self.last_status != "RUNNING" || now_epoch() < self.stable_at {
            return false;
        }
        let needs_hc = self.containers.iter().any(|c| c.essential && c.has_health_check);
        if needs_hc && self.health_status() != "HEALTHY" {
            return false;
        }
        self.lb_container.is_none() || self.lb_healthy
    }

    pub fn lb_port(&self) -> Option<u16> {
        self.lb_container.and_then(|i| self.containers.get(i)).and_then(|c| c.port)
    }

    pub fn to_json(&self) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let mut v = json!({
                    "containerArn": c.arn,
                    "taskArn": self.arn,
                    "name": c.name,
                    "image": c.image,
                    "lastStatus": c.last_status,
                    "healthStatus": if c.has_health_check { c.health_status.as_str() } else { "UNKNOWN" },
                    "networkBindings": [],
                    "networkInterfaces": [],
                });
                if let Some(code) = c.exit_code {
                    v["exitCode"] = json!(code);
                }
                if let Some(r) = &c.reason {
                    v["reason"] = json!(r);
                }
                if let (Some(port), Some(pid)) = (c.port, c.pid) {
                    v["runtimeId"] = json!(format!("{}-{pid}", self.id));
                    v["networkBindings"] =
                        json!([{"bindIP":"127.0.0.1","containerPort":port,"hostPort":port,"protocol":"tcp"}]);
                }
                v
            })
            .collect();
        let mut v = json!({
            "taskArn": self.arn,
            "clusterArn": self.cluster_arn,
            "taskDefinitionArn": self.task_def_arn,
            "lastStatus": self.last_status,
            "desiredStatus": self.desired_status,
            "healthStatus": self.health_status(),
            "containers": containers,
            "createdAt": self.created_at,
            "group": self.group,
            "launchType": self.launch_type,
            "availabilityZone": format!("{}a", self.ctx.region),
            "connectivity": if self.started_at.is_some() { "CONNECTED" } else { "DISCONNECTED" },
            "version": self.version,
            "attachments": [],
            "tags": [],
            "overrides": if self.overrides.is_null() { json!({"containerOverrides": [], "inferenceAcceleratorOverrides": []}) } else { self.overrides.clone() },
        });
        if !self.cpu.is_null() {
            v["cpu"] = self.cpu.clone();
        }
        if !self.memory.is_null() {
            v["memory"] = self.memory.clone();
        }
        if let Some(s) = &self.started_by {
            v["startedBy"] = json!(s);
        }
        self.run_request_json(&mut v);
        for (k, t) in [("startedAt", self.started_at), ("stoppingAt", self.stopping_at), ("stoppedAt", self.stopped_at)]
        {
            if let Some(t) = t {
                v[k] = json!(t);
            }
        }
        if let Some(c) = &self.stop_code {
            v["stopCode"] = json!(c);
        }
        if let Some(r) = &self.stopped_reason {
            v["stoppedReason"] = json!(r);
        }
        v
    }
}

impl Task {
    /// What DescribeTasks shows of a RunTask request: the platform version, the capacity
    /// provider, and for awsvpc an ENI attachment in the requested subnet.
    fn run_request_json(&self, v: &mut Value) {
        let r = &self.run_request;
        if let Some(p) = r.get("platformVersion") {
            v["platformVersion"] = p.clone();
        }
        if let Some(cp) = r.pointer("/capacityProviderStrategy/0/capacityProvider") {
            v["capacityProviderName"] = cp.clone();
        }
        if let Some(subnet) = r.pointer("/networkConfiguration/awsvpcConfiguration/subnets/0") {
            v["attachments"] = json!([{
                "id": format!("eni-attachment-{}", self.id),
                "type": "ElasticNetworkInterface",
                "status": if self.last_status == "STOPPED" { "DELETED" } else { "ATTACHED" },
                "details": [
                    {"name": "subnetId", "value": subnet},
                    {"name": "networkInterfaceId", "value": format!("eni-{}", &self.id[..self.id.len().min(17)])},
                    {"name": "privateIPv4Address", "value": "127.0.0.1"},
                ],
            }]);
        }
    }
}

pub struct Deployment {
    pub id: String,
    pub status: String,
    pub task_definition: String,
    pub desired_count: i64,
    pub failed_tasks: i64,
    pub created_at: f64,
    pub updated_at: f64,
    pub rollout_state: String,
    pub rollout_state_reason: String,
    pub revision_arn: String,
    /// The service deployment record this deployment belongs to.
    pub sd_arn: String,
}

pub struct Event {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

#[derive(Clone)]
pub struct ListenerInfo {
    pub url: String,
}

pub struct Service {
    pub arn: String,
    pub name: String,
    pub ctx: Ctx,
    pub cluster_arn: String,
    pub desired_count: i64,
    pub task_definition: String,
    pub deployment_configuration: Value,
    pub load_balancers: Value,
    pub launch_type: String,
    pub network_configuration: Value,
    pub created_at: f64,
    pub deployments: Vec<Deployment>,
    pub events: Vec<Event>,
    pub prod: Option<ListenerInfo>,
    pub test: Option<ListenerInfo>,
    /// Weighted routing by deployment id; None routes to every healthy task (one target group).
    pub prod_weights: Option<Vec<(String, f64)>>,
    pub test_weights: Option<Vec<(String, f64)>>,
    /// Deployment id and task definition of the last deployment that reached COMPLETED.
    pub last_completed: Option<(String, String, String)>,
    pub steady_reported: bool,
    pub status: String,
    pub health_check_grace: f64,
    /// Task failures in a row (reset at steady state) and when the last one happened; the
    /// scheduler backs off launching while the streak is long.
    pub failure_streak: u32,
    pub last_failure_at: f64,
    /// Fields of the CreateService request echoed back as-is (tags, propagateTags, ...).
    pub extra: serde_json::Map<String, Value>,
}

impl Service {
    pub fn cluster_name(&self) -> &str {
        short_name(&self.cluster_arn)
    }

    pub fn strategy(&self) -> String {
        self.deployment_configuration.get("strategy").and_then(Value::as_str).unwrap_or("ROLLING").to_string()
    }

    pub fn is_traffic_shifting(&self) -> bool {
        matches!(self.strategy().as_str(), "BLUE_GREEN" | "CANARY" | "LINEAR")
    }

    pub fn breaker(&self) -> (bool, bool) {
        let b = self.deployment_configuration.get("deploymentCircuitBreaker");
        let enable = b.and_then(|b| b.get("enable")).and_then(Value::as_bool).unwrap_or(false);
        let rollback = b.and_then(|b| b.get("rollback")).and_then(Value::as_bool).unwrap_or(false);
        (enable, rollback)
    }

    pub fn percents(&self) -> (i64, i64) {
        let c = &self.deployment_configuration;
        (
            c.get("minimumHealthyPercent").and_then(Value::as_i64).unwrap_or(100),
            c.get("maximumPercent").and_then(Value::as_i64).unwrap_or(200),
        )
    }

    pub fn target_group_arn(&self) -> String {
        self.load_balancers
            .get(0)
            .and_then(|lb| lb.get("targetGroupArn"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    pub fn has_test_listener(&self) -> bool {
        self.load_balancers
            .as_array()
            .map(|a| a.iter().any(|lb| lb.get("advancedConfiguration").is_some()))
            .unwrap_or(false)
            || ((self.is_traffic_shifting() || crate::tasksets::controller(self) == "CODE_DEPLOY")
                && self.load_balancers.as_array().is_some_and(|a| !a.is_empty()))
    }

    pub fn event(&mut self, message: String) {
        let h = crate::util::hex_id();
        let id = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
        self.events.insert(0, Event { id, created_at: now_epoch(), message });
        self.events.truncate(100);
    }

    pub fn primary_id(&self) -> Option<String> {
        self.deployments.first().map(|d| d.id.clone())
    }
}

pub struct HookDetail {
    pub hook_id: String,
    pub stage: String,
    pub target_type: String,
    pub target_arn: String,
    pub status: String,
    /// When the hook began (epoch seconds), for its timeout.
    pub started_at: f64,
    /// `timeoutConfiguration.timeoutInMinutes` (ECS's default 1440).
    pub timeout_minutes: f64,
    /// `timeoutConfiguration.action`: ROLLBACK (ECS's default) or CONTINUE.
    pub timeout_action: String,
}

/// (test, production) traffic weight of a deployment id, when the service shifts traffic.
pub type WeightsOf<'a> = dyn Fn(&str) -> (Option<f64>, Option<f64>) + 'a;

pub struct SvcDeployment {
    pub arn: String,
    pub ctx: Ctx,
    pub service_arn: String,
    pub cluster_arn: String,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub updated_at: f64,
    /// (revision arn, deployment id, task definition) of what was running before.
    pub sources: Vec<(String, String, String)>,
    pub target: (String, String, String),
    pub status: String,
    pub status_reason: Option<String>,
    pub strategy: String,
    pub deployment_configuration: Value,
    pub lifecycle_stage: Option<String>,
    pub stage_entered: f64,
    pub hooks_created_for_stage: bool,
    pub hooks: Vec<HookDetail>,
    pub step_index: usize,
    pub step_started: f64,
    pub rollback: Option<Value>,
    pub failure_threshold: i64,
    pub breaker_enabled: bool,
    /// A StopServiceDeployment request not yet acted on: "ROLLBACK" or "STOP".
    pub stop_request: Option<String>,
    pub desired_count: i64,
    /// Task failures counted by the circuit breaker for this service deployment.
    pub failure_count: i64,
}

impl SvcDeployment {
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "SUCCESSFUL" | "STOPPED" | "ROLLBACK_SUCCESSFUL" | "ROLLBACK_FAILED")
    }

    pub fn brief(&self) -> Value {
        let mut v = json!({
            "serviceDeploymentArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "createdAt": self.created_at,
            "targetServiceRevisionArn": self.target.0,
            "status": self.status,
        });
        if let Some(t) = self.started_at {
            v["startedAt"] = json!(t);
        }
        if let Some(t) = self.finished_at {
            v["finishedAt"] = json!(t);
        }
        if let Some(r) = &self.status_reason {
            v["statusReason"] = json!(r);
        }
        v
    }

    pub fn to_json(&self, running: &dyn Fn(&str) -> (i64, i64), weights: &WeightsOf<'_>) -> Value {
        let rev = |(arn, dep, _): &(String, String, String), requested: i64| {
            let (run, pend) = running(dep);
            let (test_w, prod_w) = weights(dep);
            let mut r = json!({
                "arn": arn,
                "requestedTaskCount": requested,
                "runningTaskCount": run,
                "pendingTaskCount": pend,
            });
            if let Some(w) = test_w {
                r["requestedTestTrafficWeight"] = json!(w);
            }
            if let Some(w) = prod_w {
                r["requestedProductionTrafficWeight"] = json!(w);
            }
            r
        };
        let mut v = self.brief();
        v.as_object_mut().unwrap().remove("targetServiceRevisionArn");
        v["updatedAt"] = json!(self.updated_at);
        v["sourceServiceRevisions"] = Value::Array(self.sources.iter().map(|s| rev(s, 0)).collect());
        v["targetServiceRevision"] = rev(&self.target, self.desired_count);
        v["deploymentConfiguration"] = self.deployment_configuration.clone();
        v["deploymentCircuitBreaker"] = json!({
            "status": if self.breaker_enabled { if self.is_done() { "DISABLED" } else { "MONITORING" } } else { "DISABLED" },
            "failureCount": self.failure_count,
            "threshold": self.failure_threshold,
        });
        v["alarms"] = json!({"status": "DISABLED"});
        if let Some(stage) = &self.lifecycle_stage {
            v["lifecycleStage"] = json!(stage);
        }
        if !self.hooks.is_empty() {
            v["lifecycleHookDetails"] = Value::Array(
                self.hooks
                    .iter()
                    .map(|h| json!({"hookId": h.hook_id, "targetType": h.target_type, "targetArn": h.target_arn, "status": h.status}))
                    .collect(),
            );
        }
        if let Some(t) = self.stopped_at {
            v["stoppedAt"] = json!(t);
        }
        if let Some(r) = &self.rollback {
            v["rollback"] = r.clone();
        }
        v
    }
}

/// Key of a task definition family in `State::task_defs`.
pub fn family_key(ctx: &Ctx, family: &str) -> String {
    format!("{}:{}:{}", ctx.region, ctx.account, family)
}

impl State {
    /// Finds a task definition by `family`, `family:revision` or ARN (latest ACTIVE for a family).
    pub fn task_def(&self, ctx: &Ctx, ident: &str) -> Option<&TaskDef> {
        let (ctx, rest) = if ident.starts_with("arn:") {
            let parts: Vec<&str> = ident.splitn(6, ':').collect();
            if parts.len() < 6 {
                return None;
            }
            let c = Ctx { region: parts[3].to_string(), account: parts[4].to_string() };
            (c, parts[5].strip_prefix("task-definition/")?.to_string())
        } else {
            (ctx.clone(), ident.to_string())
        };
        let (family, rev) = match rest.rsplit_once(':') {
            Some((f, r)) => (f.to_string(), Some(r.parse::<usize>().ok()?)),
            None => (rest.clone(), None),
        };
        let revs = self.task_defs.get(&family_key(&ctx, &family))?;
        match rev {
            Some(r) if r >= 1 => revs.get(r - 1),
            Some(_) => None,
            None => revs.iter().rev().find(|t| t.body.get("status").and_then(Value::as_str) == Some("ACTIVE")),
        }
    }
}
