//! What changed since a service's tasks started (`deployer refresh`, `deploy
//! --force-new-deployment`). Tasks read their secrets only when they start, so after a
//! rotation the service must roll; the report names which referenced parameters and secrets
//! changed since the oldest running task started.
//!
//! Metadata only, never a value: Parameter Store's DescribeParameters (LastModifiedDate,
//! Version) and Secrets Manager's DescribeSecret (LastChangedDate, the AWSCURRENT version id),
//! read by `pipeline::refresh`. GetParameter (even without decryption) and GetSecretValue are
//! never called. The references come from the task definition (container `secrets`, log
//! drivers' `secretOptions`, private registry credentials); this file is pure: the references,
//! the comparison and the report.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_ecs::types::TaskDefinition;
use serde::Serialize;

use crate::taskdef::refs::{Target, parse_value_from};

/// One reference of the task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub container: String,
    /// The environment variable (or log option / `repositoryCredentials`) it fills.
    pub variable: String,
    pub value_from: String,
}

/// Where a reference's metadata is looked up: `ssm:NAME` or `secretsmanager:ARN`.
pub fn lookup_key(value_from: &str) -> Result<String, String> {
    match parse_value_from(value_from).map_err(|e| e.to_string())? {
        Target::Parameter { name, .. } => Ok(format!("ssm:{name}")),
        Target::Secret { id, .. } => Ok(format!("secretsmanager:{id}")),
    }
}

/// A Secrets Manager reference pinned to a version stage or id (`ARN:key:stage:id`) does not
/// follow a rotation of AWSCURRENT.
pub fn pinned(value_from: &str) -> Option<String> {
    if !value_from.starts_with("arn:") || !value_from.contains(":secretsmanager:") {
        return None;
    }
    let parts: Vec<&str> = value_from.split(':').collect();
    let stage = parts.get(8).copied().filter(|s| !s.is_empty());
    let id = parts.get(9).copied().filter(|s| !s.is_empty());
    match (stage, id) {
        (_, Some(id)) => Some(format!("version id {id}")),
        (Some(stage), None) if stage != "AWSCURRENT" => Some(format!("version stage {stage}")),
        _ => None,
    }
}

/// Every reference of a task definition, in container order.
pub fn references(td: &TaskDefinition) -> Vec<Reference> {
    let mut out = Vec::new();
    for c in td.container_definitions() {
        let container = c.name().unwrap_or("?").to_string();
        let log = c.log_configuration().map(|l| l.secret_options()).unwrap_or_default();
        for s in c.secrets().iter().chain(log) {
            out.push(Reference {
                container: container.clone(),
                variable: s.name().to_string(),
                value_from: s.value_from().to_string(),
            });
        }
        if let Some(p) = c.repository_credentials().map(|r| r.credentials_parameter()) {
            out.push(Reference {
                container: container.clone(),
                variable: "repositoryCredentials".into(),
                value_from: p.to_string(),
            });
        }
    }
    out
}

/// What the store says about one referenced parameter or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Epoch milliseconds of the last change.
    pub changed_ms: i64,
    /// Parameter version, or the secret's AWSCURRENT version id.
    pub version: Option<String>,
}

/// One reference, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RefState {
    pub container: String,
    pub variable: String,
    pub value_from: String,
    /// RFC 3339, when known.
    pub last_changed: Option<String>,
    pub version: Option<String>,
    /// Why it could not be judged, or why a change does not matter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The references split by whether they changed after the oldest running task started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SecretsReport {
    /// When the oldest running task started (RFC 3339); `None` without running tasks.
    pub tasks_started_at: Option<String>,
    pub changed: Vec<RefState>,
    pub unchanged: Vec<RefState>,
    /// Not judged: looked-up failures, pinned versions, no running task to compare with.
    pub unknown: Vec<RefState>,
}

fn rfc3339(ms: i64) -> String {
    aws_sdk_ecs::primitives::DateTime::from_millis(ms)
        .fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
        .unwrap_or_else(|_| ms.to_string())
}

/// Judge each reference: changed when its store changed it after `oldest_start_ms`.
pub fn judge(
    refs: &[Reference],
    metas: &BTreeMap<String, Result<Meta, String>>,
    oldest_start_ms: Option<i64>,
) -> SecretsReport {
    let mut report = SecretsReport { tasks_started_at: oldest_start_ms.map(rfc3339), ..SecretsReport::default() };
    for r in refs {
        let mut state = RefState {
            container: r.container.clone(),
            variable: r.variable.clone(),
            value_from: r.value_from.clone(),
            last_changed: None,
            version: None,
            note: None,
        };
        let meta = match lookup_key(&r.value_from) {
            Ok(key) => metas.get(&key).cloned().unwrap_or_else(|| Err("not looked up".into())),
            Err(e) => Err(e),
        };
        match meta {
            Err(e) => {
                state.note = Some(e);
                report.unknown.push(state);
            }
            Ok(m) => {
                state.last_changed = Some(rfc3339(m.changed_ms));
                state.version = m.version;
                if let Some(p) = pinned(&r.value_from) {
                    state.note = Some(format!("pinned to {p}: a rotation does not change what tasks read"));
                    report.unknown.push(state);
                } else {
                    match oldest_start_ms {
                        None => {
                            state.note = Some("no running task to compare with".into());
                            report.unknown.push(state);
                        }
                        Some(start) if m.changed_ms > start => report.changed.push(state),
                        Some(_) => report.unchanged.push(state),
                    }
                }
            }
        }
    }
    report
}

