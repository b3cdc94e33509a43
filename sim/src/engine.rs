//! The service scheduler: a loop that, every few milliseconds, moves each service toward its
//! desired state — rolling updates and the circuit breaker, traffic-shifting lifecycle stages,
//! rollbacks, health-based replacement — and records deployments and events as ECS words them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Sim;
use crate::bluegreen;
use crate::model::{Deployment, HookDetail, State, SvcDeployment};
use crate::rolling::{self, Counts};
use crate::tasks::{self, Origin, StopJob};
use crate::util::{deployment_id, hex_id, now_epoch, short_name};

/// Work the scheduler hands to async tasks after releasing the state lock.
pub enum Action {
    Launch(String),
    Stop(StopJob),
}

pub async fn run(sim: Arc<Sim>) {
    let mut iv = tokio::time::interval(Duration::from_millis(40));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        iv.tick().await;
        ticks += 1;
        let actions = {
            let mut st = sim.lock();
            if ticks % 100 == 0 {
                prune_stopped(&mut st);
            }
            let mut actions = Vec::new();
            let arns: Vec<String> = st.services.keys().cloned().collect();
            for arn in arns {
                tick_service(&sim, &mut st, &arn, &mut actions);
            }
            crate::codedeploy::tick(&sim, &mut st);
            actions
        };
        execute(&sim, actions);
    }
}

/// Forgets STOPPED tasks after an hour (as ECS does), and the oldest beyond 1000.
fn prune_stopped(st: &mut State) {
    let now = now_epoch();
    st.tasks.retain(|_, t| t.last_status != "STOPPED" || now - t.stopped_at.unwrap_or(now) < 3600.0);
    let mut stopped: Vec<(f64, String)> = st
        .tasks
        .values()
        .filter(|t| t.last_status == "STOPPED")
        .map(|t| (t.stopped_at.unwrap_or(0.0), t.arn.clone()))
        .collect();
    if stopped.len() > 1000 {
        stopped.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, arn) in stopped.iter().take(stopped.len() - 1000) {
            st.tasks.remove(arn);
        }
    }
}

pub fn execute(sim: &Arc<Sim>, actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Launch(arn) => {
                tokio::spawn(tasks::launch(sim.clone(), arn));
            }
            Action::Stop(job) => {
                tokio::spawn(tasks::finish_stop(sim.clone(), job));
            }
        }
    }
}

pub(crate) fn counts(st: &State, svc_arn: &str, dep_id: &str) -> Counts {
    let mut c = Counts::default();
    for t in st.tasks.values() {
        if t.service_arn.as_deref() == Some(svc_arn) && t.deployment_id.as_deref() == Some(dep_id) && t.is_live() {
            c.live += 1;
            if t.is_healthy() {
                c.healthy += 1;
            }
        }
    }
    c
}

/// Running and pending task counts of a deployment, for DescribeServices.
pub fn running_pending(st: &State, svc_arn: &str, dep_id: &str) -> (i64, i64) {
    let mut r = (0, 0);
    for t in st.tasks.values() {
        if t.service_arn.as_deref() == Some(svc_arn) && t.deployment_id.as_deref() == Some(dep_id) && t.is_live() {
            if t.last_status == "RUNNING" {
                r.0 += 1;
            } else {
                r.1 += 1;
            }
        }
    }
    r
}

fn task_ids(arns: &[String]) -> String {
    arns.iter().map(|a| format!("(task {})", short_name(a))).collect::<Vec<_>>().join(" ")
}

