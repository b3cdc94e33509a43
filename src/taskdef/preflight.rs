//! The permission preflight's decisions, pure: what the task's execution role must be allowed
//! to do for the ECS agent to start the task (read each secret, decrypt it with its KMS key,
//! pull each ECR image, write to its awslogs group), and whether the image's platform matches
//! the task's `runtimePlatform`. `permissions` does the I/O (IAM simulation, DescribeKey,
//! DescribeLogGroups, the registry) and feeds the answers back here to become problems that
//! name the container, the variable and the missing action.

use std::collections::BTreeMap;

use serde_json::Value;

use super::metadata::{Metadata, Reference};
use super::refs::{Target, partition_of, ssm_arn};
use super::template::TaskDefinition;
use super::verify::Problem;
use crate::image_ref::ImageRef;

/// Something the execution role must be allowed to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub container: String,
    pub variable: Option<String>,
    pub actions: Vec<&'static str>,
    /// The resource ARN; `None` is `*`.
    pub resource: Option<String>,
    /// The resource as a person names it, e.g. `parameter /prod/db_password`.
    pub what: String,
    /// `kms:Decrypt` happens through a service (`ssm.REGION.amazonaws.com`): the
    /// `kms:ViaService` context key execution-role policies commonly condition on.
    pub via: Option<String>,
}

/// A KMS key as DescribeKey described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub arn: String,
    /// AWS-managed keys (`aws/ssm`, `aws/secretsmanager`) need no grant in the role's policy.
    pub customer_managed: bool,
}

/// An awslogs log group a container writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroup {
    pub container: String,
    pub group: String,
    pub region: String,
    /// `awslogs-create-group: "true"`: the agent creates it (and needs logs:CreateLogGroup).
    pub create: bool,
}

/// The default (AWS-managed) key of a service, which needs no kms:Decrypt grant.
pub fn is_default_key(key_id: Option<&str>) -> bool {
    match key_id {
        None => true,
        Some(k) => k.starts_with("alias/aws/") || k.contains(":alias/aws/"),
    }
}

/// The KMS key ids among the references' metadata that need a DescribeKey (not the defaults).
pub fn key_ids(refs: &[Reference], meta: &Metadata) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for r in refs {
        if let Some(k) = key_of(r, meta).filter(|k| !is_default_key(Some(k))) {
            ids.insert(k.to_string());
        }
    }
    ids.into_iter().collect()
}

fn key_of<'m>(r: &Reference, meta: &'m Metadata) -> Option<&'m str> {
    match &r.target {
        Ok(Target::Parameter { name, .. }) => {
            meta.parameters.get(name).filter(|p| p.kind == "SecureString").and_then(|p| p.key_id.as_deref())
        }
        Ok(Target::Secret { id, .. }) => match meta.secrets.get(id) {
            Some(Ok(Some(s))) => s.kms_key_id.as_deref(),
            _ => None,
        },
        Err(_) => None,
    }
}

/// A key id as an ARN when DescribeKey could not say (a key id or alias in this account).
pub fn key_arn_guess(key_id: &str, account: &str, region: &str) -> String {
    if key_id.starts_with("arn:") {
        key_id.to_string()
    } else if key_id.starts_with("alias/") {
        format!("arn:{}:kms:{region}:{account}:{key_id}", partition_of(region))
    } else {
        format!("arn:{}:kms:{region}:{account}:key/{key_id}", partition_of(region))
    }
}

/// The role ARN of `executionRoleArn` (a bare name becomes a role of this account).
pub fn execution_role(td: &TaskDefinition, account: &str, region: &str) -> Option<String> {
    let role = td.body.get("executionRoleArn").and_then(Value::as_str).filter(|r| !r.is_empty())?;
    Some(if role.starts_with("arn:") {
        role.to_string()
    } else {
        format!("arn:{}:iam::{account}:role/{role}", partition_of(region))
    })
}

