//! Settings: the one place every `PLUGIN_*` setting is declared, read and validated.
//!
//! [`SETTINGS`] lists each setting with its help text; `--help`, the README reference and `step.yaml` are
//! checked against it by a test. [`Settings::from_env`] reads the process environment (envy + serde),
//! refuses unknown `PLUGIN_*` names with the closest known one, and validates every value before anything
//! touches the network. Errors name the variable and say what is allowed; secret values are never echoed.

use crate::branch::{self, BranchFilter, Patterns, Verdict};
use crate::credentials::{self, CredentialPlan, CredentialSettings, Hop, RoleSettings};
use crate::grammar::{self, printable};
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::repository::{Encryption, Mutability, RepositorySettings};
use crate::secret::Secret;
use anyhow::Result;
use serde::Deserialize;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One setting as documented for users.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// The name after `PLUGIN_`, lowercase (`repo` for `PLUGIN_REPO`).
    pub name: &'static str,
    /// The shape of a value, for `--help`.
    pub value: &'static str,
    /// The default, empty when there is none.
    pub default: &'static str,
    pub help: &'static str,
    /// Never echoed in an error message.
    pub secret: bool,
}

impl SettingDoc {
    pub fn env(&self) -> String {
        format!("PLUGIN_{}", self.name.to_ascii_uppercase())
    }
}

/// Declares the raw settings struct (what envy fills in) and the [`SETTINGS`] table from one list.
macro_rules! define_settings {
    ($( $field:ident : { value: $value:literal, default: $default:literal, help: $help:literal $(, secret: $secret:literal)? } ),* $(,)?) => {
        /// Every setting as the environment gave it; empty values are treated as unset.
        /// No `Debug`: it holds the secret key.
        #[derive(Deserialize, Default)]
        struct Raw { $( $field: Option<String>, )* }

        /// Every setting the step accepts, in the order `--help` shows them.
        pub const SETTINGS: &[SettingDoc] = &[
            $( SettingDoc {
                name: stringify!($field),
                value: $value,
                default: $default,
                help: $help,
                secret: false $(|| $secret)?,
            }, )*
        ];
    };
}

define_settings! {
    mode: { value: "push|promote|login|check", default: "push", help: "push: a local image through the Docker Engine. promote: copy an image already in a registry. login: write the registry tokens to the docker config for later steps. check: test credentials, token, repository and push permissions, changing nothing." },
    source: { value: "IMAGE", default: "", help: "push: the local image (name[:tag] or image id). promote: repo:tag, repo@sha256:... (in the target registry) or host[:port]/repo:tag." },
    repo: { value: "NAME", default: "", help: "The target repository in the registry, e.g. team/app." },
    tags: { value: "TAG[,TAG...]", default: "latest", help: "The tags to push, comma separated." },
    registry: { value: "HOST[:PORT][,...]", default: "the token's own registry", help: "The target registries, comma separated; each gets its own token and they are served concurrently. For an ECR host the account and region are taken from its name." },
    region: { value: "REGION", default: "from PLUGIN_REGISTRY, else AWS_REGION", help: "The AWS region of registries that are not ECR hosts, and of the run's STS calls." },
    read_role_arn: { value: "ARN", default: "", help: "promote: a role, assumed from the run's credentials, that reads the source registry (cross-account pull)." },
    read_external_id: { value: "ID", default: "", help: "External ID for PLUGIN_READ_ROLE_ARN.", secret: true },
    read_region: { value: "REGION", default: "from the source host, else the run's region", help: "promote: the region of the source registry's token." },
    promote_via: { value: "registry|engine", default: "registry", help: "promote: copy registry to registry (no daemon), or pull, tag and push through the Docker Engine." },
    trigger_role_arn: { value: "ARN", default: "", help: "Trigger level (highest priority): the role to assume, from the runtime's credentials or with PLUGIN_TRIGGER_WEB_IDENTITY_TOKEN_FILE." },
    trigger_external_id: { value: "ID", default: "", help: "External ID for assuming PLUGIN_TRIGGER_ROLE_ARN.", secret: true },
    trigger_web_identity_token_file: { value: "PATH", default: "", help: "Web identity token file for PLUGIN_TRIGGER_ROLE_ARN (AssumeRoleWithWebIdentity)." },
    pipeline_role_arn: { value: "ARN", default: "", help: "Pipeline level: the role to assume, from the runtime's credentials or with PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE." },
    pipeline_external_id: { value: "ID", default: "", help: "External ID for assuming PLUGIN_PIPELINE_ROLE_ARN.", secret: true },
    pipeline_web_identity_token_file: { value: "PATH", default: "", help: "Web identity token file for PLUGIN_PIPELINE_ROLE_ARN (AssumeRoleWithWebIdentity)." },
    access_key: { value: "AKIA...", default: "", help: "Account level: access key id of static credentials; needs PLUGIN_SECRET_KEY." },
    secret_key: { value: "SECRET", default: "", help: "Account level: the secret access key that goes with PLUGIN_ACCESS_KEY. Never printed.", secret: true },
    role_arn: { value: "ARN", default: "", help: "Account level: a role to assume, from the keys if given, else from the runtime's credentials." },
    external_id: { value: "ID", default: "", help: "External ID for assuming PLUGIN_ROLE_ARN.", secret: true },
    intermediate_role: { value: "ARN", default: "", help: "Account level: a role assumed first; PLUGIN_ROLE_ARN is then assumed from it." },
    intermediate_external_id: { value: "ID", default: "", help: "External ID for assuming PLUGIN_INTERMEDIATE_ROLE.", secret: true },
    use_service_account: { value: "BOOL", default: "false", help: "Account level: use the service account's web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE); no keys allowed." },
    session_name: { value: "NAME", default: "ecr-step-<CI build id>", help: "Role session name, shown in CloudTrail." },
    duration_seconds: { value: "SECONDS", default: "3600", help: "Lifetime of assumed-role sessions, 900 to 3600." },
    create_repository: { value: "BOOL", default: "false", help: "Create the repository when it does not exist, with the repository settings below." },
    tag_mutability: { value: "MUTABLE|IMMUTABLE", default: "unchanged (MUTABLE when created)", help: "Tag mutability of the repository; applied only when set." },
    scan_on_push: { value: "BOOL", default: "unchanged (false when created)", help: "Scan images on push; applied only when set." },
    encryption: { value: "AES256|KMS", default: "unchanged (AES256 when created)", help: "Encryption of a created repository; an existing one must already match." },
    kms_key: { value: "KEY", default: "the AWS managed key", help: "KMS key id, ARN or alias for PLUGIN_ENCRYPTION=KMS." },
    repository_tags: { value: "KEY=VALUE[,...]", default: "", help: "Resource tags of the repository." },
    lifecycle_policy: { value: "JSON|PATH", default: "", help: "Lifecycle policy as JSON text or a path to a JSON file; applied only when set." },
    repository_policy: { value: "JSON|PATH", default: "", help: "Repository policy as JSON text or a path to a JSON file; applied only when set." },
    skip_existing: { value: "BOOL", default: "false", help: "Per tag: skip a tag that already points at this image's digest, push the others." },
    branch: { value: "NAME", default: "from the CI's variables", help: "The branch being built, for the branch filters (else CF_BRANCH, BRANCH, DRONE_BRANCH, CI_COMMIT_BRANCH, GITHUB_HEAD_REF, GITHUB_REF_NAME, BUILDKITE_BRANCH, CIRCLE_BRANCH, BRANCH_NAME, GIT_BRANCH)." },
    branches_only: { value: "GLOB[,GLOB...]", default: "", help: "Run only on branches matching one of these globs (* stays within a path segment, ** crosses /)." },
    branches_except: { value: "GLOB[,GLOB...]", default: "", help: "Skip branches matching one of these globs; wins over PLUGIN_BRANCHES_ONLY." },
    integrations_file: { value: "PATH", default: "", help: "A shippable.yml-style file whose integrations: hub: entries supply region and branches." },
    integration: { value: "NAME", default: "", help: "The integrationName of the entry in PLUGIN_INTEGRATIONS_FILE to use; explicit settings win over it." },
    output_file: { value: "PATH", default: "", help: "Write the outputs (image, digest, registry, tags, images) as JSON to this file." },
    dry_run: { value: "BOOL", default: "false", help: "Resolve credentials, token, registry and source image, print the plan, push nothing." },
    timeout: { value: "DURATION", default: "5m", help: "Longest wait for an answer or progress from the engine, a registry or an AWS call (90s, 5m, 1h); it also bounds each call's retries, so a call that never answers fails after about this long." },
}

