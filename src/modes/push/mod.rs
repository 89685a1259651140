//! Push mode: an image from the Docker Engine, an OCI layout or an archive, written to every destination
//! concurrently. Files (and an engine image, exported by the step's own transfer) go through
//! `write::uploads`; `PLUGIN_PUSH_VIA=engine` (or `auto`, for an image mostly made of a base the
//! destinations hold, or a new image over a slow link) pushes each tag through the engine
//! (`write::engine_push`). Tags go through the
//! shared per-tag loop, which reads each write back; with `PLUGIN_SKIP_EXISTING` each tag is read first, so
//! a tag already at this image's digest is skipped (decided per tag, never once for all).
//!
//! This file is the flow (`look`, `run`, then `from_files` or `from_engine`, then `upload`, `own_transfer`
//! or `engine_push`); what it asks on the way has a file of its own: `held` (what a destination already
//! holds of the image), `way` (which way and which level fit the link) and `record` (the record in
//! `PLUGIN_STATE_DIR`).

mod held;
mod record;
mod way;

use super::context::{Context, Done, FilesRead, Looked};
use super::write::engine_push::EnginePush;
use super::write::tags::HandedBack;
use super::write::uploads::{Sent, Spool, files_to, upload_early};
use super::write::{Destination, Verb, preflight, scan, tags};
use crate::domain::link::{Uplink, Way};
use crate::domain::login::RegistryLogin;
use crate::domain::manifest::Manifest;
use crate::domain::source::{BaseLayers, FileImage, LocalImage, PulledImage, Source, base_of, engine_is_faster};
use crate::domain::tag::TagOutcome;
use crate::engine::Engine;
use crate::layout;
use crate::settings::{PushSettings, PushVia};
use anyhow::{Result, anyhow};
use held::{Held, already_there, base_layers, held, held_layers};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use way::{compression_for_the_link, weigh_over_the_link};

/// The source is looked at before the credentials: an image in the engine connected to and inspected;
/// files (a layout, an archive) read and checked from now on, on a blocking thread.
pub async fn look(settings: &PushSettings, timeout: std::time::Duration) -> Looked {
    match &settings.source {
        Source::Engine(reference) => Looked::engine(look_in_engine(reference, settings, timeout).await),
        // Read once what the destinations hold of it is known (`from_archive`).
        Source::DockerArchive { .. } if archive_known_first(settings) => Looked::default(),
        Source::Oci { .. } | Source::OciArchive { .. } | Source::DockerArchive { .. } => {
            read_files(settings).map_or_else(Looked::default, Looked::files)
        }
    }
}

