//! The zstd engine (`PLUGIN_COMPRESSION=zstd`): a layer compressed by libzstd on every core, in its
//! multi-threaded streaming mode. Its output depends on the level and the bytes alone, not on the number of
//! workers (one or more: a context without workers frames its output otherwise, so there is always one),
//! nor on how fast or in what pieces the input comes, as long as nothing is flushed before the end; so the
//! same layer gives the same digest on any machine at the same level, as the gzip engine's does. With the
//! diff id of what was read.

use super::gzip::compress_file;
use crate::domain::source::LocalBlob;
use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;

/// zstd `input` into the file `out` at `level`, on every core: the blob written, and the diff id.
pub fn zstd_file(input: &mut impl Read, out: &Path, level: u32) -> Result<(LocalBlob, String)> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    zstd_file_with(input, out, level, workers.max(1), 1 << 20)
}

/// [`zstd_file`] with `workers` threads, fed `piece` bytes at a time. The context is driven directly, not
/// through the `zstd` crate's `Write` adapter, which starts a new frame whenever libzstd reports nothing
/// left to flush, and that depends on the timing (through it, one worker gave other bytes than two in a
/// debug build of the test below); libzstd blocks while it cannot take more input.
fn zstd_file_with(
    input: &mut impl Read,
    out: &Path,
    level: u32,
    workers: usize,
    piece: usize,
) -> Result<(LocalBlob, String)> {
    use ::zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation as _, OutBuffer};
    let mut encoder = Encoder::new(level as i32).context("starting zstd")?;
    encoder
        .set_parameter(CParameter::NbWorkers(workers as u32))
        .context("zstd's worker threads")?;
    compress_file(input, out, |reading, written| {
        let (mut buf, mut produced) = (vec![0u8; piece], vec![0u8; 1 << 20]);
        loop {
            let n = reading.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let mut fed = InBuffer::around(&buf[..n]);
            while fed.pos() < n {
                let mut output = OutBuffer::around(&mut produced[..]);
                encoder.run(&mut fed, &mut output)?;
                let made = output.pos();
                written.write_all(&produced[..made])?;
            }
        }
        loop {
            let mut output = OutBuffer::around(&mut produced[..]);
            let left = encoder.finish(&mut output, false)?;
            let made = output.pos();
            written.write_all(&produced[..made])?;
            if left == 0 {
                return Ok(());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::sha256;

    /// Text-like bytes of `len` (compressible, but not trivially), from a fixed seed.
    fn text(len: usize) -> Vec<u8> {
        let words = [
            "layer", "image", "registry", "digest", "zstd", "tar", "config", "manifest", "\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(words[(state % words.len() as u64) as usize].as_bytes());
            out.extend_from_slice(format!(" {} ", state % 1000).as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Reads 1 MiB at most at a time, each after `pause`.
    struct Slow<'a> {
        data: &'a [u8],
        pause: std::time::Duration,
    }

    impl Read for Slow<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.pause);
            let n = buf.len().min(self.data.len()).min(1 << 20);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_layer_gets_the_same_digest_whatever_the_workers_the_pieces_and_the_pace_and_reads_back_whole() {
        // Larger than several of libzstd's jobs at this level, so the workers really split it.
        let data = text(40 << 20);
        let dir = tempfile::tempdir().unwrap();
        let mut digests = Vec::new();
        let ways = [
            (1, 1 << 20, false),
            (2, 64 << 10, false),
            (7, 3 << 20, false),
            (2, 1 << 20, true),
        ];
        for (i, (workers, piece, slowly)) in ways.into_iter().enumerate() {
            let out = dir.path().join(format!("{i}.zst"));
            // Slowly: every worker done and its output flushed before the next piece comes, as when the
            // engine's export stalls (where the `zstd` crate's `Write` adapter would start a new frame).
            let mut input = Slow {
                data: &data[..],
                pause: std::time::Duration::from_millis(if slowly { 15 } else { 0 }),
            };
            let (blob, diff_id) = zstd_file_with(&mut input, &out, 3, workers, piece).unwrap();
            assert_eq!(diff_id, sha256(&data), "the diff id is the digest of what was read");
            let bytes = std::fs::read(&out).unwrap();
            assert_eq!((blob.digest.clone(), blob.size), (sha256(&bytes), bytes.len() as u64));
            assert!(bytes.len() < data.len() / 3, "{} of {}", bytes.len(), data.len());
            assert_eq!(::zstd::stream::decode_all(&bytes[..]).unwrap(), data);
            digests.push(blob.digest);
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
        // Another level is another blob.
        let (other, _) = zstd_file_with(&mut &data[..], &dir.path().join("9.zst"), 9, 2, 1 << 20).unwrap();
        assert_ne!(other.digest, digests[0]);
    }
}
