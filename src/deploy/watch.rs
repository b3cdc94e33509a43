//! Observing one service's deployment: one `observe` makes the DescribeServices /
//! DescribeServiceDeployments / ListTasks / DescribeTasks calls and the probe requests of one
//! poll, and `observation` (pure) turns the answers into the `Observation` the gates decide
//! on. The watcher also keeps what a failure report needs: the service events of this deploy
//! (from its own UpdateService on, none from before) and the new revision's stopped tasks.
//!
//! Our deployment is the one running the new task definition — except in a redeploy of the
//! revision already running (`--force-new-deployment`, `refresh`), where the old deployment
//! runs it too: there ours is the deployment UpdateService created, by its id, and its tasks
//! are those it started (`startedBy`).
//!
//! The calls are per service today; `observation` and `new_events` take plain views, so a
//! watcher shared by a cluster's services (DescribeServices takes 10 at a time,
//! DescribeServiceDeployments 20) can feed the same gates.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::DeployError;
use super::ecs::Ecs;
use super::gate::{Observation, Probe};
use super::probe::probe_all;
use super::view::{DeploymentView, EventView, ServiceDeploymentView, ServiceView, TaskView};

/// Which service, which revision, and where this deploy's events begin.
#[derive(Debug, Clone)]
pub struct Watched {
    pub cluster: String,
    pub service: String,
    pub task_definition: String,
    /// Set when the revision was already running (a redeploy): our deployment's id, which
    /// tells it and its tasks apart from the old deployment of the same revision.
    pub deployment_id: Option<String>,
    /// Our deployment's creation (ECS's clock, epoch ms): events before it are not ours.
    pub since_ms: u64,
    /// Events the service already had before the update.
    pub known_events: HashSet<String>,
}

impl Watched {
    /// Is `d` the deployment this watch follows?
    pub fn is_ours(&self, d: &DeploymentView) -> bool {
        match &self.deployment_id {
            Some(id) => d.id == *id,
            None => d.task_definition == self.task_definition,
        }
    }
}

/// One observation from one poll's answers: our deployment (`Watched::is_ours`), whether it is
/// still the primary, the service deployment, tasks, probes.
pub fn observation(
    view: &ServiceView,
    watched: &Watched,
    service_deployment: Option<ServiceDeploymentView>,
    tasks: Vec<TaskView>,
    probes: Vec<Probe>,
    elapsed: Duration,
) -> Observation {
    Observation {
        elapsed,
        deployment: view.deployments.iter().find(|d| watched.is_ours(d)).cloned(),
        primary_is_ours: view.primary().is_some_and(|d| watched.is_ours(d)),
        service_deployment,
        tasks,
        probes,
        code_deploy: None,
    }
}

/// The events of `view` that belong to this deploy and were not taken yet, oldest first: at
/// or after `since_ms`, and not among the events the service had before the update.
pub fn new_events<'v>(view: &'v ServiceView, w: &Watched, taken: &HashSet<String>) -> Vec<&'v EventView> {
    let mut fresh: Vec<&EventView> = view
        .events
        .iter()
        .filter(|e| e.at_ms.is_some_and(|t| t >= w.since_ms))
        .filter(|e| !w.known_events.contains(&e.id) && !taken.contains(&e.id))
        .collect();
    fresh.reverse();
    fresh
}

pub struct Watcher<'a> {
    ecs: &'a Ecs<'a>,
    http: &'a reqwest::Client,
    watched: Watched,
    started: Instant,
    pub service_deployment_arn: Option<String>,
    /// Service events of this deploy, oldest first.
    pub events: Vec<String>,
    taken: HashSet<String>,
    /// Stopped tasks of the new revision (their descriptions).
    pub stopped: Vec<String>,
    /// When ECS first began stopping a failed task of the new revision (epoch ms).
    pub first_failure_ms: Option<u64>,
    last: Option<Observation>,
}

impl<'a> Watcher<'a> {
    pub fn new(ecs: &'a Ecs<'a>, http: &'a reqwest::Client, watched: Watched) -> Self {
        Watcher {
            ecs,
            http,
            watched,
            started: Instant::now(),
            service_deployment_arn: None,
            events: Vec::new(),
            taken: HashSet::new(),
            stopped: Vec::new(),
            first_failure_ms: None,
            last: None,
        }
    }

    /// One poll: ECS state, tasks of the new revision, one probe of each URL.
    pub async fn observe(&mut self, probe_urls: &[String]) -> Result<Observation, DeployError> {
        let w = &self.watched;
        let view = self.ecs.describe_service(&w.cluster, &w.service).await?;
        for e in new_events(&view, w, &self.taken) {
            tracing::info!("ECS: {}", e.message);
            self.taken.insert(e.id.clone());
            self.events.push(e.message.clone());
        }
        let sd = self.service_deployment().await?;
        let tasks = self.tasks().await?;
        let probes = probe_all(self.http, probe_urls).await;
        Ok(observation(&view, &self.watched, sd, tasks, probes, self.started.elapsed()))
    }

