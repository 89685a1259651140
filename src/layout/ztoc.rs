//! zTOC: what lets a runtime start a container before its layer is downloaded (SOCI, Seekable OCI), as
//! awslabs/soci-snapshotter defines it (`ztoc/fbs/ztoc.fbs`, version 0.9): a table of the layer's tar
//! entries and where each one's data starts, and the layer's gzip seek points (`zinfo`), in flatbuffers.
//!
//! Nothing here decompresses: the seek points and span digests come from the gzip engine as it writes the
//! layer ([`Spans`]), and the table from the tar headers as they stream past it ([`TocReader`], on a
//! thread of its own beside the compression).

use super::gzip::{SPAN_SIZE, Spans, WINDOW, gzip_file};
use crate::domain::source::LocalBlob;
use anyhow::Result;
use flatbuffers::{FlatBufferBuilder, TableFinishedWIPOffset, WIPOffset};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

/// A layer compressed by the engine: its blob, its diff id, and with SOCI its zTOC (written beside it) or
/// why it has none.
pub struct Compressed {
    pub blob: LocalBlob,
    pub diff_id: String,
    pub ztoc: Option<Result<LocalBlob, String>>,
}

/// gzip the layer tar `input` into `out` ([`gzip_file`]); with `soci`, its zTOC too, from the same pass:
/// the seek points from the compression (their windows spilled beside the layer), the table from the tar
/// headers as they pass.
pub fn gzip_layer(input: &mut impl Read, out: &Path, level: u32, soci: bool) -> Result<Compressed> {
    if !soci {
        let (blob, diff_id) = gzip_file(input, out, level, None)?;
        return Ok(Compressed {
            blob,
            diff_id,
            ztoc: None,
        });
    }
    let windows = out.with_extension("windows");
    let mut spans = Spans {
        spill: Some(std::fs::File::create(&windows)?),
        ..Spans::default()
    };
    let table = out.with_extension("table");
    let mut toc = TocReader::start(spill(&table)?);
    let mut fed = Fed {
        inner: input,
        toc: &mut toc,
    };
    let (blob, diff_id) = gzip_file(&mut fed, out, level, Some(&mut spans))?;
    spans.spill = None;
    let ztoc = match toc.finish() {
        Ok(toc) => Ok(write_ztoc(toc, &spans, Some(&windows), &out.with_extension("ztoc"))?),
        Err(why) => Err(why),
    };
    std::fs::remove_file(&windows)?;
    std::fs::remove_file(&table)?;
    Ok(Compressed {
        blob,
        diff_id,
        ztoc: Some(ztoc),
    })
}

/// The zTOC of the gzip layer `blob`, which the step did not write (its bytes stay as they are): inflated
/// once ([`super::zran`]) for its seek points and its table, written to `out`; or why it has none.
pub fn ztoc_of_gzip(blob: &Path, out: &Path) -> Result<Result<LocalBlob, String>> {
    let windows = out.with_extension("windows");
    let spilled = std::fs::File::create(&windows)?;
    let table = out.with_extension("table");
    let mut toc = TocReader::start(spill(&table)?);
    let found = super::zran::seek_points(blob, SPAN_SIZE, &mut |bytes| toc.feed(bytes), spilled);
    let ztoc = match (found, toc.finish()) {
        (Ok(spans), Ok(toc)) => Ok(write_ztoc(toc, &spans, Some(&windows), out)?),
        (Err(why), _) | (_, Err(why)) => Err(why),
    };
    std::fs::remove_file(&windows)?;
    std::fs::remove_file(&table)?;
    Ok(ztoc)
}

/// A spill file at `path`, written and then read back.
fn spill(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Reads through from `inner`, handing what passes to a [`TocReader`].
struct Fed<'a, R: Read> {
    inner: R,
    toc: &'a mut TocReader,
}

impl<R: Read> Read for Fed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.toc.feed(&buf[..n]);
        Ok(n)
    }
}

/// The zTOC format version written (soci's current one).
pub const VERSION: &str = "0.9";
/// A layer of more tar entries than this gets no zTOC (the place of each entry's table is held in memory,
/// 4 bytes an entry, and the zTOC would outgrow what a runtime fetches before it starts).
pub const MAX_ENTRIES: usize = 1 << 20;
/// Nor does a layer whose table (names, links, PAX records) would take more than this.
pub const MAX_TABLE: usize = 64 << 20;
/// The builder's tables are spilled once it holds this much, so that is all of the table held in memory.
const BATCH: usize = 64 << 10;
/// The largest alignment a table of the zTOC needs (its int64 fields).
const ALIGN: usize = 8;

