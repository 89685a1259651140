//! Pipeline integration end to end: branch filters, integrations files, outputs, login and check modes.

mod testbed;

use std::os::unix::fs::PermissionsExt;
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

/// A dry run (credentials and token resolved, nothing pushed) with a branch filter.
fn filtered(moto: &Moto, registry: &Registry, image: &Image) -> Step {
    Step::push(moto, registry, image, "app").env("PLUGIN_DRY_RUN", "true")
}

fn skipped(run: &testbed::Run) -> bool {
    run.success();
    run.stdout.contains("skipped: branch")
}

#[test]
fn every_ci_variable_names_the_branch() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let vars = [
        "CF_BRANCH",
        "BRANCH",
        "DRONE_BRANCH",
        "CI_COMMIT_BRANCH",
        "GITHUB_HEAD_REF",
        "GITHUB_REF_NAME",
        "BUILDKITE_BRANCH",
        "CIRCLE_BRANCH",
        "BRANCH_NAME",
        "GIT_BRANCH",
    ];
    for var in vars {
        let step = filtered(&moto, &registry, &image).env("PLUGIN_BRANCHES_ONLY", "main");
        let run = step.env(var, "dev").run();
        assert!(skipped(&run), "{var}=dev should skip:\n{}", run.stdout);
        run.says(&format!(
            "branch dev (from {var}) matches none of the only patterns main"
        ));
        assert!(!run.stdout.contains("credentials:"), "a skipped run made AWS calls");
        let run = filtered(&moto, &registry, &image)
            .env("PLUGIN_BRANCHES_ONLY", "main")
            .env(var, "main")
            .run();
        assert!(!skipped(&run), "{var}=main should run:\n{}", run.stdout);
        run.says("dry run:");
    }
    // Jenkins' origin/ prefix is stripped.
    let run = filtered(&moto, &registry, &image)
        .env("PLUGIN_BRANCHES_ONLY", "main")
        .env("GIT_BRANCH", "origin/main")
        .run();
    assert!(!skipped(&run), "{}", run.stdout);
}

#[test]
fn only_except_and_double_star() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let cases = [
        ("release/*", "", "release/1.2", false),
        ("release/*", "", "release/1.2/hotfix", true),
        ("feature/**", "", "feature/a/b/c", false),
        ("release/**", "release/old/*", "release/old/1", true),
        ("release/**", "release/old/*", "release/2.0", false),
        ("", "wip-*", "wip-x", true),
        ("", "wip-*", "main", false),
    ];
    for (only, except, branch, skip) in cases {
        let run = filtered(&moto, &registry, &image)
            .env("PLUGIN_BRANCHES_ONLY", only)
            .env("PLUGIN_BRANCHES_EXCEPT", except)
            .env("PLUGIN_BRANCH", branch)
            .run();
        assert_eq!(
            skipped(&run),
            skip,
            "only={only} except={except} branch={branch}:\n{}",
            run.stdout
        );
    }
    // A real push skipped by the filter leaves the registry empty.
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_BRANCHES_EXCEPT", "main")
        .env("CF_BRANCH", "main")
        .run();
    assert!(skipped(&run));
    assert!(registry.tags("app").is_empty());
}

#[test]
fn a_filter_without_a_branch_or_with_a_bad_pattern_is_an_error() {
    let image = Image::random(1000);
    let base = || {
        Step::new()
            .env("PLUGIN_SOURCE", &image.name)
            .env("PLUGIN_REPO", "app")
            .env("PLUGIN_REGION", "us-east-1")
    };
    base().env("PLUGIN_BRANCHES_ONLY", "main").run().failure(&[
        "a branch filter is set (PLUGIN_BRANCHES_ONLY) but the branch is unknown",
        "PLUGIN_BRANCH",
    ]);
    base()
        .env("PLUGIN_BRANCHES_ONLY", "release/[")
        .env("PLUGIN_BRANCH", "x")
        .run()
        .failure(&["PLUGIN_BRANCHES_ONLY: not allowed"]);
}