/// One registry images go to, and the region its token comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// `None`: the registry of the token's proxy endpoint.
    pub registry: Option<Registry>,
    pub region: String,
}

/// Where images go: one repository and its tags, in every destination registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub repo: String,
    pub tags: Vec<String>,
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Push,
    Promote,
    Login,
    Check,
}

/// How promote copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Registry,
    Engine,
}

/// Promote's own settings.
#[derive(Debug, Clone)]
pub struct PromoteSettings {
    pub source: ImageRef,
    /// A role that reads the source registry, assumed from the run's identity.
    pub read_role: Option<Hop>,
    pub read_region: Option<String>,
    pub via: Via,
}

/// Validated settings: every value here has been checked; nothing below needs to check it again.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// The source as the user wrote it (push and promote); in promote mode also parsed in `promote`.
    pub source: Option<String>,
    /// Whether the branch filter lets this run go on, and why.
    pub branch: Verdict,
    pub output_file: Option<PathBuf>,
    /// The environment outside `PLUGIN_*` (outputs, docker config location).
    pub ambient: HashMap<String, String>,
    pub target: Target,
    /// The region of the run's STS calls (and of registries that are not ECR hosts).
    pub region: String,
    pub promote: Option<PromoteSettings>,
    pub credentials: CredentialPlan,
    pub repository: RepositorySettings,
    pub skip_existing: bool,
    pub dry_run: bool,
    pub timeout: Duration,
}

/// Every problem found in the settings, reported together.
#[derive(Debug)]
pub struct SettingsError(pub Vec<String>);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid settings (nothing was pushed):")?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

impl Settings {
    /// Read and validate the settings from environment variables (`std::env::vars_os()` in `main`).
    pub fn from_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Settings> {
        let mut problems = Vec::new();
        let mut plugin = Vec::new();
        let mut ambient = HashMap::new();
        for (key, value) in vars {
            let Some(key) = key.to_str() else {
                if key.as_encoded_bytes().starts_with(b"PLUGIN_") {
                    problems.push(format!(
                        "{}: the variable name is not valid UTF-8",
                        key.to_string_lossy()
                    ));
                }
                continue;
            };
            match (key.strip_prefix("PLUGIN_"), value.into_string()) {
                (Some(name), Ok(value)) => {
                    let name = name.to_ascii_lowercase();
                    let twice = plugin
                        .iter()
                        .find(|(other, _): &&(String, String)| other.eq_ignore_ascii_case(key));
                    if let Some((other, _)) = twice {
                        problems.push(format!("{key} and {other} both set the same setting: keep one"));
                    } else if SETTINGS.iter().any(|s| s.name == name) {
                        plugin.push((key.to_string(), value));
                    } else {
                        problems.push(unknown_setting(key, &name));
                    }
                }
                (Some(_), Err(_)) => problems.push(format!("{key}: the value is not valid UTF-8")),
                (None, Ok(value)) => {
                    ambient.insert(key.to_string(), value);
                }
                (None, Err(_)) => {}
            }
        }
        let raw: Raw = match envy::prefixed("PLUGIN_").from_iter(plugin) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(e.to_string());
                Raw::default()
            }
        };
        let settings = Checker {
            problems,
            ambient,
            refused: Vec::new(),
        }
        .check(raw);
        settings.map_err(|problems| SettingsError(problems).into())
    }
}

/// Names other ECR steps use for our settings: suggested before any spelling match.
const ALIASES: &[(&str, &str)] = &[
    ("repository", "repo"),
    ("tag", "tags"),
    ("image", "source"),
    ("aws_region", "region"),
    ("aws_access_key_id", "access_key"),
    ("aws_secret_access_key", "secret_key"),
    ("assume_role", "role_arn"),
    ("create_repo", "create_repository"),
];

