//! Task sets: what a service under the CODE_DEPLOY or EXTERNAL deployment controller runs
//! instead of `deployments`. Each task set is the tasks of one task definition, scaled to a
//! percentage of the service's desired count; one is PRIMARY (its task definition is the
//! service's), others ACTIVE, and a deleted one DRAINING until its tasks are gone. This module
//! keeps them (`State::task_sets`), renders them (`taskSets` in DescribeServices, an empty
//! `deployments`), serves the task set API (CreateTaskSet, UpdateTaskSet,
//! UpdateServicePrimaryTaskSet, DeleteTaskSet, DescribeTaskSets — for EXTERNAL services, as
//! ECS allows) and keeps each task set's tasks running (`tick`). For CODE_DEPLOY services the
//! sim's CodeDeploy (`codedeploy`) creates, promotes and deletes them through the same
//! functions.

use serde_json::{Value, json};

use crate::Sim;
use crate::api::{ApiError, err, find_service, s};
use crate::engine::{self, Action};
use crate::model::{Service, State};
use crate::rolling;
use crate::tasks::{self, Origin};
use crate::util::{Ctx, deployment_id, now_epoch, short_name};

pub struct TaskSet {
    pub id: String,
    pub arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub external_id: Option<String>,
    pub started_by: Option<String>,
    /// PRIMARY, ACTIVE or DRAINING.
    pub status: String,
    pub task_definition: String,
    /// Percent of the service's desired count.
    pub scale: f64,
    pub load_balancers: Value,
    pub network_configuration: Value,
    pub launch_type: String,
    pub capacity_provider_strategy: Value,
    pub platform_version: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    /// STEADY_STATE or STABILIZING.
    pub stability_status: String,
    pub stability_status_at: f64,
}

/// What a new task set is made of.
pub struct Spec {
    pub task_definition: String,
    pub external_id: Option<String>,
    pub started_by: Option<String>,
    pub scale: f64,
    pub load_balancers: Value,
    pub network_configuration: Value,
    pub launch_type: String,
    pub capacity_provider_strategy: Value,
    pub platform_version: Option<String>,
    pub primary: bool,
}

/// The service's deployment controller type (ECS when none was given).
pub fn controller(svc: &Service) -> &str {
    svc.extra.get("deploymentController").and_then(|c| c.get("type")).and_then(Value::as_str).unwrap_or("ECS")
}

/// CODE_DEPLOY and EXTERNAL services run task sets, not deployments.
pub fn uses_task_sets(svc: &Service) -> bool {
    matches!(controller(svc), "CODE_DEPLOY" | "EXTERNAL")
}

/// Tasks a task set runs: its scale of the service's desired count, rounded up.
pub fn computed_desired(desired: i64, scale: f64) -> i64 {
    ((desired.max(0) as f64) * scale.clamp(0.0, 100.0) / 100.0).ceil() as i64
}

/// The service's task sets, PRIMARY first, then newest first.
pub fn of_service<'a>(st: &'a State, svc_arn: &str) -> Vec<&'a TaskSet> {
    let mut v: Vec<&TaskSet> = st.task_sets.values().filter(|t| t.service_arn == svc_arn).collect();
    v.sort_by(|a, b| (b.status == "PRIMARY").cmp(&(a.status == "PRIMARY")).then(b.created_at.total_cmp(&a.created_at)));
    v
}

/// The task set with `id` (or ARN) of the service.
pub fn find<'a>(st: &'a State, svc_arn: &str, ident: &str) -> Option<&'a TaskSet> {
    st.task_sets.values().find(|t| t.service_arn == svc_arn && (t.id == ident || t.arn == ident))
}

/// Adds a task set to the service; its tasks start on the next tick. Returns its id.
pub fn create(st: &mut State, svc_arn: &str, spec: Spec) -> Option<String> {
    let now = now_epoch();
    let svc = st.services.get(svc_arn)?;
    let id = deployment_id();
    let arn = svc.ctx.arn(&format!("task-set/{}/{}/{id}", svc.cluster_name(), svc.name));
    let ts = TaskSet {
        id: id.clone(),
        arn: arn.clone(),
        service_arn: svc_arn.to_string(),
        cluster_arn: svc.cluster_arn.clone(),
        external_id: spec.external_id,
        started_by: spec.started_by,
        status: "ACTIVE".into(),
        task_definition: spec.task_definition,
        scale: spec.scale.clamp(0.0, 100.0),
        load_balancers: spec.load_balancers,
        network_configuration: spec.network_configuration,
        launch_type: spec.launch_type,
        capacity_provider_strategy: spec.capacity_provider_strategy,
        platform_version: spec.platform_version,
        created_at: now,
        updated_at: now,
        stability_status: "STABILIZING".into(),
        stability_status_at: now,
    };
    st.task_sets.insert(arn, ts);
    if spec.primary {
        set_primary(st, svc_arn, &id);
    }
    if let Some(svc) = st.services.get_mut(svc_arn) {
        svc.steady_reported = false;
    }
    Some(id)
}

