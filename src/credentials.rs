//! Credentials: chooses the level the run's AWS identity comes from, builds its one credential provider,
//! and confirms it with STS.
//!
//! Levels, highest first: trigger, pipeline, account, runtime. The highest configured level is used and
//! only that one: if it fails the run fails, it never falls back to a lower level (that could push into
//! the wrong account). [`plan`] is the pure part (precedence and contradictions, checked with the other
//! settings before any network call); [`resolve`] builds the provider chain and calls
//! `sts:GetCallerIdentity`, which also resolves and caches it. Every AWS client of the run is made from
//! [`Identity::sdk`]. IMDS is bounded to one attempt of one second, so a runner without an identity fails fast.

use crate::aws_error;
use crate::secret::Secret;
use anyhow::Result;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::config::{Credentials, SharedCredentialsProvider};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the run's AWS identity comes from, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A role for what triggered the build: `PLUGIN_TRIGGER_*`.
    Trigger,
    /// A role for the pipeline: `PLUGIN_PIPELINE_*`.
    Pipeline,
    /// The integration's account: static keys, a role (possibly through an intermediate role) or the
    /// service account's web identity.
    Account,
    /// The container's own AWS chain: environment keys, web identity, ECS, instance role.
    Runtime,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trigger => "trigger",
            Level::Pipeline => "pipeline",
            Level::Account => "account",
            Level::Runtime => "runtime",
        })
    }
}

/// A role level's settings (trigger or pipeline), each value already checked on its own.
#[derive(Debug, Clone, Default)]
pub struct RoleSettings {
    pub role_arn: Option<String>,
    pub external_id: Option<Secret>,
    pub web_identity_token_file: Option<PathBuf>,
}

/// Every credential setting the user gave, each value already checked on its own.
#[derive(Debug, Clone, Default)]
pub struct CredentialSettings {
    pub trigger: RoleSettings,
    pub pipeline: RoleSettings,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    pub role_arn: Option<String>,
    pub external_id: Option<Secret>,
    pub intermediate_role: Option<String>,
    pub intermediate_external_id: Option<Secret>,
    pub use_service_account: bool,
    pub session_name: Option<String>,
    pub duration_seconds: Option<u64>,
}

/// Static credentials.
#[derive(Debug, Clone)]
pub struct StaticKeys {
    pub access_key: String,
    pub secret_key: Secret,
}

/// The credentials the first hop starts from.
#[derive(Debug, Clone)]
pub enum Base {
    /// The container's own chain.
    Runtime,
    Keys(StaticKeys),
    /// `AssumeRoleWithWebIdentity` with a token file; `what` says whose token it is, for the log.
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        what: &'static str,
    },
}

/// One `AssumeRole` on top of the previous credentials.
#[derive(Debug, Clone)]
pub struct Hop {
    pub role_arn: String,
    pub external_id: Option<Secret>,
}

/// How the run gets its identity: decided before any network call.
#[derive(Debug, Clone)]
pub struct CredentialPlan {
    pub level: Level,
    pub base: Base,
    /// Roles assumed in order, each from the credentials of the one before.
    pub hops: Vec<Hop>,
    pub session_name: String,
    pub duration: Option<Duration>,
    /// Lower levels that were configured too, and are ignored.
    pub ignored: Vec<Level>,
}

