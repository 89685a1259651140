//! The shapes CI pushes, each on loopback and over a 25 MB/s link, the step against `docker push` (and
//! skopeo where it applies), time and bytes sent up the link:
//! - (a) a new application image built by a Dockerfile: a system layer, a dependency layer, two small
//!   layers and the app on top, six layers of real files with the shell below;
//! - (b) its rebuild with only the app changed, the previous build pushed by the same tool under another
//!   tag: on the same engine (docker push remembers the layers it pushed), and toward a registry that
//!   engine never pushed to (the previous build put there by skopeo, as from another runner);
//! - (c) a rebuild on an engine whose previous build came from a pull of the destination (`--cache-from`);
//! - (d) the same image under a new tag;
//! - (e) the image as a daemonless OCI layout (skopeo's, gzip layers as BuildKit writes them).

use super::{LINK_RATE, MB, Row, Sample, base64_login, floor, in_turn, measure, median, secs, step_env};
use crate::testbed::{self, DEFAULT_ACCOUNT, Image, Link, Moto, Registry, Step};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A registry behind its own link, logged in for docker and skopeo (the docker config both read).
struct Side {
    registry: Registry,
    link: Link,
}

impl Side {
    fn start(rate: usize, docker_config: &Path) -> Side {
        Side::start_far(rate, Duration::ZERO, docker_config)
    }

    /// Behind a link whose every byte also takes `delay` each way (a round trip of twice `delay`).
    fn start_far(rate: usize, delay: Duration, docker_config: &Path) -> Side {
        let registry = Registry::start(DEFAULT_ACCOUNT);
        let link = Link::start_with_delay(&registry.host, rate, delay);
        let file = docker_config.join("config.json");
        let mut config: serde_json::Value = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        let auth = base64_login(&format!("AWS:{DEFAULT_ACCOUNT}-auth-token"));
        config["auths"][link.host.as_str()] = serde_json::json!({ "auth": auth });
        std::fs::write(&file, config.to_string()).unwrap();
        Side { registry, link }
    }

    fn host(&self) -> &str {
        &self.link.host
    }

    /// Run `work`, returning its sample and the bytes it sent up this side's link.
    fn sent(&self, work: impl FnOnce() -> Sample) -> (Sample, u64) {
        let before = self.link.sent();
        let sample = work();
        (sample, self.link.sent() - before)
    }
}

/// What every push here needs: the step, moto, the environment and the docker config.
pub struct Bench<'a> {
    pub bin: &'a str,
    /// The AWS CLI, for the peer that logs in as a CI job does.
    pub aws: &'a str,
    pub moto: &'a Moto,
    pub env: &'a BTreeMap<String, String>,
    pub docker_config: &'a Path,
}

/// The layers below the app: real files of this machine from different places (libraries, shared data,
/// configuration), as a system, its dependencies, configuration and assets.
struct AppFiles {
    shell: Image,
    below: Vec<(&'static str, tempfile::TempDir)>,
}

impl AppFiles {
    fn new() -> AppFiles {
        AppFiles {
            shell: Image::from_host_files(&["/bin/sh"], &[]),
            below: vec![
                ("system", real_files_from(&["/usr/lib"], 90 * MB)),
                ("deps", real_files_from(&["/usr/share"], 60 * MB)),
                ("config", real_files_from(&["/etc"], MB / 2)),
                ("assets", real_files_from(&["/usr/share/doc"], 2 * MB)),
            ],
        }
    }

