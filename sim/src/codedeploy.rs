//! AWS CodeDeploy for ECS blue/green, as the sim models it: the CodeDeploy JSON 1.1 API
//! (`X-Amz-Target: CodeDeploy_20141006.<Op>`) served on `POST /codedeploy`, so
//! `AWS_ENDPOINT_URL_CODEDEPLOY=http://127.0.0.1:PORT/codedeploy` points aws-sdk-codedeploy at
//! it; and the deployments themselves, moved forward by `tick` from the scheduler loop.
//!
//! A deployment of a CODE_DEPLOY service walks CodeDeploy's ECS lifecycle events: BeforeInstall,
//! Install (a replacement — green — task set of the AppSpec's task definition, in the other
//! target group of the deployment group's pair, until it is steady), AfterInstall,
//! AllowTestTraffic (the test listener to green, when the group has a test route),
//! AfterAllowTestTraffic, then — with `deploymentReadyOption.actionOnTimeout` STOP_DEPLOYMENT —
//! status Ready until ContinueDeployment(READY_WAIT) or the wait times out (the deployment
//! fails), BeforeAllowTraffic, AllowTraffic (production shifted as the deployment config says:
//! all at once, canary or linear; green becomes the PRIMARY task set), AfterAllowTraffic, and
//! the termination wait (`terminationWaitTimeInMinutes`, blue kept; ContinueDeployment
//! (TERMINATION_WAIT) ends it) before blue is deleted and the deployment Succeeded.
//! StopDeployment, or a failure with auto-rollback, sends production and test traffic back to
//! blue at once through a rollback deployment (creator `codeDeployRollback`). Lifecycle hooks
//! (Lambda functions in the AppSpec) are not run.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Sim;
use crate::api::{ApiError, err, s};
use crate::model::State;
use crate::rolling;
use crate::tasksets::{self, Spec};
use crate::util::{Ctx, hex_id, now_epoch, rand_u64};

/// CodeDeploy's ECS lifecycle events, in order.
pub const EVENTS: [&str; 8] = [
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "AllowTestTraffic",
    "AfterAllowTestTraffic",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
];

/// Everything CodeDeploy holds, scoped by `region:account`.
#[derive(Default)]
pub struct Store {
    pub applications: BTreeMap<String, Application>,
    pub groups: BTreeMap<String, Group>,
    pub configs: BTreeMap<String, Routing>,
    pub deployments: BTreeMap<String, Deployment>,
}

pub struct Application {
    pub name: String,
    pub id: String,
    pub compute_platform: String,
    pub created_at: f64,
}

pub struct AutoRollback {
    pub enabled: bool,
    pub events: Vec<String>,
}

impl AutoRollback {
    fn from(v: Option<&Value>) -> Option<AutoRollback> {
        let v = v?;
        let events = v
            .get("events")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        Some(AutoRollback { enabled: v.get("enabled").and_then(Value::as_bool).unwrap_or(false), events })
    }

    fn on(&self, event: &str) -> bool {
        self.enabled && self.events.iter().any(|e| e == event)
    }

    fn to_json(&self) -> Value {
        json!({"enabled": self.enabled, "events": self.events})
    }
}

pub struct Group {
    pub app: String,
    pub name: String,
    pub id: String,
    /// The request as given (echoed by GetDeploymentGroup).
    pub raw: Value,
    pub config_name: String,
    pub cluster: String,
    pub service: String,
    /// The target group pair's names, in the order given.
    pub target_groups: (String, String),
    pub test_route: bool,
    /// `deploymentReadyOption`: CONTINUE_DEPLOYMENT or STOP_DEPLOYMENT, and the wait.
    pub ready_action: String,
    pub ready_wait_minutes: f64,
    pub termination_minutes: f64,
    pub auto_rollback: AutoRollback,
}

/// How production traffic moves: percentages, and the minutes between steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub steps: Vec<f64>,
    pub interval_minutes: f64,
    /// The config as GetDeploymentConfig shows it.
    pub raw: Value,
}

/// The predefined ECS deployment configurations, or `None`.
pub fn predefined(name: &str) -> Option<Routing> {
    let (kind, pct, minutes) = match name {
        "CodeDeployDefault.ECSAllAtOnce" => ("AllAtOnce", 100.0, 0.0),
        "CodeDeployDefault.ECSLinear10PercentEvery1Minutes" => ("TimeBasedLinear", 10.0, 1.0),
        "CodeDeployDefault.ECSLinear10PercentEvery3Minutes" => ("TimeBasedLinear", 10.0, 3.0),
        "CodeDeployDefault.ECSCanary10Percent5Minutes" => ("TimeBasedCanary", 10.0, 5.0),
        "CodeDeployDefault.ECSCanary10Percent15Minutes" => ("TimeBasedCanary", 10.0, 15.0),
        _ => return None,
    };
    Some(routing(kind, pct, minutes))
}

/// The production steps of a traffic routing config.
pub fn routing(kind: &str, pct: f64, minutes: f64) -> Routing {
    let pct = pct.clamp(1.0, 100.0);
    let (steps, raw) = match kind {
        "TimeBasedCanary" => (
            if pct >= 100.0 { vec![100.0] } else { vec![pct, 100.0] },
            json!({"type": kind, "timeBasedCanary": {"canaryPercentage": pct as i64, "canaryInterval": minutes as i64}}),
        ),
        "TimeBasedLinear" => {
            let mut steps = Vec::new();
            let mut cur = 0.0;
            // Bounded: at most 100 steps since pct >= 1.
            while cur < 100.0 && steps.len() < 100 {
                cur = f64::min(cur + pct, 100.0);
                steps.push(cur);
            }
            let raw = json!({"type": kind, "timeBasedLinear": {"linearPercentage": pct as i64, "linearInterval": minutes as i64}});
            (steps, raw)
        }
        _ => (vec![100.0], json!({"type": "AllAtOnce"})),
    };
    Routing { steps, interval_minutes: minutes, raw }
}

pub struct Event {
    pub status: String,
    pub start: Option<f64>,
    pub end: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Index into `EVENTS`: that event runs.
    Event(usize),
    /// After AfterAllowTestTraffic: waiting for ContinueDeployment(READY_WAIT).
    Ready,
    /// After AfterAllowTraffic: blue kept for the termination wait.
    TerminationWait,
    /// A rollback deployment: traffic is back on blue, green drains.
    Reroute,
    Done,
}

