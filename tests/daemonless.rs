//! Push without a Docker daemon: from `docker save`'s archive (`docker-archive:`), from an OCI layout that
//! skopeo wrote from the engine (`oci:`), and an OCI layout holding a two-platform index, with `DOCKER_HOST`
//! pointing nowhere; and an engine image through the step's own transfer (`PLUGIN_PUSH_VIA=registry`). The
//! docker CLI pulls each back: same image id (so the same config and layer diff ids).

mod testbed;

use std::process::Command;
use testbed::proxy::{Fault, FaultProxy, Rule};
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

/// A push of `source` to `registry` with no engine reachable.
fn daemonless(moto: &Moto, registry: &Registry, source: &str, repo: &str, tags: &str) -> Step {
    Step::aws(moto)
        .env("PLUGIN_SOURCE", source)
        .env("PLUGIN_REPO", repo)
        .env("PLUGIN_TAGS", tags)
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (Debian package; scripts/install-testbed installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_docker_archive_pushes_with_no_daemon_same_image_id_same_digest_twice_and_a_rerun_uploads_nothing() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let image = Image::random(3_000_000);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let out = Command::new("docker")
        .args(["save", "-o", archive.to_str().unwrap(), &image.name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let source = format!("docker-archive:{}", archive.display());
    let run = daemonless(&moto, &registry, &source, "app", "v1,latest").run();
    run.success();
    run.says("1 layer(s) compressed here");
    let digest = run.reported_digest(&format!("{}/app:v1", registry.host));
    assert_eq!(registry.digest("app", "latest"), Some(digest.clone()));
    assert_eq!(registry.pull(&format!("{}/app:v1", registry.host)).0, image.id);

    // Again, into another repository: the same digests (deterministic compression).
    let again = daemonless(&moto, &registry, &source, "other", "v1").run();
    again.success();
    assert_eq!(again.reported_digest(&format!("{}/other:v1", registry.host)), digest);
    // A re-run: every tag already at this image (its manifest.json and config say which), so no layer is
    // read, compressed or sent.
    let rerun = daemonless(&moto, &registry, &source, "app", "v1,latest").run();
    rerun.success();
    rerun.says(&format!(
        "skipped: {}/app:v1 {digest} (already at this digest)",
        registry.host
    ));
    assert!(!rerun.stdout.contains("compressed here"), "{}", rerun.stdout);
    assert!(!rerun.stdout.contains("copied:"), "{}", rerun.stdout);
}

fn saved(image: &Image, dir: &std::path::Path, name: &str) -> String {
    let archive = dir.join(name);
    testbed::docker(&["save", "-o", archive.to_str().unwrap(), &image.name]);
    format!("docker-archive:{}", archive.display())
}

/// An archive is read as the engine's export is: what the registry holds of it is learnt first from its
/// manifest.json and config, so a rebuild's archive compresses and sends only its new layer (a layer the
/// registry lost since is sent again), and the same image under a new tag writes only its manifest.
#[test]
fn a_rebuilds_archive_sends_only_its_new_layer_and_a_new_tag_only_its_manifest() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let dir = tempfile::tempdir().unwrap();
    let base = Image::from_host_files(&["/bin/sh", "/bin/cat"], &[]);
    let first = Image::build(
        &base.name,
        &[("docs", "/usr/share/common-licenses"), ("more", "/etc/ssl/certs")],
    );
    let run = daemonless(&moto, &registry, &saved(&first, dir.path(), "1.tar"), "app", "build-1").run();
    run.success();
    run.says("3 layer(s) compressed here");

    let top = tempfile::tempdir().unwrap();
    std::fs::write(top.path().join("app.txt"), format!("build {}\n", std::process::id())).unwrap();
    let rebuilt = Image::build(&first.name, &[("app", top.path().to_str().unwrap())]);
    let source = saved(&rebuilt, dir.path(), "2.tar");
    let run = daemonless(&moto, &registry, &source, "app", "build-2").run();
    testbed::assert_only_the_new_layer_went(&run, &registry, &rebuilt);
    let shared = registry.layer_digests("app", "build-1");

    // The same image under a new tag: only the manifest is written.
    let run = daemonless(&moto, &registry, &source, "app", "release").run();
    run.success();
    run.says("known: the image is in app already");
    assert!(!run.stdout.contains("compressed here"), "{}", run.stdout);
    assert_eq!(registry.digest("app", "release"), registry.digest("app", "build-2"));

    // A layer the registry held, deleted since: its HEAD fails, so it is compressed and sent again.
    registry.delete_blob("app", &shared[1]);
    let again = Image::build(
        &first.name,
        &[("app", top.path().to_str().unwrap()), ("extra", "/etc/ssl/certs")],
    );
    let run = daemonless(&moto, &registry, &saved(&again, dir.path(), "3.tar"), "app", "build-3").run();
    run.success();
    run.says("3 of the 5 layer(s) are sent as that registry holds them")
        .says("2 layer(s) compressed here");
    assert_eq!(registry.pull(&format!("{}/app:build-3", registry.host)).0, again.id);
}

/// Where a repository setting applies (here `PLUGIN_CREATE_REPOSITORY`, as most CI configs set it), an
/// archive is still read knowing first what the registry holds, so a rebuild's archive compresses only its
/// new layer; but nothing is created or sent before the whole archive passed: an archive whose new layer
/// was altered creates no repository and lands no tag.
#[test]
fn with_a_repository_setting_a_rebuilds_archive_compresses_only_its_new_layer_and_a_damaged_one_creates_nothing() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let dir = tempfile::tempdir().unwrap();
    let creating = |source: &str, repo: &str, tag: &str| {
        daemonless(&moto, &registry, source, repo, tag).env("PLUGIN_CREATE_REPOSITORY", "true")
    };
    let base = Image::from_host_files(&["/bin/sh", "/bin/cat"], &[]);
    let first = Image::build(
        &base.name,
        &[("docs", "/usr/share/common-licenses"), ("more", "/etc/ssl/certs")],
    );
    let run = creating(&saved(&first, dir.path(), "1.tar"), "app", "build-1").run();
    run.success();
    run.says("3 layer(s) compressed here");
    assert_eq!(ecr_repositories(&moto), vec!["app"]);

    let top = tempfile::tempdir().unwrap();
    std::fs::write(top.path().join("app.txt"), format!("build {}\n", std::process::id())).unwrap();
    let rebuilt = Image::build(&first.name, &[("app", top.path().to_str().unwrap())]);
    let run = creating(&saved(&rebuilt, dir.path(), "2.tar"), "app", "build-2").run();
    testbed::assert_only_the_new_layer_went(&run, &registry, &rebuilt);

    // The next build's archive, its new layer altered after `docker save`: refused once read, with
    // nothing created (a repository it would create) or written (a tag where the others are).
    std::fs::write(top.path().join("app.txt"), "build 3\n").unwrap();
    let next = Image::build(&first.name, &[("app", top.path().to_str().unwrap())]);
    let damaged = saved(&next, dir.path(), "3.tar");
    alter_the_top_layer(damaged.strip_prefix("docker-archive:").unwrap());
    for (repo, tag) in [("fresh", "build-3"), ("app", "build-3")] {
        let run = creating(&damaged, repo, tag).run();
        run.failure(&[
            "layer 4 of 4",
            "the archive is damaged or was altered, so nothing was pushed",
        ]);
        assert!(!run.stdout.contains("pushed:"), "{}", run.stdout);
    }
    assert_eq!(
        ecr_repositories(&moto),
        vec!["app"],
        "a repository was created for a damaged archive"
    );
    assert!(!registry.repositories().contains(&"fresh".to_string()));
    assert_eq!(registry.tags("app"), vec!["build-1", "build-2"]);
}

/// The repositories ECR (moto) holds, by name.
fn ecr_repositories(moto: &Moto) -> Vec<String> {
    let listed = moto.aws(&["ecr", "describe-repositories"]);
    let mut names: Vec<String> = listed["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["repositoryName"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// Change the last byte of the top layer in a `docker save` archive (its end-of-archive padding), so the
/// archive still reads but that layer's diff id no longer matches the config's.
fn alter_the_top_layer(archive: &str) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut found = std::collections::HashMap::new();
    let mut manifest = String::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            entry.read_to_string(&mut manifest).unwrap();
        }
        found.insert(name, (entry.raw_file_position(), entry.size()));
    }
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let top = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    let (at, size) = found[top];
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(archive)
        .unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at + size - 1)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(at + size - 1)).unwrap();
    file.write_all(&[byte[0] ^ 0xff]).unwrap();
}

