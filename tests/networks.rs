//! Real networks: the HTTPS path every user takes, with a company's CA, and failures named by their cause
//! in about a second. The registry and moto are served over TLS under host names mapped to loopback
//! (`testbed::tls`), so the step talks HTTPS to them as it does to ECR.

mod testbed;

use std::time::Duration;
use testbed::tls::{Ca, TlsMoto, TlsRegistry};
use testbed::untrusted::{Answer, Rogue, SmallImage};
use testbed::{ACCESS_KEY, DEFAULT_ACCOUNT, Moto, REGION, SECRET_KEY, Step};

/// A run against the AWS endpoint at `aws_url`, writing to `registry`, with the static keys.
fn step(aws_url: &str, registry: &str) -> Step {
    Step::new()
        .env("AWS_ENDPOINT_URL", aws_url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("PLUGIN_REGISTRY", registry)
        .env("PLUGIN_REGION", REGION)
        .env("PLUGIN_TIMEOUT", "30s")
}

/// A push of a small image from a docker archive (no engine) to `repo:v1`.
fn push(step: Step, archive: &std::path::Path, repo: &str) -> Step {
    step.env("PLUGIN_SOURCE", &format!("docker-archive:{}", archive.display()))
        .env("PLUGIN_REPO", repo)
        .env("PLUGIN_TAGS", "v1")
}

fn archive(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("image.tar");
    SmallImage::new("networks")
        .docker_archive("config.json", &["layer.tar"])
        .write(&path);
    path
}

/// A file that is no archive: a run that fails for a network cause before reading it never says so.
fn not_an_archive(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("not-a-tar.tar");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    path
}

#[test]
fn push_promote_check_and_login_over_https_trust_the_ca_given_in_aws_ca_bundle() {
    let ca = Ca::new();
    let (moto, registry) = (TlsMoto::start(&ca), TlsRegistry::start(DEFAULT_ACCOUNT, &ca));
    let dir = tempfile::tempdir().unwrap();
    let image = archive(dir.path());
    let ca_bundle = ca.cert.display().to_string();
    let over_tls = || step(&moto.url, &registry.host).env("AWS_CA_BUNDLE", &ca_bundle);

    let run = push(over_tls(), &image, "app").run();
    run.success();
    let digest = run.reported_digest(&format!("{}/app:v1", registry.host));
    assert_eq!(
        registry.digest("app", "v1"),
        Some(digest.clone()),
        "not in the registry over TLS"
    );

    let run = over_tls()
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", "app:v1")
        .env("PLUGIN_REPO", "prod")
        .env("PLUGIN_TAGS", "stable")
        .run();
    run.success();
    assert_eq!(registry.digest("prod", "stable"), Some(digest));

    let run = over_tls()
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run();
    run.success();
    run.says(&format!("sign in to {}", registry.host));

    let config = tempfile::tempdir().unwrap();
    let run = over_tls()
        .env("PLUGIN_MODE", "login")
        .env("DOCKER_CONFIG", &config.path().display().to_string())
        .run();
    run.success();
    let written = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    assert!(written.contains(&registry.host), "{written}");
}

#[test]
fn an_untrusted_certificate_is_named_with_the_fix_at_once_without_retries_or_credentials_advice() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let junk = not_an_archive(dir.path());

    // The registry's certificate: named before the source is read, no retry.
    let (moto, registry) = (Moto::start(), TlsRegistry::start(DEFAULT_ACCOUNT, &ca));
    let run = push(step(&moto.url, &registry.host), &junk, "app").run();
    run.failure(&[&registry.host, "unknown issuer", "AWS_CA_BUNDLE", "SSL_CERT_FILE"]);
    let out = run.output();
    assert!(!out.contains("retrying"), "a certificate error was retried:\n{out}");
    assert!(
        !out.contains("not a readable tar"),
        "the source was read before the registry answered:\n{out}"
    );
    assert!(!out.contains("is failing or unreachable"), "{out}");
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);

    // Check mode gives the same verdict, without advice about credentials.
    let run = step(&moto.url, &registry.host)
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run();
    run.failure(&["unknown issuer", "AWS_CA_BUNDLE"]);
    assert!(
        !run.output().contains("use credentials of the registry's account"),
        "{}",
        run.output()
    );

    // The AWS endpoint's certificate: not blamed on the credentials.
    let tls_moto = TlsMoto::start(&ca);
    let run = push(step(&tls_moto.url, "127.0.0.1:5000"), &junk, "app").run();
    run.failure(&["STS at", "unknown issuer", "AWS_CA_BUNDLE"]);
    assert!(
        !run.output().contains("check the settings of this level"),
        "a certificate was blamed on the credentials:\n{}",
        run.output()
    );
}