/// Starts `n` tasks of deployment `dep_id`, with the ECS "has started" event.
fn start_tasks(st: &mut State, svc_arn: &str, dep_id: &str, n: i64, actions: &mut Vec<Action>) {
    if n <= 0 {
        return;
    }
    let Some(svc) = st.services.get(svc_arn) else { return };
    let Some(dep) = svc.deployments.iter().find(|d| d.id == dep_id) else { return };
    let (ctx, cluster, td) = (svc.ctx.clone(), svc.cluster_arn.clone(), dep.task_definition.clone());
    let lb_container =
        svc.load_balancers.get(0).map(|lb| lb.get("containerName").and_then(Value::as_str).unwrap_or("").to_string());
    let group = format!("service:{}", svc.name);
    let launch_type = svc.launch_type.clone();
    let mut started = Vec::new();
    for _ in 0..n {
        let origin = Origin {
            service_arn: Some(svc_arn.to_string()),
            deployment_id: Some(dep_id.to_string()),
            started_by: Some(dep_id.to_string()),
            group: group.clone(),
            lb_container_name: lb_container.clone(),
            launch_type: launch_type.clone(),
        };
        if let Some(arn) = tasks::create_task(st, &ctx, &cluster, &td, origin) {
            actions.push(Action::Launch(arn.clone()));
            started.push(arn);
        }
    }
    if let Some(svc) = st.services.get_mut(svc_arn) {
        svc.steady_reported = false;
        let msg = format!("(service {}) has started {} tasks: {}.", svc.name, started.len(), task_ids(&started));
        svc.event(msg);
    }
}

/// Stops tasks with the scheduler's reason, with the ECS "has stopped" (and draining) events.
pub(crate) fn stop_tasks(
    st: &mut State,
    svc_arn: &str,
    arns: &[String],
    code: &str,
    reason: &str,
    actions: &mut Vec<Action>,
) {
    if arns.is_empty() {
        return;
    }
    let mut lb = 0;
    for arn in arns {
        if st.tasks.get(arn).is_some_and(|t| t.lb_container.is_some() && t.last_status == "RUNNING") {
            lb += 1;
        }
        if let Some(job) = tasks::begin_stop(st, arn, code, reason.to_string()) {
            actions.push(Action::Stop(job));
        }
    }
    if let Some(svc) = st.services.get_mut(svc_arn) {
        svc.steady_reported = false;
        let msg = format!("(service {}) has stopped {} running tasks: {}.", svc.name, arns.len(), task_ids(arns));
        svc.event(msg);
        if lb > 0 {
            let tg = svc.target_group_arn();
            let msg = format!("(service {}) has begun draining connections on {lb} tasks.", svc.name);
            svc.event(msg);
            let msg = format!("(service {}) deregistered {lb} targets in (target-group {tg})", svc.name);
            svc.event(msg);
        }
    }
}

