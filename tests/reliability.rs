//! Reliability, round 2: a green run never lies (a registry that stores nothing, another run retagging
//! the shared local tag), nothing is unbounded (an AWS endpoint or a registry that never answers), no
//! login is written that the registry refuses, concurrent logins lose nothing, and what the step prints
//! from the CI's variables cannot forge a line.

mod testbed;

use std::time::{Duration, Instant};
use testbed::proxy::{Fault, FaultProxy, Rule};
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

fn lie_about_manifest_puts() -> Vec<Rule> {
    vec![Rule {
        method: "PUT",
        path: "/manifests/",
        fault: Fault::Swallow,
        times: 1000,
    }]
}

#[test]
fn a_registry_that_accepts_a_manifest_and_stores_nothing_never_gets_a_green_run() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(50_000));
    let liar = FaultProxy::start(&registry.host, lie_about_manifest_puts());
    let outputs = tempfile::tempdir().unwrap();
    let json = outputs.path().join("out.json");
    // The step's own transfer (each tag read first, or not), and the engine's push (its tag read back by
    // the engine writer itself).
    for (skip_existing, via) in [("false", "registry"), ("true", "registry"), ("false", "engine")] {
        let run = Step::push(&moto, &registry, &image, "app")
            .env("PLUGIN_REGISTRY", &liar.host)
            .env("PLUGIN_SKIP_EXISTING", skip_existing)
            .env("PLUGIN_PUSH_VIA", via)
            .env("PLUGIN_OUTPUT_FILE", &json.display().to_string())
            .run();
        run.failure(&["does not exist when read back", "the registry did not store it", "fix:"]);
        assert!(
            !run.stdout.lines().any(|l| l.starts_with("pushed: ")),
            "claimed a push:\n{}",
            run.stdout
        );
        assert!(!json.exists(), "outputs were written for a push that did not land");
    }
    assert!(liar.injected() >= 3);
    assert_eq!(registry.digest("app", "latest"), None);

    // Promote: the source is real, the destination lies.
    let seed = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run();
    seed.success();
    let source = format!("{}/app:v1", registry.host);
    let run = Step::promote(&moto, &liar.host, &source, "prod", "v1").run();
    run.failure(&["prod:v1 does not exist when read back", "fix:"]);
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("promoted: ")),
        "claimed a promote:\n{}",
        run.stdout
    );
    assert_eq!(registry.digest("prod", "v1"), None);
}

#[test]
fn two_runs_pushing_different_images_to_one_tag_on_one_engine_never_report_the_other_image() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let images = [Image::random(2_000_000), Image::random(2_000_000)];
    let mut honest_successes = 0;
    for round in 0..5 {
        let tag = format!("race{round}");
        let runs: Vec<_> = images
            .iter()
            .map(|image| {
                // The engine path: both runs share the local tag <registry>/app:<tag>.
                let step = Step::push(&moto, &registry, image, "app")
                    .env("PLUGIN_TAGS", &tag)
                    .env("PLUGIN_PUSH_VIA", "engine");
                std::thread::spawn(move || step.run())
            })
            .collect();
        let runs: Vec<testbed::Run> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        for (image, run) in images.iter().zip(&runs) {
            if run.code == Some(0) {
                run.success();
                // What it reported must be its own image: the manifest's config is the image id.
                let digest = run.reported_digest(&format!("{}/app:{tag}", registry.host));
                let (bytes, _, _) = registry.manifest("app", &digest).expect("the reported digest exists");
                let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(
                    manifest["config"]["digest"].as_str(),
                    Some(image.id.as_str()),
                    "round {round}: a run reported another image's digest:\n{}",
                    run.output()
                );
                honest_successes += 1;
            } else {
                run.failure(&[&tag]);
                let out = run.output();
                assert!(
                    out.contains("another run retagged") || out.contains("another writer replaced the tag"),
                    "round {round}: a failure that does not say why:\n{out}"
                );
            }
        }
    }
    assert!(honest_successes >= 5, "only {honest_successes} of 10 runs succeeded");
}

#[test]
fn an_aws_endpoint_that_never_answers_fails_within_the_timeout_and_is_named() {
    let (registry, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let silent = testbed::Tripwire::new();
    let started = Instant::now();
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &silent.url)
        .env("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_TIMEOUT", "3s")
        .run();
    let elapsed = started.elapsed();
    run.failure(&[&format!("{} from AWS_ENDPOINT_URL", silent.url)]);
    assert!(silent.touched(), "the step never called the endpoint");
    // Before: 3 attempts of 3 s each plus backoff. Now the timeout bounds the whole call.
    assert!(elapsed < Duration::from_secs(7), "took {elapsed:?}:\n{}", run.output());
}

