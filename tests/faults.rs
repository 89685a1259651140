//! Faults: a fault-injecting proxy on loopback in front of the registry or moto. A red run must name the
//! cause; a green run must mean the image is there.

mod testbed;

use std::io::Read;
use std::time::{Duration, Instant};
use testbed::proxy::{Fault, FaultProxy, Rule};
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

fn rule(method: &'static str, path: &'static str, fault: Fault, times: usize) -> Rule {
    Rule {
        method,
        path,
        fault,
        times,
    }
}

/// Promote from `source` to the registry behind `target_host` (a proxy), registry to registry.
fn promote(moto: &Moto, source: &Registry, target_host: &str) -> Step {
    let source = format!("{}/app:v1", source.host);
    Step::promote(moto, target_host, &source, "app", "v1")
}

fn seeded(moto: &Moto) -> (Registry, Image, String) {
    let source = Registry::start(DEFAULT_ACCOUNT);
    let image = Image::random(300_000);
    let run = Step::push(moto, &source, &image, "app").env("PLUGIN_TAGS", "v1").run();
    run.success();
    let digest = run.reported_digest(&format!("{}/app:v1", source.host));
    (source, image, digest)
}

#[test]
fn a_few_503_and_429_answers_on_writes_are_retried_and_the_image_lands() {
    let moto = Moto::start();
    let (source, _image, digest) = seeded(&moto);
    let target = Registry::start(DEFAULT_ACCOUNT);
    let proxy = FaultProxy::start(
        &target.host,
        vec![
            rule("POST", "/blobs/uploads/", Fault::Status(503), 2),
            rule("PUT", "/manifests/", Fault::Status(429), 2),
        ],
    );
    let run = promote(&moto, &source, &proxy.host).run();
    run.success();
    assert_eq!(proxy.injected(), 4);
    assert_eq!(target.digest("app", "v1"), Some(digest));
}

#[test]
fn writes_failing_past_the_retry_budget_fail_the_run_naming_the_tag() {
    let moto = Moto::start();
    let (source, _image, _) = seeded(&moto);
    let target = Registry::start(DEFAULT_ACCOUNT);
    let proxy = FaultProxy::start(&target.host, vec![rule("PUT", "/manifests/", Fault::Status(503), 100)]);
    let run = promote(&moto, &source, &proxy.host).run();
    run.failure(&[
        &format!("failed: {}/app:v1", proxy.host),
        "HTTP 503",
        "still failing after 6 attempts",
        "fix: the registry",
    ]);
    assert_eq!(proxy.injected(), 6, "one attempt and five retries");
    assert_eq!(target.digest("app", "v1"), None);
}

#[test]
fn a_connection_reset_mid_upload_fails_the_run_naming_the_tag() {
    let moto = Moto::start();
    let (source, _image, _) = seeded(&moto);
    let target = Registry::start(DEFAULT_ACCOUNT);
    let proxy = FaultProxy::start(&target.host, vec![rule("PATCH", "/blobs/uploads/", Fault::Reset, 100)]);
    let run = promote(&moto, &source, &proxy.host).run();
    run.failure(&[&format!("failed: {}/app:v1", proxy.host), "uploading blob", "fix:"]);
    assert!(proxy.injected() >= 2, "the upload was not retried");
    assert_eq!(target.digest("app", "v1"), None);
}

#[test]
fn a_registry_that_dies_fails_the_push_naming_the_tag() {
    let (moto, image) = (Moto::start(), Image::random(1000));
    let closed = testbed::ClosedPort::new();
    let dead = closed.host();
    let run = Step::aws(&moto)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &dead)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_PUSH_VIA", "engine")
        .run();
    // Named by the preflight (the engine, pushing beside it, is cancelled), not by the engine.
    run.failure(&[&format!("signing in to {dead}"), "Connection refused", "fix:"]);
}

