//! Registry client: the distribution API (`/v2/`) of one registry, authenticated with the run's ECR token.
//!
//! Reads and writes manifests and blobs registry to registry, with no daemon in the path: blobs stream from
//! the source response into the target request (never a whole layer in memory or on disk), a blob already
//! in the target is skipped, and same-registry copies try a cross-repository mount first. Writes are
//! retried with jittered exponential backoff on 429, 5xx and broken connections. HTTPS, except for loopback
//! hosts, which the Docker Engine also treats as plain-HTTP registries.

use crate::token::RegistryLogin;
use anyhow::{Result, anyhow, bail};
use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::time::Duration;

/// Every manifest media type a tag can point at.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A manifest exactly as the registry stored it: copying these bytes keeps the digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type.contains("index") || self.media_type.contains("manifest.list")
    }

    /// The config blob's digest of an image manifest (the image id), `None` for an index.
    pub fn config_digest(&self) -> Option<String> {
        if self.is_index() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&self.bytes).ok()?;
        json["config"]["digest"].as_str().map(String::from)
    }

    /// The content this manifest points at: child manifests of an index, or config and layers.
    pub fn references(&self) -> Result<Vec<Descriptor>> {
        let json: serde_json::Value = serde_json::from_slice(&self.bytes)?;
        let descriptor = |v: &serde_json::Value| -> Result<Descriptor> {
            Ok(Descriptor {
                digest: v["digest"]
                    .as_str()
                    .ok_or_else(|| anyhow!("a descriptor without a digest"))?
                    .to_string(),
                size: v["size"].as_u64().unwrap_or(0),
            })
        };
        if self.is_index() {
            json["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(descriptor)
                .collect()
        } else {
            if json["schemaVersion"].as_u64() == Some(1) {
                bail!("schema 1 manifests are not supported: push the image again with a current engine");
            }
            let mut all = vec![descriptor(&json["config"])?];
            for layer in json["layers"].as_array().into_iter().flatten() {
                all.push(descriptor(layer)?);
            }
            Ok(all)
        }
    }
}

/// A blob or manifest that a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub digest: String,
    pub size: u64,
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
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpFailure {}

/// Fetches a new login for the same registry (a new ECR token).
pub type Refresh =
    std::sync::Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<RegistryLogin>> + Send + Sync>;

pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: std::sync::Mutex<HeaderValue>,
    /// Used once, on the first 401: the token is fetched again and the request retried.
    refresh: Option<Refresh>,
    refreshed: std::sync::atomic::AtomicBool,
    pub host: String,
    retry: ExponentialBuilder,
    /// `PLUGIN_TIMEOUT`: no request waits longer for an answer, and no retry starts after it has passed
    /// since the first attempt, so an operation takes about this long at most, not this long per attempt.
    timeout: Duration,
}

