//! `docker save`'s tar (also BuildKit's, kaniko's and the engine's export stream), read as it streams in:
//! each layer that is an uncompressed tar is gzip-compressed as it passes ([`super::gzip`]), so the
//! uncompressed image is never written to disk; every other entry is unpacked into a tree of the step's own
//! scratch directory, confined to it ([`Tree`]). Then `manifest.json` picks the config and the layers, and
//! every layer's diff id must be the one the config names.

use super::gzip::{gzip_digests, hex_digest};
use super::zstd::zstd_file;
use super::ztoc::{Compressed, gzip_layer};
use super::{
    CONFIG_LIMIT, EARLY_UPLOAD_FROM, Early, Growing, MANIFEST_LIMIT, Opened, input_tree, scratch_error, unpack_error,
};
use crate::domain::excerpt;
use crate::domain::manifest::{Descriptor, Manifest, ZSTD_LAYER, sha256};
use crate::domain::soci::OCI_MANIFEST;
use crate::domain::source::{BaseLayers, Compressing, FileImage, LocalBlob, LocalImage};
use crate::files::ScratchDir;
use crate::files::tree::{Found, Tree, inside};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Read `docker save`'s tar as it streams in (from a file, or straight from the engine's export): each
/// layer that is an uncompressed tar is gzip-compressed as it passes, so the uncompressed image is never
/// written to disk, and the reading, the compression and the writer of the stream run side by side.
///
/// Each large layer known to be new is announced on `early` as its compression starts ([`Growing`]), so
/// its upload can follow it; none is said ready (so no such upload is closed, and no blob lands) until
/// every check of the archive has passed. The config is announced then, ready, so its upload runs beside
/// theirs.
///
/// With `base` (the layers the destinations hold, by diff id), those layers are not compressed: they are
/// sent as the destination holds them (`FileImage::borrowed`). `diff_ids` (the image's, bottom first, when
/// known, as for an engine's export) tell a legacy `docker save` layer apart before it is read; see
/// [`unpack_compressing`]. Layers are compressed at the level `compressing` gives for their size; with
/// SOCI, the image is pushed with a SOCI index of the large layers it compressed ([`crate::domain::soci`]).
pub fn docker_archive_from(
    input: impl TarInput,
    reference: Option<&str>,
    early: Option<&Early>,
    base: Option<&BaseLayers>,
    diff_ids: &[String],
    compressing: Compressing,
) -> Result<Opened> {
    let scratch = ScratchDir::new("docker-archive").map_err(|e| scratch_error(e.into()))?;
    let tree = input_tree(&scratch)?;
    let layers = scratch.path.join("layers");
    std::fs::create_dir(&layers).map_err(|e| scratch_error(e.into()))?;
    let mut unpacked =
        unpack_compressing(input, &tree, &layers, early, base, diff_ids, compressing).map_err(scratch_error)?;
    let ready = std::mem::take(&mut unpacked.ready);
    let image = read_docker(&tree, &layers, reference, unpacked, base, compressing)?;
    // Every check passed: the uploads that followed the compressions may close.
    for (said, blob) in ready {
        let _ = said.send(Some(blob));
    }
    // The config too is ready now: its upload runs beside the layers' still going, not after them (a
    // destination that holds it is asked first).
    let config = image.blobs.iter().find(|b| image.image_id.as_ref() == Some(&b.digest));
    if let (Some(early), Some(config)) = (early, config) {
        let (_, done) = tokio::sync::watch::channel(Some(config.clone()));
        let _ = early.send(Growing {
            path: config.path.clone(),
            done,
            digest: Some(config.digest.clone()),
        });
    }
    Ok(Opened {
        image,
        scratch: Some(scratch),
    })
}

/// Where `docker save`'s tar is read from: a stream (the engine's export) is read past what is not used, a
/// file is seeked past it (a layer the destinations hold is then never read).
pub trait TarInput: Read + Sized {
    /// The entries of `tar`, one after the other.
    fn entries(tar: &mut tar::Archive<Self>) -> std::io::Result<tar::Entries<'_, Self>>;

    /// The file the tar is in, where it is one ([`ArchiveFile`]): a new layer is then read at its place in
    /// it by the thread that compresses it, while the walk seeks past it (a stream's is read into memory
    /// first). `None` for a stream.
    fn file(&self) -> Option<std::fs::File> {
        None
    }
}

/// `docker save`'s tar in a file: seeked past what is not used, and each new layer read at its place by
/// the thread that compresses it, so its compression (and the upload that follows it) starts at once.
pub struct ArchiveFile(std::io::BufReader<std::fs::File>);

impl ArchiveFile {
    pub fn new(file: std::fs::File) -> ArchiveFile {
        // A small buffer, as a seek past a layer drops it (the layers' large reads bypass it).
        ArchiveFile(std::io::BufReader::with_capacity(64 << 10, file))
    }
}

impl Read for ArchiveFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Seek for ArchiveFile {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(to)
    }
}

impl TarInput for ArchiveFile {
    fn entries(tar: &mut tar::Archive<Self>) -> std::io::Result<tar::Entries<'_, Self>> {
        tar.entries_with_seek()
    }

    fn file(&self) -> Option<std::fs::File> {
        self.0.get_ref().try_clone().ok()
    }
}

/// `size` bytes of `file` from `at`, read by position (the walk's own reads and seeks are not moved).
struct AtPlace {
    file: std::fs::File,
    at: u64,
    left: u64,
}

impl Read for AtPlace {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let most = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if most == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..most], self.at)?;
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

impl TarInput for super::Chunks {
    fn entries(tar: &mut tar::Archive<Self>) -> std::io::Result<tar::Entries<'_, Self>> {
        tar.entries()
    }
}

#[cfg(test)]
impl TarInput for &[u8] {
    fn entries(tar: &mut tar::Archive<Self>) -> std::io::Result<tar::Entries<'_, Self>> {
        tar.entries()
    }
}

