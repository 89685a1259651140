//! The container image: built through the repository's Dockerfile from locally made base images (no pulls),
//! then run as a pipeline runs it, with the engine's socket mounted, pushing end to end.

mod testbed;

use std::process::Command;
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

#[test]
fn the_image_built_from_the_dockerfile_pushes_end_to_end() {
    let built = testbed::build_step_image(&Step::binary(), true);
    let tag = built.name.clone();
    let size: u64 = testbed::docker(&["image", "inspect", "-f", "{{.Size}}", &tag])
        .trim()
        .parse()
        .unwrap();
    println!(
        "image size: {:.1} MB (stripped debug build; see BENCHMARKS.md for the release image)",
        size as f64 / 1e6
    );
    let entrypoint = testbed::docker(&["image", "inspect", "-f", "{{json .Config.Entrypoint}}", &tag]);
    assert_eq!(entrypoint.trim(), r#"["/usr/local/bin/ecr-step"]"#);

    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("step.env");
    Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "in-container")
        .remove("DOCKER_HOST")
        .env_file(&env_file);
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "--env-file",
        ])
        .arg(&env_file)
        .arg(&built.name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the container failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reported = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("pushed: {}/app:in-container ", registry.host)))
        .unwrap_or_else(|| panic!("no pushed line:\n{stdout}"))
        .to_string();
    assert_eq!(registry.digest("app", "in-container"), Some(reported));
    assert!(!stdout.contains(testbed::SECRET_KEY));
    drop(built);
}