fn unknown_setting(key: &str, name: &str) -> String {
    // Our own names and the names other steps use for them, each pointing at ours.
    let candidates = SETTINGS.iter().map(|s| (s.name, s.name)).chain(ALIASES.iter().copied());
    let closest = candidates
        .map(|(spelled, ours)| (strsim::jaro_winkler(name, spelled), ours))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((score, ours)) if score > 0.7 => {
            format!(
                "{key} is not a setting of this step; did you mean PLUGIN_{}? (see --help)",
                ours.to_ascii_uppercase()
            )
        }
        _ => format!("{key} is not a setting of this step (see --help for the list)"),
    }
}

/// Collects problems while turning [`Raw`] into [`Settings`].
struct Checker {
    problems: Vec<String>,
    ambient: HashMap<String, String>,
    /// Settings given with a value that was refused: "X is set without Y" is not said of them.
    refused: Vec<String>,
}

impl Checker {
    fn check(mut self, mut raw: Raw) -> Result<Settings, Vec<String>> {
        let credentials = self.credentials(&mut raw);
        let repository = self.repository(&mut raw);
        let mode = self
            .optional("mode", raw.mode.take(), |v| match v.to_ascii_lowercase().as_str() {
                "push" => Ok(Mode::Push),
                "promote" => Ok(Mode::Promote),
                "login" => Ok(Mode::Login),
                "check" => Ok(Mode::Check),
                _ => Err("push, promote, login or check".to_string()),
            })
            .unwrap_or(Mode::Push);
        let source = match mode {
            Mode::Push => self.required("source", raw.source.take(), grammar::local_image),
            Mode::Promote => self.required("source", raw.source.take(), |v| ImageRef::parse(v).map(|_| ())),
            Mode::Login | Mode::Check => self.unused(mode, "source", raw.source.take()),
        };
        let repo = match mode {
            Mode::Login => self.unused(mode, "repo", raw.repo.take()).or(Some(String::new())),
            _ => self.required("repo", raw.repo.take(), grammar::repository),
        };
        let integration = self.integration(&mut raw);
        let branch = self.branch(&mut raw, integration.as_ref());
        let output_file = self.optional("output_file", raw.output_file.take(), |v| Ok(PathBuf::from(v)));
        let tags = self
            .list("tags", raw.tags.take(), grammar::tag)
            .unwrap_or_else(|| vec!["latest".to_string()]);
        if tags.len() > 1000 {
            self.problems.push(format!(
                "PLUGIN_TAGS: {} tags given; ECR allows at most 1000 per image",
                tags.len()
            ));
        }
        let registries = self
            .list_of("registry", raw.registry.take(), Registry::parse)
            .unwrap_or_default();
        let region = self.optional("region", raw.region.take(), |v| {
            grammar::region(v).map(|_| v.to_string())
        });
        let region = region.or(integration.map(|i| i.region));
        let (region, destinations) = self.destinations(registries, region).unzip();
        let promote = self.promote(mode, source.as_deref(), &mut raw);
        let skip_existing = self
            .optional("skip_existing", raw.skip_existing, grammar::boolean)
            .unwrap_or(false);
        let dry_run = self.optional("dry_run", raw.dry_run, grammar::boolean).unwrap_or(false);
        let timeout = self
            .optional("timeout", raw.timeout, grammar::duration)
            .unwrap_or(Duration::from_secs(300));

        if mode == Mode::Login
            && let Err(e) = crate::login::config_path(&self.ambient)
        {
            self.problems.push(format!("{e:#}"));
        }
        if mode != Mode::Check {
            let ambient = &self.ambient;
            self.problems
                .extend(crate::outputs::check(output_file.as_deref(), ambient));
        }
        // A partner that was given but refused is already named; "X is set without it" would be wrong.
        let refused = std::mem::take(&mut self.refused);
        self.problems
            .retain(|p| !refused.iter().any(|r| p.contains(&format!(" without {r}"))));
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        Ok(Settings {
            mode,
            source,
            branch: branch.expect("checked"),
            output_file,
            ambient: self.ambient,
            target: Target {
                repo: repo.expect("checked"),
                tags: dedup(tags),
                destinations: destinations.expect("checked"),
            },
            region: region.expect("checked"),
            promote,
            credentials: credentials.expect("checked"),
            repository,
            skip_existing,
            dry_run,
            timeout,
        })
    }

