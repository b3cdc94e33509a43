//! Rendering: put images, environment variables and secret references into a template.
//! A pure function over plain data; every reference arrives here already expanded to the
//! `valueFrom` ECS wants (see `refs`), so rendering never needs the network.

use serde_json::{Map, Value, json};

use super::template::TaskDefinition;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{flag} {input:?}: {reason}")]
    BadArg { flag: &'static str, input: String, reason: String },
    #[error("no container named {name:?} in the task definition; it has: {existing}")]
    UnknownContainer { name: String, existing: String },
    #[error("{what} needs a container: the task definition has several ({existing}); pass --container NAME{hint}")]
    AmbiguousContainer { what: &'static str, existing: String, hint: &'static str },
    #[error(
        "container {container}: {name} is both an environment variable and a secret; keep one (remove it from --env/the template, or from --secret/--secrets-path)"
    )]
    Clash { container: String, name: String },
}

/// What to put into the template. Secrets map NAME → valueFrom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderRequest {
    pub container: Option<String>,
    /// (container or none, image URI)
    pub images: Vec<(Option<String>, String)>,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
    pub exclusive_env: bool,
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `K=V` of `--env` / `--secret`.
pub fn parse_pair(flag: &'static str, input: &str) -> Result<(String, String), RenderError> {
    let bad = |reason: &str| RenderError::BadArg { flag, input: input.to_string(), reason: reason.to_string() };
    let (name, value) = input.split_once('=').ok_or_else(|| bad("expected NAME=VALUE"))?;
    if !valid_env_name(name) {
        return Err(bad("the name must be letters, digits and _, not starting with a digit"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--image CONTAINER=URI` or `--image URI`.
pub fn parse_image(input: &str) -> Result<(Option<String>, String), RenderError> {
    let bad =
        |reason: &str| RenderError::BadArg { flag: "--image", input: input.to_string(), reason: reason.to_string() };
    let (container, uri) = match input.split_once('=') {
        Some((c, u)) => (Some(c.to_string()), u),
        None => (None, input),
    };
    if uri.is_empty() || uri.contains(char::is_whitespace) {
        return Err(bad("expected an image URI such as 123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop@sha256:…"));
    }
    if container.as_deref() == Some("") {
        return Err(bad("empty container name before '='"));
    }
    Ok((container, uri.to_string()))
}

pub fn render(template: &TaskDefinition, req: &RenderRequest) -> Result<TaskDefinition, RenderError> {
    let names = template.container_names();
    let existing = names.join(", ");
    let find = |name: &str| -> Result<usize, RenderError> {
        names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| RenderError::UnknownContainer { name: name.to_string(), existing: existing.clone() })
    };
    let default_container = |what: &'static str, hint: &'static str| -> Result<usize, RenderError> {
        match (&req.container, names.len()) {
            (Some(name), _) => find(name),
            (None, 1) => Ok(0),
            (None, _) => Err(RenderError::AmbiguousContainer { what, existing: existing.clone(), hint }),
        }
    };

    let mut body = template.body.clone();
    let containers = body.get_mut("containerDefinitions").and_then(Value::as_array_mut).expect("checked by template");

    for (container, uri) in &req.images {
        let index = match container {
            Some(name) => find(name)?,
            None => default_container("--image URI", " or --image CONTAINER=URI")?,
        };
        if let Some(c) = containers[index].as_object_mut() {
            c.insert("image".into(), Value::String(uri.clone()));
        }
    }

    if !req.env.is_empty() || !req.secrets.is_empty() || req.exclusive_env {
        let index = default_container("--env/--secret", "")?;
        let c = containers[index].as_object_mut().expect("checked by template");
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        upsert(c, "environment", "value", &req.env, req.exclusive_env);
        upsert(c, "secrets", "valueFrom", &req.secrets, false);
        let env_names = names_in(c, "environment");
        if let Some(clash) = names_in(c, "secrets").into_iter().find(|s| env_names.contains(s)) {
            return Err(RenderError::Clash { container: name, name: clash });
        }
    }
    Ok(TaskDefinition { body })
}

fn names_in(container: &Map<String, Value>, list: &str) -> Vec<String> {
    container
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// Replace or append `{name, <value_key>}` entries by name; `exclusive` drops the others.
fn upsert(
    container: &mut Map<String, Value>,
    list: &str,
    value_key: &str,
    pairs: &[(String, String)],
    exclusive: bool,
) {
    if pairs.is_empty() && !exclusive {
        return;
    }
    let mut entries: Vec<Value> = container.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
    if exclusive {
        entries.retain(|e| e.get("name").and_then(Value::as_str).is_some_and(|n| pairs.iter().any(|(k, _)| k == n)));
    }
    for (name, value) in pairs {
        match entries.iter_mut().find(|e| e.get("name").and_then(Value::as_str) == Some(name)) {
            Some(entry) => entry[value_key] = Value::String(value.clone()),
            None => entries.push(json!({"name": name, value_key: value})),
        }
    }
    container.insert(list.to_string(), Value::Array(entries));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(v: Value) -> TaskDefinition {
        TaskDefinition::from_value(v, "t").unwrap()
    }

    fn two_containers() -> TaskDefinition {
        template(json!({"family": "shop", "containerDefinitions": [
            {"name": "web", "image": "old", "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "log", "image": "fluent-bit"}
        ]}))
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn images_env_and_secrets_land_in_the_right_container() {
        let req = RenderRequest {
            container: Some("web".into()),
            images: vec![(Some("web".into()), "repo@sha256:abc".into()), (Some("log".into()), "fb:2".into())],
            env: pairs(&[("B", "two"), ("C", "3")]),
            secrets: pairs(&[("DB_PASSWORD", "arn:aws:ssm:r:111111111111:parameter/p/db_password")]),
            exclusive_env: false,
        };
        let out = render(&two_containers(), &req).unwrap().to_json();
        assert_eq!(out["containerDefinitions"][0]["image"], "repo@sha256:abc");
        assert_eq!(out["containerDefinitions"][1]["image"], "fb:2");
        assert_eq!(
            out["containerDefinitions"][0]["environment"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            out["containerDefinitions"][0]["secrets"],
            json!([{"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:r:111111111111:parameter/p/db_password"}])
        );
        assert!(out["containerDefinitions"][1].get("environment").is_none());
    }

    #[test]
    fn exclusive_env_keeps_only_what_was_given() {
        let req = RenderRequest {
            container: Some("web".into()),
            env: pairs(&[("B", "two")]),
            exclusive_env: true,
            ..Default::default()
        };
        let out = render(&two_containers(), &req).unwrap().to_json();
        assert_eq!(out["containerDefinitions"][0]["environment"], json!([{"name": "B", "value": "two"}]));
    }

    #[test]
    fn errors_name_the_container_choice() {
        let table: Vec<(RenderRequest, &str)> = vec![
            (
                RenderRequest { images: vec![(None, "x".into())], ..Default::default() },
                "--image URI needs a container: the task definition has several (web, log); pass --container NAME or --image CONTAINER=URI",
            ),
            (
                RenderRequest { images: vec![(Some("api".into()), "x".into())], ..Default::default() },
                "no container named \"api\" in the task definition; it has: web, log",
            ),
            (RenderRequest { env: pairs(&[("X", "1")]), ..Default::default() }, "--env/--secret needs a container"),
            (
                RenderRequest {
                    container: Some("web".into()),
                    secrets: pairs(&[("A", "arn:aws:ssm:r:111111111111:parameter/a")]),
                    ..Default::default()
                },
                "container web: A is both an environment variable and a secret",
            ),
        ];
        for (req, want) in table {
            let err = render(&two_containers(), &req).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn a_single_container_needs_no_name() {
        let td = template(json!({"family": "f", "containerDefinitions": [{"name": "only", "image": "a"}]}));
        let req = RenderRequest { images: vec![(None, "b".into())], env: pairs(&[("K", "v")]), ..Default::default() };
        let out = render(&td, &req).unwrap().to_json();
        assert_eq!(out["containerDefinitions"][0]["image"], "b");
        assert_eq!(out["containerDefinitions"][0]["environment"], json!([{"name": "K", "value": "v"}]));
    }

    #[test]
    fn pairs_and_images_are_checked() {
        assert_eq!(parse_pair("--env", "A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_pair("--env", "A="), Ok(("A".into(), "".into())));
        for bad in ["A", "=x", "1A=x", "A-B=x"] {
            assert!(parse_pair("--env", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_image("web=r@sha256:1"), Ok((Some("web".into()), "r@sha256:1".into())));
        assert_eq!(parse_image("r:1"), Ok((None, "r:1".into())));
        for bad in ["", "web=", "=r", "a b"] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in ".*") {
            let _ = parse_pair("--env", &s);
            let _ = parse_image(&s);
            let _ = super::super::refs::parse_ref(&s);
            let _ = super::super::refs::parse_value_from(&s);
            let _ = TaskDefinition::parse(&s, "fuzz");
        }
    }
}
