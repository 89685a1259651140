//! The trust boundary: an archive or layout from an untrusted build, and a promote source that is not
//! ours, can make the step read, write, send or report nothing it shouldn't. Each hostile input ends red
//! before anything is written to the registry (or bounded in time), and no file outside the test's own
//! directory changes; a foreign source never receives the ECR token.

mod testbed;

use serde_json::json;
use std::time::Duration;
use testbed::untrusted::{
    Answer, Archive, Body, Entry, Layout, OCI_INDEX, OCI_MANIFEST, Rogue, SmallImage, Store, digest, docker_manifest,
    registry_answer,
};
use testbed::{DEFAULT_ACCOUNT, Moto, READ_ROLE, Registry, Step};

/// A push of `source` (a layout or archive) to `registry`, with no engine.
fn daemonless(moto: &Moto, registry: &Registry, source: &str) -> Step {
    Step::aws(moto)
        .env("PLUGIN_SOURCE", source)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
}

/// Red, naming `wanted`, quickly, with nothing written to the registry.
fn refused(run: &testbed::Run, registry: &Registry, wanted: &[&str], case: &str) {
    assert!(
        matches!(run.code, Some(c) if c != 0),
        "{case}: the step should have failed:\n{}",
        run.output()
    );
    let out = run.output();
    for want in wanted {
        assert!(out.contains(want), "{case}: `{want}` missing from:\n{out}");
    }
    assert!(
        registry.repositories().is_empty(),
        "{case}: something was written to the registry: {:?}\n{out}",
        registry.repositories()
    );
    assert!(run.elapsed < Duration::from_secs(20), "{case}: took {:?}", run.elapsed);
}

