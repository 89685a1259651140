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

/// Pull `reference` with the docker CLI (a config holding the registry's login) and return its image id;
/// the pulled image is removed.
fn pulled_id(registry: &Registry, reference: &str) -> String {
    pulled(registry, reference).0
}

/// The layer diff ids of a local image, as the engine lists them.
fn diff_ids(reference: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{json .RootFS.Layers}}", reference])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A docker config holding the registry's login, for the docker CLI.
fn login_config(registry: &Registry) -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}-auth-token", registry.account))
    };
    std::fs::write(
        config.path().join("config.json"),
        serde_json::json!({"auths": {registry.host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    config
}

/// Pull `reference`: its image id and layer diff ids; the pulled image is removed.
fn pulled(registry: &Registry, reference: &str) -> (String, String) {
    let config = login_config(registry);
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .arg("--config")
            .arg(config.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    docker(&["pull", "-q", reference]);
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
    let layers = diff_ids(reference);
    docker(&["rmi", "-f", reference]);
    (id, layers)
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
    assert_eq!(pulled_id(&registry, &format!("{}/app:v1", registry.host)), image.id);

    // Again, into another repository: the same digests (deterministic compression).
    let again = daemonless(&moto, &registry, &source, "other", "v1").run();
    again.success();
    assert_eq!(again.reported_digest(&format!("{}/other:v1", registry.host)), digest);
    // A re-run: every blob is there, every tag already at this digest.
    let rerun = daemonless(&moto, &registry, &source, "app", "v1,latest").run();
    rerun.success();
    rerun.says("0 uploaded, 0 mounted, 2 already there").says(&format!(
        "skipped: {}/app:v1 {digest} (already at this digest)",
        registry.host
    ));
}

#[test]
fn an_oci_layout_from_skopeo_and_a_two_platform_index_push_whole_with_no_daemon() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let (amd, arm) = (Image::random(500_000), Image::random(500_000));
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
    let (id, layers) = pulled(&registry, &format!("{}/single:v1", registry.host));
    assert_eq!(id, config);
    assert_eq!(layers, diff_ids(&amd.name));

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
    assert_eq!(pulled_id(&registry, &format!("{}/app:own", registry.host)), image.id);
    let local = Command::new("docker")
        .args(["image", "inspect", &format!("{}/app:own", flaky.host)])
        .output()
        .unwrap();
    assert!(!local.status.success(), "the step left a local tag behind");
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
    let context = tempfile::tempdir().unwrap();
    for (name, dir) in [
        ("docs.tar", "/usr/share/common-licenses"),
        ("more.tar", "/etc/ssl/certs"),
    ] {
        let ok = Command::new("tar")
            .args(["-C", dir, "-chf", context.path().join(name).to_str().unwrap(), "."])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar of {dir}");
    }
    std::fs::write(
        context.path().join("Dockerfile"),
        format!(
            "FROM {}\nADD docs.tar /docs/\nADD more.tar /more/\nCMD [\"/bin/sh\", \"-c\", \"echo ran\"]\n",
            base.name
        ),
    )
    .unwrap();
    let name = format!("ecr-step-test-built-{}:src", std::process::id());
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &name, context.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = Image {
        id: testbed::docker(&["image", "inspect", "-f", "{{.Id}}", &name])
            .trim()
            .to_string(),
        name,
    };
    let run = Step::push(&moto, &registry, &built, "built")
        .env("PLUGIN_TAGS", "v1")
        .run();
    run.success();
    run.says("3 layer(s) compressed here");
    let reference = format!("{}/built:v1", registry.host);
    let (id, layers) = pulled(&registry, &reference);
    assert_eq!(id, built.id, "the image id changed");
    assert_eq!(layers, diff_ids(&built.name), "the layer diff ids changed");
    // And it runs: pull again (pulled() removed it), run it, remove it.
    let config = login_config(&registry);
    let pull = Command::new("docker")
        .arg("--config")
        .arg(config.path())
        .args(["pull", "-q", &reference])
        .output()
        .unwrap();
    assert!(pull.status.success(), "{}", String::from_utf8_lossy(&pull.stderr));
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
