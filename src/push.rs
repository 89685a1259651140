//! Push mode: the plan (which local image goes to which references) and carrying it out tag by tag.
//!
//! Each tag is pushed on its own and its outcome recorded, so one failing tag never hides the others and
//! never lets the run pass. With `PLUGIN_SKIP_EXISTING` each tag is decided on its own (never once for all
//! tags): a tag already at this image's digest is skipped, the others are pushed, each decision is logged.

use crate::credentials::Identity;
use crate::engine::{Engine, SourceImage};
use crate::registry_client::RegistryClient;
use crate::repository;
use crate::repository::Mutability;
use crate::settings::Settings;
use crate::token::RegistryLogin;
use anyhow::{Result, anyhow};
use backon::{ExponentialBuilder, Retryable};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// What a push run will do: one local image, the target repository and tags in every destination.
#[derive(Debug, Clone)]
pub struct PushPlan {
    pub source: SourceImage,
    pub repo: String,
    pub tags: Vec<String>,
    pub skip_existing: bool,
}

/// Run push mode: check the source image, prepare repositories, push to every destination concurrently.
/// `None` for a dry run.
pub async fn run(
    settings: &Settings,
    identity: &Identity,
    logins: &[RegistryLogin],
) -> Result<Option<Vec<TagOutcome>>> {
    let engine = Engine::connect(settings.timeout).await?;
    let plan = PushPlan {
        source: engine
            .source_image(settings.source.as_deref().expect("push mode has a source"))
            .await?,
        repo: settings.target.repo.clone(),
        tags: settings.target.tags.clone(),
        skip_existing: settings.skip_existing,
    };
    crate::report::push_plan(&plan, logins);
    if settings.dry_run {
        crate::report::dry_run(&plan.repo, plan.tags.len(), logins, &settings.repository);
        return Ok(None);
    }
    repository::prepare_all(identity, &plan.repo, &settings.repository, logins).await?;
    let pushes = logins
        .iter()
        .zip(&settings.target.destinations)
        .map(|(login, destination)| plan.push_to(&engine, login, &destination.region, identity, settings.timeout));
    Ok(Some(
        futures_util::future::join_all(pushes)
            .await
            .into_iter()
            .flatten()
            .collect(),
    ))
}

/// What happened to one tag.
#[derive(Debug)]
pub struct TagOutcome {
    pub reference: String,
    pub result: Result<Landed>,
}

/// A tag that is in the registry at `digest`: pushed by this run, or found there already.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    pub digest: String,
    pub skipped: bool,
}

/// What to do with one tag, given what the registry holds under it.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    Push,
    /// Already at one of this image's digests.
    Skip(String),
    /// Held by another digest, and the repository is immutable.
    Conflict {
        held: String,
    },
}

fn decide(held: Option<&str>, ours: &BTreeSet<String>, immutable: bool) -> Decision {
    match held {
        None => Decision::Push,
        Some(d) if ours.contains(d) => Decision::Skip(d.to_string()),
        Some(d) if immutable => Decision::Conflict { held: d.to_string() },
        Some(_) => Decision::Push,
    }
}

impl PushPlan {
    /// The digests this image already has in `target` (from earlier pushes by this engine).
    fn known_digests(&self, target: &str) -> BTreeSet<String> {
        let prefix = format!("{target}@");
        self.source
            .repo_digests
            .iter()
            .filter_map(|d| d.strip_prefix(&prefix))
            .map(String::from)
            .collect()
    }

