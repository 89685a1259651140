//! The benchmark: the step side by side with the tools users would run instead, in one run on one machine,
//! against the local testbed (Docker Engine, distribution registries, moto). Absolute times vary run to run
//! here, so the table reports ratios measured in the same run. Run it with `scripts/bench`; it writes
//! BENCHMARKS.md. Every command runs under `/usr/bin/time -v` for its peak RSS.
//! `BENCH_ONLY=ci` (the shapes CI pushes), `BENCH_ONLY=a`, `c` or `e` (row (a), (c) or (e) on loopback),
//! `BENCH_ONLY=a-link` (row (a) over the 25 MB/s link), `BENCH_ONLY=c-far` or `e-far` (row (c) or (e) with
//! 30 ms round trips), `BENCH_ONLY=f`, `f-link`, `f-rebuild` or `f-rebuild-link` (row (f), a docker archive
//! pushed with no daemon, of a new image or of a rebuild), `BENCH_ONLY=zstd` or `zstd-link` (row (a) with
//! PLUGIN_COMPRESSION=zstd), `BENCH_ONLY=soci`
//! `BENCH_ONLY=three` (the push to 3 destinations against 1, on loopback) or `BENCH_ONLY=engine` (the new
//! 200 MB image through the engine against docker push) print those rows alone and write nothing.

#[path = "bench/ci.rs"]
mod ci;
#[path = "bench/soci.rs"]
mod soci;
#[path = "../tests/testbed/mod.rs"]
mod testbed;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbed::{DEFAULT_ACCOUNT, Image, Link, Moto, Registry, Step};

const MB: usize = 1_000_000;

/// The rate of each network link to a registry in the rows "over links" (bytes a second): 25 MB/s, a
/// CI runner's upload to an ECR region.
const LINK_RATE: usize = 25 * MB;

/// The image sizes (MB of real files) of the growth table and plot.
const GROWTH_SIZES: [usize; 3] = [50, 200, 1000];

/// One measured command: wall time and peak RSS.
#[derive(Clone, Copy)]
struct Sample {
    time: Duration,
    rss_mb: f64,
    /// User and system CPU time of the command.
    cpu: Duration,
    /// The step's output says `PLUGIN_PUSH_VIA=auto` pushed through the engine (its `via:` line), so it
    /// did not read the image out of the engine and no export floor applies to it.
    engine: bool,
}

/// Run `program args` with `env` under /usr/bin/time -v; panics when it fails.
fn measure(program: &str, args: &[&str], env: &BTreeMap<String, String>) -> Sample {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(program)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("/usr/bin/time (Debian package time)");
    let time = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Sample {
        time,
        rss_mb: field("Maximum resident set size (kbytes): ") / 1024.0,
        cpu: Duration::from_secs_f64(field("User time (seconds): ") + field("System time (seconds): ")),
        engine: String::from_utf8_lossy(&out.stdout).contains(ecr_step::report::VIA_ENGINE)
            || stderr.contains(ecr_step::report::VIA_ENGINE),
    }
}

fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by_key(|s| s.time);
    samples[samples.len() / 2]
}

/// The environment of one run of the step. Its state directory (the record of the engine's pushes) is the
/// bench's own, kept across the bench's runs as a persistent runner keeps its home.
fn step_env(step: &Step) -> BTreeMap<String, String> {
    let mut env = step.envs().clone();
    env.insert("XDG_STATE_HOME".into(), bench_state().display().to_string());
    env
}

/// The bench's state directory: empty at its start (target/bench-state).
fn bench_state() -> &'static Path {
    static STATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    STATE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-state");
        let _ = std::fs::remove_dir_all(&dir);
        dir
    })
}

