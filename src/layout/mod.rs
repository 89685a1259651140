//! Layout: images in files, with no Docker Engine: an OCI image layout directory (`oci:`), one in a tar
//! (`oci-archive:`), or `docker save`'s tar (`docker-archive:`, also what BuildKit and kaniko write). An
//! adapter: uses `domain` and `files`, never another adapter. Blocking; callers run it off the async threads.
//!
//! A layout's manifests and blobs are sent as they are, so every digest stays the layout's (an index whole,
//! every child too). A docker archive's layers are uncompressed tars: each is gzip-compressed here, layers
//! side by side and each layer's 1 MiB blocks on every core (pigz's scheme), deterministically (fixed
//! blocks, no name, mtime 0, one level, one backend), so the same image gives the same digests on any
//! machine, whatever its cores; the config is sent as it is, so the image id and the diff ids stay.

use crate::domain::manifest::Descriptor;
use crate::domain::manifest::{Manifest, sha256};
use crate::domain::source::{BaseLayers, FileImage, LocalBlob};
use crate::files::ScratchDir;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The gzip level of layers the step compresses: fast, as pigz -1 (a registry stores what it is given).
const LEVEL: u32 = 1;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image read from files, and the scratch directory its unpacked files live in (kept while it lives).
pub struct Opened {
    pub image: FileImage,
    _scratch: Option<ScratchDir>,
}

/// Read an OCI image layout directory; `reference` picks a manifest by its ref name.
pub fn oci(path: &Path, reference: Option<&str>) -> Result<Opened> {
    Ok(Opened {
        image: read_layout(path, reference)?,
        _scratch: None,
    })
}

/// Read an OCI image layout from a tar file.
pub fn oci_archive(path: &Path, reference: Option<&str>) -> Result<Opened> {
    let scratch = ScratchDir::new("oci-archive")?;
    unpack(path, &scratch.path)?;
    Ok(Opened {
        image: read_layout(&scratch.path, reference)?,
        _scratch: Some(scratch),
    })
}

/// Read `docker save`'s tar from a file; `reference` picks an image by one of its tags.
pub fn docker_archive(path: &Path, reference: Option<&str>) -> Result<Opened> {
    let file = crate::files::open_regular(path).map_err(|e| anyhow!("{e}"))?;
    docker_archive_from(std::io::BufReader::with_capacity(1 << 20, file), reference, None, None)
        .with_context(|| format!("reading {}", path.display()))
}

/// Read `docker save`'s tar as it streams in (from a file, or straight from the engine's export): each
/// layer that is an uncompressed tar is gzip-compressed as it passes, so the uncompressed image is never
/// written to disk, and the reading, the compression and the writer of the stream run side by side.
///
/// Each layer being compressed is announced on `early` as it starts ([`Growing`]), so uploads can follow it.
///
/// With `base`, the image's layers that are its base's are not compressed: each layer is first kept as it
/// comes (which layer it is is known only once it has been read, by its diff id), then a base layer is
/// dropped, to be sent as the base's registry holds it (`FileImage::borrowed`), and any other compressed.
pub fn docker_archive_from(
    input: impl Read,
    reference: Option<&str>,
    early: Option<&tokio::sync::mpsc::UnboundedSender<Growing>>,
    base: Option<&BaseLayers>,
) -> Result<Opened> {
    let scratch = ScratchDir::new("docker-archive")?;
    let unpacked = unpack_compressing(input, &scratch.path, early, base)
        .context("unpacking the docker archive: is it a tar archive?")?;
    Ok(Opened {
        image: read_docker(&scratch.path, reference, &unpacked, base)?,
        _scratch: Some(scratch),
    })
}