const INTEGRATIONS: &str = r#"
integrations:
  hub:
    - integrationName: ecr-prod
      type: ecr
      region: us-east-1
      branches:
        only:
          - main
    - integrationName: ecr-eu
      type: ecr
      region: eu-west-3
    - integrationName: dockerhub
      type: docker
"#;

#[test]
fn an_integrations_file_supplies_region_and_branches() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), INTEGRATIONS).unwrap();
    let path = file.path().display().to_string();
    let step = |name: &str| {
        Step::push(&moto, &registry, &image, "app")
            .remove("PLUGIN_REGION")
            .env("PLUGIN_INTEGRATIONS_FILE", &path)
            .env("PLUGIN_INTEGRATION", name)
    };
    let run = step("ecr-prod").env("BRANCH", "dev").run();
    assert!(skipped(&run), "{}", run.stdout);
    let run = step("ecr-prod").env("BRANCH", "main").run();
    run.success();
    assert!(registry.digest("app", "latest").is_some());
    // Explicit settings win over the entry.
    let run = step("ecr-prod")
        .env("BRANCH", "dev")
        .env("PLUGIN_BRANCHES_ONLY", "dev")
        .env("PLUGIN_TAGS", "dev")
        .run();
    run.success();
    assert!(registry.digest("app", "dev").is_some());
    // The entry's region is the token's region (moto's proxy endpoint says which).
    let run = step("ecr-eu")
        .env("PLUGIN_DRY_RUN", "true")
        .remove("PLUGIN_REGISTRY")
        .run();
    run.success();
    run.says("123456789012.dkr.ecr.eu-west-3.amazonaws.com");

    step("ecr-staging").run().failure(&[
        "the integration name ecr-staging does not match any entry; the file has: ecr-prod, ecr-eu, dockerhub",
    ]);
    step("dockerhub")
        .run()
        .failure(&["the integration dockerhub is of type docker, not ecr"]);
}

#[test]
fn outputs_are_written_in_every_format_with_the_same_names() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let dir = tempfile::tempdir().unwrap();
    let github = dir.path().join("github_output");
    let json = dir.path().join("outputs.json");
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1,latest")
        .env("CF_VOLUME_PATH", &dir.path().display().to_string())
        .env("GITHUB_OUTPUT", &github.display().to_string())
        .env("PLUGIN_OUTPUT_FILE", &json.display().to_string())
        .run();
    run.success();
    let digest = registry.digest("app", "v1").unwrap();
    let image_ref = format!("{}/app:v1", registry.host);
    for file in [dir.path().join("env_vars_to_export"), github] {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in [
            format!("ECR_STEP_IMAGE={image_ref}"),
            format!("ECR_STEP_DIGEST={digest}"),
            format!("ECR_STEP_REGISTRY={}", registry.host),
            "ECR_STEP_TAGS=v1,latest".to_string(),
            format!("ECR_STEP_IMAGES={image_ref},{}/app:latest", registry.host),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from {}:\n{text}",
                file.display()
            );
        }
    }
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["image"], image_ref);
    assert_eq!(value["digest"], digest);
    assert_eq!(value["tags"], serde_json::json!(["v1", "latest"]));
}

#[test]
fn login_writes_a_0600_docker_config_that_a_later_docker_push_uses() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        r#"{"auths":{"other.example":{"auth":"eDp5"}}}"#,
    )
    .unwrap();
    let run = Step::login(&moto, &registry, &config.path().display().to_string()).run();
    run.success();
    run.says("login: 1 registry written to");
    let path = config.path().join("config.json");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("other.example"), "the existing entry was lost:\n{text}");

    let target = format!("{}/app:from-cli", registry.host);
    let docker = |args: &[&str]| testbed::docker_with(Some(config.path()), args);
    docker(&["tag", &image.name, &target]);
    docker(&["push", &target]);
    assert!(registry.digest("app", "from-cli").is_some());
}

