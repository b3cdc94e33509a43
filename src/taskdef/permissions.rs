//! The permission preflight's I/O (`verify --permissions`, `release --permissions`): resolve
//! the KMS keys the secrets use (DescribeKey), simulate the execution role's policies for every
//! action the ECS agent will take (iam:SimulatePrincipalPolicy), check that each awslogs group
//! exists (DescribeLogGroups), and read each image's platform from its manifest or index. The
//! decisions are in `preflight`; every problem comes back together, before anything is
//! registered.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::metadata::{Metadata, Reference};
use super::preflight::{self, KeyInfo, Platform, Verdict};
use super::template::TaskDefinition;
use super::verify::{Context, Problem};
use crate::aws::raw::RawClient;
use crate::image::registry::Registry;
use crate::image_ref::ImageRef;

/// What the preflight looked at, for the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Preflighted {
    /// (action, resource) pairs simulated for the execution role.
    pub actions: usize,
    pub log_groups: usize,
    pub platforms: usize,
}

fn task_problem(message: String) -> Problem {
    Problem { container: "(task)".into(), variable: None, message }
}

/// Run the preflight; `skip_images` are images verification already reported.
pub async fn check(
    ctx: &Context<'_>,
    td: &TaskDefinition,
    refs: &[Reference],
    meta: &Metadata,
    skip_images: &BTreeSet<String>,
) -> (Preflighted, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut done = Preflighted::default();

    // KMS keys: DescribeKey tells a customer key from an AWS-managed one, and an alias's key.
    let kms = RawClient::kms(ctx.config);
    let mut keys = BTreeMap::new();
    for id in preflight::key_ids(refs, meta) {
        match kms.json("TrentService", "DescribeKey", &json!({"KeyId": id})).await {
            Ok(v) => {
                let m = &v["KeyMetadata"];
                if let Some(arn) = m["Arn"].as_str() {
                    keys.insert(
                        id.clone(),
                        KeyInfo { arn: arn.to_string(), customer_managed: m["KeyManager"].as_str() != Some("AWS") },
                    );
                }
            }
            // Without kms:DescribeKey the key id is simulated as a key of this account.
            Err(e) => tracing::info!("cannot describe KMS key {id} ({e}); simulating it as given"),
        }
    }

    let needs = preflight::execution_needs(td, refs, meta, &keys, ctx.account, ctx.region);
    match preflight::execution_role(td, ctx.account, ctx.region) {
        None if !needs.is_empty() && refs.is_empty() => problems.push(task_problem(format!(
            "the task needs an execution role (executionRoleArn) for the ECS agent to {}; set one with those permissions",
            needs.iter().map(|n| n.what.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        // With secrets, verification already said the role is missing.
        None => {}
        Some(role) => {
            let iam = RawClient::iam(ctx.config);
            let mut verdicts = preflight::Verdicts::new();
            let mut failed = false;
            for sim in preflight::simulations(&needs) {
                let context: Vec<(&str, &str)> = sim.via.iter().map(|v| ("kms:ViaService", v.as_str())).collect();
                match crate::aws::iam::simulate(&iam, &role, &sim.actions, sim.resource.as_deref(), &context).await {
                    Ok(evaluations) => {
                        for e in evaluations {
                            let verdict = Verdict { decision: e.decision, missing_context: e.missing_context };
                            verdicts.insert((e.action, e.resource, sim.via.clone()), verdict);
                        }
                        done.actions += sim.actions.len();
                    }
                    Err(e) => {
                        problems.push(task_problem(format!(
                            "cannot check what the execution role may do: {e}; the credentials in use need iam:SimulatePrincipalPolicy on {role} (or run without --permissions)"
                        )));
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                let (denied, warnings) = preflight::denied(&needs, &verdicts, &role);
                problems.extend(denied);
                for w in warnings {
                    tracing::warn!("{w}");
                }
            }
        }
    }

    for g in preflight::log_groups(td, ctx.region) {
        if g.create {
            continue;
        }
        done.log_groups += 1;
        let config = ctx.config.to_builder().region(aws_config::Region::new(g.region.clone())).build();
        let answer = RawClient::logs(&config)
            .json("Logs_20140328", "DescribeLogGroups", &json!({"logGroupNamePrefix": g.group, "limit": 50}))
            .await;
        let problem = |message: String| Problem { container: g.container.clone(), variable: None, message };
        match answer {
            Ok(v) => {
                let exists = v["logGroups"]
                    .as_array()
                    .is_some_and(|groups| groups.iter().any(|l| l["logGroupName"].as_str() == Some(g.group.as_str())));
                if !exists {
                    problems.push(problem(format!(
                        "log group {} does not exist in {} (account {}); the task would fail to start — create it (aws logs create-log-group --log-group-name {}) or set the awslogs option awslogs-create-group to \"true\" (the role then needs logs:CreateLogGroup)",
                        g.group, g.region, ctx.account, g.group
                    )));
                }
            }
            Err(e) => problems.push(problem(format!("cannot look up log group {}: {e}", g.group))),
        }
    }

    if let Some(task) = preflight::task_platform(td) {
        let mut seen: BTreeMap<String, Result<Vec<Platform>, String>> = BTreeMap::new();
        for (container, image) in preflight::images(td) {
            if skip_images.contains(&image) {
                continue;
            }
            if !seen.contains_key(&image) {
                let found = platforms(ctx, &image).await;
                seen.insert(image.clone(), found);
            }
            match &seen[&image] {
                Ok(available) => {
                    done.platforms += 1;
                    if let Some(message) = preflight::platform_problem(&task, &image, available) {
                        problems.push(Problem { container, variable: None, message });
                    }
                }
                Err(message) if !message.is_empty() => {
                    problems.push(Problem { container, variable: None, message: message.clone() })
                }
                Err(_) => {}
            }
        }
    }
    (done, problems)
}

/// The platforms an image is built for: each manifest of an index, or a manifest's config.
/// `Err("")`: not checked (a registry deployer has no credentials for).
async fn platforms(ctx: &Context<'_>, image: &str) -> Result<Vec<Platform>, String> {
    let image_ref = ImageRef::parse(image).map_err(|e| e.to_string())?;
    let registry = match (ctx.registry_endpoint, image_ref.is_ecr()) {
        (Some(endpoint), _) => Registry::new(endpoint, None, None),
        (None, true) => {
            let ecr = aws_sdk_ecr::Client::new(ctx.config);
            let token = crate::image::ecr::token(&ecr, image_ref.ecr_account().as_deref())
                .await
                .map_err(|e| format!("cannot read the platform of {image}: {e}"))?;
            let host = image_ref.host.clone().unwrap_or_default();
            Registry::new(&format!("https://{host}"), Some(token.header), None)
        }
        (None, false) => {
            tracing::info!("not checking the platform of {image}: only ECR images are read");
            return Err(String::new());
        }
    }
    .map_err(|e| e.to_string())?;
    let reference = image_ref.reference();
    let fetched = registry
        .get_manifest(&image_ref.repository, &reference)
        .await
        .map_err(|e| format!("cannot read the platform of {image}: {e}"))?;
    let doc = crate::image::ManifestDoc::parse(&fetched.bytes, image).map_err(|e| e.to_string())?;
    if crate::image::is_index(&fetched.media_type) || !doc.manifests.is_empty() {
        return Ok(doc.manifests.iter().filter_map(|m| platform_of(m.platform.as_ref()?)).collect());
    }
    let Some(config) = doc.config else { return Ok(Vec::new()) };
    // An image config is a few KiB; refuse to read a hostile giant.
    const LIMIT: u64 = 1 << 20;
    if config.size > LIMIT {
        return Err(format!("the config of {image} claims {} bytes; not reading more than {LIMIT}", config.size));
    }
    let resp = registry
        .get_blob(&image_ref.repository, &config.digest)
        .await
        .map_err(|e| format!("cannot read the platform of {image}: {e}"))?;
    let bytes = read_capped(resp, LIMIT).await.map_err(|e| format!("cannot read the config of {image}: {e}"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the config of {image} is not JSON: {e}"))?;
    Ok(platform_of(&value).into_iter().collect())
}

fn platform_of(v: &Value) -> Option<Platform> {
    Some(Platform {
        os: v.get("os")?.as_str()?.to_string(),
        architecture: v.get("architecture")?.as_str()?.to_string(),
    })
}

async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| crate::github::oidc::without_url(&e))? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("more than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