/// Choose the level and check the credential settings for contradictions. `ambient` is the rest of the
/// environment (the CI's build id, a service account's projected web identity).
pub fn plan(s: CredentialSettings, ambient: &HashMap<String, String>) -> Result<CredentialPlan, Vec<String>> {
    let mut problems = Vec::new();
    for (level, r) in [("TRIGGER", &s.trigger), ("PIPELINE", &s.pipeline)] {
        let role = format!("PLUGIN_{level}_ROLE_ARN");
        if r.role_arn.is_none() && r.external_id.is_some() {
            problems.push(format!(
                "PLUGIN_{level}_EXTERNAL_ID is set without {role}: set the role, or remove the external ID"
            ));
        }
        if r.role_arn.is_none() && r.web_identity_token_file.is_some() {
            problems.push(format!(
                "PLUGIN_{level}_WEB_IDENTITY_TOKEN_FILE is set without {role}: set the role to assume with the token"
            ));
        }
        if r.external_id.is_some() && r.web_identity_token_file.is_some() {
            problems.push(format!(
                "PLUGIN_{level}_EXTERNAL_ID cannot be used with PLUGIN_{level}_WEB_IDENTITY_TOKEN_FILE: a role assumed \
                 with a web identity takes no external ID; remove one of them"
            ));
        }
    }
    let keys = match (&s.access_key, &s.secret_key) {
        (Some(a), Some(k)) => Some(StaticKeys {
            access_key: a.clone(),
            secret_key: k.clone(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            problems.push("PLUGIN_ACCESS_KEY is set without PLUGIN_SECRET_KEY: set both, or neither".into());
            None
        }
        (None, Some(_)) => {
            problems.push("PLUGIN_SECRET_KEY is set without PLUGIN_ACCESS_KEY: set both, or neither".into());
            None
        }
    };
    let has_keys = s.access_key.is_some() || s.secret_key.is_some();
    if has_keys && s.use_service_account {
        problems.push(
            "PLUGIN_ACCESS_KEY/PLUGIN_SECRET_KEY cannot be used with PLUGIN_USE_SERVICE_ACCOUNT=true: the service \
             account's web identity replaces the keys; remove one of them"
                .into(),
        );
    }
    if s.role_arn.is_none() && s.external_id.is_some() {
        problems
            .push("PLUGIN_EXTERNAL_ID is set without PLUGIN_ROLE_ARN: set the role, or remove the external ID".into());
    }
    if s.intermediate_role.is_none() && s.intermediate_external_id.is_some() {
        problems.push(
            "PLUGIN_INTERMEDIATE_EXTERNAL_ID is set without PLUGIN_INTERMEDIATE_ROLE: set the role, or remove the external ID"
                .into(),
        );
    }
    if s.intermediate_role.is_some() && s.role_arn.is_none() {
        problems.push(
            "PLUGIN_INTERMEDIATE_ROLE is set without PLUGIN_ROLE_ARN: the intermediate role is the first hop to a \
             target role; set PLUGIN_ROLE_ARN"
                .into(),
        );
    }
    let service_account = if s.use_service_account {
        let get = |k: &str| ambient.get(k).filter(|v| !v.trim().is_empty()).cloned();
        match (get("AWS_ROLE_ARN"), get("AWS_WEB_IDENTITY_TOKEN_FILE")) {
            (Some(role_arn), Some(file)) => Some((role_arn, PathBuf::from(file))),
            _ => {
                problems.push(
                    "PLUGIN_USE_SERVICE_ACCOUNT=true but the container has no service account identity: \
                     AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE must be set (as EKS projects them for IRSA)"
                        .into(),
                );
                None
            }
        }
    } else {
        None
    };

    let assumes_a_role =
        s.trigger.role_arn.is_some() || s.pipeline.role_arn.is_some() || s.role_arn.is_some() || s.use_service_account;
    for (name, set) in [
        ("PLUGIN_SESSION_NAME", s.session_name.is_some()),
        ("PLUGIN_DURATION_SECONDS", s.duration_seconds.is_some()),
    ] {
        if set && !assumes_a_role {
            problems.push(format!(
                "{name} is set but no role is assumed (no PLUGIN_TRIGGER_ROLE_ARN, PLUGIN_PIPELINE_ROLE_ARN, \
                 PLUGIN_ROLE_ARN or PLUGIN_USE_SERVICE_ACCOUNT): set the role, or remove {name}"
            ));
        }
    }
    let session_name = s.session_name.clone().unwrap_or_else(|| default_session_name(ambient));
    let duration = s.duration_seconds.map(Duration::from_secs);
    let role_level = |r: &RoleSettings| -> Option<(Base, Vec<Hop>)> {
        let role_arn = r.role_arn.clone()?;
        Some(match &r.web_identity_token_file {
            Some(file) => (
                Base::WebIdentity {
                    token_file: file.clone(),
                    role_arn,
                    what: "",
                },
                vec![],
            ),
            None => (
                Base::Runtime,
                vec![Hop {
                    role_arn,
                    external_id: r.external_id.clone(),
                }],
            ),
        })
    };
    let account = {
        let configured = keys.is_some() || s.role_arn.is_some() || s.use_service_account;
        configured.then(|| {
            let base = match (&keys, &service_account) {
                (Some(k), _) => Base::Keys(k.clone()),
                (None, Some((role_arn, token_file))) => Base::WebIdentity {
                    token_file: token_file.clone(),
                    role_arn: role_arn.clone(),
                    what: "the service account's ",
                },
                (None, None) => Base::Runtime,
            };
            let mut hops = Vec::new();
            if let Some(role_arn) = &s.intermediate_role {
                hops.push(Hop {
                    role_arn: role_arn.clone(),
                    external_id: s.intermediate_external_id.clone(),
                });
            }
            if let Some(role_arn) = &s.role_arn {
                hops.push(Hop {
                    role_arn: role_arn.clone(),
                    external_id: s.external_id.clone(),
                });
            }
            (base, hops)
        })
    };
    let levels = [
        (Level::Trigger, role_level(&s.trigger)),
        (Level::Pipeline, role_level(&s.pipeline)),
        (Level::Account, account),
        (Level::Runtime, Some((Base::Runtime, vec![]))),
    ];
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut configured = levels
        .into_iter()
        .filter_map(|(level, chosen)| chosen.map(|c| (level, c)));
    let (level, (base, hops)) = configured.next().expect("the runtime level is always there");
    let ignored = configured.map(|(l, _)| l).filter(|l| *l != Level::Runtime).collect();
    Ok(CredentialPlan {
        level,
        base,
        hops,
        session_name,
        duration,
        ignored,
    })
}

/// `ecr-step-<build id>` from the CI's own variables, so CloudTrail shows the build; `ecr-step` without one.
fn default_session_name(ambient: &HashMap<String, String>) -> String {
    const BUILD_IDS: [&str; 9] = [
        "CF_BUILD_ID",
        "DRONE_BUILD_NUMBER",
        "CI_PIPELINE_ID",
        "CI_PIPELINE_NUMBER",
        "GITHUB_RUN_ID",
        "BUILDKITE_BUILD_NUMBER",
        "CIRCLE_BUILD_NUM",
        "BUILD_ID",
        "BUILD_NUMBER",
    ];
    let id = BUILD_IDS.iter().find_map(|k| ambient.get(*k)).map(|v| {
        v.chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c))
            .take(55)
            .collect::<String>()
    });
    match id {
        Some(id) if !id.is_empty() => format!("ecr-step-{id}"),
        _ => "ecr-step".to_string(),
    }
}

