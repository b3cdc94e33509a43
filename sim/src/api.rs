//! The ECS JSON 1.1 API: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Op>`.
//! Signatures are not checked; the account comes from a 12-digit access key id in the
//! Authorization header's credential and the region from its scope. Errors are
//! `{"__type": "<ExceptionName>", "message": ...}` with HTTP 400 so aws-sdk-ecs maps them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::Sim;
use crate::engine::{self, Action};
use crate::model::{Cluster, Service, State, TaskDef, family_key};
use crate::proxy::{self, Kind};
use crate::tasks::{self, Origin};
use crate::tasksets;
use crate::util::{Ctx, now_epoch, short_name};

#[derive(Debug)]
pub struct ApiError {
    pub ty: String,
    pub message: String,
}

pub(crate) fn err(ty: &str, message: impl Into<String>) -> ApiError {
    ApiError { ty: ty.into(), message: message.into() }
}

type R = Result<Value, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"__type": self.ty, "message": self.message}).to_string();
        (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/x-amz-json-1.1")], body).into_response()
    }
}

pub async fn handle(AxState(sim): AxState<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let op = target.rsplit('.').next().unwrap_or("").to_string();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !sim.credentials_valid(authorization, &op) {
        return err("ExpiredTokenException", "The security token included in the request is expired").into_response();
    }
    let ctx = sim.request_ctx(authorization).await;
    tracing::debug!(op, account = ctx.account, region = ctx.region, "request");
    *sim.lock().calls.entry(op.clone()).or_default() += 1;
    if !sim.throttle().admit(&ctx.account, &ctx.region, &op, std::time::Instant::now()) {
        return err("ThrottlingException", "Rate exceeded").into_response();
    }
    let effect = match take_fault(&sim, &op) {
        Some(Injected::Error(e)) => return e.into_response(),
        Some(Injected::Effect(effect)) => Some(effect),
        None => None,
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return err("SerializationException", e.to_string()).into_response(),
        }
    };
    if let Some(effect) = effect {
        apply_effect(&sim, &effect, &input);
    }
    match dispatch(&sim, &ctx, &op, &input).await {
        Ok(v) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-amz-json-1.1")], v.to_string()).into_response()
        }
        Err(e) => {
            tracing::debug!(op, ty = e.ty, msg = e.message, "error");
            e.into_response()
        }
    }
}

/// What an injected fault does to one call.
enum Injected {
    /// The call fails with this error.
    Error(ApiError),
    /// Something ECS does first; the call then runs normally.
    Effect(String),
}

fn take_fault(sim: &Sim, op: &str) -> Option<Injected> {
    let mut st = sim.lock();
    let f = st.faults.iter_mut().find(|f| (f.operation == op || f.operation == "*") && f.count > 0)?;
    f.count -= 1;
    let hit = match &f.effect {
        Some(effect) => Injected::Effect(effect.clone()),
        None => Injected::Error(err(&f.error, f.message.clone())),
    };
    st.faults.retain(|f| f.count > 0);
    Some(hit)
}

/// `circuit-breaker`: the breaker of the service deployment the call names trips now, before
/// the call is handled (ECS rolling back by itself while deployer decides to stop it).
fn apply_effect(sim: &Sim, effect: &str, input: &Value) {
    if effect != "circuit-breaker" {
        tracing::warn!(effect, "unknown fault effect ignored");
        return;
    }
    let mut st = sim.lock();
    let Some(sd) = s(input, "serviceDeploymentArn").and_then(|a| st.service_deployments.get(a)) else { return };
    if sd.is_done() {
        return;
    }
    let svc_arn = sd.service_arn.clone();
    engine::begin_rollback(&mut st, &svc_arn, "ECS deployment circuit breaker: tasks failed to start.", true);
}

