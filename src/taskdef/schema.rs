//! The rendered task definition checked against ECS's own model of RegisterTaskDefinition's
//! input, before anything is sent. deployer sends the template's JSON as written, so unlike
//! the SDKs and the AWS CLI nothing else would refuse a misspelt member (`healthcheck`), a
//! quoted number (`"sizeInGiB": "30"`) or a wrong-case enum (`"arm64"`): ECS may drop such a
//! field silently or fail far from its cause. Pure: a walk of the JSON over the tables that
//! build.rs generates from the vendored model (`model/register-task-definition.json`).

use serde_json::{Map, Value};

/// The generated tables' vocabulary.
pub mod model {
    #[derive(Debug)]
    pub struct Shape {
        pub name: &'static str,
        pub kind: Kind,
    }

    #[derive(Debug)]
    pub struct Member {
        pub name: &'static str,
        pub shape: usize,
        pub deprecated: bool,
    }

    #[derive(Debug)]
    pub enum Kind {
        Structure { members: &'static [Member], required: &'static [&'static str], union: bool },
        List { member: usize, min: Option<i64>, max: Option<i64> },
        Map { key: usize, value: usize },
        String { enums: &'static [&'static str], min: Option<i64>, max: Option<i64> },
        Integer { bits: u8, min: Option<i64>, max: Option<i64> },
        Boolean,
        Number,
        Timestamp,
    }

    include!(concat!(env!("OUT_DIR"), "/ecs_model.rs"));
}

use model::{Kind, SHAPES};

/// What kind of problem: unknown members and enum values may be newer than the vendored
/// model (`--allow-unknown-fields` lets them through); the others never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    UnknownMember,
    UnknownEnumValue,
    WrongType,
    OutOfRange,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaProblem {
    /// JSON path from the task definition's top level, e.g. `containerDefinitions[0].healthcheck`.
    pub path: String,
    /// The container the path is in, when it is in one.
    pub container: Option<String>,
    pub kind: ProblemKind,
    pub message: String,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(c) = &self.container {
            write!(f, " (container {c})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl SchemaProblem {
    /// A problem `--allow-unknown-fields` turns into a warning.
    pub fn is_unknown(&self) -> bool {
        matches!(self.kind, ProblemKind::UnknownMember | ProblemKind::UnknownEnumValue)
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{origin} does not match ECS's RegisterTaskDefinition model ({} problem{}):\n{}\n  fix the template; the AWS CLI and SDKs would refuse it too{}",
    .problems.len(),
    if .problems.len() == 1 { "" } else { "s" },
    .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"),
    if .problems.iter().all(SchemaProblem::is_unknown) { ". If ECS accepts fields newer than deployer's model, pass --allow-unknown-fields" } else { "" }
)]
pub struct SchemaError {
    pub origin: String,
    pub problems: Vec<SchemaProblem>,
}

/// Where the vendored model came from (for messages and `--version`-like reports).
pub fn model_source() -> &'static str {
    model::SOURCE
}

/// Members DescribeTaskDefinition returns that RegisterTaskDefinition does not take.
pub fn read_only_members() -> &'static [&'static str] {
    model::READ_ONLY
}

/// Every problem of `td` (a RegisterTaskDefinition input), in document order.
pub fn problems(td: &Map<String, Value>) -> Vec<SchemaProblem> {
    let mut walker = Walker { problems: Vec::new(), container: None };
    walker.structure(model::ROOT, td, "");
    walker.problems
}

/// Check `td`: with `allow_unknown`, unknown members and enum values come back as warnings
/// instead of refusing; every other problem still refuses.
pub fn check(td: &Map<String, Value>, origin: &str, allow_unknown: bool) -> Result<Vec<SchemaProblem>, SchemaError> {
    let (warnings, errors): (Vec<_>, Vec<_>) = problems(td).into_iter().partition(|p| allow_unknown && p.is_unknown());
    if errors.is_empty() { Ok(warnings) } else { Err(SchemaError { origin: origin.to_string(), problems: errors }) }
}

/// [`check`], logging each let-through problem as a warning.
pub fn enforce(td: &Map<String, Value>, origin: &str, allow_unknown: bool) -> Result<(), SchemaError> {
    for w in check(td, origin, allow_unknown)? {
        tracing::warn!("{origin}: {w} (let through by --allow-unknown-fields)");
    }
    Ok(())
}

struct Walker {
    problems: Vec<SchemaProblem>,
    container: Option<String>,
}

fn join(path: &str, member: &str) -> String {
    let plain = !member.is_empty() && member.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (path.is_empty(), plain) {
        (true, true) => member.to_string(),
        (false, true) => format!("{path}.{member}"),
        (_, false) => format!("{path}[{}]", Value::String(member.to_string())),
    }
}

/// What a JSON value is, for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(truncate(s))),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

impl Walker {
    fn push(&mut self, path: &str, kind: ProblemKind, message: String) {
        let path = if path.is_empty() { "(top level)".to_string() } else { path.to_string() };
        self.problems.push(SchemaProblem { path, container: self.container.clone(), kind, message });
    }

