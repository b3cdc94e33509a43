//! `render`, `diff`, `verify` and `register`: one shared preparation (load the template,
//! expand secret references, render), then each command's own last step.

use std::fmt;
use std::io::IsTerminal;

use aws_config::SdkConfig;
use serde::Serialize;
use serde_json::Value;

use crate::aws::ecs_json::EcsJson;
use crate::aws::{auth, clients};
use crate::cli::{GlobalArgs, OutputFormat, TaskDefArgs};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::taskdef::diff::{self, Diff};
use crate::taskdef::ecs::{self, Registered};
use crate::taskdef::refs::{RefSpec, parse_ref};
use crate::taskdef::render::{RenderRequest, parse_image, parse_pair, render};
use crate::taskdef::resolve::{Scope, resolve};
use crate::taskdef::template::TaskDefinition;
use crate::taskdef::verify::{self, Checked, Context};
use crate::taskdef::{pins, schema};

/// The session a task-definition command works in.
pub struct Session {
    pub config: SdkConfig,
    pub account: String,
    pub region: String,
}

impl Session {
    /// The default credential chain (a terminal, or credentials a previous step exported).
    pub async fn from_default_chain(global: &GlobalArgs) -> Result<Session> {
        let config = clients::load(global.region.as_deref(), clients::BaseCredentials::DefaultChain)
            .await
            .map_err(auth::AuthError::from)?;
        let (account, _) = auth::caller_identity(&config, None).await?;
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        Ok(Session { config, account, region })
    }
}

/// A rendered task definition and where it came from.
pub struct Rendered {
    pub template_label: String,
    pub rendered: TaskDefinition,
    /// (container, image URI) given with --image, for verification.
    pub images: Vec<(String, String)>,
}

/// Everything before the command-specific step: flags checked first (no network on bad
/// input), then the template loaded and references expanded.
pub async fn prepare(session: &Session, args: &TaskDefArgs) -> Result<Rendered> {
    let images: Vec<(Option<String>, String)> =
        args.render.images.iter().map(|i| parse_image(i)).collect::<Result<_, _>>()?;
    let env = args.render.env.iter().map(|e| parse_pair("--env", e)).collect::<Result<Vec<_>, _>>()?;
    let secrets: Vec<(String, RefSpec)> = args
        .render
        .secrets
        .iter()
        .map(|s| {
            let (name, reference) = parse_pair("--secret", s)?;
            let spec = parse_ref(&reference).map_err(|e| Error::Input(format!("--secret {name}: {e}")))?;
            Ok((name, spec))
        })
        .collect::<Result<_>>()?;
    if let Some(dupe) = env.iter().find(|(n, _)| secrets.iter().any(|(s, _)| s == n)) {
        return Err(Error::Input(format!(
            "{} is given both as --env and as --secret; keep one (a secret should never also be a plain variable)",
            dupe.0
        )));
    }

    let ecs = EcsJson::new(&session.config);
    let (template, template_label) = load_template(session, &ecs, args).await?;
    let secrets = resolve(
        &Scope { config: &session.config, account: &session.account, region: &session.region },
        args.render.secrets_path.as_deref(),
        &secrets,
    )
    .await?;
    let request = RenderRequest {
        container: args.render.container.clone(),
        images,
        env,
        secrets,
        exclusive_env: args.render.exclusive_env,
    };
    let mut rendered = render(&template, &request)?;
    schema::enforce(&rendered.body, &template_label, args.render.allow_unknown_fields)?;
    if args.render.pin_secrets {
        let (pinned, n) = pins::pin_secrets(&session.config, &rendered).await?;
        tracing::info!("pinned {n} Secrets Manager reference(s) to their current version id");
        rendered = pinned;
    }
    // Name the container of each --image for verification messages.
    let names = rendered.container_names();
    let images = request
        .images
        .iter()
        .map(|(c, uri)| {
            let container = c.clone().or_else(|| args.render.container.clone()).or_else(|| names.first().cloned());
            (container.unwrap_or_default(), uri.clone())
        })
        .collect();
    Ok(Rendered { template_label, rendered, images })
}

async fn load_template(session: &Session, ecs: &EcsJson, args: &TaskDefArgs) -> Result<(TaskDefinition, String)> {
    match (&args.task_definition, &args.service) {
        (Some(spec), _) => {
            let path = std::path::Path::new(spec);
            if path.exists() {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Input(format!("--task-definition {spec}: cannot read it: {e}")))?;
                return Ok((TaskDefinition::parse(&text, spec)?, spec.clone()));
            }
            if spec.ends_with(".json") || spec.contains('/') && !spec.starts_with("arn:") {
                return Err(Error::Input(format!(
                    "--task-definition {spec}: no such file (give a JSON file, family[:revision], or an ARN)"
                )));
            }
            let (td, id) = ecs::describe(ecs, spec).await?;
            Ok((td, format!("{}:{}", id.family, id.revision)))
        }
        (None, Some(service)) => {
            let cluster = cluster(args)?;
            let arn = ecs::service_task_definition(&session.config, cluster, service).await?;
            let (td, id) = ecs::describe(ecs, &arn).await?;
            Ok((td, format!("{}:{} (service {service})", id.family, id.revision)))
        }
        (None, None) => Err(Error::Usage(
            "give --task-definition FILE|family[:revision]|ARN, or --service (with --cluster) to start from what the service runs".into(),
        )),
    }
}