#[test]
fn an_oci_layout_from_skopeo_and_a_two_platform_index_push_whole_with_no_daemon() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    // (amd's layer is large enough for its upload to start while the layout is checked.)
    let (amd, arm) = (Image::random(3_000_000), Image::random(500_000));
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let at = |r: &str| format!("oci:{}:{r}", layout.display());
    skopeo(&["copy", "-q", &format!("docker-daemon:{}", amd.name), &at("amd")]);
    skopeo(&["copy", "-q", &format!("docker-daemon:{}", arm.name), &at("arm")]);
    let run = daemonless(&moto, &registry, &at("amd"), "single", "v1").run();
    run.success();
    // skopeo wrote an OCI config (so another image id than the engine's): the pulled image is the layout's
    // config, with the engine image's layers.
    let pushed = run.reported_digest(&format!("{}/single:v1", registry.host));
    let (manifest, _, _) = registry.manifest("single", &pushed).unwrap();
    let config = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (id, layers) = registry.pull(&format!("{}/single:v1", registry.host));
    assert_eq!(id, config);
    assert_eq!(layers, testbed::diff_ids(&amd.name));
    // A re-run sends nothing: the blob whose upload would start early is found there first.
    let rerun = daemonless(&moto, &registry, &at("amd"), "single", "v1").run();
    rerun.success();
    rerun.says("0 uploaded, 0 mounted, 2 already there");

    // An index of both, as a multi-platform build writes it, named "multi".
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let mut children = Vec::new();
    for (m, arch) in index["manifests"].as_array().unwrap().iter().zip(["amd64", "arm64"]) {
        let mut child = m.clone();
        child.as_object_mut().unwrap().remove("annotations");
        child["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        children.push(child);
    }
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    });
    let bytes = serde_json::to_vec(&multi).unwrap();
    let hex = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(layout.join("blobs/sha256").join(&hex), &bytes).unwrap();
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{hex}"),
        "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }));
    std::fs::write(&index_path, index.to_string()).unwrap();
    let run = daemonless(&moto, &registry, &at("multi"), "multi", "v1").run();
    run.success();
    run.says("index of 2 image(s)");
    assert_eq!(
        registry.digest("multi", "v1"),
        Some(format!("sha256:{hex}")),
        "the index digest changed"
    );
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        assert!(registry.manifest("multi", digest).is_some(), "child {digest} missing");
    }
    // And as an archive of the same layout.
    let tarball = dir.path().join("layout.tar");
    assert!(
        Command::new("tar")
            .args(["-C", layout.to_str().unwrap(), "-cf", tarball.to_str().unwrap(), "."])
            .status()
            .unwrap()
            .success()
    );
    let run = daemonless(
        &moto,
        &registry,
        &format!("oci-archive:{}:multi", tarball.display()),
        "archived",
        "v1",
    )
    .run();
    run.success();
    assert_eq!(registry.digest("archived", "v1"), Some(format!("sha256:{hex}")));
}

