//! Image references as users write them for promote: `repo:tag`, `repo@sha256:…`, or with a registry
//! host in front, `host[:port]/repo:tag`. Pure parsing, checked with the repository and tag grammar.

use crate::domain::grammar;
use std::fmt;

/// A tag or a digest inside a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => f.write_str(d),
        }
    }
}

/// Docker Hub's registry host, and the names users write for it.
pub const DOCKER_HUB: &str = "registry-1.docker.io";
const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// `[host[:port]/]repo(:tag|@digest)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `None`: the same registry as the target.
    pub host: Option<String>,
    pub repo: String,
    pub reference: Reference,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = &self.host {
            write!(f, "{host}/")?;
        }
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.repo),
            Reference::Digest(d) => write!(f, "{}@{d}", self.repo),
        }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(value: &str) -> bool {
    value
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl ImageRef {
    /// Parse a reference; a missing tag means `latest`, as in the docker CLI.
    pub fn parse(value: &str) -> Result<ImageRef, String> {
        let allowed = || {
            "an image reference such as team/app:1.2, team/app@sha256:<64 hex> or host[:port]/team/app:1.2".to_string()
        };
        let (name, digest) = match value.split_once('@') {
            Some((name, digest)) if is_digest(digest) => (name, Some(digest.to_string())),
            Some(_) => return Err(allowed()),
            None => (value, None),
        };
        let (host, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_ascii_lowercase()), rest)
            }
            _ => (None, name),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (path, None),
        };
        // Docker Hub, named as docker reads it: `docker.io/x` is `registry-1.docker.io/library/x`.
        let hub = host.as_deref().is_some_and(|h| DOCKER_HUB_NAMES.contains(&h));
        let (host, repo) = match hub {
            true if !repo.contains('/') => (Some(DOCKER_HUB.to_string()), format!("library/{repo}")),
            true => (Some(DOCKER_HUB.to_string()), repo.to_string()),
            false => (host, repo.to_string()),
        };
        let repo = repo.as_str();
        grammar::repository(repo).map_err(|_| allowed())?;
        let reference = match (tag, digest) {
            (Some(_), Some(_)) => return Err(format!("{}, with a tag or a digest, not both", allowed())),
            (_, Some(d)) => Reference::Digest(d),
            (Some(t), None) => {
                grammar::tag(t).map_err(|_| allowed())?;
                Reference::Tag(t.to_string())
            }
            (None, None) => Reference::Tag("latest".to_string()),
        };
        if let Some(h) = &host {
            crate::domain::registry::Registry::parse(h)?;
        }
        Ok(ImageRef {
            host,
            repo: repo.to_string(),
            reference,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_into_host_repo_and_tag_or_digest() {
        let r = ImageRef::parse("team/app:1.2").unwrap();
        assert_eq!(
            (r.host, r.repo.as_str(), r.reference),
            (None, "team/app", Reference::Tag("1.2".into()))
        );
        let r = ImageRef::parse(&format!("team/app@{D}")).unwrap();
        assert_eq!(r.reference, Reference::Digest(D.into()));
        let r = ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repo, "team/app");
        let r = ImageRef::parse("123456789012.dkr.ecr.eu-west-2.amazonaws.com/app").unwrap();
        assert_eq!(r.reference, Reference::Tag("latest".into()));
        assert_eq!(r.to_string(), "123456789012.dkr.ecr.eu-west-2.amazonaws.com/app:latest");
    }

    #[test]
    fn docker_hub_names_are_read_as_docker_reads_them() {
        let r = ImageRef::parse("docker.io/alpine:3.20").unwrap();
        assert_eq!(
            (r.host.as_deref(), r.repo.as_str()),
            (Some(DOCKER_HUB), "library/alpine")
        );
        assert!(ImageRef::parse("docker.io/bitnami/redis@sha256:").is_err());
        let r = ImageRef::parse("index.docker.io/bitnami/redis:7").unwrap();
        assert_eq!(
            (r.host.as_deref(), r.repo.as_str()),
            (Some(DOCKER_HUB), "bitnami/redis")
        );
        let r = ImageRef::parse("ghcr.io/org/app:1").unwrap();
        assert_eq!((r.host.as_deref(), r.repo.as_str()), (Some("ghcr.io"), "org/app"));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "Team/App:1",
            "app:",
            "app:-x",
            "app@sha256:short",
            &format!("app:v1@{D}"),
            "1.dkr.ecr.us-east-1.amazonaws.com.evil.com/app:1",
            "app name:1",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
