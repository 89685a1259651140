//! Settings: reads the `PLUGIN_*` environment, and the files settings name, into one typed settings value
//! per mode, before anything touches the network.
//!
//! Three steps, each in one place: [`read`] takes the environment apart (unknown names with the closest
//! known one, non-UTF-8, the same setting twice); `Parser::rules` applies the table (`table.rs`): a
//! setting that does not apply in the mode, a required one missing, one set without the setting it needs;
//! then each value is parsed by its `Key` with the grammar of `domain::grammar`, and cross-setting rules
//! (region against registry host, credential contradictions) are checked. Every problem is reported at
//! once; a secret value is never echoed.

pub mod document;
pub mod frontends;
pub mod integrations;
pub mod table;

pub use table::{Key, Mode, SETTINGS, Setting, help};

use crate::domain::branch::{self, BranchFilter, Patterns, Verdict};
use crate::domain::credentials::{self, CredentialPlan, CredentialSettings, Hop, RoleSettings};
use crate::domain::grammar::{self, printable};
use crate::domain::reference::ImageRef;
use crate::domain::referrers::ReferrerFilter;
use crate::domain::registry::Registry;
use crate::domain::repository::{Encryption, Mutability, RepositorySettings, TagRule};
use crate::domain::scan::{ScanGate, Severity};
use crate::domain::secret::Secret;
use crate::domain::source::Source;
use crate::domain::target::{Target, TargetRegistry};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validated settings: every value here has been checked; nothing below needs to check it again.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    pub mode: ModeSettings,
}

/// What every mode has: where the credentials come from, the destinations, the branch verdict.
/// `Debug` shows the names of the ambient variables, never their values (they hold the container's keys
/// and tokens).
#[derive(Clone)]
pub struct Common {
    /// Whether the branch filter lets this run go on, and why.
    pub branch: Verdict,
    /// The environment outside `PLUGIN_*` (outputs, docker config location).
    pub ambient: HashMap<String, String>,
    /// The region of the run's STS calls (and of registries that are not ECR hosts).
    pub region: String,
    pub credentials: CredentialPlan,
    /// The registries written to (or signed in to), each with its token's region.
    pub destinations: Vec<TargetRegistry>,
    pub output_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Where each value of an integration document went (or why it did not): `PLUGIN_ROLE_ARN from
    /// document setup.role_arn`. Empty without a document. Never a value.
    pub origins: Vec<String>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.ambient.keys().collect();
        names.sort();
        f.debug_struct("Common")
            .field("branch", &self.branch)
            .field("ambient (names only)", &names)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("destinations", &self.destinations)
            .field("output_file", &self.output_file)
            .field("timeout", &self.timeout)
            .field("origins", &self.origins)
            .finish()
    }
}

/// The settings of the mode `PLUGIN_MODE` chose: each mode gets its own, and only its own.
#[derive(Debug, Clone)]
pub enum ModeSettings {
    Push(PushSettings),
    Promote(PromoteSettings),
    Login(LoginSettings),
    Check(CheckSettings),
}

impl ModeSettings {
    /// Whether the mode writes outputs for later steps (check mode writes none).
    pub fn writes_outputs(&self) -> bool {
        !matches!(self, ModeSettings::Check(_))
    }
}

#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Where the image is: the engine, an OCI layout, an archive.
    pub source: Source,
    /// How an engine image is pushed.
    pub via: PushVia,
    pub target: Target,
    pub repository: RepositorySettings,
    /// The scan gate, when `PLUGIN_SCAN_SEVERITY_THRESHOLD` is set.
    pub scan: Option<ScanGate>,
    pub skip_existing: bool,
    pub dry_run: bool,
}

/// How push moves an engine image: `docker push` through the engine, the step's own transfer, or (`auto`)
/// the engine when the image is mostly a base the destination registry already holds, else the step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushVia {
    Auto,
    Engine,
    Registry,
}

/// How promote copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Registry,
    Engine,
}