pub struct Deployment {
    pub id: String,
    pub scope: String,
    pub app: String,
    pub group: String,
    pub config_name: String,
    pub routing: Routing,
    pub creator: String,
    pub description: Option<String>,
    pub status: String,
    pub error: Option<(String, String)>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub revision: Value,
    pub task_definition: String,
    pub container: Value,
    pub network_configuration: Value,
    pub platform_version: Option<String>,
    pub capacity_provider_strategy: Value,
    pub service_arn: String,
    pub target_id: String,
    pub events: Vec<Event>,
    pub phase: Phase,
    pub phase_since: f64,
    pub step: usize,
    pub ready_continue: bool,
    pub termination_continue: bool,
    pub termination_started: bool,
    pub blue: Option<String>,
    pub green: Option<String>,
    pub green_target_group: String,
    pub auto_rollback: AutoRollback,
    pub rollback_info: Option<Value>,
    /// StopDeployment asked for, not yet acted on: with rollback or not.
    pub stop_request: Option<bool>,
    pub ready_action: String,
    pub ready_wait_minutes: f64,
    pub termination_minutes: f64,
    pub test_route: bool,
    pub group_raw: Value,
}

impl Deployment {
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "Created" | "Queued" | "InProgress" | "Ready" | "Baking")
    }

    fn event(&mut self, i: usize, status: &str) {
        let now = now_epoch();
        let e = &mut self.events[i];
        if e.start.is_none() && status != "Pending" {
            e.start = Some(now);
        }
        if matches!(status, "Succeeded" | "Failed" | "Skipped") {
            e.end = Some(now);
        }
        e.status = status.to_string();
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_since = now_epoch();
        if let Phase::Event(i) = phase {
            self.event(i, "InProgress");
        }
    }

    fn target_status(&self) -> &str {
        match self.status.as_str() {
            "Succeeded" => "Succeeded",
            "Failed" | "Stopped" => "Failed",
            "Ready" => "Ready",
            "Created" | "Queued" => "Pending",
            _ => "InProgress",
        }
    }

    fn info(&self) -> Value {
        let mut overview =
            json!({"Pending": 0, "InProgress": 0, "Succeeded": 0, "Failed": 0, "Skipped": 0, "Ready": 0});
        overview[self.target_status()] = json!(1);
        let mut v = json!({
            "applicationName": self.app,
            "deploymentGroupName": self.group,
            "deploymentConfigName": self.config_name,
            "deploymentId": self.id,
            "revision": self.revision,
            "status": self.status,
            "createTime": self.created_at,
            "deploymentOverview": overview,
            "creator": self.creator,
            "ignoreApplicationStopFailures": false,
            "autoRollbackConfiguration": self.auto_rollback.to_json(),
            "updateOutdatedInstancesOnly": false,
            "deploymentStyle": {"deploymentType": "BLUE_GREEN", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
            "instanceTerminationWaitTimeStarted": self.termination_started,
            "blueGreenDeploymentConfiguration": self.group_raw.get("blueGreenDeploymentConfiguration").cloned().unwrap_or(json!({})),
            "loadBalancerInfo": self.group_raw.get("loadBalancerInfo").cloned().unwrap_or(json!({})),
            "computePlatform": "ECS",
            "deploymentStatusMessages": [],
        });
        for (k, t) in [("startTime", self.started_at), ("completeTime", self.completed_at)] {
            if let Some(t) = t {
                v[k] = json!(t);
            }
        }
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        if let Some((code, message)) = &self.error {
            v["errorInformation"] = json!({"code": code, "message": message});
        }
        if let Some(r) = &self.rollback_info {
            v["rollbackInfo"] = r.clone();
        }
        v
    }
}

fn scope(ctx: &Ctx) -> String {
    format!("{}:{}", ctx.region, ctx.account)
}

fn deployment_id() -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut n = rand_u64();
    let tail: String = (0..9)
        .map(|_| {
            let c = A[(n % A.len() as u64) as usize] as char;
            n /= A.len() as u64;
            c
        })
        .collect();
    format!("d-{tail}")
}

fn uuid() -> String {
    let h = hex_id();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

type R = Result<Value, ApiError>;

/// `POST /codedeploy`: the CodeDeploy API. Calls are counted in `/_sim/calls` as
/// `CodeDeploy.<Op>`.
pub async fn handle(AxState(sim): AxState<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let op = target.strip_prefix("CodeDeploy_20141006.").unwrap_or("").to_string();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !sim.credentials_valid(authorization, &format!("CodeDeploy.{op}")) {
        return err("ExpiredTokenException", "The security token included in the request is expired").into_response();
    }
    let ctx = sim.request_ctx(authorization).await;
    *sim.lock().calls.entry(format!("CodeDeploy.{op}")).or_default() += 1;
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return err("SerializationException", e.to_string()).into_response(),
        }
    };
    let answer = dispatch(&sim, &ctx, &op, &input);
    match answer {
        Ok(v) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-amz-json-1.1")], v.to_string()).into_response()
        }
        Err(e) => {
            tracing::debug!(op, ty = e.ty, msg = e.message, "codedeploy error");
            e.into_response()
        }
    }
}

fn dispatch(sim: &Sim, ctx: &Ctx, op: &str, input: &Value) -> R {
    let mut st = sim.lock();
    match op {
        "CreateApplication" => create_application(&mut st, ctx, input),
        "GetApplication" => get_application(&st, ctx, input),
        "ListApplications" => {
            let prefix = format!("{}:", scope(ctx));
            let names: Vec<&String> = st
                .codedeploy
                .applications
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, a)| &a.name)
                .collect();
            Ok(json!({"applications": names}))
        }
        "BatchGetApplications" => batch_get_applications(&st, ctx, input),
        "CreateDeploymentGroup" => create_deployment_group(&mut st, ctx, input),
        "GetDeploymentGroup" => {
            let g = group(&st, ctx, s(input, "applicationName"), s(input, "deploymentGroupName"))?;
            Ok(json!({"deploymentGroupInfo": group_json(&st, ctx, g)}))
        }
        "BatchGetDeploymentGroups" => batch_get_deployment_groups(&st, ctx, input),
        "ListDeploymentGroups" => list_deployment_groups(&st, ctx, input),
        "CreateDeploymentConfig" => create_deployment_config(&mut st, ctx, input),
        "GetDeploymentConfig" => get_deployment_config(&st, ctx, input),
        "CreateDeployment" => create_deployment(&mut st, ctx, input),
        "GetDeployment" => {
            let d = deployment(&st, ctx, input)?;
            Ok(json!({"deploymentInfo": d.info()}))
        }
        "ListDeployments" => list_deployments(&st, ctx, input),
        "ContinueDeployment" => continue_deployment(&mut st, ctx, input),
        "StopDeployment" => stop_deployment(&mut st, ctx, input),
        "ListDeploymentTargets" => {
            let d = deployment(&st, ctx, input)?;
            Ok(json!({"targetIds": [d.target_id]}))
        }
        "GetDeploymentTarget" => get_deployment_target(&st, ctx, input),
        "" => Err(err("UnknownOperationException", "missing or foreign X-Amz-Target")),
        other => Err(err("UnknownOperationException", format!("ecs-sim's CodeDeploy does not implement {other}"))),
    }
}