impl RegistryClient {
    pub fn new(login: &RegistryLogin, timeout: Duration) -> Result<RegistryClient> {
        let host = &login.registry.host;
        let scheme = if is_loopback(host) { "http" } else { "https" };
        let auth = basic_auth(login)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(timeout)
            .user_agent(concat!("ecr-step/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let retry = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(5)
            .with_jitter();
        Ok(RegistryClient {
            http,
            base: format!("{scheme}://{host}/v2"),
            auth: std::sync::Mutex::new(auth),
            refresh: None,
            refreshed: std::sync::atomic::AtomicBool::new(false),
            host: host.clone(),
            retry,
            timeout,
        })
    }

    /// Fetch the token again (once) when the registry answers 401, as an expired token does.
    pub fn with_refresh(mut self, refresh: Refresh) -> RegistryClient {
        self.refresh = Some(refresh);
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
        if url.starts_with(&self.base) {
            builder.header(AUTHORIZATION, self.auth.lock().expect("not poisoned").clone())
        } else {
            builder
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
            } else {
                format!("{what}: {}", crate::aws_error::chain(&e))
            },
            retryable: true,
        })?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(response);
        }
        let code = status.as_u16();
        if code == 401
            && let Some(refresh) = &self.refresh
            && !self.refreshed.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let login = refresh().await.map_err(|e| HttpFailure {
                message: format!("{what}: HTTP 401, and fetching a new token failed: {e:#}"),
                retryable: false,
            })?;
            *self.auth.lock().expect("not poisoned") = basic_auth(&login).map_err(|e| HttpFailure {
                message: format!("{what}: {e}"),
                retryable: false,
            })?;
            println!("token: fetched again for {} after HTTP 401; retrying", self.host);
            return Err(HttpFailure {
                message: format!("{what}: HTTP 401 (token refreshed)"),
                retryable: true,
            });
        }
        let body = response.text().await.unwrap_or_default();
        let detail = registry_error(&body);
        let message = match code {
            401 | 403 => format!(
                "{what}: the registry {} refused the ECR token (HTTP {code}{detail}): check the identity may read and \
                 write this repository (AmazonEC2ContainerRegistryPowerUser grants it) and that the registry belongs \
                 to the token's account or allows it",
                self.host
            ),
            _ => format!("{what}: HTTP {code}{detail}"),
        };
        Err(HttpFailure {
            message,
            retryable: code == 429 || code >= 500,
        })
    }

    /// Retry `op` with jittered backoff while its failure is retryable.
    async fn retried<T, F, Fut>(&self, op: F) -> Result<T, HttpFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpFailure>>,
    {
        let started = std::time::Instant::now();
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let mut op = op;
        let counted = || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            op()
        };
        counted
            .retry(self.retry)
            .when(|e: &HttpFailure| e.retryable && started.elapsed() < self.timeout)
            .await
            .map_err(|mut e| {
                if e.retryable {
                    e.message = format!(
                        "{} (still failing after {} attempts in {:.0}s; PLUGIN_TIMEOUT={}s bounds the retries)\n  \
                         fix: the registry {} is failing or unreachable: check that it is up and reachable from \
                         here, then run again (or raise PLUGIN_TIMEOUT)",
                        e.message,
                        attempts.load(std::sync::atomic::Ordering::SeqCst),
                        started.elapsed().as_secs_f64(),
                        self.timeout.as_secs(),
                        self.host
                    );
                }
                e
            })
    }

    /// Whether the registry accepts the token (`GET /v2/`).
    pub async fn ping(&self) -> Result<()> {
        let url = format!("{}/", self.base);
        let what = format!("signing in to {}", self.host);
        self.retried(|| self.send(&what, self.request(Method::GET, &url)))
            .await?;
        Ok(())
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
            .retried(|| self.send(&what, self.request(Method::HEAD, &url).header(ACCEPT, MANIFEST_TYPES)))
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
            .retried(|| self.send(&what, self.request(Method::GET, &url).header(ACCEPT, MANIFEST_TYPES)))
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
        let bytes = response
            .bytes()
            .await
            .map_err(|e| anyhow!("{what}: {}", crate::aws_error::chain(&e)))?
            .to_vec();
        let digest = sha256(&bytes);
        if let Some(claimed) = claimed.filter(|c| *c != digest) {
            bail!(
                "{what}: the registry says {claimed} but the manifest it sent is {digest}\n  fix: the registry {} or a \
                 proxy in front of it altered the manifest: check what sits between this step and it",
                self.host
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| anyhow!("{what}: not JSON ({e})"))?;
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

    /// Store `manifest` under `reference` (a tag, or its own digest) in `repo`, byte for byte.
    pub async fn put_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) -> Result<()> {
        let url = format!("{}/{repo}/manifests/{reference}", self.base);
        let what = format!("writing {}/{repo}:{reference}", self.host);
        let response = self
            .retried(|| {
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
            .retried(|| self.send(&what, self.request(Method::HEAD, &url)))
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
    ) -> Result<BlobCopy> {
        if self.blob_exists(repo, &blob.digest).await? {
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
                return Ok(BlobCopy::Mounted);
            }
            let location = self.location(&response, &what)?;
            self.upload(repo, &location, source, source_repo, blob).await?;
            Ok(BlobCopy::Uploaded)
        };
        Ok(self.retried(copy).await?)
    }

    /// Stream the blob from the source straight into the upload session at `location`.
    async fn upload(
        &self,
        repo: &str,
        location: &str,
        source: &RegistryClient,
        source_repo: &str,
        blob: &Descriptor,
    ) -> Result<(), HttpFailure> {
        let url = format!("{}/{source_repo}/blobs/{}", source.base, blob.digest);
        let what = format!("reading blob {} from {}/{source_repo}", blob.digest, source.host);
        let download = source.send(&what, source.request(Method::GET, &url)).await?;
        if download.status() == StatusCode::NOT_FOUND {
            return Err(HttpFailure {
                message: format!("{what}: the source registry has no such blob"),
                retryable: false,
            });
        }
        let what = format!("uploading blob {} to {}/{repo}", blob.digest, self.host);
        let length = download.content_length().unwrap_or(blob.size);
        let body = reqwest::Body::wrap_stream(download.bytes_stream());
        let patched = self
            .send(
                &what,
                self.request(Method::PATCH, location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, length)
                    .body(body),
            )
            .await?;
        let location = self.location(&patched, &what)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = format!("{location}{separator}digest={}", blob.digest);
        self.send(&what, self.request(Method::PUT, &done).header(CONTENT_LENGTH, 0))
            .await?;
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
            })?;
        Ok(if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            let origin = self.base.trim_end_matches("/v2");
            format!("{origin}{location}")
        })
    }
}

/// `Authorization: Basic …` for a login, marked sensitive.
fn basic_auth(login: &RegistryLogin) -> Result<HeaderValue> {
    let basic = STANDARD.encode(format!("{}:{}", login.username, login.password.expose()));
    let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `: CODE message` from a registry's JSON error body, empty when there is none.
fn registry_error(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match json["errors"].as_array().and_then(|e| e.first()) {
        Some(e) => format!(
            ": {} {}",
            e["code"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ),
        None => String::new(),
    }
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
    fn manifests_list_what_they_point_at() {
        let image = Manifest {
            bytes: br#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":1},"layers":[{"digest":"sha256:l1","size":2},{"digest":"sha256:l2","size":3}]}"#.to_vec(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: String::new(),
        };
        let digests: Vec<String> = image.references().unwrap().into_iter().map(|d| d.digest).collect();
        assert_eq!(digests, vec!["sha256:c", "sha256:l1", "sha256:l2"]);
        let index = Manifest {
            bytes:
                br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:a","size":9},{"digest":"sha256:b","size":9}]}"#
                    .to_vec(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: String::new(),
        };
        assert!(index.is_index());
        assert_eq!(index.references().unwrap().len(), 2);
    }

    #[test]
    fn digests_and_registry_errors() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            registry_error(r#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            ": DENIED no"
        );
        assert_eq!(registry_error("<html>"), "");
    }
}
