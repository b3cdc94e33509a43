//! `params import`: a `.env` file into Parameter Store under `/env/app/`, one parameter per
//! key (`DB_PASSWORD` → `/env/app/db_password`).
//!
//! The rules that keep a migration from changing a secret: values are taken literally
//! ([`dotenv`]: no `$VAR` substitution, so neither a value nor the runner's own environment
//! can leak into or change what is stored); every parameter is a SecureString unless the user
//! names it plain; an existing SecureString is never turned into a String; keys that collide
//! once lower-cased are refused; the file is read with a size and line bound. Everything is
//! checked before the first write, so a refusal writes nothing. Values are compared, never
//! printed: reports name the key, the parameter and what happens to it.
//!
//! Planning and deciding are pure; [`read_env_file`] and [`apply`] do the I/O.

pub mod dotenv;

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::io::Read;
use std::path::Path;

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;
use futures_util::{StreamExt, TryStreamExt, stream};

/// The largest `.env` file read (1 MiB: a real one is a few KiB, even with PEM keys in it).
pub const MAX_BYTES: usize = 1 << 20;
/// The most lines read: 10,000 is also Parameter Store's standard-tier limit per region.
pub const MAX_LINES: usize = 10_000;
/// Parameter Store's standard tier holds values up to 4 KB.
pub const MAX_VALUE_BYTES: usize = 4096;
/// The longest parameter name Parameter Store accepts.
pub const MAX_NAME_CHARS: usize = 1011;

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("{file}: cannot read it: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {reason}; nothing was written")]
    TooLarge { file: String, reason: String },
    #[error("{file}:{line}: {reason}")]
    Parse { file: String, line: usize, reason: String },
    #[error("--path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error(
        "{what} {pattern:?} is not a valid pattern ({reason}); use a key such as LOG_LEVEL or a wildcard such as FEATURE_*"
    )]
    BadPattern { what: &'static str, pattern: String, reason: String },
    #[error("{file}: no KEY=VALUE entries")]
    Empty { file: String },
    #[error("{file}: nothing was written:\n{}", .problems.join("\n"))]
    Invalid { file: String, problems: Vec<String> },
    #[error(
        "refusing to turn SecureString parameters into String: {}. deployer never downgrades a SecureString; \
         to keep them encrypted, drop their keys from --plain / [params] plain; to really store them as String, \
         delete them first (aws ssm delete-parameter --name NAME). Nothing was written",
        .names.join(", ")
    )]
    Downgrade { names: Vec<String> },
    #[error("Parameter Store {op} failed for {name}: {message}{}", written_note(*.written))]
    Ssm { op: &'static str, name: String, message: String, written: usize },
}

fn written_note(written: usize) -> String {
    match written {
        0 => String::new(),
        n => format!(" ({n} parameter(s) were written before this one; run the import again to finish)"),
    }
}

/// One parameter to write. Debug never shows the value.
#[derive(Clone)]
pub struct Entry {
    pub key: String,
    pub name: String,
    pub secure: bool,
    pub line: usize,
    value: String,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("secure", &self.secure)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// What to write, and what the user should know about it (keys only, never values).
#[derive(Debug)]
pub struct Plan {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
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

/// Read a `.env` file, refusing more than [`MAX_BYTES`] or [`MAX_LINES`] before parsing.
/// Never reads more than the bound (so `/dev/zero` or a huge file is refused, not slurped);
/// a pipe (`<(sops -d .env)`) works.
pub fn read_env_file(path: &Path) -> Result<String, ParamsError> {
    let file = path.display().to_string();
    let read_err = |reason: String| ParamsError::Read { file: file.clone(), reason };
    if path.is_dir() {
        return Err(read_err("it is a directory; give the .env file".into()));
    }
    let f = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| read_err(e.to_string()))?;
    if bytes.len() > MAX_BYTES {
        return Err(ParamsError::TooLarge {
            file,
            reason: format!(
                "larger than {} MiB, the limit for a .env file (Parameter Store holds at most {MAX_LINES} standard parameters per region); split it, or check that this is the file you meant",
                MAX_BYTES >> 20
            ),
        });
    }
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() + usize::from(bytes.last().is_some_and(|&b| b != b'\n'));
    if lines > MAX_LINES {
        return Err(ParamsError::TooLarge {
            file,
            reason: format!("{lines} lines, more than the {MAX_LINES} a .env file may have; split it"),
        });
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        return Err(ParamsError::Parse { file, line, reason: "holds a NUL byte: this is not a text file".into() });
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        ParamsError::Parse { file, line, reason: "is not UTF-8 text; save the file as UTF-8".into() }
    })
}

