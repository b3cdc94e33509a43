//! The pure side of CodeDeploy blue/green deployments: which deployment group deploys a
//! service (as ecspresso finds it, refusing to guess between several), the AppSpec deployer
//! sends (the new task definition with the container, port, network configuration, platform
//! version and capacity provider strategy of the service's current task set), the gate that
//! decides from one observation — wait, continue the READY wait once the test listener
//! answered well, healthy once production is all on green and answered well for the bake, or
//! failed —, the way back after a failure, and the lifecycle stages and traffic split for the
//! report. No I/O: every decision is a table test.

use std::collections::VecDeque;
use std::time::Duration;

use aws_sdk_codedeploy::types::DeploymentStatus;
use aws_sdk_ecs::types::HealthStatus;
use serde_json::{Value, json};

use super::codedeploy_view::{CodeDeployView, GroupView};
use super::gate::{Decision, DeployGate, Failure, Observation, Probe, ProbeStreaks};
use super::plan::{CodeDeploySettings, GateConfig};
use super::settle::Route;
use super::view::{ServiceView, TaskSetView, short};

/// What CreateDeployment sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDeployment {
    pub application: String,
    pub deployment_group: String,
    /// `None`: the deployment group's configuration.
    pub deployment_config: Option<String>,
    /// The AppSpec, as JSON.
    pub appspec: String,
    pub description: String,
}

/// The deployment group that deploys `cluster`/`service`, among `groups` (those of the
/// application(s) searched). `settings` may name the group; several matches are refused, as
/// is none. The error says what to pass (the caller names the service).
pub fn pick_group<'g>(
    groups: &'g [GroupView],
    cluster: &str,
    service: &str,
    settings: &CodeDeploySettings,
) -> Result<&'g GroupView, String> {
    let named = |g: &&GroupView| settings.deployment_group.as_ref().is_none_or(|n| *n == g.name);
    let found: Vec<&GroupView> = groups.iter().filter(named).filter(|g| g.deploys(cluster, service)).collect();
    let (cluster, service) = (short(cluster), short(service));
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let searched = match (&settings.application, &settings.deployment_group) {
                (Some(a), Some(g)) => format!("deployment group {g} of application {a} does not deploy it"),
                (Some(a), None) => format!("no deployment group of application {a} deploys it"),
                (None, Some(g)) => format!("no deployment group named {g} (in any ECS application) deploys it"),
                (None, None) => "no deployment group of any ECS application deploys it".to_string(),
            };
            Err(format!(
                "it uses the CODE_DEPLOY deployment controller, but {searched}. Create the CodeDeploy application and \
                 deployment group for {cluster}/{service} (the console names them AppECS-{cluster}-{service} and \
                 DgpECS-{cluster}-{service}), or pass --codedeploy-application and --codedeploy-deployment-group \
                 (deployer.toml: codedeploy-application, codedeploy-deployment-group); nothing was changed"
            ))
        }
        many => {
            let names: Vec<String> = many.iter().map(|g| format!("{}/{}", g.application, g.name)).collect();
            Err(format!(
                "{} CodeDeploy deployment groups deploy {cluster}/{service} ({}); deployer does not guess: pass \
                 --codedeploy-application and --codedeploy-deployment-group; nothing was changed",
                many.len(),
                names.join(", ")
            ))
        }
    }
}

/// Before any change: the group can run a blue/green deployment.
pub fn check_group(group: &GroupView) -> Result<(), String> {
    if !group.blue_green {
        return Err(format!(
            "deployment group {}/{} has no target group pair (loadBalancerInfo.targetGroupPairInfoList); an ECS \
             blue/green deployment needs one — add the pair and its production listener to the group; nothing was changed",
            group.application, group.name
        ));
    }
    Ok(())
}

/// The task set whose settings the replacement copies: the PRIMARY one.
fn current(service: &ServiceView) -> Option<&TaskSetView> {
    service.primary_task_set().or(service.task_sets.first())
}

