//! Hostile input: every bad value, contradiction, unknown name, hostile file and non-UTF-8 variable exits
//! non-zero within a second, names the setting, and pushes nothing. And load: 20 concurrent runs pushing
//! and promoting into the same repositories all land on the right digest.

mod testbed;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

#[test]
fn every_bad_input_is_refused_quickly_by_name_and_pushes_nothing() {
    let (registry, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let dir = tempfile::tempdir().unwrap();
    let laughs = dir.path().join("laughs.yml");
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        yaml += &format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
    }
    yaml += "integrations: {hub: [{integrationName: x, type: ecr, region: *a11}]}\n";
    std::fs::write(&laughs, yaml).unwrap();
    let deep = dir.path().join("deep.yml");
    std::fs::write(
        &deep,
        format!("integrations: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let wrong_type = dir.path().join("wrong.yml");
    std::fs::write(
        &wrong_type,
        "integrations:\n  hub:\n    - integrationName: x\n      type: gcr\n",
    )
    .unwrap();
    let (laughs, deep, wrong_type) = (
        laughs.display().to_string(),
        deep.display().to_string(),
        wrong_type.display().to_string(),
    );
    // Files that must never be read whole or waited on: devices, a FIFO with no writer, a directory.
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.display().to_string();
    let twice = dir.path().join("twice.yml");
    std::fs::write(
        &twice,
        "integrations:\n  hub:\n    - {integrationName: x, type: ecr}\n    - {integrationName: x, type: ecr}\n",
    )
    .unwrap();
    let twice = twice.display().to_string();
    let not_a_dir = dir.path().join("docker-config-file");
    std::fs::write(&not_a_dir, "{}").unwrap();
    let not_a_dir = not_a_dir.display().to_string();
    let link = dir.path().join("outputs-link.json");
    std::os::unix::fs::symlink(dir.path().join("elsewhere.json"), &link).unwrap();
    let link = link.display().to_string();
    let missing_dir = dir.path().join("missing/out.json").display().to_string();
    let a_dir = dir.path().display().to_string();
    let inline_40k = format!("{{\"rules\":[{}]}}", vec!["{}"; 20_000].join(","));
    let duplicate = format!("{0},{0}", registry.host);
    let duplicate_scheme = format!("{0},http://{0}", registry.host);
    let long_filter = "f".repeat(129);
    let many_tags: String = (0..1001).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
    let long_tag = "t".repeat(129);
    let long_repo = "a".repeat(300);
    let long_region = "x".repeat(1000);
    let role = "arn:aws:iam::123456789012:role/x";
    let key = testbed::ACCESS_KEY;
    let secret = testbed::SECRET_KEY;

    // (settings to set on top of a valid push, the setting the message must name)
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("PLUGIN_REPO", "")], "PLUGIN_REPO is required"),
        (vec![("PLUGIN_REPO", "a")], "PLUGIN_REPO"),
        (vec![("PLUGIN_REPO", &long_repo)], "PLUGIN_REPO"),
        (vec![("PLUGIN_REPO", "team//app")], "PLUGIN_REPO"),
        (vec![("PLUGIN_REPO", "App")], "PLUGIN_REPO"),
        (vec![("PLUGIN_TAGS", ",,,")], "PLUGIN_TAGS"),
        (vec![("PLUGIN_TAGS", "-x")], "PLUGIN_TAGS"),
        (vec![("PLUGIN_TAGS", &long_tag)], "PLUGIN_TAGS"),
        (vec![("PLUGIN_TAGS", &many_tags)], "PLUGIN_TAGS"),
        (
            vec![(
                "PLUGIN_REGISTRY",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com.example.com",
            )],
            "PLUGIN_REGISTRY",
        ),
        (
            vec![("PLUGIN_REGISTRY", "123456789012.dkr.ecr.nowhere.amazonaws.com")],
            "PLUGIN_REGISTRY",
        ),
        (vec![("PLUGIN_REGISTRY", "evil-amazonaws.com")], "PLUGIN_REGISTRY"),
        (vec![("PLUGIN_REGISTRY", "host/path")], "PLUGIN_REGISTRY"),
        (vec![("PLUGIN_REGISTRY", "host:99999")], "PLUGIN_REGISTRY"),
        (
            vec![("PLUGIN_REGISTRY", "123456789012.dkr.ecr.eu-west-2.amazonaws.com")],
            "PLUGIN_REGION",
        ),
        (vec![("PLUGIN_REGION", "us_east_1")], "PLUGIN_REGION"),
        (vec![("PLUGIN_REGION", &long_region)], "PLUGIN_REGION"),
        (
            vec![("PLUGIN_ACCESS_KEY", "short"), ("PLUGIN_SECRET_KEY", secret)],
            "PLUGIN_ACCESS_KEY",
        ),
        (vec![("PLUGIN_ACCESS_KEY", key)], "PLUGIN_SECRET_KEY"),
        (vec![("PLUGIN_SECRET_KEY", secret)], "PLUGIN_ACCESS_KEY"),
        (
            vec![
                ("PLUGIN_ACCESS_KEY", key),
                ("PLUGIN_SECRET_KEY", "has spaces in the secret key"),
            ],
            "PLUGIN_SECRET_KEY",
        ),
        (vec![("PLUGIN_COMPRESSION_LEVEL", "11")], "PLUGIN_COMPRESSION_LEVEL"),
        (vec![("PLUGIN_COMPRESSION_LEVEL", "best")], "PLUGIN_COMPRESSION_LEVEL"),
        (vec![("PLUGIN_SOCI", "lazy")], "PLUGIN_SOCI"),
        (vec![("PLUGIN_DRY_RUN", "maybe")], "PLUGIN_DRY_RUN"),
        (vec![("PLUGIN_TIMEOUT", "forever")], "PLUGIN_TIMEOUT"),
        (vec![("PLUGIN_TIMEOUT", "0")], "PLUGIN_TIMEOUT"),
        (vec![("PLUGIN_TIMEOUT", "99999h")], "PLUGIN_TIMEOUT"),
        (vec![("PLUGIN_MODE", "deploy")], "PLUGIN_MODE"),
        (vec![("PLUGIN_SOURCE", "app;rm -rf /")], "PLUGIN_SOURCE"),
        (vec![("PLUGIN_SOURCE", "")], "PLUGIN_SOURCE is required"),
        (vec![("PLUGIN_ROLE_ARN", "arn:aws:iam::1:role/x")], "PLUGIN_ROLE_ARN"),
        (vec![("PLUGIN_EXTERNAL_ID", "ext-1")], "PLUGIN_EXTERNAL_ID"),
        (
            vec![("PLUGIN_TRIGGER_EXTERNAL_ID", "ext-1")],
            "PLUGIN_TRIGGER_EXTERNAL_ID",
        ),
        (
            vec![
                ("PLUGIN_PIPELINE_ROLE_ARN", role),
                ("PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
            ],
            "PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE",
        ),
        (
            vec![
                ("PLUGIN_USE_SERVICE_ACCOUNT", "true"),
                ("PLUGIN_ACCESS_KEY", key),
                ("PLUGIN_SECRET_KEY", secret),
            ],
            "PLUGIN_USE_SERVICE_ACCOUNT",
        ),
        (vec![("PLUGIN_DURATION_SECONDS", "100")], "PLUGIN_DURATION_SECONDS"),
        (vec![("PLUGIN_SESSION_NAME", "a b")], "PLUGIN_SESSION_NAME"),
        (vec![("PLUGIN_INTERMEDIATE_ROLE", role)], "PLUGIN_INTERMEDIATE_ROLE"),
        (vec![("PLUGIN_TAG_MUTABILITY", "sometimes")], "PLUGIN_TAG_MUTABILITY"),
        (vec![("PLUGIN_ENCRYPTION", "DES")], "PLUGIN_ENCRYPTION"),
        (vec![("PLUGIN_KMS_KEY", "alias/x")], "PLUGIN_KMS_KEY"),
        (vec![("PLUGIN_LIFECYCLE_POLICY", "{bad")], "PLUGIN_LIFECYCLE_POLICY"),
        (
            vec![("PLUGIN_REPOSITORY_POLICY", "/nonexistent/policy.json")],
            "PLUGIN_REPOSITORY_POLICY",
        ),
        (vec![("PLUGIN_REPOSITORY_POLICY", "[1,2]")], "PLUGIN_REPOSITORY_POLICY"),
        (vec![("PLUGIN_REPOSITORY_TAGS", "novalue")], "PLUGIN_REPOSITORY_TAGS"),
        (vec![("PLUGIN_SKIP_EXISTING", "2")], "PLUGIN_SKIP_EXISTING"),
        (
            vec![("PLUGIN_BRANCHES_ONLY", "release/["), ("PLUGIN_BRANCH", "main")],
            "PLUGIN_BRANCHES_ONLY",
        ),
        (vec![("PLUGIN_BRANCHES_ONLY", "main")], "PLUGIN_BRANCHES_ONLY"),
        (vec![("PLUGIN_INTEGRATIONS_FILE", &laughs)], "PLUGIN_INTEGRATION"),
        (
            vec![("PLUGIN_INTEGRATIONS_FILE", &laughs), ("PLUGIN_INTEGRATION", "x")],
            "PLUGIN_INTEGRATIONS_FILE",
        ),
        (
            vec![("PLUGIN_INTEGRATIONS_FILE", &deep), ("PLUGIN_INTEGRATION", "x")],
            "PLUGIN_INTEGRATIONS_FILE",
        ),
        (
            vec![("PLUGIN_INTEGRATIONS_FILE", &wrong_type), ("PLUGIN_INTEGRATION", "x")],
            "PLUGIN_INTEGRATIONS_FILE",
        ),
        (
            vec![
                ("PLUGIN_INTEGRATIONS_FILE", "/nonexistent.yml"),
                ("PLUGIN_INTEGRATION", "x"),
            ],
            "PLUGIN_INTEGRATIONS_FILE",
        ),
        (vec![("PLUGIN_READ_REGION", "us-east-1")], "PLUGIN_READ_REGION"),
        (
            vec![
                ("PLUGIN_MODE", "promote"),
                ("PLUGIN_SOURCE", "app:1"),
                ("PLUGIN_PROMOTE_VIA", "ftp"),
            ],
            "PLUGIN_PROMOTE_VIA",
        ),
        (
            vec![("PLUGIN_MODE", "promote"), ("PLUGIN_SOURCE", "app name:1")],
            "PLUGIN_SOURCE",
        ),
        (
            vec![("PLUGIN_MODE", "login")],
            "PLUGIN_SOURCE does not apply with PLUGIN_MODE=login",
        ),
        (vec![("PLUGIN_REPOSITORY", "x")], "PLUGIN_REPOSITORY"),
        // Round 2: swapped keys (the secret must not be echoed: `failure` checks it), unbounded or blocking
        // files, outputs that cannot be written, duplicates and look-alikes.
        (
            vec![("PLUGIN_ACCESS_KEY", secret), ("PLUGIN_SECRET_KEY", key)],
            "are PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?",
        ),
        (vec![("PLUGIN_TAGS", secret)], "look like a secret key"),
        (
            vec![("PLUGIN_REPOSITORY_POLICY", "/dev/zero")],
            "PLUGIN_REPOSITORY_POLICY",
        ),
        (vec![("PLUGIN_REPOSITORY_POLICY", "/dev/urandom")], "not a regular file"),
        (
            vec![("PLUGIN_LIFECYCLE_POLICY", "/dev/zero")],
            "PLUGIN_LIFECYCLE_POLICY",
        ),
        (vec![("PLUGIN_LIFECYCLE_POLICY", &fifo)], "a FIFO"),
        (vec![("PLUGIN_LIFECYCLE_POLICY", "[1,2]")], "expected a JSON object"),
        (
            vec![("PLUGIN_LIFECYCLE_POLICY", &inline_40k)],
            "at most 30720 characters",
        ),
        (
            vec![("PLUGIN_INTEGRATIONS_FILE", "/dev/zero"), ("PLUGIN_INTEGRATION", "x")],
            "not a regular file",
        ),
        (
            vec![("PLUGIN_INTEGRATIONS_FILE", &fifo), ("PLUGIN_INTEGRATION", "x")],
            "a FIFO",
        ),
        (
            vec![("PLUGIN_INTEGRATIONS_FILE", &twice), ("PLUGIN_INTEGRATION", "x")],
            "ambiguous",
        ),
        (
            vec![
                ("PLUGIN_PIPELINE_ROLE_ARN", role),
                ("PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE", "/dev/zero"),
            ],
            "PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE",
        ),
        (
            vec![
                ("PLUGIN_TRIGGER_ROLE_ARN", role),
                ("PLUGIN_TRIGGER_WEB_IDENTITY_TOKEN_FILE", &fifo),
            ],
            "a FIFO",
        ),
        (
            vec![("AWS_WEB_IDENTITY_TOKEN_FILE", "/dev/urandom")],
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ),
        (vec![("PLUGIN_OUTPUT_FILE", &missing_dir)], "PLUGIN_OUTPUT_FILE="),
        (vec![("PLUGIN_OUTPUT_FILE", &a_dir)], "is not a regular file"),
        (
            vec![("PLUGIN_OUTPUT_FILE", "/dev/full")],
            "PLUGIN_OUTPUT_FILE=/dev/full",
        ),
        (vec![("PLUGIN_OUTPUT_FILE", &link)], "is a symbolic link"),
        (vec![("GITHUB_OUTPUT", &a_dir)], "GITHUB_OUTPUT="),
        (vec![("CF_VOLUME_PATH", "/nonexistent/volume")], "CF_VOLUME_PATH="),
        (vec![("PLUGIN_REGISTRY", &duplicate)], "twice"),
        (vec![("PLUGIN_REGISTRY", &duplicate_scheme)], "twice"),
        (vec![("PLUGIN_REGISTRY", "[::1]:5000")], "IPv6 literals"),
        (vec![("PLUGIN_REGISTRY", "public.ecr.aws")], "ECR Public"),
        (
            vec![("PLUGIN_SESSION_NAME", "mine")],
            "PLUGIN_SESSION_NAME is set without any of",
        ),
        (
            vec![("PLUGIN_DURATION_SECONDS", "900")],
            "PLUGIN_DURATION_SECONDS is set without any of",
        ),
        (vec![("PLUGIN_SOURCE", "Team/App:1")], "PLUGIN_SOURCE"),
        (
            vec![("PLUGIN_TAG_MUTABILITY", "IMMUTABLE_WITH_EXCLUSION")],
            "needs PLUGIN_TAG_MUTABILITY_EXCLUSIONS",
        ),
        (
            vec![
                ("PLUGIN_TAG_MUTABILITY", "IMMUTABLE"),
                ("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", "latest"),
            ],
            "has no exclusions",
        ),
        (
            vec![("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", "latest")],
            "PLUGIN_TAG_MUTABILITY_EXCLUSIONS is set without PLUGIN_TAG_MUTABILITY",
        ),
        (
            vec![
                ("PLUGIN_TAG_MUTABILITY", "MUTABLE_WITH_EXCLUSION"),
                ("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", "a,b,c,d,e,f"),
            ],
            "ECR takes at most 5",
        ),
        (
            vec![
                ("PLUGIN_TAG_MUTABILITY", "IMMUTABLE_WITH_EXCLUSION"),
                ("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", "a*b*c*"),
            ],
            "at most 2 '*'",
        ),
        (
            vec![
                ("PLUGIN_TAG_MUTABILITY", "IMMUTABLE_WITH_EXCLUSION"),
                ("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", &long_filter),
            ],
            "PLUGIN_TAG_MUTABILITY_EXCLUSIONS",
        ),
        (
            vec![
                ("PLUGIN_TAG_MUTABILITY", "IMMUTABLE_WITH_EXCLUSION"),
                ("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", "rel/*"),
            ],
            "PLUGIN_TAG_MUTABILITY_EXCLUSIONS",
        ),
        (
            vec![
                ("PLUGIN_MODE", "login"),
                ("PLUGIN_SOURCE", ""),
                ("PLUGIN_REPO", ""),
                ("DOCKER_CONFIG", &not_a_dir),
            ],
            "DOCKER_CONFIG",
        ),
        (vec![("PLUGIN_", "x")], "PLUGIN_ is not a setting"),
        (vec![("plugin_repo", "x"), ("PLUGIN_Repo", "x")], "PLUGIN_Repo"),
    ];
    assert!(cases.len() >= 70);
    // No AWS endpoint that answers: a case that reached the network would fail differently and slowly.
    // The AWS endpoint is a tripwire: a case that reached the network would connect to it.
    let aws = testbed::Tripwire::new();
    for (settings, name) in &cases {
        let mut step = Step::new()
            .env("AWS_ENDPOINT_URL", &aws.url)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("PLUGIN_SOURCE", &image.name)
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_REGISTRY", &registry.host)
            .env("PLUGIN_REGION", "us-east-1");
        for (k, v) in settings {
            step = step.env(k, v);
        }
        let run = step.run();
        run.failure(&["invalid settings (nothing was written)", name]);
        assert!(
            !aws.touched() && !run.output().contains("credentials:"),
            "{settings:?} reached the network"
        );
        // The bound: refused within a second (the step itself takes a few ms; the rest is spawning).
        assert!(
            run.elapsed < std::time::Duration::from_secs(1),
            "{settings:?} took {:?}",
            run.elapsed
        );
    }

    // Non-UTF-8 values and names.
    for (key, value) in [
        (
            OsString::from("PLUGIN_TAGS"),
            OsString::from_vec(vec![b'v', 0xff, b'1']),
        ),
        (OsString::from_vec(b"PLUGIN_\xffTAGS".to_vec()), OsString::from("v1")),
    ] {
        let out = Command::new(Step::binary())
            .env_clear()
            .env("AWS_ENDPOINT_URL", &aws.url)
            .env("PLUGIN_SOURCE", &image.name)
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_REGION", "us-east-1")
            .env(&key, &value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("not valid UTF-8") && err.contains("PLUGIN_"), "{err}");
        assert!(!aws.touched(), "a non-UTF-8 setting reached the network");
    }
    assert!(registry.tags("app").is_empty(), "a bad input pushed something");
}