struct Row {
    what: String,
    step: Sample,
    peer: Option<(String, Sample)>,
    target: String,
    met: bool,
    /// Bytes sent up the link by the step and by the peer, where the row counts them.
    sent: Option<(u64, u64)>,
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    let binary =
        PathBuf::from(std::env::var("ECR_STEP_BIN").expect("ECR_STEP_BIN: the release binary (scripts/bench sets it)"));
    // Registries keep their files on a tmpfs where the machine has one: ECR's storage is not on the runner's
    // disk, and this machine's disk costs kernel CPU the step would share (the rows "on this machine's
    // disk" show how much).
    let storage = tempfile::tempdir_in("/dev/shm").ok();
    if let Some(dir) = &storage {
        testbed::store_under(dir.path());
    }
    let stored = match &storage {
        Some(_) => "a tmpfs (/dev/shm)",
        None => "this machine's disk (no /dev/shm here)",
    };
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".testbed/venv/bin");
    let aws = venv.join("aws").display().to_string();
    let moto = Moto::start();
    let config = tempfile::tempdir().unwrap();
    let config_dir = config.path().display().to_string();
    let mut rows: Vec<Row> = Vec::new();
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), std::env::var("PATH").unwrap());
    env.insert("AWS_ACCESS_KEY_ID".to_string(), testbed::ACCESS_KEY.to_string());
    env.insert("AWS_SECRET_ACCESS_KEY".to_string(), testbed::SECRET_KEY.to_string());
    env.insert("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string());
    env.insert("DOCKER_CONFIG".to_string(), config_dir.clone());
    let bin = binary.display().to_string();
    let ci = ci::Bench {
        bin: &bin,
        aws: &aws,
        moto: &moto,
        env: &env,
        docker_config: config.path(),
    };
    if std::env::var("BENCH_ONLY").as_deref() == Ok("soci") {
        let row = soci::row(&bin, &moto);
        let peer = row
            .peer
            .as_ref()
            .map(|(_, p)| format!("{} ({:.1} MB)", secs(p.time), p.rss_mb))
            .unwrap_or_default();
        println!(
            "| {} | {} ({:.1} MB) | {peer} | {} | {} |",
            row.what,
            secs(row.step.time),
            row.step.rss_mb,
            row.target,
            row.met
        );
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("three") {
        let (one, three, floor) = push_one_and_three(&bin, &moto, Reach::Loopback);
        let row = spread_row(
            "push 200 MB of real files to 3 destinations (own transfer)",
            one,
            three,
            floor,
        );
        println!(
            "| {} | {} | {} | {:.2} | {} | {} |",
            row.what,
            secs(three.time),
            secs(one.time),
            three.time.as_secs_f64() / one.time.as_secs_f64(),
            row.target,
            row.met
        );
        return;
    }
    let only = std::env::var("BENCH_ONLY");
    if matches!(
        only.as_deref(),
        Ok("ci"
            | "a"
            | "a-link"
            | "c"
            | "c-far"
            | "e"
            | "e-far"
            | "f"
            | "f-link"
            | "f-rebuild"
            | "f-rebuild-link"
            | "zstd"
            | "zstd-link")
    ) {
        // The rows of the shapes CI pushes alone (or row (a), (c) or (e) alone), printed (BENCHMARKS.md is
        // written by a whole run only).
        let rows = match only.as_deref() {
            Ok(
                one @ ("a" | "a-link" | "c" | "c-far" | "e" | "e-far" | "f" | "f-link" | "f-rebuild" | "f-rebuild-link"
                | "zstd" | "zstd-link"),
            ) => ci::alone(&ci, one),
            _ => ci::rows(&ci),
        };
        for row in rows {
            let peer = row
                .peer
                .as_ref()
                .map(|(n, p)| format!("{n} {}", secs(p.time)))
                .unwrap_or_default();
            println!(
                "| {} | {} | {peer} | {} | {} | {} |",
                row.what,
                secs(row.step.time),
                sent(&row),
                row.target,
                row.met
            );
        }
        return;
    }

    // Login: the step's login mode against `aws ecr get-login-password | docker login`.
    eprintln!("bench: login");
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let login_step = Step::login(&moto, &registry, &config_dir);
    let step = median((0..5).map(|_| measure(&bin, &[], &step_env(&login_step))).collect());
    let pipe = format!(
        "{aws} ecr get-login-password --endpoint-url {} --region {} | docker login --username AWS --password-stdin {} >/dev/null 2>&1",
        moto.url,
        testbed::REGION,
        registry.host
    );
    let peer = median((0..5).map(|_| measure("bash", &["-c", &pipe], &env)).collect());
    // Push of a new 200 MB image: the step against `docker push` (after docker login, above); three rounds,
    // alternating who goes first, each push of a fresh image.
    let versus = Versus {
        bin: &bin,
        moto: &moto,
        registry: &registry,
        env: &env,
    };
    let through_the_engine = || versus.docker_push("push-step", "engine", || Image::random(200 * MB), |_, _| {});
    if std::env::var("BENCH_ONLY").as_deref() == Ok("engine") {
        let (step, peer, _) = through_the_engine();
        println!(
            "| push, new 200 MB image, PLUGIN_PUSH_VIA=engine | {} | docker push {} | {:.2} |",
            secs(step.time),
            secs(peer.time),
            step.time.as_secs_f64() / peer.time.as_secs_f64()
        );
        return;
    }
    rows.push(ratio_row(
        "login",
        step,
        "aws ecr get-login-password | docker login",
        peer,
        0.2,
    ));

    eprintln!("bench: push 200 MB");
    let (step, peer, _) = through_the_engine();
    rows.push(ratio_row(
        "push, new 200 MB image, PLUGIN_PUSH_VIA=engine",
        step,
        "docker push",
        peer,
        1.05,
    ));

    // The step's own transfer (PLUGIN_PUSH_VIA=registry) against `docker push`, with random data and with a
    // layer made from real files of this machine, three rounds each, alternating who goes first.
    for (content, make) in [
        ("random data", Image::random as fn(usize) -> Image),
        ("real files", real_files_image as fn(usize) -> Image),
    ] {
        eprintln!("bench: push 200 MB of {content} through the step's own transfer");
        let repo = format!("own-{}", content.replace(' ', "-"));
        let mut again = None;
        let (step, peer, least) = versus.docker_push(
            &repo,
            "registry",
            || make(200 * MB),
            |round, push| {
                if round == 0 && content == "real files" {
                    // An unchanged image again: nothing compressed or uploaded but the check.
                    again = Some(measure(&bin, &[], &step_env(push)));
                }
            },
        );
        if let Some(again) = again {
            rows.push(Row {
                what: "re-push of an unchanged 200 MB image (own transfer)".into(),
                step: again,
                peer: None,
                target: "≤ 0.3 s".into(),
                met: again.time <= Duration::from_millis(300),
                sent: None,
            });
        }
        let mut row = ratio_row(
            &format!("push, new 200 MB image of {content}, PLUGIN_PUSH_VIA=registry"),
            step,
            "docker push",
            peer,
            0.4,
        );
        row.target = format!(
            "≤ 0.4 × peer (floor here: {:.2} ×, the CPU of the step, the registry and the engine's export)",
            least.as_secs_f64() / peer.time.as_secs_f64()
        );
        rows.push(row);
    }

    rows.extend(ci::rows(&ci));
    eprintln!("bench: PLUGIN_SOCI on a 1 GB image");
    rows.push(soci::row(&bin, &moto));

    // Push 3 destinations against 1 (the own transfer, 200 MB of real files, each into fresh registries):
    // one compression, uploads side by side.
    eprintln!("bench: push to 3 destinations");
    spread_rows(
        &mut rows,
        "push 200 MB of real files to 3 destinations (own transfer)",
        |reach| push_one_and_three(&bin, &moto, reach),
    );

    // An image built on a base pulled from the registry (200 MB of real files) with a new 30 MB layer of
    // real files: the default (PLUGIN_PUSH_VIA=auto, which picks the engine here) and the step's own
    // transfer, each against docker push of another such image (three rounds, alternating).
    eprintln!("bench: push of an image on a pulled base");
    let base = format!("{}/bench-base:1", registry.host);
    let built_base = real_files_image(200 * MB);
    registry.docker(&["tag", &built_base.name, &base]);
    registry.docker(&["push", &base]);
    registry.docker(&["rmi", "-f", &built_base.id]);
    registry.docker(&["pull", "-q", &base]);
    let on_base = || {
        let layer = real_files_dir(30 * MB);
        Image::build(&base, &[("app", layer.path().to_str().unwrap())])
    };
    for (via, max_ratio) in [("auto", 1.05), ("registry", f64::INFINITY)] {
        let (step, peer, _) = versus.docker_push(&format!("onbase-{via}"), via, on_base, |_, _| {});
        let mut row = ratio_row(
            &format!("push, new image on a pulled 200 MB base (+30 MB of real files), PLUGIN_PUSH_VIA={via}"),
            step,
            "docker push",
            peer,
            max_ratio,
        );
        if via == "registry" {
            row.target = "none (why auto takes the engine here)".into();
        }
        rows.push(row);
    }
    registry.docker(&["rmi", "-f", &base]);

    // How the cost grows with the image: one image of real files per size, pushed by each tool into a
    // registry of its own (so no tool finds another's blobs), after a login to it.
    let mut growth: Vec<(usize, Sample, Sample, Sample)> = Vec::new();
    for size in GROWTH_SIZES {
        eprintln!("bench: growth, {size} MB of real files");
        let image = real_files_image(size * MB);
        let (ours, docker, skopeo) = (
            Registry::start(DEFAULT_ACCOUNT),
            Registry::start(DEFAULT_ACCOUNT),
            Registry::start(DEFAULT_ACCOUNT),
        );
        for r in [&docker, &skopeo] {
            measure(&bin, &[], &step_env(&Step::login(&moto, r, &config_dir)));
        }
        let step = measure(
            &bin,
            &[],
            &step_env(&Step::push(&moto, &ours, &image, "app").env("PLUGIN_TAGS", "v1")),
        );
        let target = format!("{}/app:v1", docker.host);
        testbed::docker(&["tag", &image.name, &target]);
        let pushed = measure("docker", &["push", &target], &env);
        let auth = format!("{config_dir}/config.json");
        let copied = measure(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--authfile",
                &auth,
                "--dest-tls-verify=false",
                &format!("docker-daemon:{}", image.name),
                &format!("docker://{}/app:v1", skopeo.host),
            ],
            &env,
        );
        growth.push((size, step, pushed, copied));
    }
    for &(size, step, pushed, _) in growth.iter().filter(|g| g.0 >= 1000) {
        let mut row = ratio_row(
            &format!("push, new {} GB image of real files (own transfer)", size / 1000),
            step,
            "docker push",
            pushed,
            0.4,
        );
        row.target = "≤ 0.4 × peer, peak RSS ≤ 64 MB".into();
        row.met = row.met && step.rss_mb <= 64.0;
        rows.push(row);
    }

    // From docker save's archive with no daemon: the step against skopeo copy docker-archive: (both compress
    // in parallel and upload themselves).
    eprintln!("bench: push from docker-archive");
    let (mut steps, mut peers) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let image = real_files_image(200 * MB);
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        testbed::docker(&["save", "-o", archive.to_str().unwrap(), &image.name]);
        let push = Step::aws(&moto)
            .env("PLUGIN_SOURCE", &format!("docker-archive:{}", archive.display()))
            .env("PLUGIN_REPO", &format!("archive{round}"))
            .env("PLUGIN_REGISTRY", &registry.host)
            .env("PLUGIN_REGION", testbed::REGION);
        let auth = format!("{config_dir}/config.json");
        let peer_target = format!("docker://{}/archive-peer{round}:v1", registry.host);
        let source = format!("docker-archive:{}", archive.display());
        let theirs = || {
            measure(
                "skopeo",
                &[
                    "copy",
                    "--quiet",
                    "--authfile",
                    &auth,
                    "--dest-tls-verify=false",
                    &source,
                    &peer_target,
                ],
                &env,
            )
        };
        let (step, peer) = in_turn(round, || measure(&bin, &[], &step_env(&push)), theirs);
        steps.push(step);
        peers.push(peer);
    }
    rows.push(ratio_row(
        "push from docker-archive: (200 MB of real files), no daemon",
        median(steps),
        "skopeo copy docker-archive:",
        median(peers),
        1.0,
    ));

    // Promote within one registry, 200 MB and 1 GB: the step against skopeo copy.
    let skopeo = |from: &str, to: &str| -> Sample {
        let auth = format!("{config_dir}/config.json");
        measure(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--authfile",
                &auth,
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{from}"),
                &format!("docker://{to}"),
            ],
            &env,
        )
    };
    let promote = |target: &Registry, source: &str, repo: &str| Step::promote(&moto, &target.host, source, repo, "v1");
    let mut same_registry = BTreeMap::new();
    for size in [200, 1000] {
        eprintln!("bench: promote {size} MB within a registry");
        let image = Image::random(size * MB);
        let seed_repo = format!("seed{size}");
        Step::push(&moto, &registry, &image, &seed_repo)
            .env("PLUGIN_TAGS", "v1")
            .run()
            .success();
        let source = format!("{}/{seed_repo}:v1", registry.host);
        let step = measure(
            &bin,
            &[],
            &step_env(&promote(&registry, &source, &format!("promoted{size}"))),
        );
        let peer = skopeo(&source, &format!("{}/skopeo{size}:v1", registry.host));
        same_registry.insert(size, step);
        rows.push(ratio_row(
            &format!("promote {size} MB to another repository, same registry"),
            step,
            "skopeo copy",
            peer,
            0.2,
        ));
    }
    let (small, large) = (same_registry[&200], same_registry[&1000]);
    rows.push(Row {
        what: "promote 1 GB vs 200 MB, same registry (step)".into(),
        step: large,
        peer: Some(("step, 200 MB".into(), small)),
        target: "≤ 2.0 × the 200 MB time".into(),
        met: large.time.as_secs_f64() <= 2.0 * small.time.as_secs_f64(),
        sent: None,
    });

    // Promote 1 GB across registries: the step against skopeo copy (three rounds, alternating who goes first,
    // each into fresh registries), and the step's peak RSS.
    eprintln!("bench: promote 1 GB across registries");
    let source = format!("{}/seed1000:v1", registry.host);
    let (mut steps, mut peers) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (far_step, far_peer) = (Registry::start(DEFAULT_ACCOUNT), Registry::start(DEFAULT_ACCOUNT));
        measure(&bin, &[], &step_env(&Step::login(&moto, &far_peer, &config_dir)));
        let ours = || measure(&bin, &[], &step_env(&promote(&far_step, &source, "app")));
        let theirs = || skopeo(&source, &format!("{}/app:v1", far_peer.host));
        let (step, peer) = in_turn(round, ours, theirs);
        steps.push(step);
        peers.push(peer);
    }
    let step = median(steps.clone());
    let peak = steps.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
    let mut row = ratio_row(
        "promote 1 GB across registries",
        step,
        "skopeo copy",
        median(peers),
        1.0,
    );
    row.target = "≤ 1.0 × peer, peak RSS ≤ 64 MB".into();
    row.met = row.met && peak <= 64.0;
    rows.push(row);

    // Promote 200 MB to 3 destinations against a single destination (both registry to registry).
    eprintln!("bench: promote to 3 destinations");
    let source = format!("{}/seed200:v1", registry.host);
    spread_rows(&mut rows, "promote 200 MB to 3 destinations", |reach| {
        promote_one_and_three(&bin, &moto, &registry, &source, reach)
    });

    // Start-up to the first network call, and rejecting a bad setting.
    eprintln!("bench: start-up");
    let startup = median(
        (0..10)
            .map(|_| Sample {
                time: first_call(&bin),
                rss_mb: 0.0,
                cpu: Duration::ZERO,
                engine: false,
            })
            .collect(),
    )
    .time;
    rows.push(Row {
        what: "start-up to the first network call".into(),
        step: Sample {
            time: startup,
            rss_mb: 0.0,
            cpu: Duration::ZERO,
            engine: false,
        },
        peer: None,
        target: "≤ 20 ms".into(),
        met: startup <= Duration::from_millis(20),
        sent: None,
    });
    let bad = Step::new()
        .env("PLUGIN_SOURCE", "app")
        .env("PLUGIN_REPO", "Bad Repo")
        .env("PLUGIN_REGION", "us-east-1");
    let mut bad_env = step_env(&bad);
    bad_env.insert("PATH".into(), std::env::var("PATH").unwrap());
    let rejected = median((0..10).map(|_| measure_failing(&bin, &bad_env)).collect());
    rows.push(Row {
        what: "rejection of a bad setting".into(),
        step: rejected,
        peer: None,
        target: "≤ 20 ms".into(),
        met: rejected.time <= Duration::from_millis(20),
        sent: None,
    });

    // Sizes.
    eprintln!("bench: image");
    let image = testbed::build_step_image(&binary, false);
    let image_mb = testbed::docker(&["image", "inspect", "-f", "{{.Size}}", &image.name])
        .trim()
        .parse::<f64>()
        .unwrap()
        / 1e6;
    let binary_mb = std::fs::metadata(&binary).unwrap().len() as f64 / 1e6;

    let mut md = String::new();
    writeln!(md, "# Benchmarks\n").unwrap();
    writeln!(
        md,
        "Measured in one run by `scripts/bench` (which runs `cargo run --release --example bench`) on this"
    )
    .unwrap();
    writeln!(
        md,
        "project's machine (2 cores), against the local testbed: Docker Engine, CNCF distribution registries and moto"
    )
    .unwrap();
    writeln!(
        md,
        "on loopback. Times are medians of 5 (login), 10 (start-up) or 3 (push, promote across registries, 3 destinations)\nruns, single runs otherwise (promote within a registry); ratios compare"
    )
    .unwrap();
    writeln!(
        md,
        "runs of the same session. Peak RSS from `/usr/bin/time -v` (for a pipeline, its largest process). The\n\
         registries keep their files on {stored}, except in the rows that say otherwise.\n"
    )
    .unwrap();
    writeln!(
        md,
        "| what | step | step RSS | peer | peer time | peer RSS | ratio | sent (step / peer) | target | met |"
    )
    .unwrap();
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in &rows {
        let (peer, peer_time, peer_rss, ratio) = match &r.peer {
            Some((name, p)) => (
                name.clone(),
                secs(p.time),
                format!("{:.1} MB", p.rss_mb),
                format!("{:.2}", r.step.time.as_secs_f64() / p.time.as_secs_f64()),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        let rss = if r.step.rss_mb > 0.0 {
            format!("{:.1} MB", r.step.rss_mb)
        } else {
            "—".into()
        };
        let time = if r.step.time < Duration::from_millis(100) {
            format!("{:.1} ms", r.step.time.as_secs_f64() * 1000.0)
        } else {
            secs(r.step.time)
        };
        let met = if r.met { "yes" } else { "no" };
        writeln!(
            md,
            "| {} | {time} | {rss} | {peer} | {peer_time} | {peer_rss} | {ratio} | {} | {} | {met} |",
            r.what,
            sent(r),
            r.target
        )
        .unwrap();
    }
    writeln!(
        md,
        "| container image size | {image_mb:.1} MB | | | | | | | ≤ 25 MB | {} |",
        if image_mb <= 25.0 { "yes" } else { "no" }
    )
    .unwrap();
    writeln!(md, "| release binary size | {binary_mb:.1} MB | | | | | | | | |").unwrap();
    md.push_str(
        "\nHow the images are made: *random data* is one layer of bytes from /dev/urandom (`docker import`), the \
         worst case for gzip; *real files* is one layer of files copied from this machine's /usr/lib, /usr/share \
         and /usr/bin (libraries, binaries, documentation) up to the size named, with a marker file so every \
         image is new. The container image is the Dockerfile's FROM scratch image around the release binary.\n\n\
         The step's own transfer (PLUGIN_PUSH_VIA=registry): the engine's export streams into the step, \
         which gzip-compresses each layer as it is read (1 MiB blocks on every core, pigz's scheme: flate2 on \
         zlib-rs, each block primed with the previous block's last 32 KiB; a block of incompressible bytes is \
         stored), so the digests do not depend on the number of cores, and each layer's upload follows its \
         compression (chunked, closed with the digest). The level: with a layer of 32 MiB or more to compress, \
         the one the upload measured while the export starts favours (1 MiB into an upload session it \
         cancels, counted in *sent*): level 1 on loopback, level 6 over the 25 MB/s links (the \
         `compression:` line); else level 2 for layers under 32 MiB (a rebuild's app) and 1 above. \
         Nothing uncompressed is written to disk. \
         An image on a pulled base: the base (200 MB of real files, as above) is pushed by docker push, \
         removed and pulled back, so the engine knows it by its digest in the registry; each image adds a \
         layer of 30 MB of real files (docker build). The engine reads only that layer; the step's own \
         transfer must export the whole image (the base's layers are then mounted, not compressed), which \
         is why PLUGIN_PUSH_VIA=auto takes the engine for such an image.\n\n\
         The shapes CI pushes, rows (a) to (f), each on loopback and over a 25 MB/s link (each registry behind \
         a forwarder that counts the bytes sent up it: the column *sent*). The image is built by a Dockerfile \
         (legacy builder) from real files of this machine: a shell layer, a system layer (90 MB of /usr/lib), \
         a dependency layer (60 MB of /usr/share), configuration (0.5 MB of /etc), assets (2 MB) and the app \
         on top (12 MB of programs), 165 MB in six layers; a rebuild changes only the app. Rows (a), (b), \
         (e) and (f) are medians of three rounds and (c) of five (each of (a), (e) and (f) into fresh registries; docker \
         push's time for (a) varied from 4.0 to 7.4 s between single runs; in (c) the two tools take turns \
         at going first), (d) a single run. Row (c) runs once more over the link with round trips of 30 ms \
         (15 ms each way, a new connection's first byte a round trip later), to the registry and to ECR's API \
         (moto behind a link of its own): the step signs in there and reads its tag back, docker push was \
         logged in before, so that row shows what the step's own round trips cost as to a region away. The step keeps its state directory (PLUGIN_STATE_DIR, the record of the \
         engine's pushes) across the bench's runs, as a persistent runner keeps its home, empty at the start. In the export of an image, the \
         engine (Docker 20.10) writes every layer into a directory of its own before the first byte (1 to \
         3 s of the floor here, with the host's speed), so no push that reads the image out of the engine starts sooner: rows (a) \
         and (b) show that floor (`docker save` to /dev/null of the same image, in the same rounds); where \
         docker push of a new image takes less than the floor divided by the target, no export can meet it. \
         Row (a) gives a second floor, of a push that compresses the export itself: the export's first byte, \
         then the CPU the step and its registry spent, over the cores (the engine's own streaming, which \
         shares them, left out: a lower bound); the step compresses at level 1 there, its fastest, so a \
         target below that floor cannot be met on this machine. \
         Over the link, a rebuild's new layer is sent as the export reaches it (9.3 MB, 0.37 s at 25 MB/s), \
         and `docker save` writes layers in the order of their directories' names (random against the \
         stack), so in a round where it comes last those bytes follow the floor. The step reads the layers a destination holds and drops them \
         unhashed, and compresses a new layer under 32 MiB beside the rest of the stream (read into memory \
         from the export, read at its place in an archive file). An OCI layout's blobs are all hashed and its layers inflated to check their diff ids (work \
         skopeo does not do; a layer's diff id is hashed on a second thread as it inflates); its blobs upload \
         meanwhile, each closed once every check has passed, \
         and row (e) gives the floor of that work with its registry's on these cores. Which tool each shape \
         favours: a new image of several layers favours the step on loopback (it compresses every layer on \
         every core; docker push compresses a layer per thread), while over a link bytes decide: the step's \
         own transfer first waits for the export (the rows with PLUGIN_PUSH_VIA=registry show it, at the \
         level the link picks, 1 on loopback and 6 over the link, and at level 6 named), so \
         PLUGIN_PUSH_VIA=auto, the rows' default, on a fresh runner measures the upload (1 MiB into an upload \
         session it cancels, counted in *sent*) and over the 25 MB/s link pushes a new image through the \
         engine, as docker push does; once the state directory names this engine (an earlier row noted it, as \
         on a runner that keeps its engine and home) it also counts the image's rebuilds: after the step's own \
         transfer each rebuild would export the whole image again, after docker push the engine reads only the \
         new layer, so a new image of several layers goes through the engine there too, once both ways' \
         paces on this engine are noted (a way not yet taken on a runner is tried once, so one of the three \
         rounds of (a) may go by the step's own transfer), and where at those paces docker push finishes \
         first at any rate, without measuring the upload (nor sending its 1 MiB; *sent* is the bytes of the \
         round of median time, so it shows whether that round measured); a rebuild on an engine that \
         pushed the previous build favours docker push, which reads only the new layer while any push that \
         exports the image pays for `docker save` (the floor, shown in the row): where the step pushed that \
         previous build through the engine its record says so and the rebuild goes through the engine too, \
         and where it sent it itself the engine has no record and the step exports (the row says which it \
         did); a rebuild toward a registry \
         the engine has no record of favours the step, which learns what the registry holds and sends only \
         the new layer while docker push compresses and sends every layer; a rebuild on a previous build \
         pulled from the destination (`--cache-from`) goes through the engine under PLUGIN_PUSH_VIA=auto, so \
         both tools do the same, the step signing in and reading its tag back besides (docker push was \
         logged in before its timing; the row \"(c) the same, against docker push as a CI job runs it\" \
         times it with the job's `aws ecr get-login-password | docker login` first, in the same rounds, \
         each of the three going first in turn); a new tag for an image already there writes only the manifest; an OCI \
         layout sends its blobs as they are, as skopeo does; and a docker archive (row (f), `docker save` of \
         the new image to a file, pushed with no daemon) is compressed by both tools, skopeo streaming each \
         layer into its upload at gzip's default level, the step reading it as the engine's export (its \
         manifest.json and config read first, each large layer's upload following its compression) at the \
         level the link favours (1 on loopback, 6 over the link); a rebuild's docker archive (the rows \
         \"(f) the rebuild's docker-archive\", three rebuilds after the previous build was pushed by the same \
         tool, the step with PLUGIN_CREATE_REPOSITORY=true as CI configs mostly set it) is where both tools \
         send only the app: skopeo knows the other layers from its blob info cache (what it compressed \
         before), the step from what the registry holds, passing those layers by in the file unread, and \
         its repository is prepared once the whole archive passed. No figure above stands for all shapes. With PLUGIN_COMPRESSION=zstd (opt-in: Docker Engine 20.10 cannot pull it; containerd 1.5 and \
         Docker Engine 23 or later can), the step's own transfer writes the new image in zstd at level 3 (the rows \
         so named, one push per round of (a) into a registry of its own): it sends fewer bytes than docker push's \
         gzip for less CPU than the step's gzip at level 1, and still waits for the export's first byte; whether \
         that makes it faster than the step's gzip differs between runs (the rows give this run's times).\n\n\
         Several destinations: push compresses once and promote reads each source blob once, and both send \
         to every destination at once. On loopback the three registries hash and store their copies on the \
         same 2 cores as the step, so the rows on loopback also give the floor this run measured (the CPU \
         time of the step and of every registry involved, from /usr/bin/time and /proc, over the cores): a \
         target under its floor cannot be met here. The distribution registry hashes with Go 1.19's SHA-256 \
         (no SHA extensions), about 0.6 s of CPU for each 200 MB it takes in, so three destinations of a \
         promote, where the step itself does little, cost about three times the CPU of one. The push rows on \
         loopback and on disk compress at level 1 in both runs (PLUGIN_COMPRESSION_LEVEL=1, the level a \
         single local destination's probe picks): under `auto`, three local registries probed at once read \
         the contention for these cores as a slower link (36 to 71 MB/s each, against 107 to 248 MB/s for \
         one, in one session's runs), so some runs of three took level 2 and 0.9 s more CPU, and the row \
         varied from 1.19 to 1.56 × between runs with the pick, not the fan-out; a destination whose CPU is \
         not the runner's is not misread so, and over the links `auto` picks the level. The rows on this \
         machine's disk show what storing there adds (writing and syncing the blobs costs kernel CPU here: \
         `dd` of 600 MB with fsync took 1.5 s of system time, 0.7 s on the tmpfs). The rows over links put \
         each registry behind its own network path (a forwarder whose uploads share one rate, \
         `tests/testbed/link.rs`), as from a CI runner to ECR regions, where the registries' work is not on \
         the runner's cores.\n\n\
         PLUGIN_SOCI: the same new 1 GB image of real files pushed by the step with a SOCI index and without \
         (three rounds each, alternating, each into a fresh registry; the peer column is the push without). \
         The zTOC comes from the compression itself, so what it costs is the table read from the tar headers \
         on a thread beside the compression, the seek points' windows (spilled to disk), and writing the \
         zTOC; its peak RSS is the step's largest of the three rounds.\n",
    );
    let missed: Vec<&str> = rows.iter().filter(|r| !r.met).map(|r| r.what.as_str()).collect();
    if missed.is_empty() {
        md.push_str("\nEvery target was met in this run.\n");
    } else {
        writeln!(md, "\nTargets missed in this run: {}.", missed.join("; ")).unwrap();
    }
    md.push_str(
        "\n## How the cost grows\n\nPush of a new image of real files (one layer, made as above) into an empty \
         registry: the step from the engine (own transfer), `docker push`, and `skopeo copy docker-daemon: \
         docker://`, one run each per size.\n\n| size | step | docker push | skopeo | step / docker push | step \
         RSS |\n|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from("size_mb,step_s,docker_push_s,skopeo_s\n");
    for (size, step, pushed, copied) in &growth {
        writeln!(
            md,
            "| {size} MB | {} | {} | {} | {:.2} | {:.1} MB |",
            secs(step.time),
            secs(pushed.time),
            secs(copied.time),
            step.time.as_secs_f64() / pushed.time.as_secs_f64(),
            step.rss_mb
        )
        .unwrap();
        writeln!(
            csv,
            "{size},{:.3},{:.3},{:.3}",
            step.time.as_secs_f64(),
            pushed.time.as_secs_f64(),
            copied.time.as_secs_f64()
        )
        .unwrap();
    }
    md.push_str("\n![push time against image size](docs/bench-growth.png)\n");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(root.join("docs/bench-growth.csv"), &csv).unwrap();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    std::fs::write(&out, &md).unwrap();
    print!("{md}");
    eprintln!("bench: written to {}", out.display());
}

/// The bytes a row's tools sent up the link, and their ratio; empty where the row does not count them.
fn sent(row: &Row) -> String {
    match row.sent {
        Some((step, 0)) => format!("{:.1} MB", step as f64 / MB as f64),
        Some((step, peer)) => format!(
            "{:.1} MB / {:.1} MB ({:.2} ×)",
            step as f64 / MB as f64,
            peer as f64 / MB as f64,
            step as f64 / peer as f64
        ),
        None => String::new(),
    }
}

fn base64_login(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Where the destinations of a one-against-three comparison are.
#[derive(Clone, Copy)]
enum Reach {
    /// On loopback, each registry storing where this run's registries store (a tmpfs).
    Loopback,
    /// On loopback, each registry storing on this machine's disk.
    Disk,
    /// Each registry behind a [`Link`] of its own, of this many bytes a second.
    Link(usize),
}

/// The rows of one destination against three: on loopback (with the floor the run measured), on this
/// machine's disk (no target: what the disk costs here), and over links (a CI runner's uploads to ECR).
fn spread_rows(rows: &mut Vec<Row>, what: &str, mut run: impl FnMut(Reach) -> (Sample, Sample, Duration)) {
    let (one, three, floor) = run(Reach::Loopback);
    rows.push(spread_row(what, one, three, floor));
    let (one, three, _) = run(Reach::Disk);
    let mut row = ratio_row(
        &format!("{what}, registries on this machine's disk"),
        three,
        "the step, 1 destination on disk",
        one,
        f64::INFINITY,
    );
    row.target = "none (what this machine's disk costs)".into();
    rows.push(row);
    let (one, three, _) = run(Reach::Link(LINK_RATE));
    rows.push(ratio_row(
        &format!("{what}, over links of {} MB/s each", LINK_RATE / MB),
        three,
        "the step, 1 destination over such a link",
        one,
        1.3,
    ));
}

/// Push a new 200 MB image of real files to one destination and another to three (the own transfer: one
/// compression, uploads side by side), each into fresh registries, three rounds alternating which goes
/// first: the medians (one, three) and the floor of the three ([`floor`]).
fn push_one_and_three(bin: &str, moto: &Moto, reach: Reach) -> (Sample, Sample, Duration) {
    let make = |registries: &[Registry], hosts: &[&str], repo: &str| {
        let image = real_files_image(200 * MB);
        // The own transfer named, so one destination is not weighed against the engine as `auto` would.
        let step = Step::push(moto, &registries[0], &image, repo)
            .env("PLUGIN_TAGS", "v1")
            .env("PLUGIN_PUSH_VIA", "registry")
            .env("PLUGIN_REGISTRY", &hosts.join(","));
        // Registries on this machine take their uploads on the step's own cores: three probed at once read
        // that contention as a slower link (36 to 71 MB/s each, against 107 to 248 MB/s for one), so under
        // `auto` some runs of three compressed at level 2 and others at 1 (0.9 s more CPU at 2), and the
        // row measured the level's pick, not the fan-out. Both runs take level 1, the one a single local
        // destination's probe picks; over the links (`Reach::Link`) the registries' CPU is not the
        // runner's, so `auto` picks there as for a user.
        let step = match reach {
            Reach::Loopback | Reach::Disk => step.env("PLUGIN_COMPRESSION_LEVEL", "1"),
            Reach::Link(_) => step,
        };
        (image, step)
    };
    one_and_three(bin, reach, &[], make)
}

/// Promote `source` (200 MB in `registry`) to one destination and to three, as [`push_one_and_three`].
fn promote_one_and_three(
    bin: &str,
    moto: &Moto,
    registry: &Registry,
    source: &str,
    reach: Reach,
) -> (Sample, Sample, Duration) {
    let make = |_: &[Registry], hosts: &[&str], repo: &str| {
        let step = Step::promote(moto, &hosts.join(","), source, repo, "v1");
        ((), step)
    };
    one_and_three(bin, reach, std::slice::from_ref(registry), make)
}

/// One destination against three, three rounds alternating which goes first, each into fresh registries
/// (as `reach` says): `make(registries, hosts, repo)` prepares a run (and what it must keep alive).
/// `sources` are registries the runs read from, whose CPU counts too, as does the engine's.
fn one_and_three<K>(
    bin: &str,
    reach: Reach,
    sources: &[Registry],
    make: impl Fn(&[Registry], &[&str], &str) -> (K, Step),
) -> (Sample, Sample, Duration) {
    let (mut ones, mut threes, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let registries: Vec<Registry> = (0..4)
            .map(|_| match reach {
                Reach::Disk => Registry::start_under(DEFAULT_ACCOUNT, &std::env::temp_dir()),
                Reach::Loopback | Reach::Link(_) => Registry::start(DEFAULT_ACCOUNT),
            })
            .collect();
        let links: Vec<Link> = match reach {
            Reach::Link(rate) => registries.iter().map(|r| Link::start(&r.host, rate)).collect(),
            Reach::Loopback | Reach::Disk => Vec::new(),
        };
        let hosts: Vec<&str> = match reach {
            Reach::Link(_) => links.iter().map(|l| l.host.as_str()).collect(),
            Reach::Loopback | Reach::Disk => registries.iter().map(|r| r.host.as_str()).collect(),
        };
        let (_one_keep, one) = make(&registries[..1], &hosts[..1], "app");
        let (_three_keep, three) = make(&registries[1..], &hosts[1..], "app");
        let run_three = || {
            let servers: Vec<&Registry> = registries[1..].iter().chain(sources).collect();
            // The registries' CPU and the engine's (a push exports the image from it).
            let cpu = || servers.iter().map(|r| r.cpu()).sum::<Duration>() + testbed::engine_cpu();
            let before = cpu();
            let sample = measure(bin, &[], &step_env(&three));
            (sample, floor(sample, cpu() - before))
        };
        let (single, (spread, least)) = in_turn(round, || measure(bin, &[], &step_env(&one)), run_three);
        ones.push(single);
        threes.push(spread);
        floors.push(least);
    }
    floors.sort();
    (median(ones), median(threes), floors[floors.len() / 2])
}

/// What a push of the step against `docker push` needs: the binary, moto, the registry both push to (the
/// docker CLI logged in to it) and docker's environment.
struct Versus<'a> {
    bin: &'a str,
    moto: &'a Moto,
    registry: &'a Registry,
    env: &'a BTreeMap<String, String>,
}

impl Versus<'_> {
    /// Three rounds of a push of a new image by the step (`PLUGIN_PUSH_VIA=via`, into `<repo><round>`)
    /// against `docker push` of another (into `<repo><round>-peer`), each image made by `make`, alternating
    /// who goes first; `after(round, step)` runs after each round. The medians (step, docker push) and the
    /// middle floor of the step's runs ([`floor`]: its CPU, the registry's and the engine's).
    fn docker_push(
        &self,
        repo: &str,
        via: &str,
        make: impl Fn() -> Image,
        mut after: impl FnMut(usize, &Step),
    ) -> (Sample, Sample, Duration) {
        let (mut steps, mut peers, mut floors) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..3 {
            let (ours, theirs) = (make(), make());
            let push = Step::push(self.moto, self.registry, &ours, &format!("{repo}{round}"))
                .env("PLUGIN_TAGS", "v1")
                .env("PLUGIN_PUSH_VIA", via);
            let target = format!("{}/{repo}{round}-peer:v1", self.registry.host);
            testbed::docker(&["tag", &theirs.name, &target]);
            let cpu = || self.registry.cpu() + testbed::engine_cpu();
            let step = || {
                let before = cpu();
                let sample = measure(self.bin, &[], &step_env(&push));
                (sample, floor(sample, cpu() - before))
            };
            let ((step, least), peer) = in_turn(round, step, || measure("docker", &["push", &target], self.env));
            steps.push(step);
            floors.push(least);
            peers.push(peer);
            after(round, &push);
            testbed::docker(&["rmi", &target]);
        }
        floors.sort();
        (median(steps), median(peers), floors[floors.len() / 2])
    }
}

/// Run `ours` and `theirs`, `ours` first in even rounds and second in odd ones, so that neither always
/// meets the machine as the other left it.
fn in_turn<A, B>(round: usize, ours: impl FnOnce() -> A, theirs: impl FnOnce() -> B) -> (A, B) {
    if round.is_multiple_of(2) {
        let a = ours();
        (a, theirs())
    } else {
        let b = theirs();
        (ours(), b)
    }
}

/// The least time a run can take on this machine: the CPU that it and the servers it used (registries,
/// the engine) spent, spread over every core (a lower bound).
fn floor(run: Sample, servers: Duration) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    (run.cpu + servers) / cores
}