    /// An image of these layers and a new app on top (12 MB of programs): a build, or a rebuild that
    /// changed only the app.
    fn build(&self) -> Image {
        let app = real_files_from(&["/usr/bin", "/usr/sbin"], 12 * MB);
        let mut layers: Vec<(&str, &str)> = self
            .below
            .iter()
            .map(|(n, d)| (*n, d.path().to_str().unwrap()))
            .collect();
        layers.push(("app", app.path().to_str().unwrap()));
        Image::build(&self.shell.name, &layers)
    }
}

/// A directory of real files under `roots`, about `bytes` of them, and a marker file (so every image made
/// of it is new).
fn real_files_from(roots: &[&str], bytes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0usize;
    let mut n = 0usize;
    'roots: for root in roots {
        let mut stack = vec![PathBuf::from(root)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for path in entries {
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() && meta.len() > 0 && meta.len() < 20 * MB as u64 {
                    if std::fs::copy(&path, dir.path().join(format!("f{n}"))).is_ok() {
                        total += meta.len() as usize;
                        n += 1;
                    }
                    if total >= bytes {
                        break 'roots;
                    }
                }
            }
        }
    }
    let marker = format!("{}-{:?}", std::process::id(), std::time::Instant::now());
    std::fs::write(dir.path().join("marker"), marker).unwrap();
    dir
}

impl Bench<'_> {
    fn step(&self, side: &Side, source: &str, tag: &str, settings: &[(&str, &str)]) -> (Sample, u64) {
        let mut push = Step::aws(self.moto)
            .env("PLUGIN_SOURCE", source)
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_REGISTRY", side.host())
            .env("PLUGIN_REGION", testbed::REGION)
            .env("PLUGIN_TAGS", tag);
        for (name, value) in settings {
            push = push.env(name, value);
        }
        side.sent(|| measure(self.bin, &[], &step_env(&push)))
    }

    fn docker_push(&self, side: &Side, image: &Image, tag: &str) -> (Sample, u64) {
        self.tagged(side, image, tag, |target| {
            measure("docker", &["push", target], self.env)
        })
    }

    /// `docker push` as a CI job runs it: logged in by the job first (`aws ecr get-login-password |
    /// docker login`, the password on a pipe, against ECR's API at `endpoint`), timed together.
    fn login_and_push(&self, side: &Side, image: &Image, tag: &str, endpoint: &str) -> (Sample, u64) {
        self.tagged(side, image, tag, |target| {
            let job = format!(
                "{} ecr get-login-password --endpoint-url {endpoint} --region {} | docker login --username AWS \
                 --password-stdin {} >/dev/null 2>&1 && docker push {target}",
                self.aws,
                testbed::REGION,
                side.host()
            );
            measure("bash", &["-c", &job], self.env)
        })
    }

    /// `image` tagged `<side>/app:<tag>` for `push` (given that name), the bytes it sent up `side`'s link
    /// counted, and the local tag removed after.
    fn tagged(&self, side: &Side, image: &Image, tag: &str, push: impl FnOnce(&str) -> Sample) -> (Sample, u64) {
        let target = format!("{}/app:{tag}", side.host());
        testbed::docker(&["tag", &image.name, &target]);
        let pushed = side.sent(|| push(&target));
        testbed::docker(&["rmi", &target]);
        pushed
    }

    fn skopeo(&self, side: &Side, source: &str, tag: &str) -> (Sample, u64) {
        let auth = self.docker_config.join("config.json").display().to_string();
        let target = format!("docker://{}/app:{tag}", side.host());
        let args = [
            "copy",
            "--quiet",
            "--authfile",
            &auth,
            "--dest-tls-verify=false",
            source,
            &target,
        ];
        side.sent(|| measure("skopeo", &args, self.env))
    }

    /// `docker save` of `image` to nowhere: the floor of any push that reads the image out of the engine.
    fn export(&self, image: &Image) -> Sample {
        let save = format!("docker save {} > /dev/null", image.name);
        measure("bash", &["-c", &save], self.env)
    }

    /// [`step`](Self::step), with the CPU its registry spent meanwhile.
    fn step_served(&self, side: &Side, source: &str, tag: &str) -> ((Sample, u64), Duration) {
        let before = side.registry.cpu();
        let step = self.step(side, source, tag, &[]);
        (step, side.registry.cpu() - before)
    }

    /// How long `docker save` of `image` takes to its first byte: Docker 20.10 first writes every layer
    /// into a directory of its own, and no push that reads the image out of the engine has a byte sooner.
    fn export_first_byte(&self, image: &Image) -> Duration {
        use std::io::Read;
        let started = std::time::Instant::now();
        let mut save = std::process::Command::new("docker")
            .args(["save", &image.name])
            .env_clear()
            .envs(self.env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker save");
        let mut out = save.stdout.take().expect("piped");
        let mut buf = vec![0u8; 1 << 20];
        let mut first = None;
        while out.read(&mut buf).expect("docker save's output") > 0 {
            first.get_or_insert_with(|| started.elapsed());
        }
        assert!(
            save.wait().expect("docker save").success(),
            "docker save {}",
            image.name
        );
        first.expect("docker save wrote nothing")
    }
}