#[test]
fn twenty_concurrent_runs_pushing_and_promoting_all_land_on_the_right_digest() {
    let (moto, registry) = (Moto::start(), Registry::atomic(DEFAULT_ACCOUNT));
    let (first, second) = (Image::random(200_000), Image::random(200_000));
    let seed = Step::push(&moto, &registry, &first, "app")
        .env("PLUGIN_TAGS", "seed")
        .run();
    seed.success();
    let seed_digest = seed.reported_digest(&format!("{}/app:seed", registry.host));
    let runs: Vec<(String, std::thread::JoinHandle<testbed::Run>)> = (0..20)
        .map(|i| {
            let tag = format!("run{i}");
            let step = if i % 2 == 0 {
                Step::push(&moto, &registry, &second, "app").env("PLUGIN_TAGS", &tag)
            } else {
                Step::push(&moto, &registry, &second, "prod")
                    .env("PLUGIN_MODE", "promote")
                    .remove("PLUGIN_SOURCE")
                    .env("PLUGIN_SOURCE", "app:seed")
                    .env("PLUGIN_TAGS", &tag)
            };
            (tag, std::thread::spawn(move || step.run()))
        })
        .collect();
    // Every run ends before the registry is read, so what is read is what the runs left. The registry stores
    // atomically, as ECR does (see `Registry::atomic`).
    let runs: Vec<(String, testbed::Run)> = runs
        .into_iter()
        .map(|(tag, handle)| (tag, handle.join().unwrap()))
        .collect();
    let mut pushed_digest = None;
    for (i, (tag, run)) in runs.into_iter().enumerate() {
        run.success();
        if i % 2 == 0 {
            let digest = registry.digest("app", &tag).expect("a pushed tag is missing");
            assert_eq!(run.reported_digest(&format!("{}/app:{tag}", registry.host)), digest);
            assert_eq!(
                *pushed_digest.get_or_insert(digest.clone()),
                digest,
                "the same image got two digests"
            );
        } else {
            assert_eq!(
                registry.digest("prod", &tag),
                Some(seed_digest.clone()),
                "promoted {tag}"
            );
        }
    }
    assert_eq!(registry.digest("app", "seed"), Some(seed_digest));
}

