//! Manifests and descriptors as the registry stores them: bytes kept exactly (so a copy keeps its digest),
//! the media type, and what a manifest points at. Pure: parsing and hashing, no I/O.

use anyhow::{Result, anyhow, bail};
use sha2::{Digest as _, Sha256};

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

    /// The layers of an image manifest, bottom first, each with its media type.
    pub fn layers(&self) -> Result<Vec<(Descriptor, String)>> {
        let json: serde_json::Value = serde_json::from_slice(&self.bytes)?;
        json["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let digest = l["digest"]
                    .as_str()
                    .ok_or_else(|| anyhow!("a layer without a digest"))?;
                let descriptor = Descriptor {
                    digest: digest.to_string(),
                    size: l["size"].as_u64().unwrap_or(0),
                };
                Ok((descriptor, l["mediaType"].as_str().unwrap_or_default().to_string()))
            })
            .collect()
    }

    /// Whether any layer of this image manifest is zstd (which not every runtime pulls).
    pub fn has_zstd_layers(&self) -> bool {
        self.layers()
            .is_ok_and(|layers| layers.iter().any(|(_, media_type)| media_type == ZSTD_LAYER))
    }
}

/// The media types of a gzip-compressed layer tar (Docker's and OCI's names for the same bytes).
pub const GZIP_LAYER_TYPES: [&str; 2] = [
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
];
/// A zstd layer's media type (OCI manifests only).
pub const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A blob or manifest that a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub digest: String,
    pub size: u64,
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sha256_of_nothing() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
