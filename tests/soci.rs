//! PLUGIN_SOCI: the step pushes a SOCI index v2 beside the image, and every zTOC in it is checked here by a
//! validator written from soci-snapshotter's format (`ztoc/fbs/ztoc.fbs`, `ztoc/compression/gzip_zinfo.c`),
//! sharing no code with the writer: its own flatbuffers reader, every span inflated from its seek point and
//! window, every table entry compared with the tar as the `tar` crate reads it from the pushed layer.

mod testbed;

use sha2::Digest as _;
use std::io::Read;
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

const SOCI_TYPE: &str = "application/vnd.amazon.soci.index.v2+json";

fn sha256(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A PAX extended header with `records`, for the entry that follows.
fn pax(tar: &mut tar::Builder<Vec<u8>>, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (key, value) in records {
        // "<length> <key>=<value>\n", the length counting itself.
        let rest = key.len() + value.len() + 3;
        let mut length = rest + 1;
        while length != rest + length.to_string().len() {
            length = rest + length.to_string().len();
        }
        data.extend_from_slice(format!("{length} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_path("PaxHeaders.0/entry").unwrap();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append(&header, &data[..]).unwrap();
}

fn file(tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header.set_uid(1000);
    header.set_gid(1000);
    header.set_username("builder").unwrap();
    header.set_groupname("staff").unwrap();
    tar.append_data(&mut header, name, data).unwrap();
}

fn link(tar: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_link(&mut header, name, target).unwrap();
}

/// A layer of over 10 MiB compressed: random data across 4 MiB boundaries, a long PAX name, a GNU long
/// name, hard and symbolic links, PAX xattrs and a fractional mtime, empty files, a directory.
fn tricky_layer() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_mtime(1_600_000_000);
    dir.set_uid(0);
    dir.set_gid(0);
    tar.append_data(&mut dir, "app/", std::io::empty()).unwrap();
    file(&mut tar, "app/empty", b"", 0o644);
    // Ends just short of 4 MiB in the tar, so the next one crosses the boundary.
    file(&mut tar, "app/first.bin", &random((4 << 20) - 3000, 1), 0o644);
    file(&mut tar, "app/crosses.bin", &random(9 << 20, 2), 0o755);
    let long = format!("app/{}/deep.txt", "a-long-directory-name".repeat(8));
    pax(
        &mut tar,
        &[
            ("path", long.as_bytes()),
            ("mtime", b"1700000000.25"),
            ("SCHILY.xattr.user.note", b"hello\x00world"),
            ("uname", b"someone-with-a-longer-name"),
        ],
    );
    file(
        &mut tar,
        "app/short-name-replaced-by-pax",
        &b"text line\n".repeat(50_000),
        0o600,
    );
    file(&mut tar, &format!("app/{}", "gnu-long-name-".repeat(10)), b"gnu", 0o644);
    link(&mut tar, tar::EntryType::Link, "app/hard", "app/crosses.bin");
    link(&mut tar, tar::EntryType::Symlink, "app/soft", "crosses.bin");
    file(&mut tar, "app/empty-too", b"", 0o644);
    file(&mut tar, "app/tail.bin", &random(1 << 20, 3), 0o644);
    // Enough small entries, some with PAX records, that the step's table is spilled in several batches.
    for i in 0..2000 {
        if i % 7 == 0 {
            pax(&mut tar, &[("SCHILY.xattr.user.n", format!("{i}").as_bytes())]);
        }
        file(
            &mut tar,
            &format!("app/many/{}{i}", "x".repeat(i % 13)),
            &[b'a'; 3][..i % 4],
            0o644,
        );
    }
    tar.into_inner().unwrap()
}

/// `docker save`'s tar of one image of `layers` (uncompressed tars).
fn docker_archive(layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let names: Vec<String> = (0..layers.len()).map(|i| format!("layer{i}/layer.tar")).collect();
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": ["soci:test"], "Layers": names}]).to_string();
    let mut tar = tar::Builder::new(Vec::new());
    let mut put = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, data).unwrap();
    };
    put("config.json", config.as_bytes());
    for (name, layer) in names.iter().zip(layers) {
        put(name, layer);
    }
    put("manifest.json", manifest.as_bytes());
    (tar.into_inner().unwrap(), sha256(config.as_bytes()))
}

// ---- A flatbuffers reader, from the format's definition ----

struct Fb<'a>(&'a [u8]);

