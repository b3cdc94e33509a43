//! What a deploy is asked to do, as plain data built once at the edge (flags, deployer.toml):
//! the strategy, the gate's settings (and each service's own URLs), the traffic-shift
//! settings, the CodeDeploy settings, how often to poll, and the ECS API budget deployer keeps
//! to. `Strategy` is the one type the CLI (`--strategy`), deployer.toml (`strategy = "..."`)
//! and the JSON report (`"strategy": "BLUE_GREEN"`, ECS's own name) all use; its `CodeDeploy`
//! value is never given: a service under the CODE_DEPLOY deployment controller is deployed
//! through CodeDeploy whatever `--strategy` says.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_ecs::types::DeploymentStrategy;
use serde::{Deserialize, Serialize};

use crate::aws::limiter::Limits;

/// How the new revision replaces the old one. Flags and deployer.toml take the kebab-case
/// name; the JSON report names it as ECS does (`ROLLING`, `BLUE_GREEN`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all(serialize = "SCREAMING_SNAKE_CASE", deserialize = "kebab-case"))]
pub enum Strategy {
    /// ECS rolling update, gated by deployer (bake, probes), rolled back by deployer or ECS.
    #[default]
    Rolling,
    /// ECS BLUE_GREEN: held on test traffic until the test gate passes, then all at once.
    BlueGreen,
    /// ECS CANARY: a share of production first, then all.
    Canary,
    /// ECS LINEAR: production in equal steps.
    Linear,
    /// A CodeDeploy blue/green deployment: chosen from the service's CODE_DEPLOY deployment
    /// controller, never by flag or file.
    #[value(skip)]
    #[serde(skip_deserializing)]
    CodeDeploy,
}

impl Strategy {
    /// The name flags and deployer.toml use.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
            Strategy::Linear => "linear",
            Strategy::CodeDeploy => "code-deploy",
        }
    }

    /// The name reports use: ECS's (`BLUE_GREEN`, ...), or `CODE_DEPLOY`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Rolling => "ROLLING",
            Strategy::BlueGreen => "BLUE_GREEN",
            Strategy::Canary => "CANARY",
            Strategy::Linear => "LINEAR",
            Strategy::CodeDeploy => "CODE_DEPLOY",
        }
    }

    /// ECS's `deploymentConfiguration.strategy`.
    pub fn ecs(self) -> DeploymentStrategy {
        match self {
            Strategy::Rolling => DeploymentStrategy::Rolling,
            Strategy::BlueGreen => DeploymentStrategy::BlueGreen,
            Strategy::Canary => DeploymentStrategy::Canary,
            Strategy::Linear => DeploymentStrategy::Linear,
            // CodeDeploy's ECS deployments are blue/green (its config shapes the traffic).
            Strategy::CodeDeploy => DeploymentStrategy::BlueGreen,
        }
    }

    /// Blue/green, canary and linear shift traffic between two target groups.
    pub fn shifts_traffic(self) -> bool {
        self != Strategy::Rolling
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health gate's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Rolling: how long the new revision must stay healthy after ECS completes. Traffic
    /// shifting: zero (ECS bakes, with blue kept for an instant rollback).
    pub bake: Duration,
    pub timeout: Duration,
    /// Consecutive good answers each probe URL needs.
    pub probe_successes: u32,
    /// Consecutive bad answers from one URL that fail the gate.
    pub probe_failures: u32,
    /// Production URLs (`--health-url`).
    pub health_urls: Vec<String>,
    /// Test-listener URLs (`--test-url`), probed while deployer holds a traffic shift.
    pub test_urls: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            bake: Duration::ZERO,
            timeout: Duration::from_secs(1800),
            probe_successes: 3,
            probe_failures: 3,
            health_urls: Vec::new(),
            test_urls: Vec::new(),
        }
    }
}

/// ECS takes whole minutes; deployer takes seconds and rounds up (30 s → 1 min), so a bake is
/// never shorter than asked.
pub fn minutes(secs: u64) -> i32 {
    secs.div_ceil(60).min(i32::MAX as u64) as i32
}

