//! `params import` against moto's Parameter Store: values stored exactly as written (no `$`
//! substitution, so neither a canary nor the process's own AWS secret key can change or leak
//! into a value), SecureString by default, never a downgrade, case collisions and oversize
//! input refused with nothing written, and no output that carries a value.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sim::harness::moto;
use crate::support::{Captured, capture, credentials_for, deployer, runtime, unique_account};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// `deployer params import FILE --path PATH ARGS…` as `account`.
fn import(account: &str, file: &str, path: &str, args: &[&str]) -> Captured {
    let mut c = deployer(account);
    c.args(["params", "import", file, "--path", path]).args(args);
    capture(&mut c)
}

/// `(name, type, value)` of every parameter of `account`, sorted by name, decrypted.
fn stored(account: &str) -> Vec<(String, String, String)> {
    runtime().block_on(async {
        let listed = moto(account, "AmazonSSM.DescribeParameters", json!({"MaxResults": 50})).await;
        let mut out = Vec::new();
        for p in listed["Parameters"].as_array().unwrap() {
            let name = p["Name"].as_str().unwrap().to_string();
            let got = moto(account, "AmazonSSM.GetParameter", json!({"Name": name, "WithDecryption": true})).await;
            out.push((
                name,
                p["Type"].as_str().unwrap().to_string(),
                got["Parameter"]["Value"].as_str().unwrap().to_string(),
            ));
        }
        out.sort();
        out
    })
}

fn triple(name: &str, kind: &str, value: &str) -> (String, String, String) {
    (name.to_string(), kind.to_string(), value.to_string())
}

#[test]
fn values_are_stored_exactly_as_written_all_secure_and_never_printed() {
    let account = unique_account();
    let secret_key = credentials_for(&account).secret_access_key;
    let canary = format!("canary-{account}-never-print");
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        ".env",
        &format!(
            "X=${{AWS_SECRET_ACCESS_KEY}}\nY=pa$sword\nDATABASE_URL=postgres://u:p@h/d\nCANARY=\"{canary}\"\nHOME_REF='$HOME'\n"
        ),
    );
    let summary = dir.path().join("summary.md");
    let mut runs = Vec::new();
    for (output, extra) in
        [("text", "--dry-run"), ("json", "--dry-run"), ("json", "--overwrite"), ("text", "--overwrite")]
    {
        let mut c = deployer(&account);
        c.env("GITHUB_ACTIONS", "true").env("GITHUB_STEP_SUMMARY", &summary).env("CANARY_IN_ENV", &canary).args([
            "--output",
            output,
            "-v",
            "params",
            "import",
            &file,
            "--path",
            "/prod/shop",
            extra,
        ]);
        runs.push((format!("{output} {extra}"), capture(&mut c)));
    }
    for (what, run) in &runs {
        assert_eq!(run.code, Some(0), "{what}: {run}");
        for text in [&run.stdout, &run.stderr] {
            assert!(!text.contains(&canary), "{what} printed the canary:\n{run}");
            assert!(!text.contains(&secret_key), "{what} printed the process's secret key:\n{run}");
            assert!(!text.contains("pa$sword") && !text.contains("hunter"), "{what} printed a value:\n{run}");
        }
    }
    assert!(!std::fs::read_to_string(&summary).unwrap_or_default().contains(&canary));
    // The warnings name the keys whose values hold `$`, and only those.
    let json: Value = serde_json::from_str(&runs[1].1.stdout).unwrap();
    let warnings: Vec<&str> = json["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(
        warnings,
        [
            "X (line 1): the value holds `$`; it is imported literally, with no variable substitution",
            "Y (line 2): the value holds `$`; it is imported literally, with no variable substitution",
        ]
    );
    // Inside Actions they are also annotations on the file.
    assert!(runs[0].1.stdout.contains("::warning file="), "{}", runs[0].1);
    assert_eq!(
        stored(&account),
        [
            triple("/prod/shop/canary", "SecureString", &canary),
            triple("/prod/shop/database_url", "SecureString", "postgres://u:p@h/d"),
            triple("/prod/shop/home_ref", "SecureString", "$HOME"),
            triple("/prod/shop/x", "SecureString", "${AWS_SECRET_ACCESS_KEY}"),
            triple("/prod/shop/y", "SecureString", "pa$sword"),
        ]
    );
    // The second real run found everything in place.
    let last = &runs[3].1.stdout;
    assert!(last.contains("0 to create, 0 to update, 5 unchanged"), "{last}");
}

