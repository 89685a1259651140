//! Credential levels end to end. moto issues each role's credentials in the role's own account, and its
//! ECR token then carries that account's password; each registry accepts only one account's password.
//! So a push that lands proves which level (and which role) the step used.

mod testbed;

use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Run, Step};

const TRIGGER: &str = "arn:aws:iam::111111111111:role/trigger-push";
const PIPELINE: &str = "arn:aws:iam::222222222222:role/pipeline-push";
const ACCOUNT_ROLE: &str = "arn:aws:iam::333333333333:role/account-push";
const INTERMEDIATE: &str = "arn:aws:iam::444444444444:role/hub";
const SERVICE_ACCOUNT: &str = "arn:aws:iam::555555555555:role/runner-sa";
/// What a web identity token file holds: must never appear in output.
const WEB_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.ecr-step-test-web-identity.c2lnbmF0dXJl";

/// The runner's own (runtime) credentials in a run.
enum Runtime {
    None,
    EnvKeys,
    /// `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, as EKS projects them for a service account.
    ServiceAccount,
}

struct Fixture {
    moto: Moto,
    image: Image,
    token_file: tempfile::NamedTempFile,
}

impl Fixture {
    fn new() -> Fixture {
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), WEB_IDENTITY_TOKEN).unwrap();
        Fixture {
            moto: Moto::start(),
            image: Image::random(1000),
            token_file,
        }
    }

    fn token_path(&self) -> String {
        self.token_file.path().display().to_string()
    }

    /// Push to a registry that accepts only `account`'s token, with `settings` and `runtime` credentials.
    fn push(&self, account: &str, runtime: Runtime, settings: &[(&str, &str)]) -> (Registry, Run) {
        let registry = Registry::start(account);
        let mut step = Step::push(&self.moto, &registry, &self.image, "app")
            .remove("AWS_ACCESS_KEY_ID")
            .remove("AWS_SECRET_ACCESS_KEY");
        match runtime {
            Runtime::None => {}
            Runtime::EnvKeys => {
                step = step
                    .env("AWS_ACCESS_KEY_ID", testbed::ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", testbed::SECRET_KEY)
            }
            Runtime::ServiceAccount => {
                step = step
                    .env("AWS_ROLE_ARN", SERVICE_ACCOUNT)
                    .env("AWS_WEB_IDENTITY_TOKEN_FILE", &self.token_path())
            }
        }
        for (k, v) in settings {
            step = step.env(k, v);
        }
        let run = step.run();
        assert!(
            !run.output().contains(WEB_IDENTITY_TOKEN),
            "the web identity token leaked:\n{}",
            run.output()
        );
        (registry, run)
    }
}

fn landed(registry: &Registry, run: &Run) {
    run.success();
    assert!(
        registry.digest("app", "latest").is_some(),
        "nothing in the registry of {}",
        registry.account
    );
}

const KEYS: [(&str, &str); 2] = [
    ("PLUGIN_ACCESS_KEY", testbed::ACCESS_KEY),
    ("PLUGIN_SECRET_KEY", testbed::SECRET_KEY),
];

#[test]
fn the_trigger_level_wins_over_every_other_level() {
    let f = Fixture::new();
    let settings = [
        ("PLUGIN_TRIGGER_ROLE_ARN", TRIGGER),
        ("PLUGIN_TRIGGER_EXTERNAL_ID", "trigger-ext-7"),
        ("PLUGIN_PIPELINE_ROLE_ARN", PIPELINE),
        KEYS[0],
        KEYS[1],
        ("CF_BUILD_ID", "65f0c1d2"),
    ];
    let (registry, run) = f.push("111111111111", Runtime::EnvKeys, &settings);
    landed(&registry, &run);
    let want = format!(
        "credentials: trigger level, role {TRIGGER} (assumed from runtime credentials) \
         (confirmed: arn:aws:sts::111111111111:assumed-role/trigger-push/ecr-step-65f0c1d2)"
    );
    run.says(&want);
    run.says("also configured and not used: pipeline, account level");
    assert!(!run.output().contains("trigger-ext-7"), "the external ID was printed");
}

