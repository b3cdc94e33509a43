//! Task process supervisor: creates task records from task definitions, runs what the ECS agent
//! would (secrets, image check, awslogs setup), starts one `sim-app` process per container on a
//! free loopback port with the container's command (RunTask overrides applied), watches exits
//! and health, and stops tasks (drain, SIGTERM, SIGKILL, reap).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Sim;
use crate::model::{Container, State, Task};
use crate::util::{Ctx, hex_id, now_epoch};
use crate::{logs, resolve, rolling};

/// Target-group health check as the sim models it (seconds before scaling, thresholds).
pub const TG_INTERVAL_SECS: f64 = 5.0;
pub const TG_HEALTHY_THRESHOLD: u32 = 2;
pub const TG_UNHEALTHY_THRESHOLD: u32 = 2;
/// How long a task must have been RUNNING before it counts toward a deployment's healthy tasks
/// (seconds before scaling), so a release that crashes soon after starting fails its rollout
/// rather than replacing the old tasks first. It stands in for the time a real target group
/// (30 s interval, 5 healthy checks) and ECS take before an old task is let go.
pub const STABILIZE_SECS: f64 = 30.0;
/// Deregistration delay of a target before its task is signalled (seconds before scaling).
pub const DRAIN_SECS: f64 = 10.0;
/// ECS's default stopTimeout between SIGTERM and SIGKILL (seconds before scaling).
pub const STOP_TIMEOUT_SECS: f64 = 30.0;

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and have not yet reaped.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Where a new task comes from.
pub struct Origin {
    pub service_arn: Option<String>,
    pub deployment_id: Option<String>,
    pub started_by: Option<String>,
    pub group: String,
    pub lb_container_name: Option<String>,
    pub launch_type: String,
}

/// Adds a PROVISIONING task for `td_arn` to the state and returns its ARN; `launch` runs it.
pub fn create_task(st: &mut State, ctx: &Ctx, cluster_arn: &str, td_arn: &str, origin: Origin) -> Option<String> {
    let td = st.task_def(ctx, td_arn)?.body.clone();
    let cluster_name = crate::util::short_name(cluster_arn).to_string();
    let id = hex_id();
    let arn = ctx.arn(&format!("task/{cluster_name}/{id}"));
    let defs = td.get("containerDefinitions").and_then(Value::as_array).cloned().unwrap_or_default();
    let containers: Vec<Container> = defs
        .iter()
        .map(|c| Container {
            name: c.get("name").and_then(Value::as_str).unwrap_or("app").to_string(),
            image: c.get("image").and_then(Value::as_str).unwrap_or("").to_string(),
            essential: c.get("essential").and_then(Value::as_bool).unwrap_or(true),
            has_health_check: c.get("healthCheck").is_some(),
            arn: ctx.arn(&format!("container/{cluster_name}/{id}/{}", hex_id())),
            port: None,
            pid: None,
            last_status: "PENDING".into(),
            exit_code: None,
            reason: None,
            health_status: "UNKNOWN".into(),
        })
        .collect();
    let lb_container = origin.lb_container_name.as_ref().map(|name| {
        containers
            .iter()
            .position(|c| &c.name == name)
            .or_else(|| containers.iter().position(|c| c.essential))
            .unwrap_or(0)
    });
    let task = Task {
        arn: arn.clone(),
        id,
        ctx: ctx.clone(),
        cluster_arn: cluster_arn.to_string(),
        task_def_arn: td.get("taskDefinitionArn").and_then(Value::as_str).unwrap_or(td_arn).to_string(),
        service_arn: origin.service_arn,
        deployment_id: origin.deployment_id,
        started_by: origin.started_by,
        group: origin.group,
        last_status: "PROVISIONING".into(),
        desired_status: "RUNNING".into(),
        containers,
        created_at: now_epoch(),
        started_at: None,
        stopping_at: None,
        stopped_at: None,
        stop_code: None,
        stopped_reason: None,
        lb_container,
        lb_healthy: false,
        lb_fail_streak: 0,
        draining: false,
        launch_type: origin.launch_type,
        cpu: td.get("cpu").cloned().unwrap_or(Value::Null),
        memory: td.get("memory").cloned().unwrap_or(Value::Null),
        version: 1,
        failure_counted: false,
        stable_at: f64::MAX,
        overrides: Value::Null,
        run_request: Value::Null,
    };
    st.tasks.insert(arn.clone(), task);
    Some(arn)
}