/// Generated from the settings table: every setting in every mode it does not apply to, and every setting
/// without the setting it needs, is refused by name before any network call.
#[test]
fn the_settings_table_refuses_every_setting_out_of_its_modes_and_without_what_it_needs() {
    use ecr_step::settings::{Key, Mode, SETTINGS};
    let aws = testbed::Tripwire::new();
    let refused = |settings: &[(String, &str)], want: &str| {
        let mut step = Step::new().env("AWS_ENDPOINT_URL", &aws.url);
        for (k, v) in settings {
            step = step.env(k, v);
        }
        let run = step.run();
        run.failure(&["invalid settings (nothing was written)", want]);
        assert!(!aws.touched(), "{settings:?} reached the network");
    };
    let mut pairs = 0;
    for s in SETTINGS.iter().filter(|s| s.key != Key::Mode) {
        for mode in Mode::ALL.iter().filter(|m| !s.applies_in(**m)) {
            let want = format!("{} does not apply with PLUGIN_MODE={mode}", s.env());
            refused(&[("PLUGIN_MODE".into(), &mode.to_string()), (s.env(), "x")], &want);
            pairs += 1;
        }
    }
    assert!(
        pairs >= 30,
        "only {pairs} setting/mode pairs are refused: is the table still saying which modes?"
    );
    // The decision for login mode: a dry run has nothing to show, so it is refused.
    refused(
        &[("PLUGIN_MODE".into(), "login"), ("PLUGIN_DRY_RUN".into(), "true")],
        "PLUGIN_DRY_RUN does not apply with PLUGIN_MODE=login",
    );
    let mut needs = 0;
    for s in SETTINGS.iter().filter(|s| !s.needs.is_empty()) {
        let mode = s.modes[0].to_string();
        let want = format!("{} is set without", s.env());
        refused(&[("PLUGIN_MODE".into(), &mode), (s.env(), "x")], &want);
        needs += 1;
    }
    assert!(needs >= 12, "only {needs} dependencies declared");
}

/// A problem names the setting as the user wrote it: an Action's input, a Drone or Woodpecker plugin's
/// `settings.` key, with the variable in brackets; the words fit every mode ("nothing was written").
#[test]
fn problems_name_the_setting_as_each_front_end_wrote_it() {
    let base = || {
        Step::new()
            .env("PLUGIN_MODE", "promote")
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_REGION", testbed::REGION)
    };
    let action = base().env("GITHUB_ACTIONS", "true").env("INPUT_REPO", "app").run();
    action.failure(&["input `source` (PLUGIN_SOURCE) is required", "nothing was written"]);
    assert!(!action.output().contains("nothing was pushed"), "{}", action.output());
    let drone = base().env("DRONE", "true").run();
    drone.failure(&["settings.source (PLUGIN_SOURCE) is required"]);
    let woodpecker = base().env("CI", "woodpecker").run();
    woodpecker.failure(&["settings.source (PLUGIN_SOURCE) is required"]);
    let plain = base().run();
    plain.failure(&["PLUGIN_SOURCE is required"]);
    assert!(!plain.output().contains("settings.source"), "{}", plain.output());
}
