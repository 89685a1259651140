//! The gzip engine: a layer compressed on every core as pigz does, deterministically (fixed 1 MiB blocks
//! primed with the previous 32 KiB, no name, mtime 0, one backend, the level given), so the same layer gives the
//! same digest on any machine whatever its cores; and the hashing that goes with it (the compressed
//! digest, and the diff id of what was read).

use crate::domain::source::LocalBlob;
use anyhow::Result;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// gzip `input` into the file `out` (in parallel, deterministically): the blob written, and the diff id
/// (the digest of what was read). With `spans`, the seek points of the stream are kept there as they pass.
pub fn gzip_file(
    input: &mut impl Read,
    out: &Path,
    level: u32,
    spans: Option<&mut Spans>,
) -> Result<(LocalBlob, String)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    compress_file(input, out, |mut reading, mut written| {
        Ok(gzip(&mut reading, &mut written, threads, level, spans)?)
    })
}

/// `compress` writing what it reads from `input` into the file `out`: the blob written (hashed and counted
/// as it is written), and the diff id (the digest of what was read). Each engine's `*_file` is this.
pub(super) fn compress_file(
    input: &mut impl Read,
    out: &Path,
    compress: impl FnOnce(&mut dyn Read, &mut dyn Write) -> Result<()>,
) -> Result<(LocalBlob, String)> {
    let (mut hasher, mut read_hasher) = (Sha256::new(), Sha256::new());
    let file = std::fs::File::create(out)?;
    // A small buffer: the engines write whole blocks, which pass it by, and an upload that follows this
    // file (`Growing`) gets each block as it is done (1 MiB here held a rebuild's first bytes back ~10 ms).
    let mut written = Tee {
        inner: std::io::BufWriter::with_capacity(64 << 10, file),
        hasher: &mut hasher,
        written: 0,
    };
    let mut reading = HashReader {
        inner: input,
        hasher: &mut read_hasher,
    };
    compress(&mut reading, &mut written)?;
    written.inner.flush()?;
    let size = written.written;
    drop(written);
    let blob = LocalBlob {
        digest: hex_digest(hasher),
        size,
        path: out.to_path_buf(),
    };
    Ok((blob, hex_digest(read_hasher)))
}

/// The digest and size of a gzip layer in `input`, and its diff id (the digest of its uncompressed
/// bytes), in one pass: this thread reads, hashes and inflates; a second one hashes what it inflated, so
/// a large layer's check (the longest of a layout's) takes about the inflation's time alone.
pub fn gzip_digests(input: impl Read) -> std::io::Result<(String, u64, String)> {
    let mut compressed = Sha256::new();
    let mut counted = 0u64;
    let (inflated, hashing) = std::sync::mpsc::sync_channel::<Vec<u8>>(INFLATED_AHEAD);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut uncompressed = Sha256::new();
            for piece in hashing {
                uncompressed.update(&piece);
            }
            uncompressed
        });
        let read = (|| {
            let reading = CountingHashReader {
                inner: input,
                hasher: &mut compressed,
                read: &mut counted,
            };
            let mut decoder = flate2::read::MultiGzDecoder::new(reading);
            loop {
                let mut piece = vec![0u8; INFLATED_PIECE];
                let n = read_full(&mut decoder, &mut piece)?;
                if n == 0 {
                    break;
                }
                piece.truncate(n);
                if inflated.send(piece).is_err() {
                    break;
                }
            }
            // What follows the gzip stream (if anything) still counts toward the blob's digest.
            std::io::copy(decoder.get_mut(), &mut std::io::sink())?;
            std::io::Result::Ok(())
        })();
        drop(inflated);
        let uncompressed = hasher.join().expect("the hashing thread does not panic");
        read?;
        Ok((hex_digest(compressed), counted, hex_digest(uncompressed)))
    })
}

/// Inflated bytes handed to the hashing thread at a time, and how many may wait for it.
const INFLATED_PIECE: usize = 256 * 1024;
const INFLATED_AHEAD: usize = 8;

/// Fill `buf` from `input` as far as it goes: the bytes read (fewer only at the end).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The digest and size of everything in `input`.
pub fn digest_of(mut input: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut input, &mut HashWriter(&mut hasher))?;
    Ok((hex_digest(hasher), size))
}

/// The block size of the parallel compression: the input is cut here whatever the number of threads.
const BLOCK: usize = 1 << 20;
/// What deflate looks back at: each block is primed with the previous block's last 32 KiB.
pub const WINDOW: usize = 32 * 1024;
/// Blocks per span of [`Spans`]: 4 MiB, soci's default span.
const SPAN_BLOCKS: usize = 4;
/// The uncompressed bytes between two seek points of [`Spans`].
pub const SPAN_SIZE: u64 = (SPAN_BLOCKS * BLOCK) as u64;

