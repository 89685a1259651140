//! The image a run writes, as its source describes it: for push, a local image in the Docker Engine, an
//! OCI image layout, or an archive (`oci-archive:`, `docker-archive:`), named like skopeo's transports.

use crate::domain::manifest::{Descriptor, GZIP_LAYER_TYPES, Manifest, ZSTD_LAYER};
use crate::domain::reference::{ImageRef, Reference};
use std::collections::{BTreeMap, BTreeSet};
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
    /// Layers that are its base's, sent as the base's registry holds them ([`BaseLayers`]), not from files.
    pub borrowed: Vec<Descriptor>,
    /// With `PLUGIN_SOCI`: what the SOCI index holds, or why the image has none.
    pub soci: Option<Result<SociSummary, String>>,
}

/// SOCI indexes pushed with an image: the tags hold an index of its `images` (each now an OCI manifest;
/// the first is `image`) and their SOCI indexes (the first is `index`), with a zTOC for `indexed` of
/// their `layers`.
#[derive(Debug, Clone)]
pub struct SociSummary {
    pub image: String,
    pub index: String,
    pub images: usize,
    pub indexed: usize,
    pub layers: usize,
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
    /// The diff ids of its layers (digests of the uncompressed tars), bottom first.
    pub layers: Vec<String>,
    /// The uncompressed size of each layer, bottom first, where the engine's history tells them (else
    /// empty).
    pub layer_sizes: Vec<u64>,
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

/// An image in the engine that was pulled from (or pushed to) a registry this run writes to: when its
/// layers are the source's first layers, the source was built on it, and those layers are in that
/// registry already, compressed as the registry holds them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PulledImage {
    pub host: String,
    pub repo: String,
    /// The manifest (or index) digest it was pulled as.
    pub digest: String,
    pub image_id: String,
    /// Diff ids, bottom first.
    pub layers: Vec<String>,
    /// Its size in the engine (uncompressed), bytes.
    pub size: u64,
}

impl PulledImage {
    /// The image `image_id` with `layers`, as one of its repo digests (`<host>/<repo>@sha256:…`) names it;
    /// `None` for a repo digest without a registry host.
    pub fn new(repo_digest: &str, image_id: &str, layers: &[String], size: u64) -> Option<PulledImage> {
        let parsed = ImageRef::parse(repo_digest).ok()?;
        let Reference::Digest(digest) = parsed.reference else {
            return None;
        };
        Some(PulledImage {
            host: parsed.host?,
            repo: parsed.repo,
            digest,
            image_id: image_id.to_string(),
            layers: layers.to_vec(),
            size,
        })
    }

    /// `<host>/<repo>@<digest>`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.host, self.repo, self.digest)
    }
}

/// The image `source` shares the most first layers with among those the engine pulled from (or pushed
/// to) a registry this run writes to: its base, or the previous build of a rebuild. The engine holds a
/// record of that registry for those layers, so `docker push` skips them without reading them.
pub fn base_of(source: &LocalImage, pulled: Vec<PulledImage>) -> Option<PulledImage> {
    pulled
        .into_iter()
        .map(|p| (shared_layers(source, &p), p))
        .filter(|(shared, _)| *shared > 0)
        .max_by_key(|(shared, p)| (*shared, std::cmp::Reverse(p.layers.len())))
        .map(|(_, p)| p)
}

/// How many first layers `source` shares with `base`.
fn shared_layers(source: &LocalImage, base: &PulledImage) -> usize {
    source
        .layers
        .iter()
        .zip(&base.layers)
        .take_while(|(a, b)| a == b)
        .count()
}

/// The uncompressed bytes of `source`'s layers shared with `base`: from the layers' sizes where the
/// engine told them, else `base`'s size (all of it when all of it is shared, else in proportion).
fn shared_bytes(source: &LocalImage, base: &PulledImage) -> u64 {
    let shared = shared_layers(source, base);
    if source.layer_sizes.len() == source.layers.len() {
        return source.layer_sizes[..shared].iter().sum();
    }
    match base.layers.len() {
        0 => 0,
        n if n == shared => base.size,
        n => base.size * shared as u64 / n as u64,
    }
}