impl<R: Read + std::io::Seek> TarInput for std::io::BufReader<R> {
    fn entries(tar: &mut tar::Archive<Self>) -> std::io::Result<tar::Entries<'_, Self>> {
        tar.entries_with_seek()
    }
}

/// What an archive entry became.
pub(super) enum Made {
    /// A directory, or an entry with nothing to make (a PAX global header).
    Nothing,
    /// A regular file, for the caller to write.
    File(PathBuf),
    /// A hard link `name` to the earlier entry `target`.
    HardLink { name: PathBuf, target: PathBuf },
}

/// Make `entry` in `tree` unless it is a regular file: directories and links are made (never through a
/// link, never over another entry); a device or FIFO, a name outside the archive, or a second entry of the
/// same name is refused.
pub(super) fn unpack_entry<R: Read>(
    tree: &Tree,
    entry: &mut tar::Entry<R>,
    seen: &mut BTreeSet<PathBuf>,
) -> Result<Made> {
    use tar::EntryType as T;
    let raw = entry.path().map_err(tar_error)?.into_owned();
    let shown = || excerpt(raw.as_os_str().as_encoded_bytes(), 200);
    let name = inside(&raw).ok_or_else(|| {
        anyhow!(
            "the archive's entry `{}` leads outside it (an absolute path, or `..` above its top): refused",
            shown()
        )
    })?;
    if name.as_os_str().is_empty() {
        return Ok(Made::Nothing);
    }
    let kind = entry.header().entry_type();
    if kind.is_dir() {
        tree.dir(&name).map_err(|e| unpack_error(&name, e))?;
        return Ok(Made::Nothing);
    }
    let what = match kind {
        T::Char => Some("a character device"),
        T::Block => Some("a block device"),
        T::Fifo => Some("a FIFO"),
        T::Regular | T::Continuous | T::Symlink | T::Link => None,
        _ => return Ok(Made::Nothing),
    };
    if let Some(what) = what {
        bail!(
            "the archive's entry `{}` is {what}: an image archive holds only files, directories and links: refused",
            shown()
        );
    }
    if !seen.insert(name.clone()) {
        bail!(
            "the archive holds `{}` twice: refused, since which of the two is the image cannot be told",
            shown()
        );
    }
    let link = || -> Result<PathBuf> {
        Ok(entry
            .link_name()
            .map_err(tar_error)?
            .ok_or_else(|| anyhow!("the archive's link `{}` has no target", shown()))?
            .into_owned())
    };
    match kind {
        T::Symlink => {
            let target = link()?;
            tree.symlink(&name, &target).map_err(|e| unpack_error(&name, e))?;
            Ok(Made::Nothing)
        }
        T::Link => {
            let target = link()?;
            let target = inside(&target).ok_or_else(|| {
                anyhow!(
                    "the archive's hard link `{}` points outside it (`{}`): refused",
                    shown(),
                    excerpt(target.as_os_str().as_encoded_bytes(), 200)
                )
            })?;
            tree.hard_link(&name, &target).map_err(|e| unpack_error(&name, e))?;
            Ok(Made::HardLink { name, target })
        }
        _ => Ok(Made::File(name)),
    }
}

/// A tar the reader cannot take: said with the reader's message escaped and shortened (it may quote the
/// file's bytes), never raw.
pub(super) fn tar_error(e: std::io::Error) -> anyhow::Error {
    anyhow!("not a readable tar archive: {}", excerpt(e.to_string().as_bytes(), 160))
}

/// A layer met while unpacking, by its name in the archive.
#[derive(Default)]
struct Unpacked {
    /// Compressed by the step, with its diff id.
    compressed: BTreeMap<PathBuf, (LocalBlob, String)>,
    /// Layers of the base, by diff id: not kept.
    borrowed: BTreeMap<PathBuf, String>,
    /// With SOCI: the zTOC of each layer compressed here, by the layer's digest, or why it has none.
    ztocs: BTreeMap<String, Result<LocalBlob, String>>,
    /// Each layer compressed here whose upload may have started early, with where it is said ready: only
    /// once every check of the archive has passed (until then no such upload is closed).
    ready: Vec<(Ready, LocalBlob)>,
}

/// Where a layer whose upload follows its compression is said ready (dropped unsent: it must not land).
type Ready = tokio::sync::watch::Sender<Option<LocalBlob>>;

impl Unpacked {
    /// A layer compressed here, by its name in the archive.
    fn compressed(&mut self, name: PathBuf, layer: Compressed) {
        if let Some(ztoc) = layer.ztoc {
            self.ztocs.insert(layer.blob.digest.clone(), ztoc);
        }
        self.compressed.insert(name, (layer.blob, layer.diff_id));
    }
}