impl CredentialPlan {
    /// What the log says about where the credentials come from (never a secret).
    pub fn describe(&self) -> String {
        let base = match &self.base {
            Base::Runtime if self.hops.is_empty() => return "the container's AWS credentials".to_string(),
            Base::Runtime => "runtime credentials".to_string(),
            Base::Keys(k) => format!("static keys {}", mask(&k.access_key)),
            Base::WebIdentity {
                token_file,
                role_arn,
                what,
            } => {
                format!(
                    "role {role_arn} assumed with {what}web identity token file {}",
                    token_file.display()
                )
            }
        };
        match self.hops.as_slice() {
            [] => base,
            [only] => format!("role {} (assumed from {base})", only.role_arn),
            [first, .., last] => {
                format!(
                    "role {} via intermediate role {} (assumed from {base})",
                    last.role_arn, first.role_arn
                )
            }
        }
    }
}

/// The run's AWS identity, confirmed with STS.
#[derive(Clone)]
pub struct Identity {
    pub level: Level,
    /// How the credentials were obtained, for the log (never a secret).
    pub how: String,
    /// The caller ARN that STS reported.
    pub arn: String,
    pub account: String,
    /// Every AWS client of the run is built from this.
    pub sdk: SdkConfig,
}

impl Identity {
    /// An ECR client with this identity, in `region` (the run's own region when `None`).
    pub fn ecr(&self, region: Option<&str>) -> aws_sdk_ecr::Client {
        let mut config = aws_sdk_ecr::config::Builder::from(&self.sdk);
        if let Some(r) = region {
            config = config.region(Region::new(r.to_string()));
        }
        aws_sdk_ecr::Client::from_conf(config.build())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} level, {} (confirmed: {})", self.level, self.how, self.arn)
    }
}