#[test]
fn hostile_docker_archives_are_refused_before_any_write_and_write_nothing_outside() {
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A host file the archive tries to push: a "token" a runner might hold.
    let secret = dir.path().join("token.json");
    std::fs::write(&secret, br#"{"secret":"host file"}"#).unwrap();
    let image = SmallImage::new("archive");
    let manifest = || docker_manifest("config.json", &["layer.tar"]);
    let secret_path = secret.display().to_string();
    let up = format!("../../../../../../..{secret_path}");
    let cases: Vec<(&str, Archive, Vec<&str>)> = vec![
        (
            "a symlink to a directory outside, then an entry through it",
            image
                .docker_archive("config.json", &["layer.tar"])
                .with(Entry::Symlink("x".into(), outside.display().to_string()))
                .with(Entry::File("x/pwned.txt".into(), b"pwned".to_vec())),
            vec!["`x` is not a directory", "x/pwned.txt"],
        ),
        (
            "an absolute entry",
            image.docker_archive("config.json", &["layer.tar"]).with(Entry::File(
                format!("{}/pwned.txt", outside.display()),
                b"pwned".to_vec(),
            )),
            vec!["leads outside it"],
        ),
        (
            "a `..` entry",
            image
                .docker_archive("config.json", &["layer.tar"])
                .with(Entry::File("../../pwned.txt".into(), b"pwned".to_vec())),
            vec!["leads outside it"],
        ),
        (
            "a Config that is an absolute path",
            Archive::default()
                .with(Entry::File("layer.tar".into(), image.layer.clone()))
                .with(Entry::File(
                    "manifest.json".into(),
                    docker_manifest(&secret_path, &["layer.tar"]),
                )),
            vec!["is an absolute path"],
        ),
        (
            "a Config through `..`",
            Archive::default()
                .with(Entry::File("layer.tar".into(), image.layer.clone()))
                .with(Entry::File(
                    "manifest.json".into(),
                    docker_manifest(&up, &["layer.tar"]),
                )),
            vec!["leads outside the input"],
        ),
        (
            "a Config that is a symlink to a host file",
            Archive::default()
                .with(Entry::Symlink("config.json".into(), secret_path.clone()))
                .with(Entry::File("layer.tar".into(), image.layer.clone()))
                .with(Entry::File("manifest.json".into(), manifest())),
            vec!["symbolic link to", "outside the input"],
        ),
        (
            "a layer that is a symlink to /dev/zero",
            Archive::default()
                .with(Entry::File("config.json".into(), image.config.clone()))
                .with(Entry::Symlink("layer.tar".into(), "/dev/zero".into()))
                .with(Entry::File("manifest.json".into(), manifest())),
            vec!["`/dev/zero`, outside the input"],
        ),
        (
            "a layer named /dev/zero",
            Archive::default()
                .with(Entry::File("config.json".into(), image.config.clone()))
                .with(Entry::File(
                    "manifest.json".into(),
                    docker_manifest("config.json", &["/dev/zero"]),
                )),
            vec!["`/dev/zero` is an absolute path"],
        ),
        (
            "a manifest.json that is a symlink to a host file",
            Archive::default()
                .with(Entry::File("config.json".into(), image.config.clone()))
                .with(Entry::File("layer.tar".into(), image.layer.clone()))
                .with(Entry::Symlink("manifest.json".into(), secret_path.clone())),
            vec!["manifest.json", "outside the input"],
        ),
        (
            "two entries of the same layer",
            image
                .docker_archive("config.json", &["layer.tar"])
                .with(Entry::File("layer.tar".into(), SmallImage::new("other").layer)),
            vec!["holds `layer.tar` twice"],
        ),
        (
            "a character device",
            image
                .docker_archive("config.json", &["layer.tar"])
                .with(Entry::CharDevice("zero".into())),
            vec!["`zero` is a character device"],
        ),
        (
            "a layer whose diff id is not the config's",
            Archive::default()
                .with(Entry::File("config.json".into(), image.config.clone()))
                .with(Entry::File("layer.tar".into(), SmallImage::new("swapped").layer))
                .with(Entry::File("manifest.json".into(), manifest())),
            vec!["has diff id", "but the image's config names", &image.diff_id],
        ),
        (
            "a hard link out of the archive",
            image
                .docker_archive("config.json", &["layer.tar"])
                .with(Entry::HardLink("h".into(), "../../etc/passwd".into())),
            vec!["points outside it"],
        ),
    ];
    for (case, archive, wanted) in cases {
        let path = dir.path().join("image.tar");
        archive.write(&path);
        let run = daemonless(&moto, &registry, &format!("docker-archive:{}", path.display())).run();
        refused(&run, &registry, &wanted, case);
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{case}: a file was written outside the scratch directory"
        );
        assert!(!dir.path().join("pwned.txt").exists(), "{case}: pwned.txt written");
    }
    // The valid archive the cases were made from pushes: what they refuse is the hostile part alone.
    let path = dir.path().join("valid.tar");
    image.docker_archive("config.json", &["layer.tar"]).write(&path);
    daemonless(&moto, &registry, &format!("docker-archive:{}", path.display()))
        .run()
        .success();
    assert_eq!(registry.tags("app"), vec!["v1"]);
}

#[test]
fn a_file_that_is_not_a_tar_is_refused_with_an_escaped_excerpt_never_its_raw_bytes() {
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.tar");
    let mut bytes = b"\x1b[2J\x1b[31mFAKE: pushed everything\r\n".to_vec();
    bytes.resize(4096, b'7');
    std::fs::write(&path, &bytes).unwrap();
    for source in [
        format!("docker-archive:{}", path.display()),
        format!("oci-archive:{}", path.display()),
    ] {
        let run = daemonless(&moto, &registry, &source).run();
        refused(&run, &registry, &["not a readable tar archive"], &source);
        assert!(
            !run.output().contains('\x1b') && !run.output().contains("\r\n"),
            "raw bytes of the file reached the output:\n{:?}",
            run.output()
        );
    }
}

