//! Manifests and the referrers API: read (by tag or digest, a digest enforced, bounded), write byte for
//! byte, and read back after a write ([`RegistryClient::confirm_tag`]).

use super::RegistryClient;
use super::transport::MANIFEST_LIMIT;
use crate::domain::manifest::{MANIFEST_TYPES, Manifest, sha256};
use anyhow::{Result, anyhow, bail};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

impl RegistryClient {
    /// Whether the registry accepts the token (`GET /v2/`).
    pub async fn ping(&self) -> Result<()> {
        let url = format!("{}/", self.base);
        let what = format!("signing in to {}", self.host);
        self.retried(&what, || self.send(&what, self.request(Method::GET, &url)))
            .await?;
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

    /// Up to `n` tags of `repo` (`/tags/list`), empty when the repository does not exist.
    pub async fn tags(&self, repo: &str, n: usize) -> Result<Vec<String>> {
        let url = format!("{}/{repo}/tags/list?n={n}", self.base);
        let what = format!("listing the tags of {}/{repo}", self.host);
        let response = self
            .retried(&what, || self.send(&what, self.request(Method::GET, &url)))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let body = self.body(&what, response, MANIFEST_LIMIT).await?;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(json["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .take(n)
            .collect())
    }

    /// The blob `digest` of `repo`, read whole up to `limit` bytes and checked against its digest (an image
    /// config); `None` when the registry does not have it.
    pub async fn small_blob(&self, repo: &str, digest: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let url = format!("{}/{repo}/blobs/{digest}", self.base);
        let what = format!("reading blob {digest} of {}/{repo}", self.host);
        let response = self
            .retried(&what, || self.send(&what, self.request(Method::GET, &url)))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = self.body(&what, response, limit).await?;
        if sha256(&bytes) != digest {
            bail!(
                "{what}: the registry sent bytes that hash to {}, not the blob",
                sha256(&bytes)
            );
        }
        Ok(Some(bytes))
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

    /// The images of the index `index` at `repo` (its entries that are no artifact), each with the SOCI
    /// index pushed beside it (`com.amazon.soci.image-manifest-digest` names it), if any.
    pub async fn index_images(&self, repo: &str, index: &Manifest) -> Result<Vec<(Manifest, Option<Manifest>)>> {
        let json: serde_json::Value = serde_json::from_slice(&index.bytes)?;
        let entries = json["manifests"].as_array().cloned().unwrap_or_default();
        let mut images = Vec::new();
        for entry in entries.iter().filter(|e| e["artifactType"].is_null()) {
            let Some(digest) = entry["digest"].as_str() else {
                continue;
            };
            let Some(image) = self.manifest(repo, digest).await? else {
                continue;
            };
            if image.is_index() {
                continue;
            }
            let soci = entries.iter().find(|e| {
                e["artifactType"] == crate::domain::soci::INDEX_TYPE
                    && e["annotations"]["com.amazon.soci.image-manifest-digest"] == digest
            });
            let soci = match soci.and_then(|e| e["digest"].as_str()) {
                Some(d) => self.manifest(repo, d).await?,
                None => None,
            };
            images.push((image, soci));
        }
        Ok(images)
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
            held => Err(self.not_written(repo, tag, held.as_deref(), digest)),
        }
    }

    /// Why `repo:tag`, read back after a write of `digest`, does not hold it (`held`: what it holds).
    pub fn not_written(&self, repo: &str, tag: &str, held: Option<&str>, digest: &str) -> anyhow::Error {
        match held {
            Some(held) => anyhow!(
                "{}/{repo}:{tag} holds {held}, not the {digest} just written: another writer replaced the tag \
                 meanwhile, or the registry did not store the write\n  fix: run writes to the same tag one at a \
                 time, then run again",
                self.host
            ),
            None => anyhow!(
                "{}/{repo}:{tag} does not exist when read back, although the registry accepted the write of \
                 {digest}: the registry did not store it\n  fix: check the registry (or the proxy in front of it) \
                 at {}, then run again",
                self.host,
                self.host
            ),
        }
    }
}
