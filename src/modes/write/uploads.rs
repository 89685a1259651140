//! Uploads of an image read into files (a layout, an archive, or the engine's export) to one destination:
//! blobs concurrently under the one retry policy (a blob the registry has is skipped; a layer borrowed
//! from a base is found, mounted or copied from the base's registry), child manifests, then every tag
//! through the per-tag loop; and the uploads that follow each layer while it is compressed, a head start
//! the normal upload then finds there.

use super::destination::signed_client;
use super::tags::{self, Verb};
use super::{Destination, progress};
use crate::domain::login::RegistryLogin;
use crate::domain::source::{BaseLayers, FileImage, LocalBlob};
use crate::domain::tag::TagOutcome;
use crate::domain::target::Target;
use crate::files::ScratchDir;
use crate::layout;
use crate::modes::Context;
use crate::registry::{BlobCopy, RegistryClient};
use anyhow::{Result, anyhow};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Blobs uploaded at once per destination.
const PARALLEL_UPLOADS: usize = 4;

/// What a push from files knows of its blobs before it uploads them.
pub struct Sent<'a> {
    /// `(registry host, digest)` of the blobs uploaded while they were compressed.
    pub early: &'a BTreeSet<(String, String)>,
    /// Where the layers the image borrows from its base are ([`FileImage::borrowed`]).
    pub base: Option<&'a BaseLayers>,
    /// Whether the repositories were prepared already (before uploads that followed a compression).
    pub prepared: bool,
}

/// The files an image's blobs are read from when they live in the step's scratch directory (an unpacked
/// archive, the compressed layers of an export): each is removed, on a blocking thread, once every
/// destination has had that blob (uploaded, found there, or failed). Removing tens of megabytes takes the
/// kernel 10 to 70 ms on this testbed's disk; that then runs beside the other uploads and the writes of the
/// tags rather than after them. [`Spool::removed`] removes the rest and waits, so the files are gone before
/// the run ends, as before. A layout's own files are never touched.
pub struct Spool {
    scratch: std::sync::Mutex<Option<ScratchDir>>,
    /// Each scratch file, with the uploads (a blob's, at a destination) still to read it.
    readers: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, usize>>,
    removing: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Spool {
    /// The files of `blobs` in `scratch` (none for a layout read in place), each read once per destination.
    pub fn new(scratch: Option<ScratchDir>, blobs: &[LocalBlob], destinations: usize) -> Spool {
        let mut readers = std::collections::HashMap::new();
        if let Some(scratch) = &scratch {
            for blob in blobs.iter().filter(|b| b.path.starts_with(&scratch.path)) {
                *readers.entry(blob.path.clone()).or_default() += destinations;
            }
        }
        Spool {
            scratch: std::sync::Mutex::new(scratch),
            readers: std::sync::Mutex::new(readers),
            removing: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// One destination reads `blob`'s file until the guard drops, and never again after.
    fn reading<'a>(&'a self, blob: &'a LocalBlob) -> Reading<'a> {
        Reading { spool: self, blob }
    }

    /// The files are gone once this returns (the rest of the scratch directory removed now).
    pub async fn removed(&self) {
        let scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut removing = std::mem::take(&mut *self.removing.lock().unwrap_or_else(|p| p.into_inner()));
        removing.push(tokio::task::spawn_blocking(move || drop(scratch)));
        for removal in removing {
            let _ = removal.await;
        }
    }
}

/// A destination reading a blob's file in a [`Spool`]; the last to drop starts the file's removal.
struct Reading<'a> {
    spool: &'a Spool,
    blob: &'a LocalBlob,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut readers = self.spool.readers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(left) = readers.get_mut(&self.blob.path) else {
            return;
        };
        *left -= 1;
        if *left > 0 {
            return;
        }
        readers.remove(&self.blob.path);
        let path = self.blob.path.clone();
        let remove = move || {
            let _ = std::fs::remove_file(path);
        };
        // Outside the runtime (a task dropped as it shuts down) the file goes here and now.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let removal = runtime.spawn_blocking(remove);
                self.spool
                    .removing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(removal);
            }
            Err(_) => remove(),
        }
    }
}