/// Build the run's one credential provider from the plan and confirm it with `GetCallerIdentity`.
pub async fn resolve(plan: &CredentialPlan, region: &str, timeout: Duration) -> Result<Identity> {
    let region = Region::new(region.to_string());
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .timeout_config(timeouts.clone())
        .no_credentials()
        .load()
        .await;
    let mut provider = match &plan.base {
        Base::Runtime => SharedCredentialsProvider::new(runtime_chain(region.clone()).await),
        Base::Keys(k) => SharedCredentialsProvider::new(Credentials::new(
            &k.access_key,
            k.secret_key.expose(),
            None,
            None,
            "PLUGIN_ACCESS_KEY",
        )),
        Base::WebIdentity {
            token_file, role_arn, ..
        } => {
            let config = ProviderConfig::default()
                .with_region(Some(region.clone()))
                .with_timeout_config(timeouts);
            SharedCredentialsProvider::new(
                WebIdentityTokenCredentialsProvider::builder()
                    .static_configuration(StaticConfiguration {
                        web_identity_token_file: token_file.clone(),
                        role_arn: role_arn.clone(),
                        session_name: plan.session_name.clone(),
                    })
                    .configure(&config)
                    .build(),
            )
        }
    };
    for hop in &plan.hops {
        let mut builder = AssumeRoleProvider::builder(&hop.role_arn).session_name(&plan.session_name);
        if let Some(id) = &hop.external_id {
            builder = builder.external_id(id.expose());
        }
        if let Some(d) = plan.duration {
            builder = builder.session_length(d);
        }
        let from = sdk.clone().into_builder().credentials_provider(provider).build();
        provider = SharedCredentialsProvider::new(builder.configure(&from).build().await);
    }
    let sdk = sdk.into_builder().credentials_provider(provider).build();
    confirm(sdk, plan.level, plan.describe()).await.map_err(|e| {
        anyhow::anyhow!(
            "{}",
            explain_failure(plan, &aws_error::describe(&e), aws_error::is_missing_credentials(&e))
        )
    })
}

/// A role assumed from an identity the run already has (promote's read role for a source in another account).
pub async fn assume_from(identity: &Identity, hop: &Hop, session_name: &str) -> Result<Identity> {
    let mut builder = AssumeRoleProvider::builder(&hop.role_arn).session_name(session_name);
    if let Some(id) = &hop.external_id {
        builder = builder.external_id(id.expose());
    }
    let provider = SharedCredentialsProvider::new(builder.configure(&identity.sdk).build().await);
    let sdk = identity
        .sdk
        .clone()
        .into_builder()
        .credentials_provider(provider)
        .build();
    let how = format!("role {} (assumed from {})", hop.role_arn, identity.arn);
    confirm(sdk, identity.level, how.clone()).await.map_err(|e| {
        anyhow::anyhow!(
            "assuming the read role failed ({how}): {}\n  fix: the role's trust policy must allow {} (and the external \
             ID, if it requires one)",
            aws_error::describe(&e),
            identity.arn
        )
    })
}

type StsError = aws_sdk_sts::error::SdkError<
    aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError,
    aws_sdk_ecr::config::http::HttpResponse,
