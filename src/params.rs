//! `params import`: a `.env` file into Parameter Store under `/env/app/`, one parameter per
//! key (`DB_PASSWORD` → `/env/app/db_password`), SecureString for keys that look secret.
//! Idempotent: unchanged values are left alone, changed ones are replaced only with
//! `--overwrite`. Values are compared, never printed: reports name the parameter and what
//! happens to it. The planning part is pure; `apply` does the I/O.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;
use regex::Regex;

pub const DEFAULT_SECURE: &str = "(?i)(PASSWORD|SECRET|KEY|TOKEN|PRIVATE|CREDENTIAL)";

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("{file}: cannot read it: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: not a KEY=VALUE line (check quotes and `export` syntax)")]
    Parse { file: String, line: usize },
    #[error("--path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("--secure {0:?} is not a valid regular expression")]
    BadRegex(String),
    #[error("{file}: key {key:?} maps to {name}, which Parameter Store refuses: names hold letters, digits and _.-")]
    BadKey { file: String, key: String, name: String },
    #[error("{file}: no KEY=VALUE entries")]
    Empty { file: String },
    #[error("Parameter Store {op} failed for {name}: {message}")]
    Ssm { op: &'static str, name: String, message: String },
}

/// One parameter to write. Debug never shows the value.
#[derive(Clone)]
pub struct Entry {
    pub key: String,
    pub name: String,
    pub secure: bool,
    value: String,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("key", &self.key).field("name", &self.name).field("secure", &self.secure).finish()
    }
}

/// `/env/app` or `/env/app/` → `/env/app/`.
pub fn normalize_path(path: &str) -> Result<String, ParamsError> {
    let bad = |reason| ParamsError::BadPath { path: path.to_string(), reason };
    if path.trim().is_empty() {
        return Err(bad("empty; give a hierarchy such as /production/shop/"));
    }
    if !path.starts_with('/') {
        return Err(bad("must start with '/', e.g. /production/shop/"));
    }
    if path.contains("//") || !path.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)) {
        return Err(bad("holds empty segments or characters other than letters, digits and _.-/"));
    }
    Ok(format!("{}/", path.trim_end_matches('/')))
}

pub fn parameter_name(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.to_lowercase())
}

/// Read and plan a `.env` file (dotenv syntax: quotes, comments, `export`, multi-line values).
pub fn plan(file: &Path, prefix: &str, secure: &str) -> Result<Vec<Entry>, ParamsError> {
    let shown = file.display().to_string();
    let secure = Regex::new(secure).map_err(|_| ParamsError::BadRegex(secure.to_string()))?;
    let iter =
        dotenvy::from_path_iter(file).map_err(|e| ParamsError::Read { file: shown.clone(), reason: e.to_string() })?;
    let mut entries: Vec<Entry> = Vec::new();
    for item in iter {
        let (key, value) = item.map_err(|e| match e {
            dotenvy::Error::LineParse(_, _) => {
                ParamsError::Parse { file: shown.clone(), line: line_of_error(file, &e) }
            }
            other => ParamsError::Read { file: shown.clone(), reason: other.to_string() },
        })?;
        let name = parameter_name(prefix, &key);
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)) {
            return Err(ParamsError::BadKey { file: shown.clone(), key, name });
        }
        let entry = Entry { secure: secure.is_match(&key), key, name, value };
        // A later duplicate wins, as in a shell.
        match entries.iter_mut().find(|e| e.key == entry.key) {
            Some(existing) => *existing = entry,
            None => entries.push(entry),
        }
    }
    if entries.is_empty() {
        return Err(ParamsError::Empty { file: shown });
    }
    Ok(entries)
}

/// dotenvy reports the offending line's text, not its number; find it.
fn line_of_error(file: &Path, err: &dotenvy::Error) -> usize {
    let dotenvy::Error::LineParse(line_text, _) = err else { return 0 };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let first = line_text.lines().next().unwrap_or_default();
    text.lines().position(|l| l == first).map(|i| i + 1).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Unchanged,
    Update,
    /// Changed, but `--overwrite` was not given.
    KeepChanged,
}

/// What happens to one parameter; never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub action: Action,
}

/// Decide each entry's action from the current (value, secure) by name. Pure.
pub fn decide(entries: &[Entry], current: &HashMap<String, (String, bool)>, overwrite: bool) -> Vec<(Outcome, bool)> {
    entries
        .iter()
        .map(|e| {
            let action = match current.get(&e.name) {
                None => Action::Create,
                Some((value, secure)) if *value == e.value && *secure == e.secure => Action::Unchanged,
                Some(_) if overwrite => Action::Update,
                Some(_) => Action::KeepChanged,
            };
            let write = matches!(action, Action::Create | Action::Update);
            (Outcome { name: e.name.clone(), kind: if e.secure { "SecureString" } else { "String" }, action }, write)
        })
        .collect()
}