#[test]
fn a_proxy_that_is_down_is_named_by_its_variable() {
    let ca = Ca::new();
    let moto = TlsMoto::start(&ca);
    let dir = tempfile::tempdir().unwrap();
    let junk = not_an_archive(dir.path());
    let closed = testbed::ClosedPort::new();
    let proxy = format!("http://{}", closed.host());
    let run = push(step(&moto.url, "127.0.0.1:5000"), &junk, "app")
        .env("AWS_CA_BUNDLE", &ca.cert.display().to_string())
        .env("HTTPS_PROXY", &proxy)
        .run();
    run.failure(&[&format!("HTTPS_PROXY={proxy}"), "could not be reached", "NO_PROXY"]);
    assert!(
        !run.output().contains("check the settings of this level"),
        "{}",
        run.output()
    );
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn a_missing_repository_is_named_in_the_registrys_words_before_the_source_is_read() {
    let moto = Moto::start();
    // A front answering as ECR does for a repository that does not exist.
    let ecr = Rogue::start(|method, path| {
        if path == "/v2/" {
            return Answer::status(200);
        }
        if method == "POST" && path.contains("/blobs/uploads/") {
            let body = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'missing' does not exist in the registry with id '123456789012'"}]}"#;
            return Answer {
                status: 404,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: testbed::untrusted::Body::Bytes(body.as_bytes().to_vec()),
            };
        }
        Answer::status(404)
    });
    let dir = tempfile::tempdir().unwrap();
    let junk = not_an_archive(dir.path());
    let run = Step::aws(&moto)
        .env("PLUGIN_SOURCE", &format!("docker-archive:{}", junk.display()))
        .env("PLUGIN_REPO", "missing")
        .env("PLUGIN_REGISTRY", &ecr.host)
        .env("PLUGIN_REGION", REGION)
        .run();
    run.failure(&[
        "NAME_UNKNOWN The repository with name 'missing' does not exist",
        "PLUGIN_CREATE_REPOSITORY=true",
    ]);
    assert!(
        !run.output().contains("not a readable tar"),
        "the source was read first:\n{}",
        run.output()
    );
}

#[test]
fn every_request_goes_through_a_real_proxy_and_no_proxy_is_honoured() {
    let ca = Ca::new();
    let (moto, registry) = (TlsMoto::start(&ca), TlsRegistry::start(DEFAULT_ACCOUNT, &ca));
    let proxy = testbed::tls::Tinyproxy::start();
    let dir = tempfile::tempdir().unwrap();
    let image = archive(dir.path());
    let through = || {
        step(&moto.url, &registry.host)
            .env("AWS_CA_BUNDLE", &ca.cert.display().to_string())
            .env("HTTPS_PROXY", &proxy.url)
    };
    let run = push(through(), &image, "app").run();
    run.success();
    let digest = run.reported_digest(&format!("{}/app:v1", registry.host));
    assert_eq!(registry.digest("app", "v1"), Some(digest));
    let log = proxy.log();
    let moto_host = moto.url.trim_start_matches("https://");
    assert!(
        log.contains(&registry.host),
        "no CONNECT to the registry in the proxy's log:\n{log}"
    );
    assert!(
        log.contains(moto_host),
        "no CONNECT to STS and ECR in the proxy's log:\n{log}"
    );

    // Promote across registries, check and login, through the proxy as well.
    let other = TlsRegistry::start(DEFAULT_ACCOUNT, &ca);
    let run = through()
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", &format!("{}/app:v1", registry.host))
        .env("PLUGIN_READ_ROLE_ARN", testbed::READ_ROLE)
        .env("PLUGIN_REGISTRY", &other.host)
        .env("PLUGIN_REPO", "copy")
        .env("PLUGIN_TAGS", "v1")
        .run();
    run.success();
    assert_eq!(other.digest("copy", "v1"), registry.digest("app", "v1"));
    assert!(
        proxy.log().contains(&other.host),
        "the promote's target was not reached through the proxy"
    );
    through()
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run()
        .success();
    let config = tempfile::tempdir().unwrap();
    through()
        .env("PLUGIN_MODE", "login")
        .env("DOCKER_CONFIG", &config.path().display().to_string())
        .run()
        .success();

    // The registry in NO_PROXY: reached directly, the AWS calls still through the proxy.
    let registry_name = registry.host.rsplit_once(':').unwrap().0.to_string();
    let before = proxy.log().matches(&registry.host).count();
    let run = push(through().env("NO_PROXY", &registry_name), &image, "direct").run();
    run.success();
    let after = proxy.log().matches(&registry.host).count();
    assert_eq!(before, after, "a host in NO_PROXY went through the proxy");
}

#[test]
fn a_push_through_the_engine_takes_https_to_a_registry_with_the_companys_ca() {
    let ca = Ca::new();
    let (moto, registry) = (Moto::start(), TlsRegistry::start(DEFAULT_ACCOUNT, &ca));
    // The engine trusts a registry's CA from /etc/docker/certs.d/<host:port>/ca.crt (read per push).
    let certs = std::path::Path::new("/etc/docker/certs.d").join(&registry.host);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca.cert, certs.join("ca.crt")).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(certs);
    let image = testbed::Image::random(50_000);
    // The step's own calls (STS, ECR, the registry's checks and read-back) through a real proxy too.
    let proxy = testbed::tls::Tinyproxy::start();
    registry.wait_for_the_engine();
    let run = step(&moto.url, &registry.host)
        .env("HTTPS_PROXY", &proxy.url)
        .env("AWS_CA_BUNDLE", &ca.cert.display().to_string())
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "engine")
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_PUSH_VIA", "engine")
        .run();
    run.success();
    let digest = run.reported_digest(&format!("{}/engine:v1", registry.host));
    assert_eq!(registry.digest("engine", "v1"), Some(digest));
    assert!(
        proxy.log().contains(&registry.host),
        "the step's registry calls did not go through the proxy"
    );
}

