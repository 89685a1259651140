//! Outputs for later steps: the image reference, digest, registry and tags, under the same names
//! everywhere: appended to `$CF_VOLUME_PATH/env_vars_to_export` (Codefresh) and `/meta/env_vars_to_export`
//! (inside a typed step), to `$GITHUB_OUTPUT`, and written as JSON to `PLUGIN_OUTPUT_FILE`.
//! Written only when the run succeeded.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The names later steps read.
pub const IMAGE: &str = "ECR_STEP_IMAGE";
pub const DIGEST: &str = "ECR_STEP_DIGEST";
pub const REGISTRY: &str = "ECR_STEP_REGISTRY";
pub const TAGS: &str = "ECR_STEP_TAGS";
pub const IMAGES: &str = "ECR_STEP_IMAGES";

/// What a run exports. Empty values are left out.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `<registry>/<repo>:<first tag>` of the first destination.
    pub image: String,
    pub digest: String,
    /// The first destination's registry host (login mode: every host, comma separated).
    pub registry: String,
    pub tags: Vec<String>,
    /// Every reference written, in every destination.
    pub images: Vec<String>,
}

impl Outputs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            (IMAGE, self.image.clone()),
            (DIGEST, self.digest.clone()),
            (REGISTRY, self.registry.clone()),
            (TAGS, self.tags.join(",")),
            (IMAGES, self.images.join(",")),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": self.image,
            "digest": self.digest,
            "registry": self.registry,
            "tags": self.tags,
            "images": self.images,
        })
    }
}

/// The outputs of a push or promote run whose tags all landed.
pub fn of(
    target: &crate::settings::Target,
    logins: &[crate::token::RegistryLogin],
    outcomes: &[crate::push::TagOutcome],
) -> Outputs {
    let first = logins.first().map(|l| l.registry.host.clone()).unwrap_or_default();
    let digest = outcomes
        .iter()
        .find_map(|o| o.result.as_ref().ok())
        .map(|l| l.digest.clone())
        .unwrap_or_default();
    Outputs {
        image: format!("{first}/{}:{}", target.repo, target.tags[0]),
        digest,
        registry: first,
        tags: target.tags.clone(),
        images: outcomes.iter().map(|o| o.reference.clone()).collect(),
    }
}

/// Write the outputs wherever the environment asks for them; returns the files written.
pub fn write(outputs: &Outputs, output_file: Option<&Path>, ambient: &HashMap<String, String>) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let lines: String = outputs.pairs().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let mut env_files: Vec<PathBuf> = Vec::new();
    if let Some(dir) = ambient.get("CF_VOLUME_PATH").filter(|d| !d.is_empty()) {
        env_files.push(Path::new(dir).join("env_vars_to_export"));
    }
    if Path::new("/meta").is_dir() {
        env_files.push(PathBuf::from("/meta/env_vars_to_export"));
    }
    if let Some(file) = ambient.get("GITHUB_OUTPUT").filter(|d| !d.is_empty()) {
        env_files.push(PathBuf::from(file));
    }
    for path in env_files {
        append(&path, &lines)?;
        written.push(path);
    }
    if let Some(path) = output_file {
        let text = serde_json::to_string_pretty(&outputs.json())? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing PLUGIN_OUTPUT_FILE={}", path.display()))?;
        written.push(path.to_path_buf());
    }
    Ok(written)
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} to export outputs", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing outputs to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_go_to_every_place_the_environment_names_under_the_same_names() {
        let dir = tempfile::tempdir().unwrap();
        let github = dir.path().join("github_output");
        std::fs::write(&github, "earlier=1\n").unwrap();
        let ambient: HashMap<String, String> = [
            ("CF_VOLUME_PATH".to_string(), dir.path().display().to_string()),
            ("GITHUB_OUTPUT".to_string(), github.display().to_string()),
        ]
        .into();
        let outputs = Outputs {
            image: "r/app:v1".into(),
            digest: "sha256:d".into(),
            registry: "r".into(),
            tags: vec!["v1".into(), "latest".into()],
            images: vec!["r/app:v1".into(), "r/app:latest".into()],
        };
        let json = dir.path().join("out.json");
        write(&outputs, Some(&json), &ambient).unwrap();
        let cf = std::fs::read_to_string(dir.path().join("env_vars_to_export")).unwrap();
        assert!(
            cf.contains("ECR_STEP_IMAGE=r/app:v1\n") && cf.contains("ECR_STEP_TAGS=v1,latest\n"),
            "{cf}"
        );
        let gh = std::fs::read_to_string(&github).unwrap();
        assert!(
            gh.starts_with("earlier=1\n") && gh.contains("ECR_STEP_DIGEST=sha256:d\n"),
            "{gh}"
        );
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(value["tags"], serde_json::json!(["v1", "latest"]));
        assert_eq!(value["digest"], "sha256:d");
    }
}
