//! Where images go: the destination registries (each with the region its token comes from) and, in
//! every one of them, one repository and its tags.

use crate::domain::registry::Registry;

/// One registry images go to, and the region its token comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRegistry {
    /// `None`: the registry of the token's proxy endpoint.
    pub registry: Option<Registry>,
    pub region: String,
}

/// The repository and tags written in every destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub repo: String,
    pub tags: Vec<String>,
}

/// `<registry>/<repo>`: how every message and output names a repository in a registry.
pub fn label(host: &str, repo: &str) -> String {
    format!("{host}/{repo}")
}