/// Counts a task's failure against its deployment (once) while that deployment is rolling out.
pub fn count_failure(st: &mut State, arn: &str) {
    let Some(t) = st.tasks.get_mut(arn) else { return };
    if t.failure_counted {
        return;
    }
    t.failure_counted = true;
    let (Some(svc), Some(dep)) = (t.service_arn.clone(), t.deployment_id.clone()) else { return };
    let mut sd_update = None;
    if let Some(s) = st.services.get_mut(&svc) {
        s.failure_streak += 1;
        s.last_failure_at = now_epoch();
        if s.failure_streak == rolling::STREAK_BEFORE_BACKOFF {
            let msg = format!("(service {}) is unable to consistently start tasks successfully.", s.name);
            s.event(msg);
        }
        if let Some(d) = s.deployments.iter_mut().find(|d| d.id == dep) {
            if d.rollout_state == "IN_PROGRESS" {
                d.failed_tasks += 1;
                d.updated_at = now_epoch();
                sd_update = Some((d.sd_arn.clone(), d.failed_tasks));
            }
        }
    }
    if let Some((sd_arn, n)) = sd_update {
        if let Some(sd) = st.service_deployments.get_mut(&sd_arn) {
            sd.failure_count = sd.failure_count.max(n);
        }
    }
}

/// Marks the task STOPPED once it should stop and none of its processes is alive.
fn finalize_if_done(t: &mut Task) {
    if t.desired_status == "STOPPED" && t.last_status != "STOPPED" && t.containers.iter().all(|c| c.pid.is_none()) {
        t.last_status = "STOPPED".into();
        t.stopped_at = Some(now_epoch());
        t.draining = true;
        t.version += 1;
        for c in &mut t.containers {
            if c.last_status != "STOPPED" {
                c.last_status = "STOPPED".into();
            }
        }
    }
}

/// Fails a task before its processes run (agent-side failure): STOPPED with code and reason.
fn fail_task(sim: &Sim, arn: &str, code: &str, reason: String, container_reason: Option<String>) {
    let mut st = sim.lock();
    if let Some(t) = st.tasks.get_mut(arn) {
        if t.desired_status == "RUNNING" {
            t.desired_status = "STOPPED".into();
            t.stopping_at = Some(now_epoch());
            t.stop_code = Some(code.into());
            t.stopped_reason = Some(reason);
            t.draining = true;
            if let Some(r) = container_reason {
                for c in &mut t.containers {
                    c.reason = Some(r.clone());
                }
            }
        }
        finalize_if_done(t);
    }
    count_failure(&mut st, arn);
}

fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port())
}

struct HcParams {
    interval: Duration,
    timeout: Duration,
    retries: u32,
    start_period: Duration,
}