/// A row of the step against a peer, time and bytes; `met` judged by the caller.
fn row(what: String, step: (Sample, u64), peer_name: &str, peer: (Sample, u64), target: &str, met: bool) -> Row {
    Row {
        what,
        step: step.0,
        peer: Some((peer_name.into(), peer.0)),
        target: target.into(),
        met,
        sent: Some((step.1, peer.1)),
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn bytes_ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// The row of (a): the step against docker push, beside both floors: `docker save`, and `compressing`, the
/// floor of a push that reads the image out of the engine and compresses it itself (the export's first
/// byte, then the CPU the step and its registry spent, nearly all of it after that byte, over the cores;
/// the engine's own streaming, which shares those cores, is left out: a lower bound).
fn new_image_row(reach: &str, step: (Sample, u64), peer: (Sample, u64), save: Duration, compressing: Duration) -> Row {
    let (max, cap) = match reach {
        "loopback" => (0.6, "≤ 0.6 × docker push's time"),
        _ => (1.0, "≤ 1.0 × docker push's time"),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let time = ratio(step.0.time, peer.0.time);
    row(
        format!(
            "(a) new image of 6 layers, 165 MB of real files (Dockerfile), {reach}; floors: docker save {} ({:.2} × \
             docker push), and its first byte then the CPU of the step and its registry over {cores} cores {} \
             ({:.2} ×)",
            secs(save),
            ratio(save, peer.0.time),
            secs(compressing),
            ratio(compressing, peer.0.time)
        ),
        step,
        "docker push",
        peer,
        cap,
        time <= max,
    )
}

/// One row alone: `BENCH_ONLY=a`, the new image on loopback against docker push, beside its floors
/// (`BENCH_ONLY=a-link`: over the 25 MB/s link);
/// `BENCH_ONLY=c`, the rebuild through the engine on loopback (the step's own calls are all
/// that differs from docker push there); `BENCH_ONLY=c-far`, the same where each of those calls costs a
/// round trip of 30 ms, as to a region away; `BENCH_ONLY=e`, an OCI layout copied by the step and by
/// skopeo on loopback (`BENCH_ONLY=e-far`: with those round trips of 30 ms).
pub fn alone(bench: &Bench, only: &str) -> Vec<Row> {
    let files = AppFiles::new();
    let first = files.build();
    let side = || Side::start(4096 * MB, bench.docker_config);
    match only {
        "a" => vec![new_image(bench, &first, &side, "loopback")],
        "a-link" => {
            let behind_a_link = || Side::start(LINK_RATE, bench.docker_config);
            vec![new_image(bench, &first, &behind_a_link, "25 MB/s link")]
        }
        "zstd" => vec![zstd_image(bench, &first, &side, "loopback")],
        "zstd-link" => {
            let behind_a_link = || Side::start(LINK_RATE, bench.docker_config);
            vec![zstd_image(bench, &first, &behind_a_link, "25 MB/s link")]
        }
        "c" => rebuild_on_pulled(bench, &files, &first, &side, "loopback", &[]),
        "c-far" => rebuild_far(bench, &files, &first),
        "e-far" => vec![layout_far(bench, &first)],
        "f" => vec![archive_copy(bench, &first, &side, "loopback", &[])],
        "f-link" => {
            let behind_a_link = || Side::start(LINK_RATE, bench.docker_config);
            vec![archive_copy(bench, &first, &behind_a_link, "25 MB/s link", &[])]
        }
        "f-rebuild" => vec![archive_rebuild(bench, &files, &first, &side(), &side(), "loopback")],
        "f-rebuild-link" => {
            let (ours, theirs) = (
                Side::start(LINK_RATE, bench.docker_config),
                Side::start(LINK_RATE, bench.docker_config),
            );
            vec![archive_rebuild(bench, &files, &first, &ours, &theirs, "25 MB/s link")]
        }
        _ => vec![layout_copy(bench, &first, &side, "loopback", &[])],
    }
}

/// Every row of the shapes above, on loopback then over the link.
pub fn rows(bench: &Bench) -> Vec<Row> {
    let mut rows = Vec::new();
    let files = AppFiles::new();
    for (reach, rate) in [("loopback", 4096 * MB), ("25 MB/s link", LINK_RATE)] {
        eprintln!("bench: the shapes CI pushes, {reach}");
        let side = || Side::start(rate, bench.docker_config);
        let (ours, docker, skopeo) = (side(), side(), side());

        // (a) A new application image: three rounds (the first into the registries the rebuilds below
        // find it in, the others into fresh ones), medians.
        let first = files.build();
        let (mut steps, mut peers, mut copies, mut leveled) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut floors, mut owns, mut compressing) = (Vec::new(), Vec::new(), Vec::new());
        // The step's own transfer named (what `auto` weighs against the engine), at its default level and
        // at docker's.
        let own = [("PLUGIN_PUSH_VIA", "registry")];
        let level = [("PLUGIN_PUSH_VIA", "registry"), ("PLUGIN_COMPRESSION_LEVEL", "6")];
        let mut zstds = Vec::new();
        for round in 0..3 {
            let fresh = (round > 0).then(|| (side(), side(), side()));
            let (ours, docker, skopeo) = fresh.as_ref().map_or((&ours, &docker, &skopeo), |(a, b, c)| (a, b, c));
            let (step, served) = bench.step_served(ours, &first.name, "build-1");
            compressing.push(bench.export_first_byte(&first) + floor(step.0, served));
            steps.push(step);
            peers.push(bench.docker_push(docker, &first, "build-1"));
            copies.push(bench.skopeo(skopeo, &format!("docker-daemon:{}", first.name), "build-1"));
            // The own transfer, and with the level a slow link favours, each into a registry of its own.
            owns.push(bench.step(&side(), &first.name, "build-1", &own));
            leveled.push(bench.step(&side(), &first.name, "build-1", &level));
            zstds.push(bench.step(&side(), &first.name, "build-1", &ZSTD));
            floors.push(bench.export(&first));
        }
        let (step, peer, copied) = (middle(steps), middle(peers), middle(copies));
        compressing.sort();
        let (save, least) = (median(floors).time, compressing[1]);
        rows.push(new_image_row(reach, step, peer, save, least));
        rows.push(row(
            format!("(a) the same, against skopeo copy docker-daemon:, {reach}"),
            step,
            "skopeo copy",
            copied,
            "none (a second peer)",
            true,
        ));

        rows.push(row(
            format!("(a) the same, PLUGIN_PUSH_VIA=registry (the step's own transfer), {reach}"),
            middle(owns),
            "docker push",
            peer,
            "none (what auto weighs against the engine)",
            true,
        ));
        rows.push(row(
            format!("(a) the same, PLUGIN_PUSH_VIA=registry and PLUGIN_COMPRESSION_LEVEL=6, {reach}"),
            middle(leveled),
            "docker push",
            peer,
            "none (what level 6 costs and saves)",
            true,
        ));
        rows.push(zstd_row(reach, middle(zstds), peer));

        // (b) Rebuilds with only the app changed, on the same engine: three rounds, medians.
        let (mut steps, mut peers, mut floors) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = None;
        for round in 0..3 {
            let rebuilt = files.build();
            let tag = format!("build-{}", round + 2);
            let step = bench.step(&ours, &rebuilt.name, &tag, &[]);
            let peer = bench.docker_push(&docker, &rebuilt, &tag);
            floors.push(bench.export(&rebuilt));
            steps.push(step);
            peers.push(peer);
            last = Some(rebuilt);
        }
        // Against the floor: the median of each round's ratio (the step and `docker save` of the same
        // rebuild, one after the other), since the export's own time varies between rounds by more than
        // the step adds to it.
        let mut over: Vec<f64> = steps
            .iter()
            .zip(&floors)
            .map(|(s, f)| ratio(s.0.time, f.time))
            .collect();
        over.sort_by(f64::total_cmp);
        let over_floor = over[over.len() / 2];
        let (step, peer, floor) = (middle(steps), middle(peers), median(floors));
        let (time, bytes) = (ratio(step.0.time, peer.0.time), bytes_ratio(step.1, peer.1));
        // The floor is the target only for a push that pays it: where the step went through the engine (its
        // record of the previous build says the engine can skip what the registry holds), it read nothing out
        // of the engine, and its time is held to docker push's.
        let exported = !step.0.engine;
        let met = bytes <= 1.2 && (time <= 1.0 || (exported && floor.time > peer.0.time && over_floor <= 1.2));
        let path = if exported {
            "the step exports"
        } else {
            "the step went through the engine, so no floor applies"
        };
        rows.push(row(
            format!(
                "(b) rebuild, app changed, same engine (docker push remembers), {reach}; floor (docker save) {}: \
                 {over_floor:.2} × it (median of the rounds' ratios); {path}",
                secs(floor.time)
            ),
            step,
            "docker push",
            peer,
            "≤ 1.2 × bytes; ≤ 1.0 × time, or ≤ 1.2 × the floor where the floor is longer and the step pays it",
            met,
        ));

        // (d) The same image under a new tag.
        let last = last.unwrap();
        let again = bench.step(&ours, &last.name, "release", &[]);
        rows.push(Row {
            what: format!("(d) the same image under a new tag, {reach}"),
            step: again.0,
            peer: None,
            target: "≤ 0.3 s".into(),
            met: again.0.time <= Duration::from_millis(300),
            sent: Some((again.1, 0)),
        });

        // (b) Toward a registry this engine never pushed to: the previous build was put there by skopeo
        // (another runner), for each tool alike.
        let (ours_fresh, docker_fresh) = (side(), side());
        for fresh in [&ours_fresh, &docker_fresh] {
            bench.skopeo(fresh, &format!("docker-daemon:{}", first.name), "build-1");
        }
        let rebuilt = files.build();
        let step = bench.step(&ours_fresh, &rebuilt.name, "build-2", &[]);
        let peer = bench.docker_push(&docker_fresh, &rebuilt, "build-2");
        let (time, bytes) = (ratio(step.0.time, peer.0.time), bytes_ratio(step.1, peer.1));
        rows.push(row(
            format!("(b) rebuild, app changed, an engine with no record of the registry, {reach}"),
            step,
            "docker push",
            peer,
            "≤ 0.7 × time, ≤ 0.2 × bytes",
            time <= 0.7 && bytes <= 0.2,
        ));

        rows.extend(rebuild_on_pulled(bench, &files, &first, &side, reach, &[]));

        rows.push(layout_copy(bench, &first, &side, reach, &[]));
        rows.push(archive_copy(bench, &first, &side, reach, &[]));
        rows.push(archive_rebuild(bench, &files, &first, &side(), &side(), reach));
    }
    eprintln!("bench: the shapes CI pushes, 25 MB/s link with 30 ms round trips");
    rows.extend(rebuild_far(bench, &files, &files.build()));
    rows.push(layout_far(bench, &files.build()));
    rows
}

/// (e) The image as an OCI layout, no daemon: three rounds, each into fresh registries, medians;
/// `settings` are the step's own (its AWS endpoint, where that is far too).
fn layout_copy(bench: &Bench, first: &Image, side: &impl Fn() -> Side, reach: &str, settings: &[(&str, &str)]) -> Row {
    let layout = tempfile::tempdir().unwrap();
    let dir = format!("oci:{}:build-1", layout.path().display());
    let made = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", &format!("docker-daemon:{}", first.name), &dir])
        .status()
        .unwrap();
    assert!(made.success(), "skopeo copy to {dir}");
    // Three rounds, each into fresh registries, medians; with the floor of the step's CPU and its
    // registry's over the cores (the step hashes every blob and inflates every layer to check its
    // diff id, which skopeo does not).
    let (mut steps, mut peers, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for _ in 0..3 {
        let ours = side();
        let before = ours.registry.cpu();
        let step = bench.step(&ours, &dir, "build-1", settings);
        floors.push((step.0.cpu + ours.registry.cpu() - before) / cores);
        steps.push(step);
        peers.push(bench.skopeo(&side(), &dir, "build-1"));
    }
    floors.sort();
    let (step, peer, floor) = (middle(steps), middle(peers), floors[1]);
    let time = ratio(step.0.time, peer.0.time);
    row(
        format!("(e) an OCI layout of the new image (6 gzip layers), no daemon, {reach}"),
        step,
        "skopeo copy oci:",
        peer,
        &format!(
            "≤ 1.0 × skopeo's time (floor here: {:.2} ×, the CPU of the step and its registry over {cores} \
             cores)",
            ratio(floor, peer.0.time)
        ),
        time <= 1.0,
    )
}

/// (f) The image as `docker save` writes it (a docker-archive: every layer uncompressed), no daemon: the
/// step and skopeo (both compress each layer themselves) three rounds each, taking turns at going first,
/// each into a fresh registry, medians; `settings` are the step's own.
fn archive_copy(bench: &Bench, first: &Image, side: &impl Fn() -> Side, reach: &str, settings: &[(&str, &str)]) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    testbed::docker(&["save", "-o", archive.to_str().unwrap(), &first.name]);
    let source = format!("docker-archive:{}", archive.display());
    let (mut steps, mut peers) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (ours, theirs) = (side(), side());
        let (step, peer) = in_turn(
            round,
            || bench.step(&ours, &source, "build-1", settings),
            || bench.skopeo(&theirs, &source, "build-1"),
        );
        steps.push(step);
        peers.push(peer);
    }
    let (step, peer) = (middle(steps), middle(peers));
    row(
        format!("(f) a docker-archive of the new image (6 uncompressed layers), no daemon, {reach}"),
        step,
        "skopeo copy docker-archive:",
        peer,
        "≤ 1.0 × skopeo's time",
        ratio(step.0.time, peer.0.time) <= 1.0,
    )
}

/// (f) for a rebuild: the previous build's archive pushed by each tool (the step into `ours`, skopeo into
/// `theirs`), then three rebuilds' archives (only the app changed), medians. The step runs with
/// PLUGIN_CREATE_REPOSITORY=true, as CI configs mostly set it; skopeo finds what the registry holds in its
/// blob info cache (the diff id of each layer it compressed before), as on a runner that keeps its home.
fn archive_rebuild(bench: &Bench, files: &AppFiles, first: &Image, ours: &Side, theirs: &Side, reach: &str) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let archive = |image: &Image, name: &str| {
        let path = dir.path().join(name);
        testbed::docker(&["save", "-o", path.to_str().unwrap(), &image.name]);
        format!("docker-archive:{}", path.display())
    };
    let create = [("PLUGIN_CREATE_REPOSITORY", "true")];
    let previous = archive(first, "1.tar");
    bench.step(ours, &previous, "build-1", &create);
    bench.skopeo(theirs, &previous, "build-1");
    let (mut steps, mut peers) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let source = archive(&files.build(), &format!("{}.tar", round + 2));
        let tag = format!("build-{}", round + 2);
        let (step, peer) = in_turn(
            round,
            || bench.step(ours, &source, &tag, &create),
            || bench.skopeo(theirs, &source, &tag),
        );
        steps.push(step);
        peers.push(peer);
    }
    let (step, peer) = (middle(steps), middle(peers));
    let (time, bytes) = (ratio(step.0.time, peer.0.time), bytes_ratio(step.1, peer.1));
    row(
        format!("(f) the rebuild's docker-archive (app changed), PLUGIN_CREATE_REPOSITORY=true, no daemon, {reach}"),
        step,
        "skopeo copy docker-archive:",
        peer,
        "≤ 1.0 × skopeo's time, ≤ 1.2 × its bytes",
        time <= 1.0 && bytes <= 1.2,
    )
}