/// Compare with Parameter Store and write what needs writing (nothing with `dry_run`).
pub async fn apply(
    config: &SdkConfig,
    entries: &[Entry],
    overwrite: bool,
    dry_run: bool,
) -> Result<Vec<Outcome>, ParamsError> {
    let ssm = aws_sdk_ssm::Client::new(config);
    let mut current = HashMap::new();
    for chunk in entries.chunks(10) {
        // Values are read only to compare them, and never leave this function.
        let out = ssm
            .get_parameters()
            .set_names(Some(chunk.iter().map(|e| e.name.clone()).collect()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| ParamsError::Ssm {
                op: "GetParameters",
                name: chunk[0].name.clone(),
                message: aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
            })?;
        for p in out.parameters() {
            if let (Some(name), Some(value)) = (p.name(), p.value()) {
                current.insert(name.to_string(), (value.to_string(), p.r#type() == Some(&ParameterType::SecureString)));
            }
        }
    }
    let decisions = decide(entries, &current, overwrite);
    for (entry, (outcome, write)) in entries.iter().zip(&decisions) {
        if !write || dry_run {
            continue;
        }
        ssm.put_parameter()
            .name(&entry.name)
            .value(&entry.value)
            .r#type(if entry.secure { ParameterType::SecureString } else { ParameterType::String })
            .overwrite(outcome.action == Action::Update)
            .send()
            .await
            .map_err(|e| ParamsError::Ssm {
                op: "PutParameter",
                name: entry.name.clone(),
                message: aws_sdk_ssm::error::ProvideErrorMetadata::message(&e).unwrap_or("failed").to_string(),
            })?;
    }
    Ok(decisions.into_iter().map(|(o, _)| o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_env(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn dotenv_syntax_maps_to_parameters() {
        let f = write_env(
            "# comment\nexport DB_PASSWORD='p@ss word'\nAPI_URL=https://x.example\nPRIVATE_PEM=\"line1\nline2\"\nLOG_LEVEL=info # trailing\nLOG_LEVEL=debug\n",
        );
        let entries = plan(f.path(), "/prod/shop/", DEFAULT_SECURE).unwrap();
        let got: Vec<(&str, &str, bool)> =
            entries.iter().map(|e| (e.key.as_str(), e.name.as_str(), e.secure)).collect();
        assert_eq!(
            got,
            [
                ("DB_PASSWORD", "/prod/shop/db_password", true),
                ("API_URL", "/prod/shop/api_url", false),
                ("PRIVATE_PEM", "/prod/shop/private_pem", true),
                ("LOG_LEVEL", "/prod/shop/log_level", false),
            ]
        );
        assert_eq!(entries[0].value, "p@ss word");
        assert_eq!(entries[2].value, "line1\nline2");
        assert_eq!(entries[3].value, "debug");
        assert!(!format!("{entries:?}").contains("p@ss"));
    }

    #[test]
    fn paths_and_files_are_checked() {
        assert_eq!(normalize_path("/prod/shop").unwrap(), "/prod/shop/");
        assert_eq!(normalize_path("/prod/shop/").unwrap(), "/prod/shop/");
        for bad in ["", " ", "prod/shop", "/prod//shop", "/prod shop/"] {
            assert!(normalize_path(bad).is_err(), "{bad:?}");
        }
        let f = write_env("GOOD=1\nthis is not a pair\n");
        let err = plan(f.path(), "/p/", DEFAULT_SECURE).unwrap_err().to_string();
        assert!(err.ends_with(":2: not a KEY=VALUE line (check quotes and `export` syntax)"), "{err}");
        let empty = write_env("# nothing\n");
        assert!(plan(empty.path(), "/p/", DEFAULT_SECURE).unwrap_err().to_string().contains("no KEY=VALUE"));
        assert!(matches!(plan(f.path(), "/p/", "(").unwrap_err(), ParamsError::BadRegex(_)));
        let missing = plan(Path::new("/nonexistent/.env"), "/p/", DEFAULT_SECURE).unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/.env: cannot read it"), "{missing}");
    }

    #[test]
    fn decisions_follow_the_current_state() {
        let f = write_env("A_PASSWORD=new\nB=same\nC=changed\nD=fresh\n");
        let entries = plan(f.path(), "/p/", DEFAULT_SECURE).unwrap();
        let current: HashMap<String, (String, bool)> = [
            ("/p/a_password".to_string(), ("old".to_string(), true)),
            ("/p/b".to_string(), ("same".to_string(), false)),
            ("/p/c".to_string(), ("before".to_string(), false)),
        ]
        .into();
        let actions = |overwrite| {
            decide(&entries, &current, overwrite).into_iter().map(|(o, w)| (o.action, w)).collect::<Vec<_>>()
        };
        assert_eq!(
            actions(false),
            [
                (Action::KeepChanged, false),
                (Action::Unchanged, false),
                (Action::KeepChanged, false),
                (Action::Create, true)
            ]
        );
        assert_eq!(
            actions(true),
            [(Action::Update, true), (Action::Unchanged, false), (Action::Update, true), (Action::Create, true)]
        );
    }
}