    fn value(&mut self, shape: usize, v: &Value, path: &str) {
        // ECS's JSON protocol reads null as "not given".
        if v.is_null() {
            return;
        }
        match &SHAPES[shape].kind {
            Kind::Structure { .. } => match v {
                Value::Object(o) => self.structure(shape, o, path),
                other => self.wrong(path, "an object", other),
            },
            Kind::List { member, min, max } => {
                let Value::Array(items) = v else { return self.wrong(path, "a list", v) };
                self.length(path, items.len(), *min, *max, "item");
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{path}[{i}]");
                    let saved = self.container.clone();
                    if path == "containerDefinitions" {
                        self.container = item.get("name").and_then(Value::as_str).map(str::to_string);
                    }
                    self.value(*member, item, &here);
                    self.container = saved;
                }
            }
            Kind::Map { key, value } => {
                let Value::Object(o) = v else { return self.wrong(path, "an object of names to values", v) };
                for (k, item) in o {
                    let here = join(path, k);
                    self.value(*key, &Value::String(k.clone()), &here);
                    self.value(*value, item, &here);
                }
            }
            Kind::String { enums, min, max } => {
                let Value::String(s) = v else {
                    let hint = match v {
                        Value::Number(n) => format!(" (write \"{n}\" in quotes)"),
                        Value::Bool(b) => format!(" (write \"{b}\" in quotes)"),
                        _ => String::new(),
                    };
                    return self.push(
                        path,
                        ProblemKind::WrongType,
                        format!("expected a string, found {}{hint}", describe(v)),
                    );
                };
                if !enums.is_empty() && !enums.contains(&s.as_str()) {
                    let suggestion = suggest(s, enums.iter().copied())
                        .map(|m| format!("; did you mean \"{m}\"?"))
                        .unwrap_or_default();
                    self.push(
                        path,
                        ProblemKind::UnknownEnumValue,
                        format!("{} is not one of {}{suggestion}", Value::String(truncate(s)), enums.join(", ")),
                    );
                }
                self.length(path, s.chars().count(), *min, *max, "character");
            }
            Kind::Integer { bits, min, max } => {
                let n = match v {
                    Value::Number(n) => n.as_i64(),
                    _ => None,
                };
                let Some(n) = n.filter(|n| *bits == 64 || i32::try_from(*n).is_ok()) else {
                    let hint = match v {
                        Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                            format!(" (write {} without quotes)", s.trim())
                        }
                        Value::Number(_) => " (a whole number in range)".into(),
                        _ => String::new(),
                    };
                    return self.push(
                        path,
                        ProblemKind::WrongType,
                        format!("expected an integer, found {}{hint}", describe(v)),
                    );
                };
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    self.push(path, ProblemKind::OutOfRange, format!("{n} is outside {}", range(*min, *max)));
                }
            }
            Kind::Boolean => {
                if !v.is_boolean() {
                    let hint = match v.as_str() {
                        Some("true" | "false") => " (write true or false without quotes)",
                        _ => "",
                    };
                    self.push(
                        path,
                        ProblemKind::WrongType,
                        format!("expected true or false, found {}{hint}", describe(v)),
                    );
                }
            }
            Kind::Number => {
                if !v.is_number() {
                    self.wrong(path, "a number", v);
                }
            }
            Kind::Timestamp => {
                if !v.is_number() && !v.is_string() {
                    self.wrong(path, "a timestamp", v);
                }
            }
        }
    }

    fn wrong(&mut self, path: &str, expected: &str, v: &Value) {
        self.push(path, ProblemKind::WrongType, format!("expected {expected}, found {}", describe(v)));
    }

    fn length(&mut self, path: &str, len: usize, min: Option<i64>, max: Option<i64>, unit: &str) {
        let len = len as i64;
        if min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m) {
            self.push(path, ProblemKind::OutOfRange, format!("{len} {unit}s, outside {}", range(min, max)));
        }
    }

    fn structure(&mut self, shape: usize, o: &Map<String, Value>, path: &str) {
        let Kind::Structure { members, required, union } = &SHAPES[shape].kind else { return };
        for (key, v) in o {
            let here = join(path, key);
            match members.iter().find(|m| m.name == key) {
                Some(m) => self.value(m.shape, v, &here),
                None => {
                    let suggestion = suggest(key, members.iter().map(|m| m.name))
                        .map(|m| format!("; did you mean \"{m}\"?"))
                        .unwrap_or_else(|| format!("; {} takes: {}", SHAPES[shape].name, names(members)));
                    self.push(
                        &here,
                        ProblemKind::UnknownMember,
                        format!("unknown field {}{suggestion}", Value::String(truncate(key))),
                    );
                }
            }
        }
        for r in *required {
            if o.get(*r).is_none_or(Value::is_null) {
                self.push(
                    &join(path, r),
                    ProblemKind::Missing,
                    format!("missing (required by {})", SHAPES[shape].name),
                );
            }
        }
        if *union {
            let set = members.iter().filter(|m| o.get(m.name).is_some_and(|v| !v.is_null())).count();
            if set != 1 {
                self.push(
                    path,
                    ProblemKind::WrongType,
                    format!("exactly one of {} must be given ({set} are)", names(members)),
                );
            }
        }
    }
}