/// The awslogs groups of every container.
pub fn log_groups(td: &TaskDefinition, region: &str) -> Vec<LogGroup> {
    let mut out = Vec::new();
    for c in td.containers() {
        let Some(log) = c.get("logConfiguration") else { continue };
        if log.get("logDriver").and_then(Value::as_str) != Some("awslogs") {
            continue;
        }
        let option = |k: &str| log.get("options").and_then(|o| o.get(k)).and_then(Value::as_str);
        let Some(group) = option("awslogs-group") else { continue };
        out.push(LogGroup {
            container: c.get("name").and_then(Value::as_str).unwrap_or("?").to_string(),
            group: group.to_string(),
            region: option("awslogs-region").unwrap_or(region).to_string(),
            create: option("awslogs-create-group") == Some("true"),
        });
    }
    out
}

/// Every container's image, in order: (container, image).
pub fn images(td: &TaskDefinition) -> Vec<(String, String)> {
    td.containers()
        .filter_map(|c| {
            Some((c.get("name")?.as_str()?.to_string(), c.get("image").and_then(Value::as_str)?.to_string()))
        })
        .collect()
}

/// What the execution role must be allowed to do.
pub fn execution_needs(
    td: &TaskDefinition,
    refs: &[Reference],
    meta: &Metadata,
    keys: &BTreeMap<String, KeyInfo>,
    account: &str,
    region: &str,
) -> Vec<Need> {
    let mut needs = Vec::new();
    for r in refs {
        let base = |actions: Vec<&'static str>, resource: String, what: String| Need {
            container: r.container.clone(),
            variable: Some(r.variable.clone()),
            actions,
            resource: Some(resource),
            what,
            via: None,
        };
        let (subject, region_of, account_of, service) = match &r.target {
            Ok(Target::Parameter { name, region: pr, account: pa }) => {
                let pr = pr.as_deref().unwrap_or(region);
                let pa = pa.as_deref().unwrap_or(account);
                needs.push(base(vec!["ssm:GetParameters"], ssm_arn(pr, pa, name), format!("parameter {name}")));
                (format!("parameter {name}"), pr.to_string(), pa.to_string(), "ssm")
            }
            Ok(Target::Secret { id, region: sr, account: sa, .. }) => {
                let arn = match meta.secrets.get(id) {
                    Some(Ok(Some(s))) => s.arn.clone(),
                    _ => id.clone(),
                };
                let name = arn.rsplit(":secret:").next().unwrap_or(&arn).to_string();
                needs.push(base(vec!["secretsmanager:GetSecretValue"], arn, format!("secret {name}")));
                (format!("secret {name}"), sr.clone(), sa.clone(), "secretsmanager")
            }
            Err(_) => continue,
        };
        if let Some(key) = key_of(r, meta).filter(|k| !is_default_key(Some(k))) {
            let info = keys.get(key);
            if info.is_some_and(|k| !k.customer_managed) {
                continue;
            }
            let arn = info.map(|k| k.arn.clone()).unwrap_or_else(|| key_arn_guess(key, &account_of, &region_of));
            let mut need = base(vec!["kms:Decrypt"], arn.clone(), format!("KMS key {arn} (it encrypts {subject})"));
            need.via = Some(format!("{service}.{region_of}.{}", dns_suffix(&region_of)));
            needs.push(need);
        }
    }
    let mut authorized = false;
    for (container, image) in images(td) {
        let Ok(image_ref) = ImageRef::parse(&image) else { continue };
        let (Some(host), Some(registry_account)) = (&image_ref.host, image_ref.ecr_account()) else { continue };
        let image_region = host.split('.').nth(3).unwrap_or(region);
        if !authorized {
            needs.push(Need {
                container: container.clone(),
                variable: None,
                actions: vec!["ecr:GetAuthorizationToken"],
                resource: None,
                what: "ECR (to log in to the registry)".into(),
                via: None,
            });
            authorized = true;
        }
        needs.push(Need {
            container,
            variable: None,
            actions: vec!["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            resource: Some(format!(
                "arn:{}:ecr:{image_region}:{registry_account}:repository/{}",
                partition_of(image_region),
                image_ref.repository
            )),
            what: format!("repository {}", image_ref.repository),
            via: None,
        });
    }
    for g in log_groups(td, region) {
        let mut actions = vec!["logs:CreateLogStream", "logs:PutLogEvents"];
        if g.create {
            actions.insert(0, "logs:CreateLogGroup");
        }
        needs.push(Need {
            container: g.container,
            variable: None,
            actions,
            resource: Some(format!(
                "arn:{}:logs:{}:{account}:log-group:{}:*",
                partition_of(&g.region),
                g.region,
                g.group
            )),
            what: format!("log group {}", g.group),
            via: None,
        });
    }
    needs
}

fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" }
}

/// One SimulatePrincipalPolicy call: a resource (`None`: `*`), the `kms:ViaService` context,
/// and the union of the actions needed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulation {
    pub resource: Option<String>,
    pub via: Option<String>,
    pub actions: Vec<&'static str>,
}

/// The simulations to run: each distinct resource (and context) with the union of its actions.
pub fn simulations(needs: &[Need]) -> Vec<Simulation> {
    let mut by_key: BTreeMap<(Option<String>, Option<String>), Vec<&'static str>> = BTreeMap::new();
    for n in needs {
        let actions = by_key.entry((n.resource.clone(), n.via.clone())).or_default();
        for a in &n.actions {
            if !actions.contains(a) {
                actions.push(a);
            }
        }
    }
    by_key.into_iter().map(|((resource, via), actions)| Simulation { resource, via, actions }).collect()
}

/// IAM's answer for one action on one resource in one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `allowed`, `explicitDeny` or `implicitDeny`.
    pub decision: String,
    /// Context keys the role's conditions use that the simulation did not have.
    pub missing_context: Vec<String>,
}

/// (action, resource or `*`, `kms:ViaService`) → IAM's verdict.
pub type Verdicts = BTreeMap<(String, String, Option<String>), Verdict>;

/// One problem per need and action the simulation did not allow, and a warning (not a
/// problem) where the only thing missing was a condition's context deployer cannot know.
pub fn denied(needs: &[Need], verdicts: &Verdicts, role: &str) -> (Vec<Problem>, Vec<String>) {
    let role_name = role.rsplit('/').next().unwrap_or(role);
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for n in needs {
        let resource = n.resource.clone().unwrap_or_else(|| "*".into());
        for action in &n.actions {
            let verdict = verdicts.get(&(action.to_string(), resource.clone(), n.via.clone()));
            let decision = verdict.map(|v| v.decision.as_str());
            if decision == Some("allowed") {
                continue;
            }
            if let Some(v) = verdict.filter(|v| v.decision == "implicitDeny" && !v.missing_context.is_empty()) {
                warnings.push(format!(
                    "container {}: cannot tell whether the execution role {role_name} may {action} on {}: its policy's conditions use {}, which a preflight cannot know",
                    n.container,
                    n.what,
                    v.missing_context.join(", ")
                ));
                continue;
            }
            let why = match decision {
                Some("explicitDeny") => "a policy explicitly denies it",
                Some(_) => "no policy allows it",
                None => "IAM did not evaluate it",
            };
            let failure = match action.split(':').next() {
                Some("ecr") => "CannotPullContainerError",
                Some("logs") => "ResourceInitializationError: failed to validate logger args",
                _ => "ResourceInitializationError: unable to pull secrets",
            };
            problems.push(Problem {
                container: n.container.clone(),
                variable: n.variable.clone(),
                message: format!(
                    "the execution role {role_name} may not {action} on {} ({why}); the task would stop with {failure} — allow {action} on {resource} in the role's policy",
                    n.what
                ),
            });
        }
    }
    (problems, warnings)
}