/// Whether `docker push` through the engine is the faster way to push `source` (`PLUGIN_PUSH_VIA=auto`):
/// when every destination is the registry `base` came from and the layers shared with it are at least
/// half of the image, the engine sends only the other layers and never reads the shared ones, while the
/// step would have to export them all (measured in BENCHMARKS.md). The reason, for the log; `None`: the
/// step's transfer.
pub fn engine_is_faster(source: &LocalImage, base: Option<&PulledImage>, destinations: &[String]) -> Option<String> {
    let base = base?;
    let shared = shared_bytes(source, base);
    let own = (source.size.max(0) as u64).saturating_sub(shared);
    if destinations.iter().any(|d| *d != base.host) || shared < own {
        return None;
    }
    let mb = |b: u64| b as f64 / 1e6;
    Some(format!(
        "{:.1} MB of the image's {:.1} MB are layers of {}, which that registry holds and the engine knows: the \
         engine sends only the other {:.1} MB and never reads those (PLUGIN_PUSH_VIA=registry moves every byte \
         through the step instead)",
        mb(shared),
        mb(shared + own),
        base.reference(),
        mb(own)
    ))
}

/// How the step gzip-compresses the layers it compresses (`PLUGIN_COMPRESSION_LEVEL`): a function of the
/// value and the layer's size alone, so the same layer gives the same digest on any machine. (Push turns
/// `Auto` into the level a measured link favours where it measures one: `link::Uplink::level`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Level 2 for layers under [`Compression::SMALL_LAYER`] (a rebuild's new top layer): nearly level 6's
    /// bytes (a tenth more on this machine's programs and libraries, where level 1 leaves a third more)
    /// for about half of level 6's CPU, so it is near the best on loopback and over a network alike;
    /// level 1 above, as pigz -1, where the CPU is the cost (measured on the application image of
    /// BENCHMARKS.md: level 6 on its 61 MiB dependency layer took 1.0 s of the step's 5.3 s on loopback,
    /// level 1 0.6 s).
    #[default]
    Auto,
    /// One level, 1 to 9, for every layer (a slow link favours a higher one).
    Level(u32),
}

/// How the step writes the layers it compresses: gzip or zstd (`PLUGIN_COMPRESSION`), the level
/// (`PLUGIN_COMPRESSION_LEVEL`), and whether each large one gets a zTOC for a SOCI index (`PLUGIN_SOCI`,
/// gzip only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compressing {
    pub algorithm: Algorithm,
    pub level: Compression,
    pub soci: bool,
}

/// The compression of the layers the step compresses (`PLUGIN_COMPRESSION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// What every client pulls; the image keeps a Docker manifest.
    #[default]
    Gzip,
    /// Fewer bytes for far less CPU, in an OCI manifest; not every client pulls it (Docker Engine 20.10
    /// does not).
    Zstd,
}

impl Algorithm {
    /// `gzip` or `zstd`.
    pub fn parse(value: &str) -> Result<Algorithm, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "gzip" => Ok(Algorithm::Gzip),
            "zstd" => Ok(Algorithm::Zstd),
            _ => Err("gzip or zstd".to_string()),
        }
    }
}

impl Compressing {
    /// zstd's level under `auto`: libzstd's own default, about 10 times faster than gzip at docker's level
    /// with fewer bytes, so no link favours another.
    pub const ZSTD_AUTO: u32 = 3;

    /// The level of a layer of `size` uncompressed bytes.
    pub fn level_for(self, size: u64) -> u32 {
        match (self.algorithm, self.level) {
            (Algorithm::Zstd, Compression::Auto) => Self::ZSTD_AUTO,
            (_, level) => level.level_for(size),
        }
    }

    /// Whether layers are written with zstd (then the image gets an OCI manifest).
    pub fn zstd(self) -> bool {
        self.algorithm == Algorithm::Zstd
    }
}