#[test]
fn the_pipeline_level_wins_over_the_account_and_the_runtime() {
    let f = Fixture::new();
    let (registry, run) = f.push(
        "222222222222",
        Runtime::EnvKeys,
        &[("PLUGIN_PIPELINE_ROLE_ARN", PIPELINE), KEYS[0], KEYS[1]],
    );
    landed(&registry, &run);
    run.says("credentials: pipeline level");
}

#[test]
fn the_account_role_is_assumed_from_the_account_keys() {
    // No runtime credentials at all: only the keys can be the base of the AssumeRole.
    let f = Fixture::new();
    let (registry, run) = f.push(
        "333333333333",
        Runtime::None,
        &[("PLUGIN_ROLE_ARN", ACCOUNT_ROLE), KEYS[0], KEYS[1]],
    );
    landed(&registry, &run);
    run.says(&format!(
        "account level, role {ACCOUNT_ROLE} (assumed from static keys AKIA…MPLE)"
    ));
}

#[test]
fn a_two_hop_chain_goes_through_the_intermediate_role() {
    let f = Fixture::new();
    let settings = [
        ("PLUGIN_INTERMEDIATE_ROLE", INTERMEDIATE),
        ("PLUGIN_INTERMEDIATE_EXTERNAL_ID", "hub-ext"),
        ("PLUGIN_ROLE_ARN", ACCOUNT_ROLE),
        ("PLUGIN_EXTERNAL_ID", "target-ext"),
        KEYS[0],
        KEYS[1],
    ];
    let (registry, run) = f.push("333333333333", Runtime::None, &settings);
    landed(&registry, &run);
    run.says(&format!("via intermediate role {INTERMEDIATE}"));
    run.says("assumed-role/account-push/");
}

#[test]
fn account_keys_alone_push_as_the_keys_account() {
    let f = Fixture::new();
    let (registry, run) = f.push(DEFAULT_ACCOUNT, Runtime::None, &KEYS);
    landed(&registry, &run);
    run.says("credentials: account level, static keys");
}

#[test]
fn a_trigger_web_identity_token_file_needs_no_runtime_credentials() {
    let f = Fixture::new();
    let path = f.token_path();
    let settings = [
        ("PLUGIN_TRIGGER_ROLE_ARN", TRIGGER),
        ("PLUGIN_TRIGGER_WEB_IDENTITY_TOKEN_FILE", path.as_str()),
    ];
    let (registry, run) = f.push("111111111111", Runtime::None, &settings);
    landed(&registry, &run);
    run.says(&format!("role {TRIGGER} assumed with web identity token file {path}"));
}

#[test]
fn a_pipeline_web_identity_token_from_a_variable_is_used_and_never_left_behind() {
    let f = Fixture::new();
    let ours = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ecr-step-"))
            .collect()
    };
    let before = ours(&std::env::temp_dir());
    let settings = [
        ("PLUGIN_PIPELINE_ROLE_ARN", PIPELINE),
        ("PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_ENV", "CI_JOB_JWT_V2"),
        ("CI_JOB_JWT_V2", WEB_IDENTITY_TOKEN),
    ];
    let (registry, run) = f.push("222222222222", Runtime::None, &settings);
    landed(&registry, &run);
    run.says(&format!(
        "role {PIPELINE} assumed with web identity token from $CI_JOB_JWT_V2"
    ))
    .says("(confirmed: arn:aws:sts::222222222222:assumed-role/pipeline-push/");
    let after = ours(&std::env::temp_dir());
    assert!(
        after.iter().all(|n| before.contains(n)),
        "a token directory was left behind: {after:?}"
    );

    // A variable that is not set is refused before any call, naming it.
    let aws = testbed::Tripwire::new();
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &aws.url)
        .env("PLUGIN_SOURCE", "app:1")
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_PIPELINE_ROLE_ARN", PIPELINE)
        .env("PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_ENV", "CI_JOB_JWT_V2")
        .run();
    run.failure(&["PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_ENV=CI_JOB_JWT_V2 names a variable that is not set"]);
    assert!(!aws.touched());
}