/// A step container has its own network, proxy, CAs and names; the engine it drives has its host's. Here
/// the registry's name resolves for the step (its own /etc/hosts) and, for the engine, to an address
/// nothing listens on. Over a slow link `auto` takes the engine for a new image; the engine cannot reach
/// the registry, so the step sends the image itself, with no failed tag on the way, and the `via:` line
/// says why and what gives the engine a route. Set to the engine, the run fails with the fix for each
/// tag, and writes nothing; so does a promote through the engine from that registry. On a runner that keeps
/// `PLUGIN_STATE_DIR`, the next run under `auto` sends the image itself at once, without asking the engine
/// (its note of the failure).
#[test]
fn a_registry_the_engine_cannot_reach_gets_the_image_from_the_step_under_auto() {
    let ca = Ca::new();
    let moto = Moto::start();
    let registry = TlsRegistry::start_seen_at(DEFAULT_ACCOUNT, &ca, "127.0.0.2");
    let (name, _) = registry.host.rsplit_once(':').unwrap();
    let link = testbed::Link::start(&registry.address, 5 << 20);
    let over_the_link = format!("{name}:{}", link.host.rsplit_once(':').unwrap().1);
    let base = testbed::Image::from_host_files(&["/bin/sh"], &[]);
    let image = testbed::Image::text(&base, 1, 80_000_000);
    registry.wait_for_the_engine();
    let state = tempfile::tempdir().unwrap();
    let push = |repo: &str, tags: &str| {
        step(&moto.url, &over_the_link)
            .env("AWS_CA_BUNDLE", &ca.cert.display().to_string())
            .env("PLUGIN_SOURCE", &image.name)
            .env("PLUGIN_REPO", repo)
            .env("PLUGIN_TAGS", tags)
            .env("PLUGIN_STATE_DIR", state.path().to_str().unwrap())
    };

    let run = push("app", "v1").run_with_own_hosts(&[name]);
    run.success();
    run.says(&format!(
        "via: docker push through the engine: the upload to {over_the_link} ran at"
    ))
    .says(&format!(
        "via: the step's own transfer instead: the Docker Engine could not reach {over_the_link}"
    ))
    .says("connection refused")
    .says("For docker push's way next time: the Docker Engine could not reach")
    .says("HTTPS_PROXY in dockerd's environment");
    assert!(
        !run.stdout.contains("failed:"),
        "a tag was said to fail:\n{}",
        run.stdout
    );
    let digest = run.reported_digest(&format!("{over_the_link}/app:v1"));
    assert_eq!(registry.digest("app", "v1"), Some(digest));
    assert_eq!(
        registry.image_id("app", "v1"),
        Some(image.id.clone()),
        "the image id changed"
    );

    // The next run on this runner does not ask the engine again: the record says it could not reach the
    // registry, so the step sends the image at once, without weighing the ways.
    let run = push("again", "v1").run_with_own_hosts(&[name]);
    run.success();
    run.says(&format!(
        "via: the step's own transfer: this runner's Docker Engine could not reach {over_the_link} "
    ))
    .says("connection refused), as PLUGIN_STATE_DIR notes")
    .says("HTTPS_PROXY in dockerd's environment");
    for unsaid in ["via: docker push", "instead", "failed:"] {
        assert!(!run.stdout.contains(unsaid), "{unsaid:?} was said:\n{}", run.stdout);
    }
    assert_eq!(registry.image_id("again", "v1"), Some(image.id.clone()));

    let run = push("forced", "v1,v2")
        .env("PLUGIN_PUSH_VIA", "engine")
        .run_with_own_hosts(&[name]);
    run.failure(&[
        "could not reach",
        "connection refused",
        "dockerd's environment",
        "PLUGIN_PUSH_VIA=registry",
    ]);
    assert_eq!(
        run.stdout.matches("failed: ").count(),
        2,
        "each tag fails once:\n{}",
        run.stdout
    );
    assert_eq!(registry.digest("forced", "v1"), None);
    assert_eq!(registry.digest("forced", "v2"), None);

    // A promote through the engine, whose pull meets the same wall: named, with the way around it.
    let run = step(&moto.url, &over_the_link)
        .env("AWS_CA_BUNDLE", &ca.cert.display().to_string())
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", &format!("{over_the_link}/app:v1"))
        .env("PLUGIN_PROMOTE_VIA", "engine")
        .env("PLUGIN_REPO", "promoted")
        .env("PLUGIN_TAGS", "v1")
        .run_with_own_hosts(&[name]);
    run.failure(&[
        "connection refused",
        "dockerd's environment",
        "PLUGIN_PROMOTE_VIA=registry",
    ]);
    assert_eq!(registry.digest("promoted", "v1"), None);
}