impl<'a> Fb<'a> {
    /// A scalar of `size` bytes at `at`, which a flatbuffer aligns to its size from the buffer's start.
    fn aligned(&self, at: usize, size: usize) -> &'a [u8] {
        assert_eq!(at % size, 0, "a {size}-byte scalar at {at}, off its alignment");
        &self.0[at..at + size]
    }
    fn u32(&self, at: usize) -> usize {
        u32::from_le_bytes(self.aligned(at, 4).try_into().unwrap()) as usize
    }
    /// The root table's position.
    fn root(&self) -> usize {
        self.u32(0)
    }
    /// Where field `id` of the table at `table` is, if present.
    fn field(&self, table: usize, id: usize) -> Option<usize> {
        let soffset = i32::from_le_bytes(self.aligned(table, 4).try_into().unwrap());
        let vtable = (table as i64 - soffset as i64) as usize;
        let vtable_len = u16::from_le_bytes(self.aligned(vtable, 2).try_into().unwrap()) as usize;
        let slot = 4 + 2 * id;
        if slot + 2 > vtable_len {
            return None;
        }
        let offset = u16::from_le_bytes(self.aligned(vtable + slot, 2).try_into().unwrap()) as usize;
        (offset != 0).then_some(table + offset)
    }
    fn i64(&self, table: usize, id: usize) -> i64 {
        self.field(table, id)
            .map_or(0, |at| i64::from_le_bytes(self.aligned(at, 8).try_into().unwrap()))
    }
    fn i32(&self, table: usize, id: usize) -> i32 {
        self.field(table, id)
            .map_or(0, |at| i32::from_le_bytes(self.aligned(at, 4).try_into().unwrap()))
    }
    fn u8_or(&self, table: usize, id: usize, default: u8) -> u8 {
        self.field(table, id).map_or(default, |at| self.0[at])
    }
    /// A referenced object (table, string or vector) of field `id`.
    fn target(&self, table: usize, id: usize) -> Option<usize> {
        let at = self.field(table, id)?;
        Some(at + self.u32(at))
    }
    fn bytes(&self, table: usize, id: usize) -> &'a [u8] {
        match self.target(table, id) {
            Some(at) => {
                let len = self.u32(at);
                &self.0[at + 4..at + 4 + len]
            }
            None => &[],
        }
    }
    /// The tables (or strings) of a vector field.
    fn items(&self, table: usize, id: usize) -> Vec<usize> {
        let Some(at) = self.target(table, id) else {
            return Vec::new();
        };
        (0..self.u32(at))
            .map(|i| {
                let slot = at + 4 + 4 * i;
                slot + self.u32(slot)
            })
            .collect()
    }
    fn string_at(&self, at: usize) -> &'a [u8] {
        let len = self.u32(at);
        &self.0[at + 4..at + 4 + len]
    }
}

/// Inflate `want` bytes from a seek point as soci's `extract_data_from_buffer` does (zlib's C API): raw
/// deflate, primed with the point's `bits` of the first byte when it is inside one, the window as the
/// dictionary.
fn inflate_span(input: &[u8], bits: u8, window: &[u8], want: usize) -> Vec<u8> {
    use libz_rs_sys::*;
    let mut stream = z_stream::default();
    let mut out = vec![0u8; want];
    unsafe {
        assert_eq!(
            inflateInit2_(&mut stream, -15, zlibVersion(), std::mem::size_of::<z_stream>() as i32),
            Z_OK
        );
        let input = if bits != 0 {
            assert_eq!(
                inflatePrime(&mut stream, i32::from(bits), i32::from(input[0] >> (8 - bits))),
                Z_OK
            );
            &input[1..]
        } else {
            input
        };
        assert_eq!(
            inflateSetDictionary(&mut stream, window.as_ptr(), window.len() as u32),
            Z_OK
        );
        stream.next_in = input.as_ptr();
        stream.avail_in = input.len() as u32;
        stream.next_out = out.as_mut_ptr();
        stream.avail_out = want as u32;
        while stream.avail_out > 0 {
            let ret = inflate(&mut stream, Z_NO_FLUSH);
            assert!(
                ret == Z_OK || ret == Z_STREAM_END,
                "the span does not inflate from its point ({ret})"
            );
            if ret == Z_STREAM_END {
                break;
            }
        }
        let produced = want - stream.avail_out as usize;
        inflateEnd(&mut stream);
        out.truncate(produced);
    }
    out
}