/// One tar entry as soci's `FileMetadata` holds it: names and PAX values are the archive's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    /// `reg`, `dir`, `symlink`, `hardlink`, `char`, `block` or `fifo`.
    pub kind: &'static str,
    /// Where its data starts in the uncompressed tar.
    pub offset: u64,
    pub size: u64,
    pub linkname: Vec<u8>,
    pub mode: i64,
    pub uid: u32,
    pub gid: u32,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// RFC 3339, in UTC, with the sub-second digits the archive gives.
    pub mod_time: String,
    pub devmajor: i64,
    pub devminor: i64,
    /// The entry's PAX records, by key (soci names them `xattrs`).
    pub pax: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A layer's table being built: each tar entry goes into a flatbuffers builder as its header passes
/// (`FileMetadata` tables, in archive order), and every [`BATCH`] bytes the builder's tables go to a spill
/// file beside the layer. A table is about 150 bytes a file (8 MB for a 1 GB layer of 50k files), so what
/// stays in memory is each table's place in the spill, and where the archive ends (after its two zero
/// blocks).
///
/// A spilled batch is whole: its tables refer only to their own strings and vtables, by offsets relative
/// to where they sit, so the batch is valid anywhere in the zTOC as long as its end keeps the alignment it
/// was built against (batches are padded in front to [`ALIGN`]).
pub struct Toc {
    batch: FlatBufferBuilder<'static>,
    /// The tables in `batch`, as the builder places them (from its end).
    in_batch: Vec<WIPOffset<TableFinishedWIPOffset>>,
    /// Every spilled table's place in the spill, in archive order.
    tables: Vec<u32>,
    spill: std::io::BufWriter<std::fs::File>,
    spilled: usize,
    end: u64,
}

impl Toc {
    fn new(spill: std::fs::File) -> Toc {
        Toc {
            batch: FlatBufferBuilder::with_capacity(2 * BATCH),
            in_batch: Vec::new(),
            tables: Vec::new(),
            spill: std::io::BufWriter::with_capacity(BATCH, spill),
            spilled: 0,
            end: 0,
        }
    }

    /// How many entries the table holds.
    fn entries(&self) -> usize {
        self.tables.len() + self.in_batch.len()
    }

    /// How many bytes the table takes so far.
    fn size(&self) -> usize {
        self.spilled + self.batch.unfinished_data().len()
    }

    /// Add `e` as soci's `FileMetadata`; once the batch is full, spill it.
    fn push(&mut self, e: &Entry) -> std::io::Result<()> {
        self.build(e);
        if self.batch.unfinished_data().len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Write the batch to the spill, padded in front so its length is a multiple of [`ALIGN`], and note
    /// where each of its tables now is.
    fn flush(&mut self) -> std::io::Result<()> {
        let data = self.batch.unfinished_data();
        let padded = data.len().next_multiple_of(ALIGN);
        self.spill.write_all(&[0u8; ALIGN][..padded - data.len()])?;
        self.spill.write_all(data)?;
        let end = self.spilled + padded;
        self.tables.extend(
            self.in_batch
                .drain(..)
                .map(|table| (end - table.value() as usize) as u32),
        );
        self.spilled = end;
        self.batch.reset();
        Ok(())
    }

    /// The whole table spilled: the spill, read from its start.
    fn spill_file(&mut self) -> std::io::Result<std::fs::File> {
        self.flush()?;
        self.spill.flush()?;
        let mut file = self.spill.get_ref().try_clone()?;
        std::io::Seek::rewind(&mut file)?;
        Ok(file)
    }

    /// `e` as soci's `FileMetadata`, in the batch.
    fn build(&mut self, e: &Entry) {
        let b = &mut self.batch;
        let name = b.create_byte_string(&e.name);
        let kind = b.create_string(e.kind);
        let linkname = b.create_byte_string(&e.linkname);
        let uname = b.create_byte_string(&e.uname);
        let gname = b.create_byte_string(&e.gname);
        let mod_time = b.create_string(&e.mod_time);
        let mut xattrs = Vec::with_capacity(e.pax.len());
        for (key, value) in &e.pax {
            let (key, value) = (b.create_byte_string(key), b.create_byte_string(value));
            let start = b.start_table();
            b.push_slot_always(field(0), key);
            b.push_slot_always(field(1), value);
            xattrs.push(b.end_table(start));
        }
        let xattrs = b.create_vector(&xattrs);
        let start = b.start_table();
        b.push_slot_always(field(0), name);
        b.push_slot_always(field(1), kind);
        b.push_slot(field(2), e.offset as i64, 0);
        b.push_slot(field(3), e.size as i64, 0);
        b.push_slot_always(field(4), linkname);
        b.push_slot(field(5), e.mode, 0);
        b.push_slot(field(6), e.uid, 0);
        b.push_slot(field(7), e.gid, 0);
        b.push_slot_always(field(8), uname);
        b.push_slot_always(field(9), gname);
        b.push_slot_always(field(10), mod_time);
        b.push_slot(field(11), e.devmajor, 0);
        b.push_slot(field(12), e.devminor, 0);
        b.push_slot_always(field(13), xattrs);
        let table = b.end_table(start);
        self.in_batch.push(table);
    }
}

/// A table's field `id` sits at vtable offset 4 + 2 × id.
const fn field(id: u16) -> u16 {
    4 + 2 * id
}

/// The tar entries of a stream read elsewhere: the bytes are handed over as they pass ([`TocReader::feed`])
/// and read on a thread of its own, so the compression never waits for it more than a few chunks.
pub struct TocReader {
    sender: Option<SyncSender<Vec<u8>>>,
    fed: u64,
    reading: std::thread::JoinHandle<Result<Toc, String>>,
}

impl TocReader {
    /// Start reading, the table spilled to `spill`.
    pub fn start(spill: std::fs::File) -> TocReader {
        // A few chunks in flight: the headers are read far faster than the layer is compressed.
        let (sender, chunks) = std::sync::mpsc::sync_channel(4);
        let reading = std::thread::spawn(move || {
            let input = ChannelReader {
                chunks,
                current: Vec::new(),
                at: 0,
            };
            read_toc(input, Toc::new(spill))
        });
        TocReader {
            sender: Some(sender),
            fed: 0,
            reading,
        }
    }