/// A CODE_DEPLOY service starts with one PRIMARY task set of its task definition; an
/// EXTERNAL one with none (its controller creates them).
pub fn on_create_service(st: &mut State, svc_arn: &str, task_definition: &str) {
    let Some(svc) = st.services.get(svc_arn) else { return };
    if controller(svc) != "CODE_DEPLOY" {
        return;
    }
    let spec = Spec {
        task_definition: task_definition.to_string(),
        external_id: None,
        started_by: None,
        scale: 100.0,
        load_balancers: svc.load_balancers.clone(),
        network_configuration: svc.network_configuration.clone(),
        launch_type: svc.launch_type.clone(),
        capacity_provider_strategy: svc.extra.get("capacityProviderStrategy").cloned().unwrap_or(json!([])),
        platform_version: svc.extra.get("platformVersion").and_then(Value::as_str).map(str::to_string),
        primary: true,
    };
    create(st, svc_arn, spec);
}

/// Makes `id` the PRIMARY task set (the one before it becomes ACTIVE); the service's task
/// definition becomes its.
pub fn set_primary(st: &mut State, svc_arn: &str, id: &str) -> bool {
    let now = now_epoch();
    let Some(td) = find(st, svc_arn, id).map(|t| t.task_definition.clone()) else { return false };
    for t in st.task_sets.values_mut().filter(|t| t.service_arn == svc_arn) {
        let status = if t.id == id {
            "PRIMARY"
        } else if t.status == "PRIMARY" {
            "ACTIVE"
        } else {
            continue;
        };
        t.status = status.into();
        t.updated_at = now;
    }
    if let Some(svc) = st.services.get_mut(svc_arn) {
        svc.task_definition = td;
        svc.steady_reported = false;
    }
    true
}

/// Deletes a task set: DRAINING, scaled to zero; it disappears once its tasks are gone.
pub fn delete(st: &mut State, svc_arn: &str, id: &str) {
    let now = now_epoch();
    if let Some(t) = st.task_sets.values_mut().find(|t| t.service_arn == svc_arn && t.id == id) {
        t.status = "DRAINING".into();
        t.scale = 0.0;
        t.updated_at = now;
    }
}

/// Tasks of a task set that failed (they count toward CodeDeploy's verdict).
pub fn failed_tasks(st: &State, svc_arn: &str, id: &str) -> i64 {
    st.tasks
        .values()
        .filter(|t| t.service_arn.as_deref() == Some(svc_arn) && t.deployment_id.as_deref() == Some(id))
        .filter(|t| t.failure_counted)
        .count() as i64
}

/// Production traffic weight of a task set, in percent: the service's weights when it has
/// them, else 100 for the PRIMARY task set.
pub fn traffic_weight(svc: &Service, ts: &TaskSet) -> f64 {
    match &svc.prod_weights {
        Some(w) => w.iter().find(|x| x.0 == ts.id).map(|x| x.1).unwrap_or(0.0),
        None if ts.status == "PRIMARY" => 100.0,
        None => 0.0,
    }
}