/// Runs a PROVISIONING task: secrets, image check, processes, monitors.
pub async fn launch(sim: Arc<Sim>, arn: String) {
    let (td, ctx, overrides, task_id) = {
        let st = sim.lock();
        let Some(t) = st.tasks.get(&arn) else { return };
        let Some(td) = st.task_def(&t.ctx, &t.task_def_arn) else { return };
        (td.body.clone(), t.ctx.clone(), t.overrides.clone(), t.id.clone())
    };
    let defs = td.get("containerDefinitions").and_then(Value::as_array).cloned().unwrap_or_default();
    let commands: Vec<Vec<String>> = defs.iter().map(|c| command_of(c, &overrides)).collect();

    // 1. Secrets, as the agent resolves them before any container starts.
    let mut envs: Vec<Vec<(String, String)>> = Vec::new();
    for c in &defs {
        let mut env: Vec<(String, String)> = c
            .get("environment")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((e.get("name")?.as_str()?.to_string(), e.get("value")?.as_str().unwrap_or("").to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // RunTask containerOverrides: environment entries replace or add.
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let over = overrides
            .get("containerOverrides")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|o| o.get("name").and_then(Value::as_str) == Some(name)));
        for e in over.and_then(|o| o.get("environment")).and_then(Value::as_array).cloned().unwrap_or_default() {
            if let (Some(k), Some(v)) = (e.get("name").and_then(Value::as_str), e.get("value").and_then(Value::as_str))
            {
                env.retain(|(n, _)| n != k);
                env.push((k.to_string(), v.to_string()));
            }
        }
        for s in c.get("secrets").and_then(Value::as_array).cloned().unwrap_or_default() {
            let name = s.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let from = s.get("valueFrom").and_then(Value::as_str).unwrap_or("").to_string();
            match resolve::resolve_secret(&sim.http, sim.cfg.aws_endpoint.as_deref(), &from, &ctx.account, &ctx.region)
                .await
            {
                Ok(v) => env.push((name, v)),
                Err(e) => {
                    let store = if from.contains(":secretsmanager:") { "asm" } else { "ssm" };
                    let reason = format!(
                        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from {store}: {e}"
                    );
                    fail_task(&sim, &arn, "TaskFailedToStart", reason, None);
                    return;
                }
            }
        }
        envs.push(env);
    }
    // 2. Image pulls.
    {
        let mut st = sim.lock();
        match st.tasks.get_mut(&arn) {
            Some(t) if t.desired_status == "RUNNING" => {
                t.last_status = "PENDING".into();
                t.version += 1;
            }
            Some(t) => {
                finalize_if_done(t);
                return;
            }
            None => return,
        }
    }
    for c in &defs {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        if let Err(e) = resolve::check_image(&sim.http, sim.cfg.registry_endpoint.as_deref(), image).await {
            let reason = format!("CannotPullContainerError: {e}");
            fail_task(&sim, &arn, "TaskFailedToStart", reason.clone(), Some(reason));
            return;
        }
    }
    // 3. Log drivers (awslogs): the group must exist unless the agent may create it.
    let mut log_targets = Vec::new();
    for c in &defs {
        let target = logs::target(c, sim.cfg.aws_endpoint.as_deref(), &ctx.account, &ctx.region, &task_id);
        if let Some(t) = &target {
            if let Err(reason) = logs::prepare(&sim.http, t).await {
                fail_task(&sim, &arn, "TaskFailedToStart", reason, None);
                return;
            }
        }
        log_targets.push(target);
    }
    // 4. Processes.
    let mut children = Vec::new();
    let mut log_pumps: Vec<Option<tokio::task::JoinHandle<()>>> = Vec::new();
    for (i, c) in defs.iter().enumerate() {
        let Some(port) = free_port() else {
            fail_task(&sim, &arn, "TaskFailedToStart", "ResourceInitializationError: no free port".into(), None);
            kill_children(&sim, children);
            return;
        };
        let mut cmd = tokio::process::Command::new(&sim.cfg.app_bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(envs[i].iter().cloned())
            .env("PORT", port.to_string())
            .env("SIM_TIME_SCALE", sim.cfg.time_scale.to_string())
            .env("ECS_CONTAINER_NAME", c.get("name").and_then(Value::as_str).unwrap_or("app"))
            .args(&commands[i])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if log_targets[i].is_some() {
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        } else {
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::inherit());
        }
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill the app if the sim dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                if let Some(pid) = child.id() {
                    sim.pids.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
                }
                let pump = match (log_targets[i].clone(), child.stdout.take(), child.stderr.take()) {
                    (Some(t), Some(out), Some(err)) => Some(tokio::spawn(logs::pump(sim.http.clone(), t, out, err))),
                    _ => None,
                };
                log_pumps.push(pump);
                children.push((i, port, child));
            }
            Err(e) => {
                kill_children(&sim, children);
                fail_task(
                    &sim,
                    &arn,
                    "TaskFailedToStart",
                    format!("CannotStartContainerError: cannot start {}: {e}", sim.cfg.app_bin.display()),
                    None,
                );
                return;
            }
        }
    }
    let mut health = Vec::new();
    {
        let mut st = sim.lock();
        let Some(t) = st.tasks.get_mut(&arn) else {
            drop(st);
            kill_children(&sim, children);
            return;
        };
        if t.desired_status != "RUNNING" {
            drop(st);
            kill_children(&sim, children);
            let mut st = sim.lock();
            if let Some(t) = st.tasks.get_mut(&arn) {
                finalize_if_done(t);
            }
            return;
        }
        let now = now_epoch();
        t.last_status = "RUNNING".into();
        t.started_at = Some(now);
        t.stable_at = now + sim.scale.secs(STABILIZE_SECS).as_secs_f64();
        t.version += 1;
        for (i, port, child) in &children {
            let c = &mut t.containers[*i];
            c.port = Some(*port);
            c.pid = child.id();
            c.last_status = "RUNNING".into();
        }
        for (i, c) in defs.iter().enumerate() {
            if let (Some(hc), Some(port)) = (c.get("healthCheck"), t.containers[i].port) {
                let f = |k: &str, d: f64| hc.get(k).and_then(Value::as_f64).unwrap_or(d);
                health.push((
                    i,
                    port,
                    HcParams {
                        interval: sim.scale.secs(f("interval", 30.0)),
                        timeout: sim.scale.secs(f("timeout", 5.0)).max(Duration::from_millis(200)),
                        retries: f("retries", 3.0).max(1.0) as u32,
                        start_period: if f("startPeriod", 0.0) > 0.0 {
                            sim.scale.secs(f("startPeriod", 0.0))
                        } else {
                            Duration::ZERO
                        },
                    },
                ));
            }
        }
    }
    for ((i, _port, child), pump) in children.into_iter().zip(log_pumps) {
        tokio::spawn(watch_exit(sim.clone(), arn.clone(), i, child, pump));
    }
    for (i, port, p) in health {
        tokio::spawn(container_health(sim.clone(), arn.clone(), i, port, p));
    }
    let lb_port = sim.lock().tasks.get(&arn).and_then(|t| t.lb_port());
    if let Some(port) = lb_port {
        tokio::spawn(target_health(sim.clone(), arn.clone(), port));
    }
}

