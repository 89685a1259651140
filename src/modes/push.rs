//! Push mode: an image from the Docker Engine, an OCI layout or an archive, written to every destination
//! concurrently. Files (and an engine image, exported by the step's own transfer) go through
//! `write::uploads`; `PLUGIN_PUSH_VIA=engine` (or `auto`, for an image mostly made of a base the
//! destinations hold, or a new image over a slow link) pushes each tag through the engine
//! (`write::engine_push`). Tags go through the
//! shared per-tag loop, which reads each write back; with `PLUGIN_SKIP_EXISTING` each tag is read first, so
//! a tag already at this image's digest is skipped (decided per tag, never once for all).

use super::context::{Context, Done, FilesRead, Looked};
use super::write::engine_push::EnginePush;
use super::write::uploads::{Sent, files_to, upload_early};
use super::write::{Destination, Verb, preflight, scan, tags};
use crate::domain::link::{Paces, Uplink, Way, Ways, Weighed};
use crate::domain::login::RegistryLogin;
use crate::domain::record::{EnginePushed, Pace, Record};
use crate::domain::source::{
    BaseLayers, Compressing, Compression, LocalImage, PulledImage, Source, base_of, engine_is_faster,
};
use crate::domain::tag::TagOutcome;
use crate::engine::Engine;
use crate::layout;
use crate::registry::RegistryClient;
use crate::settings::{PushSettings, PushVia};
use anyhow::{Result, anyhow};
use futures_util::StreamExt;
use std::collections::BTreeSet;

/// The source is looked at before the credentials: an image in the engine connected to and inspected;
/// files (a layout, an archive) read and checked from now on, on a blocking thread.
pub async fn look(settings: &PushSettings, timeout: std::time::Duration) -> Looked {
    match &settings.source {
        Source::Engine(reference) => Looked::engine(look_in_engine(reference, settings, timeout).await),
        Source::Oci { .. } | Source::OciArchive { .. } | Source::DockerArchive { .. } => {
            read_files(settings).map_or_else(Looked::default, Looked::files)
        }
    }
}

/// Start reading and checking the files of a push from files (`None` for an engine image). A layout's
/// blobs are announced as they are found, for uploads that may start early (not in a dry run, nor where a
/// repository setting applies: nothing is created or changed for a layout before it is checked).
fn read_files(settings: &PushSettings) -> Option<FilesRead> {
    let (announce, announced) = tokio::sync::mpsc::unbounded_channel();
    let announce = (!settings.dry_run && !settings.repository.any()).then_some(announce);
    let layout = !matches!(settings.source, Source::DockerArchive { .. });
    let reading = match &settings.source {
        Source::Engine(_) => return None,
        Source::Oci { path, reference } => {
            let (path, reference, soci) = (path.clone(), reference.clone(), settings.compression.soci);
            tokio::task::spawn_blocking(move || layout::oci(&path, reference.as_deref(), soci, announce.as_ref()))
        }
        Source::OciArchive { path, reference } => {
            let (path, reference, soci) = (path.clone(), reference.clone(), settings.compression.soci);
            tokio::task::spawn_blocking(move || {
                layout::oci_archive(&path, reference.as_deref(), soci, announce.as_ref())
            })
        }
        Source::DockerArchive { path, reference } => {
            let (path, reference, compression) = (path.clone(), reference.clone(), settings.compression);
            tokio::task::spawn_blocking(move || layout::docker_archive(&path, reference.as_deref(), compression))
        }
    };
    let announced = layout.then_some(announced);
    Some(FilesRead { reading, announced })
}

/// The engine connected and the image inspected; its images listed meanwhile (for the images the source
/// was built on, and the local tags a push through it makes), and with a record (`PLUGIN_STATE_DIR`) its
/// ID asked, for the record's lookup and note.
async fn look_in_engine(
    reference: &str,
    settings: &PushSettings,
    timeout: std::time::Duration,
) -> Result<(Engine, LocalImage)> {
    let engine = Engine::connect(timeout).await?;
    let id = async {
        if settings.state_dir.is_some() {
            engine.id().await;
        }
    };
    let (local, _, ()) = tokio::join!(engine.source_image(reference), engine.images(), id);
    Ok((engine, local?))
}