#[test]
fn a_registry_that_refuses_while_an_archive_compresses_is_named_and_no_scratch_stays() {
    // The archive is read and its layer compressed from the start of the run, while the credentials are
    // resolved and the destination is asked whether it answers: the destination's refusal ends the run
    // meanwhile, named, and the run's scratch directories go with it, the compression's too.
    let (moto, registry, image) = (
        Moto::start(),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(48_000_000),
    );
    let refusing = FaultProxy::start(&registry.host, vec![rule("GET", "/v2/", Fault::Status(403), 100)]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    testbed::docker(&["save", "-o", archive.to_str().unwrap(), &image.name]);
    let tmpdir = dir.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let run = Step::aws(&moto)
        .env("PLUGIN_SOURCE", &format!("docker-archive:{}", archive.display()))
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &refusing.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("TMPDIR", tmpdir.to_str().unwrap())
        .run();
    run.failure(&[&refusing.host, "refused the ECR token", "HTTP 403"]);
    testbed::assert_no_scratch_in(&tmpdir);
    assert_eq!(registry.digest("app", "latest"), None);
}

#[test]
fn a_stalled_push_times_out_instead_of_hanging() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(300_000));
    let proxy = FaultProxy::start(&registry.host, vec![rule("PUT", "/blobs/uploads/", Fault::Stall, 100)]);
    let started = Instant::now();
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &proxy.host)
        .env("PLUGIN_PUSH_VIA", "engine")
        .env("PLUGIN_TIMEOUT", "3s")
        .run();
    run.failure(&[
        &format!("the push of {}/app:latest made no progress for 3s", proxy.host),
        "PLUGIN_TIMEOUT",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn aws_5xx_answers_are_retried_by_the_sdk_then_fail_clearly() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let moto_host = moto.url.trim_start_matches("http://").to_string();
    let flaky = FaultProxy::start(&moto_host, vec![rule("POST", "/", Fault::Status(503), 2)]);
    let run = Step::push(&moto, &registry, &image, "app")
        .env("AWS_ENDPOINT_URL", &format!("http://{}", flaky.host))
        .run();
    run.success();
    assert_eq!(flaky.injected(), 2);

    let down = FaultProxy::start(&moto_host, vec![rule("POST", "/", Fault::Status(503), 100)]);
    let run = Step::push(&moto, &registry, &image, "app")
        .env("AWS_ENDPOINT_URL", &format!("http://{}", down.host))
        .run();
    run.failure(&["credentials failed", "503"]);
    assert!(down.injected() >= 3, "the SDK did not retry: {}", down.injected());
}

#[test]
fn sigterm_stops_the_run_promptly_and_reports_nothing_as_done() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(300_000));
    let proxy = FaultProxy::start(&registry.host, vec![rule("PUT", "/blobs/uploads/", Fault::Stall, 100)]);
    let mut child = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &proxy.host)
        .env("PLUGIN_PUSH_VIA", "engine")
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.injected() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(proxy.injected(), 1, "the push never reached the registry");
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?} to stop",
        signalled.elapsed()
    );
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{out}{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    assert!(!out.contains("pushed:") && !out.contains("summary:"), "{out}");
}

#[test]
fn a_401_from_the_registry_fetches_the_token_again_once_and_the_work_continues() {
    let moto = Moto::start();
    let (source, image, digest) = seeded(&moto);
    let target = Registry::start(DEFAULT_ACCOUNT);
    let proxy = FaultProxy::start(&target.host, vec![rule("PUT", "/manifests/", Fault::Status(401), 1)]);
    let run = promote(&moto, &source, &proxy.host).run();
    run.success();
    run.says(&format!("token: fetched again for {} after HTTP 401", proxy.host));
    assert_eq!(target.digest("app", "v1"), Some(digest));

    // Through the engine too.
    let proxy = FaultProxy::start(&target.host, vec![rule("PUT", "/manifests/", Fault::Status(401), 1)]);
    let run = Step::push(&moto, &target, &image, "pushed")
        .env("PLUGIN_REGISTRY", &proxy.host)
        .env("PLUGIN_PUSH_VIA", "engine")
        .run();
    run.success();
    assert_eq!(proxy.injected(), 1);
    // The engine sometimes absorbs the 401 itself (it retries the manifest with the same credentials);
    // when it passes the 401 on, the step fetches the token again. Either way the push must land.
    assert!(
        run.stdout.contains("token: fetched again") || !run.stdout.contains("refused the ECR token"),
        "{}",
        run.stdout
    );
    assert!(target.digest("pushed", "latest").is_some());
}

#[test]
fn an_engine_that_stops_mid_run_fails_the_push_and_says_where_it_looked() {
    use testbed::proxy::EngineForwarder;
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(300_000));
    // The registry stalls the upload, so the push is still running when the engine goes away.
    let proxy = FaultProxy::start(&registry.host, vec![rule("PUT", "/blobs/uploads/", Fault::Stall, 100)]);
    let engine = EngineForwarder::start("/var/run/docker.sock");
    let child = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &proxy.host)
        .env("PLUGIN_PUSH_VIA", "engine")
        .env("DOCKER_HOST", &engine.docker_host)
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(engine.saw("/push") && proxy.injected() > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(engine.saw("/push"), "the push never reached the engine");
    let cut = Instant::now();
    engine.cut();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "took {:?} after the engine stopped",
        cut.elapsed()
    );
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("failed: {}/app:latest", proxy.host)),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "lost the connection to the Docker Engine at {}",
            engine.docker_host
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("pushed:"), "{stdout}");
}

