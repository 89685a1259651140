//! Promote mode: gives an image that already sits in a registry new repositories, tags, accounts and
//! regions, without rebuilding.
//!
//! Registry to registry, fastest way first: within the same repository only a manifest is written; within
//! the same registry blobs are mounted across repositories (uploaded where the registry refuses, as ECR
//! does without blob mounting); between registries blobs stream from source to target, several at once.
//! Manifest bytes are copied exactly, so digests stay the same; an index is copied whole, every child
//! manifest first. Destinations run concurrently. `PLUGIN_PROMOTE_VIA=engine` pulls, tags and pushes
//! through the Docker Engine instead.

use crate::credentials::{self, Identity};
use crate::engine::Engine;
use crate::push::{Landed, TagOutcome, fail_every_tag, outcome};
use crate::reference::{ImageRef, Reference};
use crate::registry::Registry;
use crate::registry_client::{BlobCopy, Manifest, Refresh, RegistryClient};
use crate::repository::{self, Mutability};
use crate::settings::{PromoteSettings, Settings, Via};
use crate::token::{self, RegistryLogin};
use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use std::time::Duration;

/// Blobs copied at once per manifest.
const PARALLEL_BLOBS: usize = 4;

/// What a promote run will do: one source image, every destination's repository and tags.
pub struct PromotePlan {
    pub source: ImageRef,
    pub source_login: RegistryLogin,
    pub repo: String,
    pub tags: Vec<String>,
}

impl PromotePlan {
    fn source_label(&self) -> String {
        format!("{}/{}", self.source_login.registry.host, self.source.repo)
    }
}

/// Run promote mode: resolve the source, prepare repositories, copy to every destination concurrently.
/// `None` for a dry run.
pub async fn run(
    settings: &Settings,
    identity: &Identity,
    logins: &[RegistryLogin],
) -> Result<Option<Vec<TagOutcome>>> {
    let promote = settings.promote.as_ref().expect("promote mode has promote settings");
    let plan = plan(settings, promote, identity, logins).await?;
    let source = RegistryClient::new(&plan.source_login, settings.timeout)?;
    let reference = plan.source.reference.to_string();
    let manifest = source.manifest(&plan.source.repo, &reference).await?.ok_or_else(|| {
        anyhow!(
            "PLUGIN_SOURCE={}: no such image in {} (repository {}, {} {reference}): check the name, or that it was pushed",
            plan.source,
            plan.source_login.registry,
            plan.source.repo,
            if matches!(plan.source.reference, Reference::Digest(_)) { "digest" } else { "tag" },
        )
    })?;
    crate::report::promote_plan(&plan, &manifest, logins);
    if settings.dry_run {
        crate::report::dry_run(&plan.repo, plan.tags.len(), logins, &settings.repository);
        return Ok(None);
    }
    repository::prepare_all(identity, &settings.target.repo, &settings.repository, logins).await?;
    let copies = logins
        .iter()
        .zip(&settings.target.destinations)
        .map(|(login, destination)| async {
            match promote.via {
                Via::Registry => {
                    let refresh = refresher(identity, &destination.region, login);
                    copy_to(&plan, &source, &manifest, login, refresh, identity, settings.timeout).await
                }
                Via::Engine => via_engine(&plan, login, settings.timeout).await,
            }
        });
    let outcomes = futures_util::future::join_all(copies).await;
    Ok(Some(outcomes.into_iter().flatten().collect()))
}

/// Where the source is and how to read it: its own host, else the (first) target registry; with the
/// read role when given; one token for its region.
async fn plan(
    settings: &Settings,
    promote: &PromoteSettings,
    identity: &Identity,
    logins: &[RegistryLogin],
) -> Result<PromotePlan> {
    let host = match &promote.source.host {
        Some(h) => Registry::parse(h).map_err(|e| anyhow!("PLUGIN_SOURCE host: expected {e}"))?,
        None => logins[0].registry.clone(),
    };
    let region = promote
        .read_region
        .clone()
        .or_else(|| host.ecr.as_ref().map(|e| e.region.clone()))
        .unwrap_or_else(|| settings.region.clone());
    let reuse = logins.iter().find(|l| l.registry == host);
    let source_login = match (&promote.read_role, reuse) {
        (None, Some(login)) if promote.read_region.is_none() => login.clone(),
        (None, _) => token::login(identity, &region, Some(&host)).await?,
        (Some(hop), _) => {
            let reader = credentials::assume_from(identity, hop, &settings.credentials.session_name).await?;
            println!("source: read with {} (confirmed: {})", reader.how, reader.arn);
            token::login(&reader, &region, Some(&host)).await?
        }
    };
    Ok(PromotePlan {
        source: promote.source.clone(),
        source_login,
        repo: settings.target.repo.clone(),
        tags: settings.target.tags.clone(),
    })
}

/// Fetches a new token for a destination, for a registry that answers 401 (an expired token).
fn refresher(identity: &Identity, region: &str, login: &RegistryLogin) -> Refresh {
    let (identity, region, registry) = (identity.clone(), region.to_string(), login.registry.clone());
    std::sync::Arc::new(move || {
        let (identity, region, registry) = (identity.clone(), region.clone(), registry.clone());
        Box::pin(async move { token::login(&identity, &region, Some(&registry)).await })
    })
}