/// Creates a new PRIMARY deployment (and its service deployment record) for `td_arn`.
pub fn start_deployment(st: &mut State, svc_arn: &str, td_arn: &str) {
    let now = now_epoch();
    let Some(svc) = st.services.get_mut(svc_arn) else { return };
    let id = deployment_id();
    let cluster = svc.cluster_name().to_string();
    let revision_arn = svc.ctx.arn(&format!(
        "service-revision/{cluster}/{}/{}",
        svc.name,
        crate::util::rand_u64() % 10_000_000_000_000_000
    ));
    let sd_arn = svc.ctx.arn(&format!("service-deployment/{cluster}/{}/{}", svc.name, &hex_id()[..22]));
    // Supersede a running service deployment.
    let mut superseded = Vec::new();
    let sources: Vec<(String, String, String)> = {
        // The deployment serving production first.
        let main = svc
            .prod_weights
            .as_ref()
            .and_then(|w| w.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|x| x.0.clone()))
            .or_else(|| svc.primary_id());
        let mut v: Vec<&Deployment> = svc.deployments.iter().collect();
        v.sort_by_key(|d| Some(&d.id) != main.as_ref());
        v.iter().map(|d| (d.revision_arn.clone(), d.id.clone(), d.task_definition.clone())).collect()
    };
    // A service that just switched to a traffic-shifting strategy has no weights yet: its
    // listeners must stay on blue until the lifecycle shifts them.
    if svc.is_traffic_shifting() && svc.prod_weights.is_none() && !sources.is_empty() {
        svc.prod_weights = Some(vec![(sources[0].1.clone(), 100.0)]);
        svc.test_weights = Some(vec![(sources[0].1.clone(), 100.0)]);
    }
    for d in svc.deployments.iter_mut() {
        if d.status == "PRIMARY" {
            d.status = "ACTIVE".into();
            if d.rollout_state == "IN_PROGRESS" {
                superseded.push(d.sd_arn.clone());
            }
        }
        d.updated_at = now;
    }
    let desired = svc.desired_count;
    svc.deployments.insert(
        0,
        Deployment {
            id: id.clone(),
            status: "PRIMARY".into(),
            task_definition: td_arn.to_string(),
            desired_count: desired,
            failed_tasks: 0,
            created_at: now,
            updated_at: now,
            rollout_state: "IN_PROGRESS".into(),
            rollout_state_reason: format!("ECS deployment {id} in progress."),
            revision_arn: revision_arn.clone(),
            sd_arn: sd_arn.clone(),
        },
    );
    svc.task_definition = td_arn.to_string();
    svc.steady_reported = false;
    let (breaker_enabled, _) = svc.breaker();
    let strategy = if sources.is_empty() { "ROLLING".to_string() } else { svc.strategy() };
    let sd = SvcDeployment {
        arn: sd_arn.clone(),
        ctx: svc.ctx.clone(),
        service_arn: svc_arn.to_string(),
        cluster_arn: svc.cluster_arn.clone(),
        created_at: now,
        started_at: None,
        finished_at: None,
        stopped_at: None,
        updated_at: now,
        sources,
        target: (revision_arn, id, td_arn.to_string()),
        status: "PENDING".into(),
        status_reason: None,
        strategy,
        deployment_configuration: svc.deployment_configuration.clone(),
        lifecycle_stage: None,
        stage_entered: now,
        hooks_created_for_stage: false,
        hooks: Vec::new(),
        step_index: 0,
        step_started: now,
        rollback: None,
        failure_threshold: rolling::breaker_threshold(desired),
        breaker_enabled,
        stop_request: None,
        desired_count: desired,
        failure_count: 0,
    };
    for a in superseded {
        if let Some(old) = st.service_deployments.get_mut(&a) {
            if !old.is_done() {
                old.status = "STOPPED".into();
                old.status_reason = Some("Stopped: a newer service deployment started.".into());
                old.stopped_at = Some(now);
                old.finished_at = Some(now);
                old.updated_at = now;
            }
        }
    }
    st.service_deployments.insert(sd_arn, sd);
}

fn is_traffic_strategy(s: &str) -> bool {
    matches!(s, "BLUE_GREEN" | "CANARY" | "LINEAR")
}