struct Point {
    compressed: usize,
    uncompressed: usize,
    bits: u8,
    window: Vec<u8>,
}

/// Seconds since the epoch of an RFC 3339 UTC time ("…Z"), and its nanoseconds.
fn parse_time(text: &str) -> (i64, u32) {
    let (date, time) = text.strip_suffix('Z').expect("UTC").split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days before each month in a non-leap year; leap days counted up to the year.
    let (y, m, day) = (d[0], d[1], d[2]);
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: i64 = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum();
    days += BEFORE[(m - 1) as usize] + day - 1 + i64::from(m > 2 && leap(y));
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().unwrap()
    };
    (days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2], nanos)
}

/// Check the zTOC `ztoc` of the gzip layer `layer` against the format, its spans and its tar; how many of
/// its seek points are inside a byte.
fn validate(ztoc: &[u8], layer: &[u8]) -> usize {
    let fb = Fb(ztoc);
    let root = fb.root();
    assert_eq!(fb.bytes(root, 0), b"0.9", "version");
    assert!(!fb.bytes(root, 1).is_empty(), "no build tool");
    assert_eq!(fb.i64(root, 2) as usize, layer.len(), "compressed_archive_size");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer).read_to_end(&mut tar).unwrap();
    let info = fb.target(root, 5).expect("compression_info");
    assert_eq!(fb.u8_or(info, 0, 1), 1, "gzip");
    let max_span_id = fb.i32(info, 1) as usize;
    let digests: Vec<String> = fb
        .items(info, 2)
        .into_iter()
        .map(|at| String::from_utf8(fb.string_at(at).to_vec()).unwrap())
        .collect();
    let blob = fb.bytes(info, 3);
    let count = i32::from_le_bytes(blob[0..4].try_into().unwrap()) as usize;
    let span_size = i64::from_le_bytes(blob[4..12].try_into().unwrap());
    assert_eq!(span_size, 4 << 20);
    assert_eq!(
        blob.len(),
        12 + count * (17 + 32768),
        "checkpoints blob length (v2: every point)"
    );
    let points: Vec<Point> = (0..count)
        .map(|i| {
            let at = 12 + i * (17 + 32768);
            Point {
                compressed: i64::from_le_bytes(blob[at..at + 8].try_into().unwrap()) as usize,
                uncompressed: i64::from_le_bytes(blob[at + 8..at + 16].try_into().unwrap()) as usize,
                bits: blob[at + 16],
                window: blob[at + 17..at + 17 + 32768].to_vec(),
            }
        })
        .collect();
    assert_eq!(max_span_id, count - 1, "max_span_id = checkpoints - 1");
    assert_eq!(digests.len(), count, "one digest per span");
    assert_eq!(
        (points[0].compressed, points[0].uncompressed),
        (10, 0),
        "first point after the header"
    );
    assert!(points[0].window.iter().all(|&b| b == 0), "the first window is zeros");
    for (i, point) in points.iter().enumerate() {
        let start = point.compressed - usize::from(point.bits != 0);
        let end = points.get(i + 1).map_or(layer.len(), |p| p.compressed);
        assert!(end > start, "offsets increase");
        assert_eq!(digests[i], sha256(&layer[start..end]), "span {i}'s digest");
        // Inflate the whole span from its point with its window: exactly the tar's bytes there.
        let until = points.get(i + 1).map_or(tar.len(), |p| p.uncompressed);
        assert!(i == 0 || point.uncompressed > points[i - 1].uncompressed);
        let out = inflate_span(&layer[start..], point.bits, &point.window, until - point.uncompressed);
        assert!(
            out == tar[point.uncompressed..until],
            "span {i} inflated to other bytes than the tar's"
        );
    }
    // The table: every entry, in archive order, equals the tar's header.
    let toc = fb.target(root, 4).expect("toc");
    let entries = fb.items(toc, 0);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut seen = 0;
    let mut end = 0;
    for (i, entry) in archive.entries().unwrap().enumerate() {
        let mut entry = entry.unwrap();
        let at = entries[i];
        let pax: Vec<(Vec<u8>, Vec<u8>)> = entry
            .pax_extensions()
            .unwrap()
            .map(|p| {
                p.map(|r| r.unwrap())
                    .map(|r| (r.key_bytes().to_vec(), r.value_bytes().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let header = entry.header().clone();
        let name = entry.path_bytes().into_owned();
        assert_eq!(fb.bytes(at, 0), &name[..], "entry {i}'s name");
        let kind = match header.entry_type() {
            tar::EntryType::Regular => "reg",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Symlink => "symlink",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            fb.bytes(at, 1),
            kind.as_bytes(),
            "{:?}'s type",
            String::from_utf8_lossy(&name)
        );
        let offset = fb.i64(at, 2) as usize;
        let size = fb.i64(at, 3) as usize;
        assert_eq!((offset as u64, size as u64), (entry.raw_file_position(), entry.size()));
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert!(tar[offset..offset + size] == content[..], "entry {i}'s data offset");
        let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        assert_eq!(fb.bytes(at, 4), &link[..], "linkname");
        assert_eq!(fb.i64(at, 5), i64::from(header.mode().unwrap()), "mode");
        let pax_value = |key: &[u8]| pax.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let number = |id: usize| {
            fb.field(at, id)
                .map_or(0, |p| u32::from_le_bytes(ztoc[p..p + 4].try_into().unwrap()))
        };
        assert_eq!(number(6) as u64, header.uid().unwrap(), "uid");
        assert_eq!(number(7) as u64, header.gid().unwrap(), "gid");
        let uname = pax_value(b"uname").unwrap_or_else(|| header.username_bytes().unwrap_or_default().to_vec());
        assert_eq!(fb.bytes(at, 8), &uname[..], "uname");
        assert_eq!(fb.bytes(at, 9), header.groupname_bytes().unwrap_or_default(), "gname");
        let time = parse_time(std::str::from_utf8(fb.bytes(at, 10)).unwrap());
        let wanted = match pax_value(b"mtime") {
            Some(v) => {
                let v = String::from_utf8(v).unwrap();
                let (s, f) = v.split_once('.').unwrap_or((&v, ""));
                (s.parse().unwrap(), format!("{f:0<9}").parse().unwrap())
            }
            None => (header.mtime().unwrap() as i64, 0),
        };
        assert_eq!(time, wanted, "mod_time");
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = fb
            .items(at, 13)
            .into_iter()
            .map(|x| (fb.bytes(x, 0).to_vec(), fb.bytes(x, 1).to_vec()))
            .collect();
        let mut sorted = pax.clone();
        sorted.sort();
        assert_eq!(xattrs, sorted, "entry {i}'s PAX records");
        seen += 1;
        end = (offset + size).div_ceil(512) * 512;
    }
    assert_eq!(seen, entries.len(), "the table lists other entries than the tar");
    assert_eq!(
        fb.i64(root, 3) as usize,
        end + 1024,
        "uncompressed_archive_size (after the end blocks)"
    );
    points.iter().filter(|p| p.bits != 0).count()
}

/// The tag's index, its image manifest and its SOCI index manifest.
fn soci_parts(registry: &Registry, repo: &str, tag: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let (bytes, media_type, _) = registry.manifest(repo, tag).expect("the tag is there");
    assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "the image, then its SOCI index");
    assert_eq!(children[1]["artifactType"], SOCI_TYPE);
    assert_eq!(children[0]["platform"], children[1]["platform"]);
    let read = |d: &serde_json::Value| {
        let digest = d["digest"].as_str().unwrap();
        let (bytes, _, stored) = registry.manifest(repo, digest).unwrap();
        assert_eq!(stored, digest);
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    let (image, soci) = (read(&children[0]), read(&children[1]));
    assert_eq!(
        image["annotations"]["com.amazon.soci.index-digest"],
        children[1]["digest"]
    );
    assert_eq!(
        children[1]["annotations"]["com.amazon.soci.image-manifest-digest"],
        children[0]["digest"]
    );
    assert_eq!(soci["config"]["mediaType"], SOCI_TYPE);
    (index, image, soci)
}

#[test]
fn a_soci_index_is_pushed_beside_the_image_and_every_ztoc_reads_back_its_layer() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let dir = tempfile::tempdir().unwrap();
    let small = {
        let mut tar = tar::Builder::new(Vec::new());
        file(&mut tar, "etc/small", b"small layer", 0o644);
        tar.into_inner().unwrap()
    };
    let (archive, image_id) = docker_archive(&[small, tricky_layer()]);
    let path = dir.path().join("image.tar");
    std::fs::write(&path, archive).unwrap();
    let push = |repo: &str, soci: bool| {
        let outputs = dir.path().join(format!("{repo}.json"));
        let run = Step::aws(&moto)
            .env("PLUGIN_SOURCE", &format!("docker-archive:{}", path.display()))
            .env("PLUGIN_REPO", repo)
            .env("PLUGIN_REGISTRY", &registry.host)
            .env("PLUGIN_REGION", testbed::REGION)
            .env("PLUGIN_TAGS", "v1")
            .env("PLUGIN_SOCI", if soci { "true" } else { "false" })
            .env("PLUGIN_OUTPUT_FILE", outputs.to_str().unwrap())
            .run();
        run.success();
        let outputs: serde_json::Value = serde_json::from_slice(&std::fs::read(&outputs).unwrap()).unwrap();
        (run.output(), outputs)
    };
    let (said, outputs) = push("lazy", true);
    assert!(said.contains("soci: index sha256:"), "{said}");
    let (_, image, soci) = soci_parts(&registry, "lazy", "v1");
    assert_eq!(outputs["digest"], registry.digest("lazy", "v1").unwrap().as_str());
    assert_ne!(outputs["image_digest"], outputs["digest"]);
    assert_eq!(image["config"]["digest"], image_id.as_str());
    let layers = image["layers"].as_array().unwrap();
    let ztocs = soci["layers"].as_array().unwrap();
    assert_eq!(ztocs.len(), 1, "only the layer of 10 MiB or more gets a zTOC");
    assert_eq!(
        ztocs[0]["annotations"]["com.amazon.soci.image-layer-digest"],
        layers[1]["digest"]
    );
    assert_eq!(ztocs[0]["mediaType"], "application/octet-stream");
    let layer = registry.blob("lazy", layers[1]["digest"].as_str().unwrap());
    assert!(layer.len() >= 10 << 20, "{}", layer.len());
    let ztoc = registry.blob("lazy", ztocs[0]["digest"].as_str().unwrap());
    assert_eq!(
        validate(&ztoc, &layer),
        0,
        "the step's own points are on byte boundaries"
    );

    // Without SOCI: the same layers, the same image id; only the manifest differs.
    push("plain", false);
    assert_eq!(
        registry.layer_digests("plain", "v1"),
        layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    for repo in ["lazy", "plain"] {
        let (id, _) = registry.pull(&format!("{}/{repo}:v1", registry.host));
        assert_eq!(id, image_id, "{repo}: the image id changed");
    }
    // A promote copies the index whole: the SOCI index travels, every digest unchanged.
    Step::promote(&moto, &registry.host, "lazy:v1", "promoted", "v1")
        .run()
        .success();
    assert_eq!(registry.digest("promoted", "v1"), registry.digest("lazy", "v1"));
    let (_, _, promoted) = soci_parts(&registry, "promoted", "v1");
    assert_eq!(promoted, soci);
    registry.blob("promoted", ztocs[0]["digest"].as_str().unwrap());
    // containerd reads the index too (and picks the image for its platform), each layer checked as it
    // unpacks.
    let reference = format!("{}/lazy:v1", registry.host);
    registry.pull_with_containerd(&reference);
}

#[test]
fn an_engine_image_pushed_with_soci_still_runs_under_the_same_image_id() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("random.bin"), random(14 << 20, 7)).unwrap();
    let base = Image::from_host_files(&["/bin/sh"], &[]);
    let image = Image::build(&base.name, &[("data", data.path().to_str().unwrap())]);
    let run = Step::push(&moto, &registry, &image, "engine")
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_SOCI", "true")
        .run();
    run.success();
    let (_, manifest, soci) = soci_parts(&registry, "engine", "v1");
    assert_eq!(manifest["config"]["digest"], image.id.as_str());
    let ztocs = soci["layers"].as_array().unwrap();
    assert_eq!(ztocs.len(), 1, "{soci}");
    let layer_digest = ztocs[0]["annotations"]["com.amazon.soci.image-layer-digest"]
        .as_str()
        .unwrap();
    validate(
        &registry.blob("engine", ztocs[0]["digest"].as_str().unwrap()),
        &registry.blob("engine", layer_digest),
    );
    let reference = format!("{}/engine:v1", registry.host);
    registry.docker(&["pull", "-q", &reference]);
    let id = registry.docker(&["image", "inspect", "-f", "{{.Id}}", &reference]);
    let ran = registry.docker(&["run", "--rm", &reference]);
    registry.docker(&["rmi", "-f", &reference]);
    assert_eq!(id, image.id);
    assert_eq!(ran, "ran");
}

#[test]
fn soci_through_docker_push_is_refused_before_any_call() {
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let image = Image::random(1024);
    Step::push(&moto, &registry, &image, "refused")
        .env("PLUGIN_SOCI", "true")
        .env("PLUGIN_PUSH_VIA", "engine")
        .run()
        .failure(&["PLUGIN_SOCI", "PLUGIN_PUSH_VIA=registry"]);
    assert!(registry.repositories().is_empty());
}

#[test]
fn each_image_of_a_multi_platform_layout_gets_its_soci_index_from_its_gzip_layers() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let dir = tempfile::tempdir().unwrap();
    let layout = testbed::untrusted::Layout::new(dir.path());
    let oci = |t: &str| format!("application/vnd.oci.image.{t}");
    let mut children = Vec::new();
    let mut ids = Vec::new();
    for (arch, seed) in [("amd64", 11u64), ("arm64", 12)] {
        // Compressed elsewhere (gzip's default level: deflate blocks end inside bytes), over 10 MiB.
        let mut tar = tar::Builder::new(Vec::new());
        file(&mut tar, "bin/app", &random(11 << 20, seed), 0o755);
        file(
            &mut tar,
            "etc/config",
            &format!("arch={arch}\n").repeat(40_000).into_bytes(),
            0o644,
        );
        // Text: deflate's own blocks, which end inside a byte, so seek points need priming.
        let words = [
            "layer", "span", "point", "window", "index", "image", "tar", "gzip", "zran", "soci",
        ];
        let text: String = random(3 << 20, seed + 100)
            .iter()
            .map(|b| format!("{} ", words[usize::from(*b) % words.len()]))
            .collect();
        file(&mut tar, "share/words.txt", text.as_bytes(), 0o644);
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let small = {
            let mut small = tar::Builder::new(Vec::new());
            file(&mut small, "etc/os-release", arch.as_bytes(), 0o644);
            let small = small.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &small).unwrap();
            (small, gz.finish().unwrap())
        };
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/app"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&small.0), sha256(&tar)]},
        });
        let config = layout.blob(&oci("config.v1+json"), config.to_string().as_bytes());
        ids.push(config["digest"].as_str().unwrap().to_string());
        let layers = [
            layout.blob(&oci("layer.v1.tar+gzip"), &small.1),
            layout.blob(&oci("layer.v1.tar+gzip"), &gz),
        ];
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci("manifest.v1+json"), "config": config, "layers": layers});
        let mut d = layout.blob(&oci("manifest.v1+json"), manifest.to_string().as_bytes());
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        children.push(d);
    }
    let top = layout.index(&children);
    layout.top(&top);
    let run = Step::aws(&moto)
        .env("PLUGIN_SOURCE", &format!("oci:{}", dir.path().display()))
        .env("PLUGIN_REPO", "multi")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_SOCI", "true")
        .run();
    run.success().says("soci: a SOCI index for each of 2 image(s)");
    let (bytes, media_type, _) = registry.manifest("multi", "v1").unwrap();
    assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "two images, then their two SOCI indexes: {index}");
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (image, soci) = (&entries[i], &entries[2 + i]);
        assert_eq!(image["platform"]["architecture"], *arch);
        assert_eq!(soci["platform"]["architecture"], *arch);
        assert_eq!(soci["artifactType"], SOCI_TYPE);
        assert_eq!(
            soci["annotations"]["com.amazon.soci.image-manifest-digest"],
            image["digest"]
        );
        let read = |d: &serde_json::Value| {
            let (bytes, _, _) = registry.manifest("multi", d["digest"].as_str().unwrap()).unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let (manifest, soci) = (read(image), read(soci));
        assert_eq!(manifest["config"]["digest"], ids[i].as_str());
        let ztocs = soci["layers"].as_array().unwrap();
        assert_eq!(ztocs.len(), 1, "only the large layer: {soci}");
        let layer = ztocs[0]["annotations"]["com.amazon.soci.image-layer-digest"]
            .as_str()
            .unwrap();
        assert_eq!(layer, manifest["layers"][1]["digest"].as_str().unwrap());
        // The layer is the layout's own, byte for byte.
        assert!(layout.blob_path(layer).is_file(), "the layer's digest changed");
        let inside = validate(
            &registry.blob("multi", ztocs[0]["digest"].as_str().unwrap()),
            &registry.blob("multi", layer),
        );
        assert!(inside > 0, "no seek point inside a byte: the priming was not tested");
    }
    let reference = format!("{}/multi:v1", registry.host);
    registry.docker(&["pull", "-q", &reference]);
    let id = registry.docker(&["image", "inspect", "-f", "{{.Id}}", &reference]);
    registry.docker(&["rmi", "-f", &reference]);
    assert_eq!(id, ids[0], "docker pulled another image than the amd64 one");
}