fn kill_children(sim: &Sim, children: Vec<(usize, u16, tokio::process::Child)>) {
    for (_, _, mut child) in children {
        if let Some(pid) = child.id() {
            sim.pids.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
        }
        let _ = child.start_kill();
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }
}

/// The container's command: the RunTask override's, else the task definition's, else none
/// (sim-app serves). Non-string entries are dropped.
fn command_of(def: &Value, overrides: &Value) -> Vec<String> {
    let name = def.get("name").and_then(Value::as_str).unwrap_or("");
    let over = overrides
        .get("containerOverrides")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|o| o.get("name").and_then(Value::as_str) == Some(name)))
        .and_then(|o| o.get("command"))
        .and_then(Value::as_array);
    over.or_else(|| def.get("command").and_then(Value::as_array))
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn watch_exit(
    sim: Arc<Sim>,
    arn: String,
    idx: usize,
    mut child: tokio::process::Child,
    log_pump: Option<tokio::task::JoinHandle<()>>,
) {
    let pid = child.id();
    let status = child.wait().await;
    // The container's last lines reach CloudWatch Logs before its exit is recorded (bounded).
    if let Some(pump) = log_pump {
        let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    }
    if let Some(pid) = pid {
        sim.pids.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    }
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
        }
        Err(_) => 137,
    };
    let mut siblings = Vec::new();
    {
        let mut st = sim.lock();
        let mut failed = false;
        if let Some(t) = st.tasks.get_mut(&arn) {
            let essential = t.containers[idx].essential;
            {
                let c = &mut t.containers[idx];
                c.exit_code = Some(code);
                c.pid = None;
                c.last_status = "STOPPED".into();
            }
            if essential && t.desired_status == "RUNNING" {
                t.desired_status = "STOPPED".into();
                t.stopping_at = Some(now_epoch());
                t.stop_code = Some("EssentialContainerExited".into());
                t.stopped_reason = Some("Essential container in task exited".into());
                t.draining = true;
                failed = true;
                siblings = t.containers.iter().filter_map(|c| c.pid).collect();
            }
            finalize_if_done(t);
        }
        if failed {
            count_failure(&mut st, &arn);
        }
    }
    for pid in siblings {
        signal(pid, libc::SIGTERM);
    }
}

async fn probe(sim: &Sim, port: u16, timeout: Duration) -> bool {
    let url = format!("http://127.0.0.1:{port}/health");
    matches!(sim.http.get(url).timeout(timeout).send().await, Ok(r) if r.status().is_success())
}

fn task_alive(sim: &Sim, arn: &str) -> bool {
    sim.lock().tasks.get(arn).is_some_and(|t| t.is_live())
}