fn app_key(ctx: &Ctx, name: &str) -> String {
    format!("{}:{name}", scope(ctx))
}

fn group_key(ctx: &Ctx, app: &str, name: &str) -> String {
    format!("{}:{app}:{name}", scope(ctx))
}

fn application<'a>(st: &'a State, ctx: &Ctx, name: Option<&str>) -> Result<&'a Application, ApiError> {
    let name =
        name.ok_or_else(|| err("ApplicationNameRequiredException", "The application name was not specified."))?;
    st.codedeploy
        .applications
        .get(&app_key(ctx, name))
        .ok_or_else(|| err("ApplicationDoesNotExistException", format!("No application found for name: {name}")))
}

fn group<'a>(st: &'a State, ctx: &Ctx, app: Option<&str>, name: Option<&str>) -> Result<&'a Group, ApiError> {
    let app = application(st, ctx, app)?;
    let name = name
        .ok_or_else(|| err("DeploymentGroupNameRequiredException", "The deployment group name was not specified."))?;
    st.codedeploy.groups.get(&group_key(ctx, &app.name, name)).ok_or_else(|| {
        err(
            "DeploymentGroupDoesNotExistException",
            format!("No Deployment Group found for name: {name} in application {}", app.name),
        )
    })
}

fn deployment<'a>(st: &'a State, ctx: &Ctx, input: &Value) -> Result<&'a Deployment, ApiError> {
    let id = s(input, "deploymentId")
        .ok_or_else(|| err("DeploymentIdRequiredException", "The deployment ID was not specified."))?;
    st.codedeploy
        .deployments
        .get(id)
        .filter(|d| d.scope == scope(ctx))
        .ok_or_else(|| err("DeploymentDoesNotExistException", format!("The deployment {id} could not be found.")))
}

fn app_json(a: &Application) -> Value {
    json!({"applicationId": a.id, "applicationName": a.name, "createTime": a.created_at,
           "linkedToGitHub": false, "computePlatform": a.compute_platform})
}

fn create_application(st: &mut State, ctx: &Ctx, input: &Value) -> R {
    let name = s(input, "applicationName")
        .ok_or_else(|| err("ApplicationNameRequiredException", "The application name was not specified."))?;
    let key = app_key(ctx, name);
    if st.codedeploy.applications.contains_key(&key) {
        return Err(err("ApplicationAlreadyExistsException", format!("The application {name} already exists.")));
    }
    let platform = s(input, "computePlatform").unwrap_or("Server").to_string();
    let id = uuid();
    let app =
        Application { name: name.to_string(), id: id.clone(), compute_platform: platform, created_at: now_epoch() };
    st.codedeploy.applications.insert(key, app);
    Ok(json!({"applicationId": id}))
}

fn get_application(st: &State, ctx: &Ctx, input: &Value) -> R {
    Ok(json!({"application": app_json(application(st, ctx, s(input, "applicationName"))?)}))
}

fn batch_get_applications(st: &State, ctx: &Ctx, input: &Value) -> R {
    let mut out = Vec::new();
    for name in input.get("applicationNames").and_then(Value::as_array).into_iter().flatten() {
        out.push(app_json(application(st, ctx, name.as_str())?));
    }
    Ok(json!({"applicationsInfo": out}))
}

fn group_json(st: &State, ctx: &Ctx, g: &Group) -> Value {
    let mut v = g.raw.clone();
    let last = st
        .codedeploy
        .deployments
        .values()
        .filter(|d| d.scope == scope(ctx) && d.app == g.app && d.group == g.name)
        .max_by(|a, b| a.created_at.total_cmp(&b.created_at));
    v["applicationName"] = json!(g.app);
    v["deploymentGroupName"] = json!(g.name);
    v["deploymentGroupId"] = json!(g.id);
    v["deploymentConfigName"] = json!(g.config_name);
    v["computePlatform"] = json!("ECS");
    v["autoRollbackConfiguration"] = g.auto_rollback.to_json();
    if let Some(d) = last {
        v["lastAttemptedDeployment"] = json!({"deploymentId": d.id, "status": d.status, "createTime": d.created_at});
    }
    for k in ["ec2TagFilters", "onPremisesInstanceTagFilters", "autoScalingGroups", "triggerConfigurations"] {
        if v.get(k).is_none() {
            v[k] = json!([]);
        }
    }
    v
}

fn batch_get_deployment_groups(st: &State, ctx: &Ctx, input: &Value) -> R {
    let app = s(input, "applicationName");
    let mut out = Vec::new();
    for name in input.get("deploymentGroupNames").and_then(Value::as_array).into_iter().flatten() {
        out.push(group_json(st, ctx, group(st, ctx, app, name.as_str())?));
    }
    Ok(json!({"deploymentGroupsInfo": out}))
}

fn list_deployment_groups(st: &State, ctx: &Ctx, input: &Value) -> R {
    let app = application(st, ctx, s(input, "applicationName"))?;
    let prefix = group_key(ctx, &app.name, "");
    let names: Vec<&String> =
        st.codedeploy.groups.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, g)| &g.name).collect();
    Ok(json!({"applicationName": app.name, "deploymentGroups": names}))
}

fn config_routing(st: &State, ctx: &Ctx, name: &str) -> Result<Routing, ApiError> {
    predefined(name).or_else(|| st.codedeploy.configs.get(&app_key(ctx, name)).cloned()).ok_or_else(|| {
        err("DeploymentConfigDoesNotExistException", format!("No deployment configuration found for name: {name}"))
    })
}

fn create_deployment_config(st: &mut State, ctx: &Ctx, input: &Value) -> R {
    let name = s(input, "deploymentConfigName").ok_or_else(|| {
        err("DeploymentConfigNameRequiredException", "The deployment configuration name was not specified.")
    })?;
    if predefined(name).is_some() || st.codedeploy.configs.contains_key(&app_key(ctx, name)) {
        return Err(err(
            "DeploymentConfigAlreadyExistsException",
            format!("The deployment configuration {name} already exists."),
        ));
    }
    if s(input, "computePlatform") != Some("ECS") {
        return Err(err(
            "InvalidComputePlatformException",
            "ecs-sim's CodeDeploy takes ECS deployment configurations only.",
        ));
    }
    let t = input.get("trafficRoutingConfig").cloned().unwrap_or(json!({"type": "AllAtOnce"}));
    let kind = s(&t, "type").unwrap_or("AllAtOnce");
    let f = |path: &str| t.pointer(path).and_then(Value::as_f64).unwrap_or(0.0);
    let r = match kind {
        "TimeBasedCanary" => {
            routing(kind, f("/timeBasedCanary/canaryPercentage"), f("/timeBasedCanary/canaryInterval"))
        }
        "TimeBasedLinear" => {
            routing(kind, f("/timeBasedLinear/linearPercentage"), f("/timeBasedLinear/linearInterval"))
        }
        "AllAtOnce" => routing(kind, 100.0, 0.0),
        other => return Err(err("InvalidTrafficRoutingConfigurationException", format!("unknown type {other}"))),
    };
    st.codedeploy.configs.insert(app_key(ctx, name), r);
    Ok(json!({"deploymentConfigId": uuid()}))
}

