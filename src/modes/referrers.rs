//! Referrers travel with a promoted image: signatures, SBOMs and attestations (manifests whose `subject`
//! is the image), and what refers to them in turn (a signature on an SBOM), with digests unchanged.
//!
//! Found at the source through the OCI 1.1 referrers API where the registry has it, else through the
//! referrers tag schema (`sha256-<hex>` holding an index), plus cosign's legacy tags (`sha256-<hex>.sig`,
//! `.att`, `.sbom`). ECR's limit (100 per subject) is checked while finding them, before anything is
//! written. At the destination each is made discoverable the same way: a registry with the referrers API
//! indexes a manifest by its `subject` when it is written; otherwise the tag schema's index is updated;
//! cosign's tags are written as tags. A re-run finds everything there and writes nothing.

use crate::domain::manifest::{Manifest, sha256};
use crate::domain::referrers::{self, COSIGN_SUFFIXES, ECR_LIMIT, Found, Referrer, ReferrerFilter, tag_of};
use crate::registry::RegistryClient;
use anyhow::{Result, bail};
use std::collections::BTreeSet;

/// The artifact type a cosign tag stands for, for `PLUGIN_REFERRERS` filters.
fn cosign_type(suffix: &str) -> String {
    format!("application/vnd.dev.cosign.artifact.{suffix}.v1+json")
}

/// How deep referrers may refer to referrers (a signature on an SBOM on an image is 2).
pub const MAX_DEPTH: usize = 8;
/// The most referrers found for one image, all levels together.
pub const MAX_FOUND: usize = 1000;

/// Every referrer of `subject` the filter wants, parents before what refers to them. A source that keeps
/// answering with new referrers is stopped at [`MAX_DEPTH`] levels or [`MAX_FOUND`] referrers.
pub async fn discover(
    source: &RegistryClient,
    repo: &str,
    subject: &str,
    filter: &ReferrerFilter,
) -> Result<Vec<Referrer>> {
    let mut found = Vec::new();
    if *filter == ReferrerFilter::None {
        return Ok(found);
    }
    let mut pending = vec![(subject.to_string(), 0usize)];
    let mut seen = BTreeSet::from([subject.to_string()]);
    while let Some((subject, depth)) = pending.pop() {
        let push = |found: &Vec<Referrer>, pending: &mut Vec<(String, usize)>, digest: &str| -> Result<()> {
            if depth + 1 > MAX_DEPTH {
                bail!(
                    "{}/{repo}: referrers refer to referrers more than {MAX_DEPTH} levels deep (under {subject}): \
                     refused, nothing was written\n  fix: the source keeps answering with new referrers: copy \
                     none (PLUGIN_REFERRERS=none) or only some types, and check the source",
                    source.host
                );
            }
            if found.len() >= MAX_FOUND {
                bail!(
                    "{}/{repo}: more than {MAX_FOUND} referrers found for one image: refused, nothing was \
                     written\n  fix: copy none (PLUGIN_REFERRERS=none) or only some types, and check the source",
                    source.host
                );
            }
            pending.push((digest.to_string(), depth + 1));
            Ok(())
        };
        let index = match source.referrers(repo, &subject).await? {
            Some(index) => Some(index),
            None => source
                .manifest(repo, &tag_of(&subject, None))
                .await?
                .filter(Manifest::is_index)
                .and_then(|m| serde_json::from_slice(&m.bytes).ok()),
        };
        let descriptors: Vec<serde_json::Value> = index
            .map(|i| i["manifests"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default();
        if descriptors.len() > ECR_LIMIT {
            bail!(
                "{}/{repo}@{subject} has {} referrers; ECR keeps at most {ECR_LIMIT} per subject, so nothing was \
                 written\n  fix: copy some with PLUGIN_REFERRERS=<artifact types>, or remove stale signatures and \
                 attestations at the source",
                source.host,
                descriptors.len()
            );
        }
        for d in descriptors {
            let Some(digest) = d["digest"].as_str() else { continue };
            let Some(manifest) = source.manifest(repo, digest).await? else {
                bail!("the referrers of {subject} list {digest}, which the source registry does not have");
            };
            let artifact_type = d["artifactType"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| referrers::artifact_type(&manifest));
            if filter.wants(&artifact_type) && seen.insert(manifest.digest.clone()) {
                push(&found, &mut pending, &manifest.digest)?;
                found.push(Referrer {
                    manifest,
                    subject: subject.clone(),
                    artifact_type,
                    found: Found::Subject,
                });
            }
        }
        for suffix in COSIGN_SUFFIXES {
            let Some(manifest) = source.manifest(repo, &tag_of(&subject, Some(suffix))).await? else {
                continue;
            };
            if filter.wants(&cosign_type(suffix)) && seen.insert(manifest.digest.clone()) {
                push(&found, &mut pending, &manifest.digest)?;
                found.push(Referrer {
                    manifest,
                    subject: subject.clone(),
                    artifact_type: cosign_type(suffix),
                    found: Found::CosignTag(suffix),
                });
            }
        }
    }
    Ok(found)
}

/// Copy `found` to `repo` of `target` and make each discoverable there; (copied, already there).
pub async fn copy(
    target: &RegistryClient,
    repo: &str,
    source: &RegistryClient,
    source_repo: &str,
    found: &[Referrer],
) -> Result<(usize, usize)> {
    let Some(first) = found.first() else { return Ok((0, 0)) };
    let api = target.referrers(repo, &first.subject).await?.is_some();
    let (mut copied, mut there) = (0, 0);
    for r in found {
        let digest = &r.manifest.digest;
        let mut wrote = false;
        if target.manifest_digest(repo, digest).await?.is_none() {
            target.copy_image(repo, source, source_repo, &r.manifest).await?;
            target.put_manifest(repo, digest, &r.manifest).await?;
            wrote = true;
        }
        match r.found {
            Found::Subject if !api => {
                let tag = tag_of(&r.subject, None);
                let current = target.manifest(repo, &tag).await?;
                let current_json = current.as_ref().and_then(|m| serde_json::from_slice(&m.bytes).ok());
                let listed = current_json.as_ref().map(referrers::listed).unwrap_or_default();
                if !listed.contains(digest) {
                    let index = referrers::with(current_json, referrers::descriptor(&r.manifest));
                    let bytes = serde_json::to_vec(&index)?;
                    let manifest = Manifest {
                        digest: sha256(&bytes),
                        bytes,
                        media_type: "application/vnd.oci.image.index.v1+json".into(),
                    };
                    target.put_manifest(repo, &tag, &manifest).await.map_err(|e| {
                        e.context(format!(
                            "updating the referrers index {tag} (in an immutable repository, exclude it: \
                             PLUGIN_TAG_MUTABILITY_EXCLUSIONS=sha256-*)"
                        ))
                    })?;
                    wrote = true;
                }
            }
            Found::Subject => {}
            Found::CosignTag(suffix) => {
                let tag = tag_of(&r.subject, Some(suffix));
                if target.manifest_digest(repo, &tag).await?.as_deref() != Some(digest.as_str()) {
                    target.put_manifest(repo, &tag, &r.manifest).await?;
                    wrote = true;
                }
            }
        }
        let label = format!("{}/{repo}", target.host);
        crate::report::referrer(&r.artifact_type, digest, &label, wrote);
        if wrote {
            copied += 1;
        } else {
            there += 1;
        }
    }
    Ok((copied, there))
}