async fn dispatch(sim: &Arc<Sim>, ctx: &Ctx, op: &str, input: &Value) -> R {
    match op {
        "CreateCluster" => create_cluster(sim, ctx, input),
        "DescribeClusters" => describe_clusters(sim, ctx, input),
        "ListClusters" => {
            let st = sim.lock();
            let arns: Vec<&String> = st.clusters.keys().filter(|a| a.starts_with(&ctx.arn(""))).collect();
            Ok(json!({"clusterArns": arns}))
        }
        "RegisterTaskDefinition" => register_task_definition(sim, ctx, input),
        "DescribeTaskDefinition" => describe_task_definition(sim, ctx, input),
        "DeregisterTaskDefinition" => deregister_task_definition(sim, ctx, input),
        "ListTaskDefinitions" => list_task_definitions(sim, ctx, input),
        "CreateService" => create_service(sim, ctx, input).await,
        "UpdateService" => update_service(sim, ctx, input),
        "DescribeServices" => describe_services(sim, ctx, input),
        "ListServices" => list_services(sim, ctx, input),
        "ListTasks" => list_tasks(sim, ctx, input),
        "DescribeTasks" => describe_tasks(sim, ctx, input),
        "StopTask" => stop_task(sim, ctx, input),
        "RunTask" => run_task(sim, ctx, input),
        "ListServiceDeployments" => list_service_deployments(sim, ctx, input),
        "DescribeServiceDeployments" => describe_service_deployments(sim, input),
        "StopServiceDeployment" => stop_service_deployment(sim, input),
        "ContinueServiceDeployment" => continue_service_deployment(sim, input),
        "CreateTaskSet" => tasksets::create_task_set(sim, ctx, input),
        "UpdateTaskSet" => tasksets::update_task_set(sim, ctx, input),
        "UpdateServicePrimaryTaskSet" => tasksets::update_service_primary_task_set(sim, ctx, input),
        "DeleteTaskSet" => tasksets::delete_task_set(sim, ctx, input),
        "DescribeTaskSets" => tasksets::describe_task_sets(sim, ctx, input),
        "" => Err(err("UnknownOperationException", "missing X-Amz-Target")),
        other => Err(err("UnknownOperationException", format!("ecs-sim does not implement {other}"))),
    }
}

pub(crate) fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn cluster_arn_of(ctx: &Ctx, ident: Option<&str>) -> String {
    let ident = ident.unwrap_or("default");
    if ident.starts_with("arn:") { ident.to_string() } else { ctx.arn(&format!("cluster/{ident}")) }
}

fn find_cluster(st: &State, ctx: &Ctx, input: &Value) -> Result<String, ApiError> {
    let arn = cluster_arn_of(ctx, s(input, "cluster"));
    if st.clusters.contains_key(&arn) { Ok(arn) } else { Err(err("ClusterNotFoundException", "Cluster not found.")) }
}

fn service_arn_of(ctx: &Ctx, cluster_arn: &str, ident: &str) -> String {
    if ident.starts_with("arn:") {
        ident.to_string()
    } else {
        ctx.arn(&format!("service/{}/{ident}", short_name(cluster_arn)))
    }
}

fn cluster_json(st: &State, c: &Cluster) -> Value {
    let (mut running, mut pending) = (0, 0);
    for t in st.tasks.values().filter(|t| t.cluster_arn == c.arn && t.is_live()) {
        if t.last_status == "RUNNING" { running += 1 } else { pending += 1 }
    }
    let services = st.services.values().filter(|s| s.cluster_arn == c.arn && s.status == "ACTIVE").count();
    json!({
        "clusterArn": c.arn,
        "clusterName": c.name,
        "status": "ACTIVE",
        "registeredContainerInstancesCount": 0,
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "activeServicesCount": services,
        "statistics": [],
        "tags": c.tags,
        "settings": c.settings,
        "capacityProviders": [],
        "defaultCapacityProviderStrategy": [],
    })
}

fn create_cluster(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let name = s(input, "clusterName").unwrap_or("default").to_string();
    let arn = ctx.arn(&format!("cluster/{name}"));
    let mut st = sim.lock();
    st.clusters.entry(arn.clone()).or_insert_with(|| Cluster {
        arn: arn.clone(),
        name,
        tags: input.get("tags").cloned().unwrap_or(json!([])),
        settings: input.get("settings").cloned().unwrap_or(json!([{"name": "containerInsights", "value": "disabled"}])),
    });
    let c = &st.clusters[&arn];
    Ok(json!({"cluster": cluster_json(&st, c)}))
}

