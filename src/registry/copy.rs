//! Copies registry to registry, with no daemon in the path: a blob already in the target is skipped,
//! same-registry copies try a cross-repository mount first, others stream from the source response into
//! the target request (never a whole layer in memory or on disk, checked as they pass); an image or an
//! index whole, children first; and [`fan_out`]: one read of the source, every destination at once.

use super::RegistryClient;
use super::blobs::{BlobCopy, verified};
use super::http::HttpFailure;
use crate::domain::manifest::{Descriptor, Manifest};
use crate::report::Progress;
use anyhow::{Context as _, Result, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How deep a source's indexes are followed (an index of indexes of … of images), as for a layout.
const MAX_INDEX_DEPTH: usize = 16;

/// Blobs copied at once per manifest.
const PARALLEL_BLOBS: usize = 4;

impl RegistryClient {
    /// Make `blob` present in `repo`: skipped when there, mounted from `source_repo` when both repositories are
    /// in this registry and the registry agrees, else streamed from `source`.
    pub async fn copy_blob(
        &self,
        repo: &str,
        source: &RegistryClient,
        source_repo: &str,
        blob: &Descriptor,
        progress: &Arc<Progress>,
    ) -> Result<BlobCopy> {
        if self.blob_exists(repo, &blob.digest).await? {
            progress.advance(blob.size);
            return Ok(BlobCopy::AlreadyThere);
        }
        let copy = || async {
            let mut start = format!("{}/{repo}/blobs/uploads/", self.base);
            if self.same_registry(source) {
                start = format!("{start}?mount={}&from={source_repo}", blob.digest);
            }
            let what = format!("starting the upload of {} to {}/{repo}", blob.digest, self.host);
            let response = self
                .send(&what, self.request(Method::POST, &start).header(CONTENT_LENGTH, 0))
                .await?;
            if response.status() == StatusCode::CREATED && self.same_registry(source) {
                progress.advance(blob.size);
                return Ok(BlobCopy::Mounted);
            }
            let location = self.location(&response, &what)?;
            self.upload(repo, &location, source, source_repo, blob, progress)
                .await?;
            Ok(BlobCopy::Uploaded)
        };
        let what = format!("copying blob {} to {}/{repo}", blob.digest, self.host);
        Ok(self.retried(&what, copy).await?)
    }

    /// Stream the blob from the source straight into the upload session at `location`.
    pub(super) async fn upload(
        &self,
        repo: &str,
        location: &str,
        source: &RegistryClient,
        source_repo: &str,
        blob: &Descriptor,
        progress: &Arc<Progress>,
    ) -> Result<(), HttpFailure> {
        let url = format!("{}/{source_repo}/blobs/{}", source.base, blob.digest);
        let what = format!("reading blob {} from {}/{source_repo}", blob.digest, source.host);
        let download = source.send(&what, source.request(Method::GET, &url)).await?;
        if download.status() == StatusCode::NOT_FOUND {
            return Err(HttpFailure {
                message: format!("{what}: the source registry has no such blob"),
                retryable: false,
                at: source.host.clone(),
            });
        }
        // Counted as it passes (an attempt that fails counts again: the bar may pass its total), and checked.
        let counted = progress.clone();
        let refused = Arc::new(std::sync::Mutex::new(None));
        let checked = verified(download.bytes_stream(), blob, &what, refused.clone()).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.advance(chunk.len() as u64);
            }
        });
        let sent = self
            .send_blob(
                repo,
                location,
                &blob.digest,
                blob.size,
                reqwest::Body::wrap_stream(checked),
            )
            .await;
        match refused.lock().expect("not poisoned").take() {
            // The source's bytes were not the blob: no retry sends other bytes, and nothing was closed.
            Some(message) => Err(HttpFailure {
                message,
                retryable: false,
                at: source.host.clone(),
            }),
            None => sent,
        }
    }

    /// Make every blob and child manifest `manifest` points at present in the target repository.
    pub async fn copy_image(
        &self,
        repo: &str,
        source: &RegistryClient,
        source_repo: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        self.copy_image_after(
            repo,
            source,
            source_repo,
            manifest,
            &BTreeSet::new(),
            &Progress::unshown(),
        )
        .await
    }

    /// [`copy_image`](Self::copy_image), where the blobs in `landed` were already copied here by this run
    /// ([`fan_out`]): found there, and reported as uploaded. The bytes are counted in `progress`.
    pub async fn copy_image_after(
        &self,
        repo: &str,
        source: &RegistryClient,
        source_repo: &str,
        manifest: &Manifest,
        landed: &BTreeSet<String>,
        progress: &Arc<Progress>,
    ) -> Result<()> {
        self.copy_image_at(repo, source, source_repo, manifest, landed, progress, 0)
            .await
    }

    /// [`copy_image_after`](Self::copy_image_after) of a manifest `depth` indexes down: a source's indexes
    /// are followed at most [`MAX_INDEX_DEPTH`] deep.
    #[allow(clippy::too_many_arguments)]
    async fn copy_image_at(
        &self,
        repo: &str,
        source: &RegistryClient,
        source_repo: &str,
        manifest: &Manifest,
        landed: &BTreeSet<String>,
        progress: &Arc<Progress>,
        depth: usize,
    ) -> Result<()> {
        let target = self;
        if manifest.is_index() && depth >= MAX_INDEX_DEPTH {
            bail!(
                "the source {}/{source_repo} nests indexes more than {MAX_INDEX_DEPTH} deep (at {}): refused, \
                 nothing of it was tagged",
                source.host,
                manifest.digest
            );
        }
        if manifest.is_index() {
            for child in manifest.references()? {
                let child_manifest = source.manifest(source_repo, &child.digest).await?.with_context(|| {
                    format!(
                        "the index names {}, which the source registry does not have",
                        child.digest
                    )
                })?;
                let copy = self.copy_image_at(repo, source, source_repo, &child_manifest, landed, progress, depth + 1);
                Box::pin(copy).await?;
                target.put_manifest(repo, &child.digest, &child_manifest).await?;
            }
            return Ok(());
        }
        let blobs = manifest.references()?;
        // A blob the fan-out landed was counted as it was sent.
        let uncounted = &Progress::unshown();
        let copied: Vec<BlobCopy> = stream::iter(blobs.iter().map(|b| async move {
            if landed.contains(&b.digest) {
                target.copy_blob(repo, source, source_repo, b, uncounted).await?;
                return anyhow::Ok(BlobCopy::Uploaded);
            }
            target.copy_blob(repo, source, source_repo, b, progress).await
        }))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect()
        .await?;
        let count = |k: BlobCopy| copied.iter().filter(|c| **c == k).count();
        crate::report::copied(
            &manifest.digest,
            &format!("{}/{repo}", target.host),
            count(BlobCopy::Uploaded),
            count(BlobCopy::Mounted),
            count(BlobCopy::AlreadyThere),
        );
        Ok(())
    }
}