#[test]
fn hostile_oci_layouts_are_refused_before_any_write_and_a_deep_index_is_stored_whole() {
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let dir = tempfile::tempdir().unwrap();
    let image = SmallImage::new("layout");
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        let layout = Layout::new(&dir.path().join(format!("layout-{n}")));
        let top = layout.image(&image);
        (layout, top)
    };

    // A blob that is a symlink to a host file whose digest matches.
    let (layout, top) = fresh();
    layout.top(&top);
    let config_digest = digest(&image.config);
    let host_copy = dir.path().join("host-config.json");
    std::fs::write(&host_copy, &image.config).unwrap();
    std::fs::remove_file(layout.blob_path(&config_digest)).unwrap();
    std::os::unix::fs::symlink(&host_copy, layout.blob_path(&config_digest)).unwrap();
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(
        &run,
        &registry,
        &["symbolic link to", "outside the input"],
        "a symlinked blob",
    );

    // blobs/ itself a symlink outside the layout.
    let (layout, top) = fresh();
    layout.top(&top);
    let moved = dir.path().join("moved-blobs");
    std::fs::rename(layout.dir.join("blobs"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, layout.dir.join("blobs")).unwrap();
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(&run, &registry, &["outside the input"], "a symlinked blobs directory");

    // The manifest blob a symlink to /dev/zero: refused at once, nothing read.
    let (layout, top) = fresh();
    layout.top(&top);
    let manifest_digest = top["digest"].as_str().unwrap();
    std::fs::remove_file(layout.blob_path(manifest_digest)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", layout.blob_path(manifest_digest)).unwrap();
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(
        &run,
        &registry,
        &["`/dev/zero`, outside the input"],
        "a manifest that is /dev/zero",
    );

    // A layer whose bytes are not its digest's (same size).
    let (layout, top) = fresh();
    layout.top(&top);
    let gz = image.gzip_layer();
    let layer_path = layout.blob_path(&digest(&gz));
    let mut altered = gz.clone();
    let last = altered.len() - 9;
    altered[last] ^= 0xff;
    std::fs::write(&layer_path, &altered).unwrap();
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(&run, &registry, &["does not match its digest"], "an altered layer");

    // A layer that is a valid gzip but not the layer its config names (digest and size made to match).
    let (layout, _) = fresh();
    let other = SmallImage::new("another layer");
    let config = layout.blob("application/vnd.oci.image.config.v1+json", &image.config);
    let layer = layout.blob("application/vnd.oci.image.layer.v1.tar+gzip", &other.gzip_layer());
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
    let top = layout.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    layout.top(&top);
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(
        &run,
        &registry,
        &["has diff id", "but the config names"],
        "a layer not the config's",
    );

    // A cycle: an index stored under the digest its own child descriptor names (only a lie can make one).
    let (layout, image_top) = fresh();
    let index = layout.index(&[image_top]);
    let fake = digest(b"not the index");
    let bytes = std::fs::read(layout.blob_path(index["digest"].as_str().unwrap())).unwrap();
    std::fs::write(layout.blob_path(&fake), bytes).unwrap();
    let mut child = index.clone();
    child["digest"] = json!(fake);
    let outer = layout.index(&[child]);
    layout.top(&outer);
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(
        &run,
        &registry,
        &["does not match its digest"],
        "a cycle through a lying digest",
    );

    // Indexes nested past the limit.
    let (layout, mut top) = fresh();
    for _ in 0..20 {
        top = layout.index(&[top]);
    }
    layout.top(&top);
    let run = daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display())).run();
    refused(&run, &registry, &["nest more than 16 deep"], "indexes 20 deep");

    // An oci-archive whose blob is a symlink to a host file.
    let archive = dir.path().join("layout.tar");
    let (layout, top) = fresh();
    layout.top(&top);
    let mut entries = Archive::default();
    for name in ["oci-layout", "index.json"] {
        entries = entries.with(Entry::File(name.into(), std::fs::read(layout.dir.join(name)).unwrap()));
    }
    for entry in std::fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = format!("blobs/sha256/{}", entry.file_name().to_str().unwrap());
        if name.ends_with(config_digest.trim_start_matches("sha256:")) {
            entries = entries.with(Entry::Symlink(name, host_copy.display().to_string()));
        } else {
            entries = entries.with(Entry::File(name, std::fs::read(entry.path()).unwrap()));
        }
    }
    entries.write(&archive);
    let run = daemonless(&moto, &registry, &format!("oci-archive:{}", archive.display())).run();
    refused(
        &run,
        &registry,
        &["outside the input"],
        "an oci-archive with a symlinked blob",
    );

    // And 10 deep is followed whole: every level lands, the image pulls.
    let (layout, mut top) = fresh();
    let mut levels = vec![top["digest"].as_str().unwrap().to_string()];
    for _ in 0..10 {
        top = layout.index(&[top]);
        levels.push(top["digest"].as_str().unwrap().to_string());
    }
    layout.top(&top);
    daemonless(&moto, &registry, &format!("oci:{}", layout.dir.display()))
        .run()
        .success();
    for level in &levels {
        assert!(registry.manifest("app", level).is_some(), "{level} is missing");
    }
    assert_eq!(
        registry.digest("app", "v1").as_deref(),
        levels.last().map(String::as_str)
    );
}

