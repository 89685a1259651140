//! Distribution: the registry API (`/v2/`) of one registry, authenticated with the run's ECR token. An
//! adapter: uses `domain`, `report` and `retry`, never another adapter.
//!
//! Reads and writes manifests and blobs registry to registry, with no daemon in the path: blobs stream from
//! the source response into the target request (never a whole layer in memory or on disk), a blob already
//! in the target is skipped, and same-registry copies try a cross-repository mount first. Every answer is
//! classified once ([`classify`]): 429, 5xx and broken connections are retried under the one retry policy
//! (`crate::retry`), a 401 renews the token once through the destination's [`Relogin`], anything else
//! fails naming the registry. HTTPS, except for loopback hosts, which the Docker Engine also treats as
//! plain-HTTP registries.
//!
//! A registry's answers are untrusted: every body read whole has a limit ([`MANIFEST_LIMIT`],
//! [`ERROR_LIMIT`]); a manifest asked for by digest must hash to it; every blob streamed from a source is
//! hashed as it passes and the copy fails unless it matches its descriptor (digest and size), before any
//! manifest that names it is written. Redirects are followed only to HTTPS (or loopback), at most
//! [`MAX_REDIRECTS`], and never with the token to another host. A client made with
//! [`RegistryClient::anonymous`] sends no credentials at all.

use crate::domain::login::{RegistryLogin, Relogin};
use crate::domain::manifest::{Descriptor, MANIFEST_TYPES, Manifest, sha256};
use crate::domain::source::LocalBlob;
use crate::report::Progress;
use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Blobs copied at once per manifest.
const PARALLEL_BLOBS: usize = 4;
/// The largest manifest, index or referrers list read from a registry (ECR's own limit for a manifest).
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// The most of an error answer's body read, for its message.
pub const ERROR_LIMIT: u64 = 64 << 10;
/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// What a registry's HTTP status means for the request that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Done,
    /// 404: the manifest, blob or repository is not there (the caller decides what that means).
    Absent,
    /// 401: the token was refused; renewed once, then a failure.
    Refused,
    /// 429 or 5xx: another attempt may succeed.
    Retry,
    /// Anything else: a failure another attempt would repeat.
    Fail,
}

/// Classify a status: the one place that decides retry, renew or fail.
pub fn classify(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Done,
        404 => Answer::Absent,
        401 => Answer::Refused,
        429 | 500..=599 => Answer::Retry,
        _ => Answer::Fail,
    }
}

/// How a blob reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCopy {
    AlreadyThere,
    Mounted,
    Uploaded,
}

/// A failed request; `retryable` when another attempt may succeed (429, 5xx, a broken connection).
#[derive(Debug)]
pub struct HttpFailure {
    pub message: String,
    pub retryable: bool,
    /// The registry that failed (a copy's source, or its target), for the fix.
    pub at: String,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpFailure {}

pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    /// `None`: anonymous (a source outside ECR, which never gets the ECR token).
    auth: std::sync::Mutex<Option<HeaderValue>>,
    /// Renews the token after a 401 (once per destination: the renewal itself refuses a second time).
    relogin: Option<Arc<dyn Relogin>>,
    pub host: String,
    /// The account the token was issued for, for messages.
    token_account: Option<String>,
    /// `PLUGIN_TIMEOUT`: no request waits longer for an answer, and no retry starts after it has passed
    /// since the first attempt, so an operation takes about this long at most, not this long per attempt.
    timeout: Duration,
}

impl RegistryClient {
    pub fn new(login: &RegistryLogin, timeout: Duration) -> Result<RegistryClient> {
        let auth = basic_auth(login)?;
        RegistryClient::build(&login.registry.host, Some(auth), login.token_account.clone(), timeout)
    }

    /// A client that sends no credentials: for a registry that is neither ECR nor a destination.
    pub fn anonymous(host: &str, timeout: Duration) -> Result<RegistryClient> {
        RegistryClient::build(host, None, None, timeout)
    }

