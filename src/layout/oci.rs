//! An OCI image layout (a directory, or one unpacked from `oci-archive:`), read confined to itself
//! ([`Tree`]): `index.json` picks a manifest; indexes are followed to any depth up to
//! [`MAX_INDEX_DEPTH`]; every manifest and blob must hash to its digest and have its descriptor's size, and
//! every layer of an image must have the diff id its config names, all checked (blobs on every core)
//! before any blob is committed. The largest blobs are announced for upload as their checks start
//! ([`Growing`]): their uploads run beside the checks, and are closed only once every check has passed.

use super::gzip::{digest_of, gzip_digests};
use super::{CONFIG_LIMIT, Early, Growing, MANIFEST_LIMIT, MAX_INDEX_DEPTH};
use crate::domain::excerpt;
use crate::domain::manifest::{GZIP_LAYER_TYPES, Manifest, sha256};
use crate::domain::source::{FileImage, LocalBlob};
use crate::files::tree::Tree;
use anyhow::{Result, anyhow, bail};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Uncompressed layer tars: their digest is their diff id.
const TAR_LAYER_TYPES: [&str; 2] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
];
/// Image configs, whose `rootfs.diff_ids` name the layers.
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Blobs of a layout whose uploads start before they are checked, at most (the largest first). Small
/// ones too: each upload's requests then run while the layers are inflated, and only its close waits for
/// the checks (sent after them, a config's few requests took 90 ms of a 1 s push on loopback here).
const EARLY_UPLOADS: usize = 16;

pub(super) fn read_layout(tree: &Tree, reference: Option<&str>, early: Option<&Early>) -> Result<FileImage> {
    let root = tree.path.display();
    let (index, _) = tree
        .read(Path::new("index.json"), MANIFEST_LIMIT)
        .map_err(|e| anyhow!("{root} is not an OCI image layout: its index.json: {e}"))?;
    let index: Value =
        serde_json::from_slice(&index).map_err(|e| anyhow!("{root}: the layout's index.json is not JSON ({e})"))?;
    let descriptors = index["manifests"].as_array().cloned().unwrap_or_default();
    let name = |d: &Value| {
        d["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(String::from)
    };
    let chosen = match reference {
        Some(r) => descriptors.iter().find(|d| name(d).as_deref() == Some(r)),
        None if descriptors.len() == 1 => descriptors.first(),
        None => None,
    };
    let Some(chosen) = chosen else {
        let names: Vec<String> = descriptors.iter().filter_map(name).collect();
        bail!(
            "{root}: {} the layout's manifests: it has {} ({}); name one as oci:PATH:REF",
            reference.map_or("pick one of".to_string(), |r| format!("no manifest named {r} among")),
            descriptors.len(),
            excerpt(names.join(", ").as_bytes(), 400)
        );
    };
    let manifest = layout_manifest(tree, chosen)?;
    let mut walk = Walk {
        tree,
        children: Vec::new(),
        checks: Vec::new(),
        images: Vec::new(),
        visiting: BTreeSet::new(),
    };
    walk.manifest(&manifest, 0)?;
    let Walk {
        children,
        checks,
        images,
        ..
    } = walk;
    // Every name is resolved and every size matches: the largest blobs' uploads may start now. Each is
    // finished only when `ready` says so, after every check below; on a failure `ready` is dropped
    // unsent, so those uploads are never closed and nothing lands.
    let ready = announce(&checks, early);
    let diff_ids = verify(&checks)?;
    for image in &images {
        image.check(tree, &diff_ids)?;
    }
    for (blob, ready) in ready {
        let _ = ready.send(Some(blob));
    }
    Ok(FileImage {
        image_id: manifest.config_digest(),
        blobs: checks.into_iter().map(|c| c.blob).collect(),
        children,
        manifest,
        compressed: 0,
        borrowed: Vec::new(),
        soci: None,
    })
}

/// The largest blobs (at most [`EARLY_UPLOADS`]), announced
/// on `early` as [`Growing`] with their digest; each with the sender that says it is ready.
fn announce(
    checks: &[Check],
    early: Option<&Early>,
) -> Vec<(LocalBlob, tokio::sync::watch::Sender<Option<LocalBlob>>)> {
    let Some(early) = early else { return Vec::new() };
    let mut large: Vec<&LocalBlob> = checks.iter().map(|c| &c.blob).collect();
    large.sort_by_key(|b| std::cmp::Reverse(b.size));
    large
        .into_iter()
        .take(EARLY_UPLOADS)
        .filter_map(|blob| {
            let (ready, done) = tokio::sync::watch::channel(None);
            let growing = Growing {
                path: blob.path.clone(),
                done,
                digest: Some(blob.digest.clone()),
            };
            early.send(growing).ok()?;
            Some((blob.clone(), ready))
        })
        .collect()
}

/// `blobs/sha256/<hex>` of a digest, which must be `sha256:<64 hex>`.
fn blob_name(digest: &str) -> Result<PathBuf> {
    let (algorithm, hex) = digest
        .split_once(':')
        .filter(|(a, h)| *a == "sha256" && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            anyhow!(
                "the layout names a digest that is not sha256:<64 hex>: {}",
                excerpt(digest.as_bytes(), 80)
            )
        })?;
    Ok(Path::new("blobs").join(algorithm).join(hex))
}

