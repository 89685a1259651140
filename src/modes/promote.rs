//! Promote mode: gives an image that already sits in a registry new repositories, tags, accounts and
//! regions, without rebuilding.
//!
//! Registry to registry, fastest way first: within the same repository only a manifest is written; within
//! the same registry blobs are mounted across repositories (uploaded where the registry refuses, as ECR
//! does without blob mounting); between registries blobs stream from source to target, several at once,
//! and with several destinations each blob is read from the source once and sent to all of them at once.
//! Manifest bytes are copied exactly, so digests stay the same; an index is copied whole, every child
//! manifest first. Destinations run concurrently; tags go through the shared per-tag loop (`tags`), which
//! leaves a tag already at the source's digest alone. `PLUGIN_PROMOTE_VIA=engine` pulls the image and
//! writes every tag with push's engine writer instead.

use super::context::{Context, Done};
use super::referrers;
use super::write::engine_push::EnginePush;
use super::write::{Destination, Verb, progress, scan, tags};
use crate::aws;
use crate::domain::login::{CredentialLookup, RegistryLogin};
use crate::domain::manifest::Manifest;
use crate::domain::reference::Reference;
use crate::domain::registry::Registry;
use crate::domain::tag::TagOutcome;
use crate::domain::target::label;
use crate::engine::Engine;
use crate::outputs::docker_config;
use crate::registry::Foreign;
use crate::registry::RegistryClient;
use crate::report::Progress;
use crate::settings::{PromoteSettings, PromoteVia};
use anyhow::{Result, anyhow, bail};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub async fn run(settings: &PromoteSettings, ctx: &Context) -> Result<Done> {
    let access = source_access(settings, ctx).await?;
    let source = match &access {
        SourceAccess::Signed(login) => RegistryClient::new(login, ctx.common.timeout)?,
        SourceAccess::Foreign(host, foreign) => {
            crate::report::source_foreign(&host.host, foreign.credentials.as_ref().map(|c| c.origin.as_str()));
            RegistryClient::foreign(&host.host, foreign.clone(), ctx.common.timeout)?
        }
    };
    let (repo, reference) = (&settings.source.repo, settings.source.reference.to_string());
    let source_label = match &settings.source.host {
        Some(_) => settings.source.to_string(),
        None => label(&source.host, &settings.source.to_string()),
    };
    let manifest = source
        .manifest(repo, &reference)
        .await
        .map_err(|e| e.context(format!("reading the source {source_label}")))?
        .ok_or_else(|| {
            anyhow!(
                "PLUGIN_SOURCE={}: no such image in {} (repository {repo}, {} {reference}): check the name, or that it \
             was pushed\n  fix: correct PLUGIN_SOURCE, or push the image first",
                settings.source,
                source.host,
                if matches!(settings.source.reference, Reference::Digest(_)) {
                    "digest"
                } else {
                    "tag"
                },
            )
        })?;
    let target = &settings.target;
    crate::report::promote_plan(&source_label, &manifest, &target.repo, &target.tags, &ctx.logins);
    if settings.via == PromoteVia::Engine && manifest.is_index() {
        bail!(
            "PLUGIN_SOURCE={} is a multi-platform index ({}), and the Docker Engine pulls and pushes one platform \
             of it: nothing was written\n  fix: leave PLUGIN_PROMOTE_VIA unset (registry), which copies the index \
             whole, every platform",
            settings.source,
            manifest.digest
        );
    }
    // Found (and ECR's limit checked) before anything is written.
    let found = referrers::discover(&source, repo, &manifest.digest, &settings.referrers)
        .await
        .map_err(|e| e.context(format!("finding the referrers of the source {source_label}")))?;
    if !found.is_empty() {
        crate::report::referrers_found(found.len(), &format!("{source_label} ({})", manifest.digest));
    }
    if settings.dry_run {
        crate::report::dry_run(&target.repo, target.tags.len(), ctx.logins.len(), &settings.repository);
        return Ok(Done::DryRun { target: target.clone() });
    }
    aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    let outcomes = match settings.via {
        PromoteVia::Registry => {
            // Each destination's bytes, counted by the fan-out and by its own copy, shown while both run.
            let total = match manifest.is_index() {
                // An index's children are read as it is copied: the total is not known before.
                true => 0,
                false => manifest.references().map_or(0, |r| r.iter().map(|d| d.size).sum()),
            };
            let progress: BTreeMap<String, Arc<Progress>> = ctx
                .logins
                .iter()
                .map(|l| {
                    let shown = label(&l.registry.host, &target.repo);
                    (l.registry.host.clone(), Arc::new(Progress::new(shown, total)))
                })
                .collect();
            let copies = async {
                let landed = fan_out(settings, &source, &manifest, ctx, &progress).await;
                let (source, manifest, landed, progress) = (&source, &manifest, &landed, &progress);
                tags::every_destination(&ctx.logins, |login| async move {
                    let landed = landed.get(&login.registry.host).cloned().unwrap_or_default();
                    let progress = &progress[&login.registry.host];
                    copy_to(settings, source, manifest, login, ctx, &landed, progress).await
                })
                .await
            };
            let shown: Vec<&Progress> = progress.values().map(|p| p.as_ref()).collect();
            progress::ticking(copies, &shown).await
        }
        PromoteVia::Engine => {
            let signed = match &access {
                SourceAccess::Signed(login) => Some(login),
                SourceAccess::Foreign(..) => None,
            };
            tags::every_destination(&ctx.logins, |login| {
                via_engine(settings, &source.host, signed, &manifest, login, ctx)
            })
            .await
        }
    };
    if !found.is_empty() && outcomes.iter().all(|o| o.result.is_ok()) {
        for login in &ctx.logins {
            let client = RegistryClient::new(login, ctx.common.timeout)?;
            let to = label(&login.registry.host, &target.repo);
            let (copied, there) = referrers::copy(&client, &target.repo, &source, repo, &found)
                .await
                .map_err(|e| e.context(format!("copying the referrers of {} to {to}", manifest.digest)))?;
            crate::report::referrers_summary(&to, copied, there);
        }
    }
    scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// How the source is read: with an ECR token, or (a registry outside ECR) with the credentials the user
/// keeps for it, or none.
enum SourceAccess {
    Signed(RegistryLogin),
    Foreign(Registry, Foreign),
}

/// How to read the source: its own host, else the (first) target registry. The run's ECR token goes only
/// to the destinations, to hosts that are ECR by name, and to a source whose account the read role names
/// (with that role's token); any other host is read with the credentials the docker config holds for it,
/// or anonymously. One token for its region.
async fn source_access(settings: &PromoteSettings, ctx: &Context) -> Result<SourceAccess> {
    let host = match &settings.source.host {
        Some(h) => Registry::parse(h).map_err(|e| anyhow!("PLUGIN_SOURCE host: expected {e}"))?,
        None => ctx.logins[0].registry.clone(),
    };
    let destination = ctx.logins.iter().any(|l| l.registry == host);
    if settings.read_role.is_none() && !destination && host.ecr.is_none() {
        let ambient = ctx.common.ambient.clone();
        let lookup: CredentialLookup =
            Arc::new(move |h: &str| docker_config::credentials_for(h, &ambient).ok().flatten());
        let (name, ambient) = (host.host.clone(), ctx.common.ambient.clone());
        let credentials = tokio::task::spawn_blocking(move || docker_config::credentials_for(&name, &ambient))
            .await
            .map_err(|e| anyhow!("reading the docker config stopped: {e}"))?
            .map_err(|e| e.context(format!("finding credentials for the source {}", host.host)))?;
        return Ok(SourceAccess::Foreign(host, Foreign { credentials, lookup }));
    }
    let region = settings
        .read_region
        .clone()
        .or_else(|| host.ecr.as_ref().map(|e| e.region.clone()))
        .unwrap_or_else(|| ctx.common.region.clone());
    let reuse = ctx.logins.iter().find(|l| l.registry == host);
    let login = match (&settings.read_role, reuse) {
        (None, Some(login)) if settings.read_region.is_none() => login.clone(),
        (None, _) => aws::token::login(&ctx.identity, &region, Some(&host)).await?,
        (Some(hop), _) => {
            let session = &ctx.common.credentials.session_name;
            let reader = aws::assume_from(&ctx.identity, hop, session).await?;
            crate::report::read_role(&reader.how, &reader.arn);
            aws::token::login(&reader, &region, Some(&host)).await?
        }
    };
    Ok(SourceAccess::Signed(login))
}

/// Several destinations in other registries than the source's: each blob of the image read from the
/// source once and sent to all of them at once (a head start: each destination's own copy then finds
/// these blobs there). The blobs that landed, by destination host.
async fn fan_out(
    settings: &PromoteSettings,
    source: &RegistryClient,
    manifest: &Manifest,
    ctx: &Context,
    progress: &BTreeMap<String, Arc<Progress>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut landed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let clients: Vec<(String, RegistryClient)> = ctx
        .head_start_clients()
        .into_iter()
        .filter(|(_, c)| !c.same_registry(source))
        .collect();
    let Ok(blobs) = manifest.references() else {
        return landed;
    };
    if clients.len() < 2 || manifest.is_index() {
        return landed;
    }
    let targets: Vec<crate::registry::FanOutTarget> = clients
        .iter()
        .map(|(host, client)| crate::registry::FanOutTarget {
            client,
            repo: settings.target.repo.as_str(),
            progress: &progress[host],
        })
        .collect();
    let copies = futures_util::stream::iter(blobs.iter().map(|blob| {
        let targets = &targets;
        async move {
            let to = crate::registry::fan_out(source, &settings.source.repo, blob, targets).await;
            (blob.digest.clone(), to)
        }
    }))
    .buffer_unordered(FAN_OUT_BLOBS)
    .collect::<Vec<_>>()
    .await;
    for (digest, to) in copies {
        for i in to {
            landed.entry(clients[i].0.clone()).or_default().insert(digest.clone());
        }
    }
    landed
}

/// Blobs fanned out at once.
const FAN_OUT_BLOBS: usize = 4;

/// Copy the image to one destination (its bytes counted in `progress`) and give it every tag; `landed`
/// names the blobs the fan-out already put there.
async fn copy_to(
    settings: &PromoteSettings,
    source: &RegistryClient,
    manifest: &Manifest,
    login: &RegistryLogin,
    ctx: &Context,
    landed: &BTreeSet<String>,
    progress: &Arc<Progress>,
) -> Vec<TagOutcome> {
    let repo = &settings.target.repo;
    let label = label(&login.registry.host, repo);
    let fail_all = |e: anyhow::Error| tags::fail_every_tag(&label, &settings.target.tags, &e, Verb::Promoted);
    let to = match Destination::open(login, repo, ctx) {
        Ok(to) => to,
        Err(e) => return fail_all(e),
    };
    let client = &to.client;
    let same_repo = client.same_registry(source) && settings.source.repo == *repo;
    if !same_repo
        && let Err(e) = client
            .copy_image_after(repo, source, &settings.source.repo, manifest, landed, progress)
            .await
    {
        let from = crate::domain::target::label(&source.host, &settings.source.repo);
        return fail_all(e.context(format!("copying {from} to {label}")));
    }
    tags::put_every_tag(&to, &settings.target.tags, manifest, Verb::Promoted).await
}

/// Pull the source through the engine, then write every tag to one destination with push's engine writer.
async fn via_engine(
    settings: &PromoteSettings,
    source_host: &str,
    source_login: Option<&RegistryLogin>,
    manifest: &Manifest,
    login: &RegistryLogin,
    ctx: &Context,
) -> Vec<TagOutcome> {
    let repo = &settings.target.repo;
    let timeout = ctx.common.timeout;
    let label = label(&login.registry.host, repo);
    let pulled = async {
        let engine = Engine::connect(timeout).await?;
        let local = engine
            .pull(
                source_host,
                source_login,
                &settings.source.repo,
                &settings.source.reference,
                timeout,
            )
            .await?;
        let image = engine.source_image(&local).await?;
        let to = Destination::open(login, repo, ctx)?;
        anyhow::Ok((engine, image, to))
    }
    .await;
    let (engine, image, to) = match pulled {
        Ok(p) => p,
        Err(e) => return tags::fail_every_tag(&label, &settings.target.tags, &e, Verb::Promoted),
    };
    let mut writer = EnginePush::new(&engine, &image, &to, timeout, Verb::Promoted);
    let ours = BTreeSet::from([manifest.digest.clone()]);
    tags::write_every_tag(&to, &settings.target.tags, ours, true, &mut writer).await
}