    /// The destinations and the run's region. An ECR host brings its own region, and a `PLUGIN_REGION`
    /// that contradicts it is an error; other hosts take `PLUGIN_REGION`, else the container's
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`. The run's region is `PLUGIN_REGION`, else the first ECR host's.
    fn destinations(
        &mut self,
        registries: Vec<Registry>,
        region: Option<String>,
    ) -> Option<(String, Vec<Destination>)> {
        let mut seen = std::collections::HashSet::new();
        for registry in &registries {
            if !seen.insert(registry.host.to_ascii_lowercase()) {
                return self.problem(format!(
                    "PLUGIN_REGISTRY names {} twice (a scheme or letter case does not make another registry): \
                     list each registry once",
                    registry.host
                ));
            }
        }
        for registry in &registries {
            let Some(ecr) = &registry.ecr else { continue };
            if let Some(region) = region.as_ref().filter(|r| **r != ecr.region) {
                return self.problem(format!(
                    "PLUGIN_REGION={region} conflicts with the PLUGIN_REGISTRY host {}, which is in {}: remove \
                     PLUGIN_REGION or make them agree",
                    registry.host, ecr.region
                ));
            }
        }
        let needs_region = registries.is_empty() || registries.iter().any(|r| r.ecr.is_none());
        let first_ecr = registries.iter().find_map(|r| r.ecr.as_ref()).map(|e| e.region.clone());
        let run_region = match (region, first_ecr) {
            (Some(r), _) => r,
            (None, Some(r)) if !needs_region => r,
            (None, _) => self.ambient_region()?,
        };
        let destinations = if registries.is_empty() {
            vec![Destination {
                registry: None,
                region: run_region.clone(),
            }]
        } else {
            registries
                .into_iter()
                .map(|r| {
                    let region = r.ecr.as_ref().map_or_else(|| run_region.clone(), |e| e.region.clone());
                    Destination {
                        registry: Some(r),
                        region,
                    }
                })
                .collect()
        };
        Some((run_region, destinations))
    }

    fn ambient_region(&mut self) -> Option<String> {
        let ambient = ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| {
            self.ambient
                .get(*k)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*k, v.trim().to_string()))
        });
        match ambient {
            Some((key, region)) => match grammar::region(&region) {
                Ok(()) => Some(region),
                Err(allowed) => self.problem(format!(
                    "{key}=`{}` is not allowed: expected {allowed}",
                    printable(&region)
                )),
            },
            None => self.problem(
                "no region: set PLUGIN_REGION, or PLUGIN_REGISTRY to an ECR host, or AWS_REGION in the container",
            ),
        }
    }

    /// Promote's settings; in push mode they are refused rather than ignored.
    fn promote(&mut self, mode: Mode, source: Option<&str>, raw: &mut Raw) -> Option<PromoteSettings> {
        let role_arn = self.optional("read_role_arn", raw.read_role_arn.take(), |v| {
            grammar::role_arn(v).map(|_| v.to_string())
        });
        let external_id = self.optional("read_external_id", raw.read_external_id.take(), |v| {
            grammar::external_id(v).map(|_| crate::secret::Secret::new(v))
        });
        let read_region = self.optional("read_region", raw.read_region.take(), |v| {
            grammar::region(v).map(|_| v.to_string())
        });
        let via = self.optional("promote_via", raw.promote_via.take(), |v| {
            match v.to_ascii_lowercase().as_str() {
                "registry" => Ok(Via::Registry),
                "engine" => Ok(Via::Engine),
                _ => Err("registry or engine".to_string()),
            }
        });
        if role_arn.is_none() && external_id.is_some() {
            return self.problem(
                "PLUGIN_READ_EXTERNAL_ID is set without PLUGIN_READ_ROLE_ARN: set the role, or remove the external ID",
            );
        }
        if mode == Mode::Push {
            let given: Vec<&str> = [
                ("PLUGIN_READ_ROLE_ARN", role_arn.is_some()),
                ("PLUGIN_READ_REGION", read_region.is_some()),
                ("PLUGIN_PROMOTE_VIA", via.is_some()),
            ]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .collect();
            if !given.is_empty() {
                self.problems
                    .push(format!("{} only apply with PLUGIN_MODE=promote", given.join(", ")));
            }
            return None;
        }
        let source = ImageRef::parse(source?).ok()?;
        let read_role = role_arn.map(|role_arn| Hop { role_arn, external_id });
        Some(PromoteSettings {
            source,
            read_role,
            read_region,
            via: via.unwrap_or(Via::Registry),
        })
    }

    /// A setting that means nothing in this mode: refused, so a typo in the mode is never silent.
    fn unused(&mut self, mode: Mode, name: &str, raw: Option<String>) -> Option<String> {
        if Self::value(raw).is_some() {
            let mode = format!("{mode:?}").to_ascii_lowercase();
            self.problems.push(format!(
                "{} does not apply with PLUGIN_MODE={mode}: remove it",
                Self::doc(name).env()
            ));
        }
        None
    }

    /// The integration entry named by `PLUGIN_INTEGRATION` in `PLUGIN_INTEGRATIONS_FILE`.
    fn integration(&mut self, raw: &mut Raw) -> Option<crate::integrations::Integration> {
        let file = Self::value(raw.integrations_file.take());
        let name = Self::value(raw.integration.take());
        match (file, name) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem("PLUGIN_INTEGRATIONS_FILE is set without PLUGIN_INTEGRATION: name the entry to use")
            }
            (None, Some(_)) => {
                self.problem("PLUGIN_INTEGRATION is set without PLUGIN_INTEGRATIONS_FILE: give the file")
            }
            (Some(file), Some(name)) => match crate::integrations::find(std::path::Path::new(&file), &name) {
                Ok(i) => match grammar::region(&i.region) {
                    Ok(()) => Some(i),
                    Err(allowed) => self.problem(format!(
                        "PLUGIN_INTEGRATIONS_FILE: the region of {name} is not allowed: expected {allowed}"
                    )),
                },
                Err(e) => self.problem(format!("PLUGIN_INTEGRATIONS_FILE: {e}")),
            },
        }
    }

    /// The branch filter (explicit settings win over the integration's) and its verdict for this build.
    fn branch(&mut self, raw: &mut Raw, integration: Option<&crate::integrations::Integration>) -> Option<Verdict> {
        let explicit = Self::value(raw.branch.take());
        let mut compile =
            |name: &str, raw: Option<String>, from_integration: Option<&Vec<String>>| -> Option<(Patterns, String)> {
                let doc = Self::doc(name);
                if let Some(items) = self.list(name, raw, |_| Ok(())) {
                    return match Patterns::parse(&items) {
                        Ok(p) => Some((p, doc.env())),
                        Err(allowed) => self.problem(format!("{}: not allowed: expected {allowed}", doc.env())),
                    };
                }
                let items = from_integration.filter(|i| !i.is_empty())?;
                let origin = format!(
                    "the branches of integration {}",
                    integration.map_or("", |i| i.name.as_str())
                );
                match Patterns::parse(items) {
                    Ok(p) => Some((p, origin)),
                    Err(allowed) => self.problem(format!("PLUGIN_INTEGRATIONS_FILE: {origin}: expected {allowed}")),
                }
            };
        let only = compile("branches_only", raw.branches_only.take(), integration.map(|i| &i.only));
        let except = compile(
            "branches_except",
            raw.branches_except.take(),
            integration.map(|i| &i.except),
        );
        let origin = [only.as_ref(), except.as_ref()]
            .into_iter()
            .flatten()
            .map(|(_, o)| o.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let filter = BranchFilter {
            only: only.map(|(p, _)| p),
            except: except.map(|(p, _)| p),
            origin,
        };
        let detected = branch::detect(explicit.as_deref(), &self.ambient);
        match filter.verdict(detected.as_ref()) {
            Ok(v) => Some(v),
            Err(e) => self.problem(e),
        }
    }

    /// The repository settings: each applied only when set.
    fn repository(&mut self, raw: &mut Raw) -> RepositorySettings {
        let create = self
            .optional("create_repository", raw.create_repository.take(), grammar::boolean)
            .unwrap_or(false);
        let tag_mutability = self.optional("tag_mutability", raw.tag_mutability.take(), |v| {
            match v.to_ascii_uppercase().as_str() {
                "MUTABLE" => Ok(Mutability::Mutable),
                "IMMUTABLE" => Ok(Mutability::Immutable),
                _ => Err("MUTABLE or IMMUTABLE".to_string()),
            }
        });
        let scan_on_push = self.optional("scan_on_push", raw.scan_on_push.take(), grammar::boolean);
        let kind = self.optional("encryption", raw.encryption.take(), |v| {
            match v.to_ascii_uppercase().as_str() {
                "AES256" => Ok(false),
                "KMS" => Ok(true),
                _ => Err("AES256 or KMS".to_string()),
            }
        });
        let kms_key = self.optional("kms_key", raw.kms_key.take(), |v| {
            grammar::kms_key(v).map(|_| v.to_string())
        });
        let encryption = match (kind, kms_key) {
            (Some(true), key) => Some(Encryption::Kms(key)),
            (Some(false), None) => Some(Encryption::Aes256),
            (None, None) => None,
            (_, Some(_)) => {
                self.problem("PLUGIN_KMS_KEY is set without PLUGIN_ENCRYPTION=KMS: set both, or remove the key")
            }
        };
        let tags = self
            .optional("repository_tags", raw.repository_tags.take(), grammar::resource_tags)
            .unwrap_or_default();
        let lifecycle_policy = self.optional("lifecycle_policy", raw.lifecycle_policy.take(), |v| {
            grammar::json_policy(v, 30_720)
        });
        let repository_policy = self.optional("repository_policy", raw.repository_policy.take(), |v| {
            grammar::json_policy(v, 10_240)
        });
        RepositorySettings {
            create,
            tag_mutability,
            scan_on_push,
            encryption,
            tags,
            lifecycle_policy,
            repository_policy,
        }
    }

    /// Each credential value on its own, then the level model's precedence and contradictions.
    fn credentials(&mut self, raw: &mut Raw) -> Option<CredentialPlan> {
        let arn = |v: &str| grammar::role_arn(v).map(|_| v.to_string());
        let external_id = |v: &str| grammar::external_id(v).map(|_| Secret::new(v));
        let settings = CredentialSettings {
            trigger: RoleSettings {
                role_arn: self.optional("trigger_role_arn", raw.trigger_role_arn.take(), arn),
                external_id: self.optional("trigger_external_id", raw.trigger_external_id.take(), external_id),
                web_identity_token_file: self.optional(
                    "trigger_web_identity_token_file",
                    raw.trigger_web_identity_token_file.take(),
                    grammar::readable_file,
                ),
            },
            pipeline: RoleSettings {
                role_arn: self.optional("pipeline_role_arn", raw.pipeline_role_arn.take(), arn),
                external_id: self.optional("pipeline_external_id", raw.pipeline_external_id.take(), external_id),
                web_identity_token_file: self.optional(
                    "pipeline_web_identity_token_file",
                    raw.pipeline_web_identity_token_file.take(),
                    grammar::readable_file,
                ),
            },
            access_key: self.optional("access_key", raw.access_key.take(), |v| {
                if grammar::looks_like_secret(v) {
                    return Err(
                        "an access key id (AKIA…); this value looks like a secret access key: are \
                                PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?"
                            .into(),
                    );
                }
                grammar::access_key(v).map(|_| v.to_string())
            }),
            secret_key: self.optional("secret_key", raw.secret_key.take(), |v| {
                if grammar::access_key(v).is_ok() {
                    return Err("a secret access key; this value looks like an access key id: are \
                                PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?"
                        .into());
                }
                grammar::secret_key(v).map(|_| Secret::new(v))
            }),
            role_arn: self.optional("role_arn", raw.role_arn.take(), arn),
            external_id: self.optional("external_id", raw.external_id.take(), external_id),
            intermediate_role: self.optional("intermediate_role", raw.intermediate_role.take(), arn),
            intermediate_external_id: self.optional(
                "intermediate_external_id",
                raw.intermediate_external_id.take(),
                external_id,
            ),
            use_service_account: self
                .optional("use_service_account", raw.use_service_account.take(), grammar::boolean)
                .unwrap_or(false),
            session_name: self.optional("session_name", raw.session_name.take(), |v| {
                grammar::session_name(v).map(|_| v.to_string())
            }),
            duration_seconds: self.optional(
                "duration_seconds",
                raw.duration_seconds.take(),
                grammar::duration_seconds,
            ),
        };
        // A web identity token file from the container (IRSA projects one) is read by the SDK: bounded here.
        if let Some(file) = self
            .ambient
            .get("AWS_WEB_IDENTITY_TOKEN_FILE")
            .filter(|f| !f.trim().is_empty())
            && let Err(e) = crate::files::check_bounded(std::path::Path::new(file), grammar::TOKEN_FILE_LIMIT)
        {
            self.problems.push(format!(
                "AWS_WEB_IDENTITY_TOKEN_FILE: expected a readable token file ({e})"
            ));
        }
        match credentials::plan(settings, &self.ambient) {
            Ok(plan) => Some(plan),
            Err(problems) => {
                self.problems.extend(problems);
                None
            }
        }
    }

    fn problem<T>(&mut self, message: impl Into<String>) -> Option<T> {
        self.problems.push(message.into());
        None
    }

    fn doc(name: &str) -> &'static SettingDoc {
        SETTINGS.iter().find(|s| s.name == name).expect("a declared setting")
    }

    /// A set, non-empty value, trimmed; `None` when unset or blank.
    fn value(raw: Option<String>) -> Option<String> {
        raw.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn optional<T>(&mut self, name: &str, raw: Option<String>, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let doc = Self::doc(name);
        let value = Self::value(raw)?;
        match parse(&value) {
            Ok(v) => Some(v),
            Err(allowed) if doc.secret => {
                self.refused.push(doc.env());
                self.problem(format!("{}: the value is not allowed: expected {allowed}", doc.env()))
            }
            Err(allowed) => {
                self.refused.push(doc.env());
                self.problem(format!(
                    "{}=`{}` is not allowed: expected {allowed}",
                    doc.env(),
                    printable(&value)
                ))
            }
        }
    }

    fn required(
        &mut self,
        name: &str,
        raw: Option<String>,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let doc = Self::doc(name);
        if Self::value(raw.clone()).is_none() {
            return self.problem(format!("{} is required: {}", doc.env(), doc.help));
        }
        self.optional(name, raw, |v| check(v).map(|_| v.to_string()))
    }

    /// A comma list: items trimmed, empty items dropped, each checked.
    fn list(
        &mut self,
        name: &str,
        raw: Option<String>,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<Vec<String>> {
        let doc = Self::doc(name);
        let value = Self::value(raw)?;
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if items.is_empty() {
            return self.problem(format!(
                "{}=`{}` has no items: give a comma-separated list",
                doc.env(),
                printable(&value)
            ));
        }
        let bad: Vec<&String> = items.iter().filter(|item| check(item).is_err()).collect();
        if let Some(first) = bad.first() {
            let allowed = check(first).unwrap_err();
            let names: Vec<String> = bad.iter().map(|b| format!("`{}`", printable(b))).collect();
            return self.problem(format!(
                "{}: {} not allowed: expected {allowed}",
                doc.env(),
                names.join(", ")
            ));
        }
        Some(items)
    }
}

impl Checker {
    /// A comma list of values each parsed by `parse`.
    fn list_of<T>(
        &mut self,
        name: &str,
        raw: Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let items = self.list(name, raw, |v| parse(v).map(|_| ()))?;
        Some(items.iter().filter_map(|i| parse(i).ok()).collect())
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// The `--help` text, generated from [`SETTINGS`].
pub fn help() -> String {
    let mut out = String::from(
        "ecr-step: push a local image to Amazon ECR from a CI pipeline.\n\n\
         Usage: set PLUGIN_* environment variables and run `ecr-step` (no arguments).\n\
         Empty values count as unset. Flags: --help, --version.\n\nSettings:\n",
    );
    for s in SETTINGS {
        out.push_str(&format!("  {:<22} {}\n", s.env(), s.value));
        out.push_str(&format!("      {}\n", s.help));
        if !s.default.is_empty() {
            out.push_str(&format!("      default: {}\n", s.default));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn parse(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let env = vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v)));
        Settings::from_env(env).map_err(|e| e.to_string())
    }

    fn minimal() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PLUGIN_SOURCE", "app:1"),
            ("PLUGIN_REPO", "team/app"),
            ("PLUGIN_REGION", "eu-west-2"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = minimal();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn minimal_settings_take_defaults() {
        let s = parse(&minimal()).unwrap();
        assert_eq!(s.source.as_deref(), Some("app:1"));
        assert_eq!(s.target.repo, "team/app");
        assert_eq!(s.target.tags, vec!["latest"]);
        assert_eq!(
            s.target.destinations,
            vec![Destination {
                registry: None,
                region: "eu-west-2".into()
            }]
        );
        assert_eq!(s.region, "eu-west-2");
        assert_eq!(s.credentials.level, credentials::Level::Runtime);
        assert!(!s.dry_run);
        assert_eq!(s.timeout, Duration::from_secs(300));
    }

    #[test]
    fn lists_are_trimmed_deduplicated_and_empty_items_dropped() {
        let s = parse(&with(&[("PLUGIN_TAGS", " v1 ,, latest,v1 , ")])).unwrap();
        assert_eq!(s.target.tags, vec!["v1", "latest"]);
        let e = parse(&with(&[("PLUGIN_TAGS", " , ,")])).unwrap_err();
        assert!(e.contains("PLUGIN_TAGS") && e.contains("no items"), "{e}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = parse(&with(&[("PLUGIN_TAGS", ""), ("PLUGIN_DRY_RUN", " ")])).unwrap();
        assert_eq!(s.target.tags, vec!["latest"]);
        let e = parse(&[
            ("PLUGIN_SOURCE", "app"),
            ("PLUGIN_REPO", ""),
            ("PLUGIN_REGION", "us-east-1"),
        ])
        .unwrap_err();
        assert!(e.contains("PLUGIN_REPO is required"), "{e}");
    }

    #[test]
    fn unknown_settings_name_the_variable_and_the_closest_one() {
        let e = parse(&with(&[("PLUGIN_REPOSITORY", "x")])).unwrap_err();
        assert!(e.contains("PLUGIN_REPOSITORY is not a setting"), "{e}");
        assert!(e.contains("did you mean PLUGIN_REPO?"), "{e}");
        let e = parse(&with(&[("PLUGIN_TAG", "x")])).unwrap_err();
        assert!(e.contains("did you mean PLUGIN_TAGS?"), "{e}");
        let e = parse(&with(&[("PLUGIN_ZZZZQQQ", "x")])).unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable_and_what_is_allowed() {
        let cases = [
            ("PLUGIN_REPO", "Team/App", "PLUGIN_REPO=`Team/App` is not allowed"),
            ("PLUGIN_TAGS", "ok,-bad,a:b", "PLUGIN_TAGS: `-bad`, `a:b` not allowed"),
            (
                "PLUGIN_REGION",
                "us_east_1",
                "PLUGIN_REGION=`us_east_1` is not allowed: expected an AWS region",
            ),
            (
                "PLUGIN_DRY_RUN",
                "maybe",
                "PLUGIN_DRY_RUN=`maybe` is not allowed: expected true or false",
            ),
            ("PLUGIN_TIMEOUT", "forever", "PLUGIN_TIMEOUT=`forever` is not allowed"),
            ("PLUGIN_ACCESS_KEY", "short", "PLUGIN_ACCESS_KEY=`short` is not allowed"),
            ("PLUGIN_SOURCE", "app name", "PLUGIN_SOURCE=`app name` is not allowed"),
            (
                "PLUGIN_REGISTRY",
                "1.dkr.ecr.us-east-1.amazonaws.com.evil.com",
                "looks like one but is not",
            ),
        ];
        for (key, value, want) in cases {
            let mut vars: Vec<(&str, &str)> = minimal().into_iter().filter(|(k, _)| *k != key).collect();
            vars.push((key, value));
            let e = parse(&vars).unwrap_err();
            assert!(e.contains(want), "{key}={value}: {e}");
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let e = parse(&[("PLUGIN_REPO", "X"), ("PLUGIN_TAGS", "-x")]).unwrap_err();
        for want in [
            "PLUGIN_SOURCE is required",
            "PLUGIN_REPO=`X`",
            "PLUGIN_TAGS",
            "no region",
        ] {
            assert!(e.contains(want), "{want} missing from {e}");
        }
    }

    #[test]
    fn region_comes_from_an_ecr_host_and_conflicts_are_refused() {
        let host = ("PLUGIN_REGISTRY", "123456789012.dkr.ecr.eu-west-2.amazonaws.com");
        let s = parse(&[("PLUGIN_SOURCE", "a"), ("PLUGIN_REPO", "ab"), host]).unwrap();
        assert_eq!(s.region, "eu-west-2");
        assert_eq!(
            s.target.destinations[0].registry.clone().unwrap().ecr.unwrap().account,
            "123456789012"
        );
        let e = parse(&[
            ("PLUGIN_SOURCE", "a"),
            ("PLUGIN_REPO", "ab"),
            host,
            ("PLUGIN_REGION", "us-east-1"),
        ])
        .unwrap_err();
        assert!(
            e.contains("PLUGIN_REGION=us-east-1 conflicts with the PLUGIN_REGISTRY host"),
            "{e}"
        );
        let same = parse(&[
            ("PLUGIN_SOURCE", "a"),
            ("PLUGIN_REPO", "ab"),
            host,
            ("PLUGIN_REGION", "eu-west-2"),
        ]);
        assert!(same.is_ok());
    }

    #[test]
    fn region_falls_back_to_the_container_environment() {
        let base = [("PLUGIN_SOURCE", "a"), ("PLUGIN_REPO", "ab")];
        let s = parse(&[base[0], base[1], ("AWS_DEFAULT_REGION", "ap-south-1")]).unwrap();
        assert_eq!(s.region, "ap-south-1");
        let s = parse(&[
            base[0],
            base[1],
            ("AWS_DEFAULT_REGION", "ap-south-1"),
            ("AWS_REGION", "sa-east-1"),
        ])
        .unwrap();
        assert_eq!(s.region, "sa-east-1");
        let e = parse(&[base[0], base[1], ("AWS_REGION", "nowhere")]).unwrap_err();
        assert!(e.contains("AWS_REGION=`nowhere`"), "{e}");
    }

    #[test]
    fn key_pairs_must_be_whole_and_the_secret_is_never_echoed() {
        let s = parse(&with(&[
            ("PLUGIN_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
            ("PLUGIN_SECRET_KEY", SECRET),
        ]))
        .unwrap();
        assert_eq!(s.credentials.level, credentials::Level::Account);
        assert!(!format!("{s:?}").contains(SECRET));
        let e = parse(&with(&[("PLUGIN_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")])).unwrap_err();
        assert!(e.contains("without PLUGIN_SECRET_KEY"), "{e}");
        let e = parse(&with(&[("PLUGIN_SECRET_KEY", SECRET)])).unwrap_err();
        assert!(e.contains("without PLUGIN_ACCESS_KEY"), "{e}");
        let bad_secret = "bad secret with spaces 12345";
        let e = parse(&with(&[
            ("PLUGIN_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
            ("PLUGIN_SECRET_KEY", bad_secret),
        ]))
        .unwrap_err();
        assert!(e.contains("PLUGIN_SECRET_KEY") && !e.contains(bad_secret), "{e}");
    }

    #[test]
    fn swapped_keys_never_echo_the_secret_and_name_the_swap() {
        let e = parse(&with(&[
            ("PLUGIN_ACCESS_KEY", SECRET),
            ("PLUGIN_SECRET_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ]))
        .unwrap_err();
        assert!(!e.contains(SECRET) && !e.contains("wJalr"), "{e}");
        assert!(e.contains("swapped?") && e.contains("PLUGIN_ACCESS_KEY"), "{e}");
        assert!(!e.contains("without"), "a wrong 'set without' message: {e}");
        // The secret in a setting that is not secret at all.
        let e = parse(&with(&[("PLUGIN_TAGS", SECRET)])).unwrap_err();
        assert!(!e.contains(SECRET) && e.contains("look like a secret key"), "{e}");
    }

    #[test]
    fn a_registry_named_twice_is_refused() {
        for registries in ["127.0.0.1:5000,127.0.0.1:5000", "127.0.0.1:5000,http://127.0.0.1:5000/"] {
            let e = parse(&with(&[("PLUGIN_REGISTRY", registries)])).unwrap_err();
            assert!(
                e.contains("PLUGIN_REGISTRY names 127.0.0.1:5000 twice"),
                "{registries}: {e}"
            );
        }
    }

    #[test]
    fn policies_that_look_like_json_are_inline_and_files_are_bounded() {
        let e = parse(&with(&[("PLUGIN_LIFECYCLE_POLICY", "[1,2]")])).unwrap_err();
        assert!(e.contains("expected a JSON object"), "{e}");
        let big = format!("{{\"rules\":[{}]}}", vec!["{}"; 20_000].join(","));
        let big: &'static str = Box::leak(big.into_boxed_str());
        let e = parse(&with(&[("PLUGIN_LIFECYCLE_POLICY", big)])).unwrap_err();
        assert!(e.contains("at most 30720 characters"), "{e}");
        for device in ["/dev/zero", "/dev/urandom"] {
            let e = parse(&with(&[("PLUGIN_REPOSITORY_POLICY", device)])).unwrap_err();
            assert!(e.contains("not a regular file"), "{device}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_refused_by_name() {
        use std::os::unix::ffi::OsStringExt;
        let mut env: Vec<(OsString, OsString)> = minimal()
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        env.push((
            OsString::from("PLUGIN_TAGS"),
            OsString::from_vec(vec![0x66, 0xff, 0x6f]),
        ));
        let e = Settings::from_env(env).unwrap_err().to_string();
        assert!(e.contains("PLUGIN_TAGS: the value is not valid UTF-8"), "{e}");
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let e = parse(&with(&[("PLUGIN_TAGS", "a\u{1b}[31m")])).unwrap_err();
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn repository_settings_are_applied_only_when_set() {
        let s = parse(&minimal()).unwrap();
        assert!(!s.repository.any());
        let s = parse(&with(&[
            ("PLUGIN_CREATE_REPOSITORY", "true"),
            ("PLUGIN_TAG_MUTABILITY", "immutable"),
            ("PLUGIN_SCAN_ON_PUSH", "false"),
            ("PLUGIN_ENCRYPTION", "KMS"),
            ("PLUGIN_KMS_KEY", "alias/ecr"),
            ("PLUGIN_REPOSITORY_TAGS", "team=platform, cost-center=42"),
            ("PLUGIN_LIFECYCLE_POLICY", r#"{"rules":[]}"#),
        ]))
        .unwrap();
        let r = s.repository;
        assert!(r.create);
        assert_eq!(r.tag_mutability, Some(Mutability::Immutable));
        assert_eq!(r.scan_on_push, Some(false));
        assert_eq!(r.encryption, Some(Encryption::Kms(Some("alias/ecr".into()))));
        assert_eq!(
            r.tags,
            vec![("team".into(), "platform".into()), ("cost-center".into(), "42".into())]
        );
        assert_eq!(r.lifecycle_policy.as_deref(), Some(r#"{"rules":[]}"#));
        assert_eq!(r.repository_policy, None);
    }

    #[test]
    fn bad_repository_settings_name_the_variable() {
        let cases = [
            ("PLUGIN_TAG_MUTABILITY", "sometimes", "MUTABLE or IMMUTABLE"),
            ("PLUGIN_ENCRYPTION", "DES", "AES256 or KMS"),
            (
                "PLUGIN_KMS_KEY",
                "alias/x",
                "PLUGIN_KMS_KEY is set without PLUGIN_ENCRYPTION=KMS",
            ),
            ("PLUGIN_REPOSITORY_TAGS", "novalue", "PLUGIN_REPOSITORY_TAGS"),
            ("PLUGIN_LIFECYCLE_POLICY", "{\"rules\": [", "PLUGIN_LIFECYCLE_POLICY"),
            (
                "PLUGIN_REPOSITORY_POLICY",
                "/nonexistent/policy.json",
                "PLUGIN_REPOSITORY_POLICY",
            ),
            ("PLUGIN_SKIP_EXISTING", "perhaps", "PLUGIN_SKIP_EXISTING"),
        ];
        for (key, value, want) in cases {
            let e = parse(&with(&[(key, value)])).unwrap_err();
            assert!(e.contains(want), "{key}={value}: {e}");
        }
    }

    #[test]
    fn several_registries_each_get_their_region() {
        let base = [("PLUGIN_SOURCE", "a"), ("PLUGIN_REPO", "ab")];
        let regs = "111111111111.dkr.ecr.eu-west-1.amazonaws.com, 111111111111.dkr.ecr.us-east-2.amazonaws.com";
        let s = parse(&[base[0], base[1], ("PLUGIN_REGISTRY", regs)]).unwrap();
        let regions: Vec<&str> = s.target.destinations.iter().map(|d| d.region.as_str()).collect();
        assert_eq!(regions, vec!["eu-west-1", "us-east-2"]);
        assert_eq!(s.region, "eu-west-1");
        let e = parse(&[
            base[0],
            base[1],
            ("PLUGIN_REGISTRY", regs),
            ("PLUGIN_REGION", "eu-west-1"),
        ])
        .unwrap_err();
        assert!(
            e.contains("PLUGIN_REGION=eu-west-1 conflicts with the PLUGIN_REGISTRY host"),
            "{e}"
        );
        let s = parse(&[
            base[0],
            base[1],
            ("PLUGIN_REGISTRY", "127.0.0.1:5000,127.0.0.1:5001"),
            ("PLUGIN_REGION", "us-west-2"),
        ])
        .unwrap();
        assert_eq!(s.target.destinations.len(), 2);
        assert!(s.target.destinations.iter().all(|d| d.region == "us-west-2"));
        let e = parse(&[base[0], base[1], ("PLUGIN_REGISTRY", "127.0.0.1:5000,bad host")]).unwrap_err();
        assert!(e.contains("PLUGIN_REGISTRY: `bad host` not allowed"), "{e}");
    }

    #[test]
    fn promote_takes_a_registry_reference_and_refuses_promote_settings_in_push_mode() {
        let s = parse(&[
            ("PLUGIN_MODE", "promote"),
            ("PLUGIN_SOURCE", "127.0.0.1:5000/team/app:1.0"),
            ("PLUGIN_REPO", "team/app"),
            ("PLUGIN_REGION", "us-east-1"),
            ("PLUGIN_READ_ROLE_ARN", "arn:aws:iam::111111111111:role/reader"),
            ("PLUGIN_PROMOTE_VIA", "engine"),
        ])
        .unwrap();
        assert_eq!(s.mode, Mode::Promote);
        let p = s.promote.unwrap();
        assert_eq!(p.source.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(p.via, Via::Engine);
        assert_eq!(p.read_role.unwrap().role_arn, "arn:aws:iam::111111111111:role/reader");
        let e = parse(&with(&[("PLUGIN_READ_REGION", "us-east-1")])).unwrap_err();
        assert!(
            e.contains("PLUGIN_READ_REGION only apply with PLUGIN_MODE=promote"),
            "{e}"
        );
        let e = parse(&[
            ("PLUGIN_MODE", "promote"),
            ("PLUGIN_SOURCE", "app name"),
            ("PLUGIN_REPO", "ab"),
            ("PLUGIN_REGION", "us-east-1"),
        ])
        .unwrap_err();
        assert!(
            e.contains("PLUGIN_SOURCE=`app name` is not allowed: expected an image reference"),
            "{e}"
        );
        let e = parse(&with(&[("PLUGIN_MODE", "copy")])).unwrap_err();
        assert!(
            e.contains("PLUGIN_MODE=`copy` is not allowed: expected push, promote, login or check"),
            "{e}"
        );
    }

    #[test]
    fn help_lists_every_setting() {
        let text = help();
        for s in SETTINGS {
            assert!(text.contains(&s.env()), "{} missing from --help", s.env());
        }
    }
}