/// The seek points of a stream the engine wrote, which it knows without decompressing anything: every
/// block starts on a byte boundary (the one before ended with a sync flush) and was deflated with the
/// previous 32 KiB as its dictionary, so a reader can start inflating there with that window. One point
/// every [`SPAN_SIZE`] uncompressed bytes, the first just after the gzip header (with a zero window), as
/// zlib's `zran` and soci's zTOC place them; and the sha256 of each span's compressed bytes (from its point
/// to the next, the last to the end of the stream, trailer included).
#[derive(Debug, Default)]
pub struct Spans {
    pub points: Vec<SeekPoint>,
    /// Where the windows go, in point order, instead of into the points (a gigabyte's layer has 8 MiB of
    /// them: on disk, they cost no memory).
    pub spill: Option<std::fs::File>,
    pub digests: Vec<String>,
    /// The compressed size of the whole stream.
    pub compressed: u64,
    /// The uncompressed size of the whole stream.
    pub uncompressed: u64,
}

/// Where inflating may start: `compressed` (a byte offset in the gzip stream) gives the bytes from
/// `uncompressed` on, given `window`, the 32 KiB before them (zeros before the start; empty when
/// [`Spans::spill`] took it).
#[derive(Debug, Clone)]
pub struct SeekPoint {
    pub compressed: u64,
    pub uncompressed: u64,
    /// Bits of the byte before `compressed` that belong to the point's block (0: on a byte boundary, as
    /// every point of this engine is).
    pub bits: u8,
    pub window: Vec<u8>,
}

/// gzip `input` into `output` as pigz does: the input cut into 1 MiB blocks, each deflated on its own thread
/// with the previous block's last 32 KiB as its dictionary and ended with a sync flush (the last with the
/// end of the stream), the pieces concatenated into one gzip member (no name, mtime 0, OS unknown) with the
/// CRC-32 and size of the whole. The bytes depend on the input and the level alone, never on `threads`.
/// Memory stays at a few blocks per thread. With `spans`, its seek points and span digests are kept there.
pub fn gzip(
    input: &mut impl Read,
    output: &mut impl Write,
    threads: usize,
    level: u32,
    spans: Option<&mut Spans>,
) -> std::io::Result<()> {
    let xfl = if level <= 1 {
        4
    } else if level >= 9 {
        2
    } else {
        0
    };
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut header = HEADER;
    header[8] = xfl;
    output.write_all(&header)?;
    let mut seeking = spans.map(|spans| Seeking {
        spans,
        windows: std::collections::BTreeMap::new(),
        span: None,
        written: HEADER.len() as u64,
    });
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
                    let piece = deflate_block(&block.data, &block.dictionary, block.last, level);
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
                                   written: &mut usize,
                                   seeking: &mut Option<Seeking>|
             -> std::io::Result<()> {
                while let Some(piece) = ready.remove(written) {
                    let piece = piece?;
                    if let Some(seeking) = seeking {
                        seeking.piece(*written, &piece)?;
                    }
                    output.write_all(&piece)?;
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
                if let Some(seeking) = seeking.as_mut().filter(|_| sent % SPAN_BLOCKS == 0) {
                    // The window a reader starting at this block needs: the dictionary, zeros before the start.
                    let mut window = vec![0u8; WINDOW - dictionary.len()];
                    window.extend_from_slice(&dictionary);
                    seeking.windows.insert(sent, window);
                }
                let last = next.is_none();
                jobs.send((sent, Block { data, dictionary, last }))
                    .map_err(|_| std::io::Error::other("a compression thread stopped"))?;
                sent += 1;
                // Write what is done; wait only while too much is in flight, or for the rest at the end.
                loop {
                    while let Ok((i, piece)) = pieces.try_recv() {
                        ready.insert(i, piece);
                    }
                    write_ready(&mut ready, &mut written, &mut seeking)?;
                    if sent - written < in_flight && !(last && written < sent) {
                        break;
                    }
                    let (i, piece) = pieces
                        .recv()
                        .map_err(|_| std::io::Error::other("a compression thread stopped"))?;
                    ready.insert(i, piece);
                }
            }
            let mut trailer = crc.finalize().to_le_bytes().to_vec();
            trailer.extend_from_slice(&(size as u32).to_le_bytes());
            if let Some(mut seeking) = seeking {
                seeking.end(&trailer, size);
            }
            output.write_all(&trailer)
        };
        feed(input, output)
    })
}