#[test]
fn imports_are_idempotent_plain_only_when_named_and_kms_keys_are_passed_on() {
    let account = unique_account();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        ".env",
        "export DB_PASSWORD=\"s3cret value\"\nAPI_URL=https://api.example\n# comment\nLOG_LEVEL=info\n",
    );
    let config = write(dir.path(), "deployer.toml", "[params]\nplain = [\"log_*\"]\n");
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(extra);
        let mut c = deployer(&account);
        c.args(["--output", "json", "params", "import", &file, "--path", "/staging/shop/"]).args(&args);
        let run = capture(&mut c);
        assert_eq!(run.code, Some(0), "{run}");
        let v: Value = serde_json::from_str(&run.stdout).expect("json");
        v["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {} {}",
                    p["name"].as_str().unwrap(),
                    p["type"].as_str().unwrap(),
                    p["action"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        run(&["--dry-run"]),
        [
            "/staging/shop/db_password SecureString create",
            "/staging/shop/api_url SecureString create",
            "/staging/shop/log_level String create"
        ]
    );
    assert!(stored(&account).is_empty(), "a dry run writes nothing");
    assert!(run(&["--kms-key-id", "alias/shop"]).iter().all(|l| l.ends_with(" create")));
    assert_eq!(
        stored(&account),
        [
            triple("/staging/shop/api_url", "SecureString", "https://api.example"),
            triple("/staging/shop/db_password", "SecureString", "s3cret value"),
            triple("/staging/shop/log_level", "String", "info"),
        ]
    );
    let key_ids = runtime().block_on(async {
        let listed = moto(&account, "AmazonSSM.DescribeParameters", json!({})).await;
        listed["Parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["Type"] == "SecureString")
            .map(|p| p["KeyId"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(key_ids, ["alias/shop", "alias/shop"]);
    assert!(run(&[]).iter().all(|l| l.ends_with(" unchanged")), "a second import changes nothing");
    std::fs::write(&file, "DB_PASSWORD=rotated\nAPI_URL=https://api.example\nLOG_LEVEL=info\n").unwrap();
    assert_eq!(run(&[])[0], "/staging/shop/db_password SecureString keep-changed");
    assert_eq!(run(&["--overwrite"])[0], "/staging/shop/db_password SecureString update");
    assert_eq!(run(&[])[0], "/staging/shop/db_password SecureString unchanged");
    // A String that the file now wants encrypted is upgraded with --overwrite.
    runtime().block_on(moto(
        &account,
        "AmazonSSM.PutParameter",
        json!({"Name": "/staging/shop/api_url", "Value": "https://api.example", "Type": "String", "Overwrite": true}),
    ));
    assert_eq!(run(&[])[1], "/staging/shop/api_url SecureString keep-changed");
    assert_eq!(run(&["--overwrite"])[1], "/staging/shop/api_url SecureString update");
    assert_eq!(stored(&account)[0], triple("/staging/shop/api_url", "SecureString", "https://api.example"));

    let bad = import(&account, &file, "staging", &[]);
    assert_eq!(bad.code, Some(1), "{bad}");
    assert!(bad.stderr.contains("--path \"staging\": must start with '/'"), "{bad}");
}

#[test]
fn an_existing_secure_string_is_never_downgraded() {
    let account = unique_account();
    runtime().block_on(async {
        for (name, kind) in [("/p/log_level", "SecureString"), ("/p/other", "String")] {
            moto(&account, "AmazonSSM.PutParameter", json!({"Name": name, "Value": "debug", "Type": kind})).await;
        }
    });
    let before = stored(&account);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), ".env", "LOG_LEVEL=debug\nOTHER=changed\nNEW_ONE=x\n");
    let config = write(dir.path(), "deployer.toml", "[params]\nplain = [\"LOG_*\"]\n");
    for args in [
        vec!["--plain", "log_level", "--overwrite"],
        vec!["--plain", "LOG_LEVEL"],
        vec!["--plain", "log_*", "--overwrite", "--dry-run"],
        vec!["--config", config.as_str(), "--overwrite"],
    ] {
        let run = import(&account, &file, "/p", &args);
        assert_eq!(run.code, Some(1), "{args:?}: {run}");
        assert!(
            run.stderr.contains("refusing to turn SecureString parameters into String: /p/log_level (LOG_LEVEL)")
                && run.stderr.contains("delete them first (aws ssm delete-parameter --name NAME)")
                && run.stderr.contains("Nothing was written"),
            "{args:?}: {run}"
        );
        assert_eq!(stored(&account), before, "{args:?} wrote something");
    }
}

#[test]
fn keys_that_collide_in_case_are_refused_and_nothing_is_written() {
    let account = unique_account();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), ".env", "FIRST=1\nDB_PASSWORD=a\nDb_Password=b\nLAST=2\n");
    for output in ["text", "json"] {
        let mut c = deployer(&account);
        c.args(["--output", output, "params", "import", &file, "--path", "/p/", "--overwrite"]);
        let run = capture(&mut c);
        assert_eq!(run.code, Some(1), "{run}");
        assert!(
            run.stderr.contains(
                "line 3: Db_Password and DB_PASSWORD (line 2) differ only in case and would both write /p/db_password; rename one"
            ),
            "{run}"
        );
        assert!(!run.stderr.contains("a\n") && !run.stdout.contains("\"b\""), "{run}");
    }
    assert!(stored(&account).is_empty());
}

#[test]
fn oversize_and_endless_input_is_refused_quickly() {
    let account = unique_account();
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..200_000).map(|i| format!("KEY_{i}=value-{i}\n")).collect();
    let big = write(dir.path(), "big.env", &lines);
    let many = write(dir.path(), "many.env", &"A=1\n".repeat(10_001));
    let cases: Vec<(&str, String)> = vec![
        (big.as_str(), format!("{big}: larger than 1 MiB, the limit for a .env file")),
        (many.as_str(), format!("{many}: 10001 lines, more than the 10000 a .env file may have")),
        ("/dev/zero", "/dev/zero: larger than 1 MiB".to_string()),
    ];
    for (file, expected) in cases {
        let started = Instant::now();
        let run = import(&account, file, "/p/", &[]);
        let took = started.elapsed();
        assert_eq!(run.code, Some(1), "{file}: {run}");
        assert!(run.stderr.contains(&expected) && run.stderr.contains("nothing was written"), "{file}: {run}");
        assert!(took < Duration::from_secs(5), "{file} took {took:?}");
    }
    assert!(stored(&account).is_empty());
    let broken = write(dir.path(), "broken.env", "A=1\n\nB=${\nC=\"never closed\nD=4\n");
    let run = import(&account, &broken, "/p/", &[]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains(&format!("{broken}:4: the double-quoted value of C is never closed")), "{run}");
}