/// Which keys are stored as String: names or wildcards (`LOG_LEVEL`, `FEATURE_*`; `*` any run of
/// characters, `?` one), matched case-insensitively against the whole key.
#[derive(Debug, Default)]
pub struct Plain {
    /// (as given, upper-cased)
    patterns: Vec<(String, String)>,
}

impl Plain {
    /// `what` names where the patterns came from, for errors (`--plain`, `[params] plain`).
    pub fn new<'a>(sources: impl IntoIterator<Item = (&'static str, &'a str)>) -> Result<Plain, ParamsError> {
        let mut patterns = Vec::new();
        for (what, pattern) in sources {
            let bad =
                |reason: &str| ParamsError::BadPattern { what, pattern: pattern.to_string(), reason: reason.into() };
            if pattern.trim().is_empty() {
                return Err(bad("it is empty"));
            }
            if !pattern.chars().all(|c| c.is_ascii_alphanumeric() || "_.-*?".contains(c)) {
                return Err(bad(
                    "a key holds only letters, digits and _.-, so it could never match; * and ? are the wildcards",
                ));
            }
            patterns.push((pattern.to_string(), pattern.to_ascii_uppercase()));
        }
        Ok(Plain { patterns })
    }

    fn matches(&self, key: &str) -> bool {
        let key = key.to_ascii_uppercase();
        self.patterns.iter().any(|(_, p)| wildcard(p.as_bytes(), key.as_bytes()))
    }
}

/// `*` matches any run of bytes, `?` one byte, anything else itself; the whole of `text`.
/// Linear backtracking over the last `*` (patterns and keys are ASCII here).
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Does a key's name suggest a secret? Only used to warn about keys named plain.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "PRIVATE", "CREDENTIAL", "KEY", "DSN", "DATABASE_URL"]
        .iter()
        .any(|w| k.contains(w))
}