/// The traffic-shifting settings deployer applies (seconds already rounded up to minutes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShiftSettings {
    /// `bakeTimeInMinutes` (after the production shift, blue kept for an instant rollback).
    pub bake_minutes: Option<i32>,
    pub canary_percent: Option<f64>,
    pub canary_bake_minutes: Option<i32>,
    pub linear_percent: Option<f64>,
    pub linear_bake_minutes: Option<i32>,
}

impl ShiftSettings {
    /// Percent ranges ECS accepts.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.canary_percent
            && !(0.1..=100.0).contains(&p)
        {
            return Err(format!("--canary-percent {p}: ECS takes 0.1 to 100; pass a value in that range"));
        }
        if let Some(p) = self.linear_percent
            && !(3.0..=100.0).contains(&p)
        {
            return Err(format!("--linear-percent {p}: ECS takes 3 to 100; pass a value in that range"));
        }
        Ok(())
    }
}

/// Services under the CODE_DEPLOY deployment controller: the CodeDeploy application and
/// deployment group (found from the service when not given, as ecspresso does), the deployment
/// configuration (the group's when not given), and whether to wait for the termination wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeDeploySettings {
    pub application: Option<String>,
    pub deployment_group: Option<String>,
    /// `deploymentConfigName` of CreateDeployment, e.g. CodeDeployDefault.ECSCanary10Percent5Minutes.
    pub deployment_config: Option<String>,
    /// Wait until CodeDeploy deletes the original task set (its termination wait), gating
    /// production all along, instead of reporting the wait and exiting once the gate passed.
    pub wait_for_termination: bool,
}

impl CodeDeploySettings {
    /// CodeDeploy's names: 1 to 100 characters, none of them a control character.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, name) in [
            ("--codedeploy-application", &self.application),
            ("--codedeploy-deployment-group", &self.deployment_group),
            ("--codedeploy-deployment-config", &self.deployment_config),
        ] {
            let Some(name) = name else { continue };
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(format!(
                    "{flag} {name:?}: CodeDeploy names are 1 to 100 characters without control characters; pass the name as the CodeDeploy console shows it"
                ));
            }
        }
        Ok(())
    }
}

/// The adaptive poll interval's bounds: 2 s growing to 10 s unless the edge says otherwise
/// (`DEPLOYER_POLL_MS` / `DEPLOYER_POLL_MAX_MS`: tests against a fast sim, the bench).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Poll::from_millis(None, None)
    }
}

impl Poll {
    /// `initial_ms` (default 2000) and `max_ms` (default 5 × initial, never below it).
    pub fn from_millis(initial_ms: Option<u64>, max_ms: Option<u64>) -> Poll {
        let initial = initial_ms.unwrap_or(2000).max(1);
        let max = max_ms.unwrap_or(initial * 5).max(initial);
        Poll { initial: Duration::from_millis(initial), max: Duration::from_millis(max) }
    }

    pub fn pacing(self) -> Pacing {
        Pacing { poll: self, current: self.initial }
    }
}

/// The adaptive poll interval: starts short, grows while nothing changes, resets on change,
/// never above the ceiling.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    poll: Poll,
    current: Duration,
}

impl Pacing {
    /// The next wait: ×1.5 when nothing changed, back to the start when something did.
    pub fn next(&mut self, changed: bool) -> Duration {
        self.current = if changed { self.poll.initial } else { self.current.mul_f64(1.5).min(self.poll.max) };
        self.current
    }
}

/// One service's own gate URLs (deployer.toml's `[environments.X.services.NAME]`); `None`
/// keeps the run's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceGate {
    pub health_urls: Option<Vec<String>>,
    pub test_urls: Option<Vec<String>>,
}

