//! Workflow-command injection, through the real binary in a simulated Actions environment
//! (`GITHUB_ACTIONS=true`, `GITHUB_OUTPUT`/`GITHUB_ENV`/`GITHUB_STEP_SUMMARY` files): a
//! loopback registry that answers with workflow commands in its error body, a health endpoint
//! whose body carries them, and flag values with a line break. No line of stdout or stderr may
//! start a command except deployer's own.

use std::path::Path;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::sim::common::{register, steady_web_service};
use crate::sim::harness::{Sim, unique};
use crate::support::{Captured, capture, deployer, ecs_client, serve, unique_account};

/// What a hostile server answers: each line a workflow command the runner would run if it
/// reached the log at a line start (`\r` splits lines too; `##[` works anywhere in a line).
const PAYLOAD: &str = "oops\n::add-mask::deployer\n::set-output name=result::succeeded\n  ::warning::INJECTED\r::stop-commands::INJECTED\nsee ##[set-output name=result;]INJECTED\n::error::INJECTED";

/// The payload's command lines, as the runner would see them after trimming.
const INJECTED: [&str; 5] = [
    "::add-mask::deployer",
    "::set-output name=result::succeeded",
    "::warning::INJECTED",
    "::stop-commands::INJECTED",
    "::error::INJECTED",
];

/// The only workflow commands deployer itself writes.
const OURS: [&str; 6] = ["add-mask", "group", "endgroup", "error", "warning", "notice"];

/// The runner's view (its `ActionCommandManager`): lines split at `\n` and `\r`; a line is
/// first tried as `::name props::data` after leading whitespace, and only when that is not a
/// command, searched for the older `##[name props]data` anywhere.
fn assert_no_injected_commands(what: &str, run: &Captured) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        for line in text.split(['\n', '\r']) {
            let t = line.trim_start();
            match t.strip_prefix("::") {
                Some(rest) => {
                    let name = rest.split([' ', ':']).next().unwrap_or_default();
                    assert!(
                        OURS.contains(&name) && rest.contains("::"),
                        "{what}: {stream} line {line:?} is not one of deployer's commands:\n{run}"
                    );
                    assert!(!INJECTED.contains(&t), "{what}: {stream} line {line:?} was injected:\n{run}");
                }
                None => assert!(!line.contains("##["), "{what}: {stream} line {line:?} is a ##[ command:\n{run}"),
            }
        }
    }
}

