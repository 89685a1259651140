//! The image a run writes, as its source describes it: for push, a local image in the Docker Engine, an
//! OCI image layout, or an archive (`oci-archive:`, `docker-archive:`), named like skopeo's transports.

use crate::domain::manifest::Manifest;
use std::path::PathBuf;

/// Where push mode reads the image (`PLUGIN_SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local image in the Docker Engine: `name[:tag]` or an image id.
    Engine(String),
    /// `oci:PATH[:REF]`: an OCI image layout directory, `REF` its `org.opencontainers.image.ref.name`.
    Oci { path: PathBuf, reference: Option<String> },
    /// `oci-archive:PATH[:REF]`: an OCI image layout in a tar file.
    OciArchive { path: PathBuf, reference: Option<String> },
    /// `docker-archive:PATH[:REF]`: `docker save`'s tar (also BuildKit's and kaniko's), `REF` one of its tags.
    DockerArchive { path: PathBuf, reference: Option<String> },
}

impl Source {
    /// Parse `PLUGIN_SOURCE`: a transport prefix, else a local image in the engine (checked by the caller).
    pub fn parse(value: &str) -> Source {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.split_once(':') {
                Some((path, reference)) if !reference.is_empty() => (PathBuf::from(path), Some(reference.to_string())),
                Some((path, _)) => (PathBuf::from(path), None),
                None => (PathBuf::from(rest), None),
            }
        };
        if let Some(rest) = value.strip_prefix("oci:") {
            let (path, reference) = split(rest);
            Source::Oci { path, reference }
        } else if let Some(rest) = value.strip_prefix("oci-archive:") {
            let (path, reference) = split(rest);
            Source::OciArchive { path, reference }
        } else if let Some(rest) = value.strip_prefix("docker-archive:") {
            let (path, reference) = split(rest);
            Source::DockerArchive { path, reference }
        } else {
            Source::Engine(value.to_string())
        }
    }

    /// Whether reading it needs a Docker Engine.
    pub fn needs_engine(&self) -> bool {
        matches!(self, Source::Engine(_))
    }
}

/// A blob of an image on local disk, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// An image read from files: the manifest to tag (an image manifest or an index, bytes exact), the child
/// manifests of an index (written first), every blob, and the image id (the config's digest) of an image.
#[derive(Debug, Clone)]
pub struct FileImage {
    pub manifest: Manifest,
    pub children: Vec<Manifest>,
    pub blobs: Vec<LocalBlob>,
    /// The config digest of an image manifest; `None` for an index.
    pub image_id: Option<String>,
    /// How many layers the step compressed (uncompressed layers of a docker archive).
    pub compressed: usize,
}

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
