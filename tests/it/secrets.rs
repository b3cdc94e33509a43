//! Credentials deployer holds are masked the moment it has them: the GitHub OIDC JWT (from the
//! local issuer) is `::add-mask::`ed before anything else is printed, and appears in no other
//! line, whichever stream the workflow commands go to.

use crate::support::oidc::{Issuer, Job};
use crate::support::{capture, deployer, unique_account};

#[test]
fn the_oidc_token_is_masked_as_soon_as_it_is_read() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    let dir = tempfile::tempdir().unwrap();
    for (output, commands_on) in [("text", "stdout"), ("json", "stderr")] {
        let mut cmd = deployer(&account);
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", dir.path().join("output"))
            .env("GITHUB_STEP_SUMMARY", dir.path().join("summary"))
            .envs(issuer.env())
            .args(["--output", output, "-vv", "auth", "--role-arn", &format!("arn:aws:iam::{account}:role/deploy")])
            .args(["--export", "none"]);
        let run = capture(&mut cmd);
        assert_eq!(run.code, Some(0), "{run}");
        let jwt = issuer.issued().pop().expect("a token was issued");
        let commands = if commands_on == "stdout" { &run.stdout } else { &run.stderr };
        let first_mask = commands.lines().find(|l| l.starts_with("::add-mask::"));
        assert_eq!(first_mask, Some(format!("::add-mask::{jwt}").as_str()), "{output}: {run}");
        for text in [&run.stdout, &run.stderr] {
            let shown = text.lines().filter(|l| l.contains(&jwt)).count();
            assert_eq!(shown, usize::from(text == commands), "{output}: the token was printed:\n{run}");
        }
    }
}