fn tick_service(sim: &Sim, st: &mut State, svc_arn: &str, actions: &mut Vec<Action>) {
    let now = now_epoch();
    let Some(svc) = st.services.get(svc_arn) else { return };
    let task_sets = crate::tasksets::uses_task_sets(svc);
    if svc.deployments.is_empty() && !task_sets {
        return;
    }
    let sd_arn = svc.deployments.first().map(|d| d.sd_arn.clone()).unwrap_or_default();
    let grace = svc.health_check_grace;
    let tg = svc.target_group_arn();
    let name = svc.name.clone();

    // Health-based replacement (container health checks, ELB health checks).
    let mut unhealthy: Vec<(String, String, String)> = Vec::new();
    for t in st.tasks.values() {
        if t.service_arn.as_deref() != Some(svc_arn) || !t.is_live() || t.last_status != "RUNNING" {
            continue;
        }
        let since = t.started_at.map(|s| now - s).unwrap_or(0.0);
        if t.health_status() == "UNHEALTHY" {
            unhealthy.push((
                t.arn.clone(),
                "Task failed container health checks".into(),
                format!("(service {name}) (task {}) failed container health checks.", t.id),
            ));
        } else if t.lb_container.is_some()
            && t.lb_fail_streak >= tasks::TG_UNHEALTHY_THRESHOLD
            && since >= sim.scale.secs(grace).as_secs_f64()
        {
            unhealthy.push((
                t.arn.clone(),
                format!("Task failed ELB health checks in (target-group {tg})"),
                format!(
                    "(service {name}) (port {}) is unhealthy in (target-group {tg}) due to (reason Health checks failed).",
                    t.lb_port().unwrap_or(0)
                ),
            ));
        }
    }
    for (arn, reason, event) in unhealthy {
        if let Some(svc) = st.services.get_mut(svc_arn) {
            svc.event(event);
        }
        tasks::count_failure(st, &arn);
        stop_tasks(st, svc_arn, &[arn], "ServiceSchedulerInitiated", &reason, actions);
    }
    if task_sets {
        crate::tasksets::tick(sim, st, svc_arn, actions);
        return;
    }

    // Pending service deployment state changes.
    let Some(sd) = st.service_deployments.get_mut(&sd_arn) else {
        rolling_tick(sim, st, svc_arn, actions);
        return;
    };
    if sd.status == "PENDING" {
        sd.status = "IN_PROGRESS".into();
        sd.started_at = Some(now);
        sd.updated_at = now;
        if is_traffic_strategy(&sd.strategy) {
            sd.lifecycle_stage = Some("RECONCILE_SERVICE".into());
            sd.stage_entered = now;
        }
    }
    if let Some(req) = sd.stop_request.take() {
        if req == "ROLLBACK" {
            begin_rollback(
                st,
                svc_arn,
                "Service deployment rolled back because of a StopServiceDeployment request.",
                false,
            );
        } else {
            let sd = st.service_deployments.get_mut(&sd_arn).unwrap();
            sd.status = "STOPPED".into();
            sd.status_reason = Some("Service deployment stopped by a StopServiceDeployment request.".into());
            sd.stopped_at = Some(now);
            sd.finished_at = Some(now);
            sd.updated_at = now;
            if let Some(svc) = st.services.get_mut(svc_arn) {
                let d = &mut svc.deployments[0];
                d.rollout_state = "FAILED".into();
                d.rollout_state_reason = "ECS deployment stopped by StopServiceDeployment.".into();
            }
        }
    }
    let sd = &st.service_deployments[&sd_arn];
    if sd.status == "IN_PROGRESS" && is_traffic_strategy(&sd.strategy) && !sd.sources.is_empty() {
        bg_tick(sim, st, svc_arn, &sd_arn, actions);
    } else {
        rolling_tick(sim, st, svc_arn, actions);
    }
}