    fn build(
        host: &str,
        auth: Option<HeaderValue>,
        token_account: Option<String>,
        timeout: Duration,
    ) -> Result<RegistryClient> {
        let scheme = if is_loopback(host) { "http" } else { "https" };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(timeout)
            .user_agent(concat!("ecr-step/", env!("CARGO_PKG_VERSION")))
            .redirect(redirects())
            .build()?;
        Ok(RegistryClient {
            http,
            base: format!("{scheme}://{host}/v2"),
            auth: std::sync::Mutex::new(auth),
            relogin: None,
            host: host.to_string(),
            token_account,
            timeout,
        })
    }

    /// Whether requests carry credentials.
    pub fn signed_in(&self) -> bool {
        self.auth.lock().expect("not poisoned").is_some()
    }

    /// Renew the token through `relogin` when the registry answers 401, as it does to an expired token.
    pub fn with_relogin(mut self, relogin: Arc<dyn Relogin>) -> RegistryClient {
        self.relogin = Some(relogin);
        self
    }

    /// Same registry (and so a candidate for a cross-repository mount).
    pub fn same_registry(&self, other: &RegistryClient) -> bool {
        self.host == other.host
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        // Only our own registry gets the token; an upload location on another host (a redirect to
        // storage) does not.
        let builder = self.http.request(method, url);
        match self.auth.lock().expect("not poisoned").clone() {
            Some(auth) if url.starts_with(&self.base) => builder.header(AUTHORIZATION, auth),
            _ => builder,
        }
    }

    async fn send(&self, what: &str, request: RequestBuilder) -> Result<Response, HttpFailure> {
        let response = request.send().await.map_err(|e| HttpFailure {
            message: if e.is_timeout() {
                format!(
                    "{what}: the registry {} did not answer within {}s (PLUGIN_TIMEOUT)",
                    self.host,
                    self.timeout.as_secs()
                )
            } else if e.is_redirect() {
                format!(
                    "{what}: the registry {} redirected the request, and the redirect was refused ({}): the step \
                     follows at most {MAX_REDIRECTS} redirects, only to HTTPS\n  fix: check the registry {} (or \
                     the proxy in front of it)",
                    self.host,
                    crate::report::chain(&e),
                    self.host
                )
            } else {
                format!("{what}: {}", crate::report::chain(&e))
            },
            retryable: !e.is_redirect(),
            at: self.host.clone(),
        })?;
        let code = response.status().as_u16();
        let answer = classify(code);
        if matches!(answer, Answer::Done | Answer::Absent) {
            return Ok(response);
        }
        if answer == Answer::Refused
            && let Some(relogin) = &self.relogin
            && let Ok(login) = relogin.relogin().await
        {
            *self.auth.lock().expect("not poisoned") = Some(basic_auth(&login).map_err(|e| HttpFailure {
                message: format!("{what}: {e}"),
                retryable: false,
                at: self.host.clone(),
            })?);
            crate::report::token_refreshed(&self.host, "HTTP 401");
            return Err(HttpFailure {
                message: format!("{what}: HTTP 401 (token fetched again)"),
                retryable: true,
                at: self.host.clone(),
            });
        }
        let body = read_limited(response, ERROR_LIMIT).await.unwrap_or_default();
        let detail = registry_error(&body);
        let message = match code {
            401 | 403 if !self.signed_in() => format!(
                "{what}: the registry {} refused anonymous access (HTTP {code}{detail}); no credentials were sent, \
                 since the run's ECR token goes only to ECR registries and to the destinations\n  fix: for an ECR \
                 registry, write its ECR host name (<account>.dkr.ecr.<region>.amazonaws.com), or set \
                 PLUGIN_READ_ROLE_ARN to a role of its account",
                self.host
            ),
            401 | 403 => format!(
                "{what}: the registry {} refused the ECR token, issued for account {} (HTTP {code}{detail}): check \
                 the identity may read and write this repository (AmazonEC2ContainerRegistryPowerUser grants it) \
                 and that PLUGIN_REGISTRY names a registry of that account, or one whose policy allows it",
                self.host,
                self.token_account.as_deref().unwrap_or("unknown")
            ),
            _ => format!("{what}: HTTP {code}{detail}"),
        };
        Err(HttpFailure {
            message,
            retryable: answer == Answer::Retry,
            at: self.host.clone(),
        })
    }