pub async fn run(settings: &PushSettings, ctx: &Context) -> Result<Done> {
    // Every destination answers before the heavy work (the source is looked at, or read, meanwhile).
    let preflight = async {
        match settings.dry_run {
            true => Ok(()),
            false => preflight::destinations_answer(ctx, &settings.target.repo, settings.repository.create).await,
        }
    };
    if let Source::Engine(reference) = &settings.source {
        return from_engine(reference, preflight, settings, ctx).await;
    }
    // Files: read and checked since the credentials were asked for (else from now).
    let files = match ctx.looked.take_files().or_else(|| read_files(settings)) {
        Some(files) => files,
        None => return Err(anyhow!("a push from files found no files to read")),
    };
    from_files(files, preflight, settings, ctx).await
}

/// Files being read and checked (`files`), while `preflight` runs; a layout's largest blobs start
/// uploading once the destinations answered, and are closed only once every check has passed (so a
/// damaged layout lands nothing). A destination that does not answer ends the run at once; files that do
/// not read end it once the destinations answered (a destination's problem is said first, whatever the
/// files hold).
async fn from_files(
    files: FilesRead,
    preflight: impl std::future::Future<Output = Result<()>>,
    settings: &PushSettings,
    ctx: &Context,
) -> Result<Done> {
    let FilesRead { reading, announced } = files;
    let reading = async {
        reading
            .await
            .map_err(|e| anyhow!("reading the image's files stopped: {e}"))?
    };
    let early = async {
        preflight.await?;
        anyhow::Ok(match announced {
            Some(announced) => upload_early(announced, &settings.target.repo, ctx).await,
            None => BTreeSet::new(),
        })
    };
    tokio::pin!(reading, early);
    let (opened, early) = tokio::select! {
        early = &mut early => {
            let early = early?;
            (reading.await?, early)
        }
        opened = &mut reading => {
            // Ended by the files' failure, the announced uploads stop; the destinations answer first.
            let early = early.await?;
            (opened?, early)
        }
    };
    let sent = Sent {
        early: &early,
        base: None,
        prepared: false,
    };
    upload(&opened, settings, ctx, &sent).await
}

