//! Repository management and idempotent re-runs, end to end: the repository is checked in moto's ECR API
//! with the AWS CLI, the images in the distribution registry.

mod testbed;

use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

fn describe(moto: &Moto, repo: &str) -> serde_json::Value {
    moto.aws(&["ecr", "describe-repositories", "--repository-names", repo])["repositories"][0].clone()
}

#[test]
fn a_missing_repository_is_created_with_every_option() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let lifecycle = tempfile::NamedTempFile::new().unwrap();
    let lifecycle_policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
    std::fs::write(lifecycle.path(), lifecycle_policy).unwrap();
    let repo_policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ci","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":["ecr:BatchGetImage"]}]}"#;
    let kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let run = Step::push(&moto, &registry, &image, "team/app")
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .env("PLUGIN_TAG_MUTABILITY", "IMMUTABLE")
        .env("PLUGIN_SCAN_ON_PUSH", "true")
        .env("PLUGIN_ENCRYPTION", "KMS")
        .env("PLUGIN_KMS_KEY", kms)
        .env("PLUGIN_REPOSITORY_TAGS", "team=platform,cost-center=42")
        .env("PLUGIN_LIFECYCLE_POLICY", &lifecycle.path().display().to_string())
        .env("PLUGIN_REPOSITORY_POLICY", repo_policy)
        .run();
    run.success();
    assert!(
        run.stdout
            .contains("repository team/app: created (IMMUTABLE, scan on push, KMS"),
        "{}",
        run.stdout
    );
    let repo = describe(&moto, "team/app");
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE");
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "KMS");
    assert_eq!(repo["encryptionConfiguration"]["kmsKey"], kms);
    let tags = moto.aws(&[
        "ecr",
        "list-tags-for-resource",
        "--resource-arn",
        repo["repositoryArn"].as_str().unwrap(),
    ]);
    let mut tags: Vec<String> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}={}", t["Key"].as_str().unwrap(), t["Value"].as_str().unwrap()))
        .collect();
    tags.sort();
    assert_eq!(tags, vec!["cost-center=42", "team=platform"]);
    let stored = moto.aws(&["ecr", "get-lifecycle-policy", "--repository-name", "team/app"]);
    let stored: serde_json::Value = serde_json::from_str(stored["lifecyclePolicyText"].as_str().unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::from_str::<serde_json::Value>(lifecycle_policy).unwrap()
    );
    let stored = moto.aws(&["ecr", "get-repository-policy", "--repository-name", "team/app"]);
    assert!(stored["policyText"].as_str().unwrap().contains("222222222222"));
    assert!(registry.digest("team/app", "latest").is_some());
}

#[test]
fn an_existing_repository_keeps_every_setting_the_user_did_not_set() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    moto.aws(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "app",
        "--image-tag-mutability",
        "IMMUTABLE",
        "--image-scanning-configuration",
        "scanOnPush=true",
    ]);
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run();
    run.success();
    run.says("repository app: exists, nothing to change");
    let repo = describe(&moto, "app");
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE");
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);

    // Only mutability is set: only mutability changes.
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v2")
        .env("PLUGIN_TAG_MUTABILITY", "MUTABLE")
        .run();
    run.success();
    run.says("repository app: tag mutability IMMUTABLE → MUTABLE");
    let repo = describe(&moto, "app");
    assert_eq!(repo["imageTagMutability"], "MUTABLE");
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
}

#[test]
fn a_missing_repository_without_create_says_how_to_create_it() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_SCAN_ON_PUSH", "true")
        .run();
    run.failure(&["the repository app does not exist", "PLUGIN_CREATE_REPOSITORY=true"]);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn invalid_policy_json_is_refused_before_any_call() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let aws = testbed::Tripwire::new();
    let run = Step::push(&moto, &registry, &image, "app")
        .env("AWS_ENDPOINT_URL", &aws.url)
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .env("PLUGIN_LIFECYCLE_POLICY", r#"{"rules": [}"#)
        .run();
    run.failure(&["PLUGIN_LIFECYCLE_POLICY", "valid JSON"]);
    assert!(!aws.touched(), "the step called AWS before refusing the policy");
    assert!(registry.tags("app").is_empty());
}

