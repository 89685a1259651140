//! Push mode end to end: the built binary against moto, a distribution registry and the Docker Engine.

mod testbed;

use std::time::Duration;
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

#[test]
fn every_tag_lands_with_the_digest_the_step_reported() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(300_000));
    let run = Step::push(&moto, &registry, &image, "team/app")
        .env("PLUGIN_TAGS", "v1, latest ,,v1")
        .run();
    run.success();
    assert_eq!(registry.tags("team/app"), vec!["latest", "v1"]);
    for tag in ["v1", "latest"] {
        let reported = run.reported_digest(&format!("{}/team/app:{tag}", registry.host));
        assert_eq!(registry.digest("team/app", tag), Some(reported), "{tag}");
    }
    run.says("credentials: runtime level");
    run.says("summary: 2 of 2 tag(s) written in 1 destination(s)");
    // The local tags the push needed are gone: a shared daemon does not collect them.
    for tag in ["v1", "latest"] {
        let left = testbed::in_engine(&format!("{}/team/app:{tag}", registry.host));
        assert!(!left, "the step left {tag} behind in the engine");
    }
    assert!(testbed::in_engine(&image.name), "the source image itself was removed");
}

/// Through the engine, the step tags the image `<registry>/<repo>:<tag>` to push it: the tags it made go,
/// and a tag the user had made before the run (another name of the same image) stays.
#[test]
fn a_push_through_the_engine_removes_the_local_tags_it_made_and_keeps_the_users() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(20_000));
    let users = format!("{}/app:mine", registry.host);
    testbed::docker(&["tag", &image.name, &users]);
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "mine,made")
        .env("PLUGIN_PUSH_VIA", "engine")
        .run();
    run.success();
    for tag in ["mine", "made"] {
        let reported = run.reported_digest(&format!("{}/app:{tag}", registry.host));
        assert_eq!(registry.digest("app", tag), Some(reported), "{tag}");
    }
    assert!(testbed::in_engine(&users), "the user's own tag {users} was removed");
    let made = format!("{}/app:made", registry.host);
    assert!(
        !testbed::in_engine(&made),
        "the step left its tag {made} behind in the engine"
    );
}

#[test]
fn static_keys_in_the_settings_are_the_account_level() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let run = Step::push(&moto, &registry, &image, "app")
        .remove("AWS_ACCESS_KEY_ID")
        .remove("AWS_SECRET_ACCESS_KEY")
        .env("PLUGIN_ACCESS_KEY", testbed::ACCESS_KEY)
        .env("PLUGIN_SECRET_KEY", testbed::SECRET_KEY)
        .run();
    run.success();
    run.says("credentials: account level, static keys AKIA…MPLE");
    assert!(registry.digest("app", "latest").is_some());
}

#[test]
fn a_registry_that_refuses_the_token_fails_the_step_and_says_so() {
    // The registry accepts only account 111111111111's token; moto issues 123456789012's.
    let (moto, registry, image) = (Moto::start(), Registry::start("111111111111"), Image::random(1000));
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1,v2")
        .run();
    // Found before anything is read or written: every destination answers first.
    run.failure(&[
        &format!("signing in to {}", registry.host),
        "refused the ECR token",
        "issued for account 123456789012",
    ]);
    assert!(!run.stdout.contains("pushed:"), "{}", run.stdout);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn a_missing_source_image_is_named_and_nothing_is_pushed() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let run = Step::aws(&moto)
        .env("PLUGIN_SOURCE", "ecr-step-test-no-such-image:1")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .run();
    run.failure(&["PLUGIN_SOURCE=ecr-step-test-no-such-image:1: no such image"]);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn bad_settings_fail_before_any_network_call() {
    let (registry, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    // No moto at all, and the AWS endpoint is a tripwire that records any connection.
    let aws = testbed::Tripwire::new();
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &aws.url)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "Bad Repo")
        .env("PLUGIN_TAGS", "ok,:bad")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_REPOSITRY", "x")
        .run();
    run.failure(&[
        "invalid settings (nothing was written)",
        "PLUGIN_REPO=`Bad Repo` is not allowed",
        "PLUGIN_TAGS: `:bad` not allowed",
        "PLUGIN_REPOSITRY is not a setting of this step; did you mean PLUGIN_REPO?",
    ]);
    assert!(!aws.touched(), "a bad setting reached the network");
    assert!(!run.output().contains("credentials:"));
}

#[test]
fn a_region_that_contradicts_the_ecr_host_is_refused() {
    let image = Image::random(1000);
    let run = Step::new()
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", "222222222222.dkr.ecr.eu-west-2.amazonaws.com")
        .env("PLUGIN_REGION", "us-east-1")
        .run();
    run.failure(&["PLUGIN_REGION=us-east-1 conflicts with the PLUGIN_REGISTRY host 222222222222.dkr.ecr.eu-west-2.amazonaws.com, which is in eu-west-2"]);
}