/// Turn parsed pairs into entries: names, types, warnings, and every problem found at once.
/// Pure, and linear in the number of pairs.
pub fn plan(text: &str, file: &str, prefix: &str, plain: &Plain) -> Result<Plan, ParamsError> {
    let pairs = dotenv::parse(text).map_err(|e| ParamsError::Parse {
        file: file.to_string(),
        line: e.line,
        reason: e.reason,
    })?;
    if pairs.is_empty() {
        return Err(ParamsError::Empty { file: file.to_string() });
    }
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    // Parameter name → index in `entries`: one lookup per pair.
    let mut by_name: HashMap<String, usize> = HashMap::with_capacity(pairs.len());
    for pair in pairs {
        let name = parameter_name(prefix, &pair.key);
        if pair.reference {
            warnings.push(format!(
                "{} (line {}): the value holds `$`; it is imported literally, with no variable substitution",
                pair.key, pair.line
            ));
        }
        let entry =
            Entry { secure: !plain.matches(&pair.key), key: pair.key, name, line: pair.line, value: pair.value };
        match by_name.entry(entry.name.clone()) {
            MapEntry::Vacant(v) => {
                v.insert(entries.len());
                entries.push(entry);
            }
            MapEntry::Occupied(o) => {
                let earlier = &mut entries[*o.get()];
                if earlier.key == entry.key {
                    warnings.push(format!(
                        "{} is set on line {} and again on line {}; the last one is imported",
                        entry.key, earlier.line, entry.line
                    ));
                    *earlier = entry;
                } else {
                    problems.push(format!(
                        "  line {}: {} and {} (line {}) differ only in case and would both write {}; rename one",
                        entry.line, entry.key, earlier.key, earlier.line, entry.name
                    ));
                }
            }
        }
    }
    for e in &entries {
        if e.value.is_empty() {
            problems.push(format!(
                "  line {}: {} is empty, and Parameter Store cannot hold an empty value; give it a value or remove the line",
                e.line, e.key
            ));
        }
        if e.value.len() > MAX_VALUE_BYTES {
            problems.push(format!(
                "  line {}: {} is {} bytes, more than the {MAX_VALUE_BYTES} a standard parameter holds",
                e.line,
                e.key,
                e.value.len()
            ));
        }
        if e.name.chars().count() > MAX_NAME_CHARS {
            problems.push(format!(
                "  line {}: {} gives a name longer than Parameter Store's {MAX_NAME_CHARS} characters",
                e.line, e.key
            ));
        }
        if !e.secure && looks_secret(&e.key) {
            warnings.push(format!("{} is named plain, so it is stored unencrypted (String) as asked", e.key));
        }
    }
    for (pattern, upper) in &plain.patterns {
        if !entries.iter().any(|e| wildcard(upper.as_bytes(), e.key.to_ascii_uppercase().as_bytes())) {
            warnings.push(format!("plain pattern {pattern:?} matches no key in the file"));
        }
    }
    if !problems.is_empty() {
        return Err(ParamsError::Invalid { file: file.to_string(), problems });
    }
    Ok(Plan { entries, warnings })
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

/// What differs between the file and Parameter Store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Value,
    /// String → SecureString.
    Type,
    ValueAndType,
}

/// What happens to one parameter; never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

/// A parameter as Parameter Store holds it now. Debug never shows the value.
#[derive(Clone)]
pub struct Current {
    pub value: String,
    pub secure: bool,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current").field("secure", &self.secure).finish_non_exhaustive()
    }
}

/// Decide each entry's action from the current parameters by name; refuses (for all
/// offenders at once) to turn an existing SecureString into a String. Pure.
pub fn decide(
    entries: &[Entry],
    current: &HashMap<String, Current>,
    overwrite: bool,
) -> Result<Vec<Outcome>, ParamsError> {
    let downgrades: Vec<String> = entries
        .iter()
        .filter(|e| !e.secure && current.get(&e.name).is_some_and(|c| c.secure))
        .map(|e| format!("{} ({})", e.name, e.key))
        .collect();
    if !downgrades.is_empty() {
        return Err(ParamsError::Downgrade { names: downgrades });
    }
    Ok(entries
        .iter()
        .map(|e| {
            let change = current.get(&e.name).map(|c| match (c.value == e.value, c.secure == e.secure) {
                (true, true) => None,
                (false, true) => Some(Change::Value),
                (true, false) => Some(Change::Type),
                (false, false) => Some(Change::ValueAndType),
            });
            let action = match change {
                None => Action::Create,
                Some(None) => Action::Unchanged,
                Some(Some(_)) if overwrite => Action::Update,
                Some(Some(_)) => Action::KeepChanged,
            };
            Outcome {
                key: e.key.clone(),
                name: e.name.clone(),
                kind: if e.secure { "SecureString" } else { "String" },
                action,
                change: change.flatten(),
            }
        })
        .collect())
}

/// What `apply` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub overwrite: bool,
    pub dry_run: bool,
    /// KMS key for SecureString parameters; Parameter Store's default (aws/ssm) without it.
    pub kms_key_id: Option<String>,
}

