//! `deployer auth`: validate the flags, pick the credential source (GitHub OIDC inside
//! Actions, the default chain elsewhere), exchange, and export the credentials where asked —
//! masking each credential before it is written anywhere.

use std::fmt;

use serde::Serialize;

use crate::aws::auth::{self, AuthRequest, Session, Source};
use crate::cli::{AuthArgs, ExportMode, GlobalArgs};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::github::oidc::{OidcError, TokenEndpoint};
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

/// Turn the flags into a validated request; no network call happens here.
pub fn request(args: &AuthArgs, global: &GlobalArgs) -> Result<AuthRequest> {
    let role = args.role_arn.as_deref().map(|arn| auth::check_role_arn("--role-arn", arn)).transpose()?;
    let chain_role =
        args.chain_role_arn.as_deref().map(|arn| auth::check_role_arn("--chain-role-arn", arn)).transpose()?;
    let session_name = match &args.session_name {
        Some(name) => {
            auth::check_session_name(name)?;
            name.clone()
        }
        None => auth::default_session_name(
            std::env::var("GITHUB_REPOSITORY").ok().as_deref(),
            std::env::var("GITHUB_RUN_ID").ok().as_deref(),
        ),
    };
    auth::check_duration(args.duration)?;
    for id in &args.allowed_account_ids {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Usage(format!("--allowed-account-ids: {id:?} is not a 12-digit account id")));
        }
    }
    Ok(AuthRequest {
        role,
        chain_role,
        session_name,
        duration_seconds: args.duration,
        audience: args.audience.clone(),
        allowed_account_ids: args.allowed_account_ids.clone(),
        region: global.region.clone(),
    })
}

/// Inside Actions an OIDC endpoint is expected when a role is given; outside, the default
/// chain serves (and assumes `--role-arn` with sts:AssumeRole when given).
pub fn source(in_actions: bool, role_given: bool) -> Result<Source> {
    match TokenEndpoint::from_env()? {
        Some(endpoint) => Ok(Source::GithubOidc(endpoint)),
        None if in_actions && role_given => Err(OidcError::NotAvailable.into()),
        None => Ok(Source::DefaultChain),
    }
}

/// Authenticate as `auth` and `release` do.
pub async fn session(args: &AuthArgs, global: &GlobalArgs, printer: &Printer) -> Result<Session> {
    let req = request(args, global)?;
    let source = source(printer.runner.in_actions(), req.role.is_some())?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| Error::Input(format!("cannot build an HTTP client: {e}")))?;
    // authenticate masks every credential the moment it has it.
    let session = auth::authenticate(&req, source, &http).await?;
    Ok(session)
}

pub async fn run(args: &AuthArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = session(args, global, printer).await?;
    let runner = &printer.runner;
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
