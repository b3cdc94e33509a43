//! A loopback stand-in for the one IAM call moto lacks, `iam:SimulatePrincipalPolicy`. It is
//! not a table of canned answers: it reads the role's inline policies from moto (ListRolePolicies,
//! GetRolePolicy, in the role's account) and evaluates them the way IAM does for identity
//! policies — an explicit Deny wins, then any Allow, else an implicit deny — with `*`/`?`
//! wildcards in `Action` and `Resource` (strings or lists), and `StringEquals`/`StringLike`
//! conditions on the request's `ContextEntries` (a key the request lacks makes the statement
//! not apply and is reported in `MissingContextValues`, as IAM does). Not modelled: managed
//! policies, `NotAction`/`NotResource`, other condition operators, permission boundaries,
//! resource policies.
//! Every other IAM action answers 400, so a test sees any call it did not expect.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::stack;

pub struct IamDouble {
    /// `AWS_ENDPOINT_URL_IAM` for deployer.
    pub url: String,
    calls: Arc<AtomicUsize>,
}

/// Create role `name` in `account` (moto) with one inline policy of `statements`.
pub async fn create_role(account: &str, name: &str, statements: Value) {
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam_query(
        account,
        &[("Action", "CreateRole"), ("RoleName", name), ("AssumeRolePolicyDocument", &trust.to_string())],
    )
    .await
    .expect("CreateRole");
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": statements});
    iam_query(
        account,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", name),
            ("PolicyName", "task-start"),
            ("PolicyDocument", &policy.to_string()),
        ],
    )
    .await
    .expect("PutRolePolicy");
}

impl IamDouble {
    pub fn start() -> IamDouble {
        let calls = Arc::new(AtomicUsize::new(0));
        let router = Router::new().route("/", post(handle)).with_state(calls.clone());
        IamDouble { url: super::serve(router), calls }
    }

    /// SimulatePrincipalPolicy calls answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn error(code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error></ErrorResponse>",
        xml_escape(message)
    );
    (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], body).into_response()
}

async fn handle(State(calls): State<Arc<AtomicUsize>>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let list = |prefix: &str| -> Vec<String> {
        let mut items: Vec<(usize, String)> =
            form.iter().filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.parse().ok()?, v.clone()))).collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    };
    if get("Action").as_deref() != Some("SimulatePrincipalPolicy") {
        return error("InvalidAction", "the test double answers SimulatePrincipalPolicy only");
    }
    calls.fetch_add(1, Ordering::SeqCst);
    let Some(role_arn) = get("PolicySourceArn") else { return error("ValidationError", "no PolicySourceArn") };
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    let (Some(account), Some(role)) = (parts.get(4), parts.get(5).and_then(|r| r.rsplit('/').next())) else {
        return error("InvalidInput", "PolicySourceArn is not a role ARN");
    };
    let statements = match inline_statements(account, role).await {
        Ok(s) => s,
        Err(e) => return error("NoSuchEntity", &e),
    };
    let actions = list("ActionNames.member.");
    let mut context = std::collections::BTreeMap::new();
    for i in 1..=20 {
        let entry = format!("ContextEntries.member.{i}");
        let Some(key) = get(&format!("{entry}.ContextKeyName")) else { break };
        context.insert(key.to_lowercase(), list(&format!("{entry}.ContextKeyValues.member.")));
    }
    let mut resources = list("ResourceArns.member.");
    if resources.is_empty() {
        resources.push("*".into());
    }
    let mut members = String::new();
    for action in &actions {
        for resource in &resources {
            let (decision, missing) = decide(&statements, action, resource, &context);
            let missing: String = missing.iter().map(|k| format!("<member>{}</member>", xml_escape(k))).collect();
            members.push_str(&format!(
                "<member><EvalActionName>{}</EvalActionName><EvalResourceName>{}</EvalResourceName><EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues>{missing}</MissingContextValues></member>",
                xml_escape(action),
                xml_escape(resource)
            ));
        }
    }
    let body = format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>{members}</EvaluationResults></SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>test</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>"
    );
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