/// (a) alone, on loopback or over the link (`reach`): three rounds of the step and docker push, each into
/// fresh registries, beside both floors ([`new_image_row`]), medians.
fn new_image(bench: &Bench, first: &Image, side: &impl Fn() -> Side, reach: &str) -> Row {
    let (mut steps, mut peers, mut floors, mut compressing) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let (ours, docker) = (side(), side());
        let ((step, served), peer) = in_turn(
            round,
            || bench.step_served(&ours, &first.name, "build-1"),
            || bench.docker_push(&docker, first, "build-1"),
        );
        compressing.push(bench.export_first_byte(first) + floor(step.0, served));
        steps.push(step);
        peers.push(peer);
        floors.push(bench.export(first));
    }
    let (step, peer) = (middle(steps), middle(peers));
    compressing.sort();
    new_image_row(reach, step, peer, median(floors).time, compressing[1])
}

/// The step's settings for zstd: `auto` sends it through the step's own transfer.
const ZSTD: [(&str, &str); 1] = [("PLUGIN_COMPRESSION", "zstd")];

/// (a) in zstd against docker push (gzip, as it always sends): what the opt-in costs and saves.
fn zstd_row(reach: &str, step: (Sample, u64), peer: (Sample, u64)) -> Row {
    row(
        format!("(a) the same, PLUGIN_COMPRESSION=zstd (opt-in: Docker Engine 20.10 cannot pull it), {reach}"),
        step,
        "docker push",
        peer,
        "none (what zstd costs and saves)",
        true,
    )
}

