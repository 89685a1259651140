//! Mirroring into ECR from a registry outside it (Docker Hub, GHCR, Quay): a distribution registry with
//! token auth and its token server stand in for one. The source is read anonymously, or with the
//! credentials the docker config holds for it (an `auths` entry, or a credential helper), through the
//! token flow; never with the run's ECR token; and the log says which, never the values.

mod testbed;

use testbed::token_registry::{PASSWORD, TokenRegistry};
use testbed::untrusted::{SmallImage, Store};
use testbed::{DEFAULT_ACCOUNT, Moto, Registry, Step};

fn mirror(moto: &Moto, target: &Registry, source: &str, docker_config: &std::path::Path) -> Step {
    Step::aws(moto)
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", source)
        .env("PLUGIN_REPO", "mirror/app")
        .env("PLUGIN_TAGS", "v1")
        .env("PLUGIN_REGISTRY", &target.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_TIMEOUT", "20s")
        .env("DOCKER_CONFIG", &docker_config.display().to_string())
}

/// The run printed nothing of the user's password.
fn no_password(run: &testbed::Run) {
    assert!(
        !run.output().contains(PASSWORD),
        "the password leaked:\n{}",
        run.output()
    );
}

#[test]
fn a_public_image_is_mirrored_anonymously_through_the_token_flow() {
    let moto = Moto::start();
    let (source, target) = (TokenRegistry::start("127.0.0.1"), Registry::start(DEFAULT_ACCOUNT));
    let (store, digest) = Store::with_image(&SmallImage::new("public"));
    source.seed("public/app", &store);
    let empty = tempfile::tempdir().unwrap();
    let run = mirror(&moto, &target, &format!("{}/public/app:v1", source.host), empty.path()).run();
    run.success();
    run.says(&format!("source: {} read anonymously", source.host));
    assert_eq!(target.digest("mirror/app", "v1"), Some(digest));
    let asked = source.tokens.seen();
    assert!(!asked.is_empty(), "no token was asked for");
    assert!(
        asked.iter().all(|s| !s.authorization),
        "credentials were sent: {asked:?}"
    );
}

#[test]
fn a_private_image_is_mirrored_with_the_docker_config_entry_or_a_credential_helper_and_refused_without() {
    let moto = Moto::start();
    let (source, target) = (TokenRegistry::start("127.0.0.1"), Registry::start(DEFAULT_ACCOUNT));
    let (store, digest) = Store::with_image(&SmallImage::new("private"));
    source.seed("team/app", &store);
    let reference = format!("{}/team/app:v1", source.host);

    // No credentials: red, naming the host and that none were sent.
    let empty = tempfile::tempdir().unwrap();
    let run = mirror(&moto, &target, &reference, empty.path()).run();
    run.failure(&[
        &source.host,
        "refused anonymous access",
        "no credentials were sent",
        "docker login",
    ]);
    assert!(target.tags("mirror/app").is_empty());

    // An auths entry.
    let config = TokenRegistry::docker_config(&[&source.host]);
    let run = mirror(&moto, &target, &reference, config.path()).run();
    run.success();
    no_password(&run);
    run.says(&format!(
        "source: {} read with the docker config entry for {}",
        source.host, source.host
    ));
    assert_eq!(target.digest("mirror/app", "v1"), Some(digest.clone()));
    assert!(
        source.tokens.seen().iter().any(|s| s.authorization),
        "the token server saw no credentials"
    );

    // A credential helper named for the host, on PATH, run as docker runs it.
    let helpers = tempfile::tempdir().unwrap();
    let script = helpers.path().join("docker-credential-mirrortest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{}\" ] || exit 1\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"mirror-robot\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            source.host
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = tempfile::tempdir().unwrap();
    let helper_config = serde_json::json!({"credHelpers": {source.host.clone(): "mirrortest"}});
    std::fs::write(config.path().join("config.json"), helper_config.to_string()).unwrap();
    let path = format!(
        "{}:{}",
        helpers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = mirror(&moto, &target, &reference, config.path())
        .env("PATH", &path)
        .env("PLUGIN_TAGS", "v2")
        .run();
    run.success();
    no_password(&run);
    run.says("read with the credential helper docker-credential-mirrortest");
    assert_eq!(target.digest("mirror/app", "v2"), Some(digest));
}

#[test]
fn credentials_go_to_a_realm_on_another_host_only_when_the_docker_config_names_it() {
    let moto = Moto::start();
    // The token server on another loopback address: another host than the registry's.
    let (source, target) = (TokenRegistry::start("127.0.0.2"), Registry::start(DEFAULT_ACCOUNT));
    let (store, digest) = Store::with_image(&SmallImage::new("realm"));
    source.seed("team/app", &store);
    let reference = format!("{}/team/app:v1", source.host);

    // Credentials for the registry alone: the realm on another host does not get them.
    let config = TokenRegistry::docker_config(&[&source.host]);
    let run = mirror(&moto, &target, &reference, config.path()).run();
    run.failure(&[
        &format!("its token service {} is on another host", source.tokens.host),
        &format!("add a docker config entry for {} too", source.tokens.host),
    ]);
    no_password(&run);
    assert!(
        source.tokens.seen().iter().all(|s| !s.authorization),
        "credentials went to a realm on another host"
    );
    assert!(target.tags("mirror/app").is_empty());

    // The user keeps credentials for the realm's host too: they go there.
    let config = TokenRegistry::docker_config(&[&source.host, &source.tokens.host]);
    let run = mirror(&moto, &target, &reference, config.path()).run();
    run.success();
    no_password(&run);
    assert!(source.tokens.seen().iter().any(|s| s.authorization));
    assert_eq!(target.digest("mirror/app", "v1"), Some(digest));
}