/// Copy `blob` from `source` to every target that lacks it, reading it from the source once: its chunks
/// go to every target's upload at once (the slowest target sets the pace). One attempt per target and
/// nothing reported: a target whose upload failed is left to its own copy afterwards
/// ([`RegistryClient::copy_image_after`]). Returns the targets (by index) it landed in.
pub async fn fan_out(
    source: &RegistryClient,
    source_repo: &str,
    blob: &Descriptor,
    targets: &[FanOutTarget<'_>],
) -> Vec<usize> {
    let mut needed = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        if let Ok(false) = target.client.blob_exists(target.repo, &blob.digest).await {
            needed.push(i);
        }
    }
    if needed.len() < 2 {
        return Vec::new();
    }
    let url = format!("{}/{source_repo}/blobs/{}", source.base, blob.digest);
    let what = format!("reading blob {} from {}/{source_repo}", blob.digest, source.host);
    let Ok(download) = source.send(&what, source.request(Method::GET, &url)).await else {
        return Vec::new();
    };
    if !download.status().is_success() {
        return Vec::new();
    }
    let mut senders = Vec::new();
    let uploads = needed.iter().map(|&i| {
        let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(FAN_OUT_CHUNKS);
        senders.push(sender);
        let FanOutTarget {
            client: target,
            repo,
            progress,
        } = targets[i];
        let progress = progress.clone();
        async move {
            let chunks = stream::unfold((receiver, progress), |(mut r, progress)| async move {
                let chunk = r.recv().await?;
                if let Ok(chunk) = &chunk {
                    progress.advance(chunk.len() as u64);
                }
                Some((chunk, (r, progress)))
            });
            let what = format!("uploading blob {} to {}/{repo}", blob.digest, target.host);
            let body = reqwest::Body::wrap_stream(chunks);
            let landed = target.upload_stream(&what, repo, &blob.digest, blob.size, body).await;
            landed.is_ok().then_some(i)
        }
    });
    let uploads: Vec<_> = uploads.collect();
    let feed = async move {
        // Checked as it passes: bytes that are not the blob end every upload with an error, unclosed.
        let body = verified(download.bytes_stream(), blob, &what, Default::default());
        futures_util::pin_mut!(body);
        while let Some(chunk) = body.next().await {
            let failed = chunk.is_err();
            let mut live = false;
            for sender in &senders {
                let chunk = match &chunk {
                    Ok(c) => Ok(c.clone()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                live |= sender.send(chunk).await.is_ok();
            }
            if !live || failed {
                break;
            }
        }
    };
    let (landed, ()) = tokio::join!(futures_util::future::join_all(uploads), feed);
    landed.into_iter().flatten().collect()
}

/// One destination of a [`fan_out`]: where the blob goes, and where the bytes sent there are counted.
#[derive(Clone, Copy)]
pub struct FanOutTarget<'a> {
    pub client: &'a RegistryClient,
    pub repo: &'a str,
    pub progress: &'a Arc<Progress>,
}

/// Chunks of a blob held for each target of a fan-out.
const FAN_OUT_CHUNKS: usize = 16;