/// Whether a docker archive is read as the engine's export is (`from_archive`): not in a dry run (which
/// sends nothing). Where a repository setting applies, the repository is then prepared only once the whole
/// archive passed (see `own_transfer`).
fn archive_known_first(settings: &PushSettings) -> bool {
    !settings.dry_run
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
    if let Source::DockerArchive { path, reference } = &settings.source
        && archive_known_first(settings)
    {
        let stream = Stream::Archive {
            path: path.clone(),
            reference: reference.clone(),
        };
        let (path, reference) = (path.clone(), reference.clone());
        let glance = blocking(move || Ok(layout::docker_archive_glance(&path, reference.as_deref())));
        let (answered, glance) = tokio::join!(preflight, glance);
        answered?;
        if let Ok(Some(local)) = glance {
            return from_archive(stream, &local, settings, ctx).await;
        }
        // The archive does not tell: read through, as any file (which says why).
        let files = read_files(settings).ok_or_else(|| anyhow!("a push from files found no files to read"))?;
        return from_files(files, async { Ok(()) }, settings, ctx).await;
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
    upload(opened, settings, ctx, &sent).await
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
        // And whether this engine could not reach one of them in an earlier run.
        let (pulled, unreached) = match settings.via {
            PushVia::Engine => (Vec::new(), None),
            PushVia::Auto | PushVia::Registry => {
                let (mut pulled, noted) =
                    tokio::join!(engine.pulled_images(&hosts), record::noted(&engine, settings, &hosts));
                pulled.extend(noted.pushed);
                (pulled, noted.unreached)
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
            PushVia::Auto => match &unreached {
                // The engine could not reach a destination lately: not asked again.
                Some(u) => {
                    let ago = record::seconds_since(u.at);
                    crate::report::via_own_transfer_unreached(&u.host, ago, &u.cause, &u.remedy);
                    false
                }
                // The image itself, known there (pushed before under another tag): only its tags are to
                // be written, which the step does without the engine, below.
                None => engine_is_faster(&local, base.as_ref().filter(|b| b.image_id != local.id), &hosts)
                    .inspect(|why| crate::report::via_engine(why))
                    .is_some(),
            },
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
        anyhow::Ok((engine, local, base, pushed, unreached.is_some()))
    };
    let (engine, local, base, pushed, unreached) = match tokio::join!(preflight, decided) {
        // The engine's push landed every tag, read back, before the check failed: the image is there.
        (Err(e), Ok((_, _, _, Some(Ok(done)), _))) if done.every_tag_landed() => {
            crate::report::check_failed_after_the_push(&e);
            return Ok(done);
        }
        (Err(e), _) => return Err(e),
        (Ok(()), decided) => decided?,
    };
    // The engine's push stands, unless no destination took it for want of a route from the engine.
    // Nor is the engine weighed where it could not reach a destination, now or lately.
    let engine_out = match pushed {
        Some(pushed) => match unless_handed_back(&engine, pushed, settings).await {
            Some(pushed) => return pushed,
            None => true,
        },
        None => unreached,
    };
    // Asked at once (both only read): whether this is a re-run, where every tag already holds this image
    // (its config is the image id; with SOCI, in an index beside its SOCI index), so nothing is exported,
    // compressed or uploaded; and what the destination already holds of this image, learnt from its
    // images (a rebuild shares most layers with the previous build; the same image under another tag
    // needs only its tags).
    let held = match held_unless_there(&local, settings, ctx).await {
        ControlFlow::Break(done) => return done,
        ControlFlow::Continue(held) => held,
    };
    let weigh = settings.via == PushVia::Auto
        && !engine_out
        && !settings.compression.soci
        && !settings.compression.zstd()
        && !settings.dry_run
        && base.is_none()
        && ctx.logins.len() == 1
        && local.size.max(0) as u64 >= Uplink::WORTH_PROBING;
    if !weigh {
        let layers = Layers::ToLearn { base, held };
        return own_transfer(Stream::Export(&engine), &local, layers, None, settings, ctx).await;
    }
    // Where the faster way depends on the link (a new image, mostly), the upload is measured once the
    // layers the destination holds are known, and each way is weighed at the pace it went on this
    // engine last time; the way taken is timed, and its pace noted for the next.
    let held = held_layers(held, &local, settings, ctx).await;
    let weighed = weigh_over_the_link(&engine, &local, held.as_ref(), settings, ctx).await;
    let started = std::time::Instant::now();
    let uplink = weighed.as_ref().and_then(|(_, uplink, _)| uplink.clone());
    let through_engine = matches!(&weighed, Some((weighed, _, _)) if weighed.way == Way::Engine);
    // The engine's push, unless no destination took it for want of a route from the engine.
    let pushed = match through_engine {
        true => unless_handed_back(&engine, engine_push(&engine, &local, settings, ctx).await, settings).await,
        false => None,
    };
    let as_weighed = !through_engine || pushed.is_some();
    let done = match pushed {
        Some(done) => done,
        None => {
            own_transfer(
                Stream::Export(&engine),
                &local,
                Layers::Learnt(held),
                uplink,
                settings,
                ctx,
            )
            .await
        }
    };
    if let (Some((weighed, _, Some(engine))), Ok(done)) = (weighed, &done)
        && as_weighed
        && done.every_tag_landed()
        && weighed.estimate > 0.0
    {
        let elapsed = started.elapsed().as_secs_f64();
        record::note_pace(settings, engine, weighed.way, elapsed, weighed.estimate).await;
    }
    done
}

/// A docker archive whose `manifest.json` and config told its image (`local`), once the destinations
/// answered: read as the engine's export is, knowing first what they hold (as in `from_engine`). Every tag
/// already at this image, or the image there under another tag, and nothing is read; else the layers
/// they hold are not compressed, and each new large layer's upload follows its compression, at the level
/// the link favours. The archive is checked whole as it is read; no upload closes before it passed.
async fn from_archive(stream: Stream<'_>, local: &LocalImage, settings: &PushSettings, ctx: &Context) -> Result<Done> {
    let held = match held_unless_there(local, settings, ctx).await {
        ControlFlow::Break(done) => return done,
        ControlFlow::Continue(held) => held,
    };
    let layers = Layers::ToLearn { base: None, held };
    own_transfer(stream, local, layers, None, settings, ctx).await
}

/// What the first destination holds of `local` (nothing is asked in a dry run), unless that ends the push,
/// both asked at once (both only read): every tag already at this image (a re-run: nothing is written,
/// but the scan gate still judges the image), or the image there under another tag (only its tags are
/// written; not with SOCI, whose tags get an index of the image, which the image's own manifest is not).
async fn held_unless_there(
    local: &LocalImage,
    settings: &PushSettings,
    ctx: &Context,
) -> ControlFlow<Result<Done>, Held> {
    if settings.dry_run {
        return ControlFlow::Continue(Held::default());
    }
    let (there, held) = tokio::join!(already_there(local, settings, ctx), held(local, settings, ctx));
    if let Some((outcomes, indexed)) = there {
        let done = scan::done_with_image(settings.scan.as_ref(), &settings.target, outcomes, indexed, ctx).await;
        return ControlFlow::Break(done);
    }
    if let Some(manifest) = held.image.as_ref().filter(|_| !settings.compression.soci) {
        return ControlFlow::Break(same_image(manifest, settings, ctx).await);
    }
    ControlFlow::Continue(held)
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
    let outcomes = tags::handed_back(outcomes, Verb::Pushed)?;
    scan::done(settings.scan.as_ref(), target, outcomes, ctx).await
}

/// The engine's push, unless no destination took it, because the engine could not reach or trust any
/// (`PLUGIN_PUSH_VIA=auto` chose it; the step reached them, through its own network, proxy and CAs). Then
/// `None`: said, for the step's own transfer to push the image instead, and noted in the record, so
/// that for a day `auto` does not ask the engine again.
async fn unless_handed_back(engine: &Engine, pushed: Result<Done>, settings: &PushSettings) -> Option<Result<Done>> {
    let Some(back) = pushed.as_ref().err().and_then(|e| e.downcast_ref::<HandedBack>()) else {
        return Some(pushed);
    };
    crate::report::via_own_transfer_instead(&back.host, &back.cause, &back.remedy);
    record::note_unreached(engine, settings, back).await;
    None
}

/// The layers of an image a destination holds: learnt already, or to learn from `base` (pulled from a
/// registry this run writes to) or else from the destination's images (`held`).
enum Layers {
    Learnt(Option<BaseLayers>),
    ToLearn { base: Option<PulledImage>, held: Held },
}

/// Where the step's own transfer reads `docker save`'s tar from.
enum Stream<'a> {
    /// The engine's export of the image.
    Export(&'a Engine),
    /// The archive of `PLUGIN_SOURCE=docker-archive:PATH[:REFERENCE]`.
    Archive { path: PathBuf, reference: Option<String> },
}

/// The step's own transfer of an engine image (exported as `docker save` would) or of a docker archive:
/// each layer compressed as it streams in and its upload following its compression, then uploaded like an
/// image from files. Layers a destination already holds (`layers`) are sent as that registry holds them
/// (so the image shares their digests), not compressed.
async fn own_transfer(
    stream: Stream<'_>,
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
    let (engine, archive) = match stream {
        Stream::Export(engine) => (Some(engine), None),
        Stream::Archive { path, reference } => (None, Some((path, reference))),
    };
    let exporting = async {
        match engine {
            Some(engine) => engine.export(&local.reference, chunks, timeout).await,
            None => Ok(()),
        }
    };
    // Nothing is created or changed for an archive before it is checked: where a repository setting
    // applies, its repositories are prepared once the whole archive passed (in `upload`), and its new
    // layers upload as they are compressed only where every repository exists already (asked, read only,
    // beside the layers the destinations hold); else they are compressed first and sent then.
    let checked_first = archive.is_some() && settings.repository.any();
    let reading = async {
        let learnt = async {
            match layers {
                Layers::Learnt(layers) => layers,
                // A base the engine pulled from a destination comes first for the layers.
                Layers::ToLearn { base: Some(base), held } => match base_layers(base, local, settings, ctx).await {
                    Some(base) => Some(base),
                    None => held_layers(held, local, settings, ctx).await,
                },
                Layers::ToLearn { base: None, held } => held_layers(held, local, settings, ctx).await,
            }
        };
        let there = async {
            let (identity, repo) = (&ctx.identity, &settings.target.repo);
            checked_first && crate::aws::repository::exists_everywhere(identity, repo, &ctx.logins).await
        };
        let (base, there) = tokio::join!(learnt, there);
        // The repositories exist before the first upload that follows a compression (and the probe).
        if !settings.dry_run && !checked_first {
            let target = &settings.target;
            crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
        }
        let compression = compression_for_the_link(local, base.as_ref(), uplink, settings, ctx).await;
        let (announce, announced) = tokio::sync::mpsc::unbounded_channel();
        let announce = (!settings.dry_run && (!checked_first || there)).then_some(announce);
        let (reading_base, diff_ids) = (base.clone(), local.layers.clone());
        let reading = blocking(move || {
            let (early, base) = (announce.as_ref(), reading_base.as_ref());
            match archive {
                Some((path, reference)) => {
                    layout::docker_archive_knowing(&path, reference.as_deref(), early, base, &diff_ids, compression)
                }
                None => {
                    let chunks = layout::Chunks::new(received);
                    layout::docker_archive_from(chunks, None, early, base, &diff_ids, compression)
                }
            }
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
        prepared: !checked_first,
    };
    upload(opened?, settings, ctx, &sent).await
}

/// An image read into files, pushed: its blobs uploaded through the registry client to every destination
/// concurrently (compressed once, before), children of an index first, then every tag through the per-tag
/// loop, which skips a tag already at this digest: a re-run uploads and writes nothing.
async fn upload(opened: layout::Opened, settings: &PushSettings, ctx: &Context, sent: &Sent<'_>) -> Result<Done> {
    let (image, files) = opened.split();
    let spool = Spool::new(files, &image.blobs, ctx.logins.len());
    let done = upload_spooled(&image, settings, ctx, sent, &spool).await;
    spool.removed().await;
    done
}

/// [`upload`], each of whose files goes once every destination has its blob.
async fn upload_spooled(
    image: &FileImage,
    settings: &PushSettings,
    ctx: &Context,
    sent: &Sent<'_>,
    spool: &Spool,
) -> Result<Done> {
    let target = &settings.target;
    crate::report::files_plan(&settings.source, image, &target.repo, &target.tags, &ctx.logins);
    if settings.dry_run {
        crate::report::dry_run(&target.repo, target.tags.len(), ctx.logins.len(), &settings.repository);
        return Ok(Done::DryRun { target: target.clone() });
    }
    if !sent.prepared {
        crate::aws::repository::prepare_all(&ctx.identity, &target.repo, &settings.repository, &ctx.logins).await?;
    }
    let outcomes = tags::every_destination(&ctx.logins, |login| files_to(image, target, login, ctx, sent, spool)).await;
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

/// The image is already in every destination (under another tag): only its tags are written, nothing is
/// exported, compressed or sent.
async fn same_image(manifest: &Manifest, settings: &PushSettings, ctx: &Context) -> Result<Done> {
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
    // Under `auto` the step's own transfer is the other way.
    writer.hand_back = settings.via == PushVia::Auto;
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
        record::note(engine_id, source, settings, &login.registry.host, &outcomes).await;
    }
    outcomes
}