/// The step's own transfer (`PLUGIN_PUSH_VIA=registry`) under the same faults as the engine path: a dead
/// registry, a stalled upload, a refused token, and SIGTERM mid-upload.
#[test]
fn the_own_transfer_holds_under_a_dead_registry_a_stall_a_401_and_sigterm() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(300_000));
    let own_in = |host: &str, repo: &str| {
        Step::push(&moto, &registry, &image, repo)
            .env("PLUGIN_REGISTRY", host)
            .env("PLUGIN_PUSH_VIA", "registry")
    };
    let own = |host: &str| own_in(host, "app");
    let closed = testbed::ClosedPort::new();
    let dead = closed.host();
    own(&dead).run().failure(&[
        &format!("signing in to {dead}"),
        &format!("the registry {dead} is failing or unreachable"),
    ]);

    let stalled = FaultProxy::start(
        &registry.host,
        vec![rule("PATCH", "/blobs/uploads/", Fault::Stall, 100)],
    );
    let started = Instant::now();
    let run = own(&stalled.host).env("PLUGIN_TIMEOUT", "3s").run();
    run.failure(&[
        &format!("the registry {} did not answer within 3s", stalled.host),
        "fix:",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    let refusing = FaultProxy::start(&registry.host, vec![rule("PUT", "/manifests/", Fault::Status(401), 1)]);
    let run = own(&refusing.host).env("PLUGIN_TAGS", "after-401").run();
    run.success();
    run.says(&format!("token: fetched again for {} after HTTP 401", refusing.host));
    assert!(registry.digest("app", "after-401").is_some());

    let hanging = FaultProxy::start(
        &registry.host,
        vec![rule("PATCH", "/blobs/uploads/", Fault::Stall, 100)],
    );
    // Another repository, so the blobs have to be uploaded again.
    let mut child = own_in(&hanging.host, "fresh").env("PLUGIN_TAGS", "never").spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while hanging.injected() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(hanging.injected() > 0, "the upload never reached the registry");
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?} to stop",
        signalled.elapsed()
    );
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(
        !out.contains("pushed:") && registry.digest("app", "never").is_none(),
        "{out}"
    );
}

/// A registry that comes up 1.5 s after the step started (a sidecar still starting) is waited for by
/// the whole check, not only by its sign-in: the upload probe beside it is under the same retry policy.
#[test]
fn a_registry_that_comes_up_while_the_step_checks_it_is_waited_for() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let closed = testbed::ClosedPort::new();
    let late = closed.host();
    let child = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &late)
        .env("PLUGIN_PUSH_VIA", "registry")
        .env("PLUGIN_TAGS", "late")
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let _up = FaultProxy::start_on(closed.listen(), &registry.host, vec![]);
    let done = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{out}{}", String::from_utf8_lossy(&done.stderr));
    assert!(out.contains(&format!("retrying: signing in to {late}")), "{out}");
    assert!(registry.digest("app", "late").is_some(), "{out}");
}

#[test]
fn a_preflight_that_fails_while_the_engine_pushes_cancels_the_push_and_leaves_no_local_tag() {
    use testbed::untrusted::{Answer, Request, Rogue};
    let (moto, image) = (Moto::start(), Image::random(1000));
    // The step's requests (with its token) are refused after a second; the engine's (without) stall, so
    // the engine's push has made its local tag and is still running when the preflight fails.
    let registry = Rogue::start_on("127.0.0.1", |r: &Request| match r.authorization {
        Some(_) => {
            std::thread::sleep(Duration::from_secs(1));
            Answer::status(401)
        }
        None => {
            std::thread::sleep(Duration::from_secs(20));
            Answer::status(500)
        }
    });
    let local = format!("{}/app:latest", registry.host);
    let started = Instant::now();
    let run = Step::aws(&moto)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_PUSH_VIA", "engine")
        .run();
    run.failure(&[&format!("signing in to {}", registry.host), "refused the ECR token"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the run waited for the engine's push: {:?}",
        started.elapsed()
    );
    // The engine's push had tagged the image locally; that tag is gone.
    assert!(
        !testbed::in_engine(&local),
        "the local tag {local} was left in the engine"
    );
}

#[test]
fn a_preflight_that_fails_after_the_engine_push_landed_leaves_the_push_standing_and_says_so() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    // The step's upload probe (its own check) is refused, 5 s late; the engine's requests pass, so its
    // push lands and is read back first.
    let late = Fault::LateTo {
        agent: "ecr-step/",
        after: Duration::from_secs(5),
        status: 403,
    };
    let front = FaultProxy::start(&registry.host, vec![rule("POST", "/blobs/uploads/", late, 1)]);
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_REGISTRY", &front.host)
        .env("PLUGIN_PUSH_VIA", "engine")
        .run();
    run.success()
        .says("only after the engine's push had landed and been read back")
        .says("the push stands");
    assert_eq!(front.injected(), 1, "the step's check was not refused\n{}", run.stdout);
    let (id, _) = registry.pull(&format!("{}/app:latest", registry.host));
    assert_eq!(id, image.id, "the image is not there");
}