fn describe_clusters(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let idents: Vec<String> = input
        .get("clusters")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_else(|| vec!["default".into()]);
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for i in idents {
        let arn = cluster_arn_of(ctx, Some(&i));
        match st.clusters.get(&arn) {
            Some(c) => found.push(cluster_json(&st, c)),
            None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
        }
    }
    Ok(json!({"clusters": found, "failures": failures}))
}

fn register_task_definition(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let family = s(input, "family").ok_or_else(|| err("ClientException", "Family is required."))?.to_string();
    let containers = input
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| err("ClientException", "Container definitions are required."))?;
    for c in containers {
        if s(c, "name").is_none() || s(c, "image").is_none() {
            return Err(err("ClientException", "Container.name and Container.image should not be null or empty."));
        }
    }
    let mut body = input.clone();
    let obj = body.as_object_mut().ok_or_else(|| err("ClientException", "input must be an object"))?;
    let tags = obj.remove("tags").unwrap_or(json!([]));
    // Defaults ECS fills into what it returns.
    if let Some(Value::Array(cs)) = obj.get_mut("containerDefinitions") {
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            for (k, v) in [
                ("cpu", json!(0)),
                ("portMappings", json!([])),
                ("essential", json!(true)),
                ("environment", json!([])),
                ("mountPoints", json!([])),
                ("volumesFrom", json!([])),
            ] {
                c.entry(k).or_insert(v);
            }
        }
    }
    obj.entry("volumes").or_insert(json!([]));
    obj.entry("placementConstraints").or_insert(json!([]));
    let mut st = sim.lock();
    let revs = st.task_defs.entry(family_key(ctx, &family)).or_default();
    let revision = revs.len() + 1;
    let arn = ctx.arn(&format!("task-definition/{family}:{revision}"));
    obj.insert("taskDefinitionArn".into(), json!(arn));
    obj.insert("revision".into(), json!(revision));
    obj.insert("status".into(), json!("ACTIVE"));
    obj.insert("requiresAttributes".into(), json!([]));
    obj.insert("compatibilities".into(), json!(["EC2", "FARGATE"]));
    obj.insert("registeredAt".into(), json!(now_epoch()));
    obj.insert("registeredBy".into(), json!(format!("arn:aws:iam::{}:root", ctx.account)));
    revs.push(TaskDef { body: body.clone(), tags: tags.clone() });
    Ok(json!({"taskDefinition": body, "tags": tags}))
}

fn describe_task_definition(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let ident = s(input, "taskDefinition").ok_or_else(|| err("ClientException", "taskDefinition is required."))?;
    let st = sim.lock();
    let td = st.task_def(ctx, ident).ok_or_else(|| err("ClientException", "Unable to describe task definition."))?;
    let mut out = json!({"taskDefinition": td.body});
    let include_tags =
        input.get("include").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v.as_str() == Some("TAGS")));
    if include_tags {
        out["tags"] = td.tags.clone();
    }
    Ok(out)
}

fn deregister_task_definition(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let ident = s(input, "taskDefinition").ok_or_else(|| err("ClientException", "taskDefinition is required."))?;
    if !ident.contains(':') {
        return Err(err("InvalidParameterException", "A revision must be specified (family:revision or ARN)."));
    }
    let mut st = sim.lock();
    let arn = st
        .task_def(ctx, ident)
        .and_then(|t| s(&t.body, "taskDefinitionArn").map(str::to_string))
        .ok_or_else(|| err("ClientException", "The specified task definition does not exist."))?;
    for revs in st.task_defs.values_mut() {
        for t in revs.iter_mut() {
            if s(&t.body, "taskDefinitionArn") == Some(arn.as_str()) {
                t.body["status"] = json!("INACTIVE");
                t.body["deregisteredAt"] = json!(now_epoch());
                return Ok(json!({"taskDefinition": t.body}));
            }
        }
    }
    Err(err("ClientException", "The specified task definition does not exist."))
}

fn list_task_definitions(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let prefix = format!("{}:{}:", ctx.region, ctx.account);
    let family = s(input, "familyPrefix");
    let status = s(input, "status").unwrap_or("ACTIVE");
    let mut arns: Vec<String> = Vec::new();
    for (k, revs) in &st.task_defs {
        let Some(fam) = k.strip_prefix(&prefix) else { continue };
        if family.is_some_and(|f| !fam.starts_with(f)) {
            continue;
        }
        for t in revs {
            if status == "ALL" || s(&t.body, "status") == Some(status) {
                arns.extend(s(&t.body, "taskDefinitionArn").map(str::to_string));
            }
        }
    }
    if s(input, "sort") == Some("DESC") {
        arns.reverse();
    }
    Ok(json!({"taskDefinitionArns": arns}))
}

