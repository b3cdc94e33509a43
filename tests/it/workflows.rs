//! The composite action and the example workflows users copy, run by `act` in host mode
//! (DESIGN.md section 5) against the local stack: the local OIDC issuer, moto, docker-registry
//! (behind a counting proxy), ecs-sim, and a fake of GitHub's Deployments REST endpoints.
//!
//! Each test builds a throwaway "application repository" (git, the example workflow verbatim,
//! a deployer.toml pointing at the local stack) and runs the workflow with:
//! - `actions/checkout@<sha>` stubbed by a no-op local action (act copies the work tree);
//! - `org/deployer@v1` mapped to a copy of this repository's action.yml, scripts/ and
//!   checksums/ (`--local-repository`), so the action runs from its own path;
//! - the job's environment (`--env`): the OIDC request URL/token, AWS and registry endpoints,
//!   `DEPLOYER_BINARY` (the debug build), and a fake `docker` on PATH that "builds" an OCI
//!   layout the test made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::sim::common::{describe, load_balancer, register, rolling_config, versions_at, wait_steady};
use crate::sim::harness::{Sim, push_image, unique};
use crate::support::oidc::{Issuer, Job};
use crate::support::registry_proxy::RegistryProxy;
use crate::support::{ecs_client, repo_root, serve, stack, unique_account, workspace_bin};

const CHECKOUT: &str = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683";
const ACTION: &str = "org/deployer@v1";
const GITHUB_TOKEN: &str = "ghs_fake-token-for-workflow-tests-0123456789";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// A fake of the GitHub Deployments REST endpoints deployer calls.

#[derive(Default)]
struct GithubState {
    /// (method, path, body, authorization)
    requests: Vec<(String, String, Value, String)>,
    /// deployment id → its statuses, newest last
    deployments: Vec<(u64, Vec<String>)>,
}

type Shared = Arc<Mutex<GithubState>>;

struct FakeGithub {
    url: String,
    state: Shared,
}

impl FakeGithub {
    /// Starts with one earlier successful deployment (id 7) of the environment.
    fn start() -> FakeGithub {
        let state: Shared = Arc::new(Mutex::new(GithubState {
            deployments: vec![(7, vec!["success".into()])],
            ..GithubState::default()
        }));
        fn auth(h: &HeaderMap) -> String {
            h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
        }
        async fn create(
            State(s): State<Shared>,
            UrlPath((o, r)): UrlPath<(String, String)>,
            h: HeaderMap,
            Json(body): Json<Value>,
        ) -> (StatusCode, Json<Value>) {
            let mut s = s.lock().unwrap();
            s.requests.push(("POST".into(), format!("/repos/{o}/{r}/deployments"), body, auth(&h)));
            let id = 100 + s.deployments.len() as u64;
            s.deployments.push((id, vec![]));
            (StatusCode::CREATED, Json(json!({"id": id, "environment": "production"})))
        }
        async fn list(
            State(s): State<Shared>,
            UrlPath((o, r)): UrlPath<(String, String)>,
            h: HeaderMap,
        ) -> Json<Value> {
            let mut s = s.lock().unwrap();
            s.requests.push(("GET".into(), format!("/repos/{o}/{r}/deployments"), Value::Null, auth(&h)));
            let mut list: Vec<Value> = s.deployments.iter().map(|(id, _)| json!({"id": id})).collect();
            list.reverse();
            Json(Value::Array(list))
        }
        async fn statuses(
            State(s): State<Shared>,
            UrlPath((o, r, id)): UrlPath<(String, String, u64)>,
            h: HeaderMap,
        ) -> Json<Value> {
            let mut s = s.lock().unwrap();
            s.requests.push(("GET".into(), format!("/repos/{o}/{r}/deployments/{id}/statuses"), Value::Null, auth(&h)));
            let states = s.deployments.iter().find(|(d, _)| *d == id).map(|(_, st)| st.clone()).unwrap_or_default();
            Json(Value::Array(states.iter().rev().map(|st| json!({"state": st})).collect()))
        }
        async fn add_status(
            State(s): State<Shared>,
            UrlPath((o, r, id)): UrlPath<(String, String, u64)>,
            h: HeaderMap,
            Json(body): Json<Value>,
        ) -> (StatusCode, Json<Value>) {
            let mut s = s.lock().unwrap();
            let state = body["state"].as_str().unwrap_or_default().to_string();
            s.requests.push(("POST".into(), format!("/repos/{o}/{r}/deployments/{id}/statuses"), body, auth(&h)));
            if let Some((_, st)) = s.deployments.iter_mut().find(|(d, _)| *d == id) {
                st.push(state.clone());
            }
            (StatusCode::CREATED, Json(json!({"id": 1, "state": state})))
        }
        let router = Router::new()
            .route("/repos/{o}/{r}/deployments", get(list).post(create))
            .route("/repos/{o}/{r}/deployments/{id}/statuses", get(statuses).post(add_status))
            .with_state(state.clone());
        FakeGithub { url: serve(router), state }
    }