/// An image in the engine: through the engine (`docker push`) or the step's own transfer, as
/// `PLUGIN_PUSH_VIA` says (`auto`: the engine for an image mostly made of a base every destination holds,
/// or for a new image to one destination where the upload rate measured favours it). The engine's image was
/// looked at with the credentials (else now); the images it pulled from the destinations are looked for,
/// and the way decided, while `preflight` runs. A destination that does not answer is said first.
///
/// Through the engine the push starts then too, beside the preflight: the engine reads nothing the
/// destinations hold and meets their refusals itself, so the preflight only names the cause. A failed
/// preflight cancels that push, and the local tags it made are removed; a push that landed every tag
/// (read back) before the preflight failed stands, and the failure is said.
async fn from_engine(
    reference: &str,
    preflight: impl std::future::Future<Output = Result<()>>,
    settings: &PushSettings,
    ctx: &Context,
) -> Result<Done> {
    let hosts: Vec<String> = ctx.logins.iter().map(|l| l.registry.host.clone()).collect();
    let (failed, preflight_failed) = tokio::sync::oneshot::channel();
    let preflight = async {
        let answered = preflight.await;
        if answered.is_err() {
            let _ = failed.send(());
        }
        answered
    };
    let decided = async {
        let (engine, local) = match ctx.looked.take_engine() {
            Some(looked) => looked?,
            None => look_in_engine(reference, settings, ctx.common.timeout).await?,
        };
        // The image it was built on (or a previous build), when that came from a registry this run writes
        // to, is looked for among the engine's images, and among the images this engine pushed there in
        // earlier runs (`PLUGIN_STATE_DIR`).
        let pulled = match settings.via {
            PushVia::Engine => Vec::new(),
            PushVia::Auto | PushVia::Registry => {
                let (mut pulled, noted) = tokio::join!(engine.pulled_images(&hosts), noted(&engine, settings, &hosts));
                pulled.extend(noted);
                pulled
            }
        };
        let base = base_of(&local, pulled);
        let through_engine = match settings.via {
            PushVia::Engine => true,
            PushVia::Registry => false,
            // A SOCI index is built as the step compresses: never through the engine.
            PushVia::Auto if settings.compression.soci => false,
            // zstd is written by the step alone: docker push sends gzip.
            PushVia::Auto if settings.compression.zstd() => false,
            // The image itself, known there (pushed before under another tag): only its tags are to be
            // written, which the step does without the engine, below.
            PushVia::Auto => engine_is_faster(&local, base.as_ref().filter(|b| b.image_id != local.id), &hosts)
                .inspect(|why| crate::report::via_engine(why))
                .is_some(),
        };
        let pushed = match through_engine {
            false => None,
            true => tokio::select! {
                pushed = engine_push(&engine, &local, settings, ctx) => Some(pushed),
                Ok(()) = preflight_failed => {
                    engine.untag_left().await;
                    None
                }
            },
        };
        anyhow::Ok((engine, local, base, pushed))
    };
    let (engine, local, base, pushed) = match tokio::join!(preflight, decided) {
        // The engine's push landed every tag, read back, before the check failed: the image is there.
        (Err(e), Ok((_, _, _, Some(Ok(done))))) if done.every_tag_landed() => {
            crate::report::check_failed_after_the_push(&e);
            return Ok(done);
        }
        (Err(e), _) => return Err(e),
        (Ok(()), decided) => decided?,
    };
    if let Some(pushed) = pushed {
        return pushed;
    }
    // Asked at once (both only read): whether this is a re-run, where every tag already holds this image
    // (its config is the image id; with SOCI, in an index beside its SOCI index), so nothing is exported,
    // compressed or uploaded; and what the destination already holds of this image, learnt from its
    // images (a rebuild shares most layers with the previous build; the same image under another tag
    // needs only its tags).
    let (there, held) = match settings.dry_run {
        true => (None, Held::default()),
        false => tokio::join!(already_there(&local, settings, ctx), held(&local, settings, ctx)),
    };
    if let Some((outcomes, indexed)) = there {
        // Nothing to write, but the scan gate still judges the image.
        return scan::done_with_image(settings.scan.as_ref(), &settings.target, outcomes, indexed, ctx).await;
    }
    // (With SOCI the tags get an index of the image, which the image's own manifest is not.)
    if let Some(manifest) = held.image.as_ref().filter(|_| !settings.compression.soci) {
        return same_image(manifest, settings, ctx).await;
    }
    let weigh = settings.via == PushVia::Auto
        && !settings.compression.soci
        && !settings.compression.zstd()
        && !settings.dry_run
        && base.is_none()
        && ctx.logins.len() == 1
        && local.size.max(0) as u64 >= Uplink::WORTH_PROBING;
    if !weigh {
        let layers = Layers::ToLearn { base, held };
        return own_transfer(&engine, &local, layers, None, settings, ctx).await;
    }
    // Where the faster way depends on the link (a new image, mostly), the upload is measured once the
    // layers the destination holds are known, and each way is weighed at the pace it went on this
    // engine last time; the way taken is timed, and its pace noted for the next.
    let held = held_layers(held, &local, settings, ctx).await;
    let weighed = weigh_over_the_link(&engine, &local, held.as_ref(), settings, ctx).await;
    let started = std::time::Instant::now();
    let done = match &weighed {
        Some((weighed, _, _)) if weighed.way == Way::Engine => engine_push(&engine, &local, settings, ctx).await,
        _ => {
            let uplink = weighed.as_ref().map(|(_, uplink, _)| uplink.clone());
            own_transfer(&engine, &local, Layers::Learnt(held), uplink, settings, ctx).await
        }
    };
    if let (Some((weighed, _, Some(engine))), Ok(done)) = (weighed, &done)
        && done.every_tag_landed()
        && weighed.estimate > 0.0
    {
        let pace = Pace {
            engine,
            way: weighed.way,
            pace: started.elapsed().as_secs_f64() / weighed.estimate,
            at: now(),
        };
        note_in_state(settings, move |record| record.note_pace(pace)).await;
    }
    done
}