impl fmt::Display for SecretsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tasks_started_at {
            Some(at) => write!(f, "references changed since the oldest running task started ({at}):")?,
            None => write!(f, "references (no running task to compare with):")?,
        }
        if self.changed.is_empty() {
            write!(f, " none")?;
        }
        for s in &self.changed {
            write!(
                f,
                "\n  changed: {} {} ← {} (at {}{})",
                s.container,
                s.variable,
                s.value_from,
                s.last_changed.as_deref().unwrap_or("?"),
                s.version.as_deref().map(|v| format!(", version {v}")).unwrap_or_default()
            )?;
        }
        if !self.unchanged.is_empty() {
            let names: Vec<&str> = self.unchanged.iter().map(|s| s.variable.as_str()).collect();
            write!(f, "\n  unchanged: {}", names.join(", "))?;
        }
        for s in &self.unknown {
            write!(f, "\n  not judged: {} {}: {}", s.container, s.variable, s.note.as_deref().unwrap_or("?"))?;
        }
        Ok(())
    }
}

/// Markdown for the step summary.
pub fn summary(report: &SecretsReport) -> String {
    let code = |s: &str| format!("`{}`", s.replace('`', "'"));
    let mut md = String::from("\n### references changed since the tasks started\n\n");
    if let Some(at) = &report.tasks_started_at {
        md.push_str(&format!("Oldest running task started {at}.\n\n"));
    }
    md.push_str("| container | variable | reference | last changed | |\n| --- | --- | --- | --- | --- |\n");
    let rows = [(&report.changed, "changed"), (&report.unchanged, "unchanged"), (&report.unknown, "not judged")];
    for (states, what) in rows {
        for s in states {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {what} |\n",
                code(&s.container),
                code(&s.variable),
                code(&s.value_from),
                s.last_changed.as_deref().unwrap_or("—")
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(variable: &str, value_from: &str) -> Reference {
        Reference { container: "app".into(), variable: variable.into(), value_from: value_from.into() }
    }

    const PARAM: &str = "arn:aws:ssm:us-east-1:111122223333:parameter/prod/shop/db_password";
    const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:shop-api-AbCdEf";

    #[test]
    fn lookup_keys_and_pins() {
        assert_eq!(lookup_key(PARAM).unwrap(), "ssm:/prod/shop/db_password");
        assert_eq!(lookup_key("/prod/shop/plain").unwrap(), "ssm:/prod/shop/plain");
        assert_eq!(lookup_key(&format!("{SECRET}:password::")).unwrap(), format!("secretsmanager:{SECRET}"));
        assert_eq!(pinned(&format!("{SECRET}:password::")), None);
        assert_eq!(pinned(&format!("{SECRET}:password:AWSCURRENT:")), None);
        assert_eq!(pinned(&format!("{SECRET}:password:AWSPREVIOUS:")).as_deref(), Some("version stage AWSPREVIOUS"));
        assert_eq!(pinned(&format!("{SECRET}:::0123-abcd")).as_deref(), Some("version id 0123-abcd"));
        assert_eq!(pinned(PARAM), None);
    }

    #[test]
    fn a_reference_changed_after_the_oldest_task_started_is_named() {
        let refs = vec![
            r("DB_PASSWORD", PARAM),
            r("API_KEY", &format!("{SECRET}:key::")),
            r("OLD_KEY", &format!("{SECRET}:key:AWSPREVIOUS:")),
            r("MISSING", "/prod/shop/missing"),
        ];
        let metas = BTreeMap::from([
            ("ssm:/prod/shop/db_password".to_string(), Ok(Meta { changed_ms: 2_000, version: Some("2".into()) })),
            (format!("secretsmanager:{SECRET}"), Ok(Meta { changed_ms: 500, version: Some("v-1".into()) })),
            ("ssm:/prod/shop/missing".to_string(), Err("parameter /prod/shop/missing was not found".into())),
        ]);
        let report = judge(&refs, &metas, Some(1_000));
        let names = |v: &[RefState]| v.iter().map(|s| s.variable.clone()).collect::<Vec<_>>();
        assert_eq!(names(&report.changed), ["DB_PASSWORD"]);
        assert_eq!(report.changed[0].version.as_deref(), Some("2"));
        assert_eq!(report.changed[0].last_changed.as_deref(), Some("1970-01-01T00:00:02Z"));
        assert_eq!(names(&report.unchanged), ["API_KEY"]);
        assert_eq!(names(&report.unknown), ["OLD_KEY", "MISSING"]);
        assert!(report.unknown[0].note.as_deref().unwrap().starts_with("pinned to version stage AWSPREVIOUS"));
        // Exactly at the start is not after it; without running tasks nothing is judged.
        assert_eq!(names(&judge(&refs[..1], &metas, Some(2_000)).unchanged), ["DB_PASSWORD"]);
        assert_eq!(names(&judge(&refs[..1], &metas, None).unknown), ["DB_PASSWORD"]);
    }
}