    fn requests(&self) -> Vec<(String, String, Value, String)> {
        self.state.lock().unwrap().requests.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The application repository, the stubbed actions, and act.

struct App {
    account: String,
    sim: Sim,
    dir: tempfile::TempDir,
    family: String,
    repository: String,
    prod: String,
    v1: String,
}

async fn moto_ecr(account: &str, target: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/", stack().moto_url))
        .header("X-Amz-Target", format!("AmazonEC2ContainerRegistry_V20150921.{target}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("x-moto-account-id", account)
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("moto ECR call");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{target}: {status} {v}");
    v
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.email=ci@example.com", "-c", "user.name=ci", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// ecs-sim with service prod/web on v1, an ECR repository in moto, and an application
/// repository whose deployer.toml points at them.
async fn app(workflow: &str) -> App {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("shopwf");
    let repository = family.clone();
    let image = push_image(&repository, "v1").await;
    ecs.create_cluster().cluster_name("prod").send().await.unwrap();
    let v1 = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], true).await;
    ecs.create_service()
        .cluster("prod")
        .service_name("web")
        .task_definition(&v1)
        .desired_count(2)
        .load_balancers(load_balancer(&account, "web"))
        .deployment_configuration(rolling_config())
        .send()
        .await
        .unwrap();
    wait_steady(&ecs, "prod", "web", Duration::from_secs(30)).await;
    let (prod, _) = sim.listeners("web").await;
    moto_ecr(&account, "CreateRepository", json!({"repositoryName": repository})).await;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("app");
    write(
        &root.join("deployer.toml"),
        &format!(
            r#"app = "shop"
region = "us-east-1"
[environments.staging]
role-arn = "arn:aws:iam::{account}:role/deploy-staging"
cluster = "staging"
service = "web"
branches = ["main"]
[environments.production]
role-arn = "arn:aws:iam::{account}:role/deploy-prod"
cluster = "prod"
service = "web"
repository = "{repository}"
branches = ["release/*"]
tags = ["v*"]
manual = true
health-url = ["{prod}/health"]
task-definition = "taskdef.json"
"#
        ),
    );
    write(
        &root.join("taskdef.json"),
        &json!({
            "family": family,
            "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": "placeholder", "essential": true,
                "portMappings": [{"containerPort": 8080}],
                "environment": [{"name": "SIM_VERSION", "value": "v2"}]}]
        })
        .to_string(),
    );
    write(&root.join("Dockerfile"), "FROM scratch\n");
    let example = std::fs::read_to_string(repo_root().join("examples/workflows").join(workflow)).unwrap();
    write(&root.join(".github/workflows").join(workflow), &example);
    git(&root, &["init", "-q"]);
    git(&root, &["remote", "add", "origin", "https://github.com/octo-org/shop.git"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-qm", "app"]);

    // The stubbed remote actions.
    write(
        &dir.path().join("checkout/action.yml"),
        "name: checkout stub\ndescription: act already copied the work tree\nruns:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo checkout stub\n",
    );
    let action = dir.path().join("action");
    std::fs::create_dir_all(action.join("scripts")).unwrap();
    std::fs::copy(repo_root().join("action.yml"), action.join("action.yml")).unwrap();
    std::fs::copy(repo_root().join("scripts/action.sh"), action.join("scripts/action.sh")).unwrap();
    App { account, sim, dir, family, repository, prod, v1 }
}

/// A one-layer OCI layout the fake `docker save` exports.
fn oci_layout(dir: &Path, tag: &str) -> String {
    let blob = |bytes: &[u8]| {
        let d = sha(bytes);
        write(&dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")), "");
        std::fs::write(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let layer = format!("layer of {tag} {}", unique("x")).into_bytes();
    let config = json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]}}).to_string();
    let (cd, cs) = blob(config.as_bytes());
    let (ld, ls) = blob(&layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}],
    })
    .to_string();
    let (md, ms) = blob(manifest.as_bytes());
    write(&dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#);
    write(
        &dir.join("index.json"),
        &json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": tag}}]})
        .to_string(),
    );
    md
}