impl Compression {
    /// Layers under this size (uncompressed bytes) are compressed at level 2 under `auto`.
    pub const SMALL_LAYER: u64 = 32 << 20;

    /// `auto` or a level from 1 to 9.
    pub fn parse(value: &str) -> Result<Compression, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Compression::Auto),
            v => match v.parse::<u32>() {
                Ok(level @ 1..=9) => Ok(Compression::Level(level)),
                _ => Err("auto, or a gzip level from 1 (fastest) to 9 (smallest)".to_string()),
            },
        }
    }

    /// The level for a layer of `size` uncompressed bytes.
    pub fn level_for(self, size: u64) -> u32 {
        match self {
            Compression::Auto if size < Self::SMALL_LAYER => 2,
            Compression::Auto => 1,
            Compression::Level(level) => level,
        }
    }
}

/// The layers the source shares with its base, by diff id, as the base's registry holds them (gzip
/// layers, as a Docker manifest's are; with `PLUGIN_COMPRESSION=zstd`, whose OCI manifest may list both,
/// zstd layers too).
#[derive(Debug, Clone)]
pub struct BaseLayers {
    pub base: PulledImage,
    pub by_diff_id: BTreeMap<String, Descriptor>,
    /// The digests of `by_diff_id`'s zstd layers.
    pub zstd: BTreeSet<String>,
    /// The zTOCs the base's registry holds for those layers, by layer digest (from the SOCI index pushed
    /// with it), so a rebuild's SOCI index keeps them.
    pub ztocs: BTreeMap<String, Descriptor>,
    /// Every layer of `by_diff_id` was found by a HEAD in the base's repository during this run (then a
    /// push into that same repository does not ask again; a layer deleted since fails the manifest's PUT).
    pub confirmed: bool,
}

