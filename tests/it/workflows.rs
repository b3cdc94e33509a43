//! The composite action and the example workflows users copy, run by `act` in host mode
//! (DESIGN.md section 5) against the local stack: the local OIDC issuer, moto, docker-registry
//! (behind a counting proxy), ecs-sim, and a fake of GitHub's Deployments REST endpoints.
//!
//! Each test builds a throwaway "application repository" (git, the example workflow verbatim,
//! a deployer.toml pointing at the local stack) and runs the workflow with:
//! - `actions/checkout@<sha>` stubbed by a no-op local action (act copies the work tree);
//! - `org/deployer@v1` mapped to a copy of this repository's action.yml and scripts/action.sh
//!   (`--local-repository`), so the action runs from its own path, with a
//!   `test-overrides.env` in that copy (README.md, "The action"): the debug build as the
//!   binary, the local registry as `DEPLOYER_REGISTRY_ENDPOINT`, fast polling. The job's own
//!   `DEPLOYER_*` variables never reach the binary, so this is the only way in;
//! - the job's environment (`--env`): the OIDC request URL/token, AWS endpoints, and a fake
//!   `docker` on PATH that "builds" an OCI layout the test made.

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

pub(crate) struct FakeGithub {
    pub(crate) url: String,
    state: Shared,
}