#[test]
fn dry_run_resolves_everything_and_pushes_nothing() {
    let (moto, image) = (Moto::start(), Image::random(1000));
    // No PLUGIN_REGISTRY: the token's own registry, which a dry run must not contact.
    let run = Step::push(&moto, &Registry::start(DEFAULT_ACCOUNT), &image, "app")
        .remove("PLUGIN_REGISTRY")
        .env("PLUGIN_DRY_RUN", "true")
        .env("PLUGIN_TAGS", "a,b")
        .run();
    run.success();
    let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    run.says(&format!("plan: push {host}/app:a"));
    run.says("dry run: 2 tag(s) in 1 destination(s) would be written");
    assert!(!run.stdout.contains("pushed:"), "{}", run.stdout);
}

#[test]
fn no_credentials_anywhere_fails_fast_and_says_what_to_set() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let run = Step::push(&moto, &registry, &image, "app")
        .remove("AWS_ACCESS_KEY_ID")
        .remove("AWS_SECRET_ACCESS_KEY")
        .run();
    run.failure(&["no AWS credentials found", "PLUGIN_ACCESS_KEY"]);
    assert!(run.elapsed < Duration::from_secs(5), "took {:?}", run.elapsed);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn a_failed_sign_in_does_not_wait_for_an_engine_that_never_answers() {
    // The engine is looked at while the step signs in; an engine that accepts the connection and never
    // answers (its look would wait 10 s) must not hold back the credentials' failure.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let run = Step::push(&moto, &registry, &image, "app")
        .remove("AWS_ACCESS_KEY_ID")
        .remove("AWS_SECRET_ACCESS_KEY")
        .env("DOCKER_HOST", &format!("unix://{}", socket.display()))
        .run();
    run.failure(&["no AWS credentials found", "PLUGIN_ACCESS_KEY"]);
    assert!(run.elapsed < Duration::from_secs(5), "took {:?}", run.elapsed);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn an_unreachable_engine_is_named_with_where_the_step_looked() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let run = Step::push(&moto, &registry, &image, "app")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .run();
    run.failure(&[
        "cannot reach the Docker Engine at unix:///nonexistent/docker.sock",
        "DOCKER_HOST",
    ]);
}

#[test]
fn help_lists_every_setting() {
    let out = std::process::Command::new(Step::binary())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "PLUGIN_SOURCE",
        "PLUGIN_REPO",
        "PLUGIN_TAGS",
        "PLUGIN_REGISTRY",
        "PLUGIN_SECRET_KEY",
        "PLUGIN_DRY_RUN",
    ] {
        assert!(text.contains(name), "{name} missing from --help");
    }
}

#[test]
fn several_registries_each_get_every_tag() {
    let moto = Moto::start();
    let (first, second, image) = (
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(1000),
    );
    let run = Step::push(&moto, &first, &image, "app")
        .env("PLUGIN_REGISTRY", &format!("{},{}", first.host, second.host))
        .env("PLUGIN_TAGS", "v1,v2")
        .run();
    run.success();
    run.says("summary: 4 of 4 tag(s) written in 2 destination(s)");
    for registry in [&first, &second] {
        for tag in ["v1", "v2"] {
            let reported = run.reported_digest(&format!("{}/app:{tag}", registry.host));
            assert_eq!(registry.digest("app", tag), Some(reported));
        }
    }
}

#[test]
fn the_stages_of_a_run_share_each_registrys_connections() {
    // Through a forwarder that counts connections: every stage of a run (the preflight, what the
    // destination holds, the uploads, the tags and their read-back) reuses the run's connections to the
    // registry, so a run opens about as many as it sends requests at once (over TLS on ECR, each new one is
    // a handshake, and through a proxy a tunnel), not one set per stage.
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(300_000));
    let link = testbed::Link::start(&registry.host, 1 << 30);
    let push = |tag: &str| {
        Step::aws(&moto)
            .env("PLUGIN_SOURCE", &image.name)
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_TAGS", tag)
            .env("PLUGIN_REGISTRY", &link.host)
            .env("PLUGIN_REGION", testbed::REGION)
            .env("PLUGIN_PUSH_VIA", "registry")
            .run()
    };
    push("v1").success();
    // The same image under a new tag: at least nine requests (the preflight's three, the tags and their
    // manifests, the new tag's read-first, write and read-back), one after another but for the manifests
    // read at once.
    let before = link.connections();
    let run = push("v2");
    run.success();
    run.says("only its tags are written");
    let opened = link.connections() - before;
    assert!(
        opened <= 4,
        "the new tag's run opened {opened} connections to the registry\n{}",
        run.output()
    );
}
