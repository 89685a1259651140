//! Promote end to end: images already in a distribution registry are copied to new repositories, tags and
//! registries (two registries standing for two accounts), checked in the target registry itself.

mod testbed;

use testbed::proxy::{Fault, FaultProxy, Rule};
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Run, Step};

const SOURCE_ACCOUNT: &str = "111111111111";
const READER: &str = "arn:aws:iam::111111111111:role/reader";

/// Push `image` to `registry` as `repo:tag` with credentials of the registry's account; returns the digest.
fn seed(moto: &Moto, registry: &Registry, image: &Image, repo: &str, tag: &str) -> String {
    let mut step = Step::push(moto, registry, image, repo).env("PLUGIN_TAGS", tag);
    if registry.account != DEFAULT_ACCOUNT {
        step = step.env(
            "PLUGIN_ROLE_ARN",
            &format!("arn:aws:iam::{}:role/seed", registry.account),
        );
    }
    let run = step.run();
    run.success();
    run.reported_digest(&format!("{}/{repo}:{tag}", registry.host))
}

fn promote(moto: &Moto, target: &Registry, source: &str, repo: &str, tags: &str) -> Step {
    Step::promote(moto, &target.host, source, repo, tags)
}

fn promoted(run: &Run, registry: &Registry, repo: &str, tag: &str) -> String {
    run.reported("promoted", &format!("{}/{repo}:{tag}", registry.host))
}

#[test]
fn a_retag_in_the_same_repository_writes_only_the_manifest() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(200_000));
    let digest = seed(&moto, &registry, &image, "app", "v1");
    let run = promote(&moto, &registry, "app:v1", "app", "v2,stable").run();
    run.success();
    assert!(!run.stdout.contains("copied:"), "a retag copied blobs:\n{}", run.stdout);
    for tag in ["v2", "stable"] {
        assert_eq!(promoted(&run, &registry, "app", tag), digest);
        assert_eq!(registry.digest("app", tag), Some(digest.clone()));
    }
}

#[test]
fn another_repository_in_the_same_registry_gets_its_blobs_mounted() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(200_000));
    let digest = seed(&moto, &registry, &image, "team/app", "v1");
    let run = promote(&moto, &registry, &format!("team/app@{digest}"), "prod/app", "1.0").run();
    run.success();
    run.says("0 uploaded, 2 mounted, 0 already there");
    assert_eq!(registry.digest("prod/app", "1.0"), Some(digest));
}

#[test]
fn another_account_is_read_with_the_read_role_and_blobs_stream_across() {
    let moto = Moto::start();
    let (source, target, image) = (
        Registry::start(SOURCE_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(3_000_000),
    );
    let digest = seed(&moto, &source, &image, "central/app", "v1");
    let reference = format!("{}/central/app:v1", source.host);

    // Without the read role the run's own token (account 123456789012) is refused by the source.
    let run = promote(&moto, &target, &reference, "app", "v1").run();
    run.failure(&[&format!("the registry {} refused the ECR token", source.host)]);
    assert!(target.tags("app").is_empty());

    let run = promote(&moto, &target, &reference, "app", "v1")
        .env("PLUGIN_READ_ROLE_ARN", READER)
        .run();
    run.success();
    run.says("source: read with role arn:aws:iam::111111111111:role/reader");
    run.says("2 uploaded, 0 mounted");
    assert_eq!(promoted(&run, &target, "app", "v1"), digest);
    assert_eq!(target.digest("app", "v1"), Some(digest));
}

#[test]
fn a_multi_arch_index_is_copied_whole_with_every_child() {
    let moto = Moto::start();
    let (source, target) = (Registry::start(DEFAULT_ACCOUNT), Registry::start(DEFAULT_ACCOUNT));
    let (amd64, arm64) = (Image::random(100_000), Image::random(100_000));
    let children: Vec<(String, &str)> = vec![
        (seed(&moto, &source, &amd64, "app", "amd64"), "amd64"),
        (seed(&moto, &source, &arm64, "app", "arm64"), "arm64"),
    ];
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, arch)| {
            let (bytes, media_type, _) = source.manifest("app", digest).unwrap();
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len(),
                               "platform": {"architecture": arch, "os": "linux"}})
        })
        .collect();
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": list_type, "manifests": manifests});
    let index_bytes = serde_json::to_vec_pretty(&index).unwrap();
    source.put_manifest("app", "multi", list_type, &index_bytes);
    let index_digest = source.digest("app", "multi").unwrap();

    let run = promote(&moto, &target, &format!("{}/app:multi", source.host), "app", "1.0").run();
    run.success();
    run.says(&format!("(index {index_digest})"));
    assert_eq!(target.digest("app", "1.0"), Some(index_digest.clone()));
    let (copied, _, _) = target.manifest("app", "1.0").unwrap();
    assert_eq!(copied, index_bytes, "the index bytes changed");
    for (digest, _) in &children {
        assert!(
            target.manifest("app", digest).is_some(),
            "child {digest} missing in the target"
        );
    }
    // Through the engine, which would keep one platform: refused before anything is written.
    let run = promote(&moto, &target, &format!("{}/app:multi", source.host), "engine", "1.0")
        .env("PLUGIN_PROMOTE_VIA", "engine")
        .run();
    run.failure(&["is a multi-platform index", "nothing was written", "fix:"]);
    assert!(target.tags("engine").is_empty());
}