impl BaseLayers {
    /// Pair the base's image manifest (as its registry holds it) with its diff ids, keeping the layers the
    /// source (its diff ids: `source`) has too (a previous build shares only its first layers): the manifest
    /// must be of this image (its config is the image id) and list one layer per diff id. Its zstd layers
    /// are kept only for a push in zstd (`zstd`).
    pub fn new(base: PulledImage, manifest: &Manifest, source: &[String], zstd: bool) -> Result<BaseLayers, String> {
        if manifest.config_digest().as_deref() != Some(base.image_id.as_str()) {
            return Err(format!("{} is not image {}", base.reference(), base.image_id));
        }
        let layers = manifest.layers().map_err(|e| e.to_string())?;
        if layers.len() != base.layers.len() {
            return Err(format!(
                "{} lists {} layer(s), the engine {}",
                base.reference(),
                layers.len(),
                base.layers.len()
            ));
        }
        let by_diff_id = base
            .layers
            .iter()
            .zip(layers)
            .filter(|(diff_id, _)| source.contains(diff_id))
            .filter(|(_, (_, media_type))| {
                GZIP_LAYER_TYPES.contains(&media_type.as_str()) || (zstd && media_type == ZSTD_LAYER)
            })
            .map(|(diff_id, (descriptor, media_type))| (diff_id.clone(), (descriptor, media_type == ZSTD_LAYER)))
            .collect::<BTreeMap<_, _>>();
        if by_diff_id.is_empty() {
            let which = if zstd { "gzip- or zstd-" } else { "gzip-" };
            return Err(format!(
                "none of the layers the image shares with {} is {which}compressed",
                base.reference()
            ));
        }
        let zstd = by_diff_id
            .values()
            .filter(|(_, zstd)| *zstd)
            .map(|(d, _)| d.digest.clone())
            .collect();
        Ok(BaseLayers {
            base,
            by_diff_id: by_diff_id.into_iter().map(|(id, (d, _))| (id, d)).collect(),
            zstd,
            ztocs: BTreeMap::new(),
            confirmed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn pulled(repo: &str, layers: &[&str]) -> PulledImage {
        let digest = format!("sha256:{}", "a".repeat(64));
        PulledImage::new(
            &format!("127.0.0.1:5000/{repo}@{digest}"),
            "sha256:id",
            &ids(layers),
            100,
        )
        .unwrap()
    }

    #[test]
    fn the_base_is_the_pulled_image_sharing_the_most_first_layers() {
        let source = LocalImage {
            reference: "app".into(),
            id: "sha256:app".into(),
            size: 0,
            repo_digests: Vec::new(),
            layers: ids(&["l1", "l2", "l3"]),
            layer_sizes: Vec::new(),
        };
        let candidates = vec![
            pulled("short", &["l1"]),
            pulled("long", &["l1", "l2"]),
            pulled("other", &["l9", "l1"]),
            pulled("empty", &[]),
        ];
        assert_eq!(base_of(&source, candidates).unwrap().repo, "long");
        assert_eq!(base_of(&source, vec![pulled("other", &["l2"])]), None);
        // A previous build (its top layer differs) shares as much as a base would.
        let previous = pulled("previous", &["l1", "l2", "l9"]);
        assert_eq!(
            base_of(&source, vec![pulled("short", &["l1"]), previous.clone()]),
            Some(previous)
        );
        // Of two sharing as much, the one with fewer layers of its own.
        let two = vec![
            pulled("taller", &["l1", "l2", "l3", "l4"]),
            pulled("app", &["l1", "l2", "l3"]),
        ];
        assert_eq!(base_of(&source, two).unwrap().repo, "app");
    }

    #[test]
    fn the_engine_is_chosen_only_for_an_image_mostly_made_of_layers_every_destination_holds() {
        let source = |size: i64| LocalImage {
            reference: "app".into(),
            id: "sha256:app".into(),
            size,
            repo_digests: Vec::new(),
            layers: ids(&["l1", "l2"]),
            layer_sizes: Vec::new(),
        };
        let base = pulled("base", &["l1"]); // 100 bytes, in 127.0.0.1:5000
        let here = vec!["127.0.0.1:5000".to_string()];
        let why = engine_is_faster(&source(150), Some(&base), &here).expect("a base of 100 in 150 bytes");
        assert!(
            why.contains("127.0.0.1:5000/base@sha256:") && why.contains("PLUGIN_PUSH_VIA=registry"),
            "{why}"
        );
        assert!(
            engine_is_faster(&source(200), Some(&base), &here).is_some(),
            "half is enough"
        );
        assert_eq!(
            engine_is_faster(&source(201), Some(&base), &here),
            None,
            "less than half"
        );
        let also_elsewhere = vec!["127.0.0.1:5000".to_string(), "127.0.0.1:6000".to_string()];
        assert_eq!(engine_is_faster(&source(150), Some(&base), &also_elsewhere), None);
        assert_eq!(engine_is_faster(&source(150), None, &here), None);
        // A previous build of 100 bytes sharing its first layer: without layer sizes, half of it is counted.
        let previous = pulled("previous", &["l1", "l9"]);
        assert!(engine_is_faster(&source(100), Some(&previous), &here).is_some());
        assert_eq!(engine_is_faster(&source(101), Some(&previous), &here), None);
        // With the engine's layer sizes: a small shared layer under a large new one is not worth the engine.
        let mut sized = source(1000);
        sized.layer_sizes = vec![10, 990];
        assert_eq!(engine_is_faster(&sized, Some(&previous), &here), None);
        sized.layer_sizes = vec![990, 10];
        let why = engine_is_faster(&sized, Some(&previous), &here).expect("990 of 1000 bytes shared");
        assert!(why.contains("0.0 MB of the image's 0.0 MB"), "{why}");
    }

    #[test]
    fn the_compression_level_is_the_settings_or_by_size_under_auto() {
        assert_eq!(Compression::parse(" AUTO "), Ok(Compression::Auto));
        assert_eq!(Compression::parse("9"), Ok(Compression::Level(9)));
        for bad in ["0", "10", "fast", "", "-1"] {
            assert!(Compression::parse(bad).is_err(), "{bad}");
        }
        let auto = Compression::Auto;
        assert_eq!(
            (auto.level_for(5 << 20), auto.level_for(Compression::SMALL_LAYER)),
            (2, 1)
        );
        assert_eq!(Compression::Level(4).level_for(1 << 30), 4);
    }

    #[test]
    fn a_repo_digest_names_host_repository_and_digest() {
        let p = pulled("team/base", &["l1"]);
        assert_eq!((p.host.as_str(), p.repo.as_str()), ("127.0.0.1:5000", "team/base"));
        assert_eq!(
            p.reference(),
            format!("127.0.0.1:5000/team/base@sha256:{}", "a".repeat(64))
        );
        // Docker Hub's short names carry no registry host: not a registry this run writes to.
        assert_eq!(
            PulledImage::new(&format!("debian@sha256:{}", "a".repeat(64)), "i", &[], 1),
            None
        );
    }

    #[test]
    fn base_layers_pair_gzip_layers_with_diff_ids_of_the_same_image_only() {
        let manifest = |config: &str, second_type: &str| Manifest {
            bytes: format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{config}","size":1}},"layers":[
                {{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:g1","size":10}},
                {{"mediaType":"{second_type}","digest":"sha256:g2","size":20}}]}}"#
            )
            .into_bytes(),
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
            digest: String::new(),
        };
        let base = pulled("base", &["l1", "l2"]);
        let source = base.layers.clone();
        let gzip = BaseLayers::new(
            base.clone(),
            &manifest("sha256:id", "application/vnd.oci.image.layer.v1.tar+gzip"),
            &source,
            false,
        )
        .unwrap();
        assert_eq!(gzip.by_diff_id["l1"].digest, "sha256:g1");
        assert_eq!(gzip.by_diff_id["l2"].size, 20);
        assert!(gzip.zstd.is_empty());
        let zstd = BaseLayers::new(
            base.clone(),
            &manifest("sha256:id", "application/vnd.oci.image.layer.v1.tar+zstd"),
            &source,
            false,
        )
        .unwrap();
        assert_eq!(
            zstd.by_diff_id.keys().collect::<Vec<_>>(),
            vec!["l1"],
            "a zstd layer is not reused in a Docker manifest"
        );
        // A push in zstd (an OCI manifest) reuses both, and knows which is which.
        let both = BaseLayers::new(
            base.clone(),
            &manifest("sha256:id", "application/vnd.oci.image.layer.v1.tar+zstd"),
            &source,
            true,
        )
        .unwrap();
        assert_eq!(both.by_diff_id.keys().collect::<Vec<_>>(), vec!["l1", "l2"]);
        assert_eq!(both.zstd.iter().collect::<Vec<_>>(), vec!["sha256:g2"]);
        let one = pulled("base", &["l1"]);
        let zstd_only = Manifest {
            bytes: br#"{"schemaVersion":2,"config":{"digest":"sha256:id","size":1},"layers":[
                {"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:z","size":1}]}"#
                .to_vec(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: String::new(),
        };
        assert!(
            BaseLayers::new(one.clone(), &zstd_only, &source, false).is_err(),
            "nothing to borrow is no base"
        );
        assert!(BaseLayers::new(one, &zstd_only, &source, true).is_ok());
        // A previous build: only the layers the source has too.
        let previous = BaseLayers::new(
            base.clone(),
            &manifest("sha256:id", "application/vnd.oci.image.layer.v1.tar+gzip"),
            &ids(&["l1", "l9"]),
            false,
        )
        .unwrap();
        assert_eq!(previous.by_diff_id.keys().collect::<Vec<_>>(), vec!["l1"]);
        assert!(BaseLayers::new(base, &manifest("sha256:other", "x"), &source, true).is_err());
        let three = pulled("base", &["l1", "l2", "l3"]);
        assert!(BaseLayers::new(three, &manifest("sha256:id", "x"), &source, true).is_err());
    }
}
