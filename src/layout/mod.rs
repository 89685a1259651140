//! Layout: images in files, with no Docker Engine: an OCI image layout directory (`oci:`), one in a tar
//! (`oci-archive:`), or `docker save`'s tar (`docker-archive:`, also what BuildKit and kaniko write). An
//! adapter: uses `domain` and `files`, never another adapter. Blocking; callers run it off the async threads.
//!
//! These files are untrusted input (the build that wrote them may have run a pull request's code), so:
//! - nothing outside the input is read: every name (in `index.json`, `manifest.json`, a descriptor, a
//!   link) is resolved inside the input alone ([`crate::files::tree`]), and only regular files are read;
//! - an archive is unpacked into the step's own scratch directory, and no entry is written through a link or
//!   over another entry; devices are refused;
//! - every read is bounded: manifests and indexes [`MANIFEST_LIMIT`], configs [`CONFIG_LIMIT`], a layer at
//!   most the size its descriptor or tar header declares; indexes nest at most [`MAX_INDEX_DEPTH`] deep;
//! - every blob is checked against its digest, and every layer against the diff id the config names, before
//!   anything is committed to a registry (a layout's large blobs may start uploading while they are
//!   checked, but no upload is closed, so no blob lands, until every check has passed).
//!
//! A layout's manifests and blobs are sent as they are, so every digest stays the layout's (an index whole,
//! every child too). A docker archive's layers are uncompressed tars: each is gzip-compressed here
//! ([`gzip`]); the config is sent as it is, so the image id and the diff ids stay.

mod docker_archive;
pub mod gzip;
mod oci;
mod soci;
mod zran;
mod zstd;
mod ztoc;

pub use docker_archive::{TarInput, docker_archive_from, glance as docker_archive_glance};