fn cluster(args: &TaskDefArgs) -> Result<&str> {
    args.cluster.as_deref().ok_or_else(|| Error::Usage("--service needs --cluster".into()))
}

/// The rendered JSON; `--output json` and text print the same document.
#[derive(Serialize)]
#[serde(transparent)]
pub struct RenderResult(pub Value);

impl fmt::Display for RenderResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string_pretty(&self.0).unwrap_or_default())
    }
}

pub async fn run_render(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let rendered = prepare(&session, args).await?;
    printer.result(&RenderResult(rendered.rendered.to_json()));
    Ok(Exit::Ok)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffResult {
    pub changed: bool,
    pub current: String,
    pub rendered: String,
    pub lines_added: usize,
    pub lines_removed: usize,
    pub diff: String,
    #[serde(skip)]
    color: bool,
}

impl fmt::Display for DiffResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed {
            return write!(f, "no change: the rendered task definition matches {}", self.current);
        }
        let d = Diff {
            current_label: self.current.clone(),
            rendered_label: self.rendered.clone(),
            unified: self.diff.clone(),
            changed: true,
        };
        write!(f, "{}", if self.color { d.colored() } else { d.unified })
    }
}

/// The diff of the rendered definition against the service's current one (with --service),
/// else the family's latest revision; against nothing when neither exists yet.
pub async fn diff_against_current(session: &Session, args: &TaskDefArgs, rendered: &Rendered) -> Result<Diff> {
    let ecs = EcsJson::new(&session.config);
    let baseline = match &args.service {
        Some(service) => Some(ecs::service_task_definition(&session.config, cluster(args)?, service).await?),
        None => Some(rendered.rendered.family().to_string()),
    };
    let current = match baseline {
        Some(spec) => match ecs::describe(&ecs, &spec).await {
            Ok((td, id)) => Some((td.to_json(), format!("{}:{}", id.family, id.revision))),
            Err(ecs::EcsError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let (current_json, label) = match &current {
        Some((v, l)) => (Some(v), l.clone()),
        None => (None, "(nothing registered)".to_string()),
    };
    Ok(diff::diff(current_json, &label, &rendered.rendered.to_json(), "rendered"))
}

pub async fn run_diff(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let rendered = prepare(&session, args).await?;
    let d = diff_against_current(&session, args, &rendered).await?;
    printer.runner.summary(&d.markdown())?;
    let (added, removed) = d.stats();
    let color = global.output == OutputFormat::Text
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    printer.result(&DiffResult {
        changed: d.changed,
        current: d.current_label.clone(),
        rendered: d.rendered_label.clone(),
        lines_added: added,
        lines_removed: removed,
        diff: d.unified.clone(),
        color,
    });
    Ok(if d.changed && args.exit_code { Exit::Failed } else { Exit::Ok })
}

/// Verify as `verify` and `register` do.
pub async fn verify_rendered(session: &Session, args: &TaskDefArgs, rendered: &Rendered) -> Result<Checked> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Input(format!("cannot build an HTTP client: {e}")))?;
    let ctx = Context {
        config: &session.config,
        account: &session.account,
        region: &session.region,
        registry_endpoint: args.registry_endpoint.as_deref(),
        http: &http,
        permissions: args.permissions,
    };
    Ok(verify::verify(&ctx, &rendered.rendered, &rendered.images).await?)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyResult {
    pub template: String,
    pub checked: Checked,
}

impl fmt::Display for VerifyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verified {}: {} parameter(s), {} secret(s), {} image(s) exist",
            self.template, self.checked.parameters, self.checked.secrets, self.checked.images
        )
    }
}

pub async fn run_verify(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let rendered = prepare(&session, args).await?;
    let checked = verify_rendered(&session, args, &rendered).await?;
    printer.result(&VerifyResult { template: rendered.template_label, checked });
    Ok(Exit::Ok)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegisterResult {
    #[serde(flatten)]
    pub registered: Registered,
    pub verified: bool,
}

impl fmt::Display for RegisterResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.registered.task_definition_arn)
    }
}

pub async fn run_register(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let rendered = prepare(&session, args).await?;
    if !args.no_verify {
        verify_rendered(&session, args, &rendered).await?;
    }
    let registered = ecs::register(&EcsJson::new(&session.config), &rendered.rendered).await?;
    printer.runner.set_output("task-definition-arn", &registered.task_definition_arn)?;
    printer.result(&RegisterResult { registered, verified: !args.no_verify });
    Ok(Exit::Ok)
}