#[test]
fn a_rebuild_with_soci_sends_only_its_new_layer_and_keeps_the_ztocs_of_the_others() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("random.bin"), random(14 << 20, 21)).unwrap();
    let base = Image::from_host_files(&["/bin/sh"], &[]);
    let below = Image::build(&base.name, &[("data", data.path().to_str().unwrap())]);
    let app = |n: u32| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.txt"),
            format!("build {n} {}\n", std::process::id()),
        )
        .unwrap();
        Image::build(&below.name, &[("app", dir.path().to_str().unwrap())])
    };
    let push = |image: &Image, tag: &str| {
        let run = Step::push(&moto, &registry, image, "app")
            .env("PLUGIN_TAGS", tag)
            .env("PLUGIN_SOCI", "true")
            .run();
        run.success();
        run
    };
    let first = app(1);
    push(&first, "build-1");
    let (_, _, first_soci) = soci_parts(&registry, "app", "build-1");
    let rebuilt = app(2);
    let run = push(&rebuilt, "build-2");
    // The previous build is found though its tag holds an index; only the new layer is compressed and
    // sent (with the config): the layers below, the large one's zTOC and the SOCI config are there.
    run.says("2 of the 3 layer(s) are sent as that registry holds them")
        .says("1 layer(s) compressed here")
        .says(&format!(
            "to {}/app: 2 uploaded, 0 mounted, 4 already there",
            registry.host
        ));
    let (_, image, soci) = soci_parts(&registry, "app", "build-2");
    assert_eq!(image["config"]["digest"], rebuilt.id.as_str());
    // The large layer kept its zTOC, as the registry holds it.
    assert_eq!(soci["layers"], first_soci["layers"], "{soci}");
    let (id, _) = registry.pull(&format!("{}/app:build-2", registry.host));
    assert_eq!(id, rebuilt.id);
    // A re-run finds the image in the index its tag holds, beside its SOCI index: nothing is exported.
    let again = push(&rebuilt, "build-2");
    again.says(&format!("skipped: {}/app:build-2", registry.host));
    assert!(
        !again.output().contains("source:"),
        "the re-run read the image again:\n{}",
        again.output()
    );
}