    /// `op` under the one retry policy; a failure that outlived it says so, with the fix.
    async fn retried<T, F, Fut>(&self, what: &str, op: F) -> Result<T, HttpFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpFailure>>,
    {
        crate::retry::run(what, self.timeout, op, |e: &HttpFailure| e.retryable)
            .await
            .map_err(|gave_up| {
                let mut e = gave_up.error;
                if e.retryable {
                    e.message = format!(
                        "{} (still failing after {} attempts in {:.0}s; PLUGIN_TIMEOUT={}s bounds the retries)\n  \
                         fix: the registry {} is failing or unreachable: check that it is up and reachable from \
                         here, then run again (or raise PLUGIN_TIMEOUT)",
                        e.message,
                        gave_up.attempts,
                        gave_up.elapsed.as_secs_f64(),
                        self.timeout.as_secs(),
                        e.at
                    );
                }
                e
            })
    }

    /// Whether the registry accepts the token (`GET /v2/`).
    pub async fn ping(&self) -> Result<()> {
        let url = format!("{}/", self.base);
        let what = format!("signing in to {}", self.host);
        self.retried(&what, || self.send(&what, self.request(Method::GET, &url)))
            .await?;
        Ok(())
    }

    /// The body of `response`, at most `limit` bytes; a larger one fails naming the registry.
    async fn body(&self, what: &str, response: Response, limit: u64) -> Result<Vec<u8>> {
        read_limited(response, limit).await.map_err(|e| {
            anyhow!(
                "{what}: the registry {} sent {e}: refused\n  fix: check the registry {} (or a proxy in front of it)",
                self.host,
                self.host
            )
        })
    }