#[test]
fn skip_existing_decides_each_tag_on_its_own() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let first = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run();
    first.success();
    let digest = first.reported_digest(&format!("{}/app:v1", registry.host));

    let run = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1,v2")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .run();
    run.success();
    run.says(&format!(
        "skipped: {}/app:v1 {digest} (already at this digest)",
        registry.host
    ));
    assert_eq!(run.reported_digest(&format!("{}/app:v2", registry.host)), digest);
    run.says("summary: 1 of 2 tag(s) written");
    run.says("1 already there");
    assert_eq!(registry.digest("app", "v2"), Some(digest));
}

#[test]
fn an_immutable_tag_held_by_another_digest_names_the_tag_and_both_digests() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let (old, new) = (Image::random(1000), Image::random(1000));
    moto.aws(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "app",
        "--image-tag-mutability",
        "IMMUTABLE",
    ]);
    let first = Step::push(&moto, &registry, &old, "app").env("PLUGIN_TAGS", "v1").run();
    first.success();
    let held = first.reported_digest(&format!("{}/app:v1", registry.host));

    let run = Step::push(&moto, &registry, &new, "app")
        .env("PLUGIN_TAGS", "v1,v2")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .run();
    let ours = run.reported_digest(&format!("{}/app:v2", registry.host));
    assert_ne!(ours, held);
    run.failure(&[
        &format!("tag v1 already holds {held} in the immutable repository app and this image is {ours}"),
        "1 of 2 tag(s) failed",
    ]);
    assert_eq!(
        registry.digest("app", "v1"),
        Some(held),
        "the immutable tag was overwritten"
    );
}

#[test]
fn a_denied_action_names_the_permission_and_a_policy_that_grants_it() {
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let (registry, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let (key, secret) = moto.user_allowed(&[
        "sts:GetCallerIdentity",
        "ecr:GetAuthorizationToken",
        "ecr:DescribeRepositories",
    ]);
    let run = Step::push(&moto, &registry, &image, "app")
        .remove("AWS_ACCESS_KEY_ID")
        .remove("AWS_SECRET_ACCESS_KEY")
        .env("PLUGIN_ACCESS_KEY", &key)
        .env("PLUGIN_SECRET_KEY", &secret)
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .run();
    run.failure(&[
        "ecr:CreateRepository on app failed",
        "not authorized",
        "AmazonEC2ContainerRegistryFullAccess",
    ]);
    assert!(!run.output().contains(&secret), "the secret key leaked");
    assert!(registry.tags("app").is_empty());
}

#[test]
fn exclusion_filters_let_excluded_tags_be_overwritten_and_name_both_digests_for_the_others() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let (old, new) = (Image::random(1000), Image::random(1000));
    let first = Step::push(&moto, &registry, &old, "app")
        .env("PLUGIN_TAGS", "latest,v1")
        .env("PLUGIN_CREATE_REPOSITORY", "true")
        .env("PLUGIN_TAG_MUTABILITY", "IMMUTABLE_WITH_EXCLUSION")
        .env("PLUGIN_TAG_MUTABILITY_EXCLUSIONS", "latest,sha256-*")
        .run();
    first.success();
    first.says("created (IMMUTABLE_WITH_EXCLUSION (latest, sha256-*)");
    let held = first.reported_digest(&format!("{}/app:v1", registry.host));
    let described = moto.aws(&["ecr", "describe-repositories", "--repository-names", "app"]);
    let repository = &described["repositories"][0];
    assert_eq!(
        repository["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION",
        "{described}"
    );
    let filters: Vec<&str> = repository["imageTagMutabilityExclusionFilters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filter"].as_str().unwrap())
        .collect();
    assert_eq!(filters, vec!["latest", "sha256-*"]);

    // Another image: the excluded tag is overwritten, the other one is a conflict naming both digests.
    let run = Step::push(&moto, &registry, &new, "app")
        .env("PLUGIN_TAGS", "latest,v1")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .run();
    let ours = run.reported_digest(&format!("{}/app:latest", registry.host));
    run.failure(&[
        &format!("tag v1 already holds {held} in the immutable repository app and this image is {ours}"),
        "1 of 2 tag(s) failed",
    ]);
    assert_eq!(registry.digest("app", "latest"), Some(ours.clone()));
    assert_eq!(
        registry.digest("app", "v1"),
        Some(held),
        "the immutable tag was overwritten"
    );
    // The excluded tag again, with the first image: overwritten a second time.
    let again = Step::push(&moto, &registry, &old, "app")
        .env("PLUGIN_TAGS", "latest")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .run();
    again.success();
    assert_ne!(registry.digest("app", "latest"), Some(ours));
}
