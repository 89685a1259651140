//! Push mode: a local image in the Docker Engine, pushed to every destination concurrently, tag by tag
//! through the shared per-tag loop (`tags`). The engine writes each tag ([`EnginePush`]); what it pushed is
//! read back and must be the source image. With `PLUGIN_SKIP_EXISTING` each tag is read first, so a tag
//! already at this image's digest is skipped (decided per tag, never once for all).

use super::context::{Context, Done};
use super::tags::{self, Destination, Writer};
use crate::aws::token::Renewal;
use crate::distribution::{BlobCopy, RegistryClient};
use crate::domain::login::{RegistryLogin, Relogin};
use crate::domain::source::{FileImage, LocalImage, Source};
use crate::domain::tag::TagOutcome;
use crate::engine::{Engine, Refused};
use crate::layout;
use crate::settings::{PushSettings, PushVia};
use anyhow::{Result, anyhow};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(settings: &PushSettings, ctx: &Context) -> Result<Done> {
    let reference = match (&settings.source, settings.via) {
        (Source::Engine(reference), PushVia::Engine) => reference,
        _ => return from_files(settings, ctx).await,
    };
    let timeout = ctx.common.timeout;
    let engine = Engine::connect(timeout).await?;
    let source = engine.source_image(reference).await?;
    let target = &settings.target;
    crate::report::push_plan(&source, &target.repo, &target.tags, &ctx.logins);
    if settings.dry_run {
        crate::report::dry_run(&target.repo, target.tags.len(), ctx.logins.len(), &settings.repository);
        return Ok(Done::DryRun { target: target.clone() });
    }
    crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    let outcomes = tags::every_destination(&ctx.logins, |login| push_to(&engine, &source, settings, login, ctx)).await;
    super::scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// Push an image the step reads from files (an OCI layout, an archive, or an engine image exported as
/// `docker save` would): its blobs uploaded through the registry client to every destination concurrently
/// (compressed once, before), children of an index first, then every tag through the per-tag loop, which
/// skips a tag already at this digest: a re-run uploads and writes nothing.
async fn from_files(settings: &PushSettings, ctx: &Context) -> Result<Done> {
    let timeout = ctx.common.timeout;
    let (mut prepared, mut early) = (false, BTreeSet::new());
    let opened = match &settings.source {
        Source::Engine(reference) => {
            let engine = Engine::connect(timeout).await?;
            let local = engine.source_image(reference).await?;
            // A re-run: every tag already holds this image (its config is the image id), so nothing is
            // exported, compressed or uploaded.
            if !settings.dry_run
                && let Some(outcomes) = already_there(&local, settings, ctx).await
            {
                // Nothing to write, but the scan gate still judges the image.
                return super::scan::done(settings.scan.as_ref(), &settings.target, outcomes, ctx).await;
            }
            // The export streams into the reader, which compresses each layer as it passes, and each
            // layer's upload follows its compression (the repositories exist first).
            if !settings.dry_run {
                let target = &settings.target;
                crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins)
                    .await?;
                prepared = true;
            }
            let (chunks, received) = tokio::sync::mpsc::channel(EXPORT_CHUNKS);
            let (announce, announced) = tokio::sync::mpsc::unbounded_channel();
            let announce = (!settings.dry_run).then_some(announce);
            let reading =
                blocking(move || layout::docker_archive_from(layout::Chunks::new(received), None, announce.as_ref()));
            let (exported, opened, landed) = tokio::join!(
                engine.export(reference, chunks, timeout),
                reading,
                upload_early(announced, &settings.target.repo, ctx)
            );
            exported?;
            early = landed;
            opened?
        }
        Source::Oci { path, reference } => {
            let (path, reference) = (path.clone(), reference.clone());
            blocking(move || layout::oci(&path, reference.as_deref())).await?
        }
        Source::OciArchive { path, reference } => {
            let (path, reference) = (path.clone(), reference.clone());
            blocking(move || layout::oci_archive(&path, reference.as_deref())).await?
        }
        Source::DockerArchive { path, reference } => {
            let (path, reference) = (path.clone(), reference.clone());
            blocking(move || layout::docker_archive(&path, reference.as_deref())).await?
        }
    };
    let image = &opened.image;
    let target = &settings.target;
    crate::report::files_plan(&settings.source, image, &target.repo, &target.tags, &ctx.logins);
    if settings.dry_run {
        crate::report::dry_run(&target.repo, target.tags.len(), ctx.logins.len(), &settings.repository);
        return Ok(Done::DryRun { target: target.clone() });
    }
    if !prepared {
        crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    }
    let outcomes = tags::every_destination(&ctx.logins, |login| files_to(image, settings, login, ctx, &early)).await;
    super::scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// When every tag in every destination already holds a manifest whose config is `image` (by id), the
/// outcomes of a run that has nothing to do; `None` as soon as one tag differs (or cannot be read).
async fn already_there(image: &LocalImage, settings: &PushSettings, ctx: &Context) -> Option<Vec<TagOutcome>> {
    let mut outcomes = Vec::new();
    for login in &ctx.logins {
        let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
        let label = format!("{}/{}", login.registry.host, settings.target.repo);
        for tag in &settings.target.tags {
            let manifest = client.manifest(&settings.target.repo, tag).await.ok()??;
            if manifest.config_digest().as_deref() != Some(image.id.as_str()) {
                return None;
            }
            let landed = crate::domain::tag::Landed {
                digest: manifest.digest,
                skipped: true,
            };
            outcomes.push(TagOutcome::new(&label, tag, Ok(landed)));
        }
    }
    for outcome in &outcomes {
        crate::report::tag(outcome, None, "pushed");
    }
    Some(outcomes)
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow!("reading the image's files stopped: {e}"))?
}