>;

/// Resolve the provider once (cached in the config) and learn who it is.
async fn confirm(sdk: SdkConfig, level: Level, how: String) -> Result<Identity, StsError> {
    let me = aws_sdk_sts::Client::new(&sdk).get_caller_identity().send().await?;
    Ok(Identity {
        level,
        how,
        arn: me.arn().unwrap_or("unknown").to_string(),
        account: me.account().unwrap_or("unknown").to_string(),
        sdk,
    })
}

/// Why the chosen level gave no identity, and what to fix. Never suggests another level.
fn explain_failure(plan: &CredentialPlan, cause: &str, missing: bool) -> String {
    let level = plan.level;
    let how = plan.describe();
    let fix = if cause.contains("AccessDenied") && !plan.hops.is_empty() {
        "the role's trust policy must allow the principal it is assumed from (and the external ID, if the policy \
         requires one), and that principal needs sts:AssumeRole on the role"
            .to_string()
    } else if cause.contains("InvalidIdentityToken") || cause.contains("IDPRejectedClaim") {
        "the web identity token was refused: check the token file is current and the role trusts its issuer and audience"
            .to_string()
    } else if cause.contains("ExpiredToken") {
        "the credentials or web identity token have expired: refresh them (a new token file, new keys)".to_string()
    } else if cause.contains("InvalidClientTokenId") || cause.contains("SignatureDoesNotMatch") {
        "the access key or secret key is wrong or inactive: check PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY".to_string()
    } else if missing || cause.contains("no credentials") || cause.contains("credentials provider") {
        match level {
            Level::Runtime => "no AWS credentials found: set PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY, or give the \
                               container an identity (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a web identity token, an \
                               ECS task role or an instance role)"
                .to_string(),
            _ => format!(
                "no AWS credentials found for the {level} level's first step ({how}): the runner itself needs \
                 credentials to assume the role"
            ),
        }
    } else {
        "check the settings of this level and that STS is reachable".to_string()
    };
    format!(
        "{level}-level credentials failed ({how}): {cause}\n  fix: {fix}\n  (the step never falls back to a lower level)"
    )
}

/// The container's standard chain, with IMDS bounded: one attempt, one second.
async fn runtime_chain(region: Region) -> DefaultCredentialsChain {
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .max_attempts(1)
        .build();
    DefaultCredentialsChain::builder()
        .region(region)
        .imds_client(imds)
        .build()
        .await
}