#[test]
fn a_large_blob_uploading_beside_the_checks_of_a_damaged_layout_never_lands() {
    let moto = Moto::start();
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start_under(DEFAULT_ACCOUNT, storage.path());
    let dir = tempfile::tempdir().unwrap();
    // A 32 MiB layer of incompressible bytes whose blob hashes to its digest (so its upload starts at once
    // and runs while every blob is hashed), but whose diff id is not the one the config names: found only
    // after every blob has been read.
    let mut noise = Vec::with_capacity(32 << 20);
    let mut block = [0u8; 32];
    while noise.len() < 32 << 20 {
        use sha2::Digest as _;
        block = sha2::Sha256::digest(block).into();
        noise.extend_from_slice(&block);
    }
    let mut header = tar::Header::new_ustar();
    header.set_size(noise.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_data(&mut header, "noise.bin", noise.as_slice()).unwrap();
    let big = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    std::io::Write::write_all(&mut gz, &big).unwrap();
    let big_gz = gz.finish().unwrap();
    let small = SmallImage::new("beside a large layer");
    let layout_naming = |name: &str, big_diff_id: &str| {
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [big_diff_id, small.diff_id]},
        });
        let layout = Layout::new(&dir.path().join(name));
        let config = layout.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let big_layer = layout.blob("application/vnd.oci.image.layer.v1.tar+gzip", &big_gz);
        let small_layer = layout.blob("application/vnd.oci.image.layer.v1.tar+gzip", &small.gzip_layer());
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
            "layers": [big_layer, small_layer]});
        let top = layout.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
        layout.top(&top);
        format!("oci:{}", layout.dir.display())
    };
    let big_digest = digest(&big_gz);

    let damaged = layout_naming("damaged", &digest(b"not the layer"));
    let run = daemonless(&moto, &registry, &damaged).run();
    refused(
        &run,
        &registry,
        &["has diff id", "but the config names"],
        "a large layer not the config's",
    );
    // The large blob's upload had begun (bytes in an upload session of the registry's), yet nothing landed.
    let files = walkdir(storage.path());
    let sent: u64 = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("/_uploads/") && p.ends_with("data"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        sent > 0,
        "the large blob's upload never started: this test no longer tests it\n{}",
        run.output()
    );
    let hex = big_digest.trim_start_matches("sha256:");
    assert!(
        !files.iter().any(|p| p.to_string_lossy().contains(hex)),
        "the large blob was committed\n{}",
        run.output()
    );

    // Repaired, the layout lands, and a re-run sends nothing (the large blob is found, not sent again).
    let repaired = layout_naming("repaired", &digest(&big));
    let run = daemonless(&moto, &registry, &repaired).run();
    run.success();
    run.says("3 uploaded, 0 mounted, 0 already there");
    assert!(
        registry.blob("app", &big_digest) == big_gz,
        "the large blob landed altered"
    );
    let again = daemonless(&moto, &registry, &repaired).run();
    again.success();
    again.says("0 uploaded, 0 mounted, 3 already there");
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        match entry.file_type().unwrap().is_dir() {
            true => found.extend(walkdir(&path)),
            false => found.push(path),
        }
    }
    found
}

/// A promote from `source` (a host that is neither ECR nor a destination) to `target`.
fn promote_from(moto: &Moto, target: &Registry, source: &str) -> Step {
    Step::aws(moto)
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", source)
        .env("PLUGIN_REPO", "prod")
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_REGISTRY", &target.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_TIMEOUT", "10s")
}

