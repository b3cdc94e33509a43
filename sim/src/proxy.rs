//! Listeners: each service with `loadBalancers` gets a production listener (and a test listener
//! for traffic-shifting strategies or `advancedConfiguration`), a loopback HTTP reverse proxy that
//! routes by the service's current weights to tasks that pass the target-group health check.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Sim;
use crate::bluegreen::route_to_green;
use crate::model::{ListenerInfo, State};
use crate::util::rand_u64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Production,
    Test,
}

struct Listener {
    sim: Arc<Sim>,
    service_arn: String,
    kind: Kind,
    rr: AtomicUsize,
}

/// Ports of the healthy, non-draining targets of a service, optionally of one deployment.
fn targets(st: &State, svc_arn: &str, dep: Option<&str>) -> Vec<u16> {
    st.tasks
        .values()
        .filter(|t| {
            t.service_arn.as_deref() == Some(svc_arn)
                && !t.draining
                && t.is_live()
                && t.lb_healthy
                && t.last_status == "RUNNING"
        })
        .filter(|t| dep.is_none() || t.deployment_id.as_deref() == dep)
        .filter_map(|t| t.lb_port())
        .collect()
}

/// Chooses a target port for one request: by weight between deployments when the service has
/// weights, otherwise among all healthy targets; falls back to any healthy target.
pub fn pick_target(st: &State, svc_arn: &str, kind: Kind, rr: usize, sample: f64) -> Option<u16> {
    let svc = st.services.get(svc_arn)?;
    let weights = match kind {
        Kind::Production => svc.prod_weights.as_ref(),
        Kind::Test => svc.test_weights.as_ref().or(svc.prod_weights.as_ref()),
    };
    let mut pool = Vec::new();
    if let Some(w) = weights {
        let total: f64 = w.iter().map(|x| x.1.max(0.0)).sum();
        if total > 0.0 {
            // Walk the cumulative weights.
            let mut acc = 0.0;
            let point = sample / 100.0 * total;
            for (dep, weight) in w {
                if route_to_green(acc + weight.max(0.0), point) && weight.max(0.0) > 0.0 {
                    pool = targets(st, svc_arn, Some(dep));
                    break;
                }
                acc += weight.max(0.0);
            }
        }
    }
    if pool.is_empty() {
        pool = targets(st, svc_arn, None);
    }
    if pool.is_empty() {
        return None;
    }
    pool.sort_unstable();
    Some(pool[rr % pool.len()])
}

async fn forward(AxState(l): AxState<Arc<Listener>>, req: Request) -> Response {
    let rr = l.rr.fetch_add(1, Ordering::Relaxed);
    let sample = (rand_u64() % 10_000) as f64 / 100.0;
    let port = {
        let st = l.sim.lock();
        pick_target(&st, &l.service_arn, l.kind, rr, sample)
    };
    let Some(port) = port else {
        return (StatusCode::SERVICE_UNAVAILABLE, "503 Service Temporarily Unavailable: no healthy targets\n")
            .into_response();
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://127.0.0.1:{port}{path}");
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return (StatusCode::BAD_REQUEST, "bad request body\n").into_response();
    };
    let mut headers = HeaderMap::new();
    for (k, v) in parts.headers.iter() {
        if !is_hop_by_hop(k) && k != "host" {
            headers.append(k.clone(), v.clone());
        }
    }
    let resp = l.sim.http.request(parts.method, url).headers(headers).body(body).send().await;
    match resp {
        Ok(r) => {
            let status = r.status();
            let mut out_headers = HeaderMap::new();
            for (k, v) in r.headers().iter() {
                if !is_hop_by_hop(k) && k != "content-length" {
                    out_headers.append(k.clone(), v.clone());
                }
            }
            match r.bytes().await {
                Ok(b) => {
                    let mut resp = Response::new(Body::from(b));
                    *resp.status_mut() = status;
                    *resp.headers_mut() = out_headers;
                    resp
                }
                Err(_) => (StatusCode::BAD_GATEWAY, "502 Bad Gateway\n").into_response(),
            }
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "502 Bad Gateway\n").into_response(),
    }
}

fn is_hop_by_hop(k: &HeaderName) -> bool {
    matches!(
        k.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Binds a listener on a free loopback port and serves it until aborted.
pub async fn start(
    sim: Arc<Sim>,
    service_arn: &str,
    kind: Kind,
) -> std::io::Result<(ListenerInfo, tokio::task::AbortHandle)> {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = tcp.local_addr()?.port();
    let l = Arc::new(Listener { sim, service_arn: service_arn.to_string(), kind, rr: AtomicUsize::new(0) });
    let app = axum::Router::new().fallback(forward).with_state(l);
    let h = tokio::spawn(async move {
        let _ = axum::serve(tcp, app).await;
    });
    Ok((ListenerInfo { url: format!("http://127.0.0.1:{port}") }, h.abort_handle()))
}
