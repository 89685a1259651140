//! One tag in one destination: what to do with it (the per-tag decision, pure) and what happened to it.
//!
//! Push and promote decide every tag the same way, through [`decide`]: a tag already at one of this image's
//! digests is left alone (skip), a tag held by another digest in an immutable repository is a conflict that
//! names both digests, anything else is written.

use anyhow::Result;
use std::collections::BTreeSet;

/// What happened to one tag.
#[derive(Debug)]
pub struct TagOutcome {
    /// `<registry>/<repo>:<tag>`.
    pub reference: String,
    pub result: Result<Landed>,
}

impl TagOutcome {
    pub fn new(target: &str, tag: &str, result: Result<Landed>) -> TagOutcome {
        TagOutcome {
            reference: format!("{target}:{tag}"),
            result,
        }
    }
}

/// A tag that is in the registry at `digest`: written by this run, or found there already.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    pub digest: String,
    pub skipped: bool,
}

/// What to do with one tag, given what the registry holds under it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Write,
    /// Already at one of this image's digests.
    Skip(String),
    /// Held by another digest, and the repository is immutable.
    Conflict {
        held: String,
    },
}

/// Decide one tag: `held` is what the registry holds under it (`None`: nothing, or not read), `ours` every
/// digest this image is known to have there, `immutable` whether the repository refuses overwrites.
pub fn decide(held: Option<&str>, ours: &BTreeSet<String>, immutable: bool) -> Decision {
    match held {
        None => Decision::Write,
        Some(d) if ours.contains(d) => Decision::Skip(d.to_string()),
        Some(d) if immutable => Decision::Conflict { held: d.to_string() },
        Some(_) => Decision::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_tag_is_decided_on_its_own() {
        let ours = set(&["sha256:a"]);
        assert_eq!(decide(None, &ours, false), Decision::Write);
        assert_eq!(decide(None, &ours, true), Decision::Write);
        assert_eq!(
            decide(Some("sha256:a"), &ours, false),
            Decision::Skip("sha256:a".into())
        );
        assert_eq!(decide(Some("sha256:a"), &ours, true), Decision::Skip("sha256:a".into()));
        assert_eq!(decide(Some("sha256:b"), &ours, false), Decision::Write);
        assert_eq!(
            decide(Some("sha256:b"), &ours, true),
            Decision::Conflict {
                held: "sha256:b".into()
            }
        );
        assert_eq!(
            decide(Some("sha256:b"), &set(&[]), true),
            Decision::Conflict {
                held: "sha256:b".into()
            }
        );
    }
}