fn names(members: &[model::Member]) -> String {
    members.iter().filter(|m| !m.deprecated).map(|m| m.name).collect::<Vec<_>>().join(", ")
}

fn range(min: Option<i64>, max: Option<i64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(b)) => format!("at most {b}"),
        (None, None) => "any".into(),
    }
}

/// The closest candidate: a case-insensitive match first, then the smallest edit distance
/// within a third of the word's length (at least 1, at most 3).
pub fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    if let Some(c) = candidates.clone().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(c);
    }
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (strsim::levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Patch = fn(&mut Value);

    fn base() -> Value {
        json!({
            "family": "web",
            "containerDefinitions": [{"name": "app", "image": "nginx", "essential": true,
                "healthCheck": {"command": ["CMD", "true"], "interval": 30},
                "environment": [{"name": "A", "value": "1"}],
                "dockerLabels": {"com.example.team": "shop"}}],
            "ephemeralStorage": {"sizeInGiB": 30},
            "runtimePlatform": {"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
            "tags": [{"key": "team", "value": "shop"}]
        })
    }

    fn with(patch: impl FnOnce(&mut Value)) -> Vec<SchemaProblem> {
        let mut v = base();
        patch(&mut v);
        problems(v.as_object().unwrap())
    }

    #[test]
    fn a_valid_definition_has_no_problems() {
        assert_eq!(problems(base().as_object().unwrap()), vec![]);
    }

    #[test]
    fn the_three_typos_are_each_refused_with_path_and_suggestion() {
        let table: [(&str, Patch, &str, ProblemKind, &str); 3] = [
            (
                "lower-case healthcheck",
                |v| {
                    let c = v["containerDefinitions"][0].as_object_mut().unwrap();
                    let hc = c.remove("healthCheck").unwrap();
                    c.insert("healthcheck".into(), hc);
                },
                "containerDefinitions[0].healthcheck",
                ProblemKind::UnknownMember,
                "unknown field \"healthcheck\"; did you mean \"healthCheck\"?",
            ),
            (
                "quoted sizeInGiB",
                |v| v["ephemeralStorage"]["sizeInGiB"] = json!("30"),
                "ephemeralStorage.sizeInGiB",
                ProblemKind::WrongType,
                "expected an integer, found the string \"30\" (write 30 without quotes)",
            ),
            (
                "lower-case arm64",
                |v| v["runtimePlatform"]["cpuArchitecture"] = json!("arm64"),
                "runtimePlatform.cpuArchitecture",
                ProblemKind::UnknownEnumValue,
                "\"arm64\" is not one of X86_64, ARM64; did you mean \"ARM64\"?",
            ),
        ];
        for (what, patch, path, kind, message) in table {
            let got = with(patch);
            assert_eq!(got.len(), 1, "{what}: {got:?}");
            assert_eq!((got[0].path.as_str(), got[0].kind, got[0].message.as_str()), (path, kind, message), "{what}");
        }
        let got = with(|v| {
            v["containerDefinitions"][0]["healthCheck"]["intervl"] = json!(5);
        });
        assert_eq!(got[0].container.as_deref(), Some("app"));
        assert_eq!(
            got[0].to_string(),
            "containerDefinitions[0].healthCheck.intervl (container app): unknown field \"intervl\"; did you mean \"interval\"?"
        );
    }

    #[test]
    fn types_ranges_required_members_and_maps_are_checked() {
        let table: [(Patch, &str, &str); 9] = [
            (|v| v["cpu"] = json!(256), "cpu", "expected a string, found the number 256 (write \"256\" in quotes)"),
            (
                |v| v["containerDefinitions"][0]["essential"] = json!("true"),
                "containerDefinitions[0].essential",
                "expected true or false, found the string \"true\" (write true or false without quotes)",
            ),
            (
                |v| v["containerDefinitions"][0]["memory"] = json!(1.5),
                "containerDefinitions[0].memory",
                "expected an integer",
            ),
            (
                |v| v["containerDefinitions"][0]["memory"] = json!(5_000_000_000u64),
                "containerDefinitions[0].memory",
                "expected an integer",
            ),
            (|v| v["tags"][0]["key"] = json!(""), "tags[0].key", "0 characters, outside 1 to 128"),
            (|v| v["tags"] = json!(vec![json!({"key": "k"}); 51]), "tags", "51 items, outside 0 to 50"),
            (
                |v| v["containerDefinitions"][0]["healthCheck"] = json!({"interval": 5}),
                "containerDefinitions[0].healthCheck.command",
                "missing (required by HealthCheck)",
            ),
            (
                |v| v["containerDefinitions"][0]["dockerLabels"]["x"] = json!(1),
                "containerDefinitions[0].dockerLabels.x",
                "expected a string",
            ),
            (|v| v["volumes"] = json!({"name": "x"}), "volumes", "expected a list, found an object"),
        ];
        for (patch, path, message) in table {
            let got = with(patch);
            assert!(
                got.iter().any(|p| p.path == path && p.message.starts_with(message)),
                "{path}: wanted {message:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn unknown_names_without_a_near_match_list_what_the_shape_takes() {
        let got = with(|v| v["runtimePlatform"]["zzzzzzzz"] = json!(1));
        assert_eq!(
            got[0].message,
            "unknown field \"zzzzzzzz\"; RuntimePlatform takes: cpuArchitecture, operatingSystemFamily"
        );
        assert_eq!(join("a", "com.example"), "a[\"com.example\"]");
    }

    #[test]
    fn allow_unknown_fields_lets_unknown_members_and_enum_values_through_but_not_wrong_types() {
        let mut v = base();
        v["newFeature"] = json!(true);
        v["runtimePlatform"]["cpuArchitecture"] = json!("RISCV64");
        let td = v.as_object().unwrap().clone();
        let err = check(&td, "td.json", false).unwrap_err();
        assert_eq!(err.problems.len(), 2);
        assert!(err.to_string().contains("pass --allow-unknown-fields"), "{err}");
        assert_eq!(check(&td, "td.json", true).unwrap().len(), 2);
        v["ephemeralStorage"]["sizeInGiB"] = json!("30");
        let err = check(v.as_object().unwrap(), "td.json", true).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(!err.to_string().contains("--allow-unknown-fields"), "{err}");
    }

    #[test]
    fn suggestions_prefer_case_then_distance() {
        let c = ["healthCheck", "hostname", "essential", "memoryReservation"];
        assert_eq!(suggest("healthcheck", c.iter().copied()), Some("healthCheck"));
        assert_eq!(suggest("esential", c.iter().copied()), Some("essential"));
        assert_eq!(suggest("memoryReservaton", c.iter().copied()), Some("memoryReservation"));
        assert_eq!(suggest("cpu", c.iter().copied()), None);
    }

    #[test]
    fn every_fixture_template_passes_unchanged() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taskdefs");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let td = crate::taskdef::template::TaskDefinition::parse(
                &std::fs::read_to_string(&path).unwrap(),
                &path.display().to_string(),
            )
            .unwrap();
            assert_eq!(problems(&td.body), vec![], "{}", path.display());
            n += 1;
        }
        assert!(n >= 6);
    }

    #[test]
    fn the_vendored_model_knows_the_read_only_fields() {
        for f in ["taskDefinitionArn", "revision", "status", "registeredAt", "deleteRequestedAt"] {
            assert!(read_only_members().contains(&f), "{f}");
        }
        assert!(model_source().contains("botocore"));
    }
}