fn default_deployment_configuration(given: Option<&Value>) -> Value {
    let mut c = given.cloned().filter(Value::is_object).unwrap_or(json!({}));
    let o = c.as_object_mut().unwrap();
    o.entry("maximumPercent").or_insert(json!(200));
    o.entry("minimumHealthyPercent").or_insert(json!(100));
    o.entry("deploymentCircuitBreaker").or_insert(json!({"enable": false, "rollback": false}));
    c
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

pub fn service_json(st: &State, svc: &Service) -> Value {
    let mut running = 0;
    let mut pending = 0;
    let deployments: Vec<Value> = svc
        .deployments
        .iter()
        .map(|d| {
            let (r, p) = engine::running_pending(st, &svc.arn, &d.id);
            running += r;
            pending += p;
            let mut v = json!({
                "id": d.id,
                "status": d.status,
                "taskDefinition": d.task_definition,
                "desiredCount": if d.status == "PRIMARY" { svc.desired_count } else { d.desired_count },
                "pendingCount": p,
                "runningCount": r,
                "failedTasks": d.failed_tasks,
                "createdAt": d.created_at,
                "updatedAt": d.updated_at,
                "rolloutState": d.rollout_state,
                "rolloutStateReason": d.rollout_state_reason,
            });
            if !svc.launch_type.is_empty() {
                v["launchType"] = json!(svc.launch_type);
            }
            if !svc.network_configuration.is_null() {
                v["networkConfiguration"] = svc.network_configuration.clone();
            }
            v
        })
        .collect();
    let events: Vec<Value> =
        svc.events.iter().map(|e| json!({"id": e.id, "createdAt": e.created_at, "message": e.message})).collect();
    let mut v = json!({
        "serviceArn": svc.arn,
        "serviceName": svc.name,
        "clusterArn": svc.cluster_arn,
        "loadBalancers": svc.load_balancers,
        "serviceRegistries": [],
        "status": svc.status,
        "desiredCount": svc.desired_count,
        "runningCount": running,
        "pendingCount": pending,
        "taskDefinition": svc.task_definition,
        "deploymentConfiguration": svc.deployment_configuration,
        "deployments": deployments,
        "events": events,
        "createdAt": svc.created_at,
        "placementConstraints": [],
        "placementStrategy": [],
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"},
        "createdBy": format!("arn:aws:iam::{}:root", svc.ctx.account),
        "enableECSManagedTags": false,
        "propagateTags": "NONE",
        "enableExecuteCommand": false,
        "healthCheckGracePeriodSeconds": svc.health_check_grace as i64,
    });
    if !svc.launch_type.is_empty() {
        v["launchType"] = json!(svc.launch_type);
    }
    if !svc.network_configuration.is_null() {
        v["networkConfiguration"] = svc.network_configuration.clone();
    }
    // The newest service deployment record: the one the last UpdateService started.
    let current = st
        .service_deployments
        .values()
        .filter(|sd| sd.service_arn == svc.arn)
        .max_by(|a, b| a.created_at.total_cmp(&b.created_at));
    if let Some(sd) = current {
        v["currentServiceDeployment"] = json!(sd.arn);
    }
    for (k, val) in &svc.extra {
        v[k] = val.clone();
    }
    tasksets::decorate_service_json(st, svc, &mut v);
    v
}

async fn create_service(sim: &Arc<Sim>, ctx: &Ctx, input: &Value) -> R {
    let name = s(input, "serviceName")
        .ok_or_else(|| err("InvalidParameterException", "serviceName is required."))?
        .to_string();
    let (cluster_arn, svc_arn, td_arn) = {
        let st = sim.lock();
        let cluster_arn = find_cluster(&st, ctx, input)?;
        let svc_arn = service_arn_of(ctx, &cluster_arn, &name);
        if st.services.get(&svc_arn).is_some_and(|s| s.status == "ACTIVE") {
            return Err(err("InvalidParameterException", "Creation of service was not idempotent."));
        }
        let td_ident = s(input, "taskDefinition")
            .ok_or_else(|| err("InvalidParameterException", "taskDefinition is required."))?;
        let td = st.task_def(ctx, td_ident).ok_or_else(|| err("ClientException", "TaskDefinition not found."))?;
        if s(&td.body, "status") != Some("ACTIVE") {
            return Err(err("ClientException", "TaskDefinition is inactive"));
        }
        (cluster_arn, svc_arn, s(&td.body, "taskDefinitionArn").unwrap_or_default().to_string())
    };
    let load_balancers = input.get("loadBalancers").cloned().unwrap_or(json!([]));
    let deployment_configuration = default_deployment_configuration(input.get("deploymentConfiguration"));
    let mut extra = Map::new();
    for k in [
        "tags",
        "propagateTags",
        "enableECSManagedTags",
        "enableExecuteCommand",
        "platformVersion",
        "capacityProviderStrategy",
        "role",
        "serviceConnectConfiguration",
        "availabilityZoneRebalancing",
        "deploymentController",
    ] {
        if let Some(v) = input.get(k) {
            extra.insert(if k == "role" { "roleArn".into() } else { k.to_string() }, v.clone());
        }
    }
    let launch_type = match s(input, "launchType") {
        Some(l) => l.to_string(),
        None if input.get("capacityProviderStrategy").is_some() => String::new(),
        None => "EC2".to_string(),
    };
    let mut svc = Service {
        arn: svc_arn.clone(),
        name: name.clone(),
        ctx: ctx.clone(),
        cluster_arn,
        desired_count: input.get("desiredCount").and_then(Value::as_i64).unwrap_or(0),
        task_definition: td_arn.clone(),
        deployment_configuration,
        load_balancers,
        launch_type,
        network_configuration: input.get("networkConfiguration").cloned().unwrap_or(Value::Null),
        created_at: now_epoch(),
        deployments: Vec::new(),
        events: Vec::new(),
        prod: None,
        test: None,
        prod_weights: None,
        test_weights: None,
        last_completed: None,
        steady_reported: false,
        status: "ACTIVE".into(),
        health_check_grace: input.get("healthCheckGracePeriodSeconds").and_then(Value::as_f64).unwrap_or(0.0),
        failure_streak: 0,
        last_failure_at: 0.0,
        extra,
    };
    let mut handles = Vec::new();
    if svc.load_balancers.as_array().is_some_and(|a| !a.is_empty()) {
        let (info, h) = proxy::start(sim.clone(), &svc_arn, Kind::Production)
            .await
            .map_err(|e| err("ServerException", e.to_string()))?;
        svc.prod = Some(info);
        handles.push(h);
        if svc.has_test_listener() {
            let (info, h) = proxy::start(sim.clone(), &svc_arn, Kind::Test)
                .await
                .map_err(|e| err("ServerException", e.to_string()))?;
            svc.test = Some(info);
            handles.push(h);
        }
    }
    if let Some(old) = sim.listeners.lock().unwrap_or_else(|e| e.into_inner()).insert(svc_arn.clone(), handles) {
        for h in old {
            h.abort();
        }
    }
    let mut st = sim.lock();
    let task_sets = tasksets::uses_task_sets(&svc);
    st.services.insert(svc_arn.clone(), svc);
    if task_sets {
        tasksets::on_create_service(&mut st, &svc_arn, &td_arn);
    } else {
        engine::start_deployment(&mut st, &svc_arn, &td_arn);
    }
    let svc = &st.services[&svc_arn];
    Ok(json!({"service": service_json(&st, svc)}))
}

pub(crate) fn find_service<'a>(st: &'a State, ctx: &Ctx, input: &Value) -> Result<&'a Service, ApiError> {
    let cluster_arn = find_cluster(st, ctx, input)?;
    let ident = s(input, "service").ok_or_else(|| err("InvalidParameterException", "service is required."))?;
    let arn = service_arn_of(ctx, &cluster_arn, ident);
    st.services.get(&arn).ok_or_else(|| err("ServiceNotFoundException", "Service not found."))
}