#[derive(Debug, Clone)]
pub struct PromoteSettings {
    pub source: ImageRef,
    /// A role that reads the source registry, assumed from the run's identity.
    pub read_role: Option<Hop>,
    pub read_region: Option<String>,
    pub via: Via,
    /// Which referrers travel with the image.
    pub referrers: ReferrerFilter,
    pub target: Target,
    pub repository: RepositorySettings,
    pub scan: Option<ScanGate>,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// The docker config file the tokens are written to.
    pub docker_config: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub repo: String,
    /// `PLUGIN_CREATE_REPOSITORY=true`: a missing repository is what a push will create.
    pub create_repository: bool,
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
        let (values, ambient, problems) = read(vars);
        let parser = Parser {
            values,
            ambient,
            problems,
            from_document: BTreeMap::new(),
            origins: Vec::new(),
        };
        parser.settings().map_err(|problems| SettingsError(problems).into())
    }
}

/// The environment taken apart: the `PLUGIN_*` values by key (trimmed; empty means unset), the rest of the
/// environment, and the problems found on the way.
fn read(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> (BTreeMap<Key, String>, HashMap<String, String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut plugin: Vec<(String, String)> = Vec::new();
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
                if let Some((other, _)) = plugin.iter().find(|(other, _)| other.eq_ignore_ascii_case(key)) {
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
    // envy reads the prefixed variables, as every Drone-style plugin does; names map to keys via the table.
    let named: HashMap<String, String> = match envy::prefixed("PLUGIN_").from_iter(plugin) {
        Ok(named) => named,
        Err(e) => {
            problems.push(e.to_string());
            HashMap::new()
        }
    };
    let values = named
        .into_iter()
        .filter_map(|(name, value)| {
            let setting = SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(&name))?;
            let value = value.trim().to_string();
            (!value.is_empty()).then_some((setting.key, value))
        })
        .collect();
    (values, ambient, problems)
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

/// Turns the values into [`Settings`], collecting every problem.
struct Parser {
    values: BTreeMap<Key, String>,
    ambient: HashMap<String, String>,
    problems: Vec<String>,
    /// Values that came from the integration document: the JSON path, for messages and the log.
    from_document: BTreeMap<Key, String>,
    origins: Vec<String>,
}

impl Parser {
    fn settings(mut self) -> Result<Settings, Vec<String>> {
        let mode = self.parse(Key::Mode, Mode::parse).unwrap_or(Mode::Push);
        self.document(mode);
        self.rules(mode);
        let credentials = self.credentials();
        let integration = self.integration();
        let branch = self.branch(integration.as_ref());
        let registries = self.list_of(Key::Registry, Registry::parse).unwrap_or_default();
        let region = self.parse(Key::Region, |v| grammar::region(v).map(|_| v.to_string()));
        let region = region.or(integration.map(|i| i.region));
        let (region, destinations) = self.destinations(registries, region).unzip();
        let output_file = self.parse(Key::OutputFile, |v| Ok(PathBuf::from(v)));
        let timeout = self
            .parse(Key::Timeout, grammar::duration)
            .unwrap_or(Duration::from_secs(300));
        let mode_settings = match mode {
            Mode::Push => self.push().map(ModeSettings::Push),
            Mode::Promote => self.promote().map(ModeSettings::Promote),
            Mode::Login => self.login().map(ModeSettings::Login),
            Mode::Check => self.check().map(ModeSettings::Check),
        };
        if Key::OutputFile.setting().applies_in(mode) {
            let problems = crate::outputs::check(output_file.as_deref(), &self.ambient);
            self.problems.extend(problems);
        }
        debug_assert!(
            self.values.is_empty(),
            "every value is parsed: {:?}",
            self.values.keys()
        );
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        let missing = "no problem was reported, so every part is there";
        Ok(Settings {
            common: Common {
                branch: branch.expect(missing),
                ambient: self.ambient,
                region: region.expect(missing),
                credentials: credentials.expect(missing),
                destinations: destinations.expect(missing),
                output_file,
                timeout,
                origins: self.origins,
            },
            mode: mode_settings.expect(missing),
        })
    }

    /// `PLUGIN_INTEGRATION_DOCUMENT`: validated against the schema, then each group of its values fills the
    /// settings it stands for, unless one of them was given explicitly (explicit settings win, group by
    /// group) or it does not apply in this mode. The regions: `ci.region` and `setup.region` must agree
    /// (the step pushes to one region) unless `PLUGIN_REGION` chooses, and are not used when every
    /// `PLUGIN_REGISTRY` host is an ECR host, which names its region.
    fn document(&mut self, mode: Mode) {
        let Some(value) = self.values.remove(&Key::IntegrationDocument) else {
            return;
        };
        let text = if value.starts_with('{') {
            value
        } else {
            match crate::files::read_bounded(Path::new(&value), document::LIMIT) {
                Ok(text) => text,
                Err(e) => {
                    self.problems.push(format!("PLUGIN_INTEGRATION_DOCUMENT: {e}"));
                    return;
                }
            }
        };
        let values = match document::read(&text) {
            Ok(values) => values,
            Err(problems) => {
                let named = problems
                    .into_iter()
                    .map(|p| format!("PLUGIN_INTEGRATION_DOCUMENT: {p}"));
                self.problems.extend(named);
                return;
            }
        };
        let get = |path: &str| values.iter().find(|(p, _)| p == path).map(|(_, v)| v.clone());
        for group in document::FIELDS {
            let explicit = group.iter().find(|(_, key)| self.values.contains_key(key));
            for (path, key) in group.iter() {
                let Some(value) = get(path) else { continue };
                let line = match explicit {
                    Some((_, given)) => format!(
                        "{}: from the setting {} (document {path} not used)",
                        key.env(),
                        given.env()
                    ),
                    None if !key.setting().applies_in(mode) => {
                        format!("{}: document {path} not used with PLUGIN_MODE={mode}", key.env())
                    }
                    None => {
                        self.values.insert(*key, value);
                        self.from_document.insert(*key, path.to_string());
                        format!("{}: from document {path}", key.env())
                    }
                };
                self.origins.push(line);
            }
        }
        let (ci, setup) = (get("ci.region"), get("setup.region"));
        let registries_name_the_region = self.values.get(&Key::Registry).is_some_and(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .all(|h| Registry::parse(h).is_ok_and(|r| r.ecr.is_some()))
        });
        let explicit = self.values.contains_key(&Key::Region);
        if explicit {
            self.origins
                .push("PLUGIN_REGION: from the setting (document ci.region, setup.region not used)".into());
        } else if registries_name_the_region {
            self.origins
                .push("PLUGIN_REGION: from the PLUGIN_REGISTRY hosts (document regions not used)".into());
        } else if ci != setup {
            self.problems.push(format!(
                "PLUGIN_INTEGRATION_DOCUMENT: ci.region ({}) and setup.region ({}) disagree, and the step pushes to \
                 one region: make them agree, or choose one with PLUGIN_REGION",
                ci.unwrap_or_default(),
                setup.unwrap_or_default()
            ));
        } else if let Some(region) = setup {
            self.values.insert(Key::Region, region);
            self.from_document.insert(Key::Region, "ci.region, setup.region".into());
            self.origins
                .push("PLUGIN_REGION: from document ci.region, setup.region".into());
        }
    }

    /// The table's rules: a setting given in a mode it does not apply to is refused (and not parsed), a
    /// required one missing is named, and one given without any of the settings it needs is refused.
    fn rules(&mut self, mode: Mode) {
        let given: Vec<Key> = self.values.keys().copied().collect();
        for key in &given {
            if !key.setting().applies_in(mode) {
                self.values.remove(key);
                self.problems.push(format!(
                    "{} does not apply with PLUGIN_MODE={mode}: remove it",
                    key.env()
                ));
            }
        }
        for s in SETTINGS {
            if s.required_in.contains(&mode) && !self.values.contains_key(&s.key) {
                self.problems.push(format!("{} is required: {}", s.env(), s.help));
            }
        }
        for key in self.values.keys() {
            let s = key.setting();
            if s.needs.is_empty() || s.needs.iter().any(|n| self.values.contains_key(n)) {
                continue;
            }
            let needed: Vec<String> = s
                .needs
                .iter()
                .map(|n| format!("{}{}", n.env(), s.needs_value))
                .collect();
            self.problems.push(match needed.as_slice() {
                [one] => format!("{} is set without {one}: set it, or remove {}", s.env(), s.env()),
                many => format!(
                    "{} is set without any of {}: set one, or remove {}",
                    s.env(),
                    many.join(", "),
                    s.env()
                ),
            });
        }
    }

    fn push(&mut self) -> Option<PushSettings> {
        let source = self.parse(Key::Source, |v| {
            let source = Source::parse(v);
            match &source {
                Source::Engine(image) => grammar::local_image(image).map_err(|allowed| {
                    format!("{allowed}, or oci:PATH[:REF], oci-archive:PATH[:REF], docker-archive:PATH[:REF]")
                })?,
                Source::Oci { path, .. } => {
                    if !path.join("index.json").is_file() {
                        return Err(format!(
                            "an OCI image layout directory: {} has no index.json",
                            path.display()
                        ));
                    }
                }
                Source::OciArchive { path, .. } | Source::DockerArchive { path, .. } => {
                    crate::files::open_regular(path).map_err(|e| format!("an archive file ({e})"))?;
                }
            }
            Ok(source)
        });
        let via = self
            .parse(Key::PushVia, |v| match v.to_ascii_lowercase().as_str() {
                "auto" => Ok(PushVia::Auto),
                "engine" => Ok(PushVia::Engine),
                "registry" => Ok(PushVia::Registry),
                _ => Err("auto, engine or registry".to_string()),
            })
            .unwrap_or(PushVia::Auto);
        // Archives are unpacked, and an engine image exported, into the scratch space: checked now, before
        // any network call.
        let scratch = match &source {
            Some(Source::Oci { .. }) | None => false,
            Some(Source::Engine(_)) => via != PushVia::Engine,
            Some(Source::OciArchive { .. } | Source::DockerArchive { .. }) => true,
        };
        if scratch && let Err(e) = crate::files::scratch::check() {
            self.problems.push(e);
        }
        let target = self.target();
        let repository = self.repository();
        let scan = self.scan();
        let skip_existing = self.parse(Key::SkipExisting, grammar::boolean).unwrap_or(false);
        let dry_run = self.parse(Key::DryRun, grammar::boolean).unwrap_or(false);
        Some(PushSettings {
            source: source?,
            via,
            target: target?,
            repository,
            scan,
            skip_existing,
            dry_run,
        })
    }

    fn promote(&mut self) -> Option<PromoteSettings> {
        let source = self.parse(Key::Source, ImageRef::parse);
        let role_arn = self.parse(Key::ReadRoleArn, |v| grammar::role_arn(v).map(|_| v.to_string()));
        let external_id = self.parse(Key::ReadExternalId, |v| grammar::external_id(v).map(|_| Secret::new(v)));
        let read_region = self.parse(Key::ReadRegion, |v| grammar::region(v).map(|_| v.to_string()));
        let via = self.parse(Key::PromoteVia, |v| match v.to_ascii_lowercase().as_str() {
            "registry" => Ok(Via::Registry),
            "engine" => Ok(Via::Engine),
            _ => Err("registry or engine".to_string()),
        });
        let referrers = self
            .parse(Key::Referrers, ReferrerFilter::parse)
            .unwrap_or(ReferrerFilter::All);
        let target = self.target();
        let repository = self.repository();
        let scan = self.scan();
        // Promote always leaves a tag that already holds the source's digest alone.
        let _ = self.parse(Key::SkipExisting, grammar::boolean);
        let dry_run = self.parse(Key::DryRun, grammar::boolean).unwrap_or(false);
        Some(PromoteSettings {
            source: source?,
            read_role: role_arn.map(|role_arn| Hop { role_arn, external_id }),
            read_region,
            via: via.unwrap_or(Via::Registry),
            referrers,
            target: target?,
            repository,
            scan,
            dry_run,
        })
    }

    fn login(&mut self) -> Option<LoginSettings> {
        if let Some(problem) = crate::outputs::docker_config::dies_with_the_container(&self.ambient) {
            return self.problem(problem);
        }
        match crate::outputs::docker_config::path(&self.ambient) {
            Ok(docker_config) => Some(LoginSettings { docker_config }),
            Err(e) => self.problem(format!("{e:#}")),
        }
    }

    fn check(&mut self) -> Option<CheckSettings> {
        let repo = self.parse(Key::Repo, |v| grammar::repository(v).map(|_| v.to_string()));
        let create_repository = self.parse(Key::CreateRepository, grammar::boolean).unwrap_or(false);
        Some(CheckSettings {
            repo: repo?,
            create_repository,
        })
    }

    /// The scan gate (push and promote): its other settings need the threshold (the table says so).
    fn scan(&mut self) -> Option<ScanGate> {
        let threshold = self.parse(Key::ScanSeverityThreshold, Severity::threshold);
        let ignore = self
            .list(Key::ScanIgnore, |v| {
                let ok = v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
                if ok {
                    Ok(())
                } else {
                    Err("vulnerability ids such as CVE-2024-12345 or GHSA-xxxx-xxxx-xxxx".into())
                }
            })
            .unwrap_or_default();
        let timeout = self
            .parse(Key::ScanTimeout, grammar::duration)
            .unwrap_or(Duration::from_secs(600));
        let allow_unsupported = self.parse(Key::ScanAllowUnsupported, grammar::boolean).unwrap_or(false);
        Some(ScanGate {
            threshold: threshold?,
            ignore,
            timeout,
            allow_unsupported,
        })
    }

    /// The repository and its tags (push and promote).
    fn target(&mut self) -> Option<Target> {
        let repo = self.parse(Key::Repo, |v| grammar::repository(v).map(|_| v.to_string()));
        let tags = self
            .list(Key::Tags, grammar::tag)
            .unwrap_or_else(|| vec!["latest".to_string()]);
        if tags.len() > 1000 {
            return self.problem(format!(
                "PLUGIN_TAGS: {} tags given; ECR allows at most 1000 per image",
                tags.len()
            ));
        }
        Some(Target {
            repo: repo?,
            tags: dedup(tags),
        })
    }

    /// The destinations and the run's region. An ECR host brings its own region, and a `PLUGIN_REGION`
    /// that contradicts it is an error; other hosts take `PLUGIN_REGION`, else the container's
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`. The run's region is `PLUGIN_REGION`, else the first ECR host's.
    fn destinations(
        &mut self,
        registries: Vec<Registry>,
        region: Option<String>,
    ) -> Option<(String, Vec<TargetRegistry>)> {
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
            vec![TargetRegistry {
                registry: None,
                region: run_region.clone(),
            }]
        } else {
            registries
                .into_iter()
                .map(|r| {
                    let region = r.ecr.as_ref().map_or_else(|| run_region.clone(), |e| e.region.clone());
                    TargetRegistry {
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

    /// The integration entry named by `PLUGIN_INTEGRATION` in `PLUGIN_INTEGRATIONS_FILE`.
    fn integration(&mut self) -> Option<integrations::Integration> {
        // Each needs the other (the table); with only one, the rules already said so.
        let file = self.values.remove(&Key::IntegrationsFile);
        let name = self.values.remove(&Key::Integration);
        let (file, name) = (file?, name?);
        match integrations::find(Path::new(&file), &name) {
            Ok(i) => match grammar::region(&i.region) {
                Ok(()) => Some(i),
                Err(allowed) => self.problem(format!(
                    "PLUGIN_INTEGRATIONS_FILE: the region of {name} is not allowed: expected {allowed}"
                )),
            },
            Err(e) => self.problem(format!("PLUGIN_INTEGRATIONS_FILE: {e}")),
        }
    }

    /// The branch filter (explicit settings win over the integration's) and its verdict for this build.
    fn branch(&mut self, integration: Option<&integrations::Integration>) -> Option<Verdict> {
        let explicit = self.values.remove(&Key::Branch);
        let mut compile = |key: Key, from_integration: Option<&Vec<String>>| -> Option<(Patterns, String)> {
            if let Some(items) = self.list(key, |_| Ok(())) {
                return match Patterns::parse(&items) {
                    Ok(p) => Some((p, key.env())),
                    Err(allowed) => self.problem(format!("{}: not allowed: expected {allowed}", key.env())),
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
        let only = compile(Key::BranchesOnly, integration.map(|i| &i.only));
        let except = compile(Key::BranchesExcept, integration.map(|i| &i.except));
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
    fn repository(&mut self) -> RepositorySettings {
        let create = self.parse(Key::CreateRepository, grammar::boolean).unwrap_or(false);
        let mutability = self.parse(Key::TagMutability, Mutability::parse);
        let exclusions = self.list(Key::TagMutabilityExclusions, grammar::exclusion_filter);
        let tag_mutability = match (mutability, exclusions) {
            (Some(m), Some(filters)) if m.with_exclusions() => {
                if filters.len() > 5 {
                    self.problem(format!(
                        "PLUGIN_TAG_MUTABILITY_EXCLUSIONS: {} filters given; ECR takes at most 5",
                        filters.len()
                    ))
                } else {
                    Some(TagRule {
                        mutability: m,
                        exclusions: dedup(filters),
                    })
                }
            }
            (Some(m), None) if m.with_exclusions() => self.problem(format!(
                "PLUGIN_TAG_MUTABILITY={} needs PLUGIN_TAG_MUTABILITY_EXCLUSIONS: the tags to exclude (e.g. latest,sha256-*)",
                m.api_str()
            )),
            (Some(m), Some(_)) => self.problem(format!(
                "PLUGIN_TAG_MUTABILITY_EXCLUSIONS is set but PLUGIN_TAG_MUTABILITY={} has no exclusions: use \
                 IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, or remove the filters",
                m.api_str()
            )),
            (Some(m), None) => Some(TagRule::plain(m)),
            (None, _) => None,
        };
        let scan_on_push = self.parse(Key::ScanOnPush, grammar::boolean);
        let kind = self.parse(Key::Encryption, |v| match v.to_ascii_uppercase().as_str() {
            "AES256" => Ok(false),
            "KMS" => Ok(true),
            _ => Err("AES256 or KMS".to_string()),
        });
        let kms_key = self.parse(Key::KmsKey, |v| grammar::kms_key(v).map(|_| v.to_string()));
        let encryption = match (kind, kms_key) {
            (Some(true), key) => Some(Encryption::Kms(key)),
            (Some(false), None) => Some(Encryption::Aes256),
            (None, None) => None,
            // Without PLUGIN_ENCRYPTION at all the table's rule already said so.
            (None, Some(_)) => None,
            (Some(false), Some(_)) => {
                self.problem("PLUGIN_KMS_KEY is set without PLUGIN_ENCRYPTION=KMS: set both, or remove the key")
            }
        };
        let tags = self
            .parse(Key::RepositoryTags, grammar::resource_tags)
            .unwrap_or_default();
        let lifecycle_policy = self.parse(Key::LifecyclePolicy, |v| policy(v, 30_720));
        let repository_policy = self.parse(Key::RepositoryPolicy, |v| policy(v, 10_240));
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
    fn credentials(&mut self) -> Option<CredentialPlan> {
        let arn = |v: &str| grammar::role_arn(v).map(|_| v.to_string());
        let external_id = |v: &str| grammar::external_id(v).map(|_| Secret::new(v));
        let settings = CredentialSettings {
            trigger: RoleSettings {
                role_arn: self.parse(Key::TriggerRoleArn, arn),
                external_id: self.parse(Key::TriggerExternalId, external_id),
                web_identity_token_file: self.parse(Key::TriggerWebIdentityTokenFile, token_file),
                web_identity_token_variable: self.token_variable(Key::TriggerWebIdentityTokenEnv),
            },
            pipeline: RoleSettings {
                role_arn: self.parse(Key::PipelineRoleArn, arn),
                external_id: self.parse(Key::PipelineExternalId, external_id),
                web_identity_token_file: self.parse(Key::PipelineWebIdentityTokenFile, token_file),
                web_identity_token_variable: self.token_variable(Key::PipelineWebIdentityTokenEnv),
            },
            access_key: self.parse(Key::AccessKey, |v| {
                if grammar::looks_like_secret(v) {
                    return Err(
                        "an access key id (AKIA…); this value looks like a secret access key: are \
                                PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?"
                            .into(),
                    );
                }
                grammar::access_key(v).map(|_| v.to_string())
            }),
            secret_key: self.parse(Key::SecretKey, |v| {
                if grammar::access_key(v).is_ok() {
                    return Err("a secret access key; this value looks like an access key id: are \
                                PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?"
                        .into());
                }
                grammar::secret_key(v).map(|_| Secret::new(v))
            }),
            role_arn: self.parse(Key::RoleArn, arn),
            external_id: self.parse(Key::ExternalId, external_id),
            intermediate_role: self.parse(Key::IntermediateRole, arn),
            intermediate_external_id: self.parse(Key::IntermediateExternalId, external_id),
            use_service_account: self.parse(Key::UseServiceAccount, grammar::boolean).unwrap_or(false),
            session_name: self.parse(Key::SessionName, |v| grammar::session_name(v).map(|_| v.to_string())),
            duration_seconds: self.parse(Key::DurationSeconds, grammar::duration_seconds),
        };
        // A web identity token file from the container (IRSA projects one) is read by the SDK: bounded here.
        if let Some(file) = self
            .ambient
            .get("AWS_WEB_IDENTITY_TOKEN_FILE")
            .filter(|f| !f.trim().is_empty())
            && let Err(e) = crate::files::check_bounded(Path::new(file), grammar::TOKEN_FILE_LIMIT)
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

    /// A web identity token handed in an environment variable: `key` names the variable, which must be set
    /// (the token is never shown).
    fn token_variable(&mut self, key: Key) -> Option<(String, Secret)> {
        let name = self.parse(key, |v| {
            let ok = v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !v.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Ok(v.to_string())
            } else {
                Err("the name of an environment variable".to_string())
            }
        })?;
        let token = self
            .ambient
            .get(&name)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if token.is_empty() {
            return self.problem(format!(
                "{}={name} names a variable that is not set (or is empty) in the step's environment: pass the \
                 token in it (GitLab: id_tokens), or name the variable that holds it",
                key.env()
            ));
        }
        if token.len() as u64 > grammar::TOKEN_FILE_LIMIT {
            return self.problem(format!(
                "{}={name}: the token is longer than {} bytes",
                key.env(),
                grammar::TOKEN_FILE_LIMIT
            ));
        }
        Some((name, Secret::new(&token)))
    }

    fn problem<T>(&mut self, message: impl Into<String>) -> Option<T> {
        self.problems.push(message.into());
        None
    }

    /// The value of `key`, parsed; `None` when unset or refused (the problem is recorded, naming the
    /// setting and what is allowed; a secret's value is never shown).
    fn parse<T>(&mut self, key: Key, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let value = self.values.remove(&key)?;
        let from_document = self.from_document.get(&key).cloned();
        match parse(&value) {
            Ok(v) => Some(v),
            Err(allowed) if from_document.is_some() => self.problem(format!(
                "PLUGIN_INTEGRATION_DOCUMENT: {} (for {}) is not allowed: expected {allowed}",
                from_document.unwrap_or_default(),
                key.env()
            )),
            Err(allowed) if key.setting().secret => {
                self.problem(format!("{}: the value is not allowed: expected {allowed}", key.env()))
            }
            Err(allowed) => self.problem(format!(
                "{}=`{}` is not allowed: expected {allowed}",
                key.env(),
                printable(&value)
            )),
        }
    }

    /// A comma list: items trimmed, empty items dropped, each checked.
    fn list(&mut self, key: Key, check: impl Fn(&str) -> Result<(), String>) -> Option<Vec<String>> {
        let value = self.values.remove(&key)?;
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if items.is_empty() {
            return self.problem(format!(
                "{}=`{}` has no items: give a comma-separated list",
                key.env(),
                printable(&value)
            ));
        }
        let bad: Vec<&String> = items.iter().filter(|item| check(item).is_err()).collect();
        if let Some(first) = bad.first() {
            let allowed = check(first).unwrap_err();
            let names: Vec<String> = bad.iter().map(|b| format!("`{}`", printable(b))).collect();
            return self.problem(format!(
                "{}: {} not allowed: expected {allowed}",
                key.env(),
                names.join(", ")
            ));
        }
        Some(items)
    }

    /// A comma list of values each parsed by `parse`.
    fn list_of<T>(&mut self, key: Key, parse: impl Fn(&str) -> Result<T, String>) -> Option<Vec<T>> {
        let items = self.list(key, |v| parse(v).map(|_| ()))?;
        Some(items.iter().filter_map(|i| parse(i).ok()).collect())
    }
}

/// A policy setting: JSON text, or the path of a regular file of at most `max_len` bytes holding it.
fn policy(value: &str, max_len: usize) -> Result<String, String> {
    if grammar::is_inline_json(value) {
        return grammar::json_policy(value, max_len);
    }
    let text = crate::files::read_bounded(Path::new(value), max_len)
        .map_err(|e| format!("JSON text, or a path to a readable JSON file ({e})"))?;
    grammar::json_policy(&text, max_len)
}

/// A web identity token file: a regular file of at most [`grammar::TOKEN_FILE_LIMIT`] bytes, read later by
/// the SDK.
fn token_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    crate::files::check_bounded(&path, grammar::TOKEN_FILE_LIMIT)
        .map_err(|e| format!("a readable token file ({e})"))?;
    Ok(path)
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn push(s: &Settings) -> &PushSettings {
        match &s.mode {
            ModeSettings::Push(p) => p,
            other => panic!("not push: {other:?}"),
        }
    }

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
        assert_eq!(push(&s).source, Source::Engine("app:1".into()));
        assert_eq!(push(&s).target.repo, "team/app");
        assert_eq!(push(&s).target.tags, vec!["latest"]);
        assert_eq!(
            s.common.destinations,
            vec![TargetRegistry {
                registry: None,
                region: "eu-west-2".into()
            }]
        );
        assert_eq!(s.common.region, "eu-west-2");
        assert_eq!(s.common.credentials.level, credentials::Level::Runtime);
        assert!(!push(&s).dry_run);
        assert_eq!(s.common.timeout, Duration::from_secs(300));
    }

    #[test]
    fn lists_are_trimmed_deduplicated_and_empty_items_dropped() {
        let s = parse(&with(&[("PLUGIN_TAGS", " v1 ,, latest,v1 , ")])).unwrap();
        assert_eq!(push(&s).target.tags, vec!["v1", "latest"]);
        let e = parse(&with(&[("PLUGIN_TAGS", " , ,")])).unwrap_err();
        assert!(e.contains("PLUGIN_TAGS") && e.contains("no items"), "{e}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = parse(&with(&[("PLUGIN_TAGS", ""), ("PLUGIN_DRY_RUN", " ")])).unwrap();
        assert_eq!(push(&s).target.tags, vec!["latest"]);
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
        assert_eq!(s.common.region, "eu-west-2");
        assert_eq!(
            s.common.destinations[0].registry.clone().unwrap().ecr.unwrap().account,
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
        assert_eq!(s.common.region, "ap-south-1");
        let s = parse(&[
            base[0],
            base[1],
            ("AWS_DEFAULT_REGION", "ap-south-1"),
            ("AWS_REGION", "sa-east-1"),
        ])
        .unwrap();
        assert_eq!(s.common.region, "sa-east-1");
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
        assert_eq!(s.common.credentials.level, credentials::Level::Account);
        assert!(!format!("{s:?}").contains(SECRET));
        let s = parse(&with(&[
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("CI_JOB_JWT", "eyJhbGciOi.token"),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains(SECRET) && !debug.contains("eyJhbGciOi") && debug.contains("CI_JOB_JWT"),
            "{debug}"
        );
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
        assert!(!push(&s).repository.any());
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
        let r = push(&s).repository.clone();
        assert!(r.create);
        assert_eq!(r.tag_mutability, Some(TagRule::plain(Mutability::Immutable)));
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
            (
                "PLUGIN_TAG_MUTABILITY",
                "sometimes",
                "MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION",
            ),
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
        let regions: Vec<&str> = s.common.destinations.iter().map(|d| d.region.as_str()).collect();
        assert_eq!(regions, vec!["eu-west-1", "us-east-2"]);
        assert_eq!(s.common.region, "eu-west-1");
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
        assert_eq!(s.common.destinations.len(), 2);
        assert!(s.common.destinations.iter().all(|d| d.region == "us-west-2"));
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
        let ModeSettings::Promote(p) = s.mode else {
            panic!("not promote")
        };
        assert_eq!(p.source.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(p.via, Via::Engine);
        assert_eq!(p.read_role.unwrap().role_arn, "arn:aws:iam::111111111111:role/reader");
        let e = parse(&with(&[("PLUGIN_READ_REGION", "us-east-1")])).unwrap_err();
        assert!(
            e.contains("PLUGIN_READ_REGION does not apply with PLUGIN_MODE=push"),
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