/// Uploads that follow each layer while it is compressed, into every destination (one attempt each,
/// nothing reported): a head start for [`files_to`], which then finds these blobs there. Returns the
/// `(registry host, digest)` of every blob that landed this way.
async fn upload_early(
    announced: tokio::sync::mpsc::UnboundedReceiver<layout::Growing>,
    repo: &str,
    ctx: &Context,
) -> BTreeSet<(String, String)> {
    let clients = ctx.head_start_clients();
    let progress: Vec<Arc<crate::report::Progress>> = clients
        .iter()
        .map(|(host, _)| Arc::new(crate::report::Progress::new(format!("{host}/{repo}"), 0)))
        .collect();
    let layers = futures_util::stream::unfold(announced, |mut rx| async move { rx.recv().await.map(|g| (g, rx)) });
    let landed = std::sync::Mutex::new(BTreeSet::new());
    let uploads = layers.for_each_concurrent(None, |growing| {
        let (clients, landed, progress) = (&clients, &landed, &progress);
        async move {
            let uploads = clients.iter().zip(progress).map(|((host, client), progress)| {
                let (path, done) = (growing.path.clone(), growing.done.clone());
                async move {
                    client
                        .upload_growing(repo, path, done, progress)
                        .await
                        .map(|()| host.clone())
                }
            });
            for host in futures_util::future::join_all(uploads).await.into_iter().flatten() {
                if let Some(blob) = growing.done.borrow().as_ref() {
                    landed.lock().expect("not poisoned").insert((host, blob.digest.clone()));
                }
            }
        }
    });
    let shown: Vec<&crate::report::Progress> = progress.iter().map(|p| p.as_ref()).collect();
    ticking(uploads, &shown).await;
    landed.into_inner().expect("not poisoned")
}

/// Run `work`, printing each of `shown` every few seconds while it runs (nothing in the first seconds).
async fn ticking<T>(work: impl std::future::Future<Output = T>, shown: &[&crate::report::Progress]) -> T {
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            shown.iter().for_each(|p| p.print());
        }
    };
    let done = tokio::select! {
        done = work => done,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    shown.iter().for_each(|p| p.finish());
    done
}