#[test]
fn an_engine_image_through_the_steps_own_transfer_leaves_no_local_tag_and_survives_503s() {
    let (moto, registry, image) = (
        Moto::start(),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(1_000_000),
    );
    let flaky = FaultProxy::start(
        &registry.host,
        vec![Rule {
            method: "PATCH",
            path: "/blobs/uploads/",
            fault: Fault::Status(503),
            times: 2,
        }],
    );
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &flaky.host)
        .env("PLUGIN_PUSH_VIA", "registry")
        .env("PLUGIN_TAGS", "own")
        .run();
    run.success();
    run.says("(exported from the Docker Engine)").says("retrying:");
    assert_eq!(flaky.injected(), 2);
    assert_eq!(registry.pull(&format!("{}/app:own", registry.host)).0, image.id);
    let local = testbed::in_engine(&format!("{}/app:own", flaky.host));
    assert!(!local, "the step left a local tag behind");
    // Again: every tag already holds this image, so nothing is exported, compressed or uploaded.
    let again = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_PUSH_VIA", "registry")
        .env("PLUGIN_TAGS", "own")
        .run();
    again.success();
    again.says("(already at this digest)").says("1 already there");
    assert!(
        !again.stdout.contains("exported from the Docker Engine"),
        "{}",
        again.stdout
    );
}