/// Turns the primary deployment back to the last good one (circuit breaker, StopServiceDeployment
/// ROLLBACK, a hook's ROLLBACK). For traffic-shifting services production returns to it at once.
pub fn begin_rollback(st: &mut State, svc_arn: &str, reason: &str, breaker: bool) {
    let now = now_epoch();
    let Some(svc) = st.services.get_mut(svc_arn) else { return };
    let sd_arn = svc.deployments[0].sd_arn.clone();
    let failed_id = svc.deployments[0].id.clone();
    let target = st
        .service_deployments
        .get(&sd_arn)
        .and_then(|sd| sd.sources.first().cloned())
        .map(|(rev, id, td)| (id, td, rev))
        .or_else(|| svc.last_completed.clone());
    let target = match (&svc.last_completed, target) {
        // The rolling circuit breaker returns to the last COMPLETED deployment.
        (Some(lc), _) if breaker && !svc.is_traffic_shifting() => Some(lc.clone()),
        (_, t) => t,
    };
    let Some((dep_id, td, rev)) = target else {
        if let Some(sd) = st.service_deployments.get_mut(&sd_arn) {
            sd.status = "ROLLBACK_FAILED".into();
            sd.status_reason = Some("No previous deployment to roll back to.".into());
            sd.finished_at = Some(now);
            sd.updated_at = now;
        }
        return;
    };
    let name = svc.name.clone();
    {
        let d = &mut svc.deployments[0];
        d.status = "ACTIVE".into();
        d.rollout_state = "FAILED".into();
        if breaker {
            d.rollout_state_reason = "ECS deployment circuit breaker: tasks failed to start.".into();
        } else {
            d.rollout_state_reason = format!("ECS deployment {failed_id} rolled back.");
        }
        d.updated_at = now;
    }
    let pos = svc.deployments.iter().position(|d| d.id == dep_id);
    let mut dep = match pos {
        Some(i) => svc.deployments.remove(i),
        None => Deployment {
            id: deployment_id(),
            status: "PRIMARY".into(),
            task_definition: td.clone(),
            desired_count: svc.desired_count,
            failed_tasks: 0,
            created_at: now,
            updated_at: now,
            rollout_state: "IN_PROGRESS".into(),
            rollout_state_reason: String::new(),
            revision_arn: rev.clone(),
            sd_arn: sd_arn.clone(),
        },
    };
    dep.status = "PRIMARY".into();
    dep.rollout_state = "IN_PROGRESS".into();
    dep.rollout_state_reason = if breaker {
        format!("ECS deployment circuit breaker: rolling back to deploymentId {dep_id}.")
    } else {
        format!("ECS deployment rolling back to deploymentId {dep_id}.")
    };
    dep.failed_tasks = 0;
    dep.sd_arn = sd_arn.clone();
    dep.updated_at = now;
    dep.desired_count = svc.desired_count;
    let new_primary = dep.id.clone();
    svc.deployments.insert(0, dep);
    svc.task_definition = td;
    svc.steady_reported = false;
    if svc.is_traffic_shifting() {
        svc.prod_weights = Some(vec![(new_primary.clone(), 100.0)]);
        svc.test_weights = Some(vec![(new_primary, 100.0)]);
    }
    if breaker {
        svc.event(format!("(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."));
    }
    svc.event(format!("(service {name}) rolling back to deployment {dep_id}."));
    if let Some(sd) = st.service_deployments.get_mut(&sd_arn) {
        sd.status = "ROLLBACK_IN_PROGRESS".into();
        sd.status_reason = Some(reason.to_string());
        sd.rollback = Some(json!({"reason": reason, "startedAt": now, "serviceRevisionArn": rev}));
        sd.updated_at = now;
        for h in &mut sd.hooks {
            if h.status == "AWAITING_ACTION" || h.status == "IN_PROGRESS" {
                h.status = "FAILED".into();
            }
        }
    }
}