fn get_deployment_config(st: &State, ctx: &Ctx, input: &Value) -> R {
    let name = s(input, "deploymentConfigName").unwrap_or_default();
    let r = config_routing(st, ctx, name)?;
    Ok(
        json!({"deploymentConfigInfo": {"deploymentConfigName": name, "computePlatform": "ECS", "trafficRoutingConfig": r.raw}}),
    )
}

fn create_deployment_group(st: &mut State, ctx: &Ctx, input: &Value) -> R {
    let app = application(st, ctx, s(input, "applicationName"))?;
    if app.compute_platform != "ECS" {
        return Err(err(
            "InvalidComputePlatformException",
            "ECS services need an application whose computePlatform is ECS.",
        ));
    }
    let app_name = app.name.clone();
    let name = s(input, "deploymentGroupName")
        .ok_or_else(|| err("DeploymentGroupNameRequiredException", "The deployment group name was not specified."))?;
    if st.codedeploy.groups.contains_key(&group_key(ctx, &app_name, name)) {
        return Err(err(
            "DeploymentGroupAlreadyExistsException",
            format!("The deployment group {name} already exists."),
        ));
    }
    if s(input, "serviceRoleArn").is_none() {
        return Err(err("RoleRequiredException", "The service role ARN was not specified."));
    }
    let style = input.get("deploymentStyle");
    let style_ok = style.and_then(|v| s(v, "deploymentType")) == Some("BLUE_GREEN")
        && style.and_then(|v| s(v, "deploymentOption")) == Some("WITH_TRAFFIC_CONTROL");
    if !style_ok {
        return Err(err(
            "InvalidDeploymentStyleException",
            "An ECS deployment group needs deploymentStyle BLUE_GREEN with WITH_TRAFFIC_CONTROL.",
        ));
    }
    let services = input.get("ecsServices").and_then(Value::as_array).cloned().unwrap_or_default();
    let [svc] = services.as_slice() else {
        return Err(err("InvalidECSServiceException", "An ECS deployment group names exactly one ECS service."));
    };
    let (cluster, service) = (s(svc, "clusterName").unwrap_or_default(), s(svc, "serviceName").unwrap_or_default());
    let found = st
        .services
        .values()
        .find(|x| x.name == service && x.cluster_name() == cluster && x.ctx == *ctx && x.status == "ACTIVE");
    match found {
        None => return Err(err("InvalidECSServiceException", format!("ECS service {cluster}/{service} not found."))),
        Some(x) if tasksets::controller(x) != "CODE_DEPLOY" => {
            return Err(err(
                "InvalidECSServiceException",
                "Deployment group's ECS service must be configured for a CODE_DEPLOY deployment controller.",
            ));
        }
        Some(_) => {}
    }
    let pair = input.pointer("/loadBalancerInfo/targetGroupPairInfoList/0").cloned().unwrap_or(Value::Null);
    let tgs: Vec<String> = pair
        .get("targetGroups")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| s(t, "name").map(str::to_string)).collect())
        .unwrap_or_default();
    let prod = pair.pointer("/prodTrafficRoute/listenerArns").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let (Some(tg1), Some(tg2), true) = (tgs.first(), tgs.get(1), prod && tgs.len() == 2) else {
        return Err(err(
            "InvalidTargetGroupPairException",
            "loadBalancerInfo.targetGroupPairInfoList needs one pair of two target groups and a prodTrafficRoute.",
        ));
    };
    let test_route =
        pair.pointer("/testTrafficRoute/listenerArns").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let config_name = s(input, "deploymentConfigName").unwrap_or("CodeDeployDefault.ECSAllAtOnce").to_string();
    config_routing(st, ctx, &config_name)?;
    let bg = input.get("blueGreenDeploymentConfiguration");
    let ready = bg.and_then(|b| b.get("deploymentReadyOption"));
    let ready_action = ready.and_then(|r| s(r, "actionOnTimeout")).unwrap_or("CONTINUE_DEPLOYMENT").to_string();
    let ready_wait_minutes = ready.and_then(|r| r.get("waitTimeInMinutes")).and_then(Value::as_f64).unwrap_or(0.0);
    let termination_minutes = bg
        .and_then(|b| b.pointer("/terminateBlueInstancesOnDeploymentSuccess/terminationWaitTimeInMinutes"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        .clamp(0.0, 2880.0);
    let mut raw = input.clone();
    if let Some(o) = raw.as_object_mut() {
        o.remove("applicationName");
        o.remove("tags");
    }
    let id = uuid();
    let g = Group {
        app: app_name.clone(),
        name: name.to_string(),
        id: id.clone(),
        raw,
        config_name,
        cluster: cluster.to_string(),
        service: service.to_string(),
        target_groups: (tg1.clone(), tg2.clone()),
        test_route,
        ready_action,
        ready_wait_minutes,
        termination_minutes,
        auto_rollback: AutoRollback::from(input.get("autoRollbackConfiguration"))
            .unwrap_or(AutoRollback { enabled: false, events: Vec::new() }),
    };
    st.codedeploy.groups.insert(group_key(ctx, &app_name, name), g);
    Ok(json!({"deploymentGroupId": id}))
}

/// The AppSpec's TargetService properties (JSON AppSpec only).
fn appspec_properties(content: &str) -> Result<Value, ApiError> {
    let invalid = |why: &str| err("InvalidRevisionException", format!("AppSpec content: {why}"));
    let v: Value = serde_json::from_str(content)
        .map_err(|e| invalid(&format!("ecs-sim reads JSON AppSpecs only (YAML is not parsed): {e}")))?;
    let ts = v.pointer("/Resources/0/TargetService").ok_or_else(|| invalid("Resources[0].TargetService is missing"))?;
    if s(ts, "Type") != Some("AWS::ECS::Service") {
        return Err(invalid("TargetService.Type must be AWS::ECS::Service"));
    }
    let props = ts.get("Properties").cloned().ok_or_else(|| invalid("TargetService.Properties is missing"))?;
    if s(&props, "TaskDefinition").is_none() {
        return Err(invalid("Properties.TaskDefinition is missing"));
    }
    let lb = props.get("LoadBalancerInfo");
    if lb.and_then(|l| s(l, "ContainerName")).is_none() || lb.and_then(|l| l.get("ContainerPort")).is_none() {
        return Err(invalid("Properties.LoadBalancerInfo needs ContainerName and ContainerPort"));
    }
    Ok(props)
}

/// AppSpec NetworkConfiguration (PascalCase) as ECS's networkConfiguration.
fn network_configuration(v: Option<&Value>) -> Value {
    let Some(a) = v.and_then(|n| n.get("AwsvpcConfiguration")) else { return Value::Null };
    let mut c = json!({
        "subnets": a.get("Subnets").cloned().unwrap_or(json!([])),
        "securityGroups": a.get("SecurityGroups").cloned().unwrap_or(json!([])),
    });
    if let Some(p) = s(a, "AssignPublicIp") {
        c["assignPublicIp"] = json!(p);
    }
    json!({"awsvpcConfiguration": c})
}

fn capacity_provider_strategy(v: Option<&Value>) -> Value {
    let items = v.and_then(Value::as_array).cloned().unwrap_or_default();
    Value::Array(
        items
            .iter()
            .map(|i| json!({"capacityProvider": i.get("CapacityProvider"), "weight": i.get("Weight").cloned().unwrap_or(json!(0)), "base": i.get("Base").cloned().unwrap_or(json!(0))}))
            .collect(),
    )
}

fn create_deployment(st: &mut State, ctx: &Ctx, input: &Value) -> R {
    let g = group(st, ctx, s(input, "applicationName"), s(input, "deploymentGroupName"))?;
    if let Some(active) = st
        .codedeploy
        .deployments
        .values()
        .find(|d| d.scope == scope(ctx) && d.app == g.app && d.group == g.name && d.is_active())
    {
        return Err(err(
            "DeploymentLimitExceededException",
            format!("The Deployment Group '{}' already has an active Deployment '{}'", g.name, active.id),
        ));
    }
    let revision = input
        .get("revision")
        .cloned()
        .ok_or_else(|| err("RevisionRequiredException", "The revision was not specified."))?;
    if s(&revision, "revisionType") != Some("AppSpecContent") {
        return Err(err("InvalidRevisionException", "ecs-sim's CodeDeploy takes revisionType AppSpecContent only."));
    }
    let content = revision.pointer("/appSpecContent/content").and_then(Value::as_str).unwrap_or_default();
    let props = appspec_properties(content)?;
    let td_ident = s(&props, "TaskDefinition").unwrap_or_default();
    let td = st.task_def(ctx, td_ident).ok_or_else(|| {
        err("InvalidRevisionException", format!("The task definition {td_ident} in the AppSpec does not exist."))
    })?;
    if s(&td.body, "status") != Some("ACTIVE") {
        return Err(err("InvalidRevisionException", format!("The task definition {td_ident} is INACTIVE.")));
    }
    let td_arn = s(&td.body, "taskDefinitionArn").unwrap_or_default().to_string();
    let container = props.get("LoadBalancerInfo").cloned().unwrap_or(Value::Null);
    let cname = s(&container, "ContainerName").unwrap_or_default();
    let has_container = td
        .body
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| s(c, "name") == Some(cname)));
    if !has_container {
        return Err(err("InvalidRevisionException", format!("The AppSpec's container {cname} is not in {td_arn}.")));
    }
    let svc = st
        .services
        .values()
        .find(|x| x.name == g.service && x.cluster_name() == g.cluster && x.ctx == *ctx && x.status == "ACTIVE")
        .ok_or_else(|| {
            err("InvalidECSServiceException", format!("ECS service {}/{} not found.", g.cluster, g.service))
        })?;
    let config_name = s(input, "deploymentConfigName").map(str::to_string).unwrap_or_else(|| g.config_name.clone());
    let routing = config_routing(st, ctx, &config_name)?;
    let auto_rollback = AutoRollback::from(input.get("autoRollbackConfiguration"))
        .unwrap_or(AutoRollback { enabled: g.auto_rollback.enabled, events: g.auto_rollback.events.clone() });
    let now = now_epoch();
    let id = deployment_id();
    let d = Deployment {
        id: id.clone(),
        scope: scope(ctx),
        app: g.app.clone(),
        group: g.name.clone(),
        config_name,
        routing,
        creator: "user".into(),
        description: s(input, "description").map(str::to_string),
        status: "Created".into(),
        error: None,
        created_at: now,
        started_at: None,
        completed_at: None,
        revision,
        task_definition: td_arn,
        container,
        network_configuration: network_configuration(props.get("NetworkConfiguration")),
        platform_version: s(&props, "PlatformVersion").map(str::to_string),
        capacity_provider_strategy: capacity_provider_strategy(props.get("CapacityProviderStrategy")),
        service_arn: svc.arn.clone(),
        target_id: format!("{}:{}", g.cluster, g.service),
        events: EVENTS.iter().map(|_| Event { status: "Pending".into(), start: None, end: None }).collect(),
        phase: Phase::Event(0),
        phase_since: now,
        step: 0,
        ready_continue: false,
        termination_continue: false,
        termination_started: false,
        blue: None,
        green: None,
        green_target_group: String::new(),
        auto_rollback,
        rollback_info: None,
        stop_request: None,
        ready_action: g.ready_action.clone(),
        ready_wait_minutes: g.ready_wait_minutes,
        termination_minutes: g.termination_minutes,
        test_route: g.test_route,
        group_raw: g.raw.clone(),
    };
    st.codedeploy.deployments.insert(id.clone(), d);
    Ok(json!({"deploymentId": id}))
}