use crate::domain::source::{BaseLayers, Compressing, FileImage, LocalBlob};
use crate::files::ScratchDir;
use crate::files::tree::Tree;
use anyhow::{Context, Result, anyhow};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest manifest or index read (ECR's own limit for a manifest); also `index.json` and
/// `manifest.json`.
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// The largest image config read.
pub const CONFIG_LIMIT: u64 = 8 << 20;
/// How deep indexes may nest in a layout (an index of indexes of … of images).
pub const MAX_INDEX_DEPTH: usize = 16;

/// An image read from files, and the scratch directory its unpacked files live in (kept while it lives).
pub struct Opened {
    pub image: FileImage,
    scratch: Option<ScratchDir>,
}

impl Opened {
    /// The image, and apart from it the scratch directory its blobs are read from (removed when dropped),
    /// so that the files can go as soon as nothing reads them any more.
    pub fn split(self) -> (FileImage, Option<ScratchDir>) {
        (self.image, self.scratch)
    }
}

/// The smallest layer (its uncompressed bytes) of an archive or an engine's export whose upload starts
/// before it is compressed (a smaller one is sent after, in one request: an upload alongside its
/// compression costs more requests than it saves). A layout's blobs are all on disk already: see
/// `oci::EARLY_UPLOADS`.
const EARLY_UPLOAD_FROM: u64 = 1 << 20;

/// Read an OCI image layout directory; `reference` picks a manifest by its ref name. Its large blobs are
/// announced on `early` while they are checked (see [`Growing`]). With `soci`, its images get SOCI indexes
/// (their zTOCs written to a scratch directory of their own).
pub fn oci(path: &Path, reference: Option<&str>, soci: bool, early: Option<&Early>) -> Result<Opened> {
    let tree = Tree::open(path).with_context(|| format!("opening the OCI layout {}", path.display()))?;
    let image = oci::read_layout(&tree, reference, early)?;
    if !soci {
        return Ok(Opened { image, scratch: None });
    }
    let scratch = ScratchDir::new("soci").map_err(|e| scratch_error(e.into()))?;
    Ok(Opened {
        image: layout_soci(image, &scratch.path)?,
        scratch: Some(scratch),
    })
}

/// `image`, a layout's, with SOCI indexes: zTOCs of its large gzip layers written into `dir`.
fn layout_soci(image: FileImage, dir: &Path) -> Result<FileImage> {
    let ztocs = soci::ztocs_of_layout(&image, dir).map_err(scratch_error)?;
    soci::with_soci(image, &ztocs, &Default::default(), dir).map_err(scratch_error)
}

/// Read an OCI image layout from a tar file (with early uploads and SOCI indexes, as [`oci`]).
pub fn oci_archive(path: &Path, reference: Option<&str>, soci: bool, early: Option<&Early>) -> Result<Opened> {
    let scratch = ScratchDir::new("oci-archive").map_err(|e| scratch_error(e.into()))?;
    let file = crate::files::open_regular(path).map_err(|e| anyhow!("{e}"))?;
    let tree = input_tree(&scratch)?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let mut seen = Default::default();
    let unpacked = |e: anyhow::Error| e.context(format!("unpacking {}", path.display()));
    for entry in tar.entries().map_err(docker_archive::tar_error).map_err(unpacked)? {
        let mut entry = entry.map_err(docker_archive::tar_error).map_err(unpacked)?;
        if let docker_archive::Made::File(name) =
            docker_archive::unpack_entry(&tree, &mut entry, &mut seen).map_err(unpacked)?
        {
            let mut out = tree.create_file(&name).map_err(|e| unpack_error(&name, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| unpack_error(&name, e))?;
        }
    }
    let image = oci::read_layout(&tree, reference, early).with_context(|| format!("reading {}", path.display()))?;
    let image = match soci {
        true => layout_soci(image, &scratch.path)?,
        false => image,
    };
    Ok(Opened {
        image,
        scratch: Some(scratch),
    })
}

/// Read `docker save`'s tar from a file; `reference` picks an image by one of its tags.
pub fn docker_archive(path: &Path, reference: Option<&str>, compressing: Compressing) -> Result<Opened> {
    docker_archive_knowing(path, reference, None, None, &[], compressing)
}

/// [`docker_archive`], knowing what [`docker_archive_glance`] told: as [`docker_archive_from`] reads an
/// engine's export (the layers of `base` not compressed, the others announced on `early`).
pub fn docker_archive_knowing(
    path: &Path,
    reference: Option<&str>,
    early: Option<&Early>,
    base: Option<&BaseLayers>,
    diff_ids: &[String],
    compressing: Compressing,
) -> Result<Opened> {
    let file = crate::files::open_regular(path).map_err(|e| anyhow!("{e}"))?;
    docker_archive_from(
        docker_archive::ArchiveFile::new(file),
        reference,
        early,
        base,
        diff_ids,
        compressing,
    )
    .with_context(|| format!("reading {}", path.display()))
}

/// The directory of a scratch directory that an archive is unpacked into.
fn input_tree(scratch: &ScratchDir) -> Result<Tree> {
    let input = scratch.path.join("input");
    std::fs::create_dir(&input).map_err(|e| scratch_error(e.into()))?;
    Ok(Tree::open(&input)?)
}

/// An error while writing to the scratch space, with the TMPDIR fix when it is full or read-only.
fn scratch_error(e: anyhow::Error) -> anyhow::Error {
    match crate::files::scratch::explain(&e) {
        Some(fix) => e.context(fix),
        None => e,
    }
}

fn unpack_error(name: &Path, e: std::io::Error) -> anyhow::Error {
    scratch_error(anyhow::Error::from(e).context(format!("unpacking the archive's entry `{}`", name.display())))
}

/// A blocking reader of the chunks an async task sends in batches (the engine's export): the channel
/// between the engine's stream and the compression threads.
pub struct Chunks {
    receiver: tokio::sync::mpsc::Receiver<Vec<bytes::Bytes>>,
    batch: std::vec::IntoIter<bytes::Bytes>,
    current: bytes::Bytes,
}

impl Chunks {
    pub fn new(receiver: tokio::sync::mpsc::Receiver<Vec<bytes::Bytes>>) -> Chunks {
        Chunks {
            receiver,
            batch: Vec::new().into_iter(),
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.batch.next() {
                Some(chunk) => self.current = chunk,
                None => match self.receiver.blocking_recv() {
                    Some(batch) => self.batch = batch.into_iter(),
                    None => return Ok(0),
                },
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A blob whose upload may start before it is ready: a layer being compressed into `path`, or a layout's
/// blob being checked. `done` holds the blob once it is ready (the file complete, or every check of the
/// image passed), and is closed without one if the compression or a check fails: the upload must then not
/// be finished. `digest` is known beforehand for a layout's blob (so a destination that holds it is not
/// sent it again).
pub struct Growing {
    pub path: PathBuf,
    pub done: tokio::sync::watch::Receiver<Option<LocalBlob>>,
    pub digest: Option<String>,
}

/// Where blobs whose upload may start early are announced.
pub type Early = tokio::sync::mpsc::UnboundedSender<Growing>;

#[cfg(test)]
mod tests {
    use super::Chunks;
    use bytes::Bytes;
    use std::io::Read;

    #[test]
    fn the_export_reads_as_one_stream_across_batches_and_empty_chunks() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let batches = [
            vec![Bytes::from_static(b"ab"), Bytes::new()],
            Vec::new(),
            vec![Bytes::new(), Bytes::from_static(b"cde")],
            vec![Bytes::from_static(b"f")],
        ];
        for batch in batches {
            sender.try_send(batch).unwrap();
        }
        drop(sender);
        let mut read = Vec::new();
        let mut chunks = Chunks::new(receiver);
        // Small reads, so a read ends inside a chunk as well as at its end.
        let mut buf = [0u8; 2];
        loop {
            let n = chunks.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        assert_eq!(read, b"abcdef");
    }
}