/// The AppSpec (JSON) for `task_definition`: LoadBalancerInfo from the service's current task
/// set (else the service), and its network configuration, platform version and capacity
/// provider strategy when it has them.
pub fn appspec(service: &ServiceView, task_definition: &str) -> Result<String, String> {
    let set = current(service);
    let lbs = set.map(|t| t.load_balancers.as_slice()).filter(|l| !l.is_empty()).unwrap_or(&service.load_balancers);
    let lb = lbs.iter().find(|lb| lb.container_name().is_some() && lb.container_port().is_some()).ok_or_else(|| {
        "it has no load balancer with containerName and containerPort; a CodeDeploy blue/green deployment shifts \
         traffic between two target groups behind one — add loadBalancers to the service; nothing was changed"
            .to_string()
    })?;
    let mut props = json!({
        "TaskDefinition": task_definition,
        "LoadBalancerInfo": {"ContainerName": lb.container_name(), "ContainerPort": lb.container_port()},
    });
    let network =
        set.and_then(|t| t.network_configuration.as_ref()).or(service.placement.network_configuration.as_ref());
    if let Some(a) = network.and_then(|n| n.awsvpc_configuration()) {
        let mut c = json!({"Subnets": a.subnets(), "SecurityGroups": a.security_groups()});
        if let Some(p) = a.assign_public_ip() {
            c["AssignPublicIp"] = json!(p.as_str());
        }
        props["NetworkConfiguration"] = json!({"AwsvpcConfiguration": c});
    }
    if let Some(p) = set.and_then(|t| t.platform_version.clone()).or_else(|| service.placement.platform_version.clone())
    {
        props["PlatformVersion"] = json!(p);
    }
    let cps = set.map(|t| t.capacity_provider_strategy.as_slice()).filter(|c| !c.is_empty());
    let cps = cps.unwrap_or(&service.placement.capacity_provider_strategy);
    if !cps.is_empty() {
        let items: Vec<Value> = cps
            .iter()
            .map(|c| json!({"CapacityProvider": c.capacity_provider(), "Weight": c.weight(), "Base": c.base()}))
            .collect();
        props["CapacityProviderStrategy"] = Value::Array(items);
    }
    let spec = json!({
        "version": 0.0,
        "Resources": [{"TargetService": {"Type": "AWS::ECS::Service", "Properties": props}}],
    });
    Ok(spec.to_string())
}

/// The lifecycle stages of `cd` seen so far, in order: every event that started, then `Ready`
/// while held before rerouting and `TerminationWait` while blue is kept.
pub fn stages_seen(cd: &CodeDeployView) -> Vec<String> {
    use aws_sdk_codedeploy::types::LifecycleEventStatus::Pending;
    let mut v: Vec<String> = cd.events.iter().filter(|(_, s)| *s != Pending).map(|(n, _)| n.clone()).collect();
    if let Some(s) = cd.stage().filter(|s| s == "Ready" || s == "TerminationWait") {
        v.push(s);
    }
    v
}

/// Green's share of production and test traffic, in percent, as the report shows it.
pub fn traffic(cd: &CodeDeployView, group: &GroupView) -> (f64, f64) {
    let test = if group.test_route && cd.event_done("AllowTestTraffic") && !cd.given_up() { 100.0 } else { 0.0 };
    (cd.production_weight(), test)
}

/// The way back after a failure, from what CodeDeploy was doing: rolling back by itself →
/// wait; still running (Created … Ready, the termination wait) → StopDeployment with rollback;
/// finished (blue gone), or failed without rollback after production moved → a deployment of
/// the previous task definition; failed before production moved → nothing to undo.
pub fn route(failure: Option<&Failure>, last: Option<&Observation>, deployment: &str) -> Route {
    if failure.is_some_and(Failure::ecs_rolls_back) {
        return Route::WaitForCodeDeploy;
    }
    match last.and_then(|o| o.code_deploy.as_ref()) {
        Some(cd) if cd.status_is(DeploymentStatus::Succeeded) => Route::Redeploy,
        Some(cd) if cd.given_up() && cd.rollback_deployment.is_none() && cd.production_weight() > 0.0 => {
            Route::Redeploy
        }
        Some(cd) if cd.given_up() => Route::WaitForCodeDeploy,
        _ => Route::StopCodeDeploy { deployment: deployment.to_string() },
    }
}

/// The gate of a CodeDeploy deployment: probe streaks, whether the READY wait was released,
/// when production became steady on green, and remarks for the timeline.
#[derive(Debug, Clone)]
pub struct CodeDeployGate {
    config: GateConfig,
    group: GroupView,
    wait_for_termination: bool,
    probes: ProbeStreaks,
    continued: bool,
    steady_since: Option<Duration>,
    notes: VecDeque<String>,
    noted_termination: bool,
}