/// Unpack `input` into `tree`, except that every regular file that is an uncompressed tar (a layer) is
/// written gzip-compressed into `layers` instead (or, when it is a layer of `base`, not at all; an empty
/// file keeps its name in the tree), and returned by its name in the archive.
///
/// Which layer an entry is, is known before it is read when its name says so (`blobs/sha256/<diff id>`,
/// Docker 25 and later) or its directory's `json` does (the legacy layout, told apart with `diff_ids`):
/// a layer `base` holds is then passed by (its bytes are never used), any other compressed as it
/// passes (under [`BEHIND_UP_TO`], on a thread beside the stream: [`Behind`]), its upload following its
/// compression when it is large. A layer that cannot be told apart before it is
/// read, while `base` holds some, is kept as it comes and compressed only once its diff id shows it new.
fn unpack_compressing<R: TarInput>(
    input: R,
    tree: &Tree,
    layers: &Path,
    early: Option<&Early>,
    base: Option<&BaseLayers>,
    diff_ids: &[String],
    compressing: Compressing,
) -> Result<Unpacked> {
    let file = input.file();
    let mut tar = tar::Archive::new(input);
    let mut done = Unpacked::default();
    let mut seen = BTreeSet::new();
    let chain = chain_ids(diff_ids);
    // Legacy `docker save` directories told apart by their `json`: directory → diff id.
    let mut legacy: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut behind = Behind::default();
    for (i, entry) in R::entries(&mut tar).map_err(tar_error)?.enumerate() {
        let mut entry = entry.map_err(tar_error)?;
        let name = match unpack_entry(tree, &mut entry, &mut seen)? {
            Made::File(name) => name,
            Made::HardLink { name, target } => {
                if let Some(layer) = done.compressed.get(&target).cloned() {
                    done.compressed.insert(name.clone(), layer);
                }
                if let Some(layer) = done.borrowed.get(&target).cloned() {
                    done.borrowed.insert(name, layer);
                }
                continue;
            }
            Made::Nothing => continue,
        };
        let mut head = Vec::with_capacity(512);
        (&mut entry).take(512).read_to_end(&mut head).map_err(tar_error)?;
        let level = compressing.level_for(entry.header().size().unwrap_or(u64::MAX));
        let mut out = tree.create_file(&name).map_err(|e| unpack_error(&name, e))?;
        if !is_tar(&head) {
            out.write_all(&head).map_err(|e| unpack_error(&name, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| unpack_error(&name, e))?;
            drop(out);
            if let Some((dir, diff_id)) = legacy_json(tree, &name, &chain, diff_ids) {
                legacy.insert(dir, diff_id);
            }
            continue;
        }
        drop(out);
        let claimed = diff_id_in_name(&name).or_else(|| legacy.get(name.parent()?).cloned());
        // Only a layer large enough for its compression to take a while gets an upload that follows it.
        let size = entry.header().size().unwrap_or(u64::MAX);
        let large = size != u64::MAX && size >= EARLY_UPLOAD_FROM;
        // Where its bytes lie in one piece in the input (a regular entry, as `docker save` writes).
        let regular = entry.header().entry_type() == tar::EntryType::Regular && entry.size() == size;
        let at_place = regular.then(|| entry.raw_file_position());
        let mut input = head.as_slice().chain(&mut entry);
        match (base, claimed) {
            (Some(base), Some(claimed)) if base.by_diff_id.contains_key(&claimed) => {
                // Passed by, not hashed (read past in a stream, seeked past in a file): none of these bytes
                // is sent. The image pushed names the destination's blob for this diff id at the place the
                // config gives it, so what the entry holds cannot change what is pushed (the config is
                // checked against the image id).
                done.borrowed.insert(name, claimed);
            }
            (Some(base), None) => {
                let raw = layers.join(format!("{i}.tar"));
                let mut hasher = Sha256::new();
                let mut kept = super::gzip::Tee {
                    inner: std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&raw)?),
                    hasher: &mut hasher,
                    written: 0,
                };
                std::io::copy(&mut input, &mut kept)?;
                kept.inner.flush()?;
                drop(kept);
                let diff_id = hex_digest(hasher);
                if base.by_diff_id.contains_key(&diff_id) {
                    done.borrowed.insert(name, diff_id);
                } else {
                    let out = layers.join(format!("{i}.tar.gz"));
                    let layer = compress_layer(&mut std::fs::File::open(&raw)?, &out, level, compressing)?;
                    done.compressed(name, layer);
                }
                std::fs::remove_file(&raw)?;
            }
            _ => {
                let out = layers.join(format!("{i}.tar.gz"));
                std::fs::File::create(&out)?;
                let (finished, growing) = tokio::sync::watch::channel(None);
                if let Some(early) = early.filter(|_| large) {
                    let _ = early.send(Growing {
                        path: out.clone(),
                        done: growing,
                        digest: None,
                    });
                }
                if let (Some(file), Some(at)) = (file.as_ref(), at_place.filter(|_| size <= BEHIND_UP_TO)) {
                    // In a file: read at its place by the thread that compresses it, while the walk seeks
                    // past it. What it reads is hashed there and checked against the config's diff id.
                    behind.make_room(0, &mut done)?;
                    let mut part = AtPlace {
                        file: file.try_clone().map_err(|e| unpack_error(&name, e))?,
                        at,
                        left: size,
                    };
                    let work = std::thread::spawn(move || compress_layer(&mut part, &out, level, compressing));
                    behind.pending.push_back((name, 0, finished, work));
                    continue;
                }
                if size <= BEHIND_UP_TO {
                    // Read into memory now (the stream goes on), compressed beside the rest of the stream.
                    behind.make_room(size, &mut done)?;
                    let mut bytes = Vec::with_capacity(size as usize);
                    input
                        .take(size)
                        .read_to_end(&mut bytes)
                        .map_err(|e| unpack_error(&name, e))?;
                    let work =
                        std::thread::spawn(move || compress_layer(&mut bytes.as_slice(), &out, level, compressing));
                    behind.pending.push_back((name, size, finished, work));
                    continue;
                }
                let layer = compress_layer(&mut input, &out, level, compressing)?;
                done.ready.push((finished, layer.blob.clone()));
                done.compressed(name, layer);
            }
        }
    }
    behind.finish(&mut done)?;
    Ok(done)
}

/// The largest layer compressed beside the rest of the stream (a rebuild's new top layer, whose
/// compression would otherwise hold up the reading of the layers after it): read into memory as it streams
/// in, or in a file ([`ArchiveFile`]) read at its place by the thread that compresses it.
const BEHIND_UP_TO: u64 = 32 << 20;
/// The most bytes of such layers held in memory at once, and the most such layers compressed at once.
const BEHIND_BYTES: u64 = 48 << 20;
const BEHIND_LAYERS: usize = 4;