/// A row of three destinations against one on loopback, where the registries share this machine's cores
/// with the step: the target (1.3x one destination) and, beside it, the floor this run measured.
fn spread_row(what: &str, one: Sample, three: Sample, floor: Duration) -> Row {
    let mut row = ratio_row(what, three, "the step, 1 destination", one, 1.3);
    row.target = format!(
        "≤ 1.3 × peer (floor here: {:.2} ×, the CPU of the step, the registries and the engine over {} cores)",
        floor.as_secs_f64() / one.time.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    row
}

/// A one-layer image made from real files of this machine (libraries, binaries, documentation), about
/// `bytes` of them, with a marker file so every image is new.
fn real_files_image(bytes: usize) -> Image {
    Image::from_dir(real_files_dir(bytes).path())
}

/// A directory of real files of this machine, about `bytes` of them, and a marker file (so every image
/// made of it is new).
fn real_files_dir(bytes: usize) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let mut total = 0usize;
    let mut n = 0usize;
    'dirs: for dir in ["/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec", "/usr/local"] {
        let mut stack = vec![PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() && meta.len() > 0 && meta.len() < 50 * MB as u64 {
                    let target = root.path().join(format!("f{n}"));
                    if std::fs::copy(&path, &target).is_ok() {
                        total += meta.len() as usize;
                        n += 1;
                    }
                    if total >= bytes {
                        break 'dirs;
                    }
                }
            }
        }
    }
    let marker = format!("{}-{:?}", std::process::id(), Instant::now());
    std::fs::write(root.path().join("marker"), marker).unwrap();
    root
}

fn ratio_row(what: &str, step: Sample, peer_name: &str, peer: Sample, max_ratio: f64) -> Row {
    Row {
        what: what.into(),
        step,
        peer: Some((peer_name.into(), peer)),
        target: format!("≤ {max_ratio} × peer"),
        met: step.time.as_secs_f64() <= max_ratio * peer.time.as_secs_f64(),
        sent: None,
    }
}

/// Time from spawning the step to its first connection to AWS (a listener standing in for the endpoint).
fn first_call(binary: &str) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("AWS_ENDPOINT_URL", &url)
        .env("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PLUGIN_SOURCE", "app")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = listener.accept().unwrap();
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn measure_failing(binary: &str, env: &BTreeMap<String, String>) -> Sample {
    let started = Instant::now();
    let out = Command::new(binary).env_clear().envs(env).output().unwrap();
    assert!(!out.status.success());
    Sample {
        time: started.elapsed(),
        rss_mb: 0.0,
        cpu: Duration::ZERO,
        engine: false,
    }
}