impl CodeDeployGate {
    pub fn new(config: GateConfig, group: GroupView, wait_for_termination: bool) -> CodeDeployGate {
        CodeDeployGate {
            config,
            group,
            wait_for_termination,
            probes: ProbeStreaks::default(),
            continued: false,
            steady_since: None,
            notes: VecDeque::new(),
            noted_termination: false,
        }
    }

    fn needed(&self) -> u32 {
        self.config.probe_successes
    }

    /// Test URLs reach green only through the group's test listener route.
    fn test_urls(&self) -> &[String] {
        if self.group.test_route { &self.config.test_urls } else { &[] }
    }

    fn all_urls(&self) -> Vec<String> {
        let mut urls = self.config.health_urls.clone();
        urls.extend(self.test_urls().iter().cloned());
        urls
    }

    /// Held Ready on test traffic: continue once every test URL answered well.
    fn release(&self, cd: &CodeDeployView) -> Result<Decision, String> {
        let hook_id = cd.id.clone();
        if self.config.test_urls.is_empty() {
            let note = "no --test-url: green is up and steady to ECS; continuing without a test-traffic gate";
            return Ok(Decision::Continue { hook_id, note: note.into() });
        }
        if !self.group.test_route {
            let note = "the deployment group has no test listener route, so --test-url would reach blue; continuing \
                        without a test-traffic gate";
            return Ok(Decision::Continue { hook_id, note: note.into() });
        }
        let needed = self.needed();
        match self.probes.unsatisfied(&self.config.test_urls, needed) {
            Some((url, n)) => Err(format!("test listener {url} to answer well {needed} times in a row ({n} so far)")),
            None => Ok(Decision::Continue {
                hook_id,
                note: format!(
                    "test traffic gate passed: {} answered well {needed} times in a row",
                    self.config.test_urls.join(", ")
                ),
            }),
        }
    }

    /// `Ok` with a decision, `Err` with what the gate waits for.
    fn waiting(&mut self, cd: &CodeDeployView, obs: &Observation) -> Result<Decision, String> {
        if !self.continued {
            if cd.ready_wait() {
                return self.release(cd);
            }
            if cd.rerouting() || cd.rerouted() {
                self.continued = true;
                self.notes.push_back(match self.group.ready_wait_minutes {
                    None => {
                        "the deployment group reroutes without waiting (deploymentReadyOption CONTINUE_DEPLOYMENT): \
                             no test-traffic gate ran; production traffic is gated"
                            .into()
                    }
                    Some(_) => "CodeDeploy rerouted production without deployer's ContinueDeployment; no test-traffic \
                                gate ran"
                        .into(),
                });
            }
        }
        if !cd.rerouted() {
            self.steady_since = None;
            let mut what = match cd.stage() {
                Some(s) => format!("CodeDeploy {s}"),
                None => format!("CodeDeploy to start the deployment ({})", cd.status_name()),
            };
            match &cd.green {
                Some(g) if cd.rerouting() => what.push_str(&format!(" (production {}% green)", g.weight)),
                Some(g) => what.push_str(&format!(" (green task set: {} of {} running)", g.running, g.desired)),
                None => {}
            }
            return Err(what);
        }
        let running = obs.tasks.iter().filter(|t| t.running());
        if let Some(t) = running.clone().find(|t| t.health == Some(HealthStatus::Unhealthy)) {
            self.steady_since = None;
            return Err(format!("{t} to become healthy"));
        }
        let needed = self.needed();
        if let Some((url, n)) = self.probes.unsatisfied(&self.all_urls(), needed) {
            self.steady_since = None;
            return Err(format!("{url} to answer well {needed} times in a row ({n} so far)"));
        }
        let since = *self.steady_since.get_or_insert(obs.elapsed);
        let baked = obs.elapsed.saturating_sub(since);
        if baked < self.config.bake {
            return Err(format!("baking: {}s of {}s", baked.as_secs(), self.config.bake.as_secs()));
        }
        let done = cd.status_is(DeploymentStatus::Succeeded);
        if self.wait_for_termination && !done {
            return Err(format!(
                "CodeDeploy's termination wait to end ({} min, the original task set kept)",
                self.group.termination_wait_minutes
            ));
        }
        if !done && !self.noted_termination {
            self.noted_termination = true;
            self.notes.push_back(format!(
                "production is all on green; CodeDeploy keeps the original task set for its termination wait ({} min) \
                 and deletes it then — deployer does not wait for that (--codedeploy-wait-for-termination does)",
                self.group.termination_wait_minutes
            ));
        }
        Ok(Decision::Healthy)
    }
}