pub fn to_json(st: &State, ts: &TaskSet) -> Value {
    let desired = st.services.get(&ts.service_arn).map(|s| s.desired_count).unwrap_or(0);
    let (running, pending) = engine::running_pending(st, &ts.service_arn, &ts.id);
    let mut v = json!({
        "id": ts.id,
        "taskSetArn": ts.arn,
        "serviceArn": ts.service_arn,
        "clusterArn": ts.cluster_arn,
        "status": ts.status,
        "taskDefinition": ts.task_definition,
        "computedDesiredCount": computed_desired(desired, ts.scale),
        "pendingCount": pending,
        "runningCount": running,
        "createdAt": ts.created_at,
        "updatedAt": ts.updated_at,
        "loadBalancers": ts.load_balancers,
        "serviceRegistries": [],
        "scale": {"value": ts.scale, "unit": "PERCENT"},
        "stabilityStatus": ts.stability_status,
        "stabilityStatusAt": ts.stability_status_at,
        "tags": [],
    });
    for (k, val) in [("externalId", ts.external_id.as_ref()), ("startedBy", ts.started_by.as_ref())] {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    if !ts.launch_type.is_empty() {
        v["launchType"] = json!(ts.launch_type);
    }
    if ts.capacity_provider_strategy.as_array().is_some_and(|a| !a.is_empty()) {
        v["capacityProviderStrategy"] = ts.capacity_provider_strategy.clone();
    }
    if let Some(p) = &ts.platform_version {
        v["platformVersion"] = json!(p);
    }
    if !ts.network_configuration.is_null() {
        v["networkConfiguration"] = ts.network_configuration.clone();
    }
    v
}

/// DescribeServices of a task-set service: `taskSets`, an empty `deployments` (as ECS
/// returns for CODE_DEPLOY), counts summed over the task sets.
pub fn decorate_service_json(st: &State, svc: &Service, v: &mut Value) {
    if !uses_task_sets(svc) {
        return;
    }
    let sets = of_service(st, &svc.arn);
    let (mut running, mut pending) = (0, 0);
    for t in &sets {
        let (r, p) = engine::running_pending(st, &svc.arn, &t.id);
        running += r;
        pending += p;
    }
    v["taskSets"] = Value::Array(sets.iter().map(|t| to_json(st, t)).collect());
    v["deployments"] = json!([]);
    v["runningCount"] = json!(running);
    v["pendingCount"] = json!(pending);
}

/// One scheduler step of a task-set service: each task set runs its computed desired count
/// (a DRAINING one none, and it is removed once empty), failed tasks are replaced (with the
/// same launch back-off as rolling services), stability is recorded.
pub fn tick(sim: &Sim, st: &mut State, svc_arn: &str, actions: &mut Vec<Action>) {
    let now = now_epoch();
    let Some(svc) = st.services.get(svc_arn) else { return };
    let desired = svc.desired_count;
    let backoff = sim.scale.secs(rolling::launch_backoff_secs(svc.failure_streak)).as_secs_f64();
    let throttled = svc.failure_streak >= rolling::STREAK_BEFORE_BACKOFF && now - svc.last_failure_at < backoff;
    let ids: Vec<(String, String, f64)> =
        of_service(st, svc_arn).iter().map(|t| (t.id.clone(), t.status.clone(), t.scale)).collect();
    let mut all_steady = !ids.is_empty();
    for (id, status, scale) in ids {
        let want = if status == "DRAINING" { 0 } else { computed_desired(desired, scale) };
        let c = engine::counts(st, svc_arn, &id);
        if c.live < want && !throttled {
            start(st, svc_arn, &id, want - c.live, actions);
        } else if c.live > want {
            let surplus = pick_surplus(st, svc_arn, &id, c.live - want);
            let reason = format!("Scaling activity initiated by (deployment {id})");
            engine::stop_tasks(st, svc_arn, &surplus, "ServiceSchedulerInitiated", &reason, actions);
        }
        let c = engine::counts(st, svc_arn, &id);
        let steady = c.live == want && c.healthy == want;
        all_steady &= steady;
        let live_any = st.tasks.values().any(|t| {
            t.service_arn.as_deref() == Some(svc_arn) && t.deployment_id.as_deref() == Some(&id) && t.is_live()
        });
        if status == "DRAINING" && !live_any {
            st.task_sets.retain(|_, t| !(t.service_arn == svc_arn && t.id == id));
            continue;
        }
        let state = if steady { "STEADY_STATE" } else { "STABILIZING" };
        if let Some(t) = st.task_sets.values_mut().find(|t| t.service_arn == svc_arn && t.id == id)
            && t.stability_status != state
        {
            t.stability_status = state.into();
            t.stability_status_at = now;
        }
    }
    let single = of_service(st, svc_arn).len() == 1;
    if let Some(svc) = st.services.get_mut(svc_arn)
        && all_steady
        && single
    {
        svc.failure_streak = 0;
        if !svc.steady_reported {
            svc.steady_reported = true;
            let msg = format!("(service {}) has reached a steady state.", svc.name);
            svc.event(msg);
        }
    }
}

/// The live tasks of a task set to stop first: unhealthy, then oldest.
fn pick_surplus(st: &State, svc_arn: &str, id: &str, n: i64) -> Vec<String> {
    let mut v: Vec<(&String, bool, f64)> = st
        .tasks
        .values()
        .filter(|t| t.service_arn.as_deref() == Some(svc_arn) && t.deployment_id.as_deref() == Some(id) && t.is_live())
        .map(|t| (&t.arn, t.is_healthy(), t.created_at))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)));
    v.into_iter().take(n.max(0) as usize).map(|x| x.0.clone()).collect()
}

