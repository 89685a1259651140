//! The credential level model: which level the run's AWS identity comes from, and how (a base and the
//! roles assumed from it). Pure: decided from the settings and the environment map before any network call.
//!
//! Levels, highest first: trigger, pipeline, account, runtime. The highest configured level is used and
//! only that one: if it fails the run fails, it never falls back to a lower level (that could push into
//! the wrong account). A setting given without the setting it needs ("X is set without Y") is refused by
//! the settings table before [`plan`] runs; [`plan`] decides precedence and refuses contradictions.

use crate::domain::secret::Secret;
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
    /// The name of an environment variable holding the token (GitLab `id_tokens`), and the token.
    pub web_identity_token_variable: Option<(String, Secret)>,
}

/// Where a web identity token comes from.
#[derive(Debug, Clone)]
pub enum WebToken {
    File(PathBuf),
    /// An environment variable's value; the AWS SDK reads tokens from files, so `aws::identity` writes it
    /// to a 0600 file of its own for the run.
    Variable {
        name: String,
        token: Secret,
    },
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
    /// `AssumeRoleWithWebIdentity` with a token; `what` says whose token it is, for the log.
    WebIdentity {
        token: WebToken,
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
        let web = r.web_identity_token_file.is_some() || r.web_identity_token_variable.is_some();
        if r.external_id.is_some() && web {
            problems.push(format!(
                "PLUGIN_{level}_EXTERNAL_ID cannot be used with PLUGIN_{level}_WEB_IDENTITY_TOKEN_FILE or _ENV: a role \
                 assumed with a web identity takes no external ID; remove one of them"
            ));
        }
        if r.web_identity_token_file.is_some() && r.web_identity_token_variable.is_some() {
            problems.push(format!(
                "PLUGIN_{level}_WEB_IDENTITY_TOKEN_FILE and PLUGIN_{level}_WEB_IDENTITY_TOKEN_ENV both give the token: \
                 keep one"
            ));
        }
    }
    // Half a key pair is refused by the settings table (each key needs the other).
    let keys = match (&s.access_key, &s.secret_key) {
        (Some(a), Some(k)) => Some(StaticKeys {
            access_key: a.clone(),
            secret_key: k.clone(),
        }),
        _ => None,
    };
    let has_keys = s.access_key.is_some() || s.secret_key.is_some();
    if has_keys && s.use_service_account {
        problems.push(
            "PLUGIN_ACCESS_KEY/PLUGIN_SECRET_KEY cannot be used with PLUGIN_USE_SERVICE_ACCOUNT=true: the service \
             account's web identity replaces the keys; remove one of them"
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

    let session_name = s.session_name.clone().unwrap_or_else(|| default_session_name(ambient));
    let duration = s.duration_seconds.map(Duration::from_secs);
    let role_level = |r: &RoleSettings| -> Option<(Base, Vec<Hop>)> {
        let role_arn = r.role_arn.clone()?;
        let token = match (&r.web_identity_token_file, &r.web_identity_token_variable) {
            (Some(file), _) => Some(WebToken::File(file.clone())),
            (None, Some((name, token))) => Some(WebToken::Variable {
                name: name.clone(),
                token: token.clone(),
            }),
            (None, None) => None,
        };
        Some(match token {
            Some(token) => (
                Base::WebIdentity {
                    token,
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
                    token: WebToken::File(token_file.clone()),
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

/// Who the run acts as, as STS confirmed it: what the report shows (never a secret).
#[derive(Debug, Clone)]
pub struct Principal {
    pub level: Level,
    /// How the credentials were obtained.
    pub how: String,
    /// The caller ARN that STS reported.
    pub arn: String,
    pub account: String,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} level, {} (confirmed: {})", self.level, self.how, self.arn)
    }
}

/// `ecr-step-<build id>` from the CI's own variables, so CloudTrail shows the build; `ecr-step` without one.
fn default_session_name(ambient: &HashMap<String, String>) -> String {
    let id = super::ci::BUILD_ID_VARIABLES
        .iter()
        .find_map(|k| ambient.get(*k))
        .map(|v| {
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
            Base::WebIdentity { token, role_arn, what } => match token {
                WebToken::File(file) => {
                    format!(
                        "role {role_arn} assumed with {what}web identity token file {}",
                        file.display()
                    )
                }
                WebToken::Variable { name, .. } => {
                    format!("role {role_arn} assumed with {what}web identity token from ${name}")
                }
            },
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
    fn contradictions_name_both_settings() {
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
                    pipeline: RoleSettings {
                        external_id: Some(Secret::new("x1")),
                        web_identity_token_file: Some("/t".into()),
                        ..role(ROLE_P)
                    },
                    ..Default::default()
                },
                &["PLUGIN_PIPELINE_EXTERNAL_ID", "PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE"],
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
    fn access_keys_are_masked() {
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
    }
}