/// The manifest (or index) a descriptor names, checked against its digest and size.
fn layout_manifest(tree: &Tree, descriptor: &Value) -> Result<Manifest> {
    let digest = descriptor["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("the layout has a descriptor without a digest"))?;
    let (bytes, _) = tree
        .read(&blob_name(digest)?, MANIFEST_LIMIT)
        .map_err(|e| anyhow!("the layout's manifest {digest}: {e}"))?;
    let actual = sha256(&bytes);
    if actual != digest {
        bail!(
            "the layout's manifest {digest} does not match its digest (its bytes hash to {actual}): the layout is \
             damaged or was altered, so nothing was pushed"
        );
    }
    if let Some(size) = descriptor["size"].as_u64().filter(|s| *s != bytes.len() as u64) {
        bail!(
            "the layout's manifest {digest} is {} bytes, but its descriptor says {size}: the layout is damaged",
            bytes.len()
        );
    }
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| anyhow!("the layout's manifest {digest}: {e}"))?;
    let media_type = descriptor["mediaType"]
        .as_str()
        .or(json["mediaType"].as_str())
        .ok_or_else(|| anyhow!("the manifest {digest} has no media type"))?
        .to_string();
    Ok(Manifest {
        bytes,
        media_type,
        digest: digest.to_string(),
    })
}

/// What walking the manifests found: child manifests (deepest first, so each is written before what names
/// it), every blob to check, and the images whose layers are checked against their configs.
struct Walk<'a> {
    tree: &'a Tree,
    children: Vec<Manifest>,
    checks: Vec<Check>,
    images: Vec<Image>,
    visiting: BTreeSet<String>,
}

impl Walk<'_> {
    fn manifest(&mut self, manifest: &Manifest, depth: usize) -> Result<()> {
        if !manifest.is_index() {
            return self.image(manifest);
        }
        if depth >= MAX_INDEX_DEPTH {
            bail!(
                "the layout's indexes nest more than {MAX_INDEX_DEPTH} deep (at {}): refused",
                manifest.digest
            );
        }
        if !self.visiting.insert(manifest.digest.clone()) {
            bail!(
                "the layout's index {} contains itself: a cycle, refused",
                manifest.digest
            );
        }
        let json: Value = serde_json::from_slice(&manifest.bytes)?;
        for child in json["manifests"].as_array().into_iter().flatten() {
            let child = layout_manifest(self.tree, child)?;
            self.manifest(&child, depth + 1)?;
            if !self.children.iter().any(|c| c.digest == child.digest) {
                self.children.push(child);
            }
        }
        self.visiting.remove(&manifest.digest);
        Ok(())
    }

    fn image(&mut self, manifest: &Manifest) -> Result<()> {
        let json: Value = serde_json::from_slice(&manifest.bytes)?;
        let config_type = json["config"]["mediaType"].as_str().unwrap_or_default().to_string();
        let layers = manifest.layers()?;
        let config = manifest
            .references()?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the manifest {} has no config", manifest.digest))?;
        self.blob(&config.digest, config.size, Kind::Plain)?;
        for (layer, media_type) in &layers {
            let kind = if GZIP_LAYER_TYPES.contains(&media_type.as_str()) {
                Kind::Gzip
            } else if TAR_LAYER_TYPES.contains(&media_type.as_str()) {
                Kind::Tar
            } else {
                Kind::Plain
            };
            self.blob(&layer.digest, layer.size, kind)?;
        }
        if IMAGE_CONFIG_TYPES.contains(&config_type.as_str()) {
            self.images.push(Image {
                manifest: manifest.digest.clone(),
                config: config.digest,
                layers: layers.into_iter().map(|(d, _)| d.digest).collect(),
            });
        }
        Ok(())
    }

    fn blob(&mut self, digest: &str, size: u64, kind: Kind) -> Result<()> {
        if self.checks.iter().any(|c| c.blob.digest == digest) {
            return Ok(());
        }
        let found = self
            .tree
            .open_file(&blob_name(digest)?)
            .map_err(|e| anyhow!("the layout's blob {digest}: {e}"))?;
        if found.size != size {
            bail!(
                "the layout's blob {digest} is {} bytes, but its descriptor says {size}: the layout is damaged",
                found.size
            );
        }
        self.checks.push(Check {
            blob: LocalBlob {
                digest: digest.to_string(),
                size,
                path: found.path,
            },
            file: found.file,
            kind,
        });
        Ok(())
    }
}

