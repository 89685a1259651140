//! The per-tag loop that push and promote share: for every tag of one destination, decide (skip, write,
//! conflict), write through the mode's [`Writer`], read the tag back, and report the outcome.
//!
//! A tag already at one of this image's digests is skipped; one held by another digest in an immutable
//! repository is a conflict naming both digests (the repository's mutability is read only when it
//! matters); every write is read back (HEAD of the tag, digest compared) before it is reported, so a
//! registry that accepts a write and stores nothing never gets a green run. Each tag has its own outcome:
//! one failing tag never hides the others and never lets the run pass.

use super::Destination;
use crate::aws;
use crate::domain::login::RegistryLogin;
use crate::domain::repository::RepositoryAt;
use crate::domain::tag::{Decision, Landed, TagOutcome, decide};
use crate::registry::RegistryClient;
use anyhow::{Result, anyhow};
use std::collections::{BTreeSet, HashMap};

/// What a run does to a tag, as its report lines say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Pushed,
    Promoted,
}

impl Verb {
    /// The word of the report lines: `pushed`, `promoted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Pushed => "pushed",
            Verb::Promoted => "promoted",
        }
    }

    /// What a conflict's fix tells the user to do with a new tag.
    fn action(self) -> &'static str {
        match self {
            Verb::Pushed => "push",
            Verb::Promoted => "promote to",
        }
    }
}

/// A writer's word that its way cannot write to this destination at all, where the mode has another way
/// (`PLUGIN_PUSH_VIA=auto` chose the engine, and the engine cannot reach the registry). At a destination's
/// first tag, the loop ends that destination there and prints none of its tags; the mode takes the other
/// way, or reports them ([`handed_back`]). At a later tag it is that tag's failure.
#[derive(Debug, Clone)]
pub struct HandedBack {
    /// The destination's registry host.
    pub host: String,
    /// Why, as the way said it.
    pub cause: String,
    /// What would let this way write there next time.
    pub remedy: String,
    /// The failure, with its fix, where the mode does not take the other way.
    pub text: String,
}

impl std::fmt::Display for HandedBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for HandedBack {}

/// Every destination's outcomes, unless every one was handed back ([`HandedBack`]): then the first's
/// word, for the mode to take its other way. Where some destination was written, the handed-back tags
/// are failures, and are reported so.
pub fn handed_back(outcomes: Vec<TagOutcome>, verb: Verb) -> std::result::Result<Vec<TagOutcome>, HandedBack> {
    let back = |o: &TagOutcome| {
        o.result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<HandedBack>())
            .cloned()
    };
    if let Some(first) = outcomes.first().and_then(back)
        && outcomes.iter().all(|o| back(o).is_some())
    {
        return Err(first);
    }
    for outcome in outcomes.iter().filter(|o| back(o).is_some()) {
        crate::report::tag(outcome, None, verb.as_str());
    }
    Ok(outcomes)
}

/// How a mode writes one tag.
pub trait Writer {
    /// Whether `write` reads the tag back itself (else the loop reads it back after each write).
    const READS_BACK: bool = false;

    /// What the writer does to a tag.
    fn verb(&self) -> Verb;

    /// Put the image under `tag`; the digest written.
    fn write(&mut self, tag: &str) -> impl Future<Output = Result<String>>;

    /// The image as a conflict names it: "this image is sha256:…", "the source is sha256:…".
    fn ours(&self, ours: &BTreeSet<String>) -> String;
}

/// Write every tag to one destination. `ours`: the digests this image is known to have there. `read_held`:
/// read each tag first (skip-existing and promote); without it every tag is written.
pub async fn write_every_tag<W: Writer>(
    to: &Destination<'_>,
    tags: &[String],
    mut ours: BTreeSet<String>,
    read_held: bool,
    writer: &mut W,
) -> Vec<TagOutcome> {
    let target = to.label();
    let mut held = HashMap::new();
    if read_held {
        for tag in tags {
            match to.client.manifest_digest(to.repo, tag).await {
                Ok(digest) => held.insert(tag.clone(), digest),
                Err(e) => return fail_every_tag(&target, tags, &e, writer.verb()),
            };
        }
    }
    // Tags that are absent (or already ours) first: writing one tells this image's digest.
    let mut order: Vec<&String> = tags.iter().collect();
    order.sort_by_key(|t| matches!(held.get(*t), Some(Some(d)) if !ours.contains(d)));
    // The repository's mutability rule, read once and only when a tag is held by another digest; each tag
    // is then judged by ECR's own matching of the exclusion filters.
    let mut rule = None;
    let mut outcomes = HashMap::new();
    for tag in order {
        let held_digest = held.get(tag).cloned().flatten();
        if held_digest.as_ref().is_some_and(|d| !ours.contains(d)) && rule.is_none() {
            let at = RepositoryAt::of(to.repo, to.login);
            rule = Some(aws::repository::mutability(to.identity, &at).await);
        }
        let immutable = rule.as_ref().and_then(|r| r.as_ref()).is_some_and(|r| r.immutable(tag));
        let result = match decide(held_digest.as_deref(), &ours, immutable) {
            Decision::Skip(digest) => Ok(Landed { digest, skipped: true }),
            Decision::Conflict { held } => Err(anyhow!(
                "tag {tag} already holds {held} in the immutable repository {} and {}\n  fix: {} a new tag \
                 (PLUGIN_TAGS), or make the repository MUTABLE",
                to.repo,
                writer.ours(&ours),
                writer.verb().action()
            )),
            Decision::Write => match writer.write(tag).await {
                Ok(digest) => {
                    let read_back = match W::READS_BACK {
                        true => Ok(()),
                        false => to.client.confirm_tag(to.repo, tag, &digest).await,
                    };
                    read_back.map(|()| {
                        ours.insert(digest.clone());
                        Landed { digest, skipped: false }
                    })
                }
                Err(e) => Err(e),
            },
        };
        // Handed back at the first tag: this destination's tags all go to the mode, unprinted. Later, a
        // failure as any other.
        let result = match result.map_err(|e| e.downcast::<HandedBack>()) {
            Err(Ok(back)) if outcomes.is_empty() => {
                return tags
                    .iter()
                    .map(|t| TagOutcome::new(&target, t, Err(anyhow::Error::new(back.clone()))))
                    .collect();
            }
            Err(Ok(back)) => Err(anyhow!("{back}")),
            Err(Err(e)) => Err(e),
            Ok(landed) => Ok(landed),
        };
        let outcome = TagOutcome::new(&target, tag, result);
        crate::report::tag(&outcome, held_digest.as_deref(), writer.verb().as_str());
        outcomes.insert(tag.clone(), outcome);
    }
    tags.iter().filter_map(|t| outcomes.remove(t)).collect()
}