/// A simulated Actions step: the runner's files in `dir`.
fn in_actions(cmd: &mut assert_cmd::Command, dir: &Path) {
    cmd.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", dir.join("output"))
        .env("GITHUB_ENV", dir.join("env"))
        .env("GITHUB_STEP_SUMMARY", dir.join("summary.md"));
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// A one-layer OCI layout in `dir`.
fn tiny_layout(dir: &Path) {
    let blob = |bytes: &[u8]| {
        let digest = sha(bytes);
        let path = dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        json!({"digest": digest, "size": bytes.len()})
    };
    let layer = blob(b"not really a tarball, never uploaded");
    let config = blob(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config["digest"], "size": config["size"]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer["digest"], "size": layer["size"]}],
    });
    let m = blob(manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m["digest"], "size": m["size"],
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A registry that knows nothing (HEAD → 404) and answers every upload with the payload.
fn hostile_registry() -> String {
    let router = axum::Router::new().fallback(|method: Method| async move {
        if method == Method::HEAD {
            (StatusCode::NOT_FOUND, String::new())
        } else if method == Method::GET {
            (StatusCode::OK, "{}".to_string())
        } else {
            (StatusCode::BAD_REQUEST, PAYLOAD.to_string())
        }
    });
    serve(router)
}

#[test]
fn a_registry_error_body_cannot_command_the_runner() {
    let account = unique_account();
    let registry = hostile_registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    tiny_layout(&layout);
    let source = format!("oci:{}", layout.display());
    let repository = unique("injection");
    for output in ["text", "json"] {
        let mut cmd = deployer(&account);
        in_actions(&mut cmd, dir.path());
        cmd.args(["--output", output, "-vv", "push", "--source", &source, "--repository", &repository]).args([
            "--create-repository",
            "--tag",
            "v1",
            "--registry-endpoint",
            &registry,
        ]);
        let run = capture(&mut cmd);
        assert_eq!(run.code, Some(1), "{run}");
        // The body did reach the log (escaped), so the path under test was taken.
        assert!(run.stderr.contains("oops") && run.stderr.contains("\\::add-mask::deployer"), "{run}");
        assert!(run.stderr.contains("##\\u005bset-output"), "{run}");
        assert_no_injected_commands(&format!("push --output {output}"), &run);
        if output == "json" {
            let v: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{run}"));
            assert!(v["error"].as_str().unwrap().contains("##[set-output name=result;]INJECTED"), "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_health_body_cannot_command_the_runner() {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let (family, image, _) = steady_web_service(&ecs, &account, "inject", 1).await;
    let v2 = register(&ecs, &family, &image, &[("SIM_VERSION", "v2")], &[], false).await;
    let health = serve(axum::Router::new().fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, PAYLOAD) }));
    let dir = tempfile::tempdir().unwrap();
    for output in ["text", "json"] {
        let mut cmd = deployer(&account);
        in_actions(&mut cmd, dir.path());
        let health_url = format!("{health}/health");
        cmd.env("AWS_ENDPOINT_URL_ECS", &sim.url).env("DEPLOYER_POLL_MS", "150");
        cmd.args(["--output", output, "-v", "deploy", "--cluster", "main", "--service", "web"]).args([
            "--task-definition",
            &v2,
            "--health-url",
            &health_url,
            "--timeout",
            "60",
            "--no-rollback",
        ]);
        let run = tokio::task::spawn_blocking(move || capture(&mut cmd)).await.expect("deployer ran");
        assert_eq!(run.code, Some(4), "{run}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains("oops") && all.contains("\\::add-mask::deployer"), "the probe body was not shown:\n{run}");
        assert_no_injected_commands(&format!("deploy --output {output}"), &run);
        if output == "json" {
            let v: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{run}"));
            assert_eq!(v["result"], "failed", "{v}");
        }
    }
}

#[test]
fn flag_values_with_a_line_break_cannot_command_the_runner() {
    let account = unique_account();
    let dir = tempfile::tempdir().unwrap();
    let evil = format!("x\n{}", INJECTED.join("\n"));
    let evil_cr = format!("x\r{}", INJECTED.join("\r"));
    let evil_glob = format!("[{evil}");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        // deployer's own errors quoting the value
        ("release --config", vec!["release", "--config", &evil], "cannot read it"),
        ("params import FILE", vec!["params", "import", &evil_cr, "--path", "/p/"], "cannot read it"),
        (
            "params import --plain",
            vec!["params", "import", "/dev/null", "--path", "/p/", "--plain", &evil_glob],
            "not a valid pattern",
        ),
        // clap's usage errors quoting the value
        (
            "deploy --strategy",
            vec!["deploy", "--cluster", "c", "--service", "s", "--task-definition", "t", "--strategy", &evil],
            "invalid value",
        ),
        ("auth --duration", vec!["auth", "--duration", &evil], "invalid value"),
    ];
    for (what, args, expected) in cases {
        for output in ["text", "json"] {
            let mut cmd = deployer(&account);
            in_actions(&mut cmd, dir.path());
            cmd.args(["--output", output]).args(&args);
            let run = capture(&mut cmd);
            assert!(matches!(run.code, Some(1) | Some(2)), "{what}: {run}");
            assert!(run.stderr.contains(expected) && run.stderr.contains("INJECTED"), "{what}: {run}");
            assert_no_injected_commands(&format!("{what} --output {output}"), &run);
        }
    }
    // A value from the environment takes the same path.
    let mut cmd = deployer(&account);
    in_actions(&mut cmd, dir.path());
    cmd.env("DEPLOYER_STRATEGY", &evil).args(["deploy", "--cluster", "c", "--service", "s", "--task-definition", "t"]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(2), "{run}");
    assert_no_injected_commands("DEPLOYER_STRATEGY", &run);
}
