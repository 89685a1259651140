//! Seek points of a gzip layer the step did not write (an OCI layout's blob, whose bytes must stay as they
//! are), found by inflating it once as zlib's `examples/zran.c` and soci's `gzip_zinfo.c` do: a point at
//! the end of a deflate block once a span has passed since the previous one, with the bit offset and the
//! 32 KiB of output before it. zlib's C API (libz-rs-sys, the same zlib-rs that flate2 runs on) is used for
//! the one thing flate2 does not offer: stopping at every deflate block (`Z_BLOCK`).

use super::gzip::{SeekPoint, Spans, WINDOW, hex_digest};
use libz_rs_sys::{
    Z_BLOCK, Z_NEED_DICT, Z_OK, Z_STREAM_END, inflate, inflateEnd, inflateInit2_, z_stream, zlibVersion,
};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The most seek points kept (64 GiB uncompressed at soci's 4 MiB spans, 512 MiB of windows on disk): a
/// layer that inflates to more gets no zTOC.
const MAX_POINTS: usize = 1 << 14;

/// The seek points of the gzip file `path`, one per `span` uncompressed bytes at most, and its span
/// digests; every uncompressed byte goes to `sink` as it comes, and the windows to `spill` (in point
/// order: a small file can inflate to far more, and 32 KiB per 4 MiB of it is never held). A stream of
/// several gzip members, or anything after the first, is refused (soci reads one member).
pub fn seek_points(path: &Path, span: u64, sink: &mut dyn FnMut(&[u8]), spill: std::fs::File) -> Result<Spans, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut stream = z_stream::default();
    let version = zlibVersion();
    // windowBits 47: a zlib or gzip header, found automatically, as zran does.
    let ret = unsafe { inflateInit2_(&mut stream, 47, version, std::mem::size_of::<z_stream>() as i32) };
    if ret != Z_OK {
        return Err(format!("zlib could not start inflating ({ret})"));
    }
    let found = walk(&mut file, &mut stream, span, sink, spill);
    unsafe { inflateEnd(&mut stream) };
    let mut spans = found?;
    spans.digests = span_digests(&mut file, &spans.points, spans.compressed).map_err(|e| e.to_string())?;
    Ok(spans)
}

fn walk(
    file: &mut std::fs::File,
    stream: &mut z_stream,
    span: u64,
    sink: &mut dyn FnMut(&[u8]),
    mut spill: std::fs::File,
) -> Result<Spans, String> {
    let mut input = vec![0u8; 1 << 16];
    let mut window = vec![0u8; WINDOW];
    let (mut total_in, mut total_out, mut last) = (0u64, 0u64, 0u64);
    let mut points = Vec::new();
    stream.avail_out = 0;
    'reading: loop {
        let n = file.read(&mut input).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the gzip stream ends before its end".to_string());
        }
        stream.next_in = input.as_ptr();
        stream.avail_in = n as u32;
        loop {
            if stream.avail_out == 0 {
                stream.avail_out = WINDOW as u32;
                stream.next_out = window.as_mut_ptr();
            }
            let (had_in, had_out) = (stream.avail_in, stream.avail_out);
            // Until the input or the window runs out, or a deflate block ends.
            let ret = unsafe { inflate(stream, Z_BLOCK) };
            let produced_from = WINDOW - had_out as usize;
            let produced_to = WINDOW - stream.avail_out as usize;
            sink(&window[produced_from..produced_to]);
            total_in += u64::from(had_in - stream.avail_in);
            total_out += (produced_to - produced_from) as u64;
            if ret == Z_NEED_DICT || ret < 0 {
                return Err(format!("not a valid gzip stream (zlib {ret})"));
            }
            if ret == Z_STREAM_END {
                let rest = stream.avail_in as usize + file.read(&mut input).map_err(|e| e.to_string())?;
                if rest > 0 {
                    return Err("a gzip of several members (or with bytes after it), which soci does not index".into());
                }
                break 'reading;
            }
            // At the end of a block that is not the last: a point, if a span has passed (and one after the
            // header, so there is always one).
            let block_end = stream.data_type & 128 != 0 && stream.data_type & 64 == 0;
            if block_end && (total_out == 0 || total_out - last > span) {
                if points.len() == MAX_POINTS {
                    return Err(format!("over {} GiB uncompressed", (MAX_POINTS as u64 * span) >> 30));
                }
                // The circular window, oldest byte first: what follows the write position, then what precedes.
                let left = stream.avail_out as usize;
                spill.write_all(&window[WINDOW - left..]).map_err(|e| e.to_string())?;
                spill.write_all(&window[..WINDOW - left]).map_err(|e| e.to_string())?;
                points.push(SeekPoint {
                    compressed: total_in,
                    uncompressed: total_out,
                    bits: (stream.data_type & 7) as u8,
                    window: Vec::new(),
                });
                last = total_out;
            }
            if stream.avail_in == 0 {
                break;
            }
        }
    }
    Ok(Spans {
        points,
        digests: Vec::new(),
        compressed: total_in,
        uncompressed: total_out,
        spill: None,
    })
}

/// The sha256 of each span's compressed bytes, as soci hashes them: from its point (one byte earlier when
/// the point is inside a byte) to the next point, the last to the end of the file.
fn span_digests(file: &mut std::fs::File, points: &[SeekPoint], size: u64) -> std::io::Result<Vec<String>> {
    let size = size.max(file.metadata()?.len());
    let mut digests = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let start = point.compressed - u64::from(point.bits != 0);
        let end = points.get(i + 1).map_or(size, |p| p.compressed);
        file.seek(SeekFrom::Start(start))?;
        let mut hasher = Sha256::new();
        std::io::copy(
            &mut (&mut *file).take(end - start),
            &mut super::gzip::HashWriter(&mut hasher),
        )?;
        digests.push(hex_digest(hasher));
    }
    Ok(digests)
}