#[test]
fn an_unreachable_aws_endpoint_is_named_with_where_it_came_from() {
    let (registry, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let port = testbed::ClosedPort::new();
    let closed = format!("http://{}", port.host());
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &closed)
        .env("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .run();
    run.failure(&[&format!("(endpoint: {closed} from AWS_ENDPOINT_URL)")]);
}

#[test]
fn a_promote_destination_that_never_answers_fails_within_the_timeout_naming_the_registry() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(50_000));
    Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run()
        .success();
    let target = Registry::start(DEFAULT_ACCOUNT);
    let stall = |method| Rule {
        method,
        path: "/v2/",
        fault: Fault::Stall,
        times: 1000,
    };
    let hang = FaultProxy::start(
        &target.host,
        vec![stall("HEAD"), stall("POST"), stall("PUT"), stall("GET")],
    );
    let source = format!("{}/app:v1", registry.host);
    let started = Instant::now();
    let run = Step::promote(&moto, &hang.host, &source, "app", "v1")
        .env("PLUGIN_TIMEOUT", "3s")
        .run();
    let elapsed = started.elapsed();
    run.failure(&[&format!("the registry {} did not answer within 3s", hang.host), "fix:"]);
    // Before: 6 attempts of the timeout each.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}:\n{}", run.output());
}

#[test]
fn login_refused_by_the_registry_writes_nothing_and_fails() {
    let moto = Moto::start();
    // The registry belongs to another account, so moto's token for the default account is refused.
    let registry = Registry::start("210987654321");
    let config = tempfile::tempdir().unwrap();
    let run = Step::login(&moto, &registry, &config.path().display().to_string()).run();
    run.failure(&["refused the ECR token", "nothing was written to the docker config"]);
    assert!(!run.stdout.contains("login: "), "{}", run.stdout);
    assert!(!config.path().join("config.json").exists());
}

#[test]
fn ten_concurrent_logins_into_one_docker_config_keep_every_entry() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    // Ten hosts for one registry: each proxy is a registry host of its own to the step.
    let hosts: Vec<FaultProxy> = (0..10).map(|_| FaultProxy::start(&registry.host, vec![])).collect();
    for round in 0..3 {
        let config = tempfile::tempdir().unwrap();
        let dir = config.path().display().to_string();
        let runs: Vec<_> = hosts
            .iter()
            .map(|proxy| {
                let step = Step::login(&moto, &registry, &dir).env("PLUGIN_REGISTRY", &proxy.host);
                std::thread::spawn(move || step.run())
            })
            .collect();
        for run in runs {
            run.join().unwrap().success();
        }
        let text = std::fs::read_to_string(config.path().join("config.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let auths = json["auths"].as_object().unwrap();
        for proxy in &hosts {
            assert!(
                auths.contains_key(&proxy.host),
                "round {round}: {} lost:\n{text}",
                proxy.host
            );
        }
    }
}

#[test]
fn a_login_that_a_credential_store_would_shadow_fails_and_a_symlinked_config_stays_a_link() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("config.json");
    let store = r#"{"credsStore":"ecr-login"}"#;
    std::fs::write(&path, store).unwrap();
    let dir = config.path().display().to_string();
    let run = Step::login(&moto, &registry, &dir).run();
    run.failure(&["credsStore", "docker would ignore this login", "fix:"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), store);

    let real = config.path().join("shared.json");
    std::fs::write(&real, "{}").unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&real, &path).unwrap();
    Step::login(&moto, &registry, &dir).run().success();
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains(&registry.host));
}

#[test]
fn a_branch_with_control_characters_cannot_forge_a_line_of_a_skipped_run() {
    let image = Image::random(1000);
    let aws = testbed::Tripwire::new();
    let forged = "feature\r\npushed: 127.0.0.1:5000/app:latest sha256:feed\u{1b}[2K";
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &aws.url)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_BRANCH", forged)
        .env("PLUGIN_BRANCHES_ONLY", "main")
        .run();
    run.success();
    run.says("skipped: branch feature\\r\\npushed: ");
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("pushed:")) && !run.stdout.contains('\u{1b}'),
        "{:?}",
        run.stdout
    );
    assert!(!aws.touched());
}

#[test]
fn check_mode_with_create_repository_does_not_suggest_setting_it() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let run = Step::aws(&moto)
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "not-yet")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run();
    run.success();
    run.says("PLUGIN_CREATE_REPOSITORY=true (set) creates it");
    assert!(
        !run.stdout.contains("or set PLUGIN_CREATE_REPOSITORY"),
        "{}",
        run.stdout
    );
    let without = Step::aws(&moto)
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "not-yet")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .run();
    without.failure(&["does not exist", "set PLUGIN_CREATE_REPOSITORY=true"]);
}