    /// Push every tag to one destination; the first push uploads the layers, later tags only add a manifest.
    async fn push_to(
        &self,
        engine: &Engine,
        login: &RegistryLogin,
        region: &str,
        identity: &Identity,
        idle: Duration,
    ) -> Vec<TagOutcome> {
        let target = format!("{}/{}", login.registry.host, self.repo);
        // The login may be replaced once by a fresh token (see `push_tag`).
        let (mut login, mut refreshed) = (login.clone(), false);
        let mut ours = self.known_digests(&target);
        let held = match self.skip_existing {
            false => HashMap::new(),
            true => match self.held_digests(&login, idle).await {
                Ok(held) => held,
                Err(e) => return fail_every_tag(&target, &self.tags, &e, "pushed"),
            },
        };
        // Tags that are absent (or already ours) first: pushing one tells this image's digest.
        let mut order: Vec<&String> = self.tags.iter().collect();
        order.sort_by_key(|t| matches!(held.get(*t), Some(Some(d)) if !ours.contains(d)));
        let mut immutable = None;
        let mut outcomes = HashMap::new();
        for tag in order {
            let held_digest = held.get(tag).cloned().flatten();
            if held_digest.as_ref().is_some_and(|d| !ours.contains(d)) && immutable.is_none() {
                let where_ = repository::Target::of(&self.repo, &login);
                immutable = Some(repository::mutability(identity, &where_).await == Some(Mutability::Immutable));
            }
            let result = match decide(held_digest.as_deref(), &ours, immutable.unwrap_or(false)) {
                Decision::Skip(digest) => Ok(Landed { digest, skipped: true }),
                Decision::Conflict { held } => Err(self.conflict(&target, tag, &held, &ours)),
                Decision::Push => {
                    let pushed = match self
                        .push_tag(engine, &mut login, &mut refreshed, region, identity, tag, idle)
                        .await
                    {
                        Ok(digest) => self.confirm(&login, tag, &digest, idle).await.map(|_| digest),
                        Err(e) => Err(e),
                    };
                    pushed.map(|digest| {
                        ours.insert(digest.clone());
                        Landed { digest, skipped: false }
                    })
                }
            };
            let outcome = outcome(&target, tag, result);
            crate::report::tag(&outcome, held_digest.as_deref(), "pushed");
            outcomes.insert(tag.clone(), outcome);
        }
        self.tags.iter().filter_map(|t| outcomes.remove(t)).collect()
    }

    /// Push one tag. A token the registry refuses (an expired one) is fetched again, once per destination,
    /// and the push retried with it.
    #[allow(clippy::too_many_arguments)]
    async fn push_tag(
        &self,
        engine: &Engine,
        login: &mut RegistryLogin,
        refreshed: &mut bool,
        region: &str,
        identity: &Identity,
        tag: &str,
        idle: Duration,
    ) -> Result<String> {
        let pushed = self.push_retried(engine, login, tag, idle).await;
        let refused = pushed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("refused the ECR token"));
        if !refused || *refreshed {
            return pushed;
        }
        *refreshed = true;
        let Ok(fresh) = crate::token::login(identity, region, Some(&login.registry)).await else {
            return pushed;
        };
        println!(
            "token: fetched again for {} after the registry refused it; retrying",
            login.registry
        );
        *login = fresh;
        self.push_retried(engine, login, tag, idle).await
    }

    /// One engine push, retried with jittered backoff when the registry's answer is transient: concurrent
    /// pushes of the same layers race in the registry ("blob unknown" on the manifest), and 429/5xx pass.
    async fn push_retried(&self, engine: &Engine, login: &RegistryLogin, tag: &str, idle: Duration) -> Result<String> {
        let attempt = || engine.push(login, &self.source.reference, &self.repo, tag, idle);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(3)
            .with_jitter();
        // PLUGIN_TIMEOUT bounds the whole push of a tag: no retry starts once it has passed.
        let deadline = std::time::Instant::now() + idle;
        attempt
            .retry(backoff)
            .when(|e| is_transient(e) && std::time::Instant::now() < deadline)
            .notify(|e, wait| {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                println!(
                    "retrying: {}/{}:{tag} in {:.1}s after: {first}",
                    login.registry,
                    self.repo,
                    wait.as_secs_f64()
                );
            })
            .await
    }

    /// Read the pushed tag back: it must hold the digest the engine reported, and that manifest's config must
    /// be the source image (its id). Two runs that push different images to one `repo:tag` through one engine
    /// share the local tag `<registry>/<repo>:<tag>`, and the other run may retag it between tag and push.
    async fn confirm(&self, login: &RegistryLogin, tag: &str, digest: &str, timeout: Duration) -> Result<()> {
        let client = RegistryClient::new(login, timeout)?;
        client.confirm_tag(&self.repo, tag, digest).await?;
        let manifest = client.manifest(&self.repo, digest).await?.ok_or_else(|| {
            anyhow!(
                "{}/{}@{digest} does not exist when read back: the registry did not store it",
                login.registry,
                self.repo
            )
        })?;
        match manifest.config_digest() {
            Some(config) if config != self.source.id => Err(anyhow!(
                "the engine pushed image {config} as {}/{}:{tag}, not PLUGIN_SOURCE={} ({}): another run retagged \
                 {}/{}:{tag} in the same Docker Engine during this push\n  fix: push different images to one \
                 repository and tag one at a time, or give each run its own tag",
                login.registry,
                self.repo,
                self.source.reference,
                self.source.id,
                login.registry,
                self.repo
            )),
            _ => Ok(()),
        }
    }

    async fn held_digests(&self, login: &RegistryLogin, timeout: Duration) -> Result<HashMap<String, Option<String>>> {
        let client = RegistryClient::new(login, timeout)?;
        let mut held = HashMap::new();
        for tag in &self.tags {
            held.insert(tag.clone(), client.manifest_digest(&self.repo, tag).await?);
        }
        Ok(held)
    }

    fn conflict(&self, target: &str, tag: &str, held: &str, ours: &BTreeSet<String>) -> anyhow::Error {
        let ours = match ours.iter().next() {
            Some(d) => format!("this image is {d}"),
            None => format!(
                "this image ({}) has no digest in {target} yet, so it cannot be the same image",
                self.source.reference
            ),
        };
        anyhow!(
            "tag {tag} already holds {held} in the immutable repository {} and {ours}\n  fix: push a new tag \
             (PLUGIN_TAGS), or make the repository MUTABLE",
            self.repo
        )
    }
}