#[test]
fn a_long_upload_prints_progress_lines_for_a_ci_log_and_a_short_one_prints_none() {
    let (moto, registry, image) = (
        Moto::start(),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(7_000_000),
    );
    // A network of 1 MB/s: the upload takes about 7 s.
    let slow = FaultProxy::start(
        &registry.host,
        vec![Rule {
            method: "PATCH",
            path: "/blobs/uploads/",
            fault: Fault::Slow(1_000_000),
            times: 2,
        }],
    );
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &slow.host)
        .env("PLUGIN_TAGS", "slow")
        .run();
    run.success();
    let lines: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("progress: ")).collect();
    assert!(!lines.is_empty(), "no progress line:\n{}", run.stdout);
    for line in &lines {
        assert!(
            line.starts_with(&format!("progress: {}/app ", slow.host))
                && line.contains(" MiB")
                && line.ends_with(" MiB/s"),
            "{line}"
        );
    }
    assert!(
        !run.stdout.contains('\r') && !run.stdout.contains('\u{1b}'),
        "terminal codes in a CI log:\n{:?}",
        run.stdout
    );
    // The same push at full speed is short: no progress line.
    let fast = Step::push(&moto, &registry, &image, "fast")
        .env("PLUGIN_TAGS", "v1")
        .run();
    fast.success();
    assert!(!fast.stdout.contains("progress: "), "{}", fast.stdout);
}

#[test]
fn on_a_terminal_a_live_display_shows_a_bar_per_destination_and_every_line_stays_whole() {
    let (moto, first, second) = (
        Moto::start(),
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
    );
    let image = Image::random(7_000_000);
    // Two networks of 1 MB/s: each upload takes about 7 s.
    let slow = |registry: &Registry| {
        FaultProxy::start(
            &registry.host,
            vec![Rule {
                method: "PATCH",
                path: "/blobs/uploads/",
                fault: Fault::Slow(1_000_000),
                times: 2,
            }],
        )
    };
    let (one, two) = (slow(&first), slow(&second));
    let run = Step::push(&moto, &first, &image, "app")
        .env("PLUGIN_REGISTRY", &format!("{},{}", one.host, two.host))
        .run_in_terminal();
    run.success();
    let shown = &run.stdout;
    for host in [&one.host, &two.host] {
        assert!(
            shown.contains("progress: [") && shown.contains(&format!("/s {host}/app")),
            "no bar for {host}:\n{shown:?}"
        );
        // Lines printed while the bars are live are whole: the display is cleared around them.
        let pushed = format!("pushed: {host}/app:latest sha256:");
        assert!(
            shown
                .lines()
                .any(|l| l.trim_start_matches(['\r', '\u{1b}']).contains(&pushed)),
            "{pushed} is torn:\n{shown:?}"
        );
    }
    assert!(shown.contains('\u{1b}'), "a terminal gets a live display:\n{shown:?}");
}