/// Compare with Parameter Store and write what needs writing (nothing with `dry_run`, and
/// nothing at all when [`decide`] refuses).
pub async fn apply(config: &SdkConfig, entries: &[Entry], opts: &ApplyOptions) -> Result<Vec<Outcome>, ParamsError> {
    let ssm = aws_sdk_ssm::Client::new(config);
    // Values are read only to compare them, and never leave this function.
    let found: Vec<Vec<(String, Current)>> = stream::iter(entries.chunks(10))
        .map(|chunk| {
            let ssm = ssm.clone();
            async move {
                let out = ssm
                    .get_parameters()
                    .set_names(Some(chunk.iter().map(|e| e.name.clone()).collect()))
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| ParamsError::Ssm {
                        op: "GetParameters",
                        name: chunk[0].name.clone(),
                        message: crate::aws::auth::sdk_message(&e),
                        written: 0,
                    })?;
                Ok::<_, ParamsError>(
                    out.parameters()
                        .iter()
                        .filter_map(|p| {
                            let secure = p.r#type() == Some(&ParameterType::SecureString);
                            Some((p.name()?.to_string(), Current { value: p.value()?.to_string(), secure }))
                        })
                        .collect(),
                )
            }
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    let current: HashMap<String, Current> = found.into_iter().flatten().collect();
    let outcomes = decide(entries, &current, opts.overwrite)?;
    if opts.dry_run {
        return Ok(outcomes);
    }
    let mut written = 0;
    for (entry, outcome) in entries.iter().zip(&outcomes) {
        if !matches!(outcome.action, Action::Create | Action::Update) {
            continue;
        }
        let kind = if entry.secure { ParameterType::SecureString } else { ParameterType::String };
        ssm.put_parameter()
            .name(&entry.name)
            .value(&entry.value)
            .r#type(kind)
            .set_key_id(if entry.secure { opts.kms_key_id.clone() } else { None })
            .overwrite(outcome.action == Action::Update)
            .send()
            .await
            .map_err(|e| ParamsError::Ssm {
                op: "PutParameter",
                name: entry.name.clone(),
                message: crate::aws::auth::sdk_message(&e),
                written,
            })?;
        written += 1;
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(patterns: &[&str]) -> Plain {
        Plain::new(patterns.iter().map(|p| ("--plain", *p))).unwrap()
    }

    fn plan_of(text: &str, patterns: &[&str]) -> Result<Plan, ParamsError> {
        plan(text, ".env", "/prod/shop/", &plain(patterns))
    }

    #[test]
    fn every_key_is_a_secure_string_unless_named_plain() {
        let p = plan_of(
            "# comment\nexport DB_PASSWORD='p@ss word'\nAPI_URL=https://x.example\nDATABASE_URL=postgres://u:p@h/d\nLOG_LEVEL=info # trailing\nFEATURE_A=on\nfeature_b=off\n",
            &["log_level", "FEATURE_*"],
        )
        .unwrap();
        let got: Vec<(&str, &str, bool, usize)> =
            p.entries.iter().map(|e| (e.key.as_str(), e.name.as_str(), e.secure, e.line)).collect();
        assert_eq!(
            got,
            [
                ("DB_PASSWORD", "/prod/shop/db_password", true, 2),
                ("API_URL", "/prod/shop/api_url", true, 3),
                ("DATABASE_URL", "/prod/shop/database_url", true, 4),
                ("LOG_LEVEL", "/prod/shop/log_level", false, 5),
                ("FEATURE_A", "/prod/shop/feature_a", false, 6),
                ("feature_b", "/prod/shop/feature_b", false, 7),
            ]
        );
        assert_eq!(p.entries[0].value, "p@ss word");
        assert_eq!(p.entries[3].value, "info");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(!format!("{p:?}").contains("p@ss"));
    }

    #[test]
    fn references_and_duplicates_warn_by_key_never_by_value() {
        let p = plan_of("X=${AWS_SECRET_ACCESS_KEY}\nY=pa$sword\nZ='$literal'\nY=pa$sword2\n", &["NOPE_*"]).unwrap();
        let values: Vec<&str> = p.entries.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(values, ["${AWS_SECRET_ACCESS_KEY}", "pa$sword2", "$literal"]);
        assert_eq!(
            p.warnings,
            [
                "X (line 1): the value holds `$`; it is imported literally, with no variable substitution",
                "Y (line 2): the value holds `$`; it is imported literally, with no variable substitution",
                "Y (line 4): the value holds `$`; it is imported literally, with no variable substitution",
                "Y is set on line 2 and again on line 4; the last one is imported",
                "plain pattern \"NOPE_*\" matches no key in the file",
            ]
        );
        let plain_secret = plan_of("DB_PASSWORD=x\n", &["DB_*"]).unwrap();
        assert_eq!(
            plain_secret.warnings,
            ["DB_PASSWORD is named plain, so it is stored unencrypted (String) as asked"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_and_nothing_planned() {
        let text = format!(
            "DB_PASSWORD=a\nOK=1\nDb_Password=b\nEMPTY=\nBIG={}\n{}=1\n",
            "x".repeat(MAX_VALUE_BYTES + 1),
            "K".repeat(MAX_NAME_CHARS)
        );
        let err = plan_of(&text, &[]).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines[0], ".env: nothing was written:");
        assert_eq!(
            lines[1],
            "  line 3: Db_Password and DB_PASSWORD (line 1) differ only in case and would both write /prod/shop/db_password; rename one"
        );
        assert!(lines[2].starts_with("  line 4: EMPTY is empty"), "{err}");
        assert!(lines[3].starts_with("  line 5: BIG is 4097 bytes"), "{err}");
        assert!(lines[4].starts_with("  line 6: KKK") && lines[4].ends_with("1011 characters"), "{err}");
        assert_eq!(lines.len(), 5, "{err}");
    }

    #[test]
    fn paths_patterns_and_files_are_checked() {
        assert_eq!(normalize_path("/prod/shop").unwrap(), "/prod/shop/");
        assert_eq!(normalize_path("/prod/shop/").unwrap(), "/prod/shop/");
        for bad in ["", " ", "prod/shop", "/prod//shop", "/prod shop/"] {
            assert!(normalize_path(bad).is_err(), "{bad:?}");
        }
        let err = plan_of("GOOD=1\nthis is not a pair\n", &[]).unwrap_err().to_string();
        assert_eq!(err, ".env:2: this is followed by \"i\" where `=` belongs; keys hold letters, digits and _.-");
        assert!(plan_of("# nothing\n", &[]).unwrap_err().to_string().contains("no KEY=VALUE"));
        let bad = Plain::new([("--plain", "LOG_[")]).unwrap_err().to_string();
        assert!(bad.starts_with("--plain \"LOG_[\" is not a valid pattern (a key holds only"), "{bad}");
        assert!(Plain::new([("[params] plain", " ")]).is_err());
    }

    #[test]
    fn plain_patterns_are_case_insensitive_wildcards_over_the_whole_key() {
        // (pattern, key, matches)
        let table = [
            ("LOG_LEVEL", "LOG_LEVEL", true),
            ("log_level", "Log_Level", true),
            ("LOG_LEVEL", "LOG_LEVELS", false),
            ("FEATURE_*", "FEATURE_", true),
            ("FEATURE_*", "FEATURE_A_B", true),
            ("FEATURE_*", "MY_FEATURE_A", false),
            ("*_URL", "API_URL", true),
            ("*_URL", "API_URL_2", false),
            ("A?C", "ABC", true),
            ("A?C", "AC", false),
            ("*A*B*", "XXAYYBZZ", true),
            ("*A*B*", "XXBYYAZZ", false),
            ("*", "ANYTHING", true),
            ("**", "", true),
        ];
        for (pattern, key, want) in table {
            assert_eq!(plain(&[pattern]).matches(key), want, "{pattern} ~ {key}");
        }
    }

    #[test]
    fn files_are_read_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        assert_eq!(read_env_file(&write("ok.env", b"A=1\n")).unwrap(), "A=1\n");
        let big = read_env_file(&write("big.env", &vec![b'x'; MAX_BYTES + 1])).unwrap_err().to_string();
        assert!(big.contains("larger than 1 MiB") && big.ends_with("nothing was written"), "{big}");
        let many = read_env_file(&write("many.env", "A=1\n".repeat(MAX_LINES + 1).as_bytes())).unwrap_err();
        assert!(many.to_string().contains("10001 lines, more than the 10000"), "{many}");
        let nul = read_env_file(&write("nul.env", b"A=1\nB=\0\n")).unwrap_err().to_string();
        assert!(nul.ends_with("nul.env:2: holds a NUL byte: this is not a text file"), "{nul}");
        let latin1 = read_env_file(&write("latin1.env", b"A=1\n\nB=caf\xe9\n")).unwrap_err().to_string();
        assert!(latin1.ends_with("latin1.env:3: is not UTF-8 text; save the file as UTF-8"), "{latin1}");
        assert!(read_env_file(dir.path()).unwrap_err().to_string().contains("is a directory"));
        let missing = read_env_file(Path::new("/nonexistent/.env")).unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/.env: cannot read it"), "{missing}");
        if Path::new("/dev/zero").exists() {
            let zero = read_env_file(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(zero.starts_with("/dev/zero: larger than 1 MiB"), "{zero}");
        }
    }

    #[test]
    fn a_200k_line_file_is_planned_in_one_pass() {
        let text: String = (0..200_000).map(|i| format!("KEY_{i}=value-{i}\n")).collect();
        let p = plan(&text, "big.env", "/p/", &Plain::default()).unwrap();
        assert_eq!(p.entries.len(), 200_000);
        assert_eq!(p.entries[199_999].line, 200_000);
    }

    #[test]
    fn decisions_follow_the_current_state_and_never_downgrade() {
        let p = plan_of("A_PASSWORD=new\nB=same\nC=changed\nD=fresh\nE=same\n", &["B", "C"]).unwrap();
        let cur = |value: &str, secure| Current { value: value.into(), secure };
        let current: HashMap<String, Current> = [
            ("/prod/shop/a_password".to_string(), cur("old", true)),
            ("/prod/shop/b".to_string(), cur("same", false)),
            ("/prod/shop/c".to_string(), cur("before", false)),
            ("/prod/shop/e".to_string(), cur("same", false)),
        ]
        .into();
        let actions = |overwrite| {
            decide(&p.entries, &current, overwrite)
                .unwrap()
                .into_iter()
                .map(|o| (o.action, o.change))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            actions(false),
            [
                (Action::KeepChanged, Some(Change::Value)),
                (Action::Unchanged, None),
                (Action::KeepChanged, Some(Change::Value)),
                (Action::Create, None),
                (Action::KeepChanged, Some(Change::Type)),
            ]
        );
        assert_eq!(
            actions(true),
            [
                (Action::Update, Some(Change::Value)),
                (Action::Unchanged, None),
                (Action::Update, Some(Change::Value)),
                (Action::Create, None),
                (Action::Update, Some(Change::Type)),
            ]
        );
        // Naming an existing SecureString plain is refused, with or without --overwrite.
        let downgrade = plan_of("A_PASSWORD=old\nB=same\n", &["A_*"]).unwrap();
        for overwrite in [false, true] {
            let err = decide(&downgrade.entries, &current, overwrite).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "refusing to turn SecureString parameters into String: /prod/shop/a_password (A_PASSWORD)."
                ),
                "{err}"
            );
            assert!(err.contains("delete them first") && err.ends_with("Nothing was written"), "{err}");
        }
    }
}