/// Layers being compressed on threads of their own beside the stream, oldest first (with the bytes each
/// holds in memory).
#[derive(Default)]
struct Behind {
    pending: std::collections::VecDeque<(PathBuf, u64, Ready, std::thread::JoinHandle<Result<Compressed>>)>,
}

impl Behind {
    /// Wait for the oldest layers until one of `size` bytes more fits.
    fn make_room(&mut self, size: u64, done: &mut Unpacked) -> Result<()> {
        loop {
            let held: u64 = self.pending.iter().map(|(_, s, _, _)| s).sum();
            let fits = held + size <= BEHIND_BYTES && self.pending.len() < BEHIND_LAYERS;
            if fits || self.pending.is_empty() {
                return Ok(());
            }
            self.join_oldest(done)?;
        }
    }

    /// Wait for every layer.
    fn finish(&mut self, done: &mut Unpacked) -> Result<()> {
        while !self.pending.is_empty() {
            self.join_oldest(done)?;
        }
        Ok(())
    }

    fn join_oldest(&mut self, done: &mut Unpacked) -> Result<()> {
        if let Some((name, _, finished, work)) = self.pending.pop_front() {
            let layer = work
                .join()
                .map_err(|_| anyhow!("the compression of `{}` stopped", name.display()))??;
            done.ready.push((finished, layer.blob.clone()));
            done.compressed(name, layer);
        }
        Ok(())
    }
}

/// The chain ids of an image's layers (`sha256` of the previous chain id, a space and the diff id), as
/// the engine names its layer stack.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(below) => sha256(format!("{below} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// The size above which a legacy directory's `json` is not read to tell its layer apart.
const LEGACY_JSON_LIMIT: u64 = 1 << 20;

/// A legacy `docker save` directory (`<v1 id>/json`, before `<v1 id>/layer.tar`) and the diff id of the
/// layer it holds, when `name` is such a `json` and its v1 id is the engine's for one of the image's
/// layers. The engine derives a layer's v1 id from that `json` (without `id`, with `parent` as a
/// digest, and with the layer's chain id as `layer_id`, keys sorted; `os` is added after, except for the
/// top layer), so a match is a SHA-256 match: the directory cannot be taken for another layer.
fn legacy_json(tree: &Tree, name: &Path, chain: &[String], diff_ids: &[String]) -> Option<(PathBuf, String)> {
    if chain.is_empty() || name.file_name()? != "json" {
        return None;
    }
    let dir = name.parent()?;
    let v1_id = dir.to_str()?;
    if v1_id.len() != 64 || !v1_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (bytes, _) = tree.read(name, LEGACY_JSON_LIMIT).ok()?;
    let index = legacy_layer(v1_id, &bytes, chain)?;
    Some((dir.to_path_buf(), diff_ids[index].clone()))
}

/// Which of the layers (by their `chain` ids) the legacy directory `v1_id` with this `json` holds.
fn legacy_layer(v1_id: &str, json: &[u8], chain: &[String]) -> Option<usize> {
    use serde_json::value::RawValue;
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(json).ok()?;
    fields.remove("id");
    if let Some(parent) = fields.get("parent") {
        let parent: String = serde_json::from_str(parent.get()).ok()?;
        let parent = serde_json::to_string(&format!("sha256:{parent}")).ok()?;
        fields.insert("parent".into(), RawValue::from_string(parent).ok()?);
    }
    let without_os: BTreeMap<_, _> = fields.iter().filter(|(k, _)| *k != "os").collect();
    let with_os: BTreeMap<_, _> = fields.iter().collect();
    let wanted = format!("sha256:{v1_id}");
    chain.iter().position(|chain_id| {
        let layer_id = serde_json::to_string(chain_id).unwrap_or_default();
        [&without_os, &with_os].iter().any(|fields| {
            let mut text = String::from("{");
            let mut put = |key: &str, value: &str| {
                if text.len() > 1 {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(key).unwrap_or_default());
                text.push(':');
                text.push_str(value);
            };
            let mut layer_id_put = false;
            for (key, value) in fields.iter() {
                if !layer_id_put && key.as_str() > "layer_id" {
                    put("layer_id", &layer_id);
                    layer_id_put = true;
                }
                put(key, value.get());
            }
            if !layer_id_put {
                put("layer_id", &layer_id);
            }
            text.push('}');
            sha256(text.as_bytes()) == wanted
        })
    })
}

/// The digest a `blobs/sha256/<64 hex>` entry's name claims.
fn diff_id_in_name(name: &Path) -> Option<String> {
    let hex = name.to_str()?.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| format!("sha256:{hex}"))
}

/// Whether a file's first 512 bytes are a tar header (POSIX or GNU magic at offset 257).
fn is_tar(head: &[u8]) -> bool {
    head.len() == 512 && &head[257..262] == b"ustar"
}

/// A layer of the image as the manifest will name it: a blob on disk (and whether the step compressed
/// it), or a layer of the base, as its registry holds it.
enum Layer {
    File { blob: LocalBlob, compressed_here: bool },
    Borrowed(Descriptor),
}