fn update_service(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let svc = find_service(&st, ctx, input)?;
    if svc.status != "ACTIVE" {
        return Err(err("ServiceNotActiveException", "Service was not ACTIVE."));
    }
    let svc_arn = svc.arn.clone();
    let mut new_td = None;
    if let Some(ident) = s(input, "taskDefinition") {
        let td = st.task_def(ctx, ident).ok_or_else(|| err("ClientException", "TaskDefinition not found."))?;
        if s(&td.body, "status") != Some("ACTIVE") {
            return Err(err("ClientException", "TaskDefinition is inactive"));
        }
        new_td = s(&td.body, "taskDefinitionArn").map(str::to_string);
    }
    let force = input.get("forceNewDeployment").and_then(Value::as_bool).unwrap_or(false);
    if tasksets::uses_task_sets(&st.services[&svc_arn]) {
        let controller = tasksets::controller(&st.services[&svc_arn]).to_string();
        if new_td.is_some() || force {
            let what = if force { "force a new deployment" } else { "update task definition" };
            let how = if controller == "CODE_DEPLOY" {
                "Use AWS CodeDeploy to trigger a new deployment."
            } else {
                "Create a task set instead."
            };
            return Err(err(
                "InvalidParameterException",
                format!("Unable to {what} on services with a {controller} deployment controller. {how}"),
            ));
        }
    }
    let svc = st.services.get_mut(&svc_arn).unwrap();
    if let Some(n) = input.get("desiredCount").and_then(Value::as_i64) {
        if n != svc.desired_count {
            svc.desired_count = n;
            svc.steady_reported = false;
            if let Some(d) = svc.deployments.first_mut() {
                d.desired_count = n;
            }
        }
    }
    if let Some(c) = input.get("deploymentConfiguration") {
        merge(&mut svc.deployment_configuration, c);
    }
    if let Some(g) = input.get("healthCheckGracePeriodSeconds").and_then(Value::as_f64) {
        svc.health_check_grace = g;
    }
    if let Some(n) = input.get("networkConfiguration") {
        svc.network_configuration = n.clone();
    }
    let target = new_td.clone().unwrap_or_else(|| svc.task_definition.clone());
    if force || new_td.is_some_and(|t| t != svc.task_definition) {
        engine::start_deployment(&mut st, &svc_arn, &target);
    }
    let svc = &st.services[&svc_arn];
    Ok(json!({"service": service_json(&st, svc)}))
}

