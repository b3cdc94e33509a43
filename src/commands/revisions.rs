//! `deployer revisions`: a family's ACTIVE revisions, newest first, with what uses each (the
//! live revision of every service in the region, deployments in progress, scheduled tasks);
//! `--keep N` deregisters the unused ones beyond the newest N, `--dry-run` only says which.

use crate::cli::{GlobalArgs, RevisionsArgs};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::pipeline::Session;
use crate::revisions::{Cleanup, decide, family_revision, scan};

fn scan_error(e: scan::ScanError) -> Error {
    Error::Input(e.to_string())
}

/// The family of `--family`, else of the revision `--service` runs.
async fn family(args: &RevisionsArgs, session: &Session) -> Result<String> {
    match (&args.family, &args.cluster, &args.service) {
        (Some(f), _, _) => Ok(f.clone()),
        (None, Some(cluster), Some(service)) => {
            let current = crate::taskdef::ecs::service_task_definition(&session.config, cluster, service).await?;
            family_revision(&current)
                .map(|(f, _)| f)
                .ok_or_else(|| Error::Input(format!("cannot read the family of {current}")))
        }
        _ => Err(Error::Usage("revisions needs --family, or --cluster and --service".into())),
    }
}

pub async fn run(args: &RevisionsArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    if args.family.is_none() && (args.cluster.is_none() || args.service.is_none()) {
        return Err(Error::Usage("revisions needs --family, or --cluster and --service".into()));
    }
    let session = Session::from_default_chain(global).await?;
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let family = family(args, &session).await?;
    let result = match args.keep {
        Some(keep) => {
            // Deregistering needs every user known: a scheduled task that cannot be seen refuses.
            let users = scan::all_users(&ecs, &session.config, &family).await.map_err(|e| {
                Error::Input(format!("cannot tell which revisions are in use ({e}); nothing was deregistered"))
            })?;
            scan::cleanup(&ecs, &family, keep as usize, &users, args.dry_run).await.map_err(scan_error)?
        }
        None => {
            let users = match scan::all_users(&ecs, &session.config, &family).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!("scheduled tasks not listed: {e}");
                    let clusters = scan::cluster_arns(&ecs).await.map_err(scan_error)?;
                    scan::service_users(&ecs, &clusters, &family).await.map_err(scan_error)?
                }
            };
            let active = scan::active_revisions(&ecs, &family).await.map_err(scan_error)?;
            Cleanup { revisions: decide(&active, usize::MAX, &users), family, ..Cleanup::default() }
        }
    };
    printer.result(&result);
    Ok(if result.errors.is_empty() { Exit::Ok } else { Exit::Failed })
}