/// The container healthCheck, as an HTTP check of the app's /health.
async fn container_health(sim: Arc<Sim>, arn: String, idx: usize, port: u16, p: HcParams) {
    let started = Instant::now();
    let mut fails = 0u32;
    // Bounded by the task's life.
    loop {
        tokio::time::sleep(p.interval).await;
        if !task_alive(&sim, &arn) {
            return;
        }
        let ok = probe(&sim, port, p.timeout).await;
        let mut st = sim.lock();
        let Some(t) = st.tasks.get_mut(&arn) else { return };
        let c = &mut t.containers[idx];
        if ok {
            fails = 0;
            c.health_status = "HEALTHY".into();
        } else if started.elapsed() >= p.start_period {
            fails += 1;
            if fails >= p.retries {
                c.health_status = "UNHEALTHY".into();
            }
        }
    }
}

/// The target group's health check of a registered target.
async fn target_health(sim: Arc<Sim>, arn: String, port: u16) {
    let interval = sim.scale.secs(TG_INTERVAL_SECS);
    let mut ok_streak = 0u32;
    loop {
        if !task_alive(&sim, &arn) {
            return;
        }
        let ok = probe(&sim, port, interval.max(Duration::from_millis(200))).await;
        {
            let mut st = sim.lock();
            let Some(t) = st.tasks.get_mut(&arn) else { return };
            if ok {
                ok_streak += 1;
                t.lb_fail_streak = 0;
                if ok_streak >= TG_HEALTHY_THRESHOLD {
                    t.lb_healthy = true;
                }
            } else {
                ok_streak = 0;
                t.lb_fail_streak += 1;
                if t.lb_fail_streak >= TG_UNHEALTHY_THRESHOLD {
                    t.lb_healthy = false;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// What remains to do after `begin_stop`: drain, then signal these processes.
pub struct StopJob {
    pub arn: String,
    pub drain: bool,
    pub pids: Vec<u32>,
}

/// Marks a task as stopping the way the scheduler or StopTask does (synchronously, so the
/// scheduler's next step sees it); `finish_stop` then drains, signals and reaps.
pub fn begin_stop(st: &mut State, arn: &str, code: &str, reason: String) -> Option<StopJob> {
    let t = st.tasks.get_mut(arn)?;
    if t.last_status == "STOPPED" || t.stopping_at.is_some() {
        return None;
    }
    t.desired_status = "STOPPED".into();
    t.stopping_at = Some(now_epoch());
    t.stop_code = Some(code.into());
    t.stopped_reason = Some(reason);
    let drain = t.lb_container.is_some() && t.last_status == "RUNNING";
    t.draining = true;
    t.last_status = if drain { "DEACTIVATING".into() } else { "STOPPING".into() };
    t.version += 1;
    finalize_if_done(t);
    let pids: Vec<u32> = t.containers.iter().filter_map(|c| c.pid).collect();
    (!pids.is_empty()).then(|| StopJob { arn: arn.to_string(), drain, pids })
}

/// Drain (deregistration delay) when a load balancer targets the task, SIGTERM, SIGKILL after
/// stopTimeout; the exit watchers reap the processes and mark the task STOPPED.
pub async fn finish_stop(sim: Arc<Sim>, job: StopJob) {
    let StopJob { arn, drain, pids } = job;
    if drain {
        tokio::time::sleep(sim.scale.secs(DRAIN_SECS).max(Duration::from_millis(300))).await;
    }
    {
        let mut st = sim.lock();
        if let Some(t) = st.tasks.get_mut(&arn) {
            if t.last_status != "STOPPED" {
                t.last_status = "STOPPING".into();
            }
        }
    }
    for pid in &pids {
        signal(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + sim.scale.secs(STOP_TIMEOUT_SECS).max(Duration::from_millis(500));
    while Instant::now() < deadline {
        let alive = {
            let set = sim.pids.lock().unwrap_or_else(|e| e.into_inner());
            pids.iter().any(|p| set.contains(p))
        };
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<u32> = {
        let set = sim.pids.lock().unwrap_or_else(|e| e.into_inner());
        pids.iter().copied().filter(|p| set.contains(p)).collect()
    };
    for pid in left {
        signal(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_override_replaces_the_task_definitions_command_per_container() {
        let web = json!({"name": "web", "command": ["serve"]});
        let worker = json!({"name": "worker"});
        let none = Value::Null;
        assert_eq!(command_of(&web, &none), ["serve"]);
        assert!(command_of(&worker, &none).is_empty());
        let over = json!({"containerOverrides": [{"name": "web", "command": ["bin/migrate", "exit=1", 7]}]});
        assert_eq!(command_of(&web, &over), ["bin/migrate", "exit=1"]);
        assert!(command_of(&worker, &over).is_empty(), "another container's override does not apply");
    }
}