/// `AKIA…MPLE`: enough to recognise a key id in a log, not to use it.
fn mask(access_key: &str) -> String {
    let head: String = access_key.chars().take(4).collect();
    let tail: String = access_key.chars().skip(access_key.len().saturating_sub(4)).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE_T: &str = "arn:aws:iam::111111111111:role/trigger";
    const ROLE_P: &str = "arn:aws:iam::222222222222:role/pipeline";
    const ROLE_A: &str = "arn:aws:iam::333333333333:role/account";
    const ROLE_I: &str = "arn:aws:iam::444444444444:role/intermediate";

    fn keys() -> CredentialSettings {
        CredentialSettings {
            access_key: Some("AKIAIOSFODNN7EXAMPLE".into()),
            secret_key: Some(Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
            ..Default::default()
        }
    }

    fn role(arn: &str) -> RoleSettings {
        RoleSettings {
            role_arn: Some(arn.into()),
            ..Default::default()
        }
    }

    fn ok(s: CredentialSettings) -> CredentialPlan {
        plan(s, &HashMap::new()).unwrap()
    }

    fn err(s: CredentialSettings) -> String {
        plan(s, &HashMap::new()).unwrap_err().join("\n")
    }

    #[test]
    fn the_highest_configured_level_wins_and_lower_ones_are_listed_as_ignored() {
        let all = CredentialSettings {
            trigger: role(ROLE_T),
            pipeline: role(ROLE_P),
            ..keys()
        };
        let p = ok(all.clone());
        assert_eq!(p.level, Level::Trigger);
        assert_eq!(p.ignored, vec![Level::Pipeline, Level::Account]);
        assert_eq!(p.hops[0].role_arn, ROLE_T);
        assert!(
            matches!(p.base, Base::Runtime),
            "a role level is assumed from the runtime's credentials"
        );

        let p = ok(CredentialSettings {
            trigger: RoleSettings::default(),
            ..all.clone()
        });
        assert_eq!(p.level, Level::Pipeline);
        assert_eq!(p.hops[0].role_arn, ROLE_P);

        let p = ok(keys());
        assert_eq!(p.level, Level::Account);
        assert!(p.hops.is_empty() && matches!(p.base, Base::Keys(_)));

        let p = ok(CredentialSettings::default());
        assert_eq!(p.level, Level::Runtime);
        assert!(p.hops.is_empty() && p.ignored.is_empty());
    }

    #[test]
    fn an_account_role_is_assumed_from_the_keys_through_the_intermediate_role() {
        let p = ok(CredentialSettings {
            role_arn: Some(ROLE_A.into()),
            external_id: Some(Secret::new("ext-a")),
            intermediate_role: Some(ROLE_I.into()),
            ..keys()
        });
        assert_eq!(p.level, Level::Account);
        let arns: Vec<&str> = p.hops.iter().map(|h| h.role_arn.as_str()).collect();
        assert_eq!(arns, vec![ROLE_I, ROLE_A]);
        assert!(p.hops[0].external_id.is_none());
        assert_eq!(p.hops[1].external_id.as_ref().unwrap().expose(), "ext-a");
        assert_eq!(
            p.describe(),
            format!("role {ROLE_A} via intermediate role {ROLE_I} (assumed from static keys AKIA…MPLE)")
        );
        let p = ok(CredentialSettings {
            role_arn: Some(ROLE_A.into()),
            ..Default::default()
        });
        assert!(matches!(p.base, Base::Runtime));
        assert_eq!(
            p.describe(),
            format!("role {ROLE_A} (assumed from runtime credentials)")
        );
    }

    #[test]
    fn a_web_identity_token_file_replaces_assume_role() {
        let p = ok(CredentialSettings {
            pipeline: RoleSettings {
                web_identity_token_file: Some("/var/run/token".into()),
                ..role(ROLE_P)
            },
            ..Default::default()
        });
        assert_eq!(p.level, Level::Pipeline);
        assert!(p.hops.is_empty());
        assert!(matches!(&p.base, Base::WebIdentity { role_arn, .. } if role_arn == ROLE_P));
    }

    #[test]
    fn the_service_account_comes_from_the_projected_environment() {
        let s = CredentialSettings {
            use_service_account: true,
            ..Default::default()
        };
        let e = err(s.clone());
        assert!(e.contains("AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE"), "{e}");
        let ambient: HashMap<String, String> = [
            ("AWS_ROLE_ARN".to_string(), ROLE_A.to_string()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE".to_string(),
                "/var/run/secrets/token".to_string(),
            ),
        ]
        .into();
        let p = plan(s, &ambient).unwrap();
        assert_eq!(p.level, Level::Account);
        assert!(matches!(
            &p.base,
            Base::WebIdentity {
                what: "the service account's ",
                ..
            }
        ));
    }

    #[test]
    fn every_contradiction_names_both_settings() {
        let cases: Vec<(CredentialSettings, &[&str])> = vec![
            (
                CredentialSettings {
                    use_service_account: true,
                    ..keys()
                },
                &["PLUGIN_ACCESS_KEY", "PLUGIN_USE_SERVICE_ACCOUNT"],
            ),
            (
                CredentialSettings {
                    external_id: Some(Secret::new("x1")),
                    ..Default::default()
                },
                &["PLUGIN_EXTERNAL_ID", "PLUGIN_ROLE_ARN"],
            ),
            (
                CredentialSettings {
                    trigger: RoleSettings {
                        external_id: Some(Secret::new("x1")),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                &["PLUGIN_TRIGGER_EXTERNAL_ID", "PLUGIN_TRIGGER_ROLE_ARN"],
            ),
            (
                CredentialSettings {
                    pipeline: RoleSettings {
                        external_id: Some(Secret::new("x1")),
                        web_identity_token_file: Some("/t".into()),
                        ..role(ROLE_P)
                    },
                    ..Default::default()
                },
                &["PLUGIN_PIPELINE_EXTERNAL_ID", "PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE"],
            ),
            (
                CredentialSettings {
                    trigger: RoleSettings {
                        web_identity_token_file: Some("/t".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                &["PLUGIN_TRIGGER_WEB_IDENTITY_TOKEN_FILE", "PLUGIN_TRIGGER_ROLE_ARN"],
            ),
            (
                CredentialSettings {
                    access_key: Some("AKIAIOSFODNN7EXAMPLE".into()),
                    ..Default::default()
                },
                &["PLUGIN_ACCESS_KEY", "PLUGIN_SECRET_KEY"],
            ),
            (
                CredentialSettings {
                    secret_key: Some(Secret::new("s")),
                    ..Default::default()
                },
                &["PLUGIN_SECRET_KEY", "PLUGIN_ACCESS_KEY"],
            ),
            (
                CredentialSettings {
                    intermediate_role: Some(ROLE_I.into()),
                    ..Default::default()
                },
                &["PLUGIN_INTERMEDIATE_ROLE", "PLUGIN_ROLE_ARN"],
            ),
            (
                CredentialSettings {
                    intermediate_external_id: Some(Secret::new("x1")),
                    role_arn: Some(ROLE_A.into()),
                    ..Default::default()
                },
                &["PLUGIN_INTERMEDIATE_EXTERNAL_ID", "PLUGIN_INTERMEDIATE_ROLE"],
            ),
        ];
        for (settings, names) in cases {
            let e = err(settings);
            for name in names {
                assert!(e.contains(name), "{name} missing from: {e}");
            }
        }
    }

    #[test]
    fn the_session_name_carries_the_build_id() {
        let ambient: HashMap<String, String> = [("CF_BUILD_ID".to_string(), "65a1 b2/c3".to_string())].into();
        assert_eq!(default_session_name(&ambient), "ecr-step-65a1b2c3");
        assert_eq!(default_session_name(&HashMap::new()), "ecr-step");
        let p = ok(CredentialSettings {
            session_name: Some("mine".into()),
            role_arn: Some(ROLE_A.into()),
            ..Default::default()
        });
        assert_eq!(p.session_name, "mine");
    }

    #[test]
    fn session_settings_without_a_role_to_assume_are_refused() {
        let e = err(CredentialSettings {
            session_name: Some("mine".into()),
            duration_seconds: Some(900),
            ..Default::default()
        });
        assert!(
            e.contains("PLUGIN_SESSION_NAME is set but no role is assumed")
                && e.contains("PLUGIN_DURATION_SECONDS is set but no role is assumed"),
            "{e}"
        );
    }

    #[test]
    fn failures_say_what_to_fix_and_never_suggest_another_level() {
        let p = ok(CredentialSettings {
            trigger: role(ROLE_T),
            ..keys()
        });
        let text = explain_failure(&p, "AccessDenied: not authorized to perform sts:AssumeRole", false);
        assert!(text.starts_with("trigger-level credentials failed"), "{text}");
        assert!(
            text.contains("trust policy") && text.contains("never falls back"),
            "{text}"
        );
        let text = explain_failure(&p, "dispatch failure: no credentials in chain", true);
        assert!(text.contains("the runner itself needs credentials"), "{text}");
        let text = explain_failure(&ok(CredentialSettings::default()), "no credentials", true);
        assert!(text.contains("set PLUGIN_ACCESS_KEY"), "{text}");
    }

    #[test]
    fn access_keys_are_masked() {
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
    }
}