impl DeployGate for CodeDeployGate {
    fn observe(&mut self, obs: &Observation) -> Decision {
        let what = match obs.code_deploy.as_ref() {
            None => Err("CodeDeploy to show the deployment".to_string()),
            Some(cd) if cd.given_up() => {
                let reason = format!(
                    "deployment {} {}: {}",
                    cd.id,
                    cd.status_name(),
                    cd.error.as_deref().unwrap_or("no reason given")
                );
                return Decision::Failed(Failure::CodeDeploy { reason, rolls_back: cd.rollback_deployment.is_some() });
            }
            Some(cd) => {
                if let Some(task) = obs.tasks.iter().find(|t| t.failed()) {
                    return Decision::Failed(Failure::TaskStopped { task: task.to_string() });
                }
                if let Some(failure) = self.probes.record(&obs.probes, self.config.probe_failures) {
                    return Decision::Failed(failure);
                }
                let cd = cd.clone();
                self.waiting(&cd, obs)
            }
        };
        match what {
            Ok(decision) => decision,
            Err(what) if obs.elapsed >= self.config.timeout => Decision::Failed(Failure::Timeout { waiting_for: what }),
            Err(what) => Decision::Wait(what),
        }
    }

    fn probe_urls(&self, last: Option<&Observation>) -> Vec<String> {
        let Some(cd) = last.and_then(|o| o.code_deploy.as_ref()) else { return Vec::new() };
        let mut urls = Vec::new();
        if cd.ready_wait() || cd.event_done("AllowTestTraffic") {
            urls.extend(self.test_urls().iter().cloned());
        }
        if cd.rerouting() || cd.rerouted() {
            urls.extend(self.config.health_urls.iter().cloned());
        }
        urls
    }

    fn continued(&mut self) {
        self.continued = true;
    }

    fn phase_note(&self) -> &'static str {
        if self.continued { " with production traffic on green" } else { " before production traffic shifted" }
    }

    fn take_note(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    fn last_bad_probe(&self) -> Option<&Probe> {
        self.probes.last_bad()
    }
}

#[cfg(test)]
mod tests {
    use super::super::codedeploy_view::{EVENTS, TaskSetInfo};
    use super::super::view::{Placement, TaskStatus, TaskView};
    use super::*;
    use aws_sdk_codedeploy::types::LifecycleEventStatus;
    use aws_sdk_ecs::types::{
        AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, LoadBalancer, NetworkConfiguration,
        TaskStopCode,
    };

    const TEST: &str = "http://127.0.0.1:9/test";
    const PROD: &str = "http://127.0.0.1:9/prod";