/// How a blob's content is checked.
#[derive(Clone, Copy)]
enum Kind {
    /// Its digest only.
    Plain,
    /// A gzip layer: its digest, and its diff id by decompressing it.
    Gzip,
    /// An uncompressed layer: its digest is its diff id.
    Tar,
}

struct Check {
    blob: LocalBlob,
    file: std::fs::File,
    kind: Kind,
}

/// An image of the layout whose layers' diff ids its config names.
struct Image {
    manifest: String,
    config: String,
    layers: Vec<String>,
}

impl Image {
    fn check(&self, tree: &Tree, diff_ids: &std::collections::BTreeMap<String, String>) -> Result<()> {
        let (config, _) = tree
            .read(&blob_name(&self.config)?, CONFIG_LIMIT)
            .map_err(|e| anyhow!("the layout's config {}: {e}", self.config))?;
        let config: Value = serde_json::from_slice(&config)
            .map_err(|e| anyhow!("the layout's config {} is not JSON ({e})", self.config))?;
        let named: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if named.len() != self.layers.len() {
            bail!(
                "the layout's image {} has {} layer(s), but its config names {} diff id(s): the layout is damaged \
                 or was altered, so nothing was pushed",
                self.manifest,
                self.layers.len(),
                named.len()
            );
        }
        for (i, (layer, want)) in self.layers.iter().zip(named).enumerate() {
            if let Some(have) = diff_ids.get(layer).filter(|have| *have != want) {
                bail!(
                    "the layout's layer {layer} (layer {} of image {}) has diff id {have}, but the config names {}: \
                     the layout is damaged or was altered, so nothing was pushed",
                    i + 1,
                    self.manifest,
                    excerpt(want.as_bytes(), 80)
                );
            }
        }
        Ok(())
    }
}

/// Check every blob against its digest, on every core; the diff ids of the layers that have one.
fn verify(checks: &[Check]) -> Result<std::collections::BTreeMap<String, String>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(checks.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(check) = checks.get(i) else { break };
                    let result = check_one(check);
                    results.lock().expect("not poisoned").push(result);
                }
            });
        }
    });
    let mut diff_ids = std::collections::BTreeMap::new();
    for result in results.into_inner().expect("not poisoned") {
        if let Some((digest, diff_id)) = result? {
            diff_ids.insert(digest, diff_id);
        }
    }
    Ok(diff_ids)
}

/// One blob read once (at most its declared size, plus one byte to see it does not go on): its digest
/// checked; a layer's diff id.
fn check_one(check: &Check) -> Result<Option<(String, String)>> {
    let blob = &check.blob;
    let input = std::io::BufReader::with_capacity(1 << 20, (&check.file).take(blob.size + 1));
    let failed = |e: std::io::Error| anyhow!("reading the layout's blob {}: {e}", blob.digest);
    let (digest, size, diff_id) = match check.kind {
        Kind::Gzip => match gzip_digests(input) {
            Ok((digest, size, diff_id)) => (digest, size, Some(diff_id)),
            Err(e) => {
                // Bytes that are not gzip: first whether they are the blob at all.
                use std::io::Seek as _;
                (&check.file).rewind().map_err(failed)?;
                let (digest, size) = digest_of((&check.file).take(blob.size + 1)).map_err(failed)?;
                if size == blob.size && digest == blob.digest {
                    bail!(
                        "the layout's layer {} is not the gzip stream its media type says ({e}): the layout is \
                         damaged",
                        blob.digest
                    );
                }
                (digest, size, None)
            }
        },
        Kind::Tar => {
            let (digest, size) = digest_of(input).map_err(failed)?;
            (digest.clone(), size, Some(digest))
        }
        Kind::Plain => {
            let (digest, size) = digest_of(input).map_err(failed)?;
            (digest, size, None)
        }
    };
    if size != blob.size || digest != blob.digest {
        bail!(
            "the layout's blob {} does not match its digest (its {size} bytes hash to {digest}): the layout is \
             damaged or was altered, so nothing was pushed",
            blob.digest
        );
    }
    Ok(diff_id.map(|d| (blob.digest.clone(), d)))
}