/// `BENCH_ONLY=zstd` (or `zstd-link`): row (a) in zstd alone, three rounds taking turns with docker push.
fn zstd_image(bench: &Bench, first: &Image, side: &impl Fn() -> Side, reach: &str) -> Row {
    let (mut steps, mut peers) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (ours, docker) = (side(), side());
        let (step, peer) = in_turn(
            round,
            || bench.step(&ours, &first.name, "build-1", &ZSTD),
            || bench.docker_push(&docker, first, "build-1"),
        );
        steps.push(step);
        peers.push(peer);
    }
    zstd_row(reach, middle(steps), middle(peers))
}

/// (c) The previous build pulled from the destination (`--cache-from`), a rebuild pushed by each tool:
/// five rounds, medians, the tools taking turns at going first; `settings` are the step's own (its AWS
/// endpoint, where that is behind a link too). Two rows: against docker push logged in beforehand (the
/// target's), and against docker push as a CI job runs it, after `aws ecr get-login-password | docker
/// login` (no target: what the user waits for).
fn rebuild_on_pulled(
    bench: &Bench,
    files: &AppFiles,
    first: &Image,
    side: &impl Fn() -> Side,
    reach: &str,
    settings: &[(&str, &str)],
) -> Vec<Row> {
    let cached = side();
    let previous = format!("{}/app:cache", cached.host());
    testbed::docker(&["tag", &first.name, &previous]);
    measure("docker", &["push", &previous], bench.env);
    testbed::docker(&["rmi", &previous]);
    measure("docker", &["pull", "-q", &previous], bench.env);
    // ECR's API as the step reaches it (the same link).
    let endpoint = settings
        .iter()
        .find(|(name, _)| *name == "AWS_ENDPOINT_URL")
        .map_or(bench.moto.url.clone(), |(_, url)| url.to_string());
    // Five rounds, medians (all push through the engine: single runs differ by more than they do; docker
    // push alone ran 0.91 to 1.25 s here), each of the three going first in turn.
    let (mut steps, mut peers, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        let (ours, theirs, job) = (files.build(), files.build(), files.build());
        for turn in 0..3 {
            match (round + turn) % 3 {
                0 => steps.push(bench.step(&cached, &ours.name, &format!("step-{round}"), settings)),
                1 => peers.push(bench.docker_push(&cached, &theirs, &format!("peer-{round}"))),
                _ => jobs.push(bench.login_and_push(&cached, &job, &format!("job-{round}"), &endpoint)),
            }
        }
    }
    let (step, peer, job) = (middle(steps), middle(peers), middle(jobs));
    let (time, bytes) = (ratio(step.0.time, peer.0.time), bytes_ratio(step.1, peer.1));
    let rows = vec![
        row(
            format!("(c) rebuild on the previous build pulled from the destination, PLUGIN_PUSH_VIA=auto, {reach}"),
            step,
            "docker push",
            peer,
            "≤ 1.0 × time, ≤ 1.2 × bytes",
            time <= 1.0 && bytes <= 1.2,
        ),
        row(
            format!("(c) the same, against docker push as a CI job runs it, logged in first, {reach}"),
            step,
            "aws ecr get-login-password | docker login, then docker push",
            job,
            "none (the step signs in within its time; the row above holds the target)",
            true,
        ),
    ];
    testbed::docker(&["rmi", &previous]);
    rows
}