fn rolling_tick(sim: &Sim, st: &mut State, svc_arn: &str, actions: &mut Vec<Action>) {
    let now = now_epoch();
    let Some(svc) = st.services.get(svc_arn) else { return };
    let desired = svc.desired_count;
    let (min_pct, max_pct) = svc.percents();
    let (breaker_on, rollback_on) = svc.breaker();
    let primary = &svc.deployments[0];
    let primary_id = primary.id.clone();
    let primary_failed = primary.failed_tasks;
    let primary_state = primary.rollout_state.clone();
    let old_ids: Vec<String> = svc.deployments[1..].iter().map(|d| d.id.clone()).collect();

    if primary_state == "IN_PROGRESS" && breaker_on && primary_failed >= rolling::breaker_threshold(desired) {
        let can_roll_back = rollback_on && svc.last_completed.as_ref().is_some_and(|lc| lc.0 != primary_id);
        if can_roll_back {
            begin_rollback(st, svc_arn, "ECS deployment circuit breaker: tasks failed to start.", true);
        } else {
            let svc = st.services.get_mut(svc_arn).unwrap();
            let name = svc.name.clone();
            let d = &mut svc.deployments[0];
            d.rollout_state = "FAILED".into();
            d.rollout_state_reason = "ECS deployment circuit breaker: tasks failed to start.".into();
            d.updated_at = now;
            let (sd_arn, id) = (d.sd_arn.clone(), d.id.clone());
            svc.event(format!("(service {name}) (deployment {id}) deployment failed: tasks failed to start."));
            if let Some(sd) = st.service_deployments.get_mut(&sd_arn) {
                sd.status = "STOPPED".into();
                sd.status_reason = Some("ECS deployment circuit breaker: tasks failed to start.".into());
                sd.stopped_at = Some(now);
                sd.finished_at = Some(now);
                sd.updated_at = now;
            }
        }
        return;
    }

    let pc = counts(st, svc_arn, &primary_id);
    let mut oc = Counts::default();
    for id in &old_ids {
        let c = counts(st, svc_arn, id);
        oc.live += c.live;
        oc.healthy += c.healthy;
    }
    let plan = rolling::plan_rolling(desired, min_pct, max_pct, pc, oc, primary_state != "FAILED");
    let svc = &st.services[svc_arn];
    let backoff = rolling::launch_backoff_secs(svc.failure_streak);
    if plan.start > 0 && now - svc.last_failure_at < sim.scale.secs(backoff).as_secs_f64() && backoff > 0.0 {
        // Throttled: ECS backs off services whose tasks keep failing to start.
    } else {
        start_tasks(st, svc_arn, &primary_id, plan.start, actions);
    }
    let pick = |st: &State, ids: &[String], n: i64| -> Vec<String> {
        let mut v: Vec<(&String, bool, f64)> = st
            .tasks
            .values()
            .filter(|t| t.service_arn.as_deref() == Some(svc_arn) && t.is_live())
            .filter(|t| t.deployment_id.as_ref().is_some_and(|d| ids.contains(d)))
            .map(|t| (&t.arn, t.is_healthy(), t.created_at))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)));
        v.into_iter().take(n.max(0) as usize).map(|x| x.0.clone()).collect()
    };
    let reason = format!("Scaling activity initiated by (deployment {primary_id})");
    let old_stop = pick(st, &old_ids, plan.stop_old);
    stop_tasks(st, svc_arn, &old_stop, "ServiceSchedulerInitiated", &reason, actions);
    let surplus = pick(st, std::slice::from_ref(&primary_id), plan.stop_primary);
    stop_tasks(st, svc_arn, &surplus, "ServiceSchedulerInitiated", &reason, actions);

    // Drop drained old deployments.
    let live_old: Vec<String> = old_ids.iter().filter(|id| counts(st, svc_arn, id).live > 0).cloned().collect();
    let svc = st.services.get_mut(svc_arn).unwrap();
    svc.deployments.retain(|d| d.status == "PRIMARY" || live_old.contains(&d.id));
    if svc.is_traffic_shifting() {
        svc.prod_weights = Some(vec![(primary_id.clone(), 100.0)]);
        svc.test_weights = Some(vec![(primary_id.clone(), 100.0)]);
    }

    let pc = counts(st, svc_arn, &primary_id);
    let oc_live = live_old.len() as i64;
    if rolling::is_steady(desired, pc, Counts { live: oc_live, healthy: 0 }) {
        let svc = st.services.get_mut(svc_arn).unwrap();
        let name = svc.name.clone();
        let d = &mut svc.deployments[0];
        if d.rollout_state == "IN_PROGRESS" {
            d.rollout_state = "COMPLETED".into();
            d.rollout_state_reason = format!("ECS deployment {} completed.", d.id);
            d.updated_at = now;
            let (id, td, rev, sd_arn) =
                (d.id.clone(), d.task_definition.clone(), d.revision_arn.clone(), d.sd_arn.clone());
            svc.last_completed = Some((id.clone(), td, rev));
            svc.event(format!("(service {name}) (deployment {id}) deployment completed."));
            if let Some(sd) = st.service_deployments.get_mut(&sd_arn) {
                sd.status = match sd.status.as_str() {
                    "ROLLBACK_IN_PROGRESS" | "ROLLBACK_REQUESTED" => "ROLLBACK_SUCCESSFUL".into(),
                    "IN_PROGRESS" | "PENDING" => "SUCCESSFUL".into(),
                    other => other.to_string(),
                };
                if sd.finished_at.is_none() {
                    sd.finished_at = Some(now);
                }
                sd.updated_at = now;
            }
        }
        let svc = st.services.get_mut(svc_arn).unwrap();
        svc.failure_streak = 0;
        if !svc.steady_reported {
            svc.steady_reported = true;
            svc.event(format!("(service {name}) has reached a steady state."));
        }
    }
}

