//! The ECR lifecycle policy a repository gets when deployer creates it, so images clean up
//! after themselves: untagged images expire after D days, and only the newest N tagged images
//! are kept. On by default with `--create-repository`; `--keep-images`, `--expire-untagged-days`
//! and deployer.toml's `lifecycle-policy` change it, `--no-lifecycle-policy` (or
//! `lifecycle-policy = false`) turns it off. Pure: the policy text and the settings merge.

use serde::Deserialize;

pub const DEFAULT_KEEP_IMAGES: u32 = 30;
pub const DEFAULT_EXPIRE_UNTAGGED_DAYS: u32 = 14;

/// `lifecycle-policy = { keep-images = 50, expire-untagged-days = 7 }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LifecycleRules {
    pub keep_images: Option<u32>,
    pub expire_untagged_days: Option<u32>,
}

/// deployer.toml's `lifecycle-policy`: `false`/`true`, or the rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LifecycleSetting {
    Enabled(bool),
    Rules(LifecycleRules),
}

/// The policy's two numbers: keep the newest `keep_images` tagged images, expire untagged
/// ones `expire_untagged_days` after they were pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep_images: u32,
    pub expire_untagged_days: u32,
}

/// The flags' three settings: `--no-lifecycle-policy`, `--keep-images`, `--expire-untagged-days`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub off: bool,
    pub keep_images: Option<u32>,
    pub expire_untagged_days: Option<u32>,
}

impl LifecycleSetting {
    /// The flags with the file filling what they leave empty: `false` turns the policy off
    /// unless a number flag is given (which turns it back on); rules fill missing numbers
    /// unless the flags turned it off.
    pub fn under(&self, flags: Flags) -> Flags {
        let given = flags.keep_images.is_some() || flags.expire_untagged_days.is_some();
        match self {
            LifecycleSetting::Enabled(false) if !given => Flags { off: true, ..flags },
            LifecycleSetting::Rules(r) if !flags.off => Flags {
                off: false,
                keep_images: flags.keep_images.or(r.keep_images),
                expire_untagged_days: flags.expire_untagged_days.or(r.expire_untagged_days),
            },
            _ => flags,
        }
    }
}

/// The policy the (merged) flags ask for; `None` when it is off.
pub fn resolve(flags: Flags) -> Result<Option<Policy>, String> {
    let Flags { off, keep_images, expire_untagged_days } = flags;
    if off && (keep_images.is_some() || expire_untagged_days.is_some()) {
        return Err("--no-lifecycle-policy cannot go with --keep-images / --expire-untagged-days".into());
    }
    if off {
        return Ok(None);
    }
    let policy = Policy {
        keep_images: keep_images.unwrap_or(DEFAULT_KEEP_IMAGES),
        expire_untagged_days: expire_untagged_days.unwrap_or(DEFAULT_EXPIRE_UNTAGGED_DAYS),
    };
    if !(1..=10_000).contains(&policy.keep_images) {
        return Err(format!("keep-images {} is not between 1 and 10000", policy.keep_images));
    }
    if !(1..=3650).contains(&policy.expire_untagged_days) {
        return Err(format!("expire-untagged-days {} is not between 1 and 3650", policy.expire_untagged_days));
    }
    Ok(Some(policy))
}

impl Policy {
    /// The ECR lifecycle policy document. Untagged images go by age (rule 1); tagged ones by
    /// count (rule 2, every tag matched by the `*` pattern).
    pub fn text(&self) -> String {
        serde_json::json!({"rules": [
            {
                "rulePriority": 1,
                "description": format!("deployer: expire untagged images {} days after push", self.expire_untagged_days),
                "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": self.expire_untagged_days},
                "action": {"type": "expire"}
            },
            {
                "rulePriority": 2,
                "description": format!("deployer: keep the newest {} tagged images", self.keep_images),
                "selection": {"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "imageCountMoreThan", "countNumber": self.keep_images},
                "action": {"type": "expire"}
            }
        ]})
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_off_means_off() {
        let flags = |off, keep_images, expire_untagged_days| Flags { off, keep_images, expire_untagged_days };
        let policy = |keep_images, expire_untagged_days| Ok(Some(Policy { keep_images, expire_untagged_days }));
        let rules = LifecycleSetting::Rules(LifecycleRules { keep_images: Some(50), expire_untagged_days: None });
        let file_off = LifecycleSetting::Enabled(false);
        let on = LifecycleSetting::Enabled(true);
        assert_eq!(resolve(flags(false, None, None)), policy(30, 14), "the defaults");
        assert_eq!(resolve(rules.under(flags(false, None, Some(7)))), policy(50, 7));
        assert_eq!(resolve(rules.under(flags(true, None, None))), Ok(None), "the flag turns it off");
        assert_eq!(resolve(file_off.under(flags(false, None, None))), Ok(None));
        assert_eq!(resolve(on.under(flags(false, None, None))), policy(30, 14));
        assert_eq!(resolve(file_off.under(flags(false, Some(5), None))), policy(5, 14), "a flag turns it back on");
        assert!(resolve(flags(true, Some(5), None)).unwrap_err().contains("cannot go with"));
        assert!(resolve(flags(false, Some(0), None)).unwrap_err().contains("keep-images 0"));
        assert!(resolve(flags(false, None, Some(9999))).unwrap_err().contains("expire-untagged-days 9999"));
    }

    #[test]
    fn the_policy_has_an_untagged_age_rule_and_a_tagged_count_rule() {
        let v: serde_json::Value =
            serde_json::from_str(&Policy { keep_images: 30, expire_untagged_days: 14 }.text()).unwrap();
        assert_eq!(v["rules"][0]["selection"]["tagStatus"], "untagged");
        assert_eq!(v["rules"][0]["selection"]["countNumber"], 14);
        assert_eq!(v["rules"][1]["selection"]["countType"], "imageCountMoreThan");
        assert_eq!(v["rules"][1]["selection"]["countNumber"], 30);
        assert_eq!(v["rules"][1]["rulePriority"], 2);
    }

    #[test]
    fn the_file_setting_reads_both_forms() {
        #[derive(Deserialize)]
        struct T {
            #[serde(rename = "lifecycle-policy")]
            p: LifecycleSetting,
        }
        let t: T = toml::from_str("lifecycle-policy = false").unwrap();
        assert_eq!(t.p, LifecycleSetting::Enabled(false));
        let t: T = toml::from_str("lifecycle-policy = { keep-images = 10 }").unwrap();
        assert_eq!(t.p, LifecycleSetting::Rules(LifecycleRules { keep_images: Some(10), expire_untagged_days: None }));
        assert!(toml::from_str::<T>("lifecycle-policy = { keep = 10 }").is_err());
    }
}