/// Row (e) where every round trip takes 30 ms, to the registry and to ECR's API (the step signs in there;
/// skopeo was given its credentials), as to a region away: what checking the layout while signing in saves.
fn layout_far(bench: &Bench, first: &Image) -> Row {
    let delay = Duration::from_millis(15);
    let moto = bench.moto.url.trim_start_matches("http://");
    let api = Link::start_with_delay(moto, 4096 * MB, delay);
    let endpoint = format!("http://{}", api.host);
    let side = || Side::start_far(4096 * MB, delay, bench.docker_config);
    let reach = "30 ms round trips to the registry and to ECR's API";
    layout_copy(bench, first, &side, reach, &[("AWS_ENDPOINT_URL", &endpoint)])
}

/// Row (c) over the link where every round trip takes 30 ms, to the registry and to ECR's API (the step
/// signs in there; docker push was logged in before): what the step's own calls cost as to a region away.
fn rebuild_far(bench: &Bench, files: &AppFiles, first: &Image) -> Vec<Row> {
    let delay = Duration::from_millis(15);
    let moto = bench.moto.url.trim_start_matches("http://");
    let api = Link::start_with_delay(moto, 4096 * MB, delay);
    let endpoint = format!("http://{}", api.host);
    let side = || Side::start_far(LINK_RATE, delay, bench.docker_config);
    let reach = "25 MB/s link, 30 ms round trips to the registry and to ECR's API";
    rebuild_on_pulled(bench, files, first, &side, reach, &[("AWS_ENDPOINT_URL", &endpoint)])
}

/// The middle run of several by time, with its bytes.
fn middle(mut runs: Vec<(Sample, u64)>) -> (Sample, u64) {
    runs.sort_by_key(|(s, _)| s.time);
    runs[runs.len() / 2]
}