    /// The next bytes of the stream. Once the table is complete (or cannot be read) they are dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.fed += bytes.len() as u64;
        if let Some(sender) = &self.sender
            && sender.send(bytes.to_vec()).is_err()
        {
            self.sender = None;
        }
    }

    /// The table, or why the stream has none soci can use.
    pub fn finish(mut self) -> Result<Toc, String> {
        self.sender = None;
        let mut toc = self
            .reading
            .join()
            .map_err(|_| "reading the layer's tar headers stopped".to_string())??;
        toc.end = toc.end.min(self.fed);
        Ok(toc)
    }
}

/// Reads the chunks another thread sends.
struct ChannelReader {
    chunks: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => (self.current, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Every entry of the tar in `input`, as soci's table builder (Go's `archive/tar`) reads them.
fn read_toc(input: impl Read, mut toc: Toc) -> Result<Toc, String> {
    let mut archive = tar::Archive::new(input);
    let mut data_end = 0u64;
    let entries = archive.entries().map_err(|e| format!("not a tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("a tar header cannot be read: {e}"))?;
        if toc.entries() == MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let pax: BTreeMap<Vec<u8>, Vec<u8>> = match entry.pax_extensions() {
            Ok(Some(records)) => records
                .filter_map(Result::ok)
                .map(|r| (r.key_bytes().to_vec(), r.value_bytes().to_vec()))
                .collect(),
            Ok(None) => BTreeMap::new(),
            Err(e) => return Err(format!("a PAX header cannot be read: {e}")),
        };
        let header = entry.header();
        let name = entry.path_bytes().into_owned();
        let kind = kind(header.as_bytes()[156], &name)?;
        let number = |key: &[u8]| -> Option<u64> { std::str::from_utf8(pax.get(key)?).ok()?.parse().ok() };
        let text = |key: &[u8], plain: Option<&[u8]>| -> Vec<u8> {
            pax.get(key)
                .cloned()
                .unwrap_or_else(|| plain.unwrap_or_default().to_vec())
        };
        let mtime = match pax.get(b"mtime".as_slice()).and_then(|v| pax_time(v)) {
            Some(time) => time,
            None => (header.mtime().map_err(|e| e.to_string())? as i64, 0),
        };
        let device = |n: std::io::Result<Option<u32>>| i64::from(n.ok().flatten().unwrap_or(0));
        let made = Entry {
            kind,
            offset: entry.raw_file_position(),
            size: entry.size(),
            linkname: entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default(),
            mode: i64::from(header.mode().map_err(|e| e.to_string())?),
            uid: number(b"uid").unwrap_or(header.uid().unwrap_or(0)) as u32,
            gid: number(b"gid").unwrap_or(header.gid().unwrap_or(0)) as u32,
            uname: text(b"uname", header.username_bytes()),
            gname: text(b"gname", header.groupname_bytes()),
            mod_time: rfc3339(mtime.0, mtime.1),
            devmajor: device(header.device_major()),
            devminor: device(header.device_minor()),
            name,
            pax,
        };
        data_end = (made.offset + made.size).div_ceil(512) * 512;
        toc.push(&made)
            .map_err(|e| format!("its table could not be written beside the layer: {e}"))?;
        if toc.size() > MAX_TABLE {
            return Err(format!("a table of files larger than {} MiB", MAX_TABLE >> 20));
        }
    }
    // Go's reader stops after the two zero blocks that end the archive.
    toc.end = data_end + 1024;
    Ok(toc)
}

/// soci's name for a tar entry type; the types it refuses are refused here too.
fn kind(flag: u8, name: &[u8]) -> Result<&'static str, String> {
    Ok(match flag {
        // The old "regular file" flag: a directory when the name ends with a slash, as Go reads it.
        0 if name.ends_with(b"/") => "dir",
        0 | b'0' => "reg",
        b'1' => "hardlink",
        b'2' => "symlink",
        b'3' => "char",
        b'4' => "block",
        b'5' => "dir",
        b'6' => "fifo",
        other => {
            return Err(format!(
                "a tar entry of type {}, which soci does not index",
                crate::domain::excerpt(&[other], 4)
            ));
        }
    })
}

/// A PAX time (`seconds[.fraction]`, maybe negative) as seconds and nanoseconds.
fn pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let digits: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(match (negative, nanos) {
        (false, n) => (seconds, n),
        (true, 0) => (-seconds, 0),
        (true, n) => (-seconds - 1, 1_000_000_000 - n),
    })
}