fn read_docker(
    tree: &Tree,
    layers_dir: &Path,
    reference: Option<&str>,
    mut done: Unpacked,
    base: Option<&BaseLayers>,
    compressing: Compressing,
) -> Result<FileImage> {
    let (manifest, _) = tree
        .read(Path::new("manifest.json"), MANIFEST_LIMIT)
        .map_err(|e| anyhow!("not a docker archive: its manifest.json: {e}"))?;
    let manifest: Value =
        serde_json::from_slice(&manifest).map_err(|e| anyhow!("the archive's manifest.json is not JSON ({e})"))?;
    let entries = manifest.as_array().cloned().unwrap_or_default();
    let Some(chosen) = chosen(&entries, reference) else {
        let all: Vec<String> = entries.iter().flat_map(repo_tags).collect();
        bail!(
            "the archive has {} image(s) ({}); name one as docker-archive:PATH:NAME:TAG",
            entries.len(),
            excerpt(all.join(", ").as_bytes(), 400)
        );
    };
    let config_name = chosen["Config"]
        .as_str()
        .ok_or_else(|| anyhow!("the archive's manifest.json names no Config"))?;
    let (config_bytes, config_path) = tree
        .read(Path::new(config_name), CONFIG_LIMIT)
        .map_err(|e| anyhow!("the archive's manifest.json names the config {e}"))?;
    let config = LocalBlob {
        digest: sha256(&config_bytes),
        size: config_bytes.len() as u64,
        path: config_path,
    };
    let config_json: Value = serde_json::from_slice(&config_bytes).map_err(|e| {
        anyhow!(
            "the archive's config `{}` is not JSON ({e})",
            excerpt(config_name.as_bytes(), 200)
        )
    })?;
    let named: Vec<&str> = config_json["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let layer_names: Vec<&str> = chosen["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if named.len() != layer_names.len() {
        bail!(
            "the archive's manifest.json names {} layer(s), but its config names {} diff id(s): the archive is \
             damaged or was altered, so nothing was pushed",
            layer_names.len(),
            named.len()
        );
    }
    let mut layers: Vec<Layer> = Vec::new();
    for (i, name) in layer_names.iter().enumerate() {
        let shown = excerpt(name.as_bytes(), 200);
        let found = tree
            .open_file(Path::new(name))
            .map_err(|e| anyhow!("the archive's manifest.json names the layer {e}"))?;
        let known = (
            done.compressed.get(&found.name).cloned(),
            done.borrowed.get(&found.name).cloned(),
        );
        let (layer, diff_id) = match known {
            (Some((blob, diff_id)), _) => (
                Layer::File {
                    blob,
                    compressed_here: true,
                },
                diff_id,
            ),
            (None, Some(diff_id)) => {
                let descriptor = base.and_then(|b| b.by_diff_id.get(&diff_id));
                let descriptor = descriptor.cloned().ok_or_else(|| anyhow!("no base layer {diff_id}"))?;
                (Layer::Borrowed(descriptor), diff_id)
            }
            (None, None) => late(
                found,
                &layers_dir.join(format!("late-{i}.tar.gz")),
                compressing,
                &mut done,
            )
            .map_err(scratch_error)
            .with_context(|| format!("reading the archive's layer `{shown}`"))?,
        };
        if diff_id != named[i] {
            bail!(
                "the archive's layer `{shown}` (layer {} of {}) has diff id {diff_id}, but the image's config names \
                 {}: the archive is damaged or was altered, so nothing was pushed",
                i + 1,
                layer_names.len(),
                excerpt(named[i].as_bytes(), 80)
            );
        }
        layers.push(layer);
    }
    // A Docker manifest, whose layers are gzip tars; with zstd an OCI manifest (the config's bytes are the
    // same), whose layers say which they are: gzip (kept, or held by the destination) or zstd.
    let oci = compressing.zstd();
    let gzip = if oci { OCI_GZIP_LAYER } else { DOCKER_LAYER };
    let held_zstd = |digest: &str| base.is_some_and(|b| b.zstd.contains(digest));
    let descriptor = |l: &Layer| {
        let (digest, size, zstd) = match l {
            Layer::File { blob, compressed_here } => (&blob.digest, blob.size, oci && *compressed_here),
            Layer::Borrowed(d) => (&d.digest, d.size, held_zstd(&d.digest)),
        };
        let media_type = if zstd { ZSTD_LAYER } else { gzip };
        json!({"mediaType": media_type, "size": size, "digest": digest})
    };
    let (manifest_type, config_type) = match oci {
        true => (OCI_MANIFEST, OCI_CONFIG),
        false => (DOCKER_MANIFEST, DOCKER_CONFIG),
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": config.size, "digest": config.digest},
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let compressed = layers
        .iter()
        .filter(|l| {
            matches!(
                l,
                Layer::File {
                    compressed_here: true,
                    ..
                }
            )
        })
        .count();
    let (mut blobs, mut borrowed) = (vec![config.clone()], Vec::<Descriptor>::new());
    for layer in layers {
        match layer {
            Layer::File { blob, .. } if !blobs.iter().any(|b| b.digest == blob.digest) => blobs.push(blob),
            Layer::Borrowed(d) if !borrowed.contains(&d) => borrowed.push(d),
            _ => {}
        }
    }
    let image = FileImage {
        manifest: Manifest {
            digest: sha256(&bytes),
            bytes,
            media_type: manifest_type.into(),
        },
        children: Vec::new(),
        blobs,
        image_id: Some(config.digest),
        compressed,
        borrowed,
        soci: None,
    };
    match compressing.soci {
        true => {
            let held = base.map(|b| b.ztocs.clone()).unwrap_or_default();
            super::soci::with_soci(image, &done.ztocs, &held, layers_dir)
        }
        false => Ok(image),
    }
}

/// The tags an entry of `manifest.json` gives its image.
fn repo_tags(entry: &Value) -> Vec<String> {
    entry["RepoTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(String::from))
        .collect()
}

/// The entry of `manifest.json` that `reference` names by one of its tags (without one, the only entry).
fn chosen<'a>(entries: &'a [Value], reference: Option<&str>) -> Option<&'a Value> {
    match reference {
        Some(r) => entries
            .iter()
            .find(|e| repo_tags(e).iter().any(|t| t == r || t.ends_with(&format!("/{r}")))),
        None if entries.len() == 1 => entries.first(),
        None => None,
    }
}

/// The most entries a glance at an archive walks past.
const GLANCE_ENTRIES: usize = 100_000;

/// What `docker save`'s archive in the file `path` says of its image before it is read through: its image
/// id (the config's digest), its layers' diff ids (bottom first) and each layer's size, from
/// `manifest.json` and the config alone, walking past every other entry without reading it (bounded as the
/// full read is). `None` where the archive does not tell (the full read then says why). Only a hint, to
/// learn what the destinations hold before any layer is compressed: the full read checks everything again.
pub fn glance(path: &Path, reference: Option<&str>) -> Option<LocalImage> {
    use std::io::{Seek, SeekFrom};
    let file = crate::files::open_regular(path).ok()?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    // Regular files by name (as the archive writes it, without a leading `./`): where their bytes start,
    // and how many there are.
    let mut files: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for entry in tar.entries_with_seek().ok()?.take(GLANCE_ENTRIES) {
        let entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let name = entry
                .path()
                .ok()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            files.insert(name, (entry.raw_file_position(), entry.size()));
        }
    }
    let mut file = tar.into_inner();
    let mut read = |name: &str, limit: u64| -> Option<Vec<u8>> {
        let &(at, size) = files.get(name.trim_start_matches("./"))?;
        if size > limit {
            return None;
        }
        file.seek(SeekFrom::Start(at)).ok()?;
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut file).take(size).read_to_end(&mut bytes).ok()?;
        (bytes.len() as u64 == size).then_some(bytes)
    };
    let manifest: Value = serde_json::from_slice(&read("manifest.json", MANIFEST_LIMIT)?).ok()?;
    let chosen = chosen(manifest.as_array()?, reference)?;
    let config = read(chosen["Config"].as_str()?, CONFIG_LIMIT)?;
    let json: Value = serde_json::from_slice(&config).ok()?;
    let diff_ids: Vec<String> = json["rootfs"]["diff_ids"]
        .as_array()?
        .iter()
        .map(|d| d.as_str().map(String::from))
        .collect::<Option<_>>()?;
    let names: Vec<&str> = chosen["Layers"].as_array()?.iter().filter_map(Value::as_str).collect();
    if names.len() != diff_ids.len() {
        return None;
    }
    // A layer that is a link to another entry tells no size: then none is told.
    let sizes: Option<Vec<u64>> = names
        .iter()
        .map(|n| files.get(n.trim_start_matches("./")).map(|&(_, size)| size))
        .collect();
    let layer_sizes = sizes.unwrap_or_default();
    Some(LocalImage {
        reference: path.display().to_string(),
        id: sha256(&config),
        size: layer_sizes.iter().sum::<u64>().min(i64::MAX as u64) as i64,
        repo_digests: Vec::new(),
        layers: diff_ids,
        layer_sizes,
    })
}