/// Copy the image to one destination and give it every tag.
async fn copy_to(
    plan: &PromotePlan,
    source: &RegistryClient,
    manifest: &Manifest,
    login: &RegistryLogin,
    refresh: Refresh,
    identity: &Identity,
    timeout: Duration,
) -> Vec<TagOutcome> {
    let target_label = format!("{}/{}", login.registry.host, plan.repo);
    let fail_all = |e: anyhow::Error| fail_every_tag(&target_label, &plan.tags, &e, "promoted");
    let target = match RegistryClient::new(login, timeout) {
        Ok(t) => t.with_refresh(refresh),
        Err(e) => return fail_all(e),
    };
    let same_repo = target.same_registry(source) && plan.source.repo == plan.repo;
    if !same_repo && let Err(e) = copy_content(&target, &plan.repo, source, &plan.source.repo, manifest).await {
        return fail_all(e.context(format!("copying {} to {target_label}", plan.source_label())));
    }
    let mut outcomes = Vec::new();
    let mut immutable = None;
    for tag in &plan.tags {
        let result = give_tag(&target, &plan.repo, tag, manifest, &mut immutable, identity, login).await;
        let outcome = outcome(&target_label, tag, result);
        crate::report::tag(&outcome, None, "promoted");
        outcomes.push(outcome);
    }
    outcomes
}

/// Make every blob and child manifest `manifest` points at present in the target repository.
async fn copy_content(
    target: &RegistryClient,
    repo: &str,
    source: &RegistryClient,
    source_repo: &str,
    manifest: &Manifest,
) -> Result<()> {
    if manifest.is_index() {
        for child in manifest.references()? {
            let child_manifest = source.manifest(source_repo, &child.digest).await?.with_context(|| {
                format!(
                    "the index names {}, which the source registry does not have",
                    child.digest
                )
            })?;
            Box::pin(copy_content(target, repo, source, source_repo, &child_manifest)).await?;
            target.put_manifest(repo, &child.digest, &child_manifest).await?;
        }
        return Ok(());
    }
    let blobs = manifest.references()?;
    let copied: Vec<BlobCopy> = stream::iter(blobs.iter().map(|b| target.copy_blob(repo, source, source_repo, b)))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect()
        .await?;
    let count = |k: BlobCopy| copied.iter().filter(|c| **c == k).count();
    println!(
        "copied: {} blob(s) of {} to {}/{repo}: {} uploaded, {} mounted, {} already there",
        blobs.len(),
        manifest.digest,
        target.host,
        count(BlobCopy::Uploaded),
        count(BlobCopy::Mounted),
        count(BlobCopy::AlreadyThere)
    );
    Ok(())
}

/// Put the manifest under `tag`, unless the tag already holds it. A tag held by another digest in an
/// immutable repository is an error naming both digests.
async fn give_tag(
    target: &RegistryClient,
    repo: &str,
    tag: &str,
    manifest: &Manifest,
    immutable: &mut Option<bool>,
    identity: &Identity,
    login: &RegistryLogin,
) -> Result<Landed> {
    match target.manifest_digest(repo, tag).await? {
        Some(held) if held == manifest.digest => {
            return Ok(Landed {
                digest: held,
                skipped: true,
            });
        }
        Some(held) => {
            if immutable.is_none() {
                let where_ = repository::Target::of(repo, login);
                *immutable = Some(repository::mutability(identity, &where_).await == Some(Mutability::Immutable));
            }
            if *immutable == Some(true) {
                bail!(
                    "tag {tag} already holds {held} in the immutable repository {repo} and the source is {}\n  fix: \
                     promote to a new tag (PLUGIN_TAGS), or make the repository MUTABLE",
                    manifest.digest
                );
            }
        }
        None => {}
    }
    target.put_manifest(repo, tag, manifest).await?;
    target.confirm_tag(repo, tag, &manifest.digest).await?;
    Ok(Landed {
        digest: manifest.digest.clone(),
        skipped: false,
    })
}

/// Pull the source through the engine, then push every tag to one destination.
async fn via_engine(plan: &PromotePlan, login: &RegistryLogin, timeout: Duration) -> Vec<TagOutcome> {
    let target_label = format!("{}/{}", login.registry.host, plan.repo);
    let pulled = async {
        let engine = Engine::connect(timeout).await?;
        let local = engine
            .pull(&plan.source_login, &plan.source.repo, &plan.source.reference, timeout)
            .await?;
        anyhow::Ok((engine, local))
    }
    .await;
    let (engine, local) = match pulled {
        Ok(p) => p,
        Err(e) => return fail_every_tag(&target_label, &plan.tags, &e, "promoted"),
    };
    let mut outcomes = Vec::new();
    for tag in &plan.tags {
        let result = async {
            let digest = engine.push(login, &local, &plan.repo, tag, timeout).await?;
            RegistryClient::new(login, timeout)?
                .confirm_tag(&plan.repo, tag, &digest)
                .await?;
            Ok(Landed { digest, skipped: false })
        }
        .await;
        let outcome = outcome(&target_label, tag, result);
        crate::report::tag(&outcome, None, "promoted");
        outcomes.push(outcome);
    }
    outcomes
}
