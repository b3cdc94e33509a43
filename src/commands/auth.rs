//! `deployer auth`: validate the flags, pick the credential source (GitHub OIDC inside
//! Actions, the default chain elsewhere), exchange, and export the credentials where asked —
//! masking each credential before it is written anywhere.

use std::fmt;

use serde::Serialize;

use super::plan;
use crate::cli::{AuthCommandArgs, ExportMode, GlobalArgs};
use crate::error::Result;
use crate::exit::Exit;
use crate::output::Printer;

/// The `auth` result. Credentials appear only with `--export json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthResult {
    pub aws_account_id: String,
    pub role_arn: Option<String>,
    pub caller_arn: String,
    pub region: String,
    pub expiration: Option<String>,
    pub source: &'static str,
    pub exported_to: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ExportedCredentials>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExportedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for ExportedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportedCredentials(<redacted>)")
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "authenticated as {} (account {}, {}) via {}",
            self.caller_arn, self.aws_account_id, self.region, self.source
        )?;
        if let Some(exp) = &self.expiration {
            write!(f, "; credentials expire {exp}")?;
        }
        write!(f, "; exported to {}", self.exported_to)
    }
}

pub async fn run(args: &AuthCommandArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let req = plan::auth_request(&args.auth, global.region.clone())?;
    let runner = &printer.runner;
    let source = plan::auth_source(runner.in_actions(), req.role.is_some())?;
    let session = crate::pipeline::auth::session(&req, source).await?;
    let mode = args.export.unwrap_or(if runner.has_env_file() { ExportMode::GithubEnv } else { ExportMode::None });
    let creds = &session.credentials;
    let region = session.region();
    let mut vars = vec![
        ("AWS_ACCESS_KEY_ID", creds.access_key_id().to_string()),
        ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key().to_string()),
    ];
    if let Some(token) = creds.session_token() {
        vars.push(("AWS_SESSION_TOKEN", token.to_string()));
    }
    // When they end, so a later step can tell whether its work fits (deployer checks it).
    if let Some(expiration) = session.expiration() {
        vars.push(("AWS_CREDENTIAL_EXPIRATION", expiration));
    }
    vars.push(("AWS_REGION", region.clone()));
    vars.push(("AWS_DEFAULT_REGION", region.clone()));
    let exported_to = match mode {
        ExportMode::GithubEnv => {
            for (name, value) in &vars {
                runner.export_env(name, value)?;
            }
            "$GITHUB_ENV"
        }
        ExportMode::Shell => {
            for (name, value) in &vars {
                crate::output::write_text(
                    crate::output::Stream::Stdout,
                    &format!("export {name}={}", shell_quote(value)),
                );
            }
            "shell"
        }
        ExportMode::Json => "json",
        ExportMode::None => "nowhere (process only)",
    };
    runner.set_output("aws-account-id", &session.account_id)?;
    let result = AuthResult {
        aws_account_id: session.account_id.clone(),
        role_arn: session.role_arn.clone(),
        caller_arn: session.caller_arn.clone(),
        region,
        expiration: session.expiration(),
        source: session.source,
        exported_to,
        credentials: (mode == ExportMode::Json).then(|| ExportedCredentials {
            access_key_id: creds.access_key_id().to_string(),
            secret_access_key: creds.secret_access_key().to_string(),
            session_token: creds.session_token().map(str::to_string),
        }),
    };
    if mode == ExportMode::Shell {
        // stdout carries the export lines; the summary goes to the log.
        tracing::info!("{result}");
    } else {
        printer.result(&result);
    }
    Ok(Exit::Ok)
}

/// POSIX single-quote quoting.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("abc"), "'abc'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
