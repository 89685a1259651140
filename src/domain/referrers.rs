//! Referrers: manifests whose `subject` is an image (signatures, SBOMs, attestations), how they are found
//! and kept discoverable (the OCI 1.1 referrers API, the referrers tag schema, cosign's tags), which ones
//! the user wants copied, and ECR's limit. Pure.

use crate::domain::manifest::Manifest;

/// ECR keeps at most this many referrers per subject.
pub const ECR_LIMIT: usize = 100;

/// cosign's legacy tags next to an image: `sha256-<hex>.sig`, `.att`, `.sbom`.
pub const COSIGN_SUFFIXES: &[&str] = &["sig", "att", "sbom"];

/// Which referrers travel with the image (`PLUGIN_REFERRERS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferrerFilter {
    All,
    None,
    /// Only these artifact types.
    Types(Vec<String>),
}

impl ReferrerFilter {
    pub fn parse(value: &str) -> Result<ReferrerFilter, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "all" => return Ok(ReferrerFilter::All),
            "none" => return Ok(ReferrerFilter::None),
            _ => {}
        }
        let types: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let media_type = |t: &String| {
            t.len() <= 255
                && t.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && t.chars().all(|c| c.is_ascii_alphanumeric() || "/.+-_".contains(c))
                })
        };
        if !types.is_empty() && types.iter().all(media_type) {
            Ok(ReferrerFilter::Types(types))
        } else {
            Err("all, none, or artifact types such as application/spdx+json,application/vnd.dev.cosign.artifact.sig.v1+json".into())
        }
    }

    pub fn wants(&self, artifact_type: &str) -> bool {
        match self {
            ReferrerFilter::All => true,
            ReferrerFilter::None => false,
            ReferrerFilter::Types(types) => types.iter().any(|t| t == artifact_type),
        }
    }
}

/// How a referrer is found, and so how it is made discoverable at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Through the referrers API or the referrers tag schema (`sha256-<hex>` holding an index).
    Subject,
    /// Under cosign's tag with this suffix.
    CosignTag(&'static str),
}

/// A referrer to copy: the manifest as stored, what it refers to, its type and how it was found.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub manifest: Manifest,
    /// The digest of the manifest it refers to.
    pub subject: String,
    pub artifact_type: String,
    pub found: Found,
}

/// The referrers tag of a subject: `sha256-<hex>`, and cosign's with a suffix.
pub fn tag_of(subject: &str, suffix: Option<&str>) -> String {
    let tag = subject.replacen(':', "-", 1);
    match suffix {
        Some(s) => format!("{tag}.{s}"),
        None => tag,
    }
}

/// A manifest's artifact type: `artifactType`, else its config's media type.
pub fn artifact_type(manifest: &Manifest) -> String {
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
    json["artifactType"]
        .as_str()
        .or(json["config"]["mediaType"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

/// The descriptor of `manifest` in a referrers index: media type, digest, size, artifact type, annotations.
pub fn descriptor(manifest: &Manifest) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
    let mut d = serde_json::json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": manifest.bytes.len(),
        "artifactType": artifact_type(manifest),
    });
    if let Some(annotations) = json.get("annotations").filter(|a| a.is_object()) {
        d["annotations"] = annotations.clone();
    }
    d
}

/// The digests an index lists, in order.
pub fn listed(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str().map(String::from))
        .collect()
}

/// `index` with `descriptor` added (unless listed already): the referrers tag schema's index.
pub fn with(index: Option<serde_json::Value>, descriptor: serde_json::Value) -> serde_json::Value {
    let mut index = index.unwrap_or_else(|| {
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
    });
    let digest = descriptor["digest"].as_str().unwrap_or_default().to_string();
    if !listed(&index).contains(&digest)
        && let Some(list) = index["manifests"].as_array_mut()
    {
        list.push(descriptor);
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_tags_and_indexes() {
        assert_eq!(ReferrerFilter::parse("ALL"), Ok(ReferrerFilter::All));
        assert!(!ReferrerFilter::parse("none").unwrap().wants("x/y"));
        let only = ReferrerFilter::parse("application/spdx+json").unwrap();
        assert!(only.wants("application/spdx+json") && !only.wants("application/vnd.dev.cosign.artifact.sig.v1+json"));
        assert!(ReferrerFilter::parse("sbom").is_err());
        assert_eq!(tag_of("sha256:abc", None), "sha256-abc");
        assert_eq!(tag_of("sha256:abc", Some("sig")), "sha256-abc.sig");
        let d = serde_json::json!({"digest": "sha256:1"});
        let index = with(None, d.clone());
        let again = with(Some(index.clone()), d);
        assert_eq!(index, again, "a descriptor is listed once");
        assert_eq!(listed(&again), vec!["sha256:1"]);
    }
}
