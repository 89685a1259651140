//! SOCI (Seekable OCI) index manifest v2, as awslabs/soci-snapshotter writes it (`soci/soci_index.go`,
//! `soci/soci_convert.go`): the image as an OCI manifest annotated with its SOCI index, the SOCI index (an
//! OCI manifest whose layers are the zTOCs), and an OCI image index holding both, which the tags point at.
//! The image's config and layers are unchanged; its manifest digest is not (an OCI manifest, annotated).
//! Pure: JSON and digests, no I/O.

use crate::domain::manifest::{Descriptor, Manifest, sha256};
use anyhow::{Result, anyhow};
use serde_json::{Value, json};

/// The SOCI index's config media type and its `artifactType` in the image index (v2).
pub const INDEX_TYPE: &str = "application/vnd.amazon.soci.index.v2+json";
/// A zTOC's media type.
pub const ZTOC_TYPE: &str = "application/octet-stream";
/// The SOCI index's config: the empty JSON object, as soci writes it.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// soci's default: a layer smaller than this (compressed) gets no zTOC, since it downloads fast anyway.
pub const MIN_LAYER_SIZE: u64 = 10 << 20;
/// Who built the index (`com.amazon.soci.build-tool-identifier`).
pub const BUILD_TOOL: &str = concat!("ecr-step v", env!("CARGO_PKG_VERSION"));

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The zTOC of one layer of the image.
#[derive(Debug, Clone)]
pub struct LayerZtoc {
    /// The image layer's digest (compressed).
    pub layer: String,
    pub ztoc: Descriptor,
    /// The uncompressed bytes per span its seek points were made for.
    pub span_size: u64,
}

/// An image of the source with its SOCI index: `image` is the image as an OCI manifest annotated with
/// the SOCI index's digest (it replaces the manifest `was`), for `platform`.
#[derive(Debug, Clone)]
pub struct Annotated {
    pub was: String,
    pub image: Manifest,
    pub soci: Manifest,
    pub platform: Value,
}

/// What a tag holds with SOCI: the image index, and the manifests it holds, in the order they are written.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub index: Manifest,
    pub images: Vec<Annotated>,
}

/// The image `manifest` (of the config `config`; for `platform`, else the config's) with a SOCI index of
/// `ztocs` (layers without one are left out, which soci allows). The manifest keeps every field; it
/// becomes an OCI manifest (Docker's gzip layer type becomes OCI's: the same bytes), annotated.
pub fn annotate(
    manifest: &Manifest,
    config: &[u8],
    ztocs: &[LayerZtoc],
    platform: Option<&Value>,
) -> Result<Annotated> {
    let mut image: Value = serde_json::from_slice(&manifest.bytes)?;
    let layers = image["layers"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("{} has no layers", manifest.digest))?;
    for layer in layers.iter_mut() {
        if layer["mediaType"] == DOCKER_GZIP_LAYER {
            layer["mediaType"] = json!(OCI_GZIP_LAYER);
        }
    }
    let blobs: Vec<Value> = layers
        .iter()
        .filter_map(|layer| Some((layer, ztocs.iter().find(|z| layer["digest"] == z.layer.as_str())?)))
        .map(|(layer, z)| {
            json!({
                "mediaType": ZTOC_TYPE,
                "digest": z.ztoc.digest,
                "size": z.ztoc.size,
                "annotations": {
                    "com.amazon.soci.image-layer-mediaType": layer["mediaType"],
                    "com.amazon.soci.image-layer-digest": z.layer,
                    "com.amazon.soci.span-size": z.span_size.to_string(),
                }
            })
        })
        .collect();
    let soci = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": INDEX_TYPE, "digest": sha256(EMPTY_CONFIG), "size": EMPTY_CONFIG.len()},
        "layers": blobs,
        "annotations": {"com.amazon.soci.build-tool-identifier": BUILD_TOOL},
    });
    let soci = manifest_of(&soci, OCI_MANIFEST)?;
    image["mediaType"] = json!(OCI_MANIFEST);
    image["config"]["mediaType"] = json!(OCI_CONFIG);
    if !image["annotations"].is_object() {
        image["annotations"] = json!({});
    }
    image["annotations"]["com.amazon.soci.index-digest"] = json!(soci.digest);
    let platform = match platform {
        Some(platform) => platform.clone(),
        None => {
            let config: Value = serde_json::from_slice(config).map_err(|e| anyhow!("the image config: {e}"))?;
            let mut platform = json!({
                "architecture": config["architecture"].as_str().unwrap_or("amd64"),
                "os": config["os"].as_str().unwrap_or("linux"),
            });
            if let Some(variant) = config["variant"].as_str() {
                platform["variant"] = json!(variant);
            }
            platform
        }
    };
    Ok(Annotated {
        was: manifest.digest.clone(),
        image: manifest_of(&image, OCI_MANIFEST)?,
        soci,
        platform,
    })
}

/// An OCI index of the one image `annotated`: the image first, then its SOCI index.
pub fn index(annotated: Annotated) -> Result<Indexed> {
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
    wrap(index, vec![annotated])
}

