//! The image a run writes, as its source describes it: for push, a local image in the Docker Engine.

/// A local image in the engine.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// As the user wrote it (`PLUGIN_SOURCE`).
    pub reference: String,
    /// The image id: the digest of its config, which a pushed manifest must name.
    pub id: String,
    pub size: i64,
    /// `<registry>/<repo>@sha256:…` for every repository the engine has pushed this image to.
    pub repo_digests: Vec<String>,
}

impl LocalImage {
    /// The digests this image already has in `<registry>/<repo>` (from earlier pushes by this engine).
    pub fn known_digests(&self, target: &str) -> std::collections::BTreeSet<String> {
        let prefix = format!("{target}@");
        self.repo_digests
            .iter()
            .filter_map(|d| d.strip_prefix(&prefix))
            .map(String::from)
            .collect()
    }
}