/// The faster way at the upload rate measured to the only destination, each way at its pace on this
/// engine (the `via:` line says why, either way); that rate; and the engine's ID to note the pace of the
/// way taken against (`None` without a state directory). Measured only where the choice depends on the
/// rate; `None` when not measured.
async fn weigh_over_the_link(
    engine: &Engine,
    local: &LocalImage,
    held: Option<&BaseLayers>,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<(Weighed, Uplink, Option<String>)> {
    let ways = Ways::new(local, missing_bytes(local, held), settings.compression.level, cores());
    if !ways.depend_on_the_link() {
        return None;
    }
    let (uplink, (paces, engine_id)) =
        tokio::join!(slowest_uplink(&settings.target.repo, ctx), paces(engine, settings));
    let uplink = uplink?;
    let weighed = ways.weigh(&uplink, &paces);
    match weighed.way {
        Way::Engine => crate::report::via_engine(&weighed.why),
        Way::Step => crate::report::via_own_transfer(&weighed.why),
    }
    Some((weighed, uplink, engine_id))
}

/// This engine's paces in the record in `PLUGIN_STATE_DIR` (1 where none is kept), and its ID (`None`
/// without a state directory or an engine that says who it is).
async fn paces(engine: &Engine, settings: &PushSettings) -> (Paces, Option<String>) {
    let Some(dir) = settings.state_dir.clone() else {
        return (Paces::default(), None);
    };
    let (record, id) = tokio::join!(blocking(move || Ok(crate::files::state::read(&dir))), engine.id());
    let Some(id) = id else {
        return (Paces::default(), None);
    };
    let paces = record.map_or(Paces::default(), |record| record.paces(&id, now()));
    (paces, Some(id))
}

/// Seconds since the epoch (0 on a clock before it: no pace is then used).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The images this engine pushed to the target repository in earlier runs, from the record in
/// `PLUGIN_STATE_DIR`: docker push skips their layers there, as it does a pulled base's. The engine is
/// asked who it is only when the record names that repository.
async fn noted(engine: &Engine, settings: &PushSettings, hosts: &[String]) -> Vec<PulledImage> {
    let Some(dir) = settings.state_dir.clone() else {
        return Vec::new();
    };
    let Ok(record) = blocking(move || Ok(crate::files::state::read(&dir))).await else {
        return Vec::new();
    };
    let repo = &settings.target.repo;
    if !record.mentions(hosts, repo) {
        return Vec::new();
    }
    match engine.id().await {
        Some(id) => record.pushed_to(&id, hosts, repo),
        None => Vec::new(),
    }
}

/// Note in `PLUGIN_STATE_DIR` that the engine `engine_id` pushed `source` to `host` (the first of
/// `outcomes` the engine wrote, not one found there already), for the next run's `auto`. Best effort: a
/// note that cannot be written is said, and the push stands.
async fn note(engine_id: String, source: &LocalImage, settings: &PushSettings, host: &str, outcomes: &[TagOutcome]) {
    let Some(digest) = outcomes.iter().find_map(|o| match &o.result {
        Ok(landed) if !landed.skipped => Some(landed.digest.clone()),
        _ => None,
    }) else {
        return;
    };
    let pushed = EnginePushed {
        engine: engine_id,
        image: PulledImage {
            host: host.to_string(),
            repo: settings.target.repo.clone(),
            digest,
            image_id: source.id.clone(),
            layers: source.layers.clone(),
            size: source.size.max(0) as u64,
        },
    };
    note_in_state(settings, move |record| record.note(pushed)).await;
}

/// Make `change` to the record in `PLUGIN_STATE_DIR`, if there is one. Best effort: a note that cannot be
/// written is said, and the push stands.
async fn note_in_state(settings: &PushSettings, change: impl FnOnce(&mut Record) + Send + 'static) {
    let Some(dir) = settings.state_dir.clone() else {
        return;
    };
    let shown = dir.clone();
    let noted = blocking(move || crate::files::state::note(&dir, change).map_err(|e| anyhow!(e))).await;
    if let Err(e) = noted {
        crate::report::state_unwritten(&shown, &e);
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The slowest upload rate among the destinations, each measured at once; `None` when one cannot be.
async fn slowest_uplink(repo: &str, ctx: &Context) -> Option<Uplink> {
    let measured = futures_util::future::join_all(ctx.logins.iter().map(|login| async move {
        let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
        client.measure_uplink(repo).await
    }))
    .await;
    let measured: Option<Vec<Uplink>> = measured.into_iter().collect();
    measured?
        .into_iter()
        .min_by(|a, b| a.bytes_per_second.total_cmp(&b.bytes_per_second))
}

/// How the layers the step compresses are written: as the settings say, except that under
/// `PLUGIN_COMPRESSION_LEVEL=auto`, where a large layer is to be compressed, the level is the one the
/// slowest destination's measured upload rate favours (`uplink`, when measured already; else measured
/// now, while the engine prepares its export). The `compression:` line says why. Small layers alone (a
/// rebuild's new top layer) are not worth the probe's bytes: level 2 is near the best at any rate.
async fn compression_for_the_link(
    local: &LocalImage,
    held: Option<&BaseLayers>,
    uplink: Option<Uplink>,
    settings: &PushSettings,
    ctx: &Context,
) -> Compressing {
    let given = settings.compression;
    // (zstd's level fits every link: see `Compressing::ZSTD_AUTO`.)
    if given.zstd() || given.level != Compression::Auto || settings.dry_run || !large_layer_missing(local, held) {
        return given;
    }
    let uplink = match uplink {
        Some(uplink) => uplink,
        None => match slowest_uplink(&settings.target.repo, ctx).await {
            Some(uplink) => uplink,
            None => return given,
        },
    };
    let level = uplink.level(cores());
    crate::report::level_for_the_link(level, &uplink);
    Compressing {
        level: Compression::Level(level),
        ..given
    }
}

/// Whether a layer of `local` not in `held` is large ([`Compression::SMALL_LAYER`] or more; where the
/// engine did not tell the layers' sizes, whether those layers are that large in all).
fn large_layer_missing(local: &LocalImage, held: Option<&BaseLayers>) -> bool {
    let is_held = |diff_id: &String| held.is_some_and(|h| h.by_diff_id.contains_key(diff_id));
    if local.layer_sizes.len() == local.layers.len() {
        let sizes = local.layers.iter().zip(&local.layer_sizes);
        return sizes
            .filter(|(d, _)| !is_held(d))
            .any(|(_, s)| *s >= Compression::SMALL_LAYER);
    }
    missing_bytes(local, held) >= Compression::SMALL_LAYER
}

/// The uncompressed bytes of the layers of `local` not in `held`.
fn missing_bytes(local: &LocalImage, held: Option<&BaseLayers>) -> u64 {
    let is_held = |diff_id: &String| held.is_some_and(|h| h.by_diff_id.contains_key(diff_id));
    if local.layer_sizes.len() == local.layers.len() {
        let sizes = local.layers.iter().zip(&local.layer_sizes);
        return sizes.filter(|(d, _)| !is_held(d)).map(|(_, s)| s).sum();
    }
    let missing = local.layers.iter().filter(|d| !is_held(d)).count() as u64;
    local.size.max(0) as u64 * missing / local.layers.len().max(1) as u64
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
    scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// The layers of an image a destination holds: learnt already, or to learn from `base` (pulled from a
/// registry this run writes to) or else from the destination's images (`held`).
enum Layers {
    Learnt(Option<BaseLayers>),
    ToLearn { base: Option<PulledImage>, held: Held },
}

/// The step's own transfer of an engine image: exported as `docker save` would, each layer compressed as
/// it streams out and its upload following its compression, then uploaded like an image from files.
/// Layers a destination already holds (`layers`) are sent as that registry holds them (so the image
/// shares their digests), not compressed.
async fn own_transfer(
    engine: &Engine,
    local: &LocalImage,
    layers: Layers,
    uplink: Option<Uplink>,
    settings: &PushSettings,
    ctx: &Context,
) -> Result<Done> {
    let timeout = ctx.common.timeout;
    // The engine takes a while before its export's first byte (Docker 20.10 first copies the image into a
    // directory of its own): it starts now, while the layers the destination holds are confirmed (unless
    // `from_engine` learnt them already, to weigh the link), and waits for the reader. A failure before
    // the reader starts drops the reader's end: the export stops.
    let (chunks, received) = tokio::sync::mpsc::channel(EXPORT_CHUNKS);
    let exporting = engine.export(&local.reference, chunks, timeout);
    let reading = async {
        let base = match layers {
            Layers::Learnt(layers) => layers,
            // A base the engine pulled from a destination comes first for the layers.
            Layers::ToLearn { base: Some(base), held } => match base_layers(base, local, settings, ctx).await {
                Some(base) => Some(base),
                None => held_layers(held, local, settings, ctx).await,
            },
            Layers::ToLearn { base: None, held } => held_layers(held, local, settings, ctx).await,
        };
        // The repositories exist before the first upload that follows a compression (and the probe).
        if !settings.dry_run {
            let target = &settings.target;
            crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
        }
        let compression = compression_for_the_link(local, base.as_ref(), uplink, settings, ctx).await;
        let (announce, announced) = tokio::sync::mpsc::unbounded_channel();
        let announce = (!settings.dry_run).then_some(announce);
        let (reading_base, diff_ids) = (base.clone(), local.layers.clone());
        let reading = blocking(move || {
            let chunks = layout::Chunks::new(received);
            let base = reading_base.as_ref();
            layout::docker_archive_from(chunks, None, announce.as_ref(), base, &diff_ids, compression)
        });
        let (opened, early) = tokio::join!(reading, upload_early(announced, &settings.target.repo, ctx));
        anyhow::Ok((opened, early, base))
    };
    let (exported, read) = tokio::join!(exporting, reading);
    exported?;
    let (opened, early, base) = read?;
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
    let outcomes = tags::every_destination(&ctx.logins, |login| files_to(image, target, login, ctx, sent)).await;
    let indexed = image
        .soci
        .as_ref()
        .and_then(|s| s.as_ref().ok())
        .map(|s| s.image.clone());
    scan::done_with_image(settings.scan.as_ref(), target, outcomes, indexed, ctx).await
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow!("reading the image's files stopped: {e}"))?
}

/// The layers `local` shares with `base`, the image it was built on, as the registry it was pulled from
/// holds them. `None` when its manifest cannot be read there, or names no layer the step can borrow (then
/// every layer is compressed here, as without a base).
async fn base_layers(
    base: PulledImage,
    local: &LocalImage,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<BaseLayers> {
    let login = ctx.logins.iter().find(|l| l.registry.host == base.host)?;
    let read = async {
        let client = RegistryClient::new(login, ctx.common.timeout)?;
        let manifest = client.image_manifest(&base.repo, &base.digest, &base.image_id).await?;
        let manifest = manifest.ok_or_else(|| anyhow!("the registry no longer has it"))?;
        BaseLayers::new(base.clone(), &manifest, &local.layers, settings.compression.zstd()).map_err(|e| anyhow!(e))
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

/// What the first destination holds of an image, from its images' manifests.
#[derive(Default)]
struct Held {
    /// The image itself (its config is the image id), in every destination: only tags are to be written.
    image: Option<crate::domain::manifest::Manifest>,
    /// Its other images, to learn which of the image's layers it holds ([`held_layers`]), each with the SOCI
    /// index pushed beside it.
    others: Vec<(
        crate::domain::manifest::Manifest,
        Option<crate::domain::manifest::Manifest>,
    )>,
}

/// The most of a destination's images read to learn what it holds.
const KNOWN_IMAGES: usize = 10;

/// The first destination's images (the tags being written first, then the most recently pushed others of
/// the repository, at most [`KNOWN_IMAGES`]): the image itself when one is it, in every destination, else
/// the others.
async fn held(local: &LocalImage, settings: &PushSettings, ctx: &Context) -> Held {
    let Some(login) = ctx.logins.first() else {
        return Held::default();
    };
    let repo = &settings.target.repo;
    let Ok(client) = RegistryClient::new(login, ctx.common.timeout) else {
        return Held::default();
    };
    // The tags being written, then the most recently pushed images (ECR's API), then the registry's list
    // (newest last, where a registry keeps the order).
    let at = crate::domain::repository::RepositoryAt::of(repo, login);
    let (recent, listed) = tokio::join!(
        crate::aws::images::recent_tags(&ctx.identity, &at),
        client.tags(repo, 1000)
    );
    let mut candidates = settings.target.tags.clone();
    for tag in recent.into_iter().chain(listed.unwrap_or_default().into_iter().rev()) {
        if !candidates.contains(&tag) && !tag.starts_with("sha256-") {
            candidates.push(tag);
        }
    }
    candidates.truncate(KNOWN_IMAGES);
    let client = &client;
    // An index (a SOCI push's tags hold one): this image if it holds it, else its first image, with the
    // SOCI index beside it.
    let read = candidates.iter().map(|tag| async move {
        let manifest = client.manifest(repo, tag).await.ok()??;
        if !manifest.is_index() {
            return Some((manifest, None));
        }
        let images = client.index_images(repo, &manifest).await.ok()?;
        let this = images
            .iter()
            .position(|(m, _)| m.config_digest().as_deref() == Some(local.id.as_str()));
        images.into_iter().nth(this.unwrap_or(0))
    });
    let found: Vec<_> = futures_util::stream::iter(read).buffer_unordered(4).collect().await;
    let (same, others): (Vec<_>, Vec<_>) = found
        .into_iter()
        .flatten()
        .partition(|(m, _)| m.config_digest().as_deref() == Some(local.id.as_str()) && as_asked(m, settings));
    if let Some((manifest, _)) = same.into_iter().next() {
        let mut everywhere = true;
        for other in &ctx.logins[1..] {
            let held = match RegistryClient::new(other, ctx.common.timeout) {
                Ok(c) => c.manifest_digest(repo, &manifest.digest).await.ok().flatten(),
                Err(_) => None,
            };
            everywhere &= held.is_some();
        }
        if everywhere {
            return Held {
                image: Some(manifest),
                others,
            };
        }
    }
    Held { image: None, others }
}

/// The layers of `local` the first destination holds: the image of `held` sharing the most layers with
/// it (its config read for the diff ids), each layer confirmed by a HEAD (a layer deleted since is
/// compressed and sent as any other). The step's compression is deterministic, so a layer pushed before
/// by the step has the digest it would get now; one pushed by another tool is borrowed as that registry
/// holds it, the image's diff ids unchanged.
async fn held_layers(held: Held, local: &LocalImage, settings: &PushSettings, ctx: &Context) -> Option<BaseLayers> {
    let repo = settings.target.repo.as_str();
    let login = ctx.logins.first()?;
    let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
    let client = &client;
    let read = held.others.into_iter().map(|(manifest, soci)| async move {
        let config = manifest.config_digest()?;
        let bytes = client
            .small_blob(repo, &config, crate::layout::CONFIG_LIMIT)
            .await
            .ok()??;
        let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let diff_ids: Vec<String> = json["rootfs"]["diff_ids"]
            .as_array()?
            .iter()
            .filter_map(|d| d.as_str().map(String::from))
            .collect();
        Some((manifest, diff_ids, soci))
    });
    let found: Vec<_> = futures_util::stream::iter(read).buffer_unordered(4).collect().await;
    let shared = |diff_ids: &[String]| diff_ids.iter().filter(|d| local.layers.contains(d)).count();
    let (manifest, diff_ids, soci) = found
        .into_iter()
        .flatten()
        .filter(|(_, d, _)| shared(d) > 0)
        .max_by_key(|(_, d, _)| shared(d))?;
    let image = PulledImage {
        host: login.registry.host.clone(),
        repo: repo.to_string(),
        digest: manifest.digest.clone(),
        image_id: manifest.config_digest().unwrap_or_default(),
        size: manifest.layers().map_or(0, |l| l.iter().map(|(d, _)| d.size).sum()),
        layers: diff_ids,
    };
    let mut layers = BaseLayers::new(image, &manifest, &local.layers, settings.compression.zstd()).ok()?;
    let heads = std::mem::take(&mut layers.by_diff_id)
        .into_iter()
        .map(|(diff_id, descriptor)| async move {
            let there = matches!(client.blob_exists(repo, &descriptor.digest).await, Ok(true));
            there.then_some((diff_id, descriptor))
        });
    let confirmed: Vec<_> = futures_util::stream::iter(heads).buffer_unordered(4).collect().await;
    layers.by_diff_id = confirmed.into_iter().flatten().collect();
    layers.confirmed = true;
    // The zTOCs of those layers, from the SOCI index pushed with that image (each confirmed too).
    let held: Vec<String> = layers.by_diff_id.values().map(|d| d.digest.clone()).collect();
    let ztocs = soci
        .map(|soci| crate::domain::soci::ztocs_in(&soci))
        .unwrap_or_default()
        .into_iter()
        .filter(|(layer, _)| held.contains(layer))
        .map(|(layer, ztoc)| async move {
            let there = matches!(client.blob_exists(repo, &ztoc.digest).await, Ok(true));
            there.then_some((layer, ztoc))
        });
    let confirmed: Vec<_> = futures_util::stream::iter(ztocs).buffer_unordered(4).collect().await;
    layers.ztocs = confirmed.into_iter().flatten().collect();
    if layers.by_diff_id.is_empty() {
        return None;
    }
    crate::report::base(&layers, local.layers.len());
    Some(layers)
}

/// The image is already in every destination (under another tag): only its tags are written, nothing is
/// exported, compressed or sent.
async fn same_image(
    manifest: &crate::domain::manifest::Manifest,
    settings: &PushSettings,
    ctx: &Context,
) -> Result<Done> {
    let target = &settings.target;
    crate::report::image_there(&target.repo, &manifest.digest);
    crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    let outcomes = tags::every_destination(&ctx.logins, |login| async move {
        match Destination::open(login, &target.repo, ctx) {
            Ok(to) => tags::put_every_tag(&to, &target.tags, manifest, Verb::Pushed).await,
            Err(e) => {
                let label = crate::domain::target::label(&login.registry.host, &target.repo);
                tags::fail_every_tag(&label, &target.tags, &e, Verb::Pushed)
            }
        }
    })
    .await;
    scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// When every tag in every destination already holds a manifest whose config is `image` (by id), the
/// outcomes of a run that has nothing to do; `None` as soon as one tag differs (or cannot be read).
async fn already_there(
    image: &LocalImage,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<(Vec<TagOutcome>, Option<String>)> {
    let mut outcomes = Vec::new();
    // The image's own manifest when the tags hold an index of it.
    let mut indexed = None;
    for login in &ctx.logins {
        let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
        let label = crate::domain::target::label(&login.registry.host, &settings.target.repo);
        for tag in &settings.target.tags {
            let manifest = client.manifest(&settings.target.repo, tag).await.ok()??;
            let holds = match manifest.is_index() {
                false => {
                    !settings.compression.soci
                        && manifest.config_digest().as_deref() == Some(image.id.as_str())
                        && as_asked(&manifest, settings)
                }
                true => {
                    let images = client.index_images(&settings.target.repo, &manifest).await.ok()?;
                    let this = images.into_iter().find(|(m, soci)| {
                        m.config_digest().as_deref() == Some(image.id.as_str())
                            && (soci.is_some() || !settings.compression.soci)
                            && as_asked(m, settings)
                    });
                    let found = this.is_some();
                    if let Some((m, _)) = this {
                        indexed = Some(m.digest);
                    }
                    found
                }
            };
            if !holds {
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
        crate::report::tag(outcome, None, Verb::Pushed.as_str());
    }
    Some((outcomes, indexed))
}

/// Whether a manifest of this image already in a destination serves as the push the settings ask for: with
/// gzip (the default) none of its layers may be zstd, which not every runtime pulls (a run without
/// PLUGIN_COMPRESSION=zstd after one with it writes a gzip image, not the zstd one again); with zstd, any.
fn as_asked(manifest: &crate::domain::manifest::Manifest, settings: &PushSettings) -> bool {
    settings.compression.zstd() || !manifest.has_zstd_layers()
}

/// Batches of the engine's export (about 256 KiB each) held between the engine and the compression.
const EXPORT_CHUNKS: usize = 4;

/// Every tag into one destination.
async fn push_to(
    engine: &Engine,
    source: &LocalImage,
    settings: &PushSettings,
    login: &RegistryLogin,
    ctx: &Context,
) -> Vec<TagOutcome> {
    let repo = &settings.target.repo;
    let to = match Destination::open(login, repo, ctx) {
        Ok(to) => to,
        Err(e) => {
            let target = crate::domain::target::label(&login.registry.host, repo);
            return tags::fail_every_tag(&target, &settings.target.tags, &e, Verb::Pushed);
        }
    };
    let ours = source.known_digests(&to.label());
    let mut writer = EnginePush::new(engine, source, &to, ctx.common.timeout, Verb::Pushed);
    // The engine is asked who it is while it pushes, for the note.
    let engine_id = async {
        match settings.state_dir {
            Some(_) => engine.id().await,
            None => None,
        }
    };
    let (outcomes, engine_id) = tokio::join!(
        tags::write_every_tag(&to, &settings.target.tags, ours, settings.skip_existing, &mut writer),
        engine_id
    );
    if let Some(engine_id) = engine_id {
        note(engine_id, source, settings, &login.registry.host, &outcomes).await;
    }
    outcomes
}