#[test]
fn a_missing_layout_or_archive_is_refused_before_any_call() {
    let aws = testbed::Tripwire::new();
    let dir = tempfile::tempdir().unwrap();
    for (source, want) in [
        (format!("oci:{}", dir.path().display()), "has no index.json"),
        ("docker-archive:/nonexistent.tar".to_string(), "an archive file"),
        ("oci-archive:/dev/zero".to_string(), "not a regular file"),
    ] {
        let run = Step::new()
            .env("AWS_ENDPOINT_URL", &aws.url)
            .env("PLUGIN_SOURCE", &source)
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_REGION", testbed::REGION)
            .run();
        run.failure(&["PLUGIN_SOURCE", want]);
        assert!(!aws.touched(), "{source} reached the network");
    }
}

#[test]
fn an_image_built_from_a_dockerfile_with_several_layers_comes_back_identical_and_runs() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    // A runnable base (a shell and its libraries from this host), then two layers of real files.
    let base = Image::from_host_files(&["/bin/sh", "/bin/cat"], &[]);
    let built = Image::build(
        &base.name,
        &[("docs", "/usr/share/common-licenses"), ("more", "/etc/ssl/certs")],
    );
    let run = Step::push(&moto, &registry, &built, "built")
        .env("PLUGIN_TAGS", "v1")
        .run();
    run.success();
    run.says("3 layer(s) compressed here");
    let reference = format!("{}/built:v1", registry.host);
    let (id, layers) = registry.pull(&reference);
    assert_eq!(id, built.id, "the image id changed");
    assert_eq!(layers, testbed::diff_ids(&built.name), "the layer diff ids changed");
    // And it runs: pull again (pull() removed it), run it, remove it.
    registry.docker(&["pull", "-q", &reference]);
    let ran = Command::new("docker")
        .args(["run", "--rm", &reference])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &reference]).output();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "ran",
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

#[test]
fn several_destinations_get_one_compression_and_the_same_digest() {
    let (moto, first, second) = (
        Moto::start(),
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
    );
    let image = Image::random(1_000_000);
    let run = Step::push(&moto, &first, &image, "app")
        .env("PLUGIN_REGISTRY", &format!("{},{}", first.host, second.host))
        .run();
    run.success();
    assert_eq!(
        run.stdout.matches("layer(s) compressed here").count(),
        1,
        "{}",
        run.stdout
    );
    let digest = run.reported_digest(&format!("{}/app:latest", first.host));
    assert_eq!(run.reported_digest(&format!("{}/app:latest", second.host)), digest);
    assert_eq!(first.digest("app", "latest"), Some(digest.clone()));
    assert_eq!(second.digest("app", "latest"), Some(digest));
}