fn describe_services(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let cluster_arn = find_cluster(&st, ctx, input)?;
    let include_tags =
        input.get("include").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v.as_str() == Some("TAGS")));
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for ident in input.get("services").and_then(Value::as_array).cloned().unwrap_or_default() {
        let Some(ident) = ident.as_str() else { continue };
        let arn = service_arn_of(ctx, &cluster_arn, ident);
        match st.services.get(&arn) {
            Some(svc) => {
                let mut v = service_json(&st, svc);
                if !include_tags {
                    v.as_object_mut().unwrap().remove("tags");
                }
                found.push(v)
            }
            None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
        }
    }
    Ok(json!({"services": found, "failures": failures}))
}

fn list_services(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let cluster_arn = find_cluster(&st, ctx, input)?;
    let arns: Vec<&String> =
        st.services.values().filter(|s| s.cluster_arn == cluster_arn && s.status == "ACTIVE").map(|s| &s.arn).collect();
    Ok(json!({"serviceArns": arns}))
}

fn list_tasks(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let cluster_arn = find_cluster(&st, ctx, input)?;
    let svc_arn = match s(input, "serviceName") {
        Some(n) => {
            let arn = service_arn_of(ctx, &cluster_arn, n);
            if !st.services.contains_key(&arn) {
                return Err(err("ServiceNotFoundException", "Service not found."));
            }
            Some(arn)
        }
        None => None,
    };
    let desired = s(input, "desiredStatus").unwrap_or("RUNNING");
    let family = s(input, "family");
    let started_by = s(input, "startedBy");
    let arns: Vec<&String> = st
        .tasks
        .values()
        .filter(|t| t.cluster_arn == cluster_arn && t.desired_status == desired)
        .filter(|t| svc_arn.is_none() || t.service_arn == svc_arn)
        .filter(|t| started_by.is_none() || t.started_by.as_deref() == started_by)
        .filter(|t| family.is_none_or(|f| short_name(&t.task_def_arn).split(':').next() == Some(f)))
        .map(|t| &t.arn)
        .collect();
    Ok(json!({"taskArns": arns}))
}