/// One step of a BLUE_GREEN / CANARY / LINEAR service deployment through its lifecycle stages.
fn bg_tick(sim: &Sim, st: &mut State, svc_arn: &str, sd_arn: &str, actions: &mut Vec<Action>) {
    let now = now_epoch();
    let (desired, green, blue, name, strategy, cfg, hooks_cfg) = {
        let svc = &st.services[svc_arn];
        let sd = &st.service_deployments[sd_arn];
        (
            svc.desired_count,
            sd.target.1.clone(),
            sd.sources[0].1.clone(),
            svc.name.clone(),
            sd.strategy.clone(),
            sd.deployment_configuration.clone(),
            sd.deployment_configuration.get("lifecycleHooks").and_then(Value::as_array).cloned().unwrap_or_default(),
        )
    };
    // Failing green tasks: the deployment fails and production stays on (returns to) blue.
    let failed = st.services[svc_arn].deployments.iter().find(|d| d.id == green).map(|d| d.failed_tasks).unwrap_or(0);
    if failed >= rolling::breaker_threshold(desired) {
        begin_rollback(st, svc_arn, "ECS deployment circuit breaker: tasks failed to start.", true);
        return;
    }
    // A hook nobody answered within its timeout: TIMED_OUT, then its timeout action.
    let sd = st.service_deployments.get_mut(sd_arn).unwrap();
    let mut timed_out_rollback = None;
    for h in sd.hooks.iter_mut().filter(|h| h.status == "AWAITING_ACTION") {
        if now - h.started_at >= sim.scale.minutes(h.timeout_minutes).as_secs_f64() {
            h.status = "TIMED_OUT".into();
            if h.timeout_action != "CONTINUE" {
                timed_out_rollback = Some(h.hook_id.clone());
            }
        }
    }
    if let Some(hook) = timed_out_rollback {
        let reason = format!("Service deployment rolled back because lifecycle hook {hook} timed out.");
        begin_rollback(st, svc_arn, &reason, false);
        return;
    }
    // Bounded: at most one pass per stage per tick.
    for _ in 0..bluegreen::STAGES.len() {
        let sd = st.service_deployments.get_mut(sd_arn).unwrap();
        let stage = sd.lifecycle_stage.clone().unwrap_or_else(|| "RECONCILE_SERVICE".into());
        if !sd.hooks_created_for_stage {
            sd.hooks_created_for_stage = true;
            let hook_stages = bluegreen::hook_stages_for(&stage);
            for h in &hooks_cfg {
                let stages: Vec<&str> = h
                    .get("lifecycleStages")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if stages.iter().any(|s| hook_stages.contains(s)) {
                    let holds = bluegreen::hook_holds(h);
                    let (timeout_minutes, timeout_action) = bluegreen::hook_timeout(h);
                    sd.hooks.push(HookDetail {
                        hook_id: hex_id(),
                        stage: stage.clone(),
                        target_type: h.get("targetType").and_then(Value::as_str).unwrap_or("AWS_LAMBDA").to_string(),
                        target_arn: h.get("hookTargetArn").and_then(Value::as_str).unwrap_or("").to_string(),
                        status: if holds { "AWAITING_ACTION".into() } else { "SUCCEEDED".into() },
                        started_at: now,
                        timeout_minutes,
                        timeout_action,
                    });
                }
            }
            sd.updated_at = now;
        }
        let stage_entered = sd.stage_entered;
        let done = match stage.as_str() {
            "SCALE_UP" => {
                let c = counts(st, svc_arn, &green);
                start_tasks(st, svc_arn, &green, desired - c.live, actions);
                c.healthy >= desired
            }
            "TEST_TRAFFIC_SHIFT" => {
                let svc = st.services.get_mut(svc_arn).unwrap();
                svc.test_weights = Some(vec![(green.clone(), 100.0), (blue.clone(), 0.0)]);
                true
            }
            "PRODUCTION_TRAFFIC_SHIFT" => {
                let (steps, bake) = bluegreen::production_steps(&strategy, &cfg);
                let sd = st.service_deployments.get_mut(sd_arn).unwrap();
                let apply = if sd.step_index == 0 {
                    true
                } else {
                    sd.step_index < steps.len() && now - sd.step_started >= sim.scale.minutes(bake).as_secs_f64()
                };
                if apply {
                    let pct = steps[sd.step_index];
                    sd.step_index += 1;
                    sd.step_started = now;
                    let svc = st.services.get_mut(svc_arn).unwrap();
                    svc.prod_weights = Some(vec![(green.clone(), pct), (blue.clone(), 100.0 - pct)]);
                    svc.event(format!("(service {name}) shifted {pct}% of production traffic to deployment {green}."));
                }
                st.service_deployments[sd_arn].step_index >= steps.len()
            }
            "BAKE_TIME" => {
                let bake = cfg.get("bakeTimeInMinutes").and_then(Value::as_f64).unwrap_or(0.0);
                now - stage_entered >= sim.scale.minutes(bake).as_secs_f64()
            }
            "CLEAN_UP" => {
                let svc = st.services.get_mut(svc_arn).unwrap();
                svc.prod_weights = Some(vec![(green.clone(), 100.0)]);
                svc.test_weights = Some(vec![(green.clone(), 100.0)]);
                let old_ids: Vec<String> =
                    svc.deployments.iter().filter(|d| d.id != green).map(|d| d.id.clone()).collect();
                let live: Vec<String> = st
                    .tasks
                    .values()
                    .filter(|t| t.service_arn.as_deref() == Some(svc_arn) && t.is_live())
                    .filter(|t| t.deployment_id.as_ref().is_some_and(|d| old_ids.contains(d)))
                    .map(|t| t.arn.clone())
                    .collect();
                if !live.is_empty() {
                    stop_tasks(
                        st,
                        svc_arn,
                        &live,
                        "ServiceSchedulerInitiated",
                        &format!("Scaling activity initiated by (deployment {green})"),
                        actions,
                    );
                }
                live.is_empty()
            }
            _ => true,
        };
        let sd = st.service_deployments.get_mut(sd_arn).unwrap();
        let held = sd.hooks.iter().any(|h| h.stage == stage && h.status == "AWAITING_ACTION");
        if !done || held {
            return;
        }
        match bluegreen::next_stage(&stage) {
            Some(next) => {
                sd.lifecycle_stage = Some(next.to_string());
                sd.stage_entered = now;
                sd.hooks_created_for_stage = false;
                sd.updated_at = now;
            }
            None => {
                sd.status = "SUCCESSFUL".into();
                sd.finished_at = Some(now);
                sd.updated_at = now;
                let svc = st.services.get_mut(svc_arn).unwrap();
                svc.deployments.retain(|d| d.id == green);
                let d = &mut svc.deployments[0];
                d.rollout_state = "COMPLETED".into();
                d.rollout_state_reason = format!("ECS deployment {green} completed.");
                d.updated_at = now;
                svc.last_completed = Some((green.clone(), d.task_definition.clone(), d.revision_arn.clone()));
                svc.event(format!("(service {name}) (deployment {green}) deployment completed."));
                return;
            }
        }
    }
}