fn list_deployments(st: &State, ctx: &Ctx, input: &Value) -> R {
    let (app, grp) = (s(input, "applicationName"), s(input, "deploymentGroupName"));
    if let (Some(_), Some(_)) = (app, grp) {
        group(st, ctx, app, grp)?;
    }
    let statuses: Option<Vec<&str>> = input
        .get("includeOnlyStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let mut v: Vec<&Deployment> = st
        .codedeploy
        .deployments
        .values()
        .filter(|d| d.scope == scope(ctx))
        .filter(|d| app.is_none_or(|a| d.app == a) && grp.is_none_or(|g| d.group == g))
        .filter(|d| statuses.as_ref().is_none_or(|ss| ss.contains(&d.status.as_str())))
        .collect();
    v.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    Ok(json!({"deployments": v.iter().map(|d| &d.id).collect::<Vec<_>>()}))
}

fn continue_deployment(st: &mut State, ctx: &Ctx, input: &Value) -> R {
    let id = deployment(st, ctx, input)?.id.clone();
    let wait = s(input, "deploymentWaitType").unwrap_or("READY_WAIT");
    let d = st.codedeploy.deployments.get_mut(&id).ok_or_else(|| err("DeploymentDoesNotExistException", "gone"))?;
    if !d.is_active() {
        return Err(err("DeploymentAlreadyCompletedException", format!("The deployment {id} has already completed.")));
    }
    match wait {
        "READY_WAIT" if d.phase == Phase::Ready => d.ready_continue = true,
        "TERMINATION_WAIT" if d.phase == Phase::TerminationWait => d.termination_continue = true,
        "READY_WAIT" | "TERMINATION_WAIT" => {
            return Err(err(
                "DeploymentIsNotInReadyStateException",
                format!("The deployment {id} is not waiting for {wait} (status {}).", d.status),
            ));
        }
        other => return Err(err("InvalidDeploymentWaitTypeException", format!("Unknown deploymentWaitType {other}."))),
    }
    Ok(json!({}))
}

fn stop_deployment(st: &mut State, ctx: &Ctx, input: &Value) -> R {
    let id = deployment(st, ctx, input)?.id.clone();
    let rollback = input.get("autoRollbackEnabled").and_then(Value::as_bool).unwrap_or(false);
    let d = st.codedeploy.deployments.get_mut(&id).ok_or_else(|| err("DeploymentDoesNotExistException", "gone"))?;
    if !d.is_active() || d.creator == "codeDeployRollback" {
        return Err(err("DeploymentAlreadyCompletedException", format!("The deployment {id} has already completed.")));
    }
    d.stop_request = Some(rollback);
    Ok(json!({"status": "Pending", "statusMessage": "Stopping Pending. Stopping to deploy."}))
}

fn get_deployment_target(st: &State, ctx: &Ctx, input: &Value) -> R {
    let d = deployment(st, ctx, input)?;
    let target = s(input, "targetId").unwrap_or_default();
    if target != d.target_id {
        return Err(err(
            "DeploymentTargetDoesNotExistException",
            format!("The target {target} is not part of {}.", d.id),
        ));
    }
    let svc = st.services.get(&d.service_arn);
    let mut sets = Vec::new();
    for (id, label) in [(&d.blue, "Blue"), (&d.green, "Green")] {
        let (Some(id), Some(svc)) = (id, svc) else { continue };
        let Some(ts) = tasksets::find(st, &svc.arn, id) else { continue };
        let (running, pending) = crate::engine::running_pending(st, &svc.arn, id);
        let tg = if label == "Green" { d.green_target_group.clone() } else { target_group_name(&ts.load_balancers) };
        sets.push(json!({
            "identifer": ts.id,
            "desiredCount": tasksets::computed_desired(svc.desired_count, ts.scale),
            "pendingCount": pending,
            "runningCount": running,
            "status": ts.status,
            "trafficWeight": tasksets::traffic_weight(svc, ts),
            "targetGroup": {"name": tg},
            "taskSetLabel": label,
        }));
    }
    let events: Vec<Value> = EVENTS
        .iter()
        .zip(&d.events)
        .filter(|_| d.creator != "codeDeployRollback")
        .map(|(name, e)| {
            let mut v = json!({"lifecycleEventName": name, "status": e.status});
            for (k, t) in [("startTime", e.start), ("endTime", e.end)] {
                if let Some(t) = t {
                    v[k] = json!(t);
                }
            }
            v
        })
        .collect();
    Ok(json!({"deploymentTarget": {
        "deploymentTargetType": "ECSTarget",
        "ecsTarget": {
            "deploymentId": d.id,
            "targetId": d.target_id,
            "targetArn": d.service_arn,
            "lastUpdatedAt": now_epoch(),
            "lifecycleEvents": events,
            "status": d.target_status(),
            "taskSetsInfo": sets,
        }
    }}))
}

/// A target group's name from a load balancer entry's ARN (`.../targetgroup/NAME/ID`).
fn target_group_name(lbs: &Value) -> String {
    let arn = lbs.get(0).and_then(|l| l.get("targetGroupArn")).and_then(Value::as_str).unwrap_or_default();
    arn.split("targetgroup/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_string()
}

/// `loadBalancers` of the green task set: blue's entry with the pair's other target group.
fn green_load_balancers(blue: &Value, green_tg: &str, container: &Value) -> Value {
    let mut lb = blue.get(0).cloned().unwrap_or(json!({}));
    let arn = lb.get("targetGroupArn").and_then(Value::as_str).unwrap_or_default().to_string();
    let green_arn = match arn.split_once("targetgroup/") {
        Some((head, _)) => format!("{head}targetgroup/{green_tg}/{}", &hex_id()[..16]),
        None => {
            format!("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{green_tg}/{}", &hex_id()[..16])
        }
    };
    lb["targetGroupArn"] = json!(green_arn);
    if let Some(n) = s(container, "ContainerName") {
        lb["containerName"] = json!(n);
    }
    if let Some(p) = container.get("ContainerPort") {
        lb["containerPort"] = p.clone();
    }
    json!([lb])
}

/// One scheduler step of every active CodeDeploy deployment.
pub fn tick(sim: &Sim, st: &mut State) {
    let ids: Vec<String> = st.codedeploy.deployments.values().filter(|d| d.is_active()).map(|d| d.id.clone()).collect();
    for id in ids {
        step(sim, st, &id);
    }
}

fn step(sim: &Sim, st: &mut State, id: &str) {
    let now = now_epoch();
    let Some(d) = st.codedeploy.deployments.get_mut(id) else { return };
    if let Some(rollback) = d.stop_request.take() {
        let message = "The deployment was stopped by StopDeployment.";
        end(st, id, "Stopped", ("MANUAL_STOP", message), rollback);
        return;
    }
    let svc_arn = d.service_arn.clone();
    if !st.services.contains_key(&svc_arn) {
        end(st, id, "Failed", ("INVALID_ECS_SERVICE", "The ECS service no longer exists."), false);
        return;
    }
    let d = &st.codedeploy.deployments[id];
    // Green's tasks keep failing: the replacement task set cannot reach a steady state.
    if let Some(green) = d.green.clone() {
        let desired = st.services[&svc_arn].desired_count;
        if d.phase != Phase::Reroute
            && tasksets::failed_tasks(st, &svc_arn, &green) >= rolling::breaker_threshold(desired)
        {
            let why =
                "The ECS replacement task set failed to reach a steady state: its tasks failed to start or stopped.";
            end(st, id, "Failed", ("ECS_UPDATE_ERROR", why), true);
            return;
        }
    }
    // Bounded: at most one pass per event and wait per tick.
    for _ in 0..EVENTS.len() + 3 {
        let d = &st.codedeploy.deployments[id];
        let (phase, since) = (d.phase, d.phase_since);
        let advanced = match phase {
            Phase::Event(0) if d.status == "Created" => {
                let d = st.codedeploy.deployments.get_mut(id).unwrap();
                d.status = "InProgress".into();
                d.started_at = Some(now);
                d.enter(Phase::Event(0));
                true
            }
            Phase::Event(1) => install(st, id),
            Phase::Event(3) => {
                let d = &st.codedeploy.deployments[id];
                if let (true, Some(green), Some(blue)) = (d.test_route, d.green.clone(), d.blue.clone())
                    && let Some(svc) = st.services.get_mut(&svc_arn)
                {
                    svc.test_weights = Some(vec![(green, 100.0), (blue, 0.0)]);
                }
                true
            }
            Phase::Event(4) => {
                let d = st.codedeploy.deployments.get_mut(id).unwrap();
                d.event(4, "Succeeded");
                if d.ready_action == "STOP_DEPLOYMENT" {
                    d.status = "Ready".into();
                    d.enter(Phase::Ready);
                    continue;
                }
                d.enter(Phase::Event(5));
                continue;
            }
            Phase::Ready => {
                let d = st.codedeploy.deployments.get_mut(id).unwrap();
                if d.ready_continue {
                    d.status = "InProgress".into();
                    d.enter(Phase::Event(5));
                    continue;
                }
                if now - since >= sim.scale.minutes(d.ready_wait_minutes).as_secs_f64() {
                    let why = "The deployment timed out waiting for ContinueDeployment (deploymentReadyOption STOP_DEPLOYMENT).";
                    end(st, id, "Failed", ("TIMEOUT", why), true);
                    return;
                }
                false
            }
            Phase::Event(6) => allow_traffic(sim, st, id, now),
            Phase::Event(7) => {
                let d = st.codedeploy.deployments.get_mut(id).unwrap();
                d.event(7, "Succeeded");
                d.termination_started = true;
                d.enter(Phase::TerminationWait);
                continue;
            }
            Phase::TerminationWait => {
                let d = &st.codedeploy.deployments[id];
                let over =
                    d.termination_continue || now - since >= sim.scale.minutes(d.termination_minutes).as_secs_f64();
                if over {
                    if let Some(blue) = d.blue.clone() {
                        tasksets::delete(st, &svc_arn, &blue);
                    }
                    let d = st.codedeploy.deployments.get_mut(id).unwrap();
                    d.status = "Succeeded".into();
                    d.completed_at = Some(now);
                    d.enter(Phase::Done);
                }
                return;
            }
            Phase::Reroute => {
                let d = &st.codedeploy.deployments[id];
                let gone = d.green.as_ref().is_none_or(|g| tasksets::find(st, &svc_arn, g).is_none());
                if gone {
                    let d = st.codedeploy.deployments.get_mut(id).unwrap();
                    d.status = "Succeeded".into();
                    d.completed_at = Some(now);
                    d.phase = Phase::Done;
                }
                return;
            }
            Phase::Event(_) => true,
            Phase::Done => return,
        };
        if !advanced {
            return;
        }
        // The running event succeeded: the next one starts.
        let d = st.codedeploy.deployments.get_mut(id).unwrap();
        if let Phase::Event(i) = d.phase {
            d.event(i, "Succeeded");
            if i + 1 < EVENTS.len() {
                d.enter(Phase::Event(i + 1));
            }
        }
    }
}

/// Install: create the green task set once (production and test stay on blue), then wait until
/// it is steady.
fn install(st: &mut State, id: &str) -> bool {
    let d = &st.codedeploy.deployments[id];
    let svc_arn = d.service_arn.clone();
    if let Some(green) = &d.green {
        return tasksets::find(st, &svc_arn, green).is_some_and(|t| t.stability_status == "STEADY_STATE");
    }
    let Some(blue) = tasksets::of_service(st, &svc_arn).into_iter().find(|t| t.status == "PRIMARY") else {
        end(st, id, "Failed", ("INVALID_ECS_SERVICE", "The ECS service has no primary task set."), false);
        return false;
    };
    let blue_tg = target_group_name(&blue.load_balancers);
    let pair = st.codedeploy.groups.get(&format!("{}:{}:{}", d.scope, d.app, d.group)).map(|g| g.target_groups.clone());
    let green_tg = match pair {
        Some((a, b)) if a == blue_tg => b,
        Some((a, _)) => a,
        None => "green".into(),
    };
    let network = if d.network_configuration.is_null() {
        blue.network_configuration.clone()
    } else {
        d.network_configuration.clone()
    };
    let strategy = if d.capacity_provider_strategy.as_array().is_some_and(|a| !a.is_empty()) {
        d.capacity_provider_strategy.clone()
    } else {
        blue.capacity_provider_strategy.clone()
    };
    let spec = Spec {
        task_definition: d.task_definition.clone(),
        external_id: Some(d.id.clone()),
        started_by: Some("CodeDeploy".into()),
        scale: 100.0,
        load_balancers: green_load_balancers(&blue.load_balancers, &green_tg, &d.container),
        network_configuration: network,
        launch_type: blue.launch_type.clone(),
        capacity_provider_strategy: strategy,
        platform_version: d.platform_version.clone().or_else(|| blue.platform_version.clone()),
        primary: false,
    };
    let blue_id = blue.id.clone();
    let green = tasksets::create(st, &svc_arn, spec);
    if let Some(svc) = st.services.get_mut(&svc_arn) {
        svc.prod_weights = Some(vec![(blue_id.clone(), 100.0)]);
        svc.test_weights = Some(vec![(blue_id.clone(), 100.0)]);
    }
    let d = st.codedeploy.deployments.get_mut(id).unwrap();
    d.blue = Some(blue_id);
    d.green = green;
    d.green_target_group = green_tg;
    false
}

/// AllowTraffic: production moves to green step by step; at 100 % green is the PRIMARY task set.
fn allow_traffic(sim: &Sim, st: &mut State, id: &str, now: f64) -> bool {
    let d = &st.codedeploy.deployments[id];
    let (Some(green), Some(blue)) = (d.green.clone(), d.blue.clone()) else { return true };
    let svc_arn = d.service_arn.clone();
    let steps = d.routing.steps.clone();
    let due = d.step == 0
        || (d.step < steps.len() && now - d.phase_since >= sim.scale.minutes(d.routing.interval_minutes).as_secs_f64());
    if due && d.step < steps.len() {
        let pct = steps[d.step];
        if let Some(svc) = st.services.get_mut(&svc_arn) {
            svc.prod_weights = Some(vec![(green.clone(), pct), (blue.clone(), 100.0 - pct)]);
            if d.test_route {
                svc.test_weights = Some(vec![(green.clone(), 100.0), (blue.clone(), 0.0)]);
            }
            let msg = format!(
                "(service {}) CodeDeploy {} shifted {pct}% of production traffic to taskSet {green}.",
                svc.name, d.id
            );
            svc.event(msg);
        }
        let d = st.codedeploy.deployments.get_mut(id).unwrap();
        d.step += 1;
        d.phase_since = now;
    }
    let d = &st.codedeploy.deployments[id];
    if d.step < steps.len() {
        return false;
    }
    tasksets::set_primary(st, &svc_arn, &green);
    true
}

/// The deployment ends as `status` with `error`; with `rollback` (asked for, or auto-rollback
/// on failure) a rollback deployment sends traffic back to blue at once. Without one, a green
/// task set that never took production is removed and test traffic returns to blue.
fn end(st: &mut State, id: &str, status: &str, error: (&str, &str), rollback: bool) {
    let now = now_epoch();
    let Some(d) = st.codedeploy.deployments.get_mut(id) else { return };
    d.status = status.to_string();
    d.error = Some((error.0.to_string(), error.1.to_string()));
    d.completed_at = Some(now);
    if let Phase::Event(i) = d.phase
        && d.events[i].status == "InProgress"
    {
        d.event(i, "Failed");
    }
    d.phase = Phase::Done;
    let auto = if status == "Stopped" { rollback } else { rollback && d.auto_rollback.on("DEPLOYMENT_FAILURE") };
    let (svc_arn, blue, green) = (d.service_arn.clone(), d.blue.clone(), d.green.clone());
    let blue_alive = blue.as_ref().is_some_and(|b| tasksets::find(st, &svc_arn, b).is_some());
    if auto && blue_alive {
        start_rollback(st, id);
        return;
    }
    let Some(svc) = st.services.get(&svc_arn) else { return };
    let on_green = green
        .as_ref()
        .and_then(|g| tasksets::find(st, &svc_arn, g))
        .is_some_and(|g| tasksets::traffic_weight(svc, g) > 0.0);
    if let (false, Some(green), Some(blue)) = (on_green, green, blue) {
        tasksets::delete(st, &svc_arn, &green);
        if let Some(svc) = st.services.get_mut(&svc_arn) {
            svc.prod_weights = Some(vec![(blue.clone(), 100.0)]);
            svc.test_weights = Some(vec![(blue, 100.0)]);
        }
    }
}

/// A rollback deployment of `original`: production and test traffic back to blue at once, blue
/// PRIMARY again, green deleted; Succeeded once green is gone.
fn start_rollback(st: &mut State, original: &str) {
    let now = now_epoch();
    let rid = deployment_id();
    let Some(o) = st.codedeploy.deployments.get_mut(original) else { return };
    o.rollback_info = Some(json!({
        "rollbackDeploymentId": rid,
        "rollbackMessage": format!("Deployment {original} was rolled back by deployment {rid}."),
    }));
    let o = &st.codedeploy.deployments[original];
    let (svc_arn, blue, green) = (o.service_arn.clone(), o.blue.clone(), o.green.clone());
    let blue_td = blue.as_ref().and_then(|b| tasksets::find(st, &svc_arn, b)).map(|t| t.task_definition.clone());
    let r = Deployment {
        id: rid.clone(),
        scope: o.scope.clone(),
        app: o.app.clone(),
        group: o.group.clone(),
        config_name: o.config_name.clone(),
        routing: o.routing.clone(),
        creator: "codeDeployRollback".into(),
        description: Some(format!("Rollback of {original}")),
        status: "InProgress".into(),
        error: None,
        created_at: now,
        started_at: Some(now),
        completed_at: None,
        revision: o.revision.clone(),
        task_definition: blue_td.unwrap_or_default(),
        container: o.container.clone(),
        network_configuration: o.network_configuration.clone(),
        platform_version: o.platform_version.clone(),
        capacity_provider_strategy: o.capacity_provider_strategy.clone(),
        service_arn: svc_arn.clone(),
        target_id: o.target_id.clone(),
        events: EVENTS.iter().map(|_| Event { status: "Succeeded".into(), start: Some(now), end: Some(now) }).collect(),
        phase: Phase::Reroute,
        phase_since: now,
        step: 0,
        ready_continue: false,
        termination_continue: false,
        termination_started: false,
        blue: blue.clone(),
        green: green.clone(),
        green_target_group: o.green_target_group.clone(),
        auto_rollback: AutoRollback { enabled: false, events: Vec::new() },
        rollback_info: Some(json!({"rollbackTriggeringDeploymentId": original})),
        stop_request: None,
        ready_action: o.ready_action.clone(),
        ready_wait_minutes: o.ready_wait_minutes,
        termination_minutes: o.termination_minutes,
        test_route: o.test_route,
        group_raw: o.group_raw.clone(),
    };
    st.codedeploy.deployments.insert(rid.clone(), r);
    if let Some(blue) = &blue {
        tasksets::set_primary(st, &svc_arn, blue);
        if let Some(svc) = st.services.get_mut(&svc_arn) {
            svc.prod_weights = Some(vec![(blue.clone(), 100.0)]);
            svc.test_weights = Some(vec![(blue.clone(), 100.0)]);
            let msg =
                format!("(service {}) CodeDeploy {rid} rolled production traffic back to taskSet {blue}.", svc.name);
            svc.event(msg);
        }
    }
    if let Some(green) = &green {
        tasksets::delete(st, &svc_arn, green);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_configs_shape_production_steps() {
        assert_eq!(predefined("CodeDeployDefault.ECSAllAtOnce").unwrap().steps, vec![100.0]);
        let c = predefined("CodeDeployDefault.ECSCanary10Percent5Minutes").unwrap();
        assert_eq!((c.steps.clone(), c.interval_minutes), (vec![10.0, 100.0], 5.0));
        let l = predefined("CodeDeployDefault.ECSLinear10PercentEvery1Minutes").unwrap();
        assert_eq!(l.steps.len(), 10);
        assert_eq!(l.steps.last(), Some(&100.0));
        assert!(predefined("CodeDeployDefault.OneAtATime").is_none(), "a server config is not an ECS one");
        assert_eq!(routing("TimeBasedLinear", 40.0, 1.0).steps, vec![40.0, 80.0, 100.0]);
        // CodeDeploy's API types percentage and interval as integers (the SDK refuses 50.0).
        assert_eq!(c.raw["timeBasedCanary"]["canaryPercentage"], json!(10));
        assert_eq!(c.raw["timeBasedCanary"]["canaryInterval"], json!(5));
    }

    #[test]
    fn deployment_ids_look_like_codedeploys() {
        let id = deployment_id();
        assert!(id.starts_with("d-") && id.len() == 11, "{id}");
        assert!(id[2..].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()), "{id}");
    }

    #[test]
    fn a_json_appspec_is_read_and_yaml_is_refused_with_the_reason() {
        let ok = r#"{"version":0.0,"Resources":[{"TargetService":{"Type":"AWS::ECS::Service","Properties":
            {"TaskDefinition":"arn:td:2","LoadBalancerInfo":{"ContainerName":"app","ContainerPort":8080}}}}]}"#;
        assert_eq!(appspec_properties(ok).unwrap()["TaskDefinition"], "arn:td:2");
        let yaml = "version: 0.0\nResources: []\n";
        assert!(appspec_properties(yaml).unwrap_err().message.contains("JSON AppSpecs only"));
        let no_lb =
            r#"{"Resources":[{"TargetService":{"Type":"AWS::ECS::Service","Properties":{"TaskDefinition":"x"}}}]}"#;
        assert!(appspec_properties(no_lb).unwrap_err().message.contains("LoadBalancerInfo"));
    }
}
