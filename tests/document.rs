//! The "AWS ECR" integration document end to end: which identity pushed (the setup role's account), which
//! read role promote used, which policy the repository got; refusals before any call, by JSON path; and the
//! README's example documents checked against the shipped schema by an independent validator (Python's
//! jsonschema, from the testbed's venv) as well as the step's own.

mod testbed;

use serde_json::json;
use std::process::Command;
use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, SECRET_KEY, Step};

const BUILDS: &str = "arn:aws:iam::222222222222:role/builds";
const HOP: &str = "arn:aws:iam::333333333333:role/ci-hop";
const CENTRAL: &str = "arn:aws:iam::111111111111:role/central-read";
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444444444444:root"},"Action":["ecr:BatchGetImage"]}]}"#;

fn document() -> serde_json::Value {
    json!({
        "ci": {"region": "us-east-1", "access_key": testbed::ACCESS_KEY, "secret_key": SECRET_KEY},
        "setup": {"region": "us-east-1", "role_arn": BUILDS}
    })
}

/// A run with the document and no credentials of its own: only the document's keys can be used.
fn with_document(moto: &Moto, document: &serde_json::Value) -> Step {
    Step::new()
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("PLUGIN_INTEGRATION_DOCUMENT", &document.to_string())
}

#[test]
fn a_document_pushes_as_the_setup_role_through_its_intermediate_role_and_sets_the_policy() {
    let moto = Moto::start();
    // The setup role's account owns the registry: only its token is accepted.
    let (registry, image) = (Registry::start("222222222222"), Image::random(20_000));
    let mut doc = document();
    doc["setup"]["intermediate_role"] = HOP.into();
    doc["setup"]["external_id"] = "tenant-42".into();
    doc["setup"]["policy"] = POLICY.into();
    let run = with_document(&moto, &doc)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "team/app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run();
    run.success();
    run.says("settings: PLUGIN_ROLE_ARN: from document setup.role_arn")
        .says("settings: PLUGIN_SECRET_KEY: from document ci.secret_key")
        .says("settings: PLUGIN_REGION: from document ci.region, setup.region")
        .says(&format!("role {BUILDS} via intermediate role {HOP}"))
        .says("(confirmed: arn:aws:sts::222222222222:assumed-role/builds/")
        .says("repository team/app: repository policy applied");
    assert!(
        !run.output().contains("tenant-42"),
        "an external ID leaked:\n{}",
        run.output()
    );
    let digest = run.reported_digest(&format!("{}/team/app:latest", registry.host));
    assert_eq!(registry.digest("team/app", "latest"), Some(digest));
    // The policy is on the repository of the setup role's account, in moto.
    let keys = assumed(&moto, BUILDS);
    let stored = moto
        .aws_as(
            (&keys.0, &keys.1),
            &["ecr", "get-repository-policy", "--repository-name", "team/app"],
        )
        .unwrap();
    assert!(
        stored["policyText"].as_str().unwrap().contains("444444444444"),
        "{stored}"
    );
}

/// Keys of `role` in moto (moto acts as the role's account for them).
fn assumed(moto: &Moto, role: &str) -> (String, String) {
    let answer = moto.aws(&["sts", "assume-role", "--role-arn", role, "--role-session-name", "test"]);
    let creds = &answer["Credentials"];
    (
        creds["AccessKeyId"].as_str().unwrap().to_string(),
        creds["SecretAccessKey"].as_str().unwrap().to_string(),
    )
}

#[test]
fn promote_reads_with_the_documents_read_role_and_writes_as_the_setup_role() {
    let moto = Moto::start();
    let (central, target, image) = (
        Registry::start("111111111111"),
        Registry::start("222222222222"),
        Image::random(20_000),
    );
    // Seed the central registry as its own account.
    Step::push(&moto, &central, &image, "central/app")
        .env("PLUGIN_ROLE_ARN", "arn:aws:iam::111111111111:role/seed")
        .env("PLUGIN_TAGS", "1.0")
        .run()
        .success();
    let mut doc = document();
    doc["read"] = json!({"region": "us-east-1", "role_arn": CENTRAL});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("PLUGIN_INTEGRATION_DOCUMENT", &file.path().display().to_string())
        .env("PLUGIN_MODE", "promote")
        .env("PLUGIN_SOURCE", &format!("{}/central/app:1.0", central.host))
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_TAGS", "1.0")
        .env("PLUGIN_REGISTRY", &target.host)
        .run();
    run.success();
    run.says("settings: PLUGIN_READ_ROLE_ARN: from document read.role_arn")
        .says(&format!("source: read with role {CENTRAL}"))
        .says("(confirmed: arn:aws:sts::111111111111:assumed-role/central-read/")
        .says("(confirmed: arn:aws:sts::222222222222:assumed-role/builds/");
    assert_eq!(target.digest("app", "1.0"), central.digest("central/app", "1.0"));
}

