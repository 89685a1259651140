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

/// The zTOC of one layer of the image.
#[derive(Debug, Clone)]
pub struct LayerZtoc {
    /// The image layer's digest (compressed).
    pub layer: String,
    pub ztoc: Descriptor,
    /// The uncompressed bytes per span its seek points were made for.
    pub span_size: u64,
}

/// What a tag holds with SOCI: the image index, and its two children in the order they are written.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub index: Manifest,
    /// The image, as an OCI manifest annotated with the SOCI index's digest.
    pub image: Manifest,
    pub soci: Manifest,
}

/// The image `manifest` (of the config `config`) with a SOCI index of `ztocs` (in the image's layer order;
/// layers without one are left out, which soci allows).
pub fn index(manifest: &Manifest, config: &[u8], ztocs: &[LayerZtoc]) -> Result<Indexed> {
    let image: Value = serde_json::from_slice(&manifest.bytes)?;
    let config_json: Value = serde_json::from_slice(config).map_err(|e| anyhow!("the image config: {e}"))?;
    let layers = manifest.layers()?;
    let layer_descriptor =
        |(d, _): &(Descriptor, String)| json!({"mediaType": OCI_GZIP_LAYER, "digest": d.digest, "size": d.size});
    let blobs: Vec<Value> = layers
        .iter()
        .filter_map(|(layer, _)| ztocs.iter().find(|z| z.layer == layer.digest))
        .map(|z| {
            json!({
                "mediaType": ZTOC_TYPE,
                "digest": z.ztoc.digest,
                "size": z.ztoc.size,
                "annotations": {
                    "com.amazon.soci.image-layer-mediaType": OCI_GZIP_LAYER,
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
    let annotations = json!({"com.amazon.soci.index-digest": soci.digest});
    let oci = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": image["config"]["digest"], "size": image["config"]["size"]},
        "layers": layers.iter().map(layer_descriptor).collect::<Vec<_>>(),
        "annotations": annotations,
    });
    let oci = manifest_of(&oci, OCI_MANIFEST)?;
    let mut platform = json!({
        "architecture": config_json["architecture"].as_str().unwrap_or("amd64"),
        "os": config_json["os"].as_str().unwrap_or("linux"),
    });
    if let Some(variant) = config_json["variant"].as_str() {
        platform["variant"] = json!(variant);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": oci.digest, "size": oci.bytes.len(), "annotations": annotations, "platform": platform},
            {
                "mediaType": OCI_MANIFEST,
                "artifactType": INDEX_TYPE,
                "digest": soci.digest,
                "size": soci.bytes.len(),
                "annotations": {"com.amazon.soci.image-manifest-digest": oci.digest},
                "platform": platform,
            },
        ],
    });
    Ok(Indexed {
        index: manifest_of(&index, OCI_INDEX)?,
        image: oci,
        soci,
    })
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
        let done = index(
            &manifest,
            br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#,
            &[ztoc],
        )
        .unwrap();
        let parse = |m: &Manifest| serde_json::from_slice::<Value>(&m.bytes).unwrap();
        let (top, image, soci) = (parse(&done.index), parse(&done.image), parse(&done.soci));
        assert_eq!(top["manifests"][0]["digest"], done.image.digest.as_str());
        assert_eq!(top["manifests"][1]["digest"], done.soci.digest.as_str());
        assert_eq!(top["manifests"][1]["artifactType"], INDEX_TYPE);
        assert_eq!(top["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(
            top["manifests"][1]["annotations"]["com.amazon.soci.image-manifest-digest"],
            done.image.digest.as_str()
        );
        assert_eq!(
            image["annotations"]["com.amazon.soci.index-digest"],
            done.soci.digest.as_str()
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
            done.image.digest, manifest.digest,
            "the image manifest must change: it is annotated"
        );
    }
}