/// The layers of the image given as the manifest names them, bottom first.
#[test]
fn an_image_built_on_a_base_pulled_from_the_registry_keeps_the_bases_layers_through_either_transfer() {
    let (moto, registry, far) = (
        Moto::start(),
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
    );
    // The base, two layers, pushed by docker push (the engine's own gzip), removed, and pulled back: the
    // engine knows it by its digest in the registry, as after a `docker pull` of a team's base image.
    let shell = Image::from_host_files(&["/bin/sh", "/bin/cat"], &[]);
    let built_base = Image::build(&shell.name, &[("docs", "/usr/share/common-licenses")]);
    let base = format!("{}/team/base:1", registry.host);
    registry.docker(&["tag", &built_base.name, &base]);
    registry.docker(&["push", &base]);
    registry.docker(&["rmi", "-f", &built_base.id]);
    registry.docker(&["pull", "-q", &base]);
    let app = Image::build(&base, &[("more", "/etc/ssl/certs")]);
    let base_layers = registry.layer_digests("team/base", "1");

    // Into the base's registry alone, the image being mostly its base: the engine pushes it, reading only
    // the new layer (PLUGIN_PUSH_VIA=auto, the default), and the base's layers are kept.
    let engine = Step::push(&moto, &registry, &app, "team/engine")
        .env("PLUGIN_TAGS", "v1")
        .run();
    engine.success();
    engine
        .says("via: docker push through the engine: ")
        .says(&format!("are layers of {}/team/base@sha256:", registry.host));
    assert_eq!(registry.layer_digests("team/engine", "v1")[..2], base_layers[..]);

    // Into that registry and another, which lacks the base: the step's own transfer (through the engine,
    // the base's layers would be compressed again, on one thread, for the other registry).
    let run = Step::push(&moto, &registry, &app, "team/app")
        .env("PLUGIN_REGISTRY", &format!("{},{}", registry.host, far.host))
        .env("PLUGIN_TAGS", "v1")
        .run();
    run.success();
    run.says(&format!("base: {}/team/base@sha256:", registry.host))
        .says("2 of the 3 layer(s) are sent as that registry holds them")
        .says("1 layer(s) compressed here")
        // Same registry: the base's layers are mounted from its repository; the config and the new layer
        // are uploaded. The other registry gets the base's layers streamed from the first, as they are.
        .says(&format!(
            "to {}/team/app: 2 uploaded, 2 mounted, 0 already there",
            registry.host
        ))
        .says(&format!(
            "to {}/team/app: 4 uploaded, 0 mounted, 0 already there",
            far.host
        ));
    assert!(!run.stdout.contains("via: docker push"), "{}", run.stdout);
    for target in [&registry, &far] {
        let layers = target.layer_digests("team/app", "v1");
        assert_eq!(layers.len(), 3);
        assert_eq!(
            layers[..2],
            base_layers[..],
            "{}: the base's layers were not kept",
            target.host
        );
        let reference = format!("{}/team/app:v1", target.host);
        let (id, diff_ids) = target.pull(&reference);
        assert_eq!(id, app.id, "{}: the image id changed", target.host);
        assert_eq!(diff_ids, testbed::diff_ids(&app.name));
    }
    registry.docker(&["rmi", "-f", &base]);
}

/// `PLUGIN_COMPRESSION_LEVEL` sets the level of the layers the step compresses: the same image at level 1
/// and at `auto` (2 for a small layer) gets other layer digests, the smaller blobs at 2, and pulls back
/// as the same image.
#[test]
fn the_compression_level_changes_the_layer_bytes_never_the_image() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let base = Image::from_host_files(&["/bin/sh"], &[]);
    let image = Image::build(&base.name, &[("docs", "/usr/share/common-licenses")]);
    let push = |repo: &str, level: Option<&str>| {
        let step = Step::push(&moto, &registry, &image, repo)
            .env("PLUGIN_TAGS", "v1")
            .env("PLUGIN_PUSH_VIA", "registry");
        let step = match level {
            Some(level) => step.env("PLUGIN_COMPRESSION_LEVEL", level),
            None => step,
        };
        step.run().success();
    };
    push("auto", None);
    push("fast", Some("1"));
    let sizes = |repo: &str| -> Vec<(String, u64)> {
        let (bytes, _, _) = registry.manifest(repo, "v1").unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["digest"].as_str().unwrap().to_string(), l["size"].as_u64().unwrap()))
            .collect()
    };
    let (auto, fast) = (sizes("auto"), sizes("fast"));
    assert_ne!(auto, fast, "the level changed no layer");
    let total = |layers: &[(String, u64)]| layers.iter().map(|(_, s)| s).sum::<u64>();
    assert!(
        total(&auto) < total(&fast),
        "level 2 sent {} bytes, level 1 {}",
        total(&auto),
        total(&fast)
    );
    for repo in ["auto", "fast"] {
        let (id, _) = registry.pull(&format!("{}/{repo}:v1", registry.host));
        assert_eq!(id, image.id, "{repo}: the image id changed");
    }
}