/// Blobs, then child manifests, then every tag, into one destination. `early` names the blobs uploaded
/// while they were compressed (counted as uploaded, not as already there).
async fn files_to(
    image: &FileImage,
    settings: &PushSettings,
    login: &RegistryLogin,
    ctx: &Context,
    early: &BTreeSet<(String, String)>,
) -> Vec<TagOutcome> {
    let repo = &settings.target.repo;
    let label = format!("{}/{repo}", login.registry.host);
    let renewal: Arc<dyn Relogin> = Arc::new(Renewal::of(&ctx.identity, login));
    let fail = |e: anyhow::Error| tags::fail_every_tag(&label, &settings.target.tags, &e, "pushed");
    let client = match RegistryClient::new(login, ctx.common.timeout) {
        Ok(c) => c.with_relogin(renewal),
        Err(e) => return fail(e),
    };
    let total = image.blobs.iter().map(|b| b.size).sum();
    let progress = Arc::new(crate::report::Progress::new(label.clone(), total));
    let (client_ref, progress_ref) = (&client, &progress);
    let uploads = futures_util::stream::iter(image.blobs.iter().map(|b| async move {
        let copy = client_ref.upload_file(repo, b, progress_ref).await?;
        // A blob uploaded while it was compressed is found there now, but this run uploaded it.
        let early = early.contains(&(login.registry.host.clone(), b.digest.clone()));
        Ok::<_, anyhow::Error>(if early { BlobCopy::Uploaded } else { copy })
    }))
    .buffer_unordered(PARALLEL_UPLOADS)
    .try_collect::<Vec<BlobCopy>>();
    let uploads = ticking(uploads, &[&progress]).await;
    let copied = match uploads {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let count = |k: BlobCopy| copied.iter().filter(|c| **c == k).count();
    crate::report::copied(
        &image.manifest.digest,
        &label,
        count(BlobCopy::Uploaded),
        0,
        count(BlobCopy::AlreadyThere),
    );
    for child in &image.children {
        let there = match client.manifest_digest(repo, &child.digest).await {
            Ok(d) => d.is_some(),
            Err(e) => return fail(e),
        };
        if !there && let Err(e) = client.put_manifest(repo, &child.digest, child).await {
            return fail(e);
        }
    }
    let to = Destination {
        login,
        repo,
        client: &client,
        identity: &ctx.identity,
    };
    tags::put_every_tag(&to, &settings.target.tags, &image.manifest, "pushed").await
}

/// Chunks of the engine's export held between the engine and the compression (a few MiB).
const EXPORT_CHUNKS: usize = 32;

/// Blobs uploaded at once per destination.
const PARALLEL_UPLOADS: usize = 4;

/// Every tag into one destination.
async fn push_to(
    engine: &Engine,
    source: &LocalImage,
    settings: &PushSettings,
    login: &RegistryLogin,
    ctx: &Context,
) -> Vec<TagOutcome> {
    let repo = &settings.target.repo;
    let renewal: Arc<dyn Relogin> = Arc::new(Renewal::of(&ctx.identity, login));
    let client = match RegistryClient::new(login, ctx.common.timeout) {
        Ok(c) => c.with_relogin(renewal.clone()),
        Err(e) => {
            let target = format!("{}/{repo}", login.registry.host);
            return tags::fail_every_tag(&target, &settings.target.tags, &e, "pushed");
        }
    };
    let to = Destination {
        login,
        repo,
        client: &client,
        identity: &ctx.identity,
    };
    let ours = source.known_digests(&to.label());
    let mut writer = EnginePush {
        engine,
        image: source,
        login: login.clone(),
        renewal,
        repo,
        client: &client,
        timeout: ctx.common.timeout,
        verb: "pushed",
    };
    tags::write_every_tag(&to, &settings.target.tags, ours, settings.skip_existing, &mut writer).await
}

/// Writes a tag by tagging the local image `<registry>/<repo>:<tag>` and pushing it through the engine,
/// under the one retry policy; a push the registry refuses renews the token once. What the engine pushed
/// must be this image: its manifest's config is the image id (another run may retag the shared local tag
/// between the tag and the push). Also promote's writer through the engine.
pub struct EnginePush<'a> {
    pub engine: &'a Engine,
    pub image: &'a LocalImage,
    pub login: RegistryLogin,
    pub renewal: Arc<dyn Relogin>,
    pub repo: &'a str,
    pub client: &'a RegistryClient,
    pub timeout: Duration,
    /// `pushed`, or `promoted` when promote writes through the engine.
    pub verb: &'static str,
}

impl EnginePush<'_> {
    async fn push(&self, tag: &str) -> Result<String> {
        let what = format!("{}/{}:{tag}", self.login.registry, self.repo);
        let attempt = || {
            self.engine
                .push(&self.login, &self.image.reference, self.repo, tag, self.timeout)
        };
        crate::retry::run(&what, self.timeout, attempt, is_transient)
            .await
            .map_err(|gave_up| gave_up.error)
    }
}

impl Writer for EnginePush<'_> {
    fn verb(&self) -> &'static str {
        self.verb
    }

    fn action(&self) -> &'static str {
        if self.verb == "pushed" { "push" } else { "promote to" }
    }

    async fn write(&mut self, tag: &str) -> Result<String> {
        let digest = match self.push(tag).await {
            Err(e) if e.is::<Refused>() => match self.renewal.relogin().await {
                Ok(fresh) => {
                    crate::report::token_refreshed(&self.login.registry.host, "the registry refused it");
                    self.login = fresh;
                    self.push(tag).await?
                }
                Err(_) => return Err(e),
            },
            pushed => pushed?,
        };
        let manifest = self.client.manifest(self.repo, &digest).await?.ok_or_else(|| {
            anyhow!(
                "{}/{}@{digest} does not exist when read back, although the engine reported the push done: the \
                 registry did not store it\n  fix: check the registry (or the proxy in front of it) at {}, then \
                 run again",
                self.login.registry,
                self.repo,
                self.login.registry
            )
        })?;
        match manifest.config_digest() {
            Some(config) if config != self.image.id => Err(anyhow!(
                "the engine pushed image {config} as {registry}/{repo}:{tag}, not PLUGIN_SOURCE={} ({}): another run \
                 retagged {registry}/{repo}:{tag} in the same Docker Engine during this push\n  fix: push different \
                 images to one repository and tag one at a time, or give each run its own tag",
                self.image.reference,
                self.image.id,
                registry = self.login.registry,
                repo = self.repo,
            )),
            _ => Ok(digest),
        }
    }

    fn ours(&self, ours: &BTreeSet<String>) -> String {
        match ours.iter().next() {
            Some(d) => format!("this image is {d}"),
            None => format!(
                "this image ({}) has no digest in {}/{} yet, so it cannot be the same image",
                self.image.reference, self.login.registry, self.repo
            ),
        }
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
        // Another run's push removed the shared local tag between this run's tag and push: tag again.
        "does not exist locally",
        "no such image",
    ]
    .iter()
    .any(|t| text.contains(t))
        && !text.contains("made no progress")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
