//! What changed since a service's tasks started (`deployer refresh`, `deploy
//! --force-new-deployment`). Tasks read their secrets only when they start, so after a
//! rotation the service must roll; the report names which referenced parameters and secrets
//! changed since the oldest running task started.
//!
//! Metadata only, never a value: the references and their metadata are `metadata`'s
//! (DescribeParameters' LastModifiedDate and Version, DescribeSecret's LastChangedDate and
//! AWSCURRENT version id), read by `pipeline::refresh`. This file is pure: the comparison with
//! the oldest task's start, and the report.

use std::fmt;

use serde::Serialize;

use super::metadata::{Metadata, Reference, format_epoch};
use super::refs::Target;

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

/// A reference's last change (epoch seconds, RFC 3339) and version, or why it is not known.
type Change = (f64, Option<String>, Option<String>);

fn change_of(r: &Reference, meta: &Metadata) -> Result<Change, String> {
    match &r.target {
        Err(e) => Err(e.to_string()),
        Ok(Target::Parameter { name, .. }) => match (meta.parameters.get(name), &meta.parameters_error) {
            (Some(p), _) => {
                let at = p.last_modified_epoch.ok_or("DescribeParameters gave no LastModifiedDate")?;
                Ok((at, p.last_modified.clone(), Some(p.version.to_string())))
            }
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(format!("parameter {name} was not found")),
        },
        Ok(Target::Secret { id, .. }) => match meta.secrets.get(id) {
            Some(Ok(Some(s))) => {
                let at = s.last_changed_epoch.ok_or("DescribeSecret gave no LastChangedDate")?;
                Ok((at, s.last_changed.clone(), s.current_version_id.clone()))
            }
            Some(Ok(None)) => Err(format!("secret {id} was not found")),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not looked up".into()),
        },
    }
}

/// Judge each reference: changed when its store changed it after `oldest_start_ms`.
pub fn judge(refs: &[Reference], meta: &Metadata, oldest_start_ms: Option<u64>) -> SecretsReport {
    let tasks_started_at = oldest_start_ms.and_then(|ms| format_epoch(ms as f64 / 1000.0));
    let mut report = SecretsReport { tasks_started_at, ..SecretsReport::default() };
    for r in refs {
        let mut state = RefState {
            container: r.container.clone(),
            variable: r.variable.clone(),
            value_from: r.value_from.clone(),
            last_changed: None,
            version: None,
            note: None,
        };
        let (at, when, version) = match change_of(r, meta) {
            Ok(c) => c,
            Err(e) => {
                state.note = Some(e);
                report.unknown.push(state);
                continue;
            }
        };
        (state.last_changed, state.version) = (when, version);
        match (pinned(&r.value_from), oldest_start_ms) {
            (Some(p), _) => {
                state.note = Some(format!("pinned to {p}: a rotation does not change what tasks read"));
                report.unknown.push(state);
            }
            (None, None) => {
                state.note = Some("no running task to compare with".into());
                report.unknown.push(state);
            }
            (None, Some(start)) if at * 1000.0 > start as f64 => report.changed.push(state),
            (None, Some(_)) => report.unchanged.push(state),
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
    use super::super::metadata::{ParameterMeta, SecretMeta};
    use super::super::refs::parse_value_from;
    use super::*;

    fn r(variable: &str, value_from: &str) -> Reference {
        Reference {
            container: "app".into(),
            variable: variable.into(),
            value_from: value_from.into(),
            target: parse_value_from(value_from),
        }
    }

    const PARAM: &str = "arn:aws:ssm:us-east-1:111122223333:parameter/prod/shop/db_password";
    const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:shop-api-AbCdEf";

    #[test]
    fn pins_follow_the_secret_reference_syntax() {
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
        let mut meta = Metadata::default();
        let param = ParameterMeta {
            name: "/prod/shop/db_password".into(),
            kind: "SecureString".into(),
            version: 2,
            last_modified: format_epoch(2.0),
            last_modified_epoch: Some(2.0),
            key_id: None,
        };
        meta.parameters.insert(param.name.clone(), param);
        let secret = SecretMeta {
            arn: SECRET.into(),
            name: "shop-api".into(),
            current_version_id: Some("v-1".into()),
            versions: Default::default(),
            last_changed: format_epoch(0.5),
            last_changed_epoch: Some(0.5),
            kms_key_id: None,
        };
        meta.secrets.insert(SECRET.into(), Ok(Some(secret)));
        let report = judge(&refs, &meta, Some(1_000));
        let names = |v: &[RefState]| v.iter().map(|s| s.variable.clone()).collect::<Vec<_>>();
        assert_eq!(names(&report.changed), ["DB_PASSWORD"]);
        assert_eq!(report.changed[0].version.as_deref(), Some("2"));
        assert_eq!(report.changed[0].last_changed.as_deref(), Some("1970-01-01T00:00:02Z"));
        assert_eq!(names(&report.unchanged), ["API_KEY"]);
        assert_eq!(names(&report.unknown), ["OLD_KEY", "MISSING"]);
        assert!(report.unknown[0].note.as_deref().unwrap().starts_with("pinned to version stage AWSPREVIOUS"));
        assert_eq!(report.unknown[1].note.as_deref(), Some("parameter /prod/shop/missing was not found"));
        // Exactly at the start is not after it; without running tasks nothing is judged.
        assert_eq!(names(&judge(&refs[..1], &meta, Some(2_000)).unchanged), ["DB_PASSWORD"]);
        assert_eq!(names(&judge(&refs[..1], &meta, None).unknown), ["DB_PASSWORD"]);
        meta.parameters_error = Some("cannot list parameters: AccessDenied".into());
        assert_eq!(
            judge(&refs[3..], &meta, Some(1_000)).unknown[0].note.as_deref(),
            Some("cannot list parameters: AccessDenied")
        );
    }
}