#[test]
fn explicit_settings_win_group_by_group_and_the_log_says_so() {
    let (moto, registry, image) = (Moto::start(), Registry::start("555555555555"), Image::random(5_000));
    let run = with_document(&moto, &document())
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_ROLE_ARN", "arn:aws:iam::555555555555:role/mine")
        .env("PLUGIN_MODE", "push")
        .run();
    run.success();
    run.says("settings: PLUGIN_ROLE_ARN: from the setting PLUGIN_ROLE_ARN (document setup.role_arn not used)")
        .says("settings: PLUGIN_ACCESS_KEY: from document ci.access_key")
        .says("(confirmed: arn:aws:sts::555555555555:assumed-role/mine/");
    // In login mode the read block and the policy have nothing to do, and say so.
    let mut doc = document();
    doc["read"] = json!({"role_arn": CENTRAL});
    doc["setup"]["policy"] = POLICY.into();
    let config = tempfile::tempdir().unwrap();
    let registry = Registry::start("222222222222");
    let run = with_document(&moto, &doc)
        .env("PLUGIN_MODE", "login")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("DOCKER_CONFIG", &config.path().display().to_string())
        .run();
    run.success();
    run.says("PLUGIN_READ_ROLE_ARN: document read.role_arn not used with PLUGIN_MODE=login")
        .says("PLUGIN_REPOSITORY_POLICY: document setup.policy not used with PLUGIN_MODE=login");
    let _ = DEFAULT_ACCOUNT;
}

#[test]
fn bad_documents_are_refused_before_any_call_by_json_path_without_the_secret() {
    let aws = testbed::Tripwire::new();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut cases: Vec<(String, &str)> = Vec::new();
    let mut broken = |f: fn(&mut serde_json::Value), want: &'static str| {
        let mut d = document();
        f(&mut d);
        cases.push((d.to_string(), want));
    };
    broken(
        |d| d["setup"]["role_arn"] = "arn:aws:iam::1:role/x".into(),
        "setup.role_arn=",
    );
    broken(
        |d| d["ci"]["region"] = "moon-1".into(),
        "ci.region=`moon-1` is not allowed",
    );
    broken(|d| d["ci"]["acces_key"] = "x".into(), "did you mean ci.access_key?");
    broken(|d| d["extra"] = 1.into(), "extra: unknown property");
    broken(
        |d| {
            d.as_object_mut().unwrap().remove("setup");
        },
        "setup: required, and missing",
    );
    broken(|d| d["read"] = json!({"rolearn": "x"}), "did you mean read.role_arn?");
    broken(
        |d| d["setup"]["region"] = "eu-west-1".into(),
        "ci.region (us-east-1) and setup.region (eu-west-1) disagree",
    );
    broken(
        |d| d["setup"]["policy"] = "[1]".into(),
        "setup.policy (for PLUGIN_REPOSITORY_POLICY) is not allowed",
    );
    broken(
        |d| d["ci"]["secret_key"] = 42.into(),
        "ci.secret_key: expected a string",
    );
    cases.push(("/dev/zero".into(), "not a regular file"));
    cases.push((fifo.display().to_string(), "a FIFO"));
    cases.push(("{not json".into(), "not valid JSON"));
    for (value, want) in &cases {
        let run = Step::new()
            .env("AWS_ENDPOINT_URL", &aws.url)
            .env("PLUGIN_INTEGRATION_DOCUMENT", value)
            .env("PLUGIN_SOURCE", "app:1")
            .env("PLUGIN_REPO", "app")
            .run();
        run.failure(&[
            "invalid settings (nothing was written)",
            "PLUGIN_INTEGRATION_DOCUMENT",
            want,
        ]);
        assert!(!aws.touched(), "{value} reached the network");
    }
}

/// The ```json blocks of the README's integration document section.
fn readme_examples() -> Vec<serde_json::Value> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### An integration document")
        .nth(1)
        .expect("the README section");
    let section = section.split("\n### ").next().unwrap();
    section
        .split("```json\n")
        .skip(1)
        .map(|block| serde_json::from_str(block.split("```").next().unwrap()).expect("a README example is JSON"))
        .collect()
}

#[test]
fn the_readme_examples_and_known_bad_documents_agree_with_an_independent_validator() {
    let examples = readme_examples();
    assert!(examples.len() >= 2, "the README shows a minimal and a full document");
    let mut bad = document();
    bad["setup"]["rol_arn"] = "x".into();
    let mut wrong_region = document();
    wrong_region["read"] = json!({"region": "eu-west-9"});
    let mut no_ci = document();
    no_ci.as_object_mut().unwrap().remove("ci");
    let minimal = document();
    let cases: Vec<(&serde_json::Value, bool)> = examples
        .iter()
        .map(|e| (e, true))
        .chain([(&bad, false), (&wrong_region, false), (&no_ci, false), (&minimal, true)])
        .collect();
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/aws-ecr-integration.schema.json");
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.testbed/venv/bin/python");
    for (doc, valid) in cases {
        let ours = ecr_step::settings::document::read(&doc.to_string());
        assert_eq!(ours.is_ok(), valid, "ecr-step on {doc}: {ours:?}");
        let out = Command::new(python)
            .args([
                "-c",
                "import json, sys, jsonschema\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 jsonschema.Draft7Validator.check_schema(schema)\n\
                 errors = list(jsonschema.Draft7Validator(schema).iter_errors(json.loads(sys.argv[2])))\n\
                 print(len(errors))",
                schema,
                &doc.to_string(),
            ])
            .output()
            .expect("python from scripts/install-testbed");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let errors: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(errors == 0, valid, "jsonschema on {doc}: {errors} error(s)");
    }
}