/// A push failure that another attempt may not see: a registry-side race or overload.
fn is_transient(e: &anyhow::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    [
        "blob unknown",
        "digest invalid",
        "toomanyrequests",
        "too many requests",
        "503",
        "502",
        "500 internal",
        "connection reset",
    ]
    .iter()
    .any(|t| text.contains(t))
        && !text.contains("made no progress")
}

/// Every tag of one destination failed for one reason: each gets its outcome and its line.
pub fn fail_every_tag(target: &str, tags: &[String], e: &anyhow::Error, verb: &str) -> Vec<TagOutcome> {
    let text = format!("{e:#}");
    tags.iter()
        .map(|t| {
            let failed = outcome(target, t, Err(anyhow!("{text}")));
            crate::report::tag(&failed, None, verb);
            failed
        })
        .collect()
}

pub fn outcome(target: &str, tag: &str, result: Result<Landed>) -> TagOutcome {
    TagOutcome {
        reference: format!("{target}:{tag}"),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn registry_races_and_overloads_are_transient_and_the_rest_is_not() {
        let transient = |t: &str| is_transient(&anyhow!("{t}"));
        assert!(transient(
            "errors:\ndigest invalid\nmanifest blob unknown: blob unknown to registry"
        ));
        assert!(transient("toomanyrequests: Rate exceeded"));
        assert!(transient("received unexpected HTTP status: 503 Service Unavailable"));
        assert!(!transient("unauthorized: authentication required"));
        assert!(!transient(
            "name unknown: The repository with name 'app' does not exist"
        ));
        assert!(!transient("the push of x made no progress for 3s"));
    }

    #[test]
    fn each_tag_is_decided_on_its_own() {
        let ours = set(&["sha256:a"]);
        assert_eq!(decide(None, &ours, false), Decision::Push);
        assert_eq!(
            decide(Some("sha256:a"), &ours, false),
            Decision::Skip("sha256:a".into())
        );
        assert_eq!(decide(Some("sha256:a"), &ours, true), Decision::Skip("sha256:a".into()));
        assert_eq!(decide(Some("sha256:b"), &ours, false), Decision::Push);
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
