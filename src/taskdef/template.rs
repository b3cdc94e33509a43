//! Task-definition templates in the AWS CLI's JSON format: `register-task-definition
//! --cli-input-json` input and `describe-task-definition` output (with or without the
//! `{"taskDefinition": …}` wrapper and its top-level `tags`). Read-only fields are stripped,
//! tags kept, every other field passed through untouched.

use serde_json::{Map, Value};

/// Fields ECS sets and RegisterTaskDefinition refuses: the members DescribeTaskDefinition
/// returns that RegisterTaskDefinition does not take, from the vendored ECS model.
pub const READ_ONLY: &[&str] = super::schema::model::READ_ONLY;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("{origin}:{line}:{column}: not valid JSON: {message}")]
    Json { origin: String, line: usize, column: usize, message: String },
    #[error("{origin}: {field}: {reason}")]
    Shape { origin: String, field: String, reason: String },
}

/// A task definition in RegisterTaskDefinition's input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    pub body: Map<String, Value>,
}

impl TaskDefinition {
    /// Parse a template; `origin` names it in errors (a file name, `ECS family:rev`).
    pub fn parse(text: &str, origin: &str) -> Result<Self, TemplateError> {
        let value: Value = serde_json::from_str(text).map_err(|e| TemplateError::Json {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        Self::from_value(value, origin)
    }

    pub fn from_value(value: Value, origin: &str) -> Result<Self, TemplateError> {
        let shape = |field: &str, reason: &str| TemplateError::Shape {
            origin: origin.to_string(),
            field: field.to_string(),
            reason: reason.to_string(),
        };
        let Value::Object(mut outer) = value else {
            return Err(shape("(top level)", "expected a JSON object"));
        };
        let mut body = match outer.remove("taskDefinition") {
            Some(Value::Object(inner)) => {
                let mut inner = inner;
                if let Some(tags) = outer.remove("tags") {
                    inner.entry("tags").or_insert(tags);
                }
                inner
            }
            Some(_) => return Err(shape("taskDefinition", "expected an object")),
            None => outer,
        };
        for field in READ_ONLY {
            body.remove(*field);
        }
        if matches!(body.get("tags"), Some(Value::Array(a)) if a.is_empty()) {
            body.remove("tags");
        }
        match body.get("family") {
            Some(Value::String(f)) if !f.is_empty() => {}
            Some(_) => return Err(shape("family", "expected a non-empty string")),
            None => return Err(shape("family", "missing (every task definition needs a family)")),
        }
        let Some(Value::Array(containers)) = body.get("containerDefinitions") else {
            return Err(shape("containerDefinitions", "missing or not an array"));
        };
        if containers.is_empty() {
            return Err(shape("containerDefinitions", "empty: a task definition needs at least one container"));
        }
        for (i, c) in containers.iter().enumerate() {
            match c.get("name") {
                Some(Value::String(n)) if !n.is_empty() => {}
                _ => return Err(shape(&format!("containerDefinitions[{i}].name"), "missing or not a string")),
            }
        }
        Ok(TaskDefinition { body })
    }

    pub fn family(&self) -> &str {
        self.body.get("family").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn containers(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.body
            .get("containerDefinitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    }

    pub fn container_names(&self) -> Vec<String> {
        self.containers().filter_map(|c| c.get("name")?.as_str().map(str::to_string)).collect()
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_output_is_unwrapped_stripped_and_keeps_tags() {
        let text = json!({
            "taskDefinition": {
                "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/web:7",
                "family": "web", "revision": 7, "status": "ACTIVE",
                "containerDefinitions": [{"name": "app", "image": "nginx"}],
                "requiresAttributes": [{"name": "x"}], "compatibilities": ["EC2"],
                "registeredAt": 1.7e9, "registeredBy": "arn:aws:iam::1:root",
                "cpu": "256"
            },
            "tags": [{"key": "team", "value": "shop"}]
        })
        .to_string();
        let td = TaskDefinition::parse(&text, "td.json").unwrap();
        assert_eq!(
            td.to_json(),
            json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "nginx"}], "cpu": "256",
                   "tags": [{"key": "team", "value": "shop"}]})
        );
    }

    #[test]
    fn bad_templates_name_the_place() {
        let table = [
            ("{\n  \"family\": \"web\",\n  oops\n}", "td.json:3:3: not valid JSON"),
            ("[]", "td.json: (top level): expected a JSON object"),
            ("{}", "td.json: family: missing"),
            (r#"{"family": 3}"#, "td.json: family: expected a non-empty string"),
            (r#"{"family": "w"}"#, "td.json: containerDefinitions: missing"),
            (r#"{"family": "w", "containerDefinitions": []}"#, "containerDefinitions: empty"),
            (r#"{"family": "w", "containerDefinitions": [{"image": "x"}]}"#, "containerDefinitions[0].name: missing"),
            (r#"{"taskDefinition": 1}"#, "taskDefinition: expected an object"),
        ];
        for (text, want) in table {
            let err = TaskDefinition::parse(text, "td.json").unwrap_err().to_string();
            assert!(err.starts_with(want) || err.contains(want), "{text}: {err}");
        }
    }
}