#[test]
fn check_reports_a_healthy_setup_and_changes_nothing() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    moto.aws(&["ecr", "create-repository", "--repository-name", "app"]);
    let run = Step::aws(&moto)
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .run();
    run.success();
    run.says("check: 5 of 5 checks passed; nothing was changed");
    assert!(registry.tags("app").is_empty());
}

#[test]
fn check_names_each_failure_and_its_fix() {
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let registry = Registry::start("111111111111");
    let (key, secret) = moto.user_allowed(&["sts:GetCallerIdentity", "ecr:GetAuthorizationToken"]);
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("PLUGIN_ACCESS_KEY", &key)
        .env("PLUGIN_SECRET_KEY", &secret)
        .env("PLUGIN_MODE", "check")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .run();
    run.failure(&[
        &format!("check: FAIL  sign in to {}", registry.host),
        "check: FAIL  repository app",
        "allow ecr:DescribeRepositories on app",
        "AmazonEC2ContainerRegistryReadOnly",
        "check(s) failed",
    ]);
    assert!(!run.output().contains(&secret));
}

/// `$GITHUB_OUTPUT` as GitHub reads it: `NAME=value` lines and `NAME<<DELIMITER` blocks.
fn github_outputs(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        match (line.split_once("<<"), line.split_once('=')) {
            (Some((name, delimiter)), eq) if eq.is_none_or(|(n, _)| n.len() > name.len()) => {
                let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
                out.insert(name.to_string(), value.join("\n"));
            }
            (_, Some((name, value))) => {
                out.insert(name.to_string(), value.to_string());
            }
            _ => panic!("GitHub would refuse this line of $GITHUB_OUTPUT: {line:?}"),
        }
    }
    out
}

/// Codefresh's env_vars_to_export: one `NAME=value` per line.
fn codefresh_outputs(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn dry_runs_and_skipped_runs_export_outputs_each_ci_parses_even_after_a_line_without_newline() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    for (name, extra, flag) in [
        ("dry", vec![("PLUGIN_DRY_RUN", "true")], "ECR_STEP_DRY_RUN"),
        (
            "skip",
            vec![("PLUGIN_BRANCH", "feature/x"), ("PLUGIN_BRANCHES_ONLY", "main")],
            "ECR_STEP_SKIPPED",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let github = dir.path().join("github_output");
        std::fs::write(&github, "EARLIER=kept").unwrap();
        std::fs::write(dir.path().join("env_vars_to_export"), "OTHER=kept").unwrap();
        let json = dir.path().join("out.json");
        let mut step = Step::push(&moto, &registry, &image, "app")
            .env("GITHUB_OUTPUT", &github.display().to_string())
            .env("CF_VOLUME_PATH", &dir.path().display().to_string())
            .env("PLUGIN_OUTPUT_FILE", &json.display().to_string());
        for (k, v) in extra {
            step = step.env(k, v);
        }
        step.run().success();
        let gh = github_outputs(&std::fs::read_to_string(&github).unwrap());
        let cf = codefresh_outputs(&std::fs::read_to_string(dir.path().join("env_vars_to_export")).unwrap());
        for outputs in [&gh, &cf] {
            assert_eq!(
                outputs.get("EARLIER").or(outputs.get("OTHER")).map(String::as_str),
                Some("kept"),
                "{name}: {outputs:?}"
            );
            assert_eq!(
                outputs.get(flag).map(String::as_str),
                Some("true"),
                "{name}: {outputs:?}"
            );
            assert!(
                !outputs.contains_key("ECR_STEP_DIGEST"),
                "{name}: a digest for nothing written"
            );
        }
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(value["registries"].is_array() && value["tags"].is_array(), "{value}");
        if name == "dry" {
            assert_eq!(gh["ECR_STEP_IMAGE"], format!("{}/app:latest", registry.host));
            assert_eq!(value["dry_run"], true);
        } else {
            assert_eq!(value["skipped"], true);
        }
    }
    assert!(
        registry.tags("app").is_empty(),
        "a dry or skipped run wrote to the registry"
    );
}