#[test]
fn a_foreign_source_is_read_anonymously_and_never_receives_the_ecr_token() {
    let moto = Moto::start();
    let target = Registry::start(DEFAULT_ACCOUNT);
    let (store, manifest_digest) = Store::with_image(&SmallImage::new("foreign"));
    let rogue = Rogue::start(move |m, p| registry_answer(&store, m, p));
    let run = promote_from(&moto, &target, &format!("{}/app:v1", rogue.host)).run();
    run.success();
    run.says(&format!("source: {} read anonymously", rogue.host));
    // The source host is named once in the source line.
    run.says(&format!("source: {}/app:v1 (image {manifest_digest})", rogue.host));
    let seen = rogue.seen();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(
        seen.iter().all(|s| !s.authorization),
        "the foreign source received an Authorization header: {seen:?}"
    );
    assert_eq!(target.digest("prod", "v1"), Some(manifest_digest));

    // A foreign source that wants credentials: red, naming the host and that none were sent.
    let closed = Rogue::start(|_, _| Answer::status(401));
    let run = promote_from(&moto, &target, &format!("{}/app:v2", closed.host)).run();
    run.failure(&[
        &closed.host,
        "refused anonymous access",
        "no credentials were sent",
        "fix:",
    ]);
    assert!(closed.seen().iter().all(|s| !s.authorization));
}

#[test]
fn a_pinned_digest_is_enforced_and_blobs_are_checked_as_they_stream() {
    let moto = Moto::start();
    let target = Registry::start(DEFAULT_ACCOUNT);
    let (store, pinned) = Store::with_image(&SmallImage::new("pinned"));
    let (other, _) = Store::with_image(&SmallImage::new("something else"));

    // Other bytes for the pinned digest, with a header claiming it, and with none.
    for claim in [true, false] {
        let (other, pinned_for) = (other.clone(), pinned.clone());
        let liar = Rogue::start(move |m, p| {
            if p.ends_with(&format!("/manifests/{pinned_for}")) {
                let bytes = other.manifests["v1"].1.clone();
                let answer = Answer::ok(OCI_MANIFEST, bytes);
                return if claim {
                    answer.header("Docker-Content-Digest", &pinned_for)
                } else {
                    answer
                };
            }
            registry_answer(&other, m, p)
        });
        let run = promote_from(&moto, &target, &format!("{}/app@{pinned}", liar.host)).run();
        run.failure(&["not the", &pinned, "a pinned digest promises exactly those bytes"]);
        assert!(target.repositories().is_empty(), "something was written");
    }

    // The right manifest, but a layer's bytes altered: nothing is tagged.
    let layer_digest = store
        .blobs
        .keys()
        .find(|d| store.blobs[*d].starts_with(&[0x1f, 0x8b]))
        .unwrap()
        .clone();
    let tampered = store.clone();
    let liar = Rogue::start(move |m, p| {
        if p.ends_with(&format!("/blobs/{layer_digest}")) {
            let mut bytes = tampered.blobs[&layer_digest].clone();
            bytes[20] ^= 0xff;
            return Answer::ok("application/octet-stream", bytes);
        }
        registry_answer(&tampered, m, p)
    });
    let run = promote_from(&moto, &target, &format!("{}/app@{pinned}", liar.host)).run();
    run.failure(&[
        "hash to",
        "not the blob",
        "refused, nothing of it was stored",
        &liar.host,
    ]);
    assert!(
        target.tags("prod").is_empty(),
        "a tag was written: {:?}",
        target.tags("prod")
    );
}

