//! Blobs: whether a registry holds one, upload sessions (opened, sent in one PATCH, closed with the
//! digest), uploads from a file and from a file still being written, and [`verified`]: a source's bytes
//! checked against their descriptor as they pass.

use super::RegistryClient;
use super::http::HttpFailure;
use crate::domain::link::Uplink;
use crate::domain::manifest::Descriptor;
use crate::domain::source::LocalBlob;
use crate::report::Progress;
use anyhow::{Result, anyhow, bail};
use futures_util::{StreamExt, stream};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// How a blob reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCopy {
    AlreadyThere,
    Mounted,
    Uploaded,
}

impl RegistryClient {
    /// Whether the token may write to `repo`: starts a blob upload and cancels it at once, not waiting for
    /// the cancel (ECR checks the start as ecr:InitiateLayerUpload). Nothing is stored.
    pub async fn probe_upload(&self, repo: &str) -> Result<()> {
        let url = format!("{}/{repo}/blobs/uploads/", self.base);
        let what = format!("starting an upload to {}/{repo}", self.host);
        // Under the one retry policy, as the sign-in beside it: a registry that is slow to come up is
        // waited for, and one that stays down is named by the sign-in.
        let response = self
            .retried(&what, || {
                self.send(&what, self.request(Method::POST, &url).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            // ECR says it in its own words (NAME_UNKNOWN: "The repository with name 'x' does not exist …").
            let body = super::http::read_limited(response, super::http::ERROR_LIMIT)
                .await
                .unwrap_or_default();
            bail!(
                "{what}: the registry answered 404{}: the repository {repo} does not exist\n  fix: create it, or set \
                 PLUGIN_CREATE_REPOSITORY=true",
                super::http::registry_error(&body)
            );
        }
        let location = self.location(&response, &what)?;
        self.cancel_upload(&location);
        Ok(())
    }

    /// Cancel the upload session at `location` without waiting (a round trip the run need not wait for);
    /// a cancel that fails or is cut short by the end of the run leaves a session the registry expires.
    fn cancel_upload(&self, location: &str) {
        if let Ok(cancel) = self.request(Method::DELETE, location).build() {
            let http = self.http.clone();
            tokio::spawn(async move { http.execute(cancel).await });
        }
    }

    /// The upload rate to `repo`: [`Uplink::PROBE`] bytes sent in one PATCH into an upload session, timed
    /// to the registry's answer less a round trip, the session then cancelled (not waited for) so nothing is stored. `None`
    /// when any step fails: the measurement is a hint, never a reason to fail.
    pub async fn measure_uplink(&self, repo: &str) -> Option<Uplink> {
        let url = format!("{}/{repo}/blobs/uploads/", self.base);
        let what = format!("measuring the upload to {}/{repo}", self.host);
        let asked = std::time::Instant::now();
        let started = self
            .send(&what, self.request(Method::POST, &url).header(CONTENT_LENGTH, 0))
            .await
            .ok()?;
        let location = self.location(&started, &what).ok()?;
        // The round trip (the POST's answer) is not the link's rate: it is taken off the PATCH's time,
        // which keeps at least half of it (a POST that also opened the connection).
        let round_trip = asked.elapsed().as_secs_f64();
        let sent = std::time::Instant::now();
        let patched = self
            .send(
                &what,
                self.request(Method::PATCH, &location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(vec![0u8; Uplink::PROBE]),
            )
            .await;
        let took = sent.elapsed().as_secs_f64();
        let took = (took - round_trip).max(took / 2.0);
        let cancel_at = patched
            .as_ref()
            .ok()
            .and_then(|r| self.location(r, &what).ok())
            .unwrap_or(location);
        self.cancel_upload(&cancel_at);
        patched.ok().filter(|r| r.status().is_success())?;
        Some(Uplink {
            host: self.host.clone(),
            bytes_per_second: Uplink::PROBE as f64 / took.max(1e-6),
        })
    }

    /// Whether `repo` holds the blob `digest` (a HEAD).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, HttpFailure> {
        let url = format!("{}/{repo}/blobs/{digest}", self.base);
        let what = format!("checking blob {digest} in {}/{repo}", self.host);
        let response = self
            .retried(&what, || self.send(&what, self.request(Method::HEAD, &url)))
            .await?;
        Ok(response.status().is_success())
    }

    /// The upload session at `location` gets `body` (`length` bytes) in one PATCH, then is closed with its
    /// digest: one chunk, so ECR's 5 MiB minimum for chunks does not apply.
    pub(super) async fn send_blob(
        &self,
        repo: &str,
        location: &str,
        digest: &str,
        length: u64,
        body: reqwest::Body,
    ) -> Result<(), HttpFailure> {
        let what = format!("uploading blob {digest} to {}/{repo}", self.host);
        let patched = self
            .send(
                &what,
                self.request(Method::PATCH, location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, length)
                    .body(body),
            )
            .await?;
        self.close_upload(&what, &patched, digest).await
    }

    /// Close the upload session the PATCH answer `patched` points at, naming the blob's `digest`.
    pub(super) async fn close_upload(&self, what: &str, patched: &Response, digest: &str) -> Result<(), HttpFailure> {
        let location = self.location(patched, what)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = format!("{location}{separator}digest={digest}");
        self.send(what, self.request(Method::PUT, &done).header(CONTENT_LENGTH, 0))
            .await?;
        Ok(())
    }

    /// Open an upload session in `repo`; its absolute location. A 404 names the missing repository.
    pub(super) async fn start_upload(&self, what: &str, repo: &str) -> Result<String, HttpFailure> {
        let start = format!("{}/{repo}/blobs/uploads/", self.base);
        let response = self
            .send(what, self.request(Method::POST, &start).header(CONTENT_LENGTH, 0))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(HttpFailure {
                message: format!(
                    "{what}: the registry answered 404: the repository {repo} does not exist (PLUGIN_CREATE_REPOSITORY)"
                ),
                retryable: false,
                at: self.host.clone(),
            });
        }
        self.location(&response, what)
    }

    /// Open an upload session in `repo` and send `body` into it as the blob `digest` of `size` bytes.
    pub(super) async fn upload_stream(
        &self,
        what: &str,
        repo: &str,
        digest: &str,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), HttpFailure> {
        let location = self.start_upload(what, repo).await?;
        self.send_blob(repo, &location, digest, size, body).await
    }

    /// Make the local `blob` present in `repo`: skipped when there, else streamed from its file (1 MiB at a
    /// time: memory stays bounded whatever the layer's size), retried under the one policy.
    pub async fn upload_file(&self, repo: &str, blob: &LocalBlob, progress: &Arc<Progress>) -> Result<BlobCopy> {
        if self.blob_exists(repo, &blob.digest).await? {
            progress.advance(blob.size);
            return Ok(BlobCopy::AlreadyThere);
        }
        let what = format!("uploading blob {} to {}/{repo}", blob.digest, self.host);
        let attempt = || async {
            let file = tokio::fs::File::open(&blob.path).await.map_err(|e| HttpFailure {
                message: format!("{what}: reading {}: {e}", blob.path.display()),
                retryable: false,
                at: self.host.clone(),
            })?;
            let progress = progress.clone();
            let chunks = futures_util::stream::unfold((file, progress), |(mut file, progress)| async move {
                match next_piece(&mut file).await {
                    Ok(piece) if piece.is_empty() => None,
                    Ok(piece) => {
                        progress.advance(piece.len() as u64);
                        Some((Ok::<_, std::io::Error>(piece), (file, progress)))
                    }
                    Err(e) => Some((Err(e), (file, progress))),
                }
            });
            let body = reqwest::Body::wrap_stream(chunks);
            self.upload_stream(&what, repo, &blob.digest, blob.size, body).await
        };
        self.retried(&what, attempt).await?;
        Ok(BlobCopy::Uploaded)
    }

    /// Upload the blob being written to `path` while it is written (a layer the step is compressing): the
    /// body follows the file as it grows (no length known: chunked, as `docker push` sends), and the upload
    /// is closed with the digest `done` gives once the file is complete. One attempt and nothing reported:
    /// the caller uploads the finished blob the normal way afterwards, which finds it there when this worked.
    pub async fn upload_growing(
        &self,
        repo: &str,
        path: std::path::PathBuf,
        done: tokio::sync::watch::Receiver<Option<LocalBlob>>,
        progress: &Arc<Progress>,
    ) -> Result<()> {
        let what = format!(
            "uploading {} to {}/{repo} while it is written",
            path.display(),
            self.host
        );
        let location = self.start_upload(&what, repo).await?;
        let file = tokio::fs::File::open(&path).await?;
        let progress = progress.clone();
        let follow = stream::unfold((file, done.clone(), 0u64), move |(mut file, mut done, mut sent)| {
            let progress = progress.clone();
            async move {
                loop {
                    // Whether the writer has finished, known before this read: then a read of 0 is the end.
                    let finished = done.borrow().as_ref().map(|b| b.size);
                    // A writer gone without a blob (a failed compression or check): stop now, not at the end
                    // of the file. (Gone first, then its last value, which can no longer change.)
                    if done.has_changed().is_err() && done.borrow().is_none() {
                        let stopped = std::io::Error::other("the compression or a check stopped");
                        return Some((Err(stopped), (file, done, sent)));
                    }
                    match next_piece(&mut file).await {
                        Ok(piece) if piece.is_empty() => {
                            let now = done.borrow().as_ref().map(|b| b.size);
                            let problem = match at_end(finished, now, done.has_changed().is_err(), sent) {
                                AtEnd::Finished => return None,
                                AtEnd::ReadAgain => continue,
                                // The file grows unannounced (looked at again in 5 ms); its end is
                                // announced, and wakes this at once.
                                AtEnd::Wait => {
                                    tokio::select! {
                                        _ = done.changed() => {}
                                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                                    }
                                    continue;
                                }
                                AtEnd::Short => "the file is shorter than written",
                                AtEnd::Stopped => "the compression or a check stopped",
                            };
                            return Some((Err(std::io::Error::other(problem)), (file, done, sent)));
                        }
                        Ok(piece) => {
                            sent += piece.len() as u64;
                            progress.advance(piece.len() as u64);
                            return Some((Ok(piece), (file, done, sent)));
                        }
                        Err(e) => return Some((Err(e), (file, done, sent))),
                    }
                }
            }
        });
        let patched = self
            .send(
                &what,
                self.request(Method::PATCH, &location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(follow)),
            )
            .await?;
        let digest = done
            .borrow()
            .as_ref()
            .map(|b| b.digest.clone())
            .ok_or_else(|| anyhow!("{what}: the compression or a check stopped"))?;
        Ok(self.close_upload(&what, &patched, &digest).await?)
    }
}

/// `stream` (a blob's bytes from a source) checked as it passes: an error item ends it as soon as it
/// passes the descriptor's size, or, at its end, when it is short or hashes to another digest. The
/// error's message is also left in `refused`, so the caller can tell it from a broken connection.
pub(super) fn verified<S>(
    stream: S,
    blob: &Descriptor,
    what: &str,
    refused: Arc<std::sync::Mutex<Option<String>>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
{
    use sha2::Digest as _;
    let (blob, what) = (blob.clone(), what.to_string());
    let state = (Box::pin(stream), sha2::Sha256::new(), 0u64, false);
    stream::unfold(state, move |(mut inner, mut hasher, mut seen, ended)| {
        let (blob, what, refused) = (blob.clone(), what.clone(), refused.clone());
        async move {
            if ended {
                return None;
            }
            let fail = |message: String| {
                *refused.lock().expect("not poisoned") = Some(message.clone());
                Err(std::io::Error::other(message))
            };
            match inner.next().await {
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if seen > blob.size {
                        let message = format!(
                            "{what}: the source sent more than the blob's {} bytes: refused, nothing of it was \
                             stored",
                            blob.size
                        );
                        return Some((fail(message), (inner, hasher, seen, true)));
                    }
                    hasher.update(&chunk);
                    // Checked with the last byte, before it is passed on: the body is complete once its
                    // length is sent, and the stream may never be asked for its end.
                    if seen == blob.size && !matches_digest(&hasher, &blob.digest) {
                        return Some((fail(mismatch(&what, seen, &hasher, &blob)), (inner, hasher, seen, true)));
                    }
                    Some((Ok(chunk), (inner, hasher, seen, false)))
                }
                Some(Err(e)) => {
                    let e = std::io::Error::other(crate::report::chain(&e));
                    Some((Err(e), (inner, hasher, seen, true)))
                }
                None if seen == blob.size && matches_digest(&hasher, &blob.digest) => None,
                None => Some((fail(mismatch(&what, seen, &hasher, &blob)), (inner, hasher, seen, true))),
            }
        }
    })
}

pub(super) fn hex_of(hasher: &sha2::Sha256) -> String {
    use sha2::Digest as _;
    let hex: String = hasher.clone().finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub(super) fn matches_digest(hasher: &sha2::Sha256, digest: &str) -> bool {
    hex_of(hasher) == digest
}

pub(super) fn mismatch(what: &str, seen: u64, hasher: &sha2::Sha256, blob: &Descriptor) -> String {
    format!(
        "{what}: the source sent {seen} bytes that hash to {}, not the blob ({} bytes): refused, nothing of it was \
         stored\n  fix: the source registry (or a proxy in front of it) serves altered content: check what sits \
         between this step and it",
        hex_of(hasher),
        blob.size
    )
}

/// What the follower of a growing file does when a read gives nothing more.
#[derive(Debug, PartialEq)]
enum AtEnd {
    /// Every byte the writer wrote was read.
    Finished,
    /// The writer finished during the read: read again, now knowing the size.
    ReadAgain,
    /// The writer is still writing: wait a little.
    Wait,
    /// The writer finished, but fewer bytes than it wrote were read.
    Short,
    /// The writer stopped without finishing.
    Stopped,
}

/// The next piece of `file`, up to 1 MiB (memory stays bounded whatever the blob's size), read into
/// capacity never zeroed; empty at the file's end (for now, where it is still being written).
async fn next_piece(file: &mut tokio::fs::File) -> std::io::Result<bytes::Bytes> {
    use tokio::io::AsyncReadExt;
    let mut piece = bytes::BytesMut::with_capacity(1 << 20);
    file.read_buf(&mut piece).await?;
    Ok(piece.freeze())
}

/// `before`: the size the writer had given when the read started (`None`: still writing); `now`: the size
/// it has given now; `writer_gone`: it dropped its end; `sent`: the bytes read so far.
fn at_end(before: Option<u64>, now: Option<u64>, writer_gone: bool, sent: u64) -> AtEnd {
    match (before, now) {
        (Some(size), _) if sent == size => AtEnd::Finished,
        (Some(_), _) => AtEnd::Short,
        (None, Some(_)) => AtEnd::ReadAgain,
        (None, None) if writer_gone => AtEnd::Stopped,
        (None, None) => AtEnd::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_that_finishes_during_the_read_is_read_again_never_taken_for_stopped() {
        assert_eq!(at_end(Some(10), Some(10), true, 10), AtEnd::Finished);
        assert_eq!(at_end(Some(10), Some(10), true, 7), AtEnd::Short);
        // The race the bench's bytes showed: finished (and gone) between the check and the read.
        assert_eq!(at_end(None, Some(10), true, 7), AtEnd::ReadAgain);
        assert_eq!(at_end(None, None, true, 7), AtEnd::Stopped);
        assert_eq!(at_end(None, None, false, 7), AtEnd::Wait);
    }
}