    /// Whether the token may write to `repo`: starts a blob upload and cancels it at once (what ECR checks
    /// as ecr:InitiateLayerUpload). Nothing is stored.
    pub async fn probe_upload(&self, repo: &str) -> Result<()> {
        let url = format!("{}/{repo}/blobs/uploads/", self.base);
        let what = format!("starting an upload to {}/{repo}", self.host);
        let response = self
            .send(&what, self.request(Method::POST, &url).header(CONTENT_LENGTH, 0))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            bail!("{what}: the registry answered 404: the repository does not exist");
        }
        let location = self.location(&response, &what)?;
        let _ = self
            .send("cancelling the probe upload", self.request(Method::DELETE, &location))
            .await;
        Ok(())
    }

    /// The digest `repo:reference` points at, `None` when the tag (or the repository) does not exist.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let url = format!("{}/{repo}/manifests/{reference}", self.base);
        let what = format!("reading {}/{repo}:{reference}", self.host);
        let response = self
            .retried(&what, || {
                self.send(&what, self.request(Method::HEAD, &url).header(ACCEPT, MANIFEST_TYPES))
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                anyhow!(
                    "the registry {} answered {repo}:{reference} without a digest",
                    self.host
                )
            })?;
        Ok(Some(digest.to_string()))
    }

    /// The manifest `repo:reference` (a tag or a digest), `None` when it does not exist. Its digest is
    /// computed from the bytes, and must match what the registry says.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Option<Manifest>> {
        let url = format!("{}/{repo}/manifests/{reference}", self.base);
        let what = format!("reading {}/{repo}:{reference}", self.host);
        let response = self
            .retried(&what, || {
                self.send(&what, self.request(Method::GET, &url).header(ACCEPT, MANIFEST_TYPES))
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let claimed = header("docker-content-digest");
        let content_type = header("content-type");
        let bytes = self.body(&what, response, MANIFEST_LIMIT).await?;
        let digest = sha256(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            bail!(
                "{what}: the registry {} sent a manifest whose bytes hash to {digest}, not the {reference} asked \
                 for: refused, since a pinned digest promises exactly those bytes\n  fix: the registry (or a proxy \
                 in front of it) serves altered content: check what sits between this step and {}",
                self.host,
                self.host
            );
        }
        if let Some(claimed) = claimed.filter(|c| *c != digest) {
            bail!(
                "{what}: the registry says {claimed} but the manifest it sent is {digest}\n  fix: the registry {} or a \
                 proxy in front of it altered the manifest: check what sits between this step and it",
                self.host
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!(
                "{what}: not JSON ({e}); it starts \"{}\"",
                crate::domain::excerpt(&bytes, 60)
            )
        })?;
        let media_type = body["mediaType"]
            .as_str()
            .map(String::from)
            .or(content_type)
            .ok_or_else(|| anyhow!("{what}: the manifest has no media type"))?;
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// The image manifest of image `image_id` at `repo@digest`: the manifest itself, or, when `digest` names
    /// an index (a multi-platform image), the child whose config is `image_id`. `None` when neither is there.
    pub async fn image_manifest(&self, repo: &str, digest: &str, image_id: &str) -> Result<Option<Manifest>> {
        let Some(manifest) = self.manifest(repo, digest).await? else {
            return Ok(None);
        };
        if !manifest.is_index() {
            return Ok(Some(manifest));
        }
        for child in manifest.references()? {
            if let Some(child) = self.manifest(repo, &child.digest).await?
                && child.config_digest().as_deref() == Some(image_id)
            {
                return Ok(Some(child));
            }
        }
        Ok(None)
    }

    /// The OCI 1.1 referrers API: the index of the manifests whose subject is `digest`, `None` when the
    /// registry has no such API (it answers 404, as the distribution registry 2.8 does).
    pub async fn referrers(&self, repo: &str, digest: &str) -> Result<Option<serde_json::Value>> {
        let url = format!("{}/{repo}/referrers/{digest}", self.base);
        let what = format!("listing the referrers of {}/{repo}@{digest}", self.host);
        let response = self
            .retried(&what, || {
                self.send(
                    &what,
                    self.request(Method::GET, &url)
                        .header(ACCEPT, "application/vnd.oci.image.index.v1+json"),
                )
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = self.body(&what, response, MANIFEST_LIMIT).await?;
        let index: serde_json::Value = serde_json::from_slice(&body).map_err(|e| anyhow!("{what}: not JSON ({e})"))?;
        Ok(Some(index))
    }

    /// Store `manifest` under `reference` (a tag, or its own digest) in `repo`, byte for byte.
    pub async fn put_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) -> Result<()> {
        let url = format!("{}/{repo}/manifests/{reference}", self.base);
        let what = format!("writing {}/{repo}:{reference}", self.host);
        let response = self
            .retried(&what, || {
                let request = self
                    .request(Method::PUT, &url)
                    .header(CONTENT_TYPE, &manifest.media_type)
                    .body(manifest.bytes.clone());
                self.send(&what, request)
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            bail!("{what}: the registry answered 404: the repository {repo} does not exist (PLUGIN_CREATE_REPOSITORY)");
        }
        Ok(())
    }

    /// Read `repo:tag` back after a write and require `digest` there: a registry that answers a write with
    /// success but stores nothing (or another writer that replaced the tag meanwhile) is caught here, before
    /// the tag is reported as landed.
    pub async fn confirm_tag(&self, repo: &str, tag: &str, digest: &str) -> Result<()> {
        match self.manifest_digest(repo, tag).await? {
            Some(held) if held == digest => Ok(()),
            Some(held) => bail!(
                "{}/{repo}:{tag} holds {held}, not the {digest} just written: another writer replaced the tag \
                 meanwhile, or the registry did not store the write\n  fix: run writes to the same tag one at a \
                 time, then run again",
                self.host
            ),
            None => bail!(
                "{}/{repo}:{tag} does not exist when read back, although the registry accepted the write of \
                 {digest}: the registry did not store it\n  fix: check the registry (or the proxy in front of it) \
                 at {}, then run again",
                self.host,
                self.host
            ),
        }
    }

    async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, HttpFailure> {
        let url = format!("{}/{repo}/blobs/{digest}", self.base);
        let what = format!("checking blob {digest} in {}/{repo}", self.host);
        let response = self
            .retried(&what, || self.send(&what, self.request(Method::HEAD, &url)))
            .await?;
        Ok(response.status().is_success())
    }

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
    async fn upload(
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

    /// The upload session at `location` gets `body` (`length` bytes) in one PATCH, then is closed with its
    /// digest: one chunk, so ECR's 5 MiB minimum for chunks does not apply.
    async fn send_blob(
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
    async fn close_upload(&self, what: &str, patched: &Response, digest: &str) -> Result<(), HttpFailure> {
        let location = self.location(patched, what)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = format!("{location}{separator}digest={digest}");
        self.send(what, self.request(Method::PUT, &done).header(CONTENT_LENGTH, 0))
            .await?;
        Ok(())
    }

    /// Open an upload session in `repo`; its absolute location. A 404 names the missing repository.
    async fn start_upload(&self, what: &str, repo: &str) -> Result<String, HttpFailure> {
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

    /// Make the local `blob` present in `repo`: skipped when there, else streamed from its file (1 MiB at a
    /// time: memory stays bounded whatever the layer's size), retried under the one policy.
    pub async fn upload_file(&self, repo: &str, blob: &LocalBlob, progress: &Arc<Progress>) -> Result<BlobCopy> {
        if self.blob_exists(repo, &blob.digest).await? {
            progress.advance(blob.size);
            return Ok(BlobCopy::AlreadyThere);
        }
        let what = format!("uploading blob {} to {}/{repo}", blob.digest, self.host);
        let attempt = || async {
            let location = self.start_upload(&what, repo).await?;
            let file = tokio::fs::File::open(&blob.path).await.map_err(|e| HttpFailure {
                message: format!("{what}: reading {}: {e}", blob.path.display()),
                retryable: false,
                at: self.host.clone(),
            })?;
            let progress = progress.clone();
            let chunks = futures_util::stream::unfold((file, progress), |(mut file, progress)| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 1 << 20];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        progress.advance(n as u64);
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (file, progress)))
                    }
                    Err(e) => Some((Err(e), (file, progress))),
                }
            });
            self.send_blob(
                repo,
                &location,
                &blob.digest,
                blob.size,
                reqwest::Body::wrap_stream(chunks),
            )
            .await
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
        let follow = stream::unfold((file, done.clone(), 0u64), move |(mut file, done, mut sent)| {
            let progress = progress.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    // Whether the writer has finished, known before this read: then a read of 0 is the end.
                    let finished = done.borrow().as_ref().map(|b| b.size);
                    match file.read(&mut buf).await {
                        Ok(0) => match finished {
                            Some(size) if sent == size => return None,
                            Some(_) => {
                                let e = std::io::Error::other("the file is shorter than written");
                                return Some((Err(e), (file, done, sent)));
                            }
                            None if done.has_changed().is_err() => {
                                let e = std::io::Error::other("the compression stopped");
                                return Some((Err(e), (file, done, sent)));
                            }
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        },
                        Ok(n) => {
                            sent += n as u64;
                            progress.advance(n as u64);
                            buf.truncate(n);
                            return Some((Ok(bytes::Bytes::from(buf)), (file, done, sent)));
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
            .ok_or_else(|| anyhow!("{what}: the compression stopped"))?;
        Ok(self.close_upload(&what, &patched, &digest).await?)
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
        let target = self;
        if manifest.is_index() {
            for child in manifest.references()? {
                let child_manifest = source.manifest(source_repo, &child.digest).await?.with_context(|| {
                    format!(
                        "the index names {}, which the source registry does not have",
                        child.digest
                    )
                })?;
                Box::pin(self.copy_image_after(repo, source, source_repo, &child_manifest, landed, progress)).await?;
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

    /// The absolute upload location from a response's `Location` header.
    fn location(&self, response: &Response, what: &str) -> Result<String, HttpFailure> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HttpFailure {
                message: format!("{what}: the registry answered without an upload location"),
                retryable: false,
                at: self.host.clone(),
            })?;
        Ok(if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            let origin = self.base.trim_end_matches("/v2");
            format!("{origin}{location}")
        })
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
            let landed = match target.start_upload(&what, repo).await {
                Ok(location) => target
                    .send_blob(
                        repo,
                        &location,
                        &blob.digest,
                        blob.size,
                        reqwest::Body::wrap_stream(chunks),
                    )
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            landed.then_some(i)
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

/// `Authorization: Basic …` for a login, marked sensitive.
fn basic_auth(login: &RegistryLogin) -> Result<HeaderValue> {
    let basic = STANDARD.encode(format!("{}:{}", login.username, login.password.expose()));
    let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// `: CODE message` from a registry's JSON error body (escaped and shortened), empty when there is none.
fn registry_error(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match json["errors"].as_array().and_then(|e| e.first()) {
        Some(e) => {
            let text = format!(
                "{} {}",
                e["code"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
            format!(": {}", crate::domain::excerpt(text.as_bytes(), 300))
        }
        None => String::new(),
    }
}

/// A response's body, refused past `limit` bytes (by its length when declared, else as it arrives).
async fn read_limited(response: Response, limit: u64) -> Result<Vec<u8>, String> {
    if let Some(length) = response.content_length().filter(|l| *l > limit) {
        return Err(format!("an answer of {length} bytes, more than the {limit} allowed"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| crate::report::chain(&e))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("an answer of more than the {limit} bytes allowed"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The redirect policy: at most [`MAX_REDIRECTS`], only to HTTPS, or to plain HTTP on loopback (a test
/// registry). reqwest drops the `Authorization` header on a redirect to another host.
fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects: a redirect loop"));
        }
        let url = attempt.url();
        let host = url.host_str().unwrap_or_default();
        let allowed = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(host));
        if allowed {
            attempt.follow()
        } else {
            let to = format!("{}://{host}", url.scheme());
            attempt.error(format!("a redirect to {to}, which is not HTTPS"))
        }
    })
}

/// `stream` (a blob's bytes from a source) checked as it passes: an error item ends it as soon as it
/// passes the descriptor's size, or, at its end, when it is short or hashes to another digest. The
/// error's message is also left in `refused`, so the caller can tell it from a broken connection.
fn verified<S>(
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

fn hex_of(hasher: &sha2::Sha256) -> String {
    use sha2::Digest as _;
    let hex: String = hasher.clone().finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn matches_digest(hasher: &sha2::Sha256, digest: &str) -> bool {
    hex_of(hasher) == digest
}

fn mismatch(what: &str, seen: u64, hasher: &sha2::Sha256, blob: &Descriptor) -> String {
    format!(
        "{what}: the source sent {seen} bytes that hash to {}, not the blob ({} bytes): refused, nothing of it was \
         stored\n  fix: the source registry (or a proxy in front of it) serves altered content: check what sits \
         between this step and it",
        hex_of(hasher),
        blob.size
    )
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name == "[::1]" || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_are_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("123456789012.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(!is_loopback("127.example.com"));
    }

    #[test]
    fn every_status_is_classified_once() {
        for (status, answer) in [
            (200, Answer::Done),
            (201, Answer::Done),
            (202, Answer::Done),
            (404, Answer::Absent),
            (401, Answer::Refused),
            (429, Answer::Retry),
            (500, Answer::Retry),
            (502, Answer::Retry),
            (503, Answer::Retry),
            (400, Answer::Fail),
            (403, Answer::Fail),
            (405, Answer::Fail),
        ] {
            assert_eq!(classify(status), answer, "HTTP {status}");
        }
    }

    #[test]
    fn digests_and_registry_errors() {
        assert_eq!(
            registry_error(br#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            ": DENIED no"
        );
        assert_eq!(registry_error(b"<html>"), "");
    }
}