/// An image platform, in OCI's words (`linux`, `amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// The platform the task runs on: `runtimePlatform`, else Fargate's default (LINUX/X86_64)
/// when the task requires Fargate; `None` when the instance decides (EC2 without one).
pub fn task_platform(td: &TaskDefinition) -> Option<Platform> {
    let rp = td.body.get("runtimePlatform");
    let arch = rp.and_then(|r| r.get("cpuArchitecture")).and_then(Value::as_str);
    let os = rp.and_then(|r| r.get("operatingSystemFamily")).and_then(Value::as_str);
    let fargate = td
        .body
        .get("requiresCompatibilities")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|v| v == "FARGATE"));
    if arch.is_none() && os.is_none() && !fargate {
        return None;
    }
    Some(Platform {
        os: match os {
            Some(o) if o.starts_with("WINDOWS") => "windows".into(),
            _ => "linux".into(),
        },
        architecture: match arch {
            Some("ARM64") => "arm64".into(),
            _ => "amd64".into(),
        },
    })
}

/// The task's platform against the image's (one per manifest of an index, attestation
/// entries `unknown/unknown` ignored). `None` when one matches.
pub fn platform_problem(task: &Platform, image: &str, available: &[Platform]) -> Option<String> {
    let real: Vec<&Platform> = available.iter().filter(|p| p.os != "unknown" && p.architecture != "unknown").collect();
    if real.is_empty() || real.contains(&task) {
        return None;
    }
    let have = real.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    let cpu = match task.architecture.as_str() {
        "arm64" => "ARM64",
        _ => "X86_64",
    };
    Some(format!(
        "image {image} is built for {have} only, but the task runs on {task} (runtimePlatform {cpu}); the task would fail with CannotPullContainerError (no matching manifest) or exec format error — build the image for {task} (docker buildx build --platform {task}) or change runtimePlatform.cpuArchitecture"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskdef::metadata::{ParameterMeta, SecretMeta, references};
    use serde_json::json;

    const ACCOUNT: &str = "111111111111";

    fn td(v: Value) -> TaskDefinition {
        TaskDefinition::from_value(v, "t").unwrap()
    }

    fn sample() -> TaskDefinition {
        td(json!({
            "family": "web",
            "executionRoleArn": "arn:aws:iam::111111111111:role/exec",
            "requiresCompatibilities": ["FARGATE"],
            "containerDefinitions": [{
                "name": "web",
                "image": "111111111111.dkr.ecr.us-east-1.amazonaws.com/shop/web:1.4.2",
                "secrets": [
                    {"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:111111111111:parameter/prod/db"},
                    {"name": "PLAIN", "valueFrom": "arn:aws:ssm:us-east-1:111111111111:parameter/prod/plain"},
                    {"name": "API", "valueFrom": "arn:aws:secretsmanager:us-east-1:111111111111:secret:api-AbCdEf:key::"}
                ],
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web", "awslogs-stream-prefix": "web"}}
            }, {
                "name": "side", "image": "public.ecr.aws/x/y:1",
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/side", "awslogs-region": "eu-west-1", "awslogs-create-group": "true"}}
            }]
        }))
    }

    fn meta() -> Metadata {
        let mut m = Metadata::default();
        let p = |name: &str, kind: &str, key: Option<&str>| ParameterMeta {
            name: name.into(),
            kind: kind.into(),
            version: 1,
            last_modified: None,
            last_modified_epoch: None,
            key_id: key.map(str::to_string),
        };
        m.parameters.insert("/prod/db".into(), p("/prod/db", "SecureString", Some("alias/shop")));
        m.parameters.insert("/prod/plain".into(), p("/prod/plain", "SecureString", Some("alias/aws/ssm")));
        m.secrets.insert(
            "arn:aws:secretsmanager:us-east-1:111111111111:secret:api-AbCdEf".into(),
            Ok(Some(SecretMeta {
                arn: "arn:aws:secretsmanager:us-east-1:111111111111:secret:api-AbCdEf".into(),
                name: "api".into(),
                current_version_id: Some("v1".into()),
                versions: Default::default(),
                last_changed: None,
                last_changed_epoch: None,
                kms_key_id: Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
            })),
        );
        m
    }

    #[test]
    fn needs_cover_secrets_their_customer_keys_ecr_images_and_log_groups() {
        let t = sample();
        let refs = references(&t);
        let m = meta();
        assert_eq!(key_ids(&refs, &m), ["1234abcd-12ab-34cd-56ef-1234567890ab", "alias/shop"]);
        let mut keys = BTreeMap::new();
        keys.insert(
            "alias/shop".to_string(),
            KeyInfo { arn: "arn:aws:kms:us-east-1:111111111111:key/shop-key".into(), customer_managed: true },
        );
        // The secret's key is AWS-managed after all: no kms:Decrypt need for it.
        keys.insert(
            "1234abcd-12ab-34cd-56ef-1234567890ab".to_string(),
            KeyInfo { arn: "arn:aws:kms:us-east-1:111111111111:key/1234".into(), customer_managed: false },
        );
        let needs = execution_needs(&t, &refs, &m, &keys, ACCOUNT, "us-east-1");
        let flat: Vec<(String, Option<String>, String, String)> = needs
            .iter()
            .map(|n| {
                (n.container.clone(), n.variable.clone(), n.actions.join("+"), n.resource.clone().unwrap_or("*".into()))
            })
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            flat,
            [
                (
                    "web".into(),
                    s("DB_PASSWORD"),
                    "ssm:GetParameters".into(),
                    "arn:aws:ssm:us-east-1:111111111111:parameter/prod/db".into()
                ),
                (
                    "web".into(),
                    s("DB_PASSWORD"),
                    "kms:Decrypt".into(),
                    "arn:aws:kms:us-east-1:111111111111:key/shop-key".into()
                ),
                (
                    "web".into(),
                    s("PLAIN"),
                    "ssm:GetParameters".into(),
                    "arn:aws:ssm:us-east-1:111111111111:parameter/prod/plain".into()
                ),
                (
                    "web".into(),
                    s("API"),
                    "secretsmanager:GetSecretValue".into(),
                    "arn:aws:secretsmanager:us-east-1:111111111111:secret:api-AbCdEf".into()
                ),
                ("web".into(), None, "ecr:GetAuthorizationToken".into(), "*".into()),
                (
                    "web".into(),
                    None,
                    "ecr:BatchGetImage+ecr:GetDownloadUrlForLayer".into(),
                    "arn:aws:ecr:us-east-1:111111111111:repository/shop/web".into()
                ),
                (
                    "web".into(),
                    None,
                    "logs:CreateLogStream+logs:PutLogEvents".into(),
                    "arn:aws:logs:us-east-1:111111111111:log-group:/ecs/web:*".into()
                ),
                (
                    "side".into(),
                    None,
                    "logs:CreateLogGroup+logs:CreateLogStream+logs:PutLogEvents".into(),
                    "arn:aws:logs:eu-west-1:111111111111:log-group:/ecs/side:*".into()
                ),
            ]
        );
        // Without DescribeKey's answer, the key id is taken as a key of this account.
        let needs = execution_needs(&t, &refs, &m, &BTreeMap::new(), ACCOUNT, "us-east-1");
        assert!(needs.iter().any(|n| n.resource.as_deref()
            == Some("arn:aws:kms:us-east-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab")));
        assert!(needs.iter().any(|n| n.resource.as_deref() == Some("arn:aws:kms:us-east-1:111111111111:alias/shop")));
        assert_eq!(simulations(&needs).len(), needs.len(), "one simulation per distinct resource");
        let kms = needs.iter().find(|n| n.actions == ["kms:Decrypt"]).unwrap();
        assert_eq!(kms.via.as_deref(), Some("ssm.us-east-1.amazonaws.com"), "kms:Decrypt happens through SSM");
    }

    #[test]
    fn denials_name_container_variable_and_action_and_unknowable_conditions_only_warn() {
        let need = |variable: Option<&str>, action: &'static str, resource: Option<&str>, via: Option<&str>| Need {
            container: "web".into(),
            variable: variable.map(str::to_string),
            actions: vec![action],
            resource: resource.map(str::to_string),
            what: "it".into(),
            via: via.map(str::to_string),
        };
        let needs = vec![
            need(Some("DB_PASSWORD"), "ssm:GetParameters", Some("arn:p"), None),
            need(None, "ecr:GetAuthorizationToken", None, None),
            need(Some("DB_PASSWORD"), "kms:Decrypt", Some("arn:k"), Some("ssm.us-east-1.amazonaws.com")),
        ];
        let verdict = |d: &str, missing: &[&str]| Verdict {
            decision: d.into(),
            missing_context: missing.iter().map(|m| m.to_string()).collect(),
        };
        let mut verdicts = Verdicts::new();
        verdicts.insert(("ssm:GetParameters".into(), "arn:p".into(), None), verdict("implicitDeny", &[]));
        verdicts.insert(("ecr:GetAuthorizationToken".into(), "*".into(), None), verdict("allowed", &[]));
        verdicts.insert(
            ("kms:Decrypt".into(), "arn:k".into(), Some("ssm.us-east-1.amazonaws.com".into())),
            verdict("implicitDeny", &["aws:SourceVpce"]),
        );
        let (problems, warnings) = denied(&needs, &verdicts, "arn:aws:iam::1:role/path/exec");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].variable.as_deref(), Some("DB_PASSWORD"));
        assert!(
            problems[0].to_string().starts_with(
                "container web, DB_PASSWORD: the execution role exec may not ssm:GetParameters on it (no policy allows it)"
            ),
            "{}",
            problems[0]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("cannot tell whether the execution role exec may kms:Decrypt")
                && warnings[0].contains("aws:SourceVpce"),
            "{warnings:?}"
        );
    }

    #[test]
    fn platforms_match_by_runtime_platform_or_fargate_default() {
        let amd = Platform { os: "linux".into(), architecture: "amd64".into() };
        let arm = Platform { os: "linux".into(), architecture: "arm64".into() };
        let att = Platform { os: "unknown".into(), architecture: "unknown".into() };
        assert_eq!(task_platform(&sample()), Some(amd.clone()));
        assert_eq!(task_platform(&td(json!({"family": "f", "containerDefinitions": [{"name": "a"}]}))), None);
        assert_eq!(
            task_platform(&td(
                json!({"family": "f", "runtimePlatform": {"cpuArchitecture": "ARM64"}, "containerDefinitions": [{"name": "a"}]})
            )),
            Some(arm.clone())
        );
        let p = platform_problem(&amd, "img", &[arm.clone(), att.clone()]).unwrap();
        assert!(
            p.starts_with(
                "image img is built for linux/arm64 only, but the task runs on linux/amd64 (runtimePlatform X86_64)"
            ),
            "{p}"
        );
        assert_eq!(platform_problem(&amd, "img", &[arm.clone(), amd.clone(), att]), None);
        assert_eq!(platform_problem(&arm, "img", &[]), None, "nothing known, nothing claimed");
    }

    #[test]
    fn default_keys_and_role_names() {
        assert!(is_default_key(None) && is_default_key(Some("alias/aws/ssm")));
        assert!(is_default_key(Some("arn:aws:kms:us-east-1:1:alias/aws/secretsmanager")));
        assert!(!is_default_key(Some("alias/shop")));
        let t = td(json!({"family": "f", "executionRoleArn": "exec", "containerDefinitions": [{"name": "a"}]}));
        assert_eq!(execution_role(&t, ACCOUNT, "us-east-1").as_deref(), Some("arn:aws:iam::111111111111:role/exec"));
    }
}