/// `seconds.nanos` since the epoch as Go's `time.MarshalText` writes it in UTC (RFC 3339, the fraction
/// without trailing zeros).
pub fn rfc3339(seconds: i64, nanos: u32) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = match nanos {
        0 => String::new(),
        n => format!(".{n:09}").trim_end_matches('0').to_string(),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The fixed part of one seek point in soci's `zinfo` blob: the compressed and uncompressed offsets
/// (int64 each) and the bit count; its 32 KiB window follows.
const POINT_HEAD: usize = 17;

/// Write the zTOC of a layer the engine wrote to `path`, as flatbuffers `ztoc.Ztoc` (field ids of the
/// current `ztoc.fbs`), and return it as a blob.
///
/// A builder holds the small fields. The two large parts are not built in memory; they are written after
/// the builder's bytes, and the fields that hold them are pointed at them (a flatbuffers offset is
/// relative, so a vector or table may sit anywhere after its field):
/// - the table: the vector of the entries' offsets, then the batches of tables from the spill
///   ([`Toc`]);
/// - the checkpoints (soci's `zinfo` blob, version 2, little-endian: the number of points (int32), the
///   span size (int64), then each point's offsets, bits and window), 8 MiB per gigabyte of layer, their
///   windows copied from the spill file `windows` (where the points hold none).
fn write_ztoc(mut toc: Toc, spans: &Spans, windows: Option<&Path>, path: &Path) -> Result<LocalBlob> {
    let mut tables = toc.spill_file()?;
    let mut b = FlatBufferBuilder::new();
    // Placeholders for the entries and the checkpoints, re-pointed below.
    let placeholder = b.create_vector::<u8>(&[]);
    let start = b.start_table();
    b.push_slot_always(field(0), placeholder);
    let table = b.end_table(start);
    let version = b.create_string(VERSION);
    let tool = b.create_string(crate::domain::soci::BUILD_TOOL);
    let digests: Vec<WIPOffset<&str>> = spans.digests.iter().map(|d| b.create_string(d)).collect();
    let digests = b.create_vector(&digests);
    let start = b.start_table();
    // compression_algorithm: Gzip (1), the default, left out as soci's builder leaves it.
    b.push_slot(field(0), 1u8, 1);
    b.push_slot(field(1), spans.points.len() as i32 - 1, 0);
    b.push_slot_always(field(2), digests);
    b.push_slot_always(field(3), placeholder);
    let compression = b.end_table(start);
    let start = b.start_table();
    b.push_slot_always(field(0), version);
    b.push_slot_always(field(1), tool);
    b.push_slot(field(2), spans.compressed as i64, 0);
    b.push_slot(field(3), toc.end as i64, 0);
    b.push_slot_always(field(4), table);
    b.push_slot_always(field(5), compression);
    let root = b.end_table(start);
    b.finish_minimal(root);
    let mut head = b.finished_data().to_vec();
    // The slots to re-point, found as a reader finds them: the TOC table's `metadata`, the
    // CompressionInfo table's `checkpoints`.
    let root = read_u32(&head, 0);
    let target = |id: u16| field_slot(&head, root, id).map(|at| at + read_u32(&head, at));
    let slots = (field_slot(&head, target(4), 0), field_slot(&head, target(5), 3));
    let (Some(metadata_slot), Some(checkpoints_slot)) = slots else {
        anyhow::bail!("the zTOC's metadata and checkpoints fields were not written");
    };
    // After the builder's bytes (aligned to 8 by `finish`): the entries' offsets, the tables (aligned
    // as each batch was built), the checkpoints.
    let metadata = head.len();
    let entries = toc.tables.len();
    let offsets_end = metadata + 4 + 4 * entries;
    let tables_at = offsets_end.next_multiple_of(ALIGN);
    let checkpoints = tables_at + toc.spilled;
    for (slot, at) in [(metadata_slot, metadata), (checkpoints_slot, checkpoints)] {
        head[slot..slot + 4].copy_from_slice(&((at - slot) as u32).to_le_bytes());
    }
    let length = 12 + spans.points.len() * (POINT_HEAD + WINDOW);

    let mut hasher = sha2::Sha256::new();
    let mut out = super::gzip::Tee {
        inner: std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        hasher: &mut hasher,
        written: 0,
    };
    out.write_all(&head)?;
    out.write_all(&(entries as u32).to_le_bytes())?;
    for (i, &table) in toc.tables.iter().enumerate() {
        let slot = metadata + 4 + 4 * i;
        out.write_all(&((tables_at + table as usize - slot) as u32).to_le_bytes())?;
    }
    out.write_all(&[0u8; ALIGN][..tables_at - offsets_end])?;
    let copied = std::io::copy(&mut (&mut tables).take(toc.spilled as u64), &mut out)?;
    anyhow::ensure!(copied == toc.spilled as u64, "the zTOC's table spill was cut short");
    out.write_all(&(length as u32).to_le_bytes())?;
    out.write_all(&(spans.points.len() as i32).to_le_bytes())?;
    out.write_all(&(SPAN_SIZE as i64).to_le_bytes())?;
    let mut spilled = match windows {
        Some(windows) => Some(std::io::BufReader::new(std::fs::File::open(windows)?)),
        None => None,
    };
    let mut window = vec![0u8; WINDOW];
    for point in &spans.points {
        let mut head = [0u8; POINT_HEAD];
        head[..8].copy_from_slice(&(point.compressed as i64).to_le_bytes());
        head[8..16].copy_from_slice(&(point.uncompressed as i64).to_le_bytes());
        head[16] = point.bits;
        out.write_all(&head)?;
        match point.window.len() {
            WINDOW => out.write_all(&point.window)?,
            _ => {
                let spilled = spilled
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("a seek point without its window"))?;
                spilled.read_exact(&mut window)?;
                out.write_all(&window)?;
            }
        }
    }
    out.inner.flush()?;
    let size = out.written;
    drop(out);
    Ok(LocalBlob {
        digest: super::gzip::hex_digest(hasher),
        size,
        path: path.to_path_buf(),
    })
}

fn read_u32(data: &[u8], at: usize) -> usize {
    data.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Where field `id` of the table at `table` is in `data` (through its vtable), if it was written.
fn field_slot(data: &[u8], table: impl Into<Option<usize>>, id: u16) -> Option<usize> {
    let table = table.into()?;
    let back = i32::from_le_bytes(data.get(table..table + 4)?.try_into().ok()?);
    let vtable = usize::try_from(table as i64 - i64::from(back)).ok()?;
    let at = |i: usize| -> Option<usize> { Some(u16::from_le_bytes(data.get(i..i + 2)?.try_into().ok()?) as usize) };
    let slot = field(id) as usize;
    if slot + 2 > at(vtable)? {
        return None;
    }
    let offset = at(vtable + slot)?;
    (offset != 0).then_some(table + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_go_marshals_them_in_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(pax_time(b"1700000000.123456789"), Some((1_700_000_000, 123_456_789)));
        assert_eq!(pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(pax_time(b"12a"), None);
    }
}