/// Everything a deploy of one task definition to some services needs to know.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub cluster: String,
    pub services: Vec<String>,
    pub strategy: Strategy,
    pub gate: GateConfig,
    /// Services with URLs of their own.
    pub per_service: BTreeMap<String, ServiceGate>,
    pub shift: ShiftSettings,
    /// For services under the CODE_DEPLOY controller.
    pub codedeploy: CodeDeploySettings,
    /// On failure leave the service as it is (exit 4) instead of rolling back.
    pub no_rollback: bool,
    /// With several services: when one fails, roll back the ones that went live.
    pub all_or_nothing: bool,
    pub poll: Poll,
    /// The ECS API buckets deployer keeps to (shared by every service of the run).
    pub api_limits: Limits,
}

impl DeployPlan {
    /// What can be checked without a network: URLs and ECS's ranges. The message names the
    /// flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, urls) in [("--health-url", &self.gate.health_urls), ("--test-url", &self.gate.test_urls)] {
            for url in urls {
                reqwest::Url::parse(url).map_err(|e| format!("{flag} {url:?} is not a URL: {e}"))?;
            }
        }
        for (service, g) in &self.per_service {
            for (key, urls) in [("health-url", &g.health_urls), ("test-url", &g.test_urls)] {
                for url in urls.iter().flatten() {
                    reqwest::Url::parse(url)
                        .map_err(|e| format!("services.{service}.{key} {url:?} is not a URL: {e}"))?;
                }
            }
        }
        if self.services.is_empty() {
            return Err("no service to deploy: pass --service".into());
        }
        if let Some((_, s)) = self.services.iter().enumerate().find(|(i, s)| self.services[..*i].contains(s)) {
            return Err(format!("--service {s} is named twice; name each service once"));
        }
        self.shift.validate()?;
        self.codedeploy.validate()
    }

    /// The gate as the strategy runs it: a traffic shift bakes in ECS, not after it.
    pub fn gate_for_strategy(&self) -> GateConfig {
        let bake = if self.strategy.shifts_traffic() { Duration::ZERO } else { self.gate.bake };
        GateConfig { bake, ..self.gate.clone() }
    }

    /// `service`'s gate: the strategy's, with the service's own URLs where it has them.
    pub fn gate_of(&self, service: &str) -> GateConfig {
        let mut gate = self.gate_for_strategy();
        if let Some(own) = self.per_service.get(service) {
            if let Some(urls) = &own.health_urls {
                gate.health_urls = urls.clone();
            }
            if let Some(urls) = &own.test_urls {
                gate.test_urls = urls.clone();
            }
        }
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_grows_on_quiet_and_resets_on_change_never_above_the_ceiling() {
        let mut p = Poll { initial: Duration::from_secs(2), max: Duration::from_secs(10) }.pacing();
        let waits: Vec<u64> = [false, false, false, false, false, true, false]
            .into_iter()
            .map(|changed| p.next(changed).as_millis() as u64)
            .collect();
        assert_eq!(waits, [3000, 4500, 6750, 10000, 10000, 2000, 3000]);
        assert_eq!(Poll::from_millis(Some(150), None).max, Duration::from_millis(750));
        assert_eq!(Poll::from_millis(Some(500), Some(100)).max, Duration::from_millis(500));
        assert_eq!(Poll::default().initial, Duration::from_secs(2));
    }

    #[test]
    fn one_strategy_type_for_flags_files_and_json() {
        use clap::ValueEnum;
        let names: Vec<String> =
            Strategy::value_variants().iter().map(|s| s.to_possible_value().unwrap().get_name().to_string()).collect();
        assert_eq!(names, ["rolling", "blue-green", "canary", "linear"]);
        for s in Strategy::value_variants() {
            assert_eq!(s.to_possible_value().unwrap().get_name(), s.as_str());
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.ecs().as_str(), "the JSON names the strategy as ECS does");
            assert_eq!(json, s.name());
            let from_file: Strategy = serde_json::from_value(serde_json::json!(s.as_str())).unwrap();
            assert_eq!(from_file, *s);
        }
        // Chosen from the service's controller only: named in reports, never taken as input.
        assert_eq!(serde_json::to_value(Strategy::CodeDeploy).unwrap(), Strategy::CodeDeploy.name());
        assert!(Strategy::CodeDeploy.to_possible_value().is_none());
        assert!(serde_json::from_value::<Strategy>(serde_json::json!("code-deploy")).is_err());
    }

    /// A plan of service `web` in cluster `c` with `strategy` and `gate`, the rest as by default.
    fn a_plan(strategy: Strategy, gate: GateConfig) -> DeployPlan {
        DeployPlan {
            cluster: "c".into(),
            services: vec!["web".into()],
            strategy,
            gate,
            per_service: BTreeMap::new(),
            shift: ShiftSettings::default(),
            codedeploy: CodeDeploySettings::default(),
            no_rollback: false,
            all_or_nothing: false,
            poll: Poll::default(),
            api_limits: Limits::default(),
        }
    }

    #[test]
    fn a_service_with_urls_of_its_own_keeps_them_and_the_others_take_the_runs() {
        let own = ServiceGate { health_urls: Some(vec!["http://api/health".into()]), test_urls: None };
        let gate = GateConfig {
            health_urls: vec!["http://web/health".into()],
            test_urls: vec!["http://test/".into()],
            bake: Duration::from_secs(5),
            ..GateConfig::default()
        };
        let plan = DeployPlan {
            services: vec!["web".into(), "api".into()],
            per_service: BTreeMap::from([("api".to_string(), own)]),
            ..a_plan(Strategy::Rolling, gate)
        };
        assert_eq!(plan.gate_of("web").health_urls, ["http://web/health"]);
        assert_eq!(plan.gate_of("api").health_urls, ["http://api/health"]);
        assert_eq!(plan.gate_of("api").test_urls, ["http://test/"], "only what it names is its own");
        assert_eq!(plan.gate_of("api").bake, Duration::from_secs(5));
        let shifting = DeployPlan { strategy: Strategy::BlueGreen, ..plan };
        assert_eq!(shifting.gate_of("api").bake, Duration::ZERO, "ECS bakes a traffic shift");
    }

    #[test]
    fn bad_settings_are_refused_before_any_change() {
        let plan =
            a_plan(Strategy::Canary, GateConfig { health_urls: vec!["not a url".into()], ..GateConfig::default() });
        assert!(plan.validate().unwrap_err().starts_with("--health-url \"not a url\" is not a URL"));
        let plan = DeployPlan { gate: GateConfig::default(), ..plan };
        assert!(plan.validate().is_ok());
        let twice = DeployPlan { services: vec!["web".into(), "api".into(), "web".into()], ..plan.clone() };
        assert_eq!(twice.validate().unwrap_err(), "--service web is named twice; name each service once");
        let bad =
            DeployPlan { shift: ShiftSettings { linear_percent: Some(1.0), ..Default::default() }, ..plan.clone() };
        assert!(bad.validate().unwrap_err().contains("ECS takes 3 to 100"));
        let bad =
            DeployPlan { shift: ShiftSettings { canary_percent: Some(0.0), ..Default::default() }, ..plan.clone() };
        assert!(bad.validate().unwrap_err().contains("ECS takes 0.1 to 100"));
        let group = |name: &str| CodeDeploySettings { deployment_group: Some(name.into()), ..Default::default() };
        let bad = DeployPlan { codedeploy: group("dg\nx"), ..plan.clone() };
        assert!(bad.validate().unwrap_err().starts_with("--codedeploy-deployment-group \"dg\\nx\""));
        assert!(DeployPlan { codedeploy: group(&"d".repeat(101)), ..plan.clone() }.validate().is_err());
        assert!(DeployPlan { codedeploy: group("DgpECS-main-web"), ..plan.clone() }.validate().is_ok());
        let own = ServiceGate { health_urls: Some(vec!["nope".into()]), test_urls: None };
        let bad = DeployPlan { per_service: BTreeMap::from([("api".to_string(), own)]), ..plan };
        assert!(bad.validate().unwrap_err().starts_with("services.api.health-url \"nope\" is not a URL"));
        assert_eq!([0, 1, 59, 60, 61, 120, 3600].map(minutes), [0, 1, 1, 1, 2, 2, 60]);
    }
}