#[test]
fn a_huge_manifest_an_endless_referrer_chain_and_a_redirect_loop_end_red_in_bounded_time() {
    let moto = Moto::start();
    let target = Registry::start(DEFAULT_ACCOUNT);

    // A 100 MiB manifest: refused by its length, never read.
    let huge = Rogue::start(|_, p| {
        if p.contains("/manifests/") {
            return Answer {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: Body::Zeros(100 << 20),
            };
        }
        Answer::status(200)
    });
    let run = promote_from(&moto, &target, &format!("{}/app:v1", huge.host)).run();
    run.failure(&["more than the 4194304", &huge.host]);
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);

    // Every subject gets one fresh referrer, forever.
    let (store, _) = Store::with_image(&SmallImage::new("chain"));
    let made = std::sync::Mutex::new(std::collections::BTreeMap::<String, Vec<u8>>::new());
    let chain = Rogue::start(move |m, p| {
        if let Some(subject) = p.strip_prefix("/v2/app/referrers/") {
            let referrer = json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-chain",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
                "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
            });
            let bytes = serde_json::to_vec(&referrer).unwrap();
            let d = digest(&bytes);
            made.lock().unwrap().insert(d.clone(), bytes.clone());
            let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "artifactType": "application/x-chain", "digest": d, "size": bytes.len()}]});
            return Answer::ok(OCI_INDEX, serde_json::to_vec(&index).unwrap());
        }
        if let Some(d) = p.strip_prefix("/v2/app/manifests/")
            && let Some(bytes) = made.lock().unwrap().get(d)
        {
            return Answer::ok(OCI_MANIFEST, bytes.clone());
        }
        registry_answer(&store, m, p)
    });
    let run = promote_from(&moto, &target, &format!("{}/app:v1", chain.host)).run();
    run.failure(&["more than 8 levels deep", "PLUGIN_REFERRERS=none"]);
    assert!(target.repositories().is_empty(), "something was written");
    let lists = chain.seen().iter().filter(|s| s.path.contains("/referrers/")).count();
    assert!(lists <= 10, "{lists} referrer lists read");

    // A blob that redirects to itself: red, blamed on the source, not the target.
    let (store, _) = Store::with_image(&SmallImage::new("loop"));
    let looping = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let me = looping.clone();
    let redirecting = Rogue::start(move |m, p| {
        if p.contains("/blobs/") {
            return Answer::redirect(&format!("http://{}{p}", me.get().unwrap()));
        }
        registry_answer(&store, m, p)
    });
    looping.set(redirecting.host.clone()).unwrap();
    let run = promote_from(&moto, &target, &format!("{}/app:v1", redirecting.host)).run();
    run.failure(&[
        "redirect loop",
        &format!("fix: check the registry {}", redirecting.host),
    ]);
    assert!(
        !run.output()
            .contains(&format!("the registry {} is failing", target.host)),
        "the loop was blamed on the target:\n{}",
        run.output()
    );
    assert!(target.tags("prod").is_empty());
}

#[test]
fn a_redirect_to_another_host_carries_no_authorization_and_the_copy_lands() {
    let moto = Moto::start();
    let target = Registry::start(DEFAULT_ACCOUNT);
    let (store, manifest_digest) = Store::with_image(&SmallImage::new("redirected"));
    let blobs = store.clone();
    let storage = Rogue::start(move |m, p| {
        let d = p.rsplit('/').next().unwrap_or_default();
        match blobs.blobs.get(d) {
            Some(bytes) if m == "GET" => Answer::ok("application/octet-stream", bytes.clone()),
            _ => Answer::status(404),
        }
    });
    let storage_host = storage.host.clone();
    // An ECR-like source (read with a read role, so it does get the token) whose blob GETs redirect to
    // storage on another host.
    let source = Rogue::start(move |m, p| {
        if m == "GET" && p.contains("/blobs/") {
            let d = p.rsplit('/').next().unwrap_or_default();
            return Answer::redirect(&format!("http://{storage_host}/store/{d}"));
        }
        registry_answer(&store, m, p)
    });
    let run = promote_from(&moto, &target, &format!("{}/app:v1", source.host))
        .env("PLUGIN_READ_ROLE_ARN", READ_ROLE)
        .run();
    run.success();
    assert!(source.seen().iter().any(|s| s.authorization), "the source got no token");
    let fetched = storage.seen();
    assert!(fetched.len() >= 2, "{fetched:?}");
    assert!(
        fetched.iter().all(|s| !s.authorization),
        "the redirect target received an Authorization header: {fetched:?}"
    );
    assert_eq!(target.digest("prod", "v1"), Some(manifest_digest));
}