/// Compress the layer tar `input` into `out` at `level`, as `compressing` says: gzip (with SOCI, its zTOC
/// too) or zstd.
fn compress_layer(input: &mut impl Read, out: &Path, level: u32, compressing: Compressing) -> Result<Compressed> {
    if !compressing.zstd() {
        return gzip_layer(input, out, level, compressing.soci);
    }
    let (blob, diff_id) = zstd_file(input, out, level)?;
    Ok(Compressed {
        blob,
        diff_id,
        ztoc: None,
    })
}

/// A layer file left in the tree (not recognised as a tar while unpacking): an already compressed layer is
/// kept as it is, anything else gzip-compressed into `out` (its zTOC kept in `done`). With its diff id.
fn late(found: Found, out: &Path, compressing: Compressing, done: &mut Unpacked) -> Result<(Layer, String)> {
    let size = found.size;
    let mut input = std::io::BufReader::with_capacity(1 << 20, found.file.take(size));
    if input.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        let (digest, read, diff_id) = gzip_digests(input)?;
        let blob = LocalBlob {
            digest,
            size: read,
            path: found.path,
        };
        let layer = Layer::File {
            blob,
            compressed_here: false,
        };
        return Ok((layer, diff_id));
    }
    let layer = compress_layer(&mut input, out, compressing.level_for(size), compressing)?;
    if let Some(ztoc) = layer.ztoc {
        done.ztocs.insert(layer.blob.digest.clone(), ztoc);
    }
    let file = Layer::File {
        blob: layer.blob,
        compressed_here: true,
    };
    Ok((file, layer.diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diff ids of an image of four layers built by Docker Engine 20.10.24, whose `docker save` gave
    /// the two `json` files under `fixtures/` (layers 2 and 4, the top one carrying the image's config).
    const DIFF_IDS: [&str; 4] = [
        "sha256:e7d557ecd3be19bcaee325bcdb5638236fc74724e9c66de8457db515ad549ffd",
        "sha256:b25e77bcb7a615048840fe087efe09a55041778753701ee5c946355a1ba757df",
        "sha256:1ca5aa443f0d58b6ab3d1e8e60f3cebe0996c2f78b1ba2cf426977b72ba1f1e4",
        "sha256:93ce1da431da98123c83ec982f1b085ca2947316c03901f69460f20a2d4f62b5",
    ];
    const MIDDLE: (&str, &[u8]) = (
        "d66a6641802068e215f804d006784f58eda81a170cb0dc14cc8a92cc59a89873",
        include_bytes!("fixtures/legacy-middle.json"),
    );
    const TOP: (&str, &[u8]) = (
        "e1722fcc438c124d3b74ea043debf9be419da53a1c21a407acc5e13248c58158",
        include_bytes!("fixtures/legacy-top.json"),
    );

    fn chain() -> Vec<String> {
        chain_ids(&DIFF_IDS.map(String::from))
    }

    /// A tar holding one file of `bytes`.
    fn layer_tar(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        layer.append_data(&mut header, name, bytes).unwrap();
        layer.into_inner().unwrap()
    }

    /// `docker save`'s shape: each layer as `N/layer.tar`, then the config naming `diff_ids`, then
    /// `manifest.json`.
    fn archive_of(layers: &[Vec<u8>], diff_ids: &[String]) -> (Vec<u8>, Vec<u8>) {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let names: Vec<String> = (0..layers.len()).map(|i| format!("{i}/layer.tar")).collect();
        let manifest = json!([{"Config": "config.json", "RepoTags": ["app:1"], "Layers": names}]).to_string();
        let mut archive = tar::Builder::new(Vec::new());
        let entries = names.iter().map(String::as_str).zip(layers.iter().map(Vec::as_slice));
        for (name, bytes) in entries.chain([("config.json", &config[..]), ("manifest.json", manifest.as_bytes())]) {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive.append_data(&mut header, name, bytes).unwrap();
        }
        (archive.into_inner().unwrap(), config)
    }

    #[test]
    fn a_glance_tells_the_image_and_an_early_upload_is_said_ready_only_once_the_archive_checked_out() {
        let big: Vec<u8> = (0..(EARLY_UPLOAD_FROM as usize + 50_000))
            .map(|n| b'a' + ((n * 13) % 26) as u8)
            .collect();
        let layers = vec![layer_tar("big", &big), layer_tar("small", b"top")];
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let dir = tempfile::tempdir().unwrap();

        // The glance: the image id, diff ids and sizes, from manifest.json and the config alone.
        let (archive, config) = archive_of(&layers, &diff_ids);
        let path = dir.path().join("image.tar");
        std::fs::write(&path, &archive).unwrap();
        let seen = glance(&path, None).expect("a glance at a sound archive");
        assert_eq!(seen.id, sha256(&config));
        assert_eq!(seen.layers, diff_ids);
        assert_eq!(
            seen.layer_sizes,
            layers.iter().map(|l| l.len() as u64).collect::<Vec<_>>()
        );
        assert!(glance(&path, Some("other:1")).is_none(), "no image of that name");
        std::fs::write(dir.path().join("not.tar"), b"not an archive").unwrap();
        assert!(glance(&dir.path().join("not.tar"), None).is_none());

        // Read through: the big layer is announced as it is compressed, and said ready with its blob; then
        // the config, ready, once the archive checked out (the small layer is not announced).
        let read = |archive: &[u8]| {
            let (early, mut announced) = tokio::sync::mpsc::unbounded_channel();
            let opened = docker_archive_from(archive, None, Some(&early), None, &[], Compressing::default());
            let growing = announced.try_recv().expect("the big layer announced");
            let config = announced.try_recv().ok();
            assert!(
                announced.try_recv().is_err(),
                "only the big layer and the config are announced"
            );
            (opened, growing, config)
        };
        let (opened, growing, announced_config) = read(&archive);
        let opened = opened.unwrap();
        let image = &opened.image;
        let ready = growing
            .done
            .borrow()
            .clone()
            .expect("said ready once the archive checked out");
        assert!(image.blobs.iter().any(|b| b.digest == ready.digest));
        let announced_config = announced_config.expect("the config announced once the archive checked out");
        assert_eq!(announced_config.digest.as_deref(), Some(sha256(&config).as_str()));
        let ready_config = announced_config.done.borrow().clone().expect("the config is ready");
        assert_eq!(std::fs::read(&ready_config.path).unwrap(), config);

        // The same layers under a config that names another diff id for the top layer: refused, and the big
        // layer's upload is never said ready (it must not close).
        let wrong = vec![diff_ids[0].clone(), sha256(b"something else")];
        let (archive, _) = archive_of(&layers, &wrong);
        let (opened, growing, config) = read(&archive);
        assert!(opened.is_err());
        assert!(config.is_none(), "the config of a refused archive is announced");
        assert!(growing.done.borrow().is_none());
        assert!(
            growing.done.has_changed().is_err(),
            "the sender is gone: the upload must not close"
        );
    }

    /// A file's reader (here bytes in memory) that counts what is read through it.
    struct Counted {
        inner: std::io::Cursor<Vec<u8>>,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    impl std::io::Seek for Counted {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_new_layer_read_at_its_place_in_a_file_gives_the_image_the_stream_gives() {
        // Layers of several sizes, one with a name long enough for an extension header before its data.
        let long = format!("{}/app", "deep".repeat(40));
        let layers = vec![
            layer_tar("base", &(0..(3 << 20)).map(|n| (n % 251) as u8).collect::<Vec<u8>>()),
            layer_tar(&long, b"the app"),
            layer_tar("assets", &vec![9u8; 700_000]),
        ];
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let (archive, _) = archive_of(&layers, &diff_ids);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.tar");
        std::fs::write(&path, &archive).unwrap();

        let from_file = ArchiveFile::new(std::fs::File::open(&path).unwrap());
        assert!(from_file.file().is_some(), "a file is read at its place");
        let from_file = docker_archive_from(from_file, None, None, None, &diff_ids, Compressing::default()).unwrap();
        let streamed =
            docker_archive_from(archive.as_slice(), None, None, None, &diff_ids, Compressing::default()).unwrap();
        assert_eq!(from_file.image.compressed, 3);
        assert_eq!(
            from_file.image.manifest.digest, streamed.image.manifest.digest,
            "read at their places, the layers compress to the blobs the stream gives"
        );

        // Damaged after its header was written, a layer no longer has the diff id the config names.
        let mut damaged = archive.clone();
        let at = archive.windows(7).position(|w| w == b"the app").unwrap();
        damaged[at] = b'T';
        std::fs::write(&path, &damaged).unwrap();
        let input = ArchiveFile::new(std::fs::File::open(&path).unwrap());
        let refused = docker_archive_from(input, None, None, None, &diff_ids, Compressing::default());
        assert!(refused.is_err(), "a damaged layer read at its place passed");
    }

    #[test]
    fn a_layer_the_destination_holds_is_seeked_past_in_a_file_and_sent_as_it_holds_it() {
        // Docker 25's layout, where a layer's name is its diff id: known before it is read.
        let big = layer_tar("big", &vec![7u8; 4 << 20]);
        let top = layer_tar("app", b"the app");
        let diff_ids = vec![sha256(&big), sha256(&top)];
        let names: Vec<String> = diff_ids
            .iter()
            .map(|d| format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
            .collect();
        let config = serde_json::to_vec(&json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap();
        let manifest = json!([{"Config": "config.json", "RepoTags": ["app:1"], "Layers": names}]).to_string();
        let mut archive = tar::Builder::new(Vec::new());
        for (name, bytes) in [
            (names[0].as_str(), &big[..]),
            (&names[1], &top[..]),
            ("config.json", &config[..]),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive.append_data(&mut header, name, bytes).unwrap();
        }
        let archive = archive.into_inner().unwrap();
        let held = Descriptor {
            digest: sha256(b"the registry's blob"),
            size: 1234,
        };
        let base = BaseLayers {
            base: crate::domain::source::PulledImage {
                host: "127.0.0.1:5000".into(),
                repo: "app".into(),
                digest: sha256(b"manifest"),
                image_id: sha256(b"previous config"),
                layers: vec![diff_ids[0].clone()],
                size: big.len() as u64,
            },
            by_diff_id: [(diff_ids[0].clone(), held.clone())].into(),
            zstd: BTreeSet::new(),
            ztocs: BTreeMap::new(),
            confirmed: true,
        };
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let file = Counted {
            inner: std::io::Cursor::new(archive.clone()),
            read: read.clone(),
        };
        let input = std::io::BufReader::with_capacity(64 << 10, file);
        let opened = docker_archive_from(input, None, None, Some(&base), &diff_ids, Compressing::default()).unwrap();
        let listed = opened.image.manifest.layers().unwrap();
        assert_eq!(
            listed[0].0.digest, held.digest,
            "the held layer is sent as the registry holds it"
        );
        assert_eq!(opened.image.compressed, 1);
        // What was read: the headers, the small entries and a buffer's worth around each, not 4 MiB.
        assert!(
            read.get() < 4 * (64 << 10),
            "{} of the archive's {} bytes were read: the held layer ({} bytes) was not seeked past",
            read.get(),
            archive.len(),
            big.len()
        );
    }

    #[test]
    fn more_new_layers_than_are_compressed_at_once_each_get_their_own_blob_in_their_place() {
        // Seven layers (more than BEHIND_LAYERS are compressed beside the stream at once), of different
        // sizes, in the legacy layout, written in an order other than the image's.
        let layers: Vec<Vec<u8>> = (0..7u8)
            .map(|i| {
                let text: Vec<u8> = (0..(40_000 * (i as usize + 1)))
                    .map(|n| b'a' + ((n * 7 + i as usize) % 23) as u8)
                    .collect();
                layer_tar(&format!("file-{i}"), &text)
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let names: Vec<String> = (0..7).map(|i| format!("{:02}/layer.tar", 70 - i)).collect();
        let manifest = json!([{"Config": "config.json", "RepoTags": ["app:1"], "Layers": names}]);
        let mut archive = tar::Builder::new(Vec::new());
        let add = |archive: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8], kind: tar::EntryType| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive.append_data(&mut header, name, bytes).unwrap();
        };
        for i in (0..7).rev() {
            add(&mut archive, &format!("{}/", 70 - i), &[], tar::EntryType::Directory);
            add(&mut archive, &names[i], &layers[i], tar::EntryType::Regular);
        }
        add(&mut archive, "config.json", &config, tar::EntryType::Regular);
        let manifest = manifest.to_string();
        add(
            &mut archive,
            "manifest.json",
            manifest.as_bytes(),
            tar::EntryType::Regular,
        );
        let archive = archive.into_inner().unwrap();

        let opened = docker_archive_from(archive.as_slice(), None, None, None, &[], Compressing::default()).unwrap();
        let image = &opened.image;
        assert_eq!(image.compressed, 7);
        let listed: Vec<String> = image
            .manifest
            .layers()
            .unwrap()
            .iter()
            .map(|(d, _)| d.digest.clone())
            .collect();
        assert_eq!(listed.len(), 7);
        for (i, digest) in listed.iter().enumerate() {
            let blob = image
                .blobs
                .iter()
                .find(|b| &b.digest == digest)
                .expect("a blob for every layer");
            let gz = std::fs::read(&blob.path).unwrap();
            assert_eq!(sha256(&gz), *digest, "layer {i}: the blob is what its digest says");
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut raw)
                .unwrap();
            assert_eq!(sha256(&raw), diff_ids[i], "layer {i} holds its own bytes, in its place");
        }
    }

    #[test]
    fn a_legacy_directory_is_told_apart_by_its_json_as_the_engine_named_it() {
        assert_eq!(legacy_layer(MIDDLE.0, MIDDLE.1, &chain()), Some(1));
        assert_eq!(legacy_layer(TOP.0, TOP.1, &chain()), Some(3));
    }

    #[test]
    fn a_json_altered_by_one_byte_or_another_image_tells_nothing() {
        let altered = String::from_utf8(TOP.1.to_vec()).unwrap().replace("amd64", "arm64");
        assert_eq!(legacy_layer(TOP.0, altered.as_bytes(), &chain()), None);
        // The same directory under another image's layers (the bottom one differs): no chain id matches.
        let mut other = DIFF_IDS.map(String::from);
        other[0] = sha256(b"another layer");
        assert_eq!(legacy_layer(MIDDLE.0, MIDDLE.1, &chain_ids(&other)), None);
        // Another directory's name for the same json.
        assert_eq!(legacy_layer(TOP.0, MIDDLE.1, &chain()), None);
        assert_eq!(legacy_layer(MIDDLE.0, b"not json", &chain()), None);
    }
}
