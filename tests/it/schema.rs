//! Templates checked against ECS's RegisterTaskDefinition model (generated at build time from
//! the vendored botocore model): the three typos that register unchecked today are refused by
//! `render`, `verify` and `register` with the member's path and a suggestion, before anything
//! is registered; every fixture passes unchanged; `--allow-unknown-fields` overrides.

use serde_json::{Value, json};

use crate::sim::harness::Sim;
use crate::support::{Captured, capture, deployer, ecs_client, repo_root, runtime, unique_account};

fn fixture_text() -> Value {
    let path = repo_root().join("tests/fixtures/taskdefs/fargate-web.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture (describe-task-definition output, wrapper and read-only fields included) with one change.
fn variant(dir: &std::path::Path, name: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut v = fixture_text();
    change(&mut v["taskDefinition"]);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

type Change = fn(&mut Value);

fn lowercase_healthcheck(td: &mut Value) {
    td["containerDefinitions"][0].as_object_mut().unwrap().insert(
        "healthcheck".into(),
        json!({"command": ["CMD-SHELL", "curl -f localhost:8080/health"], "interval": 10}),
    );
}

fn quoted_size(td: &mut Value) {
    td["ephemeralStorage"]["sizeInGiB"] = json!("30");
}

fn lowercase_arch(td: &mut Value) {
    td["runtimePlatform"]["cpuArchitecture"] = json!("arm64");
}

fn run(account: &str, sim: &Sim, args: &[&str]) -> Captured {
    let mut c = deployer(account);
    c.env("AWS_ENDPOINT_URL_ECS", &sim.url).args(args);
    capture(&mut c)
}

fn registered(sim: &Sim, account: &str) -> Vec<String> {
    runtime().block_on(async {
        ecs_client(&sim.url, account).list_task_definitions().send().await.unwrap().task_definition_arns().to_vec()
    })
}

#[test]
fn the_three_typos_are_refused_with_path_and_suggestion_before_anything_is_registered() {
    let account = unique_account();
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Change, &str); 3] = [
        (
            "healthcheck.json",
            lowercase_healthcheck,
            "containerDefinitions[0].healthcheck (container web): unknown field \"healthcheck\"; did you mean \"healthCheck\"?",
        ),
        (
            "size.json",
            quoted_size,
            "ephemeralStorage.sizeInGiB: expected an integer, found the string \"30\" (write 30 without quotes)",
        ),
        (
            "arch.json",
            lowercase_arch,
            "runtimePlatform.cpuArchitecture: \"arm64\" is not one of X86_64, ARM64; did you mean \"ARM64\"?",
        ),
    ];
    for (name, change, expected) in cases {
        let path = variant(dir.path(), name, change);
        for command in [&["render"][..], &["verify"], &["register"], &["register", "--no-verify"]] {
            let mut args = command.to_vec();
            args.extend(["--task-definition", &path]);
            let out = run(&account, &sim, &args);
            assert_eq!(out.code, Some(1), "{command:?} {name}: {out}");
            assert!(out.stderr.contains(expected), "{command:?} {name}: wanted {expected:?}\n{out}");
            assert!(out.stderr.contains("does not match ECS's RegisterTaskDefinition model (1 problem)"), "{out}");
        }
    }
    // All three in one template: every problem listed at once.
    let all = variant(dir.path(), "all.json", |td| {
        lowercase_healthcheck(td);
        quoted_size(td);
        lowercase_arch(td);
    });
    let out = run(&account, &sim, &["--output", "json", "register", "--task-definition", &all]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("(3 problems)"), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(result["exit-code"], 1);
    assert!(result["error"].as_str().unwrap().contains("did you mean \"healthCheck\""), "{result}");
    assert!(registered(&sim, &account).is_empty(), "nothing may be registered");
}

#[test]
fn allow_unknown_fields_lets_an_unknown_member_through_with_a_warning_but_never_a_wrong_type() {
    let account = unique_account();
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let newer = variant(dir.path(), "newer.json", |td| {
        td["containerDefinitions"][0].as_object_mut().unwrap().insert("someFutureField".into(), json!({"on": true}));
    });
    let out = run(&account, &sim, &["register", "--no-verify", "--task-definition", &newer]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("pass --allow-unknown-fields"), "{out}");

    let out = run(&account, &sim, &["register", "--no-verify", "--allow-unknown-fields", "--task-definition", &newer]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("containerDefinitions[0].someFutureField (container web): unknown field")
            && out.stderr.contains("let through by --allow-unknown-fields"),
        "{out}"
    );
    assert_eq!(registered(&sim, &account).len(), 1);

    let typed = variant(dir.path(), "typed.json", quoted_size);
    let out = run(&account, &sim, &["register", "--no-verify", "--allow-unknown-fields", "--task-definition", &typed]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("ephemeralStorage.sizeInGiB: expected an integer"), "{out}");
    assert_eq!(registered(&sim, &account).len(), 1, "the wrong type was not registered");
}

/// Both AWS CLI forms of every fixture pass unchanged: describe-task-definition output as
/// stored, and the register-task-definition input `render` prints from it.
#[test]
fn every_fixture_passes_unchanged_in_both_cli_forms() {
    let account = unique_account();
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(repo_root().join("tests/fixtures/taskdefs")).unwrap() {
        let path = entry.unwrap().path();
        let path = path.to_str().unwrap();
        let out = run(&account, &sim, &["render", "--task-definition", path]);
        assert_eq!(out.code, Some(0), "{path}: {out}");
        let input = dir.path().join(format!("input-{n}.json"));
        std::fs::write(&input, &out.stdout).unwrap();
        let out = run(&account, &sim, &["render", "--task-definition", input.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "{path} as register input: {out}");
        assert!(!out.stderr.contains("warn"), "{path}: {out}");
        n += 1;
    }
    assert!(n >= 6);
}