    /// Did anything but time and probe answers change since the last observation? Keeps
    /// `obs` as the last one.
    pub fn changed(&mut self, obs: &Observation) -> bool {
        let strip =
            |o: &Observation| (o.deployment.clone(), o.primary_is_ours, o.service_deployment.clone(), o.tasks.clone());
        let changed = self.last.as_ref().is_none_or(|l| strip(l) != strip(obs));
        self.last = Some(obs.clone());
        changed
    }

    /// The last observation (what a rollback decides its route from).
    pub fn last(&self) -> Option<&Observation> {
        self.last.as_ref()
    }

    /// Find (once) and read the service deployment our UpdateService created.
    async fn service_deployment(&mut self) -> Result<Option<ServiceDeploymentView>, DeployError> {
        if self.service_deployment_arn.is_none() {
            let w = &self.watched;
            self.service_deployment_arn = self.ecs.find_service_deployment(&w.cluster, &w.service, w.since_ms).await;
        }
        match &self.service_deployment_arn {
            Some(arn) => self.ecs.service_deployment(arn).await,
            None => Ok(None),
        }
    }

    /// One more look at the new revision's tasks after a failure, so the report names every
    /// task that stopped (ECS may have stopped more since the deciding observation).
    pub async fn sweep(&mut self) {
        if let Err(e) = self.tasks().await {
            tracing::debug!("final look at the tasks failed: {e}");
        }
    }

    /// The new revision's tasks; failed ones are remembered for the report.
    async fn tasks(&mut self) -> Result<Vec<TaskView>, DeployError> {
        let w = &self.watched;
        let tasks = self.ecs.tasks_of(&w.cluster, &w.service, &w.task_definition, w.deployment_id.as_deref()).await?;
        for t in tasks.iter().filter(|t| t.failed()) {
            if let Some(at) = t.stopping_at_ms {
                self.first_failure_ms = Some(self.first_failure_ms.map_or(at, |f| f.min(at)));
            }
            let text = t.to_string();
            if !self.stopped.contains(&text) {
                self.stopped.push(text);
            }
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, at_ms: u64) -> EventView {
        EventView { id: id.into(), at_ms: Some(at_ms), message: format!("event {id}") }
    }

    #[test]
    fn the_event_window_starts_at_the_deploys_own_update() {
        // Newest first, as ECS lists them. "steady" is the previous deploy's last word, a few
        // hundred ms before our UpdateService; "same-ms" was there before the update too.
        let view = ServiceView {
            events: vec![event("started", 10_400), event("same-ms", 10_000), event("steady", 9_700)],
            ..Default::default()
        };
        let w = Watched {
            cluster: "c".into(),
            service: "web".into(),
            task_definition: "td:2".into(),
            deployment_id: None,
            since_ms: 10_000,
            known_events: HashSet::from(["same-ms".to_string(), "steady".to_string()]),
        };
        let got: Vec<&str> = new_events(&view, &w, &HashSet::new()).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, ["started"]);
        let taken = HashSet::from(["started".to_string()]);
        assert!(new_events(&view, &w, &taken).is_empty(), "each event once");
    }

    #[test]
    fn the_observation_finds_our_deployment_and_whether_it_is_primary() {
        let d = |id: &str, td: &str, primary: bool| DeploymentView {
            id: id.into(),
            task_definition: td.into(),
            primary,
            ..Default::default()
        };
        let watching = |td: &str, deployment_id: Option<&str>| Watched {
            cluster: "c".into(),
            service: "web".into(),
            task_definition: td.into(),
            deployment_id: deployment_id.map(str::to_string),
            since_ms: 0,
            known_events: HashSet::new(),
        };
        let view =
            ServiceView { deployments: vec![d("new", "td:2", true), d("old", "td:1", false)], ..Default::default() };
        let o = observation(&view, &watching("td:2", None), None, vec![], vec![], Duration::from_secs(1));
        assert!(o.primary_is_ours && o.deployment.is_some_and(|d| d.id == "new"));
        let o = observation(&view, &watching("td:1", None), None, vec![], vec![], Duration::ZERO);
        assert!(!o.primary_is_ours);
        // A redeploy of td:1: the old deployment runs it too (listed first here); ours is ours
        // by id, primary or not.
        let redeploy =
            ServiceView { deployments: vec![d("old", "td:1", false), d("new", "td:1", true)], ..Default::default() };
        let o = observation(&redeploy, &watching("td:1", Some("new")), None, vec![], vec![], Duration::ZERO);
        assert!(o.primary_is_ours && o.deployment.is_some_and(|d| d.id == "new"));
        let o = observation(&redeploy, &watching("td:1", None), None, vec![], vec![], Duration::ZERO);
        assert!(o.deployment.is_some_and(|d| d.id == "old"), "by revision alone the old one is found first");
        let rolled_back =
            ServiceView { deployments: vec![d("old", "td:1", true), d("new", "td:1", false)], ..Default::default() };
        let o = observation(&rolled_back, &watching("td:1", Some("new")), None, vec![], vec![], Duration::ZERO);
        assert!(!o.primary_is_ours, "the old deployment is primary again");
    }
}
