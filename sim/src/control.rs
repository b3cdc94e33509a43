//! The simulator's own endpoints under `/_sim/`: listener URLs, task processes, reset,
//! injectable API faults and access-key expiry. Routing of the ECS API itself lives in `api`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::model::Fault;

/// The whole HTTP surface: ECS API on `POST /`, control endpoints under `/_sim/`.
pub fn router(sim: Arc<Sim>) -> axum::Router {
    axum::Router::new()
        .route("/", post(crate::api::handle))
        .route("/codedeploy", post(crate::codedeploy::handle))
        .route("/codedeploy/", post(crate::codedeploy::handle))
        .route("/_sim/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/_sim/services", get(services))
        .route("/_sim/tasks", get(tasks))
        .route("/_sim/reset", post(reset))
        .route("/_sim/faults", post(add_fault).get(list_faults).delete(clear_faults))
        .route("/_sim/calls", get(calls).delete(clear_calls))
        .route("/_sim/throttle", post(set_throttle))
        .route("/_sim/credentials", post(add_credentials).get(list_credentials))
        .with_state(sim)
}

/// A control request's JSON body, or the 400 that says why it is not one.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new((StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response()))
}

async fn services(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    let st = sim.lock();
    let v: Vec<Value> = st
        .services
        .values()
        .map(|s| {
            json!({
                "cluster": s.cluster_name(),
                "service": s.name,
                "serviceArn": s.arn,
                "account": s.ctx.account,
                "region": s.ctx.region,
                "productionUrl": s.prod.as_ref().map(|l| l.url.clone()),
                "testUrl": s.test.as_ref().map(|l| l.url.clone()),
                "productionWeights": s.prod_weights.as_ref().map(|w| w.iter().map(|(d, p)| json!({"deployment": d, "weight": p})).collect::<Vec<_>>()),
                "testWeights": s.test_weights.as_ref().map(|w| w.iter().map(|(d, p)| json!({"deployment": d, "weight": p})).collect::<Vec<_>>()),
            })
        })
        .collect();
    Json(json!({"services": v}))
}

async fn tasks(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    let st = sim.lock();
    let v: Vec<Value> = st
        .tasks
        .values()
        .map(|t| {
            json!({
                "taskArn": t.arn,
                "lastStatus": t.last_status,
                "deploymentId": t.deployment_id,
                "startedBy": t.started_by,
                "runTask": t.run_request,
                "containers": t.containers.iter().map(|c| json!({"name": c.name, "pid": c.pid, "port": c.port})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let pids: Vec<u32> = sim.pids.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
    Json(json!({"tasks": v, "livePids": pids}))
}

async fn reset(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    sim.reset().await;
    Json(json!({"reset": true}))
}

#[derive(Deserialize)]
struct FaultIn {
    operation: String,
    #[serde(default = "throttling")]
    error: String,
    #[serde(default = "one")]
    count: u64,
    message: Option<String>,
    /// Instead of an error: `circuit-breaker` (see `model::Fault::effect`).
    effect: Option<String>,
}

fn throttling() -> String {
    "ThrottlingException".into()
}

fn one() -> u64 {
    1
}

async fn add_fault(AxState(sim): AxState<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let f: FaultIn = match parse(&body) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let message = f.message.unwrap_or_else(|| {
        if f.error == "ThrottlingException" { "Rate exceeded".into() } else { format!("injected {}", f.error) }
    });
    if let Some(effect) = f.effect.as_deref().filter(|e| *e != "circuit-breaker") {
        let e = format!("unknown effect {effect:?}: the one effect is circuit-breaker");
        return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    }
    let fault = Fault { operation: f.operation, error: f.error, message, count: f.count, effect: f.effect };
    sim.lock().faults.push(fault);
    Json(json!({"ok": true})).into_response()
}

async fn list_faults(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    let st = sim.lock();
    let v: Vec<Value> = st
        .faults
        .iter()
        .map(|f| json!({"operation": f.operation, "error": f.error, "count": f.count, "effect": f.effect}))
        .collect();
    Json(json!({"faults": v}))
}

/// ECS API requests received so far, per operation: `{"calls":{"UpdateService":2,...}}`, with
/// the throttling figures since the log was last cleared (`throttle::Throttle::report`):
/// refusals per operation, the first second's calls, the peak per-second rate per bucket, and
/// with `?log=1` every call with its time.
async fn calls(
    AxState(sim): AxState<Arc<Sim>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let all = sim.lock().calls.clone();
    let mut v = sim.throttle().report(q.get("log").is_some_and(|l| l == "1"));
    v["calls"] = json!(all);
    Json(v)
}

/// Start counting again: the per-operation totals, the log, and full buckets.
async fn clear_calls(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    sim.lock().calls.clear();
    sim.throttle().clear();
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct ThrottleIn {
    enabled: bool,
    /// Bucket name → `{"burst": N, "rate": N}`; absent: ECS's documented figures.
    limits: Option<std::collections::BTreeMap<String, LimitIn>>,
}

#[derive(Deserialize)]
struct LimitIn {
    burst: f64,
    rate: f64,
}

/// `{"enabled": true}`: enforce ECS's throttling from now on, every bucket full.
async fn set_throttle(AxState(sim): AxState<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let t: ThrottleIn = match parse(&body) {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    let limits = t.limits.map(|l| {
        l.into_iter()
            .map(|(b, l)| (b, crate::throttle::Limit { burst: l.burst.max(1.0), rate: l.rate.max(0.0) }))
            .collect()
    });
    sim.throttle().configure(t.enabled, limits);
    Json(json!({"ok": true})).into_response()
}

async fn clear_faults(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    sim.lock().faults.clear();
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsIn {
    access_key_id: String,
    /// Epoch seconds.
    expires_at: f64,
}

async fn add_credentials(AxState(sim): AxState<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let c: CredentialsIn = match parse(&body) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let mut keys = sim.key_expiry.lock().unwrap_or_else(|e| e.into_inner());
    keys.entry(c.access_key_id).or_default().expires_at = c.expires_at;
    Json(json!({"ok": true})).into_response()
}

async fn list_credentials(AxState(sim): AxState<Arc<Sim>>) -> Json<Value> {
    let keys = sim.key_expiry.lock().unwrap_or_else(|e| e.into_inner());
    let v: serde_json::Map<String, Value> =
        keys.iter().map(|(k, u)| (k.clone(), serde_json::to_value(u).unwrap_or(Value::Null))).collect();
    Json(json!({"credentials": v}))
}