/// A blocking reader of the chunks an async task sends (the engine's export): the channel between the
/// engine's stream and the compression threads.
pub struct Chunks {
    receiver: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl Chunks {
    pub fn new(receiver: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Chunks {
        Chunks {
            receiver,
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A layer being compressed into `path`: `done` holds its blob once the file is complete (and is closed
/// without one if the compression fails).
pub struct Growing {
    pub path: PathBuf,
    pub done: tokio::sync::watch::Receiver<Option<LocalBlob>>,
}

/// The layers met while unpacking, by their path in the archive.
#[derive(Default)]
struct Unpacked {
    /// Compressed by the step.
    compressed: std::collections::BTreeMap<PathBuf, LocalBlob>,
    /// Layers of the base, by diff id: not kept.
    borrowed: std::collections::BTreeMap<PathBuf, String>,
}

/// Unpack `input` into `into`, except that every regular file that is an uncompressed tar (a layer) is
/// written gzip-compressed under `.ecr-step-layers/` instead (or, when it is a layer of `base`, not at
/// all), and returned by its path in the archive.
fn unpack_compressing(
    input: impl Read,
    into: &Path,
    early: Option<&tokio::sync::mpsc::UnboundedSender<Growing>>,
    base: Option<&BaseLayers>,
) -> Result<Unpacked> {
    let mut tar = tar::Archive::new(input);
    tar.set_preserve_permissions(false);
    let layers = into.join(LAYERS);
    std::fs::create_dir_all(&layers)?;
    let mut done = Unpacked::default();
    for (i, entry) in tar.entries()?.enumerate() {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if !entry.header().entry_type().is_file() {
            entry.unpack_in(into)?;
            continue;
        }
        let relative =
            inside(&path).ok_or_else(|| anyhow!("the archive names a path outside it: {}", path.display()))?;
        let mut head = Vec::with_capacity(512);
        (&mut entry).take(512).read_to_end(&mut head)?;
        if let Some(base) = base.filter(|_| is_tar(&head)) {
            let raw = layers.join(format!("{i}.tar"));
            let mut hasher = Sha256::new();
            let mut kept = Tee {
                inner: std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&raw)?),
                hasher: &mut hasher,
                written: 0,
            };
            std::io::copy(&mut head.as_slice().chain(&mut entry), &mut kept)?;
            kept.inner.flush()?;
            drop(kept);
            let diff_id = hex_digest(hasher);
            if base.by_diff_id.contains_key(&diff_id) {
                done.borrowed.insert(relative, diff_id);
            } else {
                let blob = gzip_file(&mut std::fs::File::open(&raw)?, &layers.join(format!("{i}.tar.gz")))?;
                done.compressed.insert(relative, blob);
            }
            std::fs::remove_file(&raw)?;
            continue;
        }
        if is_tar(&head) {
            let out = layers.join(format!("{i}.tar.gz"));
            std::fs::File::create(&out)?;
            let (finished, growing) = tokio::sync::watch::channel(None);
            // Only a layer large enough for its compression to take a while gets an upload that follows
            // it: that upload cannot ask first whether the registry has the blob (its digest is not known
            // yet), so for a small layer it would only send again what may be there.
            let large = entry.header().size().unwrap_or(0) >= EARLY_UPLOAD_FROM;
            if let Some(early) = early.filter(|_| large) {
                let _ = early.send(Growing {
                    path: out.clone(),
                    done: growing,
                });
            }
            let blob = gzip_file(&mut head.as_slice().chain(&mut entry), &out)?;
            let _ = finished.send(Some(blob.clone()));
            done.compressed.insert(relative, blob);
            continue;
        }
        let target = into.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::File::create(&target)?;
        file.write_all(&head)?;
        std::io::copy(&mut entry, &mut file)?;
    }
    Ok(done)
}

/// The smallest layer (uncompressed bytes) whose upload starts while it is compressed.
const EARLY_UPLOAD_FROM: u64 = 16 << 20;

/// Where the step writes the layers it compresses, inside an unpacked archive.
const LAYERS: &str = ".ecr-step-layers";

/// `path` made relative and plain (no `.`, no `..` above its start); `None` when it leaves its root.
fn inside(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut plain = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => plain.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !plain.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(plain)
}

/// Whether a file's first 512 bytes are a tar header (POSIX or GNU magic at offset 257).
fn is_tar(head: &[u8]) -> bool {
    head.len() == 512 && &head[257..262] == b"ustar"
}

fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let file = crate::files::open_regular(archive).map_err(|e| anyhow!("{e}"))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    tar.set_preserve_permissions(false);
    tar.unpack(into)
        .with_context(|| format!("unpacking {}: is it a tar archive?", archive.display()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// `blobs/<algorithm>/<hex>` of a layout.
fn blob_path(root: &Path, digest: &str) -> Result<PathBuf> {
    let (algorithm, hex) = digest
        .split_once(':')
        .filter(|(a, h)| *a == "sha256" && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("the layout names a digest that is not sha256:<64 hex>: {digest}"))?;
    Ok(root.join("blobs").join(algorithm).join(hex))
}

fn read_layout(root: &Path, reference: Option<&str>) -> Result<FileImage> {
    let index = read_json(&root.join("index.json"))
        .with_context(|| format!("{} is not an OCI image layout (no index.json)", root.display()))?;
    let descriptors = index["manifests"].as_array().cloned().unwrap_or_default();
    let name = |d: &Value| {
        d["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(String::from)
    };
    let chosen = match reference {
        Some(r) => descriptors.iter().find(|d| name(d).as_deref() == Some(r)),
        None if descriptors.len() == 1 => descriptors.first(),
        None => None,
    };
    let Some(chosen) = chosen else {
        let names: Vec<String> = descriptors.iter().filter_map(name).collect();
        bail!(
            "{}: {} the layout's manifests: it has {} ({}); name one as oci:PATH:REF",
            root.display(),
            reference.map_or("pick one of".to_string(), |r| format!("no manifest named {r} among")),
            descriptors.len(),
            names.join(", ")
        );
    };
    let manifest = layout_manifest(root, chosen)?;
    let mut image = FileImage {
        image_id: None,
        children: Vec::new(),
        blobs: Vec::new(),
        manifest: manifest.clone(),
        compressed: 0,
        borrowed: Vec::new(),
    };
    if manifest.is_index() {
        let json: Value = serde_json::from_slice(&manifest.bytes)?;
        for child in json["manifests"].as_array().into_iter().flatten() {
            let child = layout_manifest(root, child)?;
            add_blobs(root, &child, &mut image.blobs)?;
            image.children.push(child);
        }
    } else {
        image.image_id = manifest.config_digest();
        add_blobs(root, &manifest, &mut image.blobs)?;
    }
    Ok(image)
}

fn layout_manifest(root: &Path, descriptor: &Value) -> Result<Manifest> {
    let digest = descriptor["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("a descriptor without a digest"))?;
    let bytes = std::fs::read(blob_path(root, digest)?).with_context(|| format!("the layout has no blob {digest}"))?;
    if sha256(&bytes) != digest {
        bail!("the layout's blob {digest} does not match its digest: the layout is damaged");
    }
    let json: Value = serde_json::from_slice(&bytes)?;
    let media_type = descriptor["mediaType"]
        .as_str()
        .or(json["mediaType"].as_str())
        .ok_or_else(|| anyhow!("the manifest {digest} has no media type"))?
        .to_string();
    Ok(Manifest {
        bytes,
        media_type,
        digest: digest.to_string(),
    })
}

fn add_blobs(root: &Path, manifest: &Manifest, blobs: &mut Vec<LocalBlob>) -> Result<()> {
    for d in manifest.references()? {
        let path = blob_path(root, &d.digest)?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("the layout has no blob {}", d.digest))?
            .len();
        if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(LocalBlob {
                digest: d.digest,
                size,
                path,
            });
        }
    }
    Ok(())
}

fn read_docker(root: &Path, reference: Option<&str>, done: &Unpacked, base: Option<&BaseLayers>) -> Result<FileImage> {
    let manifest = read_json(&root.join("manifest.json"))
        .with_context(|| format!("{}: not a docker archive (no manifest.json)", root.display()))?;
    let entries = manifest.as_array().cloned().unwrap_or_default();
    let tags = |e: &Value| -> Vec<String> {
        e["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect()
    };
    let chosen = match reference {
        Some(r) => entries
            .iter()
            .find(|e| tags(e).iter().any(|t| t == r || t.ends_with(&format!("/{r}")))),
        None if entries.len() == 1 => entries.first(),
        None => None,
    };
    let Some(chosen) = chosen else {
        let all: Vec<String> = entries.iter().flat_map(tags).collect();
        bail!(
            "the archive has {} image(s) ({}); name one as docker-archive:PATH:NAME:TAG",
            entries.len(),
            all.join(", ")
        );
    };
    let config_path = root.join(
        chosen["Config"]
            .as_str()
            .ok_or_else(|| anyhow!("manifest.json names no Config"))?,
    );
    let config_bytes = std::fs::read(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let config = LocalBlob {
        digest: sha256(&config_bytes),
        size: config_bytes.len() as u64,
        path: config_path,
    };
    let layer_names: Vec<PathBuf> = chosen["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(PathBuf::from))
        .collect();
    let mut layers: Vec<Layer> = Vec::new();
    for (i, name) in layer_names.iter().enumerate() {
        let layer = match met_layer(root, name, done) {
            Some(Met::Compressed(blob)) => Layer::File(blob, true),
            Some(Met::Borrowed(diff_id)) => {
                let descriptor = base.and_then(|b| b.by_diff_id.get(&diff_id));
                Layer::Borrowed(descriptor.cloned().ok_or_else(|| anyhow!("no base layer {diff_id}"))?)
            }
            None => {
                let (blob, compressed) =
                    compressed(&root.join(name), &root.join(LAYERS).join(format!("late-{i}.tar.gz")))?;
                Layer::File(blob, compressed)
            }
        };
        layers.push(layer);
    }
    let descriptor = |l: &Layer| match l {
        Layer::File(b, _) => json!({"mediaType": DOCKER_LAYER, "size": b.size, "digest": b.digest}),
        Layer::Borrowed(d) => json!({"mediaType": DOCKER_LAYER, "size": d.size, "digest": d.digest}),
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.size, "digest": config.digest},
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let compressed = layers.iter().filter(|l| matches!(l, Layer::File(_, true))).count();
    let (mut blobs, mut borrowed) = (vec![config.clone()], Vec::<Descriptor>::new());
    for layer in layers {
        match layer {
            Layer::File(blob, _) if !blobs.iter().any(|b| b.digest == blob.digest) => blobs.push(blob),
            Layer::Borrowed(d) if !borrowed.contains(&d) => borrowed.push(d),
            _ => {}
        }
    }
    Ok(FileImage {
        manifest: Manifest {
            digest: sha256(&bytes),
            bytes,
            media_type: DOCKER_MANIFEST.into(),
        },
        children: Vec::new(),
        blobs,
        image_id: Some(config.digest),
        compressed,
        borrowed,
    })
}

/// A layer of the image as the manifest will name it: a blob on disk (and whether the step compressed
/// it), or a layer of the base, as its registry holds it.
enum Layer {
    File(LocalBlob, bool),
    Borrowed(Descriptor),
}

/// A layer as a gzip blob: an already compressed layer as it is, an uncompressed tar gzip-compressed into
/// `out` (deterministically). Whether the step compressed it.
fn compressed(layer: &Path, out: &Path) -> Result<(LocalBlob, bool)> {
    let mut input = std::fs::File::open(layer).with_context(|| format!("reading the layer {}", layer.display()))?;
    let mut magic = [0u8; 2];
    let gzipped = input.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    drop(input);
    if gzipped {
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut std::fs::File::open(layer)?, &mut HashWriter(&mut hasher))?;
        return Ok((
            LocalBlob {
                digest: hex_digest(hasher),
                size,
                path: layer.to_path_buf(),
            },
            false,
        ));
    }
    Ok((gzip_file(&mut std::fs::File::open(layer)?, out)?, true))
}

/// What unpacking made of a layer.
enum Met {
    Compressed(LocalBlob),
    /// A layer of the base, by diff id.
    Borrowed(String),
}

/// The layer the archive names `name`, if it was met while unpacking: found by its path, or through the
/// symlinks of the archive (`<id>/layer.tar` → `blobs/sha256/<hex>` in newer `docker save` archives).
fn met_layer(root: &Path, name: &Path, met: &Unpacked) -> Option<Met> {
    let mut name = inside(name)?;
    for _ in 0..8 {
        if let Some(blob) = met.compressed.get(&name) {
            return Some(Met::Compressed(blob.clone()));
        }
        if let Some(diff_id) = met.borrowed.get(&name) {
            return Some(Met::Borrowed(diff_id.clone()));
        }
        let link = std::fs::read_link(root.join(&name)).ok()?;
        name = inside(&name.parent().unwrap_or(Path::new("")).join(link))?;
    }
    None
}

/// gzip `input` into the file `out` (in parallel, deterministically), hashing what is written.
fn gzip_file(input: &mut impl Read, out: &Path) -> Result<LocalBlob> {
    let mut hasher = Sha256::new();
    let file = std::fs::File::create(out)?;
    let mut counting = Tee {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: &mut hasher,
        written: 0,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    gzip(input, &mut counting, threads)?;
    counting.inner.flush()?;
    let size = counting.written;
    drop(counting);
    Ok(LocalBlob {
        digest: hex_digest(hasher),
        size,
        path: out.to_path_buf(),
    })
}

/// The block size of the parallel compression: the input is cut here whatever the number of threads.
const BLOCK: usize = 1 << 20;
/// What deflate looks back at: each block is primed with the previous block's last 32 KiB.
const WINDOW: usize = 32 * 1024;

/// gzip `input` into `output` as pigz does: the input cut into 1 MiB blocks, each deflated on its own thread
/// with the previous block's last 32 KiB as its dictionary and ended with a sync flush (the last with the
/// end of the stream), the pieces concatenated into one gzip member (no name, mtime 0, OS unknown) with the
/// CRC-32 and size of the whole. The bytes depend on the input and the level alone, never on `threads`.
/// Memory stays at a few blocks per thread.
fn gzip(input: &mut impl Read, output: &mut impl Write, threads: usize) -> std::io::Result<()> {
    let xfl = if LEVEL <= 1 {
        4
    } else if LEVEL >= 9 {
        2
    } else {
        0
    };
    output.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
    let threads = threads.max(1);
    // Blocks go to the workers as they are read; their deflated pieces come back in any order and are
    // written in input order. At most `in_flight` blocks are read ahead of what is written.
    let in_flight = threads * 2 + 1;
    let (jobs, queue) = std::sync::mpsc::sync_channel::<(usize, Block)>(in_flight);
    let queue = std::sync::Mutex::new(queue);
    let (finished, pieces) = std::sync::mpsc::channel::<(usize, std::io::Result<Vec<u8>>)>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (queue, finished) = (&queue, finished.clone());
            s.spawn(move || {
                loop {
                    let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                    let Ok((i, block)) = job else { break };
                    let piece = deflate_block(&block.data, &block.dictionary, block.last);
                    if finished.send((i, piece)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(finished);
        // Moved in, so the workers stop (the queue closes) however this ends.
        let feed = move |input: &mut dyn Read, output: &mut dyn Write| -> std::io::Result<()> {
            let mut crc = crc32fast::Hasher::new();
            let mut size: u64 = 0;
            let mut previous_tail: Vec<u8> = Vec::new();
            let mut ready = std::collections::BTreeMap::new();
            let (mut sent, mut written) = (0usize, 0usize);
            let mut write_ready = |ready: &mut std::collections::BTreeMap<usize, std::io::Result<Vec<u8>>>,
                                   written: &mut usize|
             -> std::io::Result<()> {
                while let Some(piece) = ready.remove(written) {
                    output.write_all(&piece?)?;
                    *written += 1;
                }
                Ok(())
            };
            let mut next = read_block(input)?;
            if next.is_none() {
                // Empty input: one empty final block.
                next = Some(Vec::new());
            }
            while let Some(data) = next.take() {
                next = read_block(input)?;
                crc.update(&data);
                size += data.len() as u64;
                let tail = data[data.len().saturating_sub(WINDOW)..].to_vec();
                let dictionary = std::mem::replace(&mut previous_tail, tail);
                let last = next.is_none();
                jobs.send((sent, Block { data, dictionary, last }))
                    .map_err(|_| std::io::Error::other("a compression thread stopped"))?;
                sent += 1;
                // Write what is done; wait only while too much is in flight, or for the rest at the end.
                loop {
                    while let Ok((i, piece)) = pieces.try_recv() {
                        ready.insert(i, piece);
                    }
                    write_ready(&mut ready, &mut written)?;
                    if sent - written < in_flight && !(last && written < sent) {
                        break;
                    }
                    let (i, piece) = pieces
                        .recv()
                        .map_err(|_| std::io::Error::other("a compression thread stopped"))?;
                    ready.insert(i, piece);
                }
            }
            output.write_all(&crc.finalize().to_le_bytes())?;
            output.write_all(&(size as u32).to_le_bytes())
        };
        feed(input, output)
    })
}

/// One block of input for a compression thread.
struct Block {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
}

/// Up to one block of input; `None` at the end.
fn read_block(input: &mut (impl Read + ?Sized)) -> std::io::Result<Option<Vec<u8>>> {
    let mut block = Vec::with_capacity(BLOCK);
    (&mut *input).take(BLOCK as u64).read_to_end(&mut block)?;
    Ok((!block.is_empty()).then_some(block))
}

/// One block as raw deflate, primed with `dictionary`, ended by a sync flush or, for the last, the end.
fn deflate_block(data: &[u8], dictionary: &[u8], last: bool) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    // A block of compressed or random bytes is stored as it is: deflate would spend its time to save
    // nothing (zlib's level 1 runs at about 100 MB/s per core on such data; storing at memory speed).
    let stored = incompressible(data);
    let level = if stored {
        Compression::none()
    } else {
        Compression::new(LEVEL)
    };
    let mut deflate = Compress::new(level, false);
    if !dictionary.is_empty() && !stored {
        deflate
            .set_dictionary(dictionary)
            .map_err(|e| std::io::Error::other(format!("deflate dictionary: {e}")))?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut consumed = 0usize;
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let before = deflate.total_in();
        let status = deflate
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(|e| std::io::Error::other(format!("deflate: {e}")))?;
        consumed += (deflate.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if !last && consumed == data.len() && room_left => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `data` looks incompressible: its bytes' order-0 entropy is within 0.03 bit of 8 bits per byte,
/// where deflate cannot save even 0.4% (compressed files, encrypted or random data). Decided by the data
/// alone, so the compressed bytes stay the same on every machine.
fn incompressible(data: &[u8]) -> bool {
    const SAMPLES: usize = 16;
    if data.len() < 4096 {
        return false;
    }
    // Sixteen 4 KiB windows spread over the block stand for it (a sixteenth of the bytes of a full block):
    // counting every byte cost about as much CPU as a tenth of the compression itself.
    let mut counts = [0u64; 256];
    let window = 4096.min(data.len() / SAMPLES);
    let step = data.len() / SAMPLES;
    let mut n = 0usize;
    for i in 0..SAMPLES {
        for &b in &data[i * step..i * step + window] {
            counts[b as usize] += 1;
        }
        n += window;
    }
    let n = n as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.97
}

fn hex_digest(hasher: Sha256) -> String {
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes through to `inner`, hashing and counting what passes.
struct Tee<'a, W: Write> {
    inner: W,
    hasher: &'a mut Sha256,
    written: u64,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gzip_is_one_valid_member_whatever_the_threads() {
        // 3.5 blocks of compressible but varied data, and the edge sizes.
        let data: Vec<u8> = (0..(BLOCK * 7 / 2)).map(|i| ((i * 7 + i / 1000) % 251) as u8).collect();
        // Random bytes: stored blocks, which the threads finish faster than they are read.
        let random = random_bytes(BLOCK * 5 / 2);
        for input in [data, Vec::new(), vec![42u8; BLOCK], random] {
            let mut outputs = Vec::new();
            for threads in [1, 2, 3] {
                let mut out = Vec::new();
                gzip(&mut &input[..], &mut out, threads).unwrap();
                outputs.push(out);
            }
            assert!(
                outputs.windows(2).all(|w| w[0] == w[1]),
                "the bytes depend on the threads"
            );
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&outputs[0][..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input, "a round trip changed the data");
            let mut all = Vec::new();
            flate2::read::MultiGzDecoder::new(&outputs[0][..])
                .read_to_end(&mut all)
                .unwrap();
            assert_eq!(all.len(), input.len(), "more than one member");
        }
    }

    #[test]
    fn compression_is_deterministic_and_an_already_compressed_layer_is_kept() {
        let dir = ScratchDir::new("test").unwrap();
        let layer = dir.path.join("layer.tar");
        let mut tar = tar::Builder::new(Vec::new());
        let data = b"hello layer\n".repeat(1000);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "hello.txt", &data[..]).unwrap();
        std::fs::write(&layer, tar.into_inner().unwrap()).unwrap();
        let (a, compressed_a) = compressed(&layer, &dir.path.join("a.gz")).unwrap();
        let (b, _) = compressed(&layer, &dir.path.join("b.gz")).unwrap();
        assert!(compressed_a);
        assert_eq!(a.digest, b.digest, "the same layer gave two digests");
        assert_eq!(a.digest, sha256(&std::fs::read(&a.path).unwrap()));
        let (kept, compressed_again) = compressed(&a.path, &dir.path.join("c.gz")).unwrap();
        assert!(!compressed_again && kept.digest == a.digest && kept.path == a.path);
        // And it decompresses to the layer.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&a.path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, std::fs::read(&layer).unwrap());
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_are_stored_and_compressible_ones_deflated() {
        let random = random_bytes(BLOCK);
        assert!(incompressible(&random));
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(BLOCK / 44);
        assert!(!incompressible(&text));
        let mut out = Vec::new();
        gzip(&mut &random[..], &mut out, 2).unwrap();
        assert!(
            out.len() > random.len() && out.len() < random.len() + 200,
            "{}",
            out.len()
        );
        let mut out = Vec::new();
        gzip(&mut &text[..], &mut out, 2).unwrap();
        assert!(out.len() < text.len() / 10, "{}", out.len());
    }

    #[test]
    fn the_pipeline_never_stalls_when_the_threads_outrun_the_reader() {
        // Fast (stored) blocks once left every piece received but unwritten while the writer waited for
        // one more: a hang. Many rounds, under a watchdog.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let data = random_bytes(BLOCK * 6);
            for _ in 0..60 {
                let mut out = Vec::new();
                gzip(&mut &data[..], &mut out, 2).unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the parallel gzip stalled");
    }
}