/// Uploads that follow each layer while it is compressed, or each large blob of a layout while it is
/// checked, into every destination (one attempt each, nothing reported, none closed before its blob is
/// ready): a head start for [`files_to`], which then finds these blobs there. Returns the
/// `(registry host, digest)` of every blob that landed this way.
pub async fn upload_early(
    announced: tokio::sync::mpsc::UnboundedReceiver<layout::Growing>,
    repo: &str,
    ctx: &Context,
) -> BTreeSet<(String, String)> {
    let clients = ctx.head_start_clients();
    let progress: Vec<Arc<crate::report::Progress>> = clients
        .iter()
        .map(|(host, _)| {
            Arc::new(crate::report::Progress::new(
                crate::domain::target::label(host, repo),
                0,
            ))
        })
        .collect();
    let layers = futures_util::stream::unfold(announced, |mut rx| async move { rx.recv().await.map(|g| (g, rx)) });
    let landed = std::sync::Mutex::new(BTreeSet::new());
    let uploads = layers.for_each_concurrent(None, |growing| {
        let (clients, landed, progress) = (&clients, &landed, &progress);
        async move {
            let uploads = clients.iter().zip(progress).map(|((host, client), progress)| {
                let (path, done, digest) = (growing.path.clone(), growing.done.clone(), growing.digest.as_deref());
                async move {
                    // A blob whose digest is known is not sent where it is already (the normal upload finds
                    // it there and says so); a failed check is left to the normal upload too.
                    if let Some(digest) = digest
                        && !matches!(client.blob_exists(repo, digest).await, Ok(false))
                    {
                        return Err(anyhow!("{digest} is there, or its check failed"));
                    }
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
    progress::ticking(uploads, &shown).await;
    landed.into_inner().expect("not poisoned")
}

/// Blobs, then child manifests, then every tag, into one destination. Blobs uploaded while they were
/// compressed are counted as uploaded, not as already there; the layers borrowed from the base are
/// found there, mounted from the base's repository, or streamed from the base's registry. Each blob's file
/// in `spool` is read until that blob is there.
pub async fn files_to(
    image: &FileImage,
    target: &Target,
    login: &RegistryLogin,
    ctx: &Context,
    sent: &Sent<'_>,
    spool: &Spool,
) -> Vec<TagOutcome> {
    let repo = &target.repo;
    let label = crate::domain::target::label(&login.registry.host, repo);
    let fail = |e: anyhow::Error| tags::fail_every_tag(&label, &target.tags, &e, Verb::Pushed);
    let to = match Destination::open(login, repo, ctx) {
        Ok(to) => to,
        Err(e) => return fail(e),
    };
    let client = &to.client;
    let base = match sent.base {
        Some(base) => match base_client(base, ctx) {
            Ok(client) => Some((base, client)),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let total = image.blobs.iter().map(|b| b.size).sum::<u64>() + image.borrowed.iter().map(|d| d.size).sum::<u64>();
    let progress = Arc::new(crate::report::Progress::new(label.clone(), total));
    let (client_ref, progress_ref, base_ref) = (client, &progress, &base);
    let files = image.blobs.iter().map(|b| {
        async move {
            let _reading = spool.reading(b);
            // A blob uploaded while it was compressed or checked landed then (the registry accepted it under
            // its digest): not asked for again.
            if sent.early.contains(&(login.registry.host.clone(), b.digest.clone())) {
                progress_ref.advance(b.size);
                return anyhow::Ok(BlobCopy::Uploaded);
            }
            client_ref.upload_file(repo, b, progress_ref).await
        }
        .boxed()
    });
    let borrowed = image.borrowed.iter().map(|d| {
        async move {
            let (base, from) = base_ref
                .as_ref()
                .ok_or_else(|| anyhow!("a borrowed layer without a base"))?;
            // Found by a HEAD in this very repository earlier in this run: not asked again.
            if base.confirmed && base.base.host == login.registry.host && base.base.repo == *repo {
                progress_ref.advance(d.size);
                return Ok(BlobCopy::AlreadyThere);
            }
            client_ref.copy_blob(repo, from, &base.base.repo, d, progress_ref).await
        }
        .boxed()
    });
    let uploads = futures_util::stream::iter(files.chain(borrowed))
        .buffer_unordered(PARALLEL_UPLOADS)
        .try_collect::<Vec<BlobCopy>>();
    let uploads = progress::ticking(uploads, &[&progress]).await;
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
    tags::put_every_tag(&to, &target.tags, &image.manifest, Verb::Pushed).await
}

/// A client of the registry that holds `base`, renewing its token on a 401 like every destination's.
fn base_client(base: &BaseLayers, ctx: &Context) -> Result<RegistryClient> {
    let login = ctx
        .logins
        .iter()
        .find(|l| l.registry.host == base.base.host)
        .ok_or_else(|| anyhow!("no login for {}, which holds the base", base.base.host))?;
    Ok(signed_client(login, ctx)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(path: std::path::PathBuf) -> LocalBlob {
        std::fs::write(&path, b"layer").unwrap();
        LocalBlob {
            digest: format!("sha256:{}", path.display()),
            size: 5,
            path,
        }
    }

    /// Waits up to 5 s for `path` to go; false if it stays.
    async fn goes(path: &std::path::Path) -> bool {
        for _ in 0..500 {
            if !path.exists() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_scratch_file_goes_once_every_destination_has_its_blob_and_a_layouts_file_never() {
        let scratch = ScratchDir::new("spool-test").unwrap();
        let dir = scratch.path.clone();
        let layout = tempfile::tempdir().unwrap();
        let (ours, theirs) = (blob(dir.join("layer.gz")), blob(layout.path().join("blob")));
        let spool = Spool::new(Some(scratch), &[ours.clone(), theirs.clone()], 2);

        drop((spool.reading(&ours), spool.reading(&theirs)));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(ours.path.exists(), "removed while a destination still reads it");

        drop((spool.reading(&ours), spool.reading(&theirs)));
        assert!(goes(&ours.path).await, "kept after every destination had it");
        spool.removed().await;
        assert!(!dir.exists(), "the scratch directory outlived the run's uploads");
        assert!(theirs.path.exists(), "a file outside the scratch directory was removed");
    }

    #[tokio::test]
    async fn every_file_goes_at_the_end_even_where_no_upload_read_it() {
        let scratch = ScratchDir::new("spool-test").unwrap();
        let dir = scratch.path.clone();
        let unread = blob(dir.join("layer.gz"));
        let spool = Spool::new(Some(scratch), std::slice::from_ref(&unread), 3);
        drop(spool.reading(&unread));
        spool.removed().await;
        assert!(!dir.exists() && !unread.path.exists());
    }
}