impl FakeGithub {
    /// Starts with one earlier successful deployment (id 7) of the environment.
    pub(crate) fn start() -> FakeGithub {
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

    pub(crate) fn requests(&self) -> Vec<(String, String, Value, String)> {
        self.state.lock().unwrap().requests.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The application repository, the stubbed actions, and act.

/// An application repository (git, a workflow, maybe a deployer.toml) next to the stubbed
/// actions act maps `actions/checkout` and `org/deployer@v1` to.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new(workflow: &str, workflow_text: &str, files: &[(&str, String)]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        for (name, text) in files {
            write(&root.join(name), text);
        }
        write(&root.join(".github/workflows").join(workflow), workflow_text);
        git(&root, &["init", "-q"]);
        git(&root, &["remote", "add", "origin", "https://github.com/octo-org/shop.git"]);
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-qm", "app"]);
        write(
            &dir.path().join("checkout/action.yml"),
            "name: checkout stub\ndescription: act already copied the work tree\nruns:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo checkout stub\n",
        );
        let action = dir.path().join("action");
        std::fs::create_dir_all(action.join("scripts")).unwrap();
        std::fs::copy(repo_root().join("action.yml"), action.join("action.yml")).unwrap();
        std::fs::copy(repo_root().join("scripts/action.sh"), action.join("scripts/action.sh")).unwrap();
        let repo = Repo { dir };
        repo.overrides(&[]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The action copy's test-overrides.env: the debug build as the binary (unless `lines`
    /// name an `asset-base-url`), the local registry, fast polling, then `lines`.
    fn overrides(&self, lines: &[(&str, &str)]) {
        let mut all: Vec<(String, String)> = vec![
            ("DEPLOYER_REGISTRY_ENDPOINT".into(), stack().registry_url.clone()),
            ("DEPLOYER_POLL_MS".into(), "150".into()),
            ("DEPLOYER_RETRY_BASE_MS".into(), "20".into()),
        ];
        if !lines.iter().any(|(k, _)| *k == "asset-base-url") {
            all.push(("binary".into(), deployer_bin()));
        }
        for (k, v) in lines {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
        let text: String = all.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        write(&self.path().join("action/test-overrides.env"), &text);
    }
}

struct App {
    account: String,
    sim: Sim,
    repo: Repo,
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

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub(crate) fn git(dir: &Path, args: &[&str]) {
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

    let toml = format!(
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
branches = ["release/**", "!release/experimental"]
tags = ["v*"]
manual = true
manual-branches = ["main"]
health-url = ["{prod}/health"]
task-definition = "taskdef.json"
"#
    );
    let taskdef = json!({
        "family": family,
        "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "placeholder", "essential": true,
            "portMappings": [{"containerPort": 8080}],
            "environment": [{"name": "SIM_VERSION", "value": "v2"}]}]
    })
    .to_string();
    let example = std::fs::read_to_string(repo_root().join("examples/workflows").join(workflow)).unwrap();
    let files = [("deployer.toml", toml), ("taskdef.json", taskdef), ("Dockerfile", "FROM scratch\n".to_string())];
    let repo = Repo::new(workflow, &example, &files);
    App { account, sim, repo, family, repository, prod, v1 }
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
    repo: &'a Repo,
    event: &'static str,
    workflow: &'static str,
    envs: Vec<(String, String)>,
    extra: Vec<String>,
}

impl<'a> Act<'a> {
    fn new(repo: &'a Repo, event: &'static str, workflow: &'static str) -> Self {
        let st = stack();
        let envs = [
            ("AWS_ENDPOINT_URL", st.moto_url.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("NO_COLOR", "1"),
        ];
        Act {
            repo,
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
        let base = self.repo.path();
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

/// act for an example workflow of `app`, with ecs-sim as the ECS endpoint.
fn act<'a>(app: &'a App, event: &'static str, workflow: &'static str) -> Act<'a> {
    Act::new(&app.repo, event, workflow).env("AWS_ENDPOINT_URL_ECS", &app.sim.url)
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
    let layout = app.repo.path().join("layout");
    let digest = oci_layout(&layout, "built");
    let github = FakeGithub::start();
    // Set anywhere in the job, these would send the GitHub token and the ECR credentials
    // elsewhere; the action passes only its own inputs to deployer.
    let elsewhere_github = FakeGithub::start();
    let elsewhere_registry = RegistryProxy::start(&stack().registry_host);
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = act(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .env("GITHUB_API_URL", &github.url)
        .env("DEPLOYER_GITHUB_API_URL", &elsewhere_github.url)
        .env("DEPLOYER_REGISTRY_ENDPOINT", &elsewhere_registry.url)
        .arg("-s")
        .arg(&format!("GITHUB_TOKEN={GITHUB_TOKEN}"))
        .run(json!({"ref": "refs/heads/release/1.4"}))
        .await;
    assert_eq!(run.code, Some(0), "{}", run.log);
    assert!(issuer.requests() >= 1, "authenticated through the local OIDC issuer\n{}", run.log);
    assert!(elsewhere_github.requests().is_empty(), "the job's DEPLOYER_GITHUB_API_URL was not used");
    assert!(elsewhere_registry.seen().is_empty(), "the job's DEPLOYER_REGISTRY_ENDPOINT was not used");
    assert!(
        run.log.contains("ignoring DEPLOYER_GITHUB_API_URL DEPLOYER_REGISTRY_ENDPOINT from the job's environment")
            || run
                .log
                .contains("ignoring DEPLOYER_REGISTRY_ENDPOINT DEPLOYER_GITHUB_API_URL from the job's environment"),
        "{}",
        run.log
    );

    let o = run.outputs();
    assert_eq!(o.get("image-digest"), Some(&digest), "{o:?}");
    assert_eq!(o.get("result").map(String::as_str), Some("succeeded"), "{o:?}");
    assert_eq!(o.get("environment").map(String::as_str), Some("production"), "{o:?}");
    assert_eq!(o.get("aws-account-id"), Some(&app.account), "{o:?}");
    let td = o.get("task-definition-arn").cloned().unwrap_or_default();
    assert!(td.ends_with(&format!("task-definition/{}:2", app.family)), "{o:?}");
    assert_eq!(o.get("previous-task-definition-arn"), Some(&app.v1), "{o:?}");
    // A later step reads the outputs, image-tags included.
    let tags = o.get("image-tags").cloned().unwrap_or_default();
    assert_eq!(tags.len(), 40, "tagged with the commit sha: {o:?}");
    assert!(
        run.log.contains(&format!("deploy succeeded (exit 0): image {digest} tagged {tags}, task definition {td}")),
        "{}",
        run.log
    );
    assert_eq!(o.get("exit-code").map(String::as_str), Some("0"), "{o:?}");

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
    app.repo.overrides(&[("DEPLOYER_REGISTRY_ENDPOINT", &proxy.url)]);
    let run = act(&app, "workflow_dispatch", "manual-production-release.yml")
        .env(k1, &v1)
        .env(k2, &v2)
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
    let layout = app.repo.path().join("layout");
    oci_layout(&layout, "built");
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = act(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
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
    assert_eq!(step_exit_status(&run), Some(1), "deployer exits 1\n{}", run.log);
    assert_eq!(issuer.requests(), 0, "refused before asking for a token");
    // The refusal is an outcome a workflow can act on.
    let o = run.outputs();
    assert_eq!(o.get("result").map(String::as_str), Some("failed"), "{o:?}");
    assert_eq!(o.get("exit-code").map(String::as_str), Some("1"), "{o:?}");
    assert!(run.log.contains("deploy failed (exit 1): image  tagged , task definition"), "{}", run.log);
    let ecs = ecs_client(&app.sim.url, &app.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(app.v1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_release_binary_fails_the_action_before_it_runs() {
    let app = app("deploy-on-release-branch.yml").await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/1.4".into(), ..Job::default() });
    let layout = app.repo.path().join("layout");
    oci_layout(&layout, "built");
    // The action's tree commits the sha256 of the real binary; the "release" serves another one.
    let real = std::fs::read(workspace_bin("deployer")).unwrap();
    let assets = app.repo.path().join("assets");
    let marker = app.repo.path().join("tampered-binary-ran");
    write(&assets.join("deployer-x86_64-unknown-linux-musl"), &format!("#!/bin/sh\ntouch '{}'\n", marker.display()));
    write(
        &app.repo.path().join("action/checksums/release.sha256"),
        &format!(
            "# release: https://github.invalid/org/deployer/releases/download/v1.0.0\n{:x}  deployer-x86_64-unknown-linux-musl\n",
            Sha256::digest(&real)
        ),
    );
    let tool_cache = app.repo.path().join("toolcache");
    std::fs::create_dir_all(&tool_cache).unwrap();
    app.repo.overrides(&[("asset-base-url", &format!("file://{}", assets.display()))]);
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = act(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .env("RUNNER_TOOL_CACHE", &tool_cache.display().to_string())
        .run(json!({"ref": "refs/heads/release/1.4"}))
        .await;
    assert_ne!(run.code, Some(0), "{}", run.log);
    assert!(run.log.contains("checksum mismatch for deployer-x86_64-unknown-linux-musl"), "{}", run.log);
    assert!(!marker.exists(), "the tampered binary never ran");
    assert_eq!(issuer.requests(), 0);
    assert_eq!(run.outputs().get("result").map(String::as_str), Some("failed"));
    let leftovers: Vec<PathBuf> = walk(&tool_cache);
    assert!(leftovers.iter().all(|p| !p.ends_with("deployer")), "nothing cached: {leftovers:?}");

    // The genuine asset passes the same check and runs (the release then deploys).
    std::fs::write(assets.join("deployer-x86_64-unknown-linux-musl"), &real).unwrap();
    let [(k1, v1), (k2, v2)] = issuer.env();
    let run = act(&app, "push", "deploy-on-release-branch.yml")
        .env(k1, &v1)
        .env(k2, &v2)
        .env("FAKE_DOCKER_LAYOUT", &layout.display().to_string())
        .env("RUNNER_TOOL_CACHE", &tool_cache.display().to_string())
        .run(json!({"ref": "refs/heads/release/1.4"}))
        .await;
    assert_eq!(run.code, Some(0), "{}", run.log);
    assert_eq!(run.outputs().get("result").map(String::as_str), Some("succeeded"));
}

/// The exit status act reports for the action's script step (deployer's, as it is exec'd).
fn step_exit_status(run: &ActRun) -> Option<i32> {
    let step = run.log.split("Failure - Main \"$GITHUB_ACTION_PATH/scripts/action.sh\"").nth(1)?;
    let line = step.lines().find(|l| l.contains("exit status "))?;
    line.rsplit("exit status ").next()?.trim().parse().ok()
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
    c.current_dir(app.repo.path().join("app"))
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
        .env("GITHUB_STEP_SUMMARY", app.repo.path().join("summary.md"))
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
    let summary = std::fs::read_to_string(app.repo.path().join("summary.md")).unwrap();
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

// ---------------------------------------------------------------------------------------------
// The policy and the outputs through the action, on events the examples do not listen to.

/// A workflow that calls the action on every event deployer must judge, and prints the
/// outputs a later step reads.
const ANY_EVENT: &str = r#"name: deploy (any event)
on:
  push:
  pull_request:
  pull_request_target:
  workflow_run:
    workflows: [ci]
    types: [completed]
  issue_comment:
  workflow_dispatch:
    inputs:
      environment:
        type: string
        required: true
permissions: {}
jobs:
  deploy:
    runs-on: ubuntu-latest
    permissions:
      id-token: write
      contents: read
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - id: deploy
        uses: org/deployer@v1
        with:
          environment: ${{ inputs.environment }}
          source: ${{ vars.DEPLOY_SOURCE }}
          tags: ${{ vars.DEPLOY_TAGS }}
          env: ${{ vars.DEPLOY_ENV }}
      - if: always()
        env:
          RESULT: ${{ steps.deploy.outputs.result }}
          EXIT_CODE: ${{ steps.deploy.outputs.exit-code }}
        run: 'echo "outputs: result=${RESULT} exit-code=${EXIT_CODE}"'
"#;

/// A repository with ANY_EVENT and, when `with_policy`, release.rs's deployer.toml.
fn policy_repo(with_policy: bool) -> Repo {
    let files = if with_policy { vec![("deployer.toml", crate::release::POLICY.to_string())] } else { vec![] };
    Repo::new("any-event.yml", ANY_EVENT, &files)
}

/// Runs ANY_EVENT for `event` and asserts the action failed with `code`, the step outputs a
/// later step read said so, and the OIDC issuer was never asked for a token.
async fn refused(repo: &Repo, event: &'static str, payload: Value, vars: &[&str], code: i32) -> ActRun {
    let issuer = Issuer::start(Job::default());
    let [(k1, v1), (k2, v2)] = issuer.env();
    let mut act = Act::new(repo, event, "any-event.yml").env(k1, &v1).env(k2, &v2);
    for v in vars {
        act = act.arg("--var").arg(v);
    }
    let run = act.run(payload).await;
    assert_ne!(run.code, Some(0), "{}", run.log);
    assert_eq!(step_exit_status(&run), Some(code), "{event}\n{}", run.log);
    assert!(run.log.contains(&format!("outputs: result=failed exit-code={code}")), "{event}\n{}", run.log);
    assert_eq!(issuer.requests(), 0, "{event}: refused before any token request\n{}", run.log);
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_requests_workflow_run_and_issue_comment_are_refused_before_any_token_request() {
    let repo = policy_repo(true);
    let pr = json!({"number": 7, "pull_request": {"number": 7, "head": {"ref": "feature/x"}, "base": {"ref": "main"}}});
    for (event, payload, says) in [
        ("pull_request", pr.clone(), "deployer never deploys from pull_request"),
        ("pull_request_target", pr, "deployer never deploys from pull_request_target"),
        (
            "workflow_run",
            json!({"workflow_run": {"name": "ci", "conclusion": "success", "head_branch": "main"}}),
            "the \"workflow_run\" event may not deploy",
        ),
        (
            "issue_comment",
            json!({"comment": {"body": "/deploy"}, "issue": {"number": 7}}),
            "the \"issue_comment\" event may not deploy",
        ),
    ] {
        let run = refused(&repo, event, payload, &[], 1).await;
        assert!(run.log.contains(says), "{event}\n{}", run.log);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_negated_branch_and_a_dispatch_from_outside_the_branches_are_refused() {
    let repo = policy_repo(true);
    let run = refused(&repo, "push", json!({"ref": "refs/heads/release/experimental"}), &[], 1).await;
    assert!(
        run.log.contains("refs/heads/release/experimental (push) matches no environment's branches or tags"),
        "{}",
        run.log
    );
    let dispatch = json!({"ref": "refs/heads/feature/x", "inputs": {"environment": "production"}});
    let run = refused(&repo, "workflow_dispatch", dispatch, &[], 1).await;
    assert!(
        run.log.contains("a workflow_dispatch from refs/heads/feature/x may not deploy to \"production\""),
        "{}",
        run.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_deployer_toml_the_action_refuses_and_shows_the_file_to_add() {
    let repo = policy_repo(false);
    let run = refused(&repo, "push", json!({"ref": "refs/heads/main"}), &[], 1).await;
    assert!(run.log.contains("inside GitHub Actions deployer needs a policy"), "{}", run.log);
    assert!(run.log.contains("[environments.production]"), "{}", run.log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_env_input_exits_2_before_any_aws_call_or_upload() {
    let repo = policy_repo(true);
    let proxy = RegistryProxy::start(&stack().registry_host);
    repo.overrides(&[("DEPLOYER_REGISTRY_ENDPOINT", &proxy.url)]);
    let layout = repo.path().join("layout");
    oci_layout(&layout, "built");
    let vars = [
        format!("DEPLOY_SOURCE=oci:{}", layout.display()),
        "DEPLOY_TAGS=ok,bad tag".to_string(),
        "DEPLOY_ENV=GOOD=1\n1BAD=x".to_string(),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let run = refused(&repo, "push", json!({"ref": "refs/heads/main"}), &vars, 2).await;
    assert!(run.log.contains("release: 2 inputs are wrong"), "{}", run.log);
    assert!(run.log.contains("--env \"1BAD=x\""), "{}", run.log);
    assert!(run.log.contains("--tag \"bad tag\""), "{}", run.log);
    assert!(proxy.seen().is_empty(), "nothing reached the registry: {:?}", proxy.seen());
}