/// A `docker` that "builds" nothing and "saves" the layout in $FAKE_DOCKER_LAYOUT as a tar.
fn fake_docker(bin: &Path) {
    let script = "#!/bin/sh\ncase \"$1\" in\n  build) echo \"fake docker: $*\" ;;\n  save) [ \"$2\" = -o ] || exit 2; tar -C \"$FAKE_DOCKER_LAYOUT\" -cf \"$3\" . ;;\n  *) echo \"fake docker: $1 unsupported\" >&2; exit 1 ;;\nesac\n";
    write(&bin.join("docker"), script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct ActRun {
    code: Option<i32>,
    log: String,
}

impl ActRun {
    /// `::set-output::` values act printed for step `id` (the composite's, then the job's).
    fn outputs(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for line in self.log.lines() {
            if let Some((_, rest)) = line.split_once("::set-output:: ")
                && let Some((k, v)) = rest.split_once('=')
            {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        out
    }
}

struct Act<'a> {
    app: &'a App,
    event: &'static str,
    workflow: &'static str,
    envs: Vec<(String, String)>,
    extra: Vec<String>,
}

impl<'a> Act<'a> {
    fn new(app: &'a App, event: &'static str, workflow: &'static str) -> Self {
        let st = stack();
        let envs = [
            ("AWS_ENDPOINT_URL", st.moto_url.as_str()),
            ("AWS_ENDPOINT_URL_ECS", app.sim.url.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("DEPLOYER_REGISTRY_ENDPOINT", st.registry_url.as_str()),
            ("DEPLOYER_POLL_MS", "150"),
            ("DEPLOYER_RETRY_BASE_MS", "20"),
            ("NO_COLOR", "1"),
        ];
        Act {
            app,
            event,
            workflow,
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            extra: Vec::new(),
        }
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.retain(|(name, _)| name != k);
        self.envs.push((k.into(), v.into()));
        self
    }

    fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }

    async fn run(self, event_json: Value) -> ActRun {
        let base = self.app.dir.path();
        let home = base.join(format!("home-{}", unique("act")));
        std::fs::create_dir_all(&home).unwrap();
        let event_file = home.join("event.json");
        std::fs::write(&event_file, event_json.to_string()).unwrap();
        let bin = base.join("bin");
        fake_docker(&bin);
        let act = repo_root().join(".venv/bin/act");
        assert!(act.exists(), "{} is missing: run scripts/stack install", act.display());
        let mut c = Command::new(act);
        c.current_dir(base.join("app"))
            .env_clear()
            .env("HOME", &home)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
            .args([self.event, "-W"])
            .arg(format!(".github/workflows/{}", self.workflow))
            .arg("-e")
            .arg(&event_file)
            .args(["-P", "ubuntu-latest=-self-hosted"])
            .arg("--local-repository")
            .arg(format!("{CHECKOUT}={}", base.join("checkout").display()))
            .arg("--local-repository")
            .arg(format!("{ACTION}={}", base.join("action").display()));
        for (k, v) in &self.envs {
            c.arg("--env").arg(format!("{k}={v}"));
        }
        c.args(&self.extra);
        let out = tokio::task::spawn_blocking(move || c.output().expect("run act")).await.unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ActRun { code: out.status.code(), log }
    }
}

fn deployer_bin() -> String {
    workspace_bin("deployer").display().to_string()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_release_branch_workflow_pushes_registers_deploys_and_records_a_github_deployment() {
    let app = app("deploy-on-release-branch.yml").await;
    let issuer = Issuer::start(Job {
        git_ref: "refs/heads/release/1.4".into(),
        environment: Some("production".into()),
        ..Job::default()
    });
    let layout = app.dir.path().join("layout");
    let digest = oci_layout(&layout, "built");
    let github = FakeGithub::start();
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = Act::new(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("DEPLOYER_BINARY", &deployer_bin())
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .env("GITHUB_API_URL", &github.url)
        .arg("-s")
        .arg(&format!("GITHUB_TOKEN={GITHUB_TOKEN}"))
        .run(json!({"ref": "refs/heads/release/1.4"}))
        .await;
    assert_eq!(run.code, Some(0), "{}", run.log);
    assert!(issuer.requests() >= 1, "authenticated through the local OIDC issuer\n{}", run.log);

    let o = run.outputs();
    assert_eq!(o.get("image-digest"), Some(&digest), "{o:?}");
    assert_eq!(o.get("result").map(String::as_str), Some("succeeded"), "{o:?}");
    assert_eq!(o.get("environment").map(String::as_str), Some("production"), "{o:?}");
    assert_eq!(o.get("aws-account-id"), Some(&app.account), "{o:?}");
    let td = o.get("task-definition-arn").cloned().unwrap_or_default();
    assert!(td.ends_with(&format!("task-definition/{}:2", app.family)), "{o:?}");
    assert_eq!(o.get("previous-task-definition-arn"), Some(&app.v1), "{o:?}");
    assert!(run.log.contains(&format!("deploy succeeded: image {digest}, task definition {td}")), "{}", run.log);

    // ecs-sim runs the pushed image under the new revision.
    let ecs = ecs_client(&app.sim.url, &app.account);
    let svc = describe(&ecs, "prod", "web").await;
    assert_eq!(svc.task_definition(), Some(td.as_str()));
    let desc = ecs.describe_task_definition().task_definition(&td).send().await.unwrap();
    let image = desc.task_definition().unwrap().container_definitions()[0].image().unwrap().to_string();
    assert!(image.ends_with(&format!("/{}@{digest}", app.repository)), "{image}");
    assert_eq!(versions_at(&app.prod, 4).await, vec!["v2"; 4]);

    // GitHub Deployments: create → in_progress → success, the earlier one inactive.
    let reqs = github.requests();
    let calls: Vec<String> =
        reqs.iter().map(|(m, p, b, _)| format!("{m} {p} {}", b["state"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        calls,
        [
            "POST /repos/octo-org/shop/deployments ",
            "POST /repos/octo-org/shop/deployments/101/statuses in_progress",
            "POST /repos/octo-org/shop/deployments/101/statuses success",
            "GET /repos/octo-org/shop/deployments ",
            "GET /repos/octo-org/shop/deployments/7/statuses ",
            "POST /repos/octo-org/shop/deployments/7/statuses inactive",
        ],
        "{reqs:#?}"
    );
    let create = &reqs[0].2;
    assert_eq!(create["environment"], "production");
    assert_eq!(create["auto_merge"], false);
    assert_eq!(create["required_contexts"], json!([]));
    assert_eq!(create["ref"].as_str().map(str::len), Some(40), "the commit sha: {create}");
    assert_eq!(create["payload"]["image-digest"], digest.as_str());
    assert_eq!(create["payload"]["task-definition-arn"], td.as_str());
    let success = &reqs[2].2;
    assert_eq!(success["environment_url"], format!("{}/health", app.prod));
    assert!(success["log_url"].as_str().is_some_and(|u| u.contains("/octo-org/shop/actions/runs/")), "{success}");
    assert!(reqs.iter().all(|r| r.3 == format!("Bearer {GITHUB_TOKEN}")), "the token authenticates every call");
    assert!(!run.log.contains(GITHUB_TOKEN), "the token never appears in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manual_workflow_promotes_an_existing_digest_without_uploading_a_blob_and_deploys_it() {
    let app = app("manual-production-release.yml").await;
    // The image a release branch built earlier, already in the registry.
    let image = push_image(&app.repository, "v2-build").await;
    let head = reqwest::Client::new()
        .head(format!("{}/v2/{}/manifests/v2-build", stack().registry_url, app.repository))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    let digest = head.headers()["docker-content-digest"].to_str().unwrap().to_string();
    let proxy = RegistryProxy::start(&stack().registry_host);
    let issuer = Issuer::start(Job {
        git_ref: "refs/heads/main".into(),
        environment: Some("production".into()),
        event_name: "workflow_dispatch".into(),
        ..Job::default()
    });
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = Act::new(&app, "workflow_dispatch", "manual-production-release.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("DEPLOYER_BINARY", &deployer_bin())
        .env("DEPLOYER_REGISTRY_ENDPOINT", &proxy.url)
        .arg("--var")
        .arg(&format!("DEPLOYER_PROMOTE_FROM={}", app.repository))
        .run(json!({"ref": "refs/heads/main", "inputs": {"environment": "production", "version": digest}}))
        .await;
    assert_eq!(run.code, Some(0), "{}\n{image}", run.log);
    let o = run.outputs();
    assert_eq!(o.get("image-digest"), Some(&digest), "{o:?}");
    assert_eq!(o.get("result").map(String::as_str), Some("succeeded"), "{o:?}");
    assert!(proxy.count("GET", "/manifests/") + proxy.count("HEAD", "/manifests/") >= 1, "{:?}", proxy.seen());
    assert_eq!(proxy.count("PUT", "/blobs/"), 0, "no blob re-uploaded: {:?}", proxy.seen());
    assert_eq!(proxy.count("PATCH", "/blobs/"), 0, "{:?}", proxy.seen());
    assert_eq!(proxy.count("POST", "/blobs/uploads"), 0, "{:?}", proxy.seen());
    let td = o.get("task-definition-arn").cloned().unwrap_or_default();
    let ecs = ecs_client(&app.sim.url, &app.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(td.as_str()));
    let desc = ecs.describe_task_definition().task_definition(&td).send().await.unwrap();
    let image = desc.task_definition().unwrap().container_definitions()[0].image().unwrap().to_string();
    assert!(image.ends_with(&format!("@{digest}")), "{image}");
    assert!(run.log.contains("GitHub Deployments skipped"), "no token: skipped with a notice\n{}", run.log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feature_branch_push_targeting_production_is_refused_with_exit_1() {
    let app = app("deploy-on-release-branch.yml").await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/feature/x".into(), ..Job::default() });
    let layout = app.dir.path().join("layout");
    oci_layout(&layout, "built");
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = Act::new(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("DEPLOYER_BINARY", &deployer_bin())
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .run(json!({"ref": "refs/heads/feature/x"}))
        .await;
    assert_ne!(run.code, Some(0), "{}", run.log);
    assert!(
        run.log.contains("refusing to deploy: refs/heads/feature/x may not deploy to \"production\""),
        "{}",
        run.log
    );
    // act's log: the action's script step fails with deployer's exit code.
    let step = run.log.split("Failure - Main \"$GITHUB_ACTION_PATH/scripts/action.sh\"").nth(1).unwrap_or_default();
    assert!(step.lines().nth(1).is_some_and(|l| l.ends_with("exit status 1")), "deployer exits 1\n{}", run.log);
    assert_eq!(issuer.requests(), 0, "refused before asking for a token");
    let ecs = ecs_client(&app.sim.url, &app.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(app.v1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_release_binary_fails_the_action_before_it_runs() {
    let app = app("deploy-on-release-branch.yml").await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/1.4".into(), ..Job::default() });
    let layout = app.dir.path().join("layout");
    oci_layout(&layout, "built");
    // The action's tree commits the sha256 of the real binary; the "release" serves another one.
    let real = std::fs::read(workspace_bin("deployer")).unwrap();
    let assets = app.dir.path().join("assets");
    let marker = app.dir.path().join("tampered-binary-ran");
    write(&assets.join("deployer-x86_64-unknown-linux-musl"), &format!("#!/bin/sh\ntouch '{}'\n", marker.display()));
    write(
        &app.dir.path().join("action/checksums/release.sha256"),
        &format!(
            "# release: https://github.invalid/org/deployer/releases/download/v1.0.0\n{:x}  deployer-x86_64-unknown-linux-musl\n",
            Sha256::digest(&real)
        ),
    );
    let tool_cache = app.dir.path().join("toolcache");
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = Act::new(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .env("DEPLOYER_ACTION_ASSET_BASE_URL", &format!("file://{}", assets.display()))
        .env("RUNNER_TOOL_CACHE", &tool_cache.display().to_string())
        .run(json!({"ref": "refs/heads/release/1.4"}))
        .await;
    assert_ne!(run.code, Some(0), "{}", run.log);
    assert!(run.log.contains("checksum mismatch for deployer-x86_64-unknown-linux-musl"), "{}", run.log);
    assert!(!marker.exists(), "the tampered binary never ran");
    assert_eq!(issuer.requests(), 0);
    let leftovers: Vec<PathBuf> = walk(&tool_cache);
    assert!(leftovers.iter().all(|p| !p.ends_with("deployer")), "nothing cached: {leftovers:?}");

    // The genuine asset passes the same check and runs (the release then deploys).
    std::fs::write(assets.join("deployer-x86_64-unknown-linux-musl"), &real).unwrap();
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = Act::new(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .env("DEPLOYER_ACTION_ASSET_BASE_URL", &format!("file://{}", assets.display()))
        .env("RUNNER_TOOL_CACHE", &tool_cache.display().to_string())
        .run(json!({"ref": "refs/heads/release/1.4"}))
        .await;
    assert_eq!(run.code, Some(0), "{}", run.log);
    assert_eq!(run.outputs().get("result").map(String::as_str), Some("succeeded"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_release_ends_its_github_deployment_as_failure_and_keeps_the_earlier_one() {
    let app = app("deploy-on-release-branch.yml").await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/1.5".into(), ..Job::default() });
    let image = push_image(&app.repository, "bad").await;
    let github = FakeGithub::start();
    let mut c = crate::support::deployer(&app.account);
    c.current_dir(app.dir.path().join("app"))
        .envs(issuer.env())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/heads/release/1.5")
        .env("GITHUB_SHA", "4f0e6c5b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f")
        .env("GITHUB_REPOSITORY", "octo-org/shop")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_API_URL", &github.url)
        .env("DEPLOYER_GITHUB_TOKEN", GITHUB_TOKEN)
        .env("AWS_ENDPOINT_URL_ECS", &app.sim.url)
        .env("DEPLOYER_POLL_MS", "150")
        .env("GITHUB_STEP_SUMMARY", app.dir.path().join("summary.md"))
        .args(["release", "--image", &image, "--registry-endpoint", &stack().registry_url])
        .args(["--env", "SIM_HEALTH=fail", "--timeout", "60"]);
    let out = tokio::task::spawn_blocking(move || crate::support::capture(&mut c)).await.unwrap();
    assert_eq!(out.code, Some(3), "rolled back\n{out}");
    let reqs = github.requests();
    let calls: Vec<String> =
        reqs.iter().map(|(m, p, b, _)| format!("{m} {p} {}", b["state"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        calls,
        [
            "POST /repos/octo-org/shop/deployments ",
            "POST /repos/octo-org/shop/deployments/101/statuses in_progress",
            "POST /repos/octo-org/shop/deployments/101/statuses failure",
        ],
        "{reqs:#?}"
    );
    assert_eq!(reqs[0].2["ref"], "4f0e6c5b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f");
    assert_eq!(reqs[2].2["description"], "rolled-back");
    assert_eq!(reqs[2].2["log_url"], "https://github.com/octo-org/shop/actions/runs/4242");
    let summary = std::fs::read_to_string(app.dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("## deployer release: `production` ↩️ rolled-back"), "{summary}");
    let revisions = format!("| task definition | `{0}:1` → `{0}:2` |", app.family);
    assert!(summary.contains(&revisions), "{summary}");
    assert!(summary.contains("| strategy | rolling |"), "{summary}");
    assert!(summary.contains("```mermaid\ngantt\n"), "{summary}");
    assert!(summary.contains("**Stopped tasks of the new revision:**"), "failure diagnostics\n{summary}");
    let ecs = ecs_client(&app.sim.url, &app.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(app.v1.as_str()));
    assert!(out.stdout.contains(&format!("::add-mask::{GITHUB_TOKEN}")), "the token is masked first\n{out}");
    let after_mask = out.stdout.replacen(&format!("::add-mask::{GITHUB_TOKEN}"), "", 1);
    assert!(!after_mask.contains(GITHUB_TOKEN) && !out.stderr.contains(GITHUB_TOKEN), "{out}");
}

/// The action's script alone: multi-line `env`/`secrets` inputs become one argument each (no
/// shell re-parsing), and empty inputs are dropped so deployer.toml applies.
#[test]
fn the_action_script_turns_inputs_into_arguments_without_a_shell_reparsing_them() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("deployer");
    write(&fake, "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\nenv | grep '^DEPLOYER_' | sort\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/action.sh"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_ACTION_PATH", repo_root())
        .env("DEPLOYER_ACTION_BINARY", &fake)
        .env("DEPLOYER_CLUSTER", "")
        .env("DEPLOYER_SERVICE", "web")
        .env("DEPLOYER_ACTION_ENV", "A=1\n\n  \nB=two words; $(touch pwned)\n")
        .env("DEPLOYER_ACTION_SECRETS", "DB=ssm:/prod/db\n")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout,
        "[release]\n[--env]\n[A=1]\n[--env]\n[B=two words; $(touch pwned)]\n[--secret]\n[DB=ssm:/prod/db]\nDEPLOYER_SERVICE=web\n"
    );
    assert!(!dir.path().join("pwned").exists());
}

/// Without a `binary` input or a release asset, the action builds deployer from its own source
/// (a stub `cargo` here records the call) and caches it in the tool cache: the second run
/// builds nothing.
#[test]
fn without_an_asset_the_action_builds_from_source_once_and_caches_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let calls = dir.path().join("cargo-calls");
    write(
        &bin.join("cargo"),
        &format!(
            "#!/bin/sh\necho \"$PWD $*\" >>'{}'\nmkdir -p \"$CARGO_TARGET_DIR/release\"\nprintf '#!/bin/sh\\necho built deployer \"$@\"\\n' >\"$CARGO_TARGET_DIR/release/deployer\"\nchmod +x \"$CARGO_TARGET_DIR/release/deployer\"\n",
            calls.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The action's tree as a branch has it: source, no checksums/release.sha256.
    let action = dir.path().join("action");
    for file in ["scripts/action.sh", "Cargo.toml", "Cargo.lock", "src/main.rs", "sim/Cargo.toml"] {
        std::fs::create_dir_all(action.join(file).parent().unwrap()).unwrap();
        std::fs::copy(repo_root().join(file), action.join(file)).unwrap();
    }
    let run = || {
        let out = Command::new("bash")
            .arg(action.join("scripts/action.sh"))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("GITHUB_ACTION_PATH", &action)
            .env("RUNNER_TOOL_CACHE", dir.path().join("toolcache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(), "built deployer release\n");
    assert_eq!(run(), "built deployer release\n");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        calls,
        format!("{} build --release --locked -p deployer --bin deployer\n", action.display()),
        "one build, from the action's path"
    );
}