#[test]
fn a_rerun_finds_the_same_digest_and_succeeds() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let digest = seed(&moto, &registry, &image, "app", "v1");
    let step = promote(&moto, &registry, "app:v1", "prod", "v1");
    step.run().success();
    let again = step.run();
    again.success();
    assert_eq!(again.reported("skipped", &format!("{}/prod:v1", registry.host)), digest);
    again.says("1 already there");
}

#[test]
fn a_missing_source_is_named() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    seed(&moto, &registry, &image, "app", "v1");
    let run = promote(&moto, &registry, "app:nope", "prod", "v1").run();
    run.failure(&["PLUGIN_SOURCE=app:nope: no such image in", "repository app, tag nope"]);
    assert!(registry.tags("prod").is_empty());
}

#[test]
fn an_immutable_tag_with_another_digest_is_refused_naming_both() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let (old, new) = (Image::random(1000), Image::random(1000));
    let old_digest = seed(&moto, &registry, &old, "app", "old");
    let new_digest = seed(&moto, &registry, &new, "app", "new");
    moto.aws(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "prod",
        "--image-tag-mutability",
        "IMMUTABLE",
    ]);
    promote(&moto, &registry, "app:old", "prod", "v1").run().success();
    let run = promote(&moto, &registry, "app:new", "prod", "v1").run();
    run.failure(&[&format!(
        "tag v1 already holds {old_digest} in the immutable repository prod and the source is {new_digest}"
    )]);
    assert_eq!(registry.digest("prod", "v1"), Some(old_digest));
}

#[test]
fn several_destinations_all_get_every_tag_and_each_blob_is_read_from_the_source_once() {
    let moto = Moto::start();
    let source = Registry::start(DEFAULT_ACCOUNT);
    let targets: Vec<Registry> = (0..3).map(|_| Registry::start(DEFAULT_ACCOUNT)).collect();
    let image = Image::random(500_000);
    let digest = seed(&moto, &source, &image, "app", "v1");
    // Counts the source's blob reads (passing them on at full speed).
    let reads = FaultProxy::start(
        &source.host,
        vec![Rule {
            method: "GET",
            path: "/blobs/sha256:",
            fault: Fault::Slow(100_000_000),
            times: 100,
        }],
    );
    let hosts: Vec<&str> = targets.iter().map(|t| t.host.as_str()).collect();
    let run = promote(
        &moto,
        &targets[0],
        &format!("{}/app:v1", reads.host),
        "app",
        "v1,latest",
    )
    .env("PLUGIN_REGISTRY", &hosts.join(","))
    .run();
    run.success();
    run.says("summary: 6 of 6 tag(s) written in 3 destination(s)");
    for target in &targets {
        run.says(&format!(
            "to {}/app: 2 uploaded, 0 mounted, 0 already there",
            target.host
        ));
    }
    assert_eq!(
        reads.injected(),
        2,
        "the config and the layer, once each for 3 destinations"
    );
    for target in &targets {
        for tag in ["v1", "latest"] {
            assert_eq!(target.digest("app", tag), Some(digest.clone()), "{} {tag}", target.host);
        }
    }
}

#[test]
fn promote_via_the_engine_pulls_tags_and_pushes() {
    let moto = Moto::start();
    let (source, target, image) = (
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(100_000),
    );
    seed(&moto, &source, &image, "app", "v1");
    let run = promote(&moto, &target, &format!("{}/app:v1", source.host), "app", "v2")
        .env("PLUGIN_PROMOTE_VIA", "engine")
        .run();
    run.success();
    let reported = promoted(&run, &target, "app", "v2");
    assert_eq!(target.digest("app", "v2"), Some(reported));
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &format!("{}/app:v1", source.host)])
        .output();
}

/// Promote a 7 MB image to `destinations` registries, each behind a path of 1 MB/s (about 7 s): every
/// destination shows `progress:` lines with the image's total, and bytes moving.
fn progress_of_a_long_copy(destinations: usize) {
    let moto = Moto::start();
    let (source, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(7_000_000));
    seed(&moto, &source, &image, "app", "v1");
    let targets: Vec<Registry> = (0..destinations).map(|_| Registry::start(DEFAULT_ACCOUNT)).collect();
    let slow: Vec<FaultProxy> = targets
        .iter()
        .map(|t| {
            let rule = Rule {
                method: "PATCH",
                path: "/blobs/uploads/",
                fault: Fault::Slow(1_000_000),
                times: 2,
            };
            FaultProxy::start(&t.host, vec![rule])
        })
        .collect();
    let hosts: Vec<&str> = slow.iter().map(|p| p.host.as_str()).collect();
    let run = Step::promote(&moto, &hosts.join(","), &format!("{}/app:v1", source.host), "app", "v1").run();
    run.success();
    for host in hosts {
        let lines: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("progress: {host}/app ")))
            .collect();
        assert!(!lines.is_empty(), "no progress line for {host}:\n{}", run.stdout);
        for line in &lines {
            // The total is the image's: its config and its one layer.
            assert!(line.contains(" of 6.") && line.ends_with(" MiB/s"), "{line}");
        }
        assert!(
            !lines[0].starts_with(&format!("progress: {host}/app 0.0 MiB")),
            "no bytes counted in the first seconds: {}",
            lines[0]
        );
    }
}

#[test]
fn a_long_copy_across_registries_shows_progress_of_the_images_bytes() {
    progress_of_a_long_copy(1);
}

#[test]
fn a_long_copy_to_two_registries_shows_each_ones_progress_while_the_blobs_are_sent_to_both() {
    progress_of_a_long_copy(2);
}