/// Starts `n` tasks of a task set, with ECS's event naming the task set.
fn start(st: &mut State, svc_arn: &str, id: &str, n: i64, actions: &mut Vec<Action>) {
    let Some(svc) = st.services.get(svc_arn) else { return };
    let Some(ts) = find(st, svc_arn, id) else { return };
    let (ctx, cluster, td) = (svc.ctx.clone(), svc.cluster_arn.clone(), ts.task_definition.clone());
    let lb_container =
        ts.load_balancers.get(0).map(|lb| lb.get("containerName").and_then(Value::as_str).unwrap_or("").to_string());
    let (group, launch_type) = (format!("service:{}", svc.name), ts.launch_type.clone());
    let mut started = Vec::new();
    for _ in 0..n {
        let origin = Origin {
            service_arn: Some(svc_arn.to_string()),
            deployment_id: Some(id.to_string()),
            started_by: Some(id.to_string()),
            group: group.clone(),
            lb_container_name: lb_container.clone(),
            launch_type: if launch_type.is_empty() { "FARGATE".into() } else { launch_type.clone() },
        };
        if let Some(arn) = tasks::create_task(st, &ctx, &cluster, &td, origin) {
            actions.push(Action::Launch(arn.clone()));
            started.push(arn);
        }
    }
    if let Some(svc) = st.services.get_mut(svc_arn) {
        svc.steady_reported = false;
        let ids: Vec<String> = started.iter().map(|a| format!("(task {})", short_name(a))).collect();
        let msg =
            format!("(service {}, taskSet {id}) has started {} tasks: {}.", svc.name, started.len(), ids.join(" "));
        svc.event(msg);
    }
}

type R = Result<Value, ApiError>;

/// The service of a task set request, which must use the EXTERNAL controller.
fn external_service(st: &State, ctx: &Ctx, input: &Value) -> Result<String, ApiError> {
    let svc = find_service(st, ctx, input)?;
    match controller(svc) {
        "EXTERNAL" => Ok(svc.arn.clone()),
        "CODE_DEPLOY" => Err(err(
            "InvalidParameterException",
            "The service uses the CODE_DEPLOY deployment controller: CodeDeploy manages its task sets; create a CodeDeploy deployment instead.",
        )),
        _ => Err(err(
            "InvalidParameterException",
            "Task sets are only supported for services that use the EXTERNAL deployment controller.",
        )),
    }
}

fn scale_of(input: &Value) -> Result<f64, ApiError> {
    let Some(scale) = input.get("scale") else { return Ok(100.0) };
    if scale.get("unit").and_then(Value::as_str).is_some_and(|u| u != "PERCENT") {
        return Err(err("InvalidParameterException", "scale.unit must be PERCENT."));
    }
    let value = scale.get("value").and_then(Value::as_f64).unwrap_or(0.0);
    if !(0.0..=100.0).contains(&value) {
        return Err(err("InvalidParameterException", "scale.value must be between 0 and 100."));
    }
    Ok(value)
}

fn task_set_of<'a>(st: &'a State, svc_arn: &str, input: &Value, key: &str) -> Result<&'a TaskSet, ApiError> {
    let ident = s(input, key).ok_or_else(|| err("InvalidParameterException", format!("{key} is required.")))?;
    find(st, svc_arn, ident).ok_or_else(|| err("TaskSetNotFoundException", "The specified task set does not exist."))
}

