//! Old task-definition revisions cleaned up (`--keep-revisions N`, `deployer revisions`): which
//! ACTIVE revisions of a family to keep and which to deregister, decided here as a pure
//! function over plain data. A revision is kept when it is among the newest N, or anything
//! still uses it — the live revision, the rollback target, any deployment of any service in
//! the region, any EventBridge rule or Scheduler schedule. `scan` gathers those facts.

pub mod scan;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// `family` and `revision` of a task definition ARN (`…:task-definition/shop:12`) or of
/// `shop:12`.
pub fn family_revision(arn: &str) -> Option<(String, i64)> {
    let tail = arn.rsplit('/').next().unwrap_or(arn);
    let (family, revision) = tail.rsplit_once(':')?;
    Some((family.to_string(), revision.parse().ok()?))
}

/// Who uses each task definition ARN: `"live: main/web"`, `"rule nightly-report"`, ...
pub type Users = BTreeMap<String, Vec<String>>;

/// What happens to one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Decision {
    /// Among the newest N.
    KeepNewest,
    /// Older, but something uses it.
    KeepInUse {
        by: Vec<String>,
    },
    Deregister,
}

/// One ACTIVE revision and what is decided for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Row {
    pub task_definition_arn: String,
    pub revision: i64,
    /// Everything that uses it (also for the newest ones), for the listing.
    pub used_by: Vec<String>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// Decide for each of `active` (any order; ARNs of one family): keep the newest `keep`, keep
/// any other that `users` names, deregister the rest. Newest first.
pub fn decide(active: &[String], keep: usize, users: &Users) -> Vec<Row> {
    let mut revs: Vec<(i64, &String)> =
        active.iter().filter_map(|arn| family_revision(arn).map(|(_, r)| (r, arn))).collect();
    revs.sort_by_key(|r| std::cmp::Reverse(r.0));
    revs.dedup_by(|a, b| a.0 == b.0);
    revs.into_iter()
        .enumerate()
        .map(|(i, (revision, arn))| {
            let used_by = users.get(arn).cloned().unwrap_or_default();
            let decision = if i < keep {
                Decision::KeepNewest
            } else if !used_by.is_empty() {
                Decision::KeepInUse { by: used_by.clone() }
            } else {
                Decision::Deregister
            };
            Row { task_definition_arn: arn.clone(), revision, used_by, decision }
        })
        .collect()
}

/// What a cleanup did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cleanup {
    pub family: String,
    /// `None`: a listing, nothing decided.
    pub keep: Option<usize>,
    pub dry_run: bool,
    pub revisions: Vec<Row>,
    /// Deregistered (or, dry run, to be).
    pub deregistered: Vec<String>,
    /// Deregistrations ECS refused, with its reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Why nothing was cleaned up, when that was decided before looking at revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.skipped {
            return write!(f, "revisions of {}: none deregistered: {why}", self.family);
        }
        let verb = if self.dry_run { "would deregister" } else { "deregistered" };
        match self.keep {
            Some(n) => write!(f, "revisions of {} (keep the newest {n}):", self.family)?,
            None => write!(f, "ACTIVE revisions of {}, newest first:", self.family)?,
        }
        for r in &self.revisions {
            let what = match &r.decision {
                _ if self.keep.is_none() => String::new(),
                Decision::KeepNewest => "kept (newest)".to_string(),
                Decision::KeepInUse { .. } => "kept (in use)".to_string(),
                Decision::Deregister if self.errors.iter().any(|e| e.starts_with(&r.task_definition_arn)) => {
                    "deregistration refused".to_string()
                }
                Decision::Deregister => verb.to_string(),
            };
            write!(f, "\n  {:<28} {what}", short(&r.task_definition_arn))?;
            if !r.used_by.is_empty() {
                write!(f, " — {}", r.used_by.join(", "))?;
            }
        }
        for e in &self.errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arn(r: i64) -> String {
        format!("arn:aws:ecs:us-east-1:111122223333:task-definition/shop:{r}")
    }

    fn actions(rows: &[Row]) -> Vec<(i64, &'static str)> {
        rows.iter()
            .map(|r| {
                let a = match r.decision {
                    Decision::KeepNewest => "newest",
                    Decision::KeepInUse { .. } => "in use",
                    Decision::Deregister => "deregister",
                };
                (r.revision, a)
            })
            .collect()
    }

    #[test]
    fn the_newest_n_and_anything_in_use_are_kept() {
        let five: Vec<String> = [3, 1, 5, 2, 4].iter().map(|r| arn(*r)).collect();
        let none = Users::new();
        type Case<'a> = (&'a str, usize, Users, Vec<(i64, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "nothing in use",
                2,
                none.clone(),
                vec![(5, "newest"), (4, "newest"), (3, "deregister"), (2, "deregister"), (1, "deregister")],
            ),
            (
                "a scheduled rule on an old one",
                2,
                Users::from([(arn(1), vec!["rule nightly".into()])]),
                vec![(5, "newest"), (4, "newest"), (3, "deregister"), (2, "deregister"), (1, "in use")],
            ),
            (
                "the live one is older than the newest (a registered, undeployed revision)",
                1,
                Users::from([(arn(4), vec!["live: main/web".into()]), (arn(3), vec!["rollback target".into()])]),
                vec![(5, "newest"), (4, "in use"), (3, "in use"), (2, "deregister"), (1, "deregister")],
            ),
            (
                "keep more than there are",
                10,
                none.clone(),
                vec![(5, "newest"), (4, "newest"), (3, "newest"), (2, "newest"), (1, "newest")],
            ),
        ];
        for (name, keep, users, want) in cases {
            assert_eq!(actions(&decide(&five, keep, &users)), want, "{name}");
        }
    }

    #[test]
    fn users_are_listed_for_every_row_and_odd_arns_are_ignored() {
        let users = Users::from([(arn(2), vec!["live: main/web".into()])]);
        let rows = decide(&[arn(2), arn(2), "not-an-arn".into()], 1, &users);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].used_by, ["live: main/web"]);
        assert_eq!(rows[0].decision, Decision::KeepNewest);
    }

    #[test]
    fn family_and_revision_come_from_arns_and_short_forms() {
        assert_eq!(family_revision(&arn(12)), Some(("shop".into(), 12)));
        assert_eq!(family_revision("shop-worker:3"), Some(("shop-worker".into(), 3)));
        assert_eq!(family_revision("arn:aws:ecs:us-east-1:1:task-definition/shop"), None);
    }
}