#[test]
fn an_ecr_shaped_front_refusing_mounts_starting_uploads_with_201_and_throttling_writes_gets_every_tag() {
    use testbed::proxy::{Fault, FaultProxy, Rule};
    let (moto, registry) = (Moto::start(), testbed::Registry::start(DEFAULT_ACCOUNT));
    let rule = |method, path, fault, times| Rule {
        method,
        path,
        fault,
        times,
    };
    // As ECR answers: a mount it does not do is a new upload session (202), an upload start is 201, and
    // a burst of manifest writes meets 429.
    let front = FaultProxy::start(
        &registry.host,
        vec![
            rule("POST", "mount=", Fault::RefuseMount, 10_000),
            rule("POST", "/blobs/uploads/", Fault::Created, 10_000),
            rule("PUT", "/manifests/", Fault::Status(429), 1),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let image = archive(dir.path());
    let run = push(
        Step::aws(&moto)
            .env("PLUGIN_REGISTRY", &front.host)
            .env("PLUGIN_REGION", REGION),
        &image,
        "app",
    )
    .run();
    run.success();
    let digest = run.reported_digest(&format!("{}/app:v1", front.host));
    let run = Step::aws(&moto)
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", "app:v1")
        .env("PLUGIN_REPO", "copy")
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_REGISTRY", &front.host)
        .env("PLUGIN_REGION", REGION)
        .run();
    run.success();
    run.says(&format!(
        "to {}/copy: 2 uploaded, 0 mounted, 0 already there",
        front.host
    ));
    assert_eq!(registry.digest("copy", "v1"), Some(digest));
    assert!(
        front.injected() >= 4,
        "the front answered as ECR only {} times",
        front.injected()
    );
}