pub fn create_task_set(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let svc_arn = external_service(&st, ctx, input)?;
    let ident =
        s(input, "taskDefinition").ok_or_else(|| err("InvalidParameterException", "taskDefinition is required."))?;
    let td = st.task_def(ctx, ident).ok_or_else(|| err("ClientException", "TaskDefinition not found."))?;
    if s(&td.body, "status") != Some("ACTIVE") {
        return Err(err("ClientException", "TaskDefinition is inactive"));
    }
    let td_arn = s(&td.body, "taskDefinitionArn").unwrap_or_default().to_string();
    let spec = Spec {
        task_definition: td_arn,
        external_id: s(input, "externalId").map(str::to_string),
        started_by: None,
        scale: scale_of(input)?,
        load_balancers: input.get("loadBalancers").cloned().unwrap_or(json!([])),
        network_configuration: input.get("networkConfiguration").cloned().unwrap_or(Value::Null),
        launch_type: s(input, "launchType").unwrap_or_default().to_string(),
        capacity_provider_strategy: input.get("capacityProviderStrategy").cloned().unwrap_or(json!([])),
        platform_version: s(input, "platformVersion").map(str::to_string),
        primary: !st.task_sets.values().any(|t| t.service_arn == svc_arn),
    };
    let id = create(&mut st, &svc_arn, spec).ok_or_else(|| err("ServiceNotFoundException", "Service not found."))?;
    let ts = find(&st, &svc_arn, &id).ok_or_else(|| err("ServerException", "task set vanished"))?;
    Ok(json!({"taskSet": to_json(&st, ts)}))
}

pub fn update_task_set(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let svc_arn = external_service(&st, ctx, input)?;
    let scale = scale_of(input)?;
    let id = task_set_of(&st, &svc_arn, input, "taskSet")?.id.clone();
    if let Some(t) = st.task_sets.values_mut().find(|t| t.service_arn == svc_arn && t.id == id) {
        t.scale = scale;
        t.updated_at = now_epoch();
    }
    let ts = task_set_of(&st, &svc_arn, input, "taskSet")?;
    Ok(json!({"taskSet": to_json(&st, ts)}))
}

pub fn update_service_primary_task_set(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let svc_arn = external_service(&st, ctx, input)?;
    let ts = task_set_of(&st, &svc_arn, input, "primaryTaskSet")?;
    if ts.status == "DRAINING" {
        return Err(err("InvalidParameterException", "A DRAINING task set cannot become the primary task set."));
    }
    let id = ts.id.clone();
    set_primary(&mut st, &svc_arn, &id);
    let ts = task_set_of(&st, &svc_arn, input, "primaryTaskSet")?;
    Ok(json!({"taskSet": to_json(&st, ts)}))
}

pub fn delete_task_set(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let mut st = sim.lock();
    let svc_arn = external_service(&st, ctx, input)?;
    let ts = task_set_of(&st, &svc_arn, input, "taskSet")?;
    let force = input.get("force").and_then(Value::as_bool).unwrap_or(false);
    if ts.status == "PRIMARY" && !force {
        return Err(err(
            "InvalidParameterException",
            "The task set is the service's primary task set; pass force to delete it.",
        ));
    }
    let id = ts.id.clone();
    delete(&mut st, &svc_arn, &id);
    let ts = task_set_of(&st, &svc_arn, input, "taskSet")?;
    Ok(json!({"taskSet": to_json(&st, ts)}))
}

pub fn describe_task_sets(sim: &Sim, ctx: &Ctx, input: &Value) -> R {
    let st = sim.lock();
    let svc = find_service(&st, ctx, input)?;
    let wanted: Option<Vec<&str>> =
        input.get("taskSets").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect());
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    match wanted {
        None => found = of_service(&st, &svc.arn).iter().map(|t| to_json(&st, t)).collect(),
        Some(idents) => {
            for ident in idents {
                match find(&st, &svc.arn, ident) {
                    Some(t) => found.push(to_json(&st, t)),
                    None => failures.push(json!({"arn": ident, "reason": "MISSING"})),
                }
            }
        }
    }
    Ok(json!({"taskSets": found, "failures": failures}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_set_runs_its_share_of_the_desired_count_rounded_up() {
        assert_eq!(computed_desired(2, 100.0), 2);
        assert_eq!(computed_desired(3, 50.0), 2);
        assert_eq!(computed_desired(4, 0.0), 0);
        assert_eq!(computed_desired(1, 10.0), 1);
        assert_eq!(computed_desired(10, 150.0), 10, "scale is clamped to 100");
    }
}
