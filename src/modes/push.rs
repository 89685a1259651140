//! Push mode: a local image in the Docker Engine, pushed to every destination concurrently, tag by tag
//! through the shared per-tag loop (`tags`). The engine writes each tag ([`EnginePush`]); what it pushed is
//! read back and must be the source image. With `PLUGIN_SKIP_EXISTING` each tag is read first, so a tag
//! already at this image's digest is skipped (decided per tag, never once for all).

use super::context::{Context, Done};
use super::tags::{self, Destination, Writer};
use crate::aws::token::Renewal;
use crate::distribution::{BlobCopy, RegistryClient};
use crate::domain::login::{RegistryLogin, Relogin};
use crate::domain::source::{BaseLayers, FileImage, LocalImage, PulledImage, Source, base_of, engine_is_faster};
use crate::domain::tag::TagOutcome;
use crate::engine::{Engine, Refused};
use crate::layout;
use crate::settings::{PushSettings, PushVia};
use anyhow::{Result, anyhow};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(settings: &PushSettings, ctx: &Context) -> Result<Done> {
    let opened = match &settings.source {
        Source::Engine(reference) => return from_engine(reference, settings, ctx).await,
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
    let nothing = BTreeSet::new();
    let sent = Sent {
        early: &nothing,
        base: None,
        prepared: false,
    };
    upload(&opened, settings, ctx, &sent).await
}

/// An image in the engine: through the engine (`docker push`) or the step's own transfer, as
/// `PLUGIN_PUSH_VIA` says (`auto`: the engine only for an image mostly made of a base every destination
/// holds).
async fn from_engine(reference: &str, settings: &PushSettings, ctx: &Context) -> Result<Done> {
    let engine = Engine::connect(ctx.common.timeout).await?;
    let local = engine.source_image(reference).await?;
    let hosts: Vec<String> = ctx.logins.iter().map(|l| l.registry.host.clone()).collect();
    // The image it was built on, when that came from a registry this run writes to.
    let base = match settings.via {
        PushVia::Engine => None,
        PushVia::Auto | PushVia::Registry => base_of(&local, engine.pulled_images(&hosts).await),
    };
    let through_engine = match settings.via {
        PushVia::Engine => true,
        PushVia::Registry => false,
        PushVia::Auto => engine_is_faster(&local, base.as_ref(), &hosts)
            .inspect(|why| crate::report::via_engine(why))
            .is_some(),
    };
    if through_engine {
        engine_push(&engine, &local, settings, ctx).await
    } else {
        own_transfer(&engine, &local, base, settings, ctx).await
    }
}

/// `docker push` through the engine, tag by tag into every destination.
async fn engine_push(engine: &Engine, source: &LocalImage, settings: &PushSettings, ctx: &Context) -> Result<Done> {
    let target = &settings.target;
    crate::report::push_plan(source, &target.repo, &target.tags, &ctx.logins);
    if settings.dry_run {
        crate::report::dry_run(&target.repo, target.tags.len(), ctx.logins.len(), &settings.repository);
        return Ok(Done::DryRun { target: target.clone() });
    }
    crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    let outcomes = tags::every_destination(&ctx.logins, |login| push_to(engine, source, settings, login, ctx)).await;
    super::scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// The step's own transfer of an engine image: exported as `docker save` would, each layer compressed as
/// it streams out and its upload following its compression, then uploaded like an image from files.
/// Layers of `base` (pulled from a registry this run writes to) are sent as that registry holds them (so
/// the image shares its base's digests), not compressed here.
async fn own_transfer(
    engine: &Engine,
    local: &LocalImage,
    base: Option<PulledImage>,
    settings: &PushSettings,
    ctx: &Context,
) -> Result<Done> {
    let timeout = ctx.common.timeout;
    // A re-run: every tag already holds this image (its config is the image id), so nothing is exported,
    // compressed or uploaded.
    if !settings.dry_run
        && let Some(outcomes) = already_there(local, settings, ctx).await
    {
        // Nothing to write, but the scan gate still judges the image.
        return super::scan::done(settings.scan.as_ref(), &settings.target, outcomes, ctx).await;
    }
    let base = match base {
        Some(base) => base_layers(base, local, ctx).await,
        None => None,
    };
    // The repositories exist before the first upload that follows a compression.
    if !settings.dry_run {
        let target = &settings.target;
        crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    }
    let (chunks, received) = tokio::sync::mpsc::channel(EXPORT_CHUNKS);
    let (announce, announced) = tokio::sync::mpsc::unbounded_channel();
    // With a base, which layer is which is known only once it has been read: no upload follows a
    // compression, since it could be a base layer the registry has.
    let announce = (!settings.dry_run && base.is_none()).then_some(announce);
    let reading_base = base.clone();
    let reading = blocking(move || {
        let chunks = layout::Chunks::new(received);
        layout::docker_archive_from(chunks, None, announce.as_ref(), reading_base.as_ref())
    });
    let (exported, opened, early) = tokio::join!(
        engine.export(&local.reference, chunks, timeout),
        reading,
        upload_early(announced, &settings.target.repo, ctx)
    );
    exported?;
    let sent = Sent {
        early: &early,
        base: base.as_ref(),
        prepared: true,
    };
    upload(&opened?, settings, ctx, &sent).await
}

/// An image read into files, pushed: its blobs uploaded through the registry client to every destination
/// concurrently (compressed once, before), children of an index first, then every tag through the per-tag
/// loop, which skips a tag already at this digest: a re-run uploads and writes nothing.
async fn upload(opened: &layout::Opened, settings: &PushSettings, ctx: &Context, sent: &Sent<'_>) -> Result<Done> {
    let image = &opened.image;
    let target = &settings.target;
    crate::report::files_plan(&settings.source, image, &target.repo, &target.tags, &ctx.logins);
    if settings.dry_run {
        crate::report::dry_run(&target.repo, target.tags.len(), ctx.logins.len(), &settings.repository);
        return Ok(Done::DryRun { target: target.clone() });
    }
    if !sent.prepared {
        crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    }
    let outcomes = tags::every_destination(&ctx.logins, |login| files_to(image, settings, login, ctx, sent)).await;
    super::scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// What a push from files knows of its blobs before it uploads them.
struct Sent<'a> {
    /// `(registry host, digest)` of the blobs uploaded while they were compressed.
    early: &'a BTreeSet<(String, String)>,
    /// Where the layers the image borrows from its base are ([`FileImage::borrowed`]).
    base: Option<&'a BaseLayers>,
    /// Whether the repositories were prepared already (before uploads that followed a compression).
    prepared: bool,
}

/// The layers `local` shares with `base`, the image it was built on, as the registry it was pulled from
/// holds them. `None` when its manifest cannot be read there, or names no layer the step can borrow (then
/// every layer is compressed here, as without a base).
async fn base_layers(base: PulledImage, local: &LocalImage, ctx: &Context) -> Option<BaseLayers> {
    let login = ctx.logins.iter().find(|l| l.registry.host == base.host)?;
    let read = async {
        let client = RegistryClient::new(login, ctx.common.timeout)?;
        let manifest = client.image_manifest(&base.repo, &base.digest, &base.image_id).await?;
        let manifest = manifest.ok_or_else(|| anyhow!("the registry no longer has it"))?;
        BaseLayers::new(base.clone(), &manifest).map_err(|e| anyhow!(e))
    };
    match read.await {
        Ok(layers) => {
            crate::report::base(&layers, local.layers.len());
            Some(layers)
        }
        Err(e) => {
            crate::report::base_unused(&base.reference(), &e);
            None
        }
    }
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
    super::progress::ticking(uploads, &shown).await;
    landed.into_inner().expect("not poisoned")
}

/// Blobs, then child manifests, then every tag, into one destination. Blobs uploaded while they were
/// compressed are counted as uploaded, not as already there; the layers borrowed from the base are
/// found there, mounted from the base's repository, or streamed from the base's registry.
async fn files_to(
    image: &FileImage,
    settings: &PushSettings,
    login: &RegistryLogin,
    ctx: &Context,
    sent: &Sent<'_>,
) -> Vec<TagOutcome> {
    let repo = &settings.target.repo;
    let label = format!("{}/{repo}", login.registry.host);
    let renewal: Arc<dyn Relogin> = Arc::new(Renewal::of(&ctx.identity, login));
    let fail = |e: anyhow::Error| tags::fail_every_tag(&label, &settings.target.tags, &e, "pushed");
    let client = match RegistryClient::new(login, ctx.common.timeout) {
        Ok(c) => c.with_relogin(renewal),
        Err(e) => return fail(e),
    };
    let base = match sent.base {
        Some(base) => match base_client(base, ctx) {
            Ok(client) => Some((base, client)),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let total = image.blobs.iter().map(|b| b.size).sum::<u64>() + image.borrowed.iter().map(|d| d.size).sum::<u64>();
    let progress = Arc::new(crate::report::Progress::new(label.clone(), total));
    let (client_ref, progress_ref, base_ref) = (&client, &progress, &base);
    let files = image.blobs.iter().map(|b| {
        async move {
            let copy = client_ref.upload_file(repo, b, progress_ref).await?;
            // A blob uploaded while it was compressed is found there now, but this run uploaded it.
            let early = sent.early.contains(&(login.registry.host.clone(), b.digest.clone()));
            Ok::<_, anyhow::Error>(if early { BlobCopy::Uploaded } else { copy })
        }
        .boxed()
    });
    let borrowed = image.borrowed.iter().map(|d| {
        async move {
            let (base, from) = base_ref
                .as_ref()
                .ok_or_else(|| anyhow!("a borrowed layer without a base"))?;
            client_ref.copy_blob(repo, from, &base.base.repo, d, progress_ref).await
        }
        .boxed()
    });
    let uploads = futures_util::stream::iter(files.chain(borrowed))
        .buffer_unordered(PARALLEL_UPLOADS)
        .try_collect::<Vec<BlobCopy>>();
    let uploads = super::progress::ticking(uploads, &[&progress]).await;
    let copied = match uploads {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let count = |k: BlobCopy| copied.iter().filter(|c| **c == k).count();
    crate::report::copied(
        &image.manifest.digest,
        &label,
        count(BlobCopy::Uploaded),
        count(BlobCopy::Mounted),
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

/// A client of the registry that holds `base`, renewing its token on a 401 like every destination's.
fn base_client(base: &BaseLayers, ctx: &Context) -> Result<RegistryClient> {
    let login = ctx
        .logins
        .iter()
        .find(|l| l.registry.host == base.base.host)
        .ok_or_else(|| anyhow!("no login for {}, which holds the base", base.base.host))?;
    let renewal: Arc<dyn Relogin> = Arc::new(Renewal::of(&ctx.identity, login));
    Ok(RegistryClient::new(login, ctx.common.timeout)?.with_relogin(renewal))
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