/// The index `index` (OCI, or Docker's manifest list, which becomes an OCI index) with each of its images
/// in `annotated` replaced by its annotated manifest, and their SOCI indexes after the rest, as soci's
/// convert does. Its other entries stay as they are.
pub fn reindex(index: &Manifest, annotated: Vec<Annotated>) -> Result<Indexed> {
    let index: Value = serde_json::from_slice(&index.bytes)?;
    wrap(index, annotated)
}

fn wrap(mut index: Value, annotated: Vec<Annotated>) -> Result<Indexed> {
    index["mediaType"] = json!(OCI_INDEX);
    let mut manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    for a in &annotated {
        let annotations = json!({"com.amazon.soci.index-digest": a.soci.digest});
        let entry = json!({
            "mediaType": OCI_MANIFEST,
            "digest": a.image.digest,
            "size": a.image.bytes.len(),
            "annotations": annotations,
            "platform": a.platform,
        });
        match manifests.iter_mut().find(|d| d["digest"] == a.was.as_str()) {
            Some(d) => {
                d["mediaType"] = entry["mediaType"].clone();
                d["digest"] = entry["digest"].clone();
                d["size"] = entry["size"].clone();
                if !d["annotations"].is_object() {
                    d["annotations"] = json!({});
                }
                d["annotations"]["com.amazon.soci.index-digest"] = json!(a.soci.digest);
                if d["platform"].is_null() {
                    d["platform"] = a.platform.clone();
                }
            }
            None => manifests.push(entry),
        }
    }
    for a in &annotated {
        manifests.push(json!({
            "mediaType": OCI_MANIFEST,
            "artifactType": INDEX_TYPE,
            "digest": a.soci.digest,
            "size": a.soci.bytes.len(),
            "annotations": {"com.amazon.soci.image-manifest-digest": a.image.digest},
            "platform": a.platform,
        }));
    }
    index["manifests"] = json!(manifests);
    Ok(Indexed {
        index: manifest_of(&index, OCI_INDEX)?,
        images: annotated,
    })
}

/// The zTOCs a SOCI index lists, each with the digest of the image layer it is for.
pub fn ztocs_in(soci: &Manifest) -> Vec<(String, Descriptor)> {
    let Ok(json) = serde_json::from_slice::<Value>(&soci.bytes) else {
        return Vec::new();
    };
    if json["config"]["mediaType"] != INDEX_TYPE {
        return Vec::new();
    }
    json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let layer = l["annotations"]["com.amazon.soci.image-layer-digest"].as_str()?;
            let ztoc = Descriptor {
                digest: l["digest"].as_str()?.to_string(),
                size: l["size"].as_u64()?,
            };
            Some((layer.to_string(), ztoc))
        })
        .collect()
}

fn manifest_of(value: &Value, media_type: &str) -> Result<Manifest> {
    let bytes = serde_json::to_vec(value)?;
    Ok(Manifest {
        digest: sha256(&bytes),
        bytes,
        media_type: media_type.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_holds_the_image_then_its_soci_index_and_each_names_the_other() {
        let image = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:c", "size": 9},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:small", "size": 5},
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:big", "size": 20 << 20},
            ],
        });
        let manifest = manifest_of(&image, "application/vnd.docker.distribution.manifest.v2+json").unwrap();
        let ztoc = LayerZtoc {
            layer: "sha256:big".into(),
            ztoc: Descriptor {
                digest: "sha256:z".into(),
                size: 77,
            },
            span_size: 4 << 20,
        };
        let config = br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#;
        let done = index(annotate(&manifest, config, &[ztoc], None).unwrap()).unwrap();
        let parse = |m: &Manifest| serde_json::from_slice::<Value>(&m.bytes).unwrap();
        let one = &done.images[0];
        let (top, image, soci) = (parse(&done.index), parse(&one.image), parse(&one.soci));
        assert_eq!(top["manifests"][0]["digest"], one.image.digest.as_str());
        assert_eq!(top["manifests"][1]["digest"], one.soci.digest.as_str());
        assert_eq!(top["manifests"][1]["artifactType"], INDEX_TYPE);
        assert_eq!(top["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(
            top["manifests"][1]["annotations"]["com.amazon.soci.image-manifest-digest"],
            one.image.digest.as_str()
        );
        assert_eq!(
            image["annotations"]["com.amazon.soci.index-digest"],
            one.soci.digest.as_str()
        );
        // The layers keep their digests; only the small one has no zTOC.
        assert_eq!(image["layers"][1]["digest"], "sha256:big");
        assert_eq!(image["config"]["digest"], "sha256:c");
        assert_eq!(soci["layers"].as_array().unwrap().len(), 1);
        assert_eq!(
            soci["layers"][0]["annotations"]["com.amazon.soci.image-layer-digest"],
            "sha256:big"
        );
        assert_eq!(soci["layers"][0]["annotations"]["com.amazon.soci.span-size"], "4194304");
        assert_eq!(soci["config"]["mediaType"], INDEX_TYPE);
        assert_ne!(
            one.image.digest, manifest.digest,
            "the image manifest must change: it is annotated"
        );
    }
}