/// `allowed`, `explicitDeny` or `implicitDeny` for one action on one resource in a context
/// (lower-cased key → values), and the context keys conditions needed but did not get.
pub fn decide(
    statements: &[Value],
    action: &str,
    resource: &str,
    context: &std::collections::BTreeMap<String, Vec<String>>,
) -> (&'static str, Vec<String>) {
    let mut missing = Vec::new();
    let mut applies = |s: &Value| {
        let any = |field: &str, value: &str, case_insensitive: bool| match &s[field] {
            Value::String(p) => glob(p, value, case_insensitive),
            Value::Array(ps) => ps.iter().filter_map(Value::as_str).any(|p| glob(p, value, case_insensitive)),
            _ => false,
        };
        if !(any("Action", action, true) && any("Resource", resource, false)) {
            return false;
        }
        let Some(conditions) = s["Condition"].as_object() else { return true };
        conditions.iter().all(|(operator, keys)| {
            let like = match operator.as_str() {
                "StringEquals" => false,
                "StringLike" => true,
                _ => return false,
            };
            keys.as_object().into_iter().flatten().all(|(key, wanted)| {
                let Some(have) = context.get(&key.to_lowercase()) else {
                    if !missing.contains(key) {
                        missing.push(key.clone());
                    }
                    return false;
                };
                let wanted: Vec<&str> = match wanted {
                    Value::String(w) => vec![w.as_str()],
                    Value::Array(ws) => ws.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                have.iter().any(|h| wanted.iter().any(|w| if like { glob(w, h, false) } else { w == h }))
            })
        })
    };
    let denied = statements.iter().filter(|s| s["Effect"] == "Deny").any(&mut applies);
    let allowed = statements.iter().filter(|s| s["Effect"] == "Allow").any(&mut applies);
    let decision = if denied {
        "explicitDeny"
    } else if allowed {
        "allowed"
    } else {
        "implicitDeny"
    };
    (decision, if decision == "implicitDeny" { missing } else { Vec::new() })
}

/// IAM's wildcards: `*` any run of characters, `?` one character.
fn glob(pattern: &str, value: &str, case_insensitive: bool) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = if case_insensitive {
        (pattern.to_lowercase().chars().collect(), value.to_lowercase().chars().collect())
    } else {
        (pattern.chars().collect(), value.chars().collect())
    };
    // Iterative wildcard match with backtracking to the last '*'.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// One moto IAM (Query) call as `account`.
pub async fn iam_query(account: &str, params: &[(&str, &str)]) -> Result<String, String> {
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Version", "2010-05-08");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        form.finish()
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/", stack().moto_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-moto-account-id", account)
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if status.is_success() { Ok(text) } else { Err(format!("moto IAM {status}: {text}")) }
}

fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Every statement of the role's inline policies, from moto.
async fn inline_statements(account: &str, role: &str) -> Result<Vec<Value>, String> {
    let listed = iam_query(account, &[("Action", "ListRolePolicies"), ("RoleName", role)]).await?;
    let mut statements = Vec::new();
    for name in tag_values(&listed, "member") {
        let got = iam_query(account, &[("Action", "GetRolePolicy"), ("RoleName", role), ("PolicyName", &name)]).await?;
        let doc = tag_values(&got, "PolicyDocument").into_iter().next().unwrap_or_default();
        let doc = xml_unescape(&doc);
        // IAM returns the document URL-encoded; moto may not.
        let decoded: String = form_urlencoded::parse(format!("d={}", doc.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let value: Value = serde_json::from_str(&doc)
            .or_else(|_| serde_json::from_str(&decoded))
            .map_err(|e| format!("policy {name} of {role} is not JSON: {e}"))?;
        match &value["Statement"] {
            Value::Array(a) => statements.extend(a.iter().cloned()),
            s @ Value::Object(_) => statements.push(s.clone()),
            _ => {}
        }
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_evaluator_follows_deny_then_allow_then_implicit_deny() {
        let statements = vec![
            json!({"Effect": "Allow", "Action": ["ssm:GetParameter*"], "Resource": "arn:aws:ssm:*:*:parameter/prod/*"}),
            json!({"Effect": "Deny", "Action": "ssm:*", "Resource": "arn:aws:ssm:*:*:parameter/prod/secret"}),
        ];
        let none = Default::default();
        let decision = |action: &str, resource: &str| decide(&statements, action, resource, &none).0;
        assert_eq!(decision("SSM:GetParameters", "arn:aws:ssm:us-east-1:1:parameter/prod/db"), "allowed");
        assert_eq!(decision("ssm:GetParameters", "arn:aws:ssm:us-east-1:1:parameter/prod/secret"), "explicitDeny");
        assert_eq!(decision("kms:Decrypt", "arn:aws:kms:us-east-1:1:key/k"), "implicitDeny");
        let via = vec![json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                              "Condition": {"StringEquals": {"kms:ViaService": "ssm.us-east-1.amazonaws.com"}}})];
        assert_eq!(decide(&via, "kms:Decrypt", "k", &none), ("implicitDeny", vec!["kms:ViaService".to_string()]));
        let mut ctx = std::collections::BTreeMap::new();
        ctx.insert("kms:viaservice".to_string(), vec!["ssm.us-east-1.amazonaws.com".to_string()]);
        assert_eq!(decide(&via, "kms:Decrypt", "k", &ctx), ("allowed", vec![]));
        assert!(glob("a*c?e", "abbbcde", false) && !glob("a*c?e", "abbbce", false));
    }
}