#[test]
fn scratch_space_problems_name_tmpdir_before_any_call_and_stale_directories_go() {
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let dir = tempfile::tempdir().unwrap();
    let image = SmallImage::new("scratch");
    let archive = dir.path().join("image.tar");
    image.docker_archive("config.json", &["layer.tar"]).write(&archive);
    let source = format!("docker-archive:{}", archive.display());
    let tripwire = testbed::Tripwire::new();

    // Missing, and not a directory: named before any network call.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    for tmpdir in [dir.path().join("missing"), file] {
        let run = daemonless(&moto, &registry, &source)
            .env("AWS_ENDPOINT_URL", &tripwire.url)
            .env("TMPDIR", &tmpdir.display().to_string())
            .run();
        run.failure(&[&format!("TMPDIR={}", tmpdir.display()), "fix: set TMPDIR"]);
        assert!(!tripwire.touched(), "a network call was made");
    }

    // A full one (a 1 MiB tmpfs, as root; skipped where mounting is not allowed).
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let big = dir.path().join("big.tar");
        let mut layer_file = Vec::new();
        let mut x: u64 = 7;
        for _ in 0..(3 << 20) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            layer_file.push((x >> 24) as u8);
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(layer_file.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_data(&mut header, "random.bin", &layer_file[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let config = serde_json::to_vec(&json!({"rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}})).unwrap();
        Archive::default()
            .with(Entry::File("config.json".into(), config))
            .with(Entry::File("layer.tar".into(), layer))
            .with(Entry::File(
                "manifest.json".into(),
                docker_manifest("config.json", &["layer.tar"]),
            ))
            .write(&big);
        let run = daemonless(&moto, &registry, &format!("docker-archive:{}", big.display()))
            .env("TMPDIR", &small.display().to_string())
            .run();
        let umounted = std::process::Command::new("umount").arg(&small).status();
        run.failure(&[&format!("TMPDIR={} is full", small.display()), "fix: set TMPDIR"]);
        assert!(umounted.is_ok_and(|s| s.success()));
        assert!(registry.repositories().is_empty());
    } else {
        eprintln!("skipped the full-TMPDIR case: mounting a tmpfs is not allowed here");
    }

    // A scratch directory left by a killed run (its lock file free) is removed by the next run; a run,
    // red or green, leaves none of its own.
    let tmpdir = dir.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let stale = tmpdir.join("ecr-step-docker-archive-99999-1");
    std::fs::create_dir_all(stale.join("input")).unwrap();
    std::fs::write(stale.join(".lock"), b"").unwrap();
    let hostile = dir.path().join("hostile.tar");
    image
        .docker_archive("config.json", &["layer.tar"])
        .with(Entry::CharDevice("zero".into()))
        .write(&hostile);
    daemonless(&moto, &registry, &format!("docker-archive:{}", hostile.display()))
        .env("TMPDIR", &tmpdir.display().to_string())
        .run()
        .failure(&["character device"]);
    daemonless(&moto, &registry, &source)
        .env("TMPDIR", &tmpdir.display().to_string())
        .run()
        .success();
    testbed::assert_no_scratch_in(&tmpdir);
}

#[test]
fn a_source_whose_indexes_nest_without_end_is_refused_before_any_tag() {
    let moto = Moto::start();
    let target = Registry::start(DEFAULT_ACCOUNT);
    let (mut store, image) = Store::with_image(&SmallImage::new("deep"));
    // 20 indexes, each the only child of the next: every digest true, the depth past the limit.
    let (mut top, mut size) = (image, store.manifests["v1"].1.len());
    let mut media_type = OCI_MANIFEST;
    for _ in 0..20 {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": media_type, "digest": top, "size": size}]});
        let bytes = serde_json::to_vec(&index).unwrap();
        (top, size, media_type) = (digest(&bytes), bytes.len(), OCI_INDEX);
        store.manifests.insert(top.clone(), (OCI_INDEX.into(), bytes));
    }
    let bytes = store.manifests[&top].1.clone();
    store.manifests.insert("v1".into(), (OCI_INDEX.into(), bytes));
    let deep = Rogue::start(move |m, p| registry_answer(&store, m, p));
    let run = promote_from(&moto, &target, &format!("{}/app:v1", deep.host)).run();
    run.failure(&["nests indexes more than 16 deep", &deep.host]);
    assert!(target.tags("prod").is_empty(), "a tag was written");
}