/// The seek points being kept while the pieces are written in order.
struct Seeking<'a> {
    spans: &'a mut Spans,
    /// The window of each block that starts a span, until its piece is written.
    windows: std::collections::BTreeMap<usize, Vec<u8>>,
    /// The digest of the span being written.
    span: Option<Sha256>,
    /// The compressed bytes written so far.
    written: u64,
}

impl Seeking<'_> {
    /// Piece `i` (block `i`, deflated) is about to be written.
    fn piece(&mut self, i: usize, piece: &[u8]) -> std::io::Result<()> {
        if let Some(mut window) = self.windows.remove(&i) {
            if let Some(done) = self.span.take() {
                self.spans.digests.push(hex_digest(done));
            }
            if let Some(spill) = self.spans.spill.as_mut() {
                spill.write_all(&window)?;
                window = Vec::new();
            }
            self.spans.points.push(SeekPoint {
                compressed: self.written,
                uncompressed: (i * BLOCK) as u64,
                bits: 0,
                window,
            });
            self.span = Some(Sha256::new());
        }
        if let Some(span) = self.span.as_mut() {
            span.update(piece);
        }
        self.written += piece.len() as u64;
        Ok(())
    }

    /// The trailer ends the last span.
    fn end(&mut self, trailer: &[u8], uncompressed: u64) {
        if let Some(mut span) = self.span.take() {
            span.update(trailer);
            self.spans.digests.push(hex_digest(span));
        }
        self.spans.compressed = self.written + trailer.len() as u64;
        self.spans.uncompressed = uncompressed;
    }
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
fn deflate_block(data: &[u8], dictionary: &[u8], last: bool, level: u32) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    // A block of compressed or random bytes is stored as it is: deflate would spend its time to save
    // nothing (zlib's level 1 runs at about 100 MB/s per core on such data; storing at memory speed).
    let stored = incompressible(data);
    let level = if stored {
        Compression::none()
    } else {
        Compression::new(level)
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

pub fn hex_digest(hasher: Sha256) -> String {
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub struct HashWriter<'a>(pub &'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads through from `inner`, hashing what passes.
struct HashReader<'a, R: Read> {
    inner: R,
    hasher: &'a mut Sha256,
}

impl<R: Read> Read for HashReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads through from `inner`, hashing and counting what passes.
struct CountingHashReader<'a, R: Read> {
    inner: R,
    hasher: &'a mut Sha256,
    read: &'a mut u64,
}

impl<R: Read> Read for CountingHashReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        *self.read += n as u64;
        Ok(n)
    }
}

