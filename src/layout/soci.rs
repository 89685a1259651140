//! An image read from files, given a SOCI index ([`crate::domain::soci`]): the zTOCs of its large gzip
//! layers (from the compression for the layers the step compressed; inflated once, [`super::zran`], for a
//! layout's), the SOCI index of each image, and what the tags then hold (an OCI index). The blobs, the
//! children and the summary the log prints are the image's own, so the upload needs nothing new.

use super::CONFIG_LIMIT;
use crate::domain::manifest::{Descriptor, GZIP_LAYER_TYPES, Manifest, sha256};
use crate::domain::soci::{self, Annotated, EMPTY_CONFIG, LayerZtoc, MIN_LAYER_SIZE};
use crate::domain::source::{FileImage, LocalBlob, SociSummary};
use anyhow::{Result, anyhow};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// A layer's zTOC, by the layer's digest, or why it has none.
pub type Ztocs = BTreeMap<String, Result<LocalBlob, String>>;

/// The zTOCs of the gzip layers of at least [`MIN_LAYER_SIZE`] of every image of `image` (an OCI
/// layout's: already compressed, so inflated once each), written into `dir`.
pub(super) fn ztocs_of_layout(image: &FileImage, dir: &Path) -> Result<Ztocs> {
    let mut ztocs = Ztocs::new();
    for (manifest, _) in images(image)? {
        for (layer, media_type) in manifest.layers()? {
            if layer.size < MIN_LAYER_SIZE || !GZIP_LAYER_TYPES.contains(&media_type.as_str()) {
                continue;
            }
            if ztocs.contains_key(&layer.digest) {
                continue;
            }
            let Some(blob) = image.blobs.iter().find(|b| b.digest == layer.digest) else {
                continue;
            };
            let out = dir.join(format!("{}.ztoc", layer.digest.trim_start_matches("sha256:")));
            ztocs.insert(layer.digest.clone(), super::ztoc::ztoc_of_gzip(&blob.path, &out)?);
        }
    }
    Ok(ztocs)
}

/// The image manifests of `image` (itself, or the image children of its index) and each one's platform
/// as its index names it.
fn images(image: &FileImage) -> Result<Vec<(&Manifest, Option<Value>)>> {
    if !image.manifest.is_index() {
        return Ok(vec![(&image.manifest, None)]);
    }
    let index: Value = serde_json::from_slice(&image.manifest.bytes)?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    Ok(image
        .children
        .iter()
        .filter(|child| !child.is_index())
        .filter_map(|child| {
            let entry = entries.iter().find(|d| d["digest"] == child.digest.as_str())?;
            Some((child, entry.get("platform").filter(|p| p.is_object()).cloned()))
        })
        .collect())
}

/// `image` with a SOCI index of each of its images whose layers have a zTOC in `ztocs` and are at least
/// [`MIN_LAYER_SIZE`] compressed (soci's rule), or, for a layer sent as the destination holds it, the zTOC
/// the destination holds for it (`held`, by layer digest: it is sent the same way). The tags then hold an
/// OCI index of the images (each now an annotated OCI manifest) and their SOCI indexes. Without any such
/// layer, the image as it was, and why.
pub(super) fn with_soci(
    mut image: FileImage,
    ztocs: &Ztocs,
    held: &BTreeMap<String, Descriptor>,
    dir: &Path,
) -> Result<FileImage> {
    let mut annotated: Vec<Annotated> = Vec::new();
    let mut used: Vec<LocalBlob> = Vec::new();
    let mut why_not: Vec<String> = Vec::new();
    // zTOCs the destination holds, sent as it holds them (as the layers they are for).
    let mut kept: Vec<Descriptor> = Vec::new();
    let (mut indexed, mut layers) = (0, 0);
    for (manifest, platform) in images(&image)? {
        let mut these = Vec::new();
        let all = manifest.layers()?;
        for (layer, _) in &all {
            match ztocs.get(&layer.digest) {
                Some(Ok(ztoc)) if layer.size >= MIN_LAYER_SIZE => {
                    these.push(LayerZtoc {
                        layer: layer.digest.clone(),
                        ztoc: Descriptor {
                            digest: ztoc.digest.clone(),
                            size: ztoc.size,
                        },
                        span_size: super::gzip::SPAN_SIZE,
                    });
                    if !used.iter().any(|b| b.digest == ztoc.digest) {
                        used.push(ztoc.clone());
                    }
                }
                Some(Err(why)) => why_not.push(format!("{}: {why}", layer.digest)),
                None if held.contains_key(&layer.digest) => {
                    let ztoc = held[&layer.digest].clone();
                    these.push(LayerZtoc {
                        layer: layer.digest.clone(),
                        ztoc: ztoc.clone(),
                        span_size: super::gzip::SPAN_SIZE,
                    });
                    if !kept.contains(&ztoc) {
                        kept.push(ztoc);
                    }
                }
                _ => {}
            }
        }
        if these.is_empty() {
            continue;
        }
        let config = config_of(&image, manifest)?;
        (indexed, layers) = (indexed + these.len(), layers + all.len());
        annotated.push(soci::annotate(manifest, &config, &these, platform.as_ref())?);
    }
    if annotated.is_empty() {
        let mut why = format!(
            "no gzip layer of {} MiB or more that the step compressed or could index (soci's minimum)",
            MIN_LAYER_SIZE >> 20
        );
        if !why_not.is_empty() {
            why = format!("{why}; {}", why_not.join("; "));
        }
        image.soci = Some(Err(why));
        return Ok(image);
    }
    let done = match image.manifest.is_index() {
        true => soci::reindex(&image.manifest, annotated)?,
        false => soci::index(annotated.remove(0))?,
    };
    let config_path = dir.join("soci-config.json");
    std::fs::write(&config_path, EMPTY_CONFIG)?;
    image.blobs.push(LocalBlob {
        digest: sha256(EMPTY_CONFIG),
        size: EMPTY_CONFIG.len() as u64,
        path: config_path,
    });
    image.blobs.extend(used);
    for ztoc in kept {
        if !image.borrowed.contains(&ztoc) {
            image.borrowed.push(ztoc);
        }
    }
    let first = &done.images[0];
    image.soci = Some(Ok(SociSummary {
        image: first.image.digest.clone(),
        index: first.soci.digest.clone(),
        images: done.images.len(),
        indexed,
        layers,
    }));
    image
        .children
        .retain(|c| !done.images.iter().any(|a| a.was == c.digest));
    for a in done.images {
        image.children.push(a.image);
        image.children.push(a.soci);
    }
    image.manifest = done.index;
    Ok(image)
}

/// The config of `manifest`, one of `image`'s blobs.
fn config_of(image: &FileImage, manifest: &Manifest) -> Result<Vec<u8>> {
    let digest = manifest
        .config_digest()
        .ok_or_else(|| anyhow!("{} names no config", manifest.digest))?;
    let blob = image
        .blobs
        .iter()
        .find(|b| b.digest == digest)
        .ok_or_else(|| anyhow!("the config {digest} is not among the image's blobs"))?;
    let mut bytes = Vec::new();
    std::fs::File::open(&blob.path)?
        .take(CONFIG_LIMIT)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}