fn task_arn_of(ctx: &Ctx, cluster_arn: &str, ident: &str) -> String {
    if ident.starts_with("arn:") {
        ident.to_string()
    } else {
        ctx.arn(&format!("task/{}/{ident}", short_name(cluster_arn)))
    }
}

fn describe_tasks(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let cluster_arn = find_cluster(&st, ctx, input)?;
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for ident in input.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default() {
        let Some(ident) = ident.as_str() else { continue };
        let arn = task_arn_of(ctx, &cluster_arn, ident);
        match st.tasks.get(&arn) {
            Some(t) => found.push(t.to_json()),
            None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
        }
    }
    Ok(json!({"tasks": found, "failures": failures}))
}

fn stop_task(sim: &Arc<Sim>, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let cluster_arn = find_cluster(&st, ctx, input)?;
    let ident = s(input, "task").ok_or_else(|| err("InvalidParameterException", "task is required."))?;
    let arn = task_arn_of(ctx, &cluster_arn, ident);
    if !st.tasks.contains_key(&arn) {
        return Err(err("InvalidParameterException", "The referenced task was not found."));
    }
    let reason = s(input, "reason").unwrap_or("Task stopped by user").to_string();
    let job = tasks::begin_stop(&mut st, &arn, "UserInitiated", reason);
    let out = json!({"task": st.tasks[&arn].to_json()});
    drop(st);
    if let Some(job) = job {
        engine::execute(sim, vec![Action::Stop(job)]);
    }
    Ok(out)
}

fn run_task(sim: &Arc<Sim>, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let cluster_arn = find_cluster(&st, ctx, input)?;
    let ident =
        s(input, "taskDefinition").ok_or_else(|| err("InvalidParameterException", "taskDefinition is required."))?;
    let td = st.task_def(ctx, ident).ok_or_else(|| err("ClientException", "TaskDefinition not found."))?;
    let td_arn = s(&td.body, "taskDefinitionArn").unwrap_or_default().to_string();
    let family = s(&td.body, "family").unwrap_or_default().to_string();
    let count = input.get("count").and_then(Value::as_i64).unwrap_or(1).clamp(1, 10);
    let mut actions = Vec::new();
    let mut arns = Vec::new();
    for _ in 0..count {
        let origin = Origin {
            service_arn: None,
            deployment_id: None,
            started_by: s(input, "startedBy").map(str::to_string),
            group: s(input, "group").map(str::to_string).unwrap_or_else(|| format!("family:{family}")),
            lb_container_name: None,
            launch_type: s(input, "launchType").unwrap_or("EC2").to_string(),
        };
        if let Some(arn) = tasks::create_task(&mut st, ctx, &cluster_arn, &td_arn, origin) {
            if let Some(t) = st.tasks.get_mut(&arn) {
                if let Some(o) = input.get("overrides") {
                    t.overrides = o.clone();
                }
                t.run_request = run_request(input);
            }
            actions.push(Action::Launch(arn.clone()));
            arns.push(arn);
        }
    }
    let tasks: Vec<Value> = arns.iter().map(|a| st.tasks[a].to_json()).collect();
    drop(st);
    engine::execute(sim, actions);
    Ok(json!({"tasks": tasks, "failures": []}))
}

/// The parts of a RunTask request a task keeps (everything but its overrides and count).
fn run_request(input: &Value) -> Value {
    let mut v = input.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("overrides");
        o.remove("count");
    }
    v
}

fn sd_view(st: &State, arn: &str) -> Option<Value> {
    let sd = st.service_deployments.get(arn)?;
    let svc = st.services.get(&sd.service_arn);
    let running = |dep: &str| engine::running_pending(st, &sd.service_arn, dep);
    let weights = |dep: &str| -> (Option<f64>, Option<f64>) {
        let Some(svc) = svc else { return (None, None) };
        let w = |ws: &Option<Vec<(String, f64)>>| {
            ws.as_ref().map(|ws| ws.iter().find(|x| x.0 == dep).map(|x| x.1).unwrap_or(0.0))
        };
        if svc.is_traffic_shifting() { (w(&svc.test_weights), w(&svc.prod_weights)) } else { (None, None) }
    };
    Some(sd.to_json(&running, &weights))
}