    fn group(ready: Option<i32>, test_route: bool) -> GroupView {
        GroupView {
            application: "app".into(),
            name: "dg".into(),
            services: vec![("main".into(), "web".into())],
            ready_wait_minutes: ready,
            termination_wait_minutes: 5,
            test_route,
            rolls_back_on_failure: true,
            blue_green: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_group_is_found_from_the_service_and_never_guessed() {
        let other =
            GroupView { name: "other".into(), services: vec![("main".into(), "api".into())], ..group(None, true) };
        let second = GroupView { application: "app2".into(), ..group(None, true) };
        let none = CodeDeploySettings::default();
        let groups = [other.clone(), group(None, true)];
        assert_eq!(pick_group(&groups, "main", "web", &none).unwrap().name, "dg");
        let cluster_arn = "arn:aws:ecs:us-east-1:1:cluster/main";
        assert_eq!(pick_group(&groups, cluster_arn, "web", &none).unwrap().name, "dg", "a cluster ARN works");
        let err = pick_group(std::slice::from_ref(&other), "main", "web", &none).unwrap_err();
        assert!(err.contains("no deployment group of any ECS application deploys it"), "{err}");
        assert!(
            err.contains("AppECS-main-web") && err.contains("DgpECS-main-web") && err.contains("nothing was changed")
        );
        let err = pick_group(&[group(None, true), second.clone()], "main", "web", &none).unwrap_err();
        assert!(err.starts_with("2 CodeDeploy deployment groups deploy main/web (app/dg, app2/dg)"), "{err}");
        let named = CodeDeploySettings { deployment_group: Some("other".into()), ..Default::default() };
        let err = pick_group(&groups, "main", "web", &named).unwrap_err();
        assert!(err.contains("no deployment group named other"), "{err}");
        let plain = GroupView { blue_green: false, ..group(None, true) };
        assert!(check_group(&plain).unwrap_err().contains("no target group pair"));
        assert!(check_group(&group(None, true)).is_ok());
    }

    fn lb() -> LoadBalancer {
        LoadBalancer::builder().target_group_arn("arn:tg/blue").container_name("app").container_port(8080).build()
    }

    #[test]
    fn the_appspec_takes_the_current_task_sets_settings() {
        let network = NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .subnets("subnet-1")
                    .security_groups("sg-1")
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()
                    .unwrap(),
            )
            .build();
        let set = TaskSetView {
            id: "ecs-svc/1".into(),
            primary: true,
            task_definition: "td:1".into(),
            load_balancers: vec![lb()],
            network_configuration: Some(network),
            platform_version: Some("1.4.0".into()),
            capacity_provider_strategy: vec![
                CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE_SPOT")
                    .weight(2)
                    .base(1)
                    .build()
                    .unwrap(),
            ],
            ..Default::default()
        };
        let placement = Placement { platform_version: Some("LATEST".into()), ..Default::default() };
        let service = ServiceView { task_sets: vec![set], placement, ..Default::default() };
        let spec: Value = serde_json::from_str(&appspec(&service, "arn:td:2").unwrap()).unwrap();
        let p = &spec["Resources"][0]["TargetService"]["Properties"];
        assert_eq!(spec["Resources"][0]["TargetService"]["Type"], "AWS::ECS::Service");
        assert_eq!(p["TaskDefinition"], "arn:td:2");
        assert_eq!(p["LoadBalancerInfo"], json!({"ContainerName": "app", "ContainerPort": 8080}));
        assert_eq!(
            p["NetworkConfiguration"],
            json!({"AwsvpcConfiguration": {"Subnets": ["subnet-1"], "SecurityGroups": ["sg-1"], "AssignPublicIp": "DISABLED"}})
        );
        assert_eq!(p["PlatformVersion"], "1.4.0", "the task set's, not the service's");
        assert_eq!(
            p["CapacityProviderStrategy"],
            json!([{"CapacityProvider": "FARGATE_SPOT", "Weight": 2, "Base": 1}])
        );
        let bare = ServiceView { load_balancers: vec![lb()], ..Default::default() };
        let p = serde_json::from_str::<Value>(&appspec(&bare, "td:2").unwrap()).unwrap();
        let p = &p["Resources"][0]["TargetService"]["Properties"];
        assert!(p.get("NetworkConfiguration").is_none() && p.get("CapacityProviderStrategy").is_none(), "{p}");
        let err = appspec(&ServiceView::default(), "td:2").unwrap_err();
        assert!(err.contains("no load balancer with containerName and containerPort"), "{err}");
    }

    /// A deployment whose first `done` events succeeded (the next one running when `running`).
    fn cd(status: DeploymentStatus, done: usize, running: bool, weight: f64) -> CodeDeployView {
        CodeDeployView {
            id: "d-1".into(),
            status: Some(status),
            events: EVENTS
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let s = match i {
                        i if i < done => LifecycleEventStatus::Succeeded,
                        i if i == done && running => LifecycleEventStatus::InProgress,
                        _ => LifecycleEventStatus::Pending,
                    };
                    (n.to_string(), s)
                })
                .collect(),
            green: Some(TaskSetInfo { id: "g".into(), weight, desired: 2, running: 2, ..Default::default() }),
            termination_wait_started: done == EVENTS.len(),
            ..Default::default()
        }
    }

    fn probe(url: &str, ok: bool) -> Probe {
        Probe { url: url.into(), ok, status: Some(if ok { 200 } else { 500 }), detail: String::new() }
    }

    fn obs(t: u64, cd: CodeDeployView, probes: Vec<Probe>) -> Observation {
        Observation { elapsed: Duration::from_secs(t), code_deploy: Some(cd), probes, ..Default::default() }
    }

    fn config(bake: u64) -> GateConfig {
        GateConfig {
            bake: Duration::from_secs(bake),
            timeout: Duration::from_secs(100),
            health_urls: vec![PROD.into()],
            test_urls: vec![TEST.into()],
            ..Default::default()
        }
    }

    fn run(mut gate: CodeDeployGate, timeline: Vec<Observation>) -> Vec<String> {
        timeline
            .iter()
            .map(|o| {
                let d = match gate.observe(o) {
                    Decision::Wait(w) => format!("wait: {w}"),
                    Decision::Continue { note, .. } => {
                        gate.continued();
                        format!("continue: {note}")
                    }
                    Decision::Healthy => "healthy".into(),
                    Decision::Failed(f) => format!("failed: {f}"),
                };
                match gate.take_note() {
                    Some(n) => format!("{d} [{n}]"),
                    None => d,
                }
            })
            .collect()
    }

    #[test]
    fn green_is_held_ready_until_the_test_listener_answers_well_then_production_is_gated() {
        use DeploymentStatus::*;
        let gate = CodeDeployGate::new(config(2), group(Some(60), true), false);
        let ok = |u: &str| vec![probe(u, true)];
        let both = || vec![probe(PROD, true), probe(TEST, true)];
        let got = run(
            gate,
            vec![
                obs(0, cd(InProgress, 1, true, 0.0), vec![]),
                obs(1, cd(Ready, 5, false, 0.0), ok(TEST)),
                obs(2, cd(Ready, 5, false, 0.0), ok(TEST)),
                obs(3, cd(Ready, 5, false, 0.0), ok(TEST)),
                obs(4, cd(InProgress, 8, false, 100.0), both()),
                obs(5, cd(InProgress, 8, false, 100.0), both()),
                obs(6, cd(InProgress, 8, false, 100.0), both()),
                obs(8, cd(InProgress, 8, false, 100.0), both()),
            ],
        );
        assert_eq!(got[0], "wait: CodeDeploy Install (green task set: 2 of 2 running)");
        assert_eq!(got[1], format!("wait: test listener {TEST} to answer well 3 times in a row (1 so far)"));
        assert_eq!(got[3], format!("continue: test traffic gate passed: {TEST} answered well 3 times in a row"));
        assert_eq!(got[4], format!("wait: {PROD} to answer well 3 times in a row (1 so far)"));
        assert_eq!(got[6], "wait: baking: 0s of 2s");
        assert!(got[7].starts_with("healthy [production is all on green; CodeDeploy keeps the original task set for its termination wait (5 min)"), "{got:?}");
    }

    #[test]
    fn failures_fail_at_once_and_say_whether_codedeploy_rolls_back() {
        use DeploymentStatus::*;
        let gate = || CodeDeployGate::new(config(0), group(Some(60), true), false);
        let bad_test = |t| obs(t, cd(Ready, 5, false, 0.0), vec![probe(TEST, false)]);
        let got = run(gate(), vec![bad_test(1), bad_test(2), bad_test(3)]);
        assert_eq!(got[2], format!("failed: {TEST} failed 3 times in a row (last: HTTP 500: )"));
        let mut failed = cd(Failed, 1, true, 0.0);
        failed.error = Some("ECS_UPDATE_ERROR: no steady state".into());
        failed.rollback_deployment = Some("d-2".into());
        let got = run(gate(), vec![obs(1, failed, vec![])]);
        assert_eq!(
            got[0],
            "failed: CodeDeploy ended the deployment: deployment d-1 Failed: ECS_UPDATE_ERROR: no steady state (CodeDeploy is rolling back by itself)"
        );
        let crashed = TaskView {
            arn: "arn:aws:ecs:r:1:task/c/abc123".into(),
            status: TaskStatus::Stopped,
            stop_code: Some(TaskStopCode::EssentialContainerExited),
            ..Default::default()
        };
        let o = Observation { tasks: vec![crashed], ..obs(1, cd(InProgress, 8, false, 100.0), vec![]) };
        assert_eq!(
            run(gate(), vec![o])[0],
            "failed: a task of the new revision stopped: task abc123 [EssentialContainerExited]"
        );
        let got = run(gate(), vec![obs(100, cd(InProgress, 1, true, 0.0), vec![])]);
        assert!(got[0].starts_with("failed: timed out waiting for CodeDeploy Install"), "{got:?}");
    }

    #[test]
    fn without_a_ready_wait_production_is_still_gated_and_the_timeline_says_so() {
        use DeploymentStatus::*;
        let gate = CodeDeployGate::new(config(0), group(None, false), false);
        let bad = |t| obs(t, cd(InProgress, 8, false, 100.0), vec![probe(PROD, false)]);
        let got = run(gate, vec![obs(0, cd(InProgress, 6, true, 100.0), vec![]), bad(1), bad(2), bad(3)]);
        assert!(got[0].contains("[the deployment group reroutes without waiting"), "{got:?}");
        assert_eq!(got[3], format!("failed: {PROD} failed 3 times in a row (last: HTTP 500: )"));
        let gate = CodeDeployGate::new(config(0), group(None, false), false);
        assert_eq!(
            gate.probe_urls(Some(&obs(0, cd(Ready, 5, false, 0.0), vec![]))),
            Vec::<String>::new(),
            "no test route"
        );
        assert_eq!(gate.probe_urls(Some(&obs(0, cd(InProgress, 6, true, 10.0), vec![]))), vec![PROD.to_string()]);
    }

    #[test]
    fn asked_to_it_waits_for_the_termination_wait() {
        use DeploymentStatus::*;
        let gate = CodeDeployGate::new(GateConfig { test_urls: vec![], ..config(0) }, group(None, true), true);
        let ok = || vec![probe(PROD, true)];
        let got = run(
            gate,
            vec![
                obs(1, cd(InProgress, 8, false, 100.0), ok()),
                obs(2, cd(InProgress, 8, false, 100.0), ok()),
                obs(3, cd(InProgress, 8, false, 100.0), ok()),
                obs(4, cd(Succeeded, 8, false, 100.0), ok()),
            ],
        );
        assert_eq!(got[2], "wait: CodeDeploy's termination wait to end (5 min, the original task set kept)");
        assert_eq!(got[3], "healthy");
    }

    #[test]
    fn the_way_back_follows_what_codedeploy_is_doing() {
        use DeploymentStatus::*;
        let probe_failure = Failure::Probe { url: "u".into(), failures: 3, status: Some(500), detail: String::new() };
        let rolling_back = Failure::CodeDeploy { reason: "x".into(), rolls_back: true };
        let seen = |c: CodeDeployView| Some(obs(0, c, vec![]));
        let stop = Route::StopCodeDeploy { deployment: "d-1".into() };
        let failed_no_rollback = |w| CodeDeployView { rollback_deployment: None, ..cd(Failed, 7, false, w) };
        type Case = (Option<Failure>, Option<Observation>, Route);
        let table: Vec<Case> = vec![
            (Some(rolling_back), seen(cd(Failed, 1, false, 0.0)), Route::WaitForCodeDeploy),
            (Some(probe_failure.clone()), seen(cd(Ready, 5, false, 0.0)), stop.clone()),
            (Some(probe_failure.clone()), seen(cd(InProgress, 8, false, 100.0)), stop.clone()),
            (None, seen(cd(InProgress, 1, true, 0.0)), stop.clone()),
            (Some(probe_failure.clone()), None, stop),
            (Some(probe_failure.clone()), seen(cd(Succeeded, 8, false, 100.0)), Route::Redeploy),
            (Some(probe_failure.clone()), seen(failed_no_rollback(100.0)), Route::Redeploy),
            (Some(probe_failure), seen(failed_no_rollback(0.0)), Route::WaitForCodeDeploy),
        ];
        for (failure, last, want) in table {
            assert_eq!(route(failure.as_ref(), last.as_ref(), "d-1"), want, "{failure:?} {last:?}");
        }
    }

    #[test]
    fn the_report_sees_each_stage_once_in_order_and_the_traffic_split() {
        use DeploymentStatus::*;
        let g = group(Some(60), true);
        assert_eq!(stages_seen(&cd(InProgress, 1, true, 0.0)), ["BeforeInstall", "Install"]);
        let ready = stages_seen(&cd(Ready, 5, false, 0.0));
        assert_eq!(ready.last().map(String::as_str), Some("Ready"));
        assert_eq!(traffic(&cd(Ready, 5, false, 0.0), &g), (0.0, 100.0));
        let waiting = stages_seen(&cd(InProgress, 8, false, 100.0));
        assert_eq!(waiting.len(), 9);
        assert_eq!(waiting.last().map(String::as_str), Some("TerminationWait"));
        assert_eq!(traffic(&cd(InProgress, 8, false, 100.0), &group(None, false)), (100.0, 0.0));
    }
}