/// Writes through to `inner`, hashing and counting what passes.
pub struct Tee<'a, W: Write> {
    pub inner: W,
    pub hasher: &'a mut Sha256,
    pub written: u64,
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

    /// The fastest level, `auto`'s for large layers.
    const LEVEL: u32 = 1;

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
                gzip(&mut &input[..], &mut out, threads, LEVEL, None).unwrap();
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
    fn seek_points_change_no_byte_and_are_the_same_whatever_the_threads() {
        // 9.5 blocks: three spans, the last one short; text and random blocks mixed.
        let mut input: Vec<u8> = (0..(BLOCK * 5)).map(|i| ((i * 7 + i / 1000) % 251) as u8).collect();
        input.extend(random_bytes(BLOCK * 9 / 2));
        let mut plain = Vec::new();
        gzip(&mut &input[..], &mut plain, 2, LEVEL, None).unwrap();
        let mut seen = Vec::new();
        for threads in [1, 2, 3] {
            let (mut out, mut spans) = (Vec::new(), Spans::default());
            gzip(&mut &input[..], &mut out, threads, LEVEL, Some(&mut spans)).unwrap();
            assert!(
                out == plain,
                "keeping seek points changed the bytes ({threads} threads)"
            );
            let points: Vec<(u64, u64)> = spans.points.iter().map(|p| (p.compressed, p.uncompressed)).collect();
            assert_eq!(points.len(), 3);
            assert_eq!(points[0], (10, 0));
            assert_eq!(points[2].1, 2 * SPAN_SIZE);
            assert_eq!(
                spans.points[1].window,
                input[SPAN_SIZE as usize - WINDOW..SPAN_SIZE as usize]
            );
            assert_eq!(
                (spans.compressed, spans.uncompressed),
                (out.len() as u64, input.len() as u64)
            );
            let last = &out[points[2].0 as usize..];
            assert_eq!(spans.digests[2], crate::domain::manifest::sha256(last));
            seen.push((points, spans.digests));
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "the points depend on the threads"
        );
    }

    #[test]
    fn the_digests_of_a_layer_hashed_on_two_threads_are_its_own_and_a_cut_stream_fails() {
        use std::io::Write as _;
        // Two gzip members (5 MB of inflated pieces in all): every byte counts toward
        // the blob's digest, every inflated byte toward the diff id.
        let data: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("{i:012}\n").into_bytes())
            .collect();
        let (first, second) = data.split_at(data.len() / 3);
        let mut blob = Vec::new();
        for part in [first, second] {
            let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
            member.write_all(part).unwrap();
            blob.extend(member.finish().unwrap());
        }
        let (digest, size, diff_id) = gzip_digests(&blob[..]).unwrap();
        let sha = crate::domain::manifest::sha256;
        assert_eq!((digest, size, diff_id), (sha(&blob), blob.len() as u64, sha(&data)));
        // A stream cut short is an error, not a digest (and the hashing thread ends).
        assert!(gzip_digests(&blob[..blob.len() / 2]).is_err());
    }

    #[test]
    fn compression_is_deterministic_and_the_digests_agree() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello layer\n".repeat(100_000);
        let (a, diff_a) = gzip_file(&mut &data[..], &dir.path().join("a.gz"), LEVEL, None).unwrap();
        let (b, diff_b) = gzip_file(&mut &data[..], &dir.path().join("b.gz"), LEVEL, None).unwrap();
        assert_eq!(
            (&a.digest, &diff_a),
            (&b.digest, &diff_b),
            "the same layer gave two digests"
        );
        assert_eq!(diff_a, crate::domain::manifest::sha256(&data));
        let written = std::fs::read(&a.path).unwrap();
        assert_eq!(a.digest, crate::domain::manifest::sha256(&written));
        let (digest, size, diff_id) = gzip_digests(&written[..]).unwrap();
        assert_eq!((digest, size, diff_id), (a.digest.clone(), a.size, diff_a));
        assert_eq!(digest_of(&data[..]).unwrap().0, crate::domain::manifest::sha256(&data));
        // A small layer gets docker's level: fewer bytes, and still the same ones every time.
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes())
            .collect();
        let (fast, _) = gzip_file(&mut &text[..], &dir.path().join("fast.gz"), LEVEL, None).unwrap();
        let (small, _) = gzip_file(&mut &text[..], &dir.path().join("small.gz"), 6, None).unwrap();
        let (again, _) = gzip_file(&mut &text[..], &dir.path().join("again.gz"), 6, None).unwrap();
        assert!(small.size < fast.size, "{} !< {}", small.size, fast.size);
        assert_eq!(small.digest, again.digest);
    }

    /// Text of a few thousand distinct words in a varied order (as real files are: repeats near and far).
    fn words(n: usize) -> Vec<u8> {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            let x = xorshift(&mut state);
            let word = x % 4099;
            out.extend_from_slice(format!("w{word:x}{}", [" ", "\n", "/", "="][(x >> 40) as usize % 4]).as_bytes());
        }
        out.truncate(n);
        out
    }

    #[test]
    fn the_same_layer_gives_the_same_pinned_bytes_on_every_run_and_thread_count() {
        // The destinations' layers are known by these digests (a rebuild sends only what changed): a layer
        // must compress to the same bytes in every run, whatever the threads, and across releases. A deflater
        // reused between blocks (zlib-rs 0.6.8's reset) gave other bytes from run to run on real files.
        let input = words(BLOCK * 9 / 2);
        for threads in [1, 2, 3, 2] {
            let mut out = Vec::new();
            gzip(&mut &input[..], &mut out, threads, LEVEL, None).unwrap();
            assert_eq!(
                crate::domain::manifest::sha256(&out),
                "sha256:e3dc4114239eef6c8bcf7e3c2b6d16521d08234f715cfb8675754a4441e54587",
                "{threads} threads: the compressed bytes changed; every layer pushed before would be sent again \
                 (if a new compressor is meant, pin its digest here and say so in the release notes)"
            );
        }
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n).map(|_| (xorshift(&mut x) >> 24) as u8).collect()
    }

    /// The next state of Marsaglia's xorshift64 (the test inputs' generator), which it also returns.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn incompressible_blocks_are_stored_and_compressible_ones_deflated() {
        let random = random_bytes(BLOCK);
        assert!(incompressible(&random));
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(BLOCK / 44);
        assert!(!incompressible(&text));
        let mut out = Vec::new();
        gzip(&mut &random[..], &mut out, 2, LEVEL, None).unwrap();
        assert!(
            out.len() > random.len() && out.len() < random.len() + 200,
            "{}",
            out.len()
        );
        let mut out = Vec::new();
        gzip(&mut &text[..], &mut out, 2, LEVEL, None).unwrap();
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
                gzip(&mut &data[..], &mut out, 2, LEVEL, None).unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the parallel gzip stalled");
    }
}