fn list_service_deployments(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let svc = find_service(&st, ctx, &json!({"cluster": input.get("cluster"), "service": input.get("service")}))?;
    let after = input.pointer("/createdAt/after").and_then(Value::as_f64);
    let before = input.pointer("/createdAt/before").and_then(Value::as_f64);
    let statuses: Option<Vec<String>> = input
        .get("status")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
    let mut v: Vec<&crate::model::SvcDeployment> = st
        .service_deployments
        .values()
        .filter(|sd| sd.service_arn == svc.arn)
        .filter(|sd| statuses.as_ref().is_none_or(|ss| ss.contains(&sd.status)))
        .filter(|sd| after.is_none_or(|a| sd.created_at >= a) && before.is_none_or(|b| sd.created_at <= b))
        .collect();
    v.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    let max = input.get("maxResults").and_then(Value::as_u64).unwrap_or(20) as usize;
    let briefs: Vec<Value> = v.iter().take(max.max(1)).map(|sd| sd.brief()).collect();
    Ok(json!({"serviceDeployments": briefs}))
}

fn describe_service_deployments(sim: &Sim, input: &Value) -> R {
    let st = sim.lock();
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for a in input.get("serviceDeploymentArns").and_then(Value::as_array).cloned().unwrap_or_default() {
        let Some(a) = a.as_str() else { continue };
        match sd_view(&st, a) {
            Some(v) => found.push(v),
            None => failures.push(json!({"arn": a, "reason": "MISSING"})),
        }
    }
    Ok(json!({"serviceDeployments": found, "failures": failures}))
}

fn stop_service_deployment(sim: &Sim, input: &Value) -> R {
    let arn = s(input, "serviceDeploymentArn")
        .ok_or_else(|| err("InvalidParameterException", "serviceDeploymentArn is required."))?;
    let stop_type = s(input, "stopType").unwrap_or("ROLLBACK").to_string();
    let mut st = sim.lock();
    let sd = st
        .service_deployments
        .get_mut(arn)
        .ok_or_else(|| err("ServiceDeploymentNotFoundException", "The service deployment does not exist."))?;
    if !matches!(sd.status.as_str(), "PENDING" | "IN_PROGRESS") {
        return Err(err(
            "ConflictException",
            format!("The service deployment is {} and cannot be stopped.", sd.status),
        ));
    }
    sd.status = if stop_type == "ROLLBACK" { "ROLLBACK_REQUESTED".into() } else { "STOP_REQUESTED".into() };
    sd.stop_request = Some(stop_type);
    sd.updated_at = now_epoch();
    Ok(json!({"serviceDeploymentArn": arn}))
}

fn continue_service_deployment(sim: &Sim, input: &Value) -> R {
    let arn = s(input, "serviceDeploymentArn")
        .ok_or_else(|| err("InvalidParameterException", "serviceDeploymentArn is required."))?;
    let hook_id = s(input, "hookId");
    let action = s(input, "action").unwrap_or("CONTINUE");
    let mut st = sim.lock();
    let sd = st
        .service_deployments
        .get_mut(arn)
        .ok_or_else(|| err("ServiceDeploymentNotFoundException", "The service deployment does not exist."))?;
    let mut n = 0;
    for h in sd.hooks.iter_mut().filter(|h| h.status == "AWAITING_ACTION") {
        if hook_id.is_none_or(|id| id == h.hook_id) {
            h.status = if action == "ROLLBACK" { "FAILED".into() } else { "SUCCEEDED".into() };
            n += 1;
        }
    }
    if n == 0 {
        return Err(err(
            "InvalidParameterException",
            "No lifecycle hook of this service deployment is awaiting action.",
        ));
    }
    if action == "ROLLBACK" {
        sd.status = "ROLLBACK_REQUESTED".into();
        sd.stop_request = Some("ROLLBACK".into());
    }
    sd.updated_at = now_epoch();
    Ok(json!({"serviceDeploymentArn": arn}))
}
