//! Layout: images in files, with no Docker Engine: an OCI image layout directory (`oci:`), one in a tar
//! (`oci-archive:`), or `docker save`'s tar (`docker-archive:`, also what BuildKit and kaniko write). An
//! adapter: uses `domain` and `files`, never another adapter. Blocking; callers run it off the async threads.
//!
//! A layout's manifests and blobs are sent as they are, so every digest stays the layout's (an index whole,
//! every child too). A docker archive's layers are uncompressed tars: each is gzip-compressed here, layers
//! side by side and each layer's 1 MiB blocks on every core (pigz's scheme), deterministically (fixed
//! blocks, no name, mtime 0, one level, one backend), so the same image gives the same digests on any
//! machine, whatever its cores; the config is sent as it is, so the image id and the diff ids stay.

use crate::domain::manifest::{Manifest, sha256};
use crate::domain::source::{FileImage, LocalBlob};
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

/// Read `docker save`'s tar; `reference` picks an image by one of its tags.
pub fn docker_archive(path: &Path, reference: Option<&str>) -> Result<Opened> {
    let scratch = ScratchDir::new("docker-archive")?;
    unpack(path, &scratch.path)?;
    Ok(Opened {
        image: read_docker(&scratch.path, reference)?,
        _scratch: Some(scratch),
    })
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

fn read_docker(root: &Path, reference: Option<&str>) -> Result<FileImage> {
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
    let layer_paths: Vec<PathBuf> = chosen["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(|l| root.join(l)))
        .collect();
    let scratch = root.join(".ecr-step-layers");
    std::fs::create_dir_all(&scratch)?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(layer_paths.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Result<(LocalBlob, bool)>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(path) = layer_paths.get(i) else { break };
                        done.push((i, compressed(path, &scratch.join(format!("{i}.tar.gz")))));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a compression thread"))
            .collect()
    });
    let mut layers: Vec<(usize, LocalBlob, bool)> = Vec::new();
    for (i, result) in results {
        let (blob, compressed_here) = result?;
        layers.push((i, blob, compressed_here));
    }
    layers.sort_by_key(|(i, _, _)| *i);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.size, "digest": config.digest},
        "layers": layers.iter().map(|(_, b, _)| json!({"mediaType": DOCKER_LAYER, "size": b.size, "digest": b.digest})).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let compressed = layers.iter().filter(|(_, _, c)| *c).count();
    let mut blobs = vec![config.clone()];
    for (_, blob, _) in layers {
        if !blobs.iter().any(|b| b.digest == blob.digest) {
            blobs.push(blob);
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
    })
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
    let mut hasher = Sha256::new();
    let file = std::fs::File::create(out)?;
    let mut counting = Tee {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: &mut hasher,
        written: 0,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    gzip(&mut std::fs::File::open(layer)?, &mut counting, threads)?;
    counting.inner.flush()?;
    let size = counting.written;
    drop(counting);
    Ok((
        LocalBlob {
            digest: hex_digest(hasher),
            size,
            path: out.to_path_buf(),
        },
        true,
    ))
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
    let mut crc = crc32fast::Hasher::new();
    let mut size: u64 = 0;
    let mut previous_tail: Vec<u8> = Vec::new();
    let batch = threads.max(1) * 2;
    let mut next = read_block(input)?;
    if next.is_none() {
        // Empty input: one empty final block.
        output.write_all(&deflate_block(&[], &[], true)?)?;
    }
    while next.is_some() {
        // A batch of blocks, each with its dictionary and whether the stream ends with it.
        let mut blocks: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
        while blocks.len() < batch {
            let Some(block) = next.take() else { break };
            next = read_block(input)?;
            crc.update(&block);
            size += block.len() as u64;
            let tail = block[block.len().saturating_sub(WINDOW)..].to_vec();
            let dictionary = std::mem::replace(&mut previous_tail, tail);
            let last = next.is_none();
            blocks.push((block, dictionary, last));
        }
        let workers = threads.max(1).min(blocks.len());
        let compressed: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let blocks = &blocks;
                    s.spawn(move || {
                        (w..blocks.len())
                            .step_by(workers)
                            .map(|i| (i, deflate_block(&blocks[i].0, &blocks[i].1, blocks[i].2)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(usize, std::io::Result<Vec<u8>>)> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("a compression thread"))
                .collect();
            all.sort_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, r)| r).collect()
        });
        for piece in compressed {
            output.write_all(&piece?)?;
        }
    }
    output.write_all(&crc.finalize().to_le_bytes())?;
    output.write_all(&(size as u32).to_le_bytes())?;
    Ok(())
}

/// Up to one block of input; `None` at the end.
fn read_block(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut block = Vec::with_capacity(BLOCK);
    input.by_ref().take(BLOCK as u64).read_to_end(&mut block)?;
    Ok((!block.is_empty()).then_some(block))
}

/// One block as raw deflate, primed with `dictionary`, ended by a sync flush or, for the last, the end.
fn deflate_block(data: &[u8], dictionary: &[u8], last: bool) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let mut deflate = Compress::new(Compression::new(LEVEL), false);
    if !dictionary.is_empty() {
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
        for input in [data, Vec::new(), vec![42u8; BLOCK]] {
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
}