/// Run `each` for every destination concurrently; every tag outcome, destination by destination.
pub async fn every_destination<'a, Fut>(
    logins: &'a [RegistryLogin],
    each: impl FnMut(&'a RegistryLogin) -> Fut,
) -> Vec<TagOutcome>
where
    Fut: Future<Output = Vec<TagOutcome>>,
{
    futures_util::future::join_all(logins.iter().map(each))
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every tag of one destination failed for one reason: each gets its outcome and its line.
pub fn fail_every_tag(target: &str, tags: &[String], e: &anyhow::Error, verb: Verb) -> Vec<TagOutcome> {
    let text = format!("{e:#}");
    tags.iter()
        .map(|t| {
            let failed = TagOutcome::new(target, t, Err(anyhow!("{text}")));
            crate::report::tag(&failed, None, verb.as_str());
            failed
        })
        .collect()
}

/// Writes a tag by putting a manifest's exact bytes under it, so the digest stays the manifest's: promote's
/// writer, and push's from files.
pub struct PutManifest<'a> {
    pub client: &'a RegistryClient,
    pub repo: &'a str,
    pub manifest: &'a crate::domain::manifest::Manifest,
    pub verb: Verb,
}

impl Writer for PutManifest<'_> {
    fn verb(&self) -> Verb {
        self.verb
    }

    async fn write(&mut self, tag: &str) -> Result<String> {
        self.client.put_manifest(self.repo, tag, self.manifest).await?;
        Ok(self.manifest.digest.clone())
    }

    fn ours(&self, _: &BTreeSet<String>) -> String {
        match self.verb {
            Verb::Pushed => format!("this image is {}", self.manifest.digest),
            Verb::Promoted => format!("the source is {}", self.manifest.digest),
        }
    }
}

/// Give `manifest` every tag in one destination, its bytes exact: push from files and promote alike. A
/// tag already at its digest is left alone.
pub async fn put_every_tag(
    to: &Destination<'_>,
    tags: &[String],
    manifest: &crate::domain::manifest::Manifest,
    verb: Verb,
) -> Vec<TagOutcome> {
    let mut writer = PutManifest {
        client: &to.client,
        repo: to.repo,
        manifest,
        verb,
    };
    let ours = BTreeSet::from([manifest.digest.clone()]);
    write_every_tag(to, tags, ours, true, &mut writer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn back(host: &str) -> anyhow::Error {
        anyhow::Error::new(HandedBack {
            host: host.into(),
            cause: "dial tcp 127.0.0.2:5000: connect: connection refused".into(),
            remedy: "give the engine a route".into(),
            text: "the engine could not reach it".into(),
        })
    }

    #[test]
    fn a_push_no_destination_took_goes_back_to_the_mode_and_one_beside_a_written_one_fails() {
        let landed = || {
            Ok(Landed {
                digest: "sha256:a".into(),
                skipped: false,
            })
        };
        let all = vec![
            TagOutcome::new("r1/app", "v1", Err(back("r1"))),
            TagOutcome::new("r2/app", "v1", Err(back("r2"))),
        ];
        let handed = handed_back(all, Verb::Pushed).expect_err("every destination handed back");
        assert_eq!(handed.host, "r1");
        let mixed = vec![
            TagOutcome::new("r1/app", "v1", landed()),
            TagOutcome::new("r2/app", "v1", Err(back("r2"))),
        ];
        let outcomes = handed_back(mixed, Verb::Pushed).expect("one destination was written");
        assert!(outcomes[0].result.is_ok() && outcomes[1].result.is_err());
        assert!(
            handed_back(Vec::new(), Verb::Pushed).is_ok(),
            "no outcome is not a hand-back"
        );
        let failed = vec![TagOutcome::new("r1/app", "v1", Err(anyhow!("name unknown")))];
        assert!(handed_back(failed, Verb::Pushed).is_ok());
    }
}