#[test]
fn the_runtime_level_uses_a_projected_service_account() {
    let f = Fixture::new();
    let (registry, run) = f.push("555555555555", Runtime::ServiceAccount, &[]);
    landed(&registry, &run);
    run.says("credentials: runtime level");
}

#[test]
fn use_service_account_makes_it_the_account_level_and_refuses_keys() {
    let f = Fixture::new();
    let (registry, run) = f.push(
        "555555555555",
        Runtime::ServiceAccount,
        &[("PLUGIN_USE_SERVICE_ACCOUNT", "true")],
    );
    landed(&registry, &run);
    run.says("credentials: account level, role arn:aws:iam::555555555555:role/runner-sa assumed with the service account's web identity token file");

    let settings = [("PLUGIN_USE_SERVICE_ACCOUNT", "true"), KEYS[0], KEYS[1]];
    let (registry, run) = f.push(DEFAULT_ACCOUNT, Runtime::ServiceAccount, &settings);
    run.failure(&["invalid settings", "PLUGIN_USE_SERVICE_ACCOUNT"]);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn a_failing_level_never_falls_back_to_a_lower_one() {
    // The trigger role must be assumed from runtime credentials, and there are none. The account keys
    // would reach this registry, but the step must not use them.
    let f = Fixture::new();
    let (registry, run) = f.push(
        DEFAULT_ACCOUNT,
        Runtime::None,
        &[("PLUGIN_TRIGGER_ROLE_ARN", TRIGGER), KEYS[0], KEYS[1]],
    );
    run.failure(&[
        "trigger-level credentials failed",
        "the runner itself needs credentials",
        "never falls back",
    ]);
    assert!(
        registry.tags("app").is_empty(),
        "the step fell back to the account keys"
    );
}

#[test]
fn an_endpoint_that_is_not_aws_is_named_as_such() {
    // A registry answers `POST /` with 200 and no body: what a wrong AWS_ENDPOINT_URL (or a port taken by
    // another server) looks like. The step must not call that "no readable message".
    let f = Fixture::new();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let run = Step::push(&f.moto, &registry, &f.image, "app")
        .env("AWS_ENDPOINT_URL", &format!("http://{}", registry.host))
        .run();
    run.failure(&[
        "runtime-level credentials failed",
        "HTTP 200 with 0 byte(s) that are not an AWS answer",
        "check AWS_ENDPOINT_URL",
    ]);
    assert!(registry.tags("app").is_empty());
}

#[test]
fn a_token_refused_after_the_credentials_are_confirmed_names_the_principal_and_the_fix() {
    // The token is asked while STS confirms the credentials: when only the token is refused, the error still
    // names the principal that asked it (known once STS has answered) and the permission to grant.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let (key, secret) = moto.user_allowed(&["sts:GetCallerIdentity"]);
    let (registry, image) = (Registry::start(DEFAULT_ACCOUNT), Image::random(1000));
    let run = Step::new()
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("PLUGIN_ACCESS_KEY", &key)
        .env("PLUGIN_SECRET_KEY", &secret)
        .env("PLUGIN_SOURCE", &image.name)
        .env("PLUGIN_REPO", "app")
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .run();
    run.failure(&[
        &format!(
            "ecr:GetAuthorizationToken in {} failed for arn:aws:iam::",
            testbed::REGION
        ),
        ":user/ci",
        "allow ecr:GetAuthorizationToken",
    ]);
    assert!(!run.output().contains(&secret));
    assert!(registry.tags("app").is_empty());
}
