//! Settings: reads the `PLUGIN_*` environment, and the files settings name, into one typed settings value
//! per mode, before anything touches the network.
//!
//! Three steps, each in one place: [`read`] takes the environment apart (unknown names with the closest
//! known one, non-UTF-8, the same setting twice); `Parser::rules` applies the table (`table.rs`): a
//! setting that does not apply in the mode, a required one missing, one set without the setting it needs;
//! then each value is parsed by its `Key` with the grammar of `domain::grammar`, and cross-setting rules
//! (region against registry host, credential contradictions) are checked. Every problem is reported at
//! once; a secret value is never echoed.

mod aws_credentials;
mod branches;
mod destinations;
pub mod document;
pub mod frontends;
pub mod integrations;
mod modes;
mod repository;
pub mod table;

pub use modes::{CheckSettings, LoginSettings, PromoteSettings, PromoteVia, PushSettings, PushVia};
pub use table::{Key, Mode, SETTINGS, Setting, help};

use crate::domain::branch::Verdict;
use crate::domain::credentials::CredentialPlan;
use crate::domain::grammar::{self, printable};
use crate::domain::registry::Registry;
use crate::domain::target::TargetRegistry;
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
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

/// Every problem found in the settings, reported together.
#[derive(Debug)]
pub struct SettingsError(pub Vec<String>);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid settings (nothing was written):")?;
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
        let front_end = crate::domain::ci::FrontEnd::of(&parser.ambient);
        parser.settings().map_err(|problems| {
            // Each problem names the setting as the user wrote it (an Action's input, a plugin's setting).
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
            let problems = problems.iter().map(|p| front_end.words(p, &known)).collect();
            SettingsError(problems).into()
        })
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
        let mode = self.parse_or_default(Key::Mode, Mode::parse);
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
        let timeout = self.parse_or_default(Key::Timeout, grammar::duration);
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

    /// The value of `key`, parsed, else the table's default parsed the same way: each default is written
    /// once, in the table, which `--help`, the README and the front ends show.
    fn parse_or_default<T>(&mut self, key: Key, parse: impl Fn(&str) -> Result<T, String>) -> T {
        match self.parse(key, &parse) {
            Some(value) => value,
            None => parse(key.setting().default)
                .unwrap_or_else(|e| panic!("the table's default of {} does not parse: {e}", key.env())),
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

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::repository::{Encryption, Mutability, TagRule};
    use crate::domain::source::Source;

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
    fn zstd_is_chosen_by_name_and_refused_with_soci_or_through_the_engine() {
        use crate::domain::source::{Algorithm, Compressing};
        let compression = |extra: &[(&'static str, &'static str)]| push(&parse(&with(extra)).unwrap()).compression;
        assert_eq!(compression(&[]).algorithm, Algorithm::Gzip);
        let zstd = compression(&[("PLUGIN_COMPRESSION", " ZSTD ")]);
        assert_eq!(zstd.algorithm, Algorithm::Zstd);
        assert_eq!(zstd.level_for(1 << 30), Compressing::ZSTD_AUTO);
        assert_eq!(compression(&[("PLUGIN_COMPRESSION", "gzip")]).level_for(1 << 30), 1);
        let zstd_9 = compression(&[("PLUGIN_COMPRESSION", "zstd"), ("PLUGIN_COMPRESSION_LEVEL", "9")]);
        assert_eq!(zstd_9.level_for(1), 9);
        let refused = |extra: &[(&'static str, &'static str)]| parse(&with(extra)).unwrap_err();
        let e = refused(&[("PLUGIN_COMPRESSION", "lz4")]);
        assert!(e.contains("PLUGIN_COMPRESSION") && e.contains("gzip or zstd"), "{e}");
        let e = refused(&[("PLUGIN_COMPRESSION", "zstd"), ("PLUGIN_SOCI", "true")]);
        assert!(e.contains("PLUGIN_SOCI=true needs gzip layers"), "{e}");
        let e = refused(&[("PLUGIN_COMPRESSION", "zstd"), ("PLUGIN_PUSH_VIA", "engine")]);
        assert!(e.contains("docker push sends gzip"), "{e}");
        // A layout's blobs are sent as they are: the setting does not conflict with the engine there.
        let layout = tempfile::tempdir().unwrap();
        std::fs::write(layout.path().join("index.json"), "{}").unwrap();
        let source = format!("oci:{}", layout.path().display());
        let vars = [
            ("PLUGIN_SOURCE", source.as_str()),
            ("PLUGIN_REPO", "team/app"),
            ("PLUGIN_REGION", "eu-west-2"),
            ("PLUGIN_COMPRESSION", "zstd"),
            ("PLUGIN_PUSH_VIA", "engine"),
        ];
        assert!(parse(&vars).is_ok());
    }

    #[test]
    fn the_state_directory_is_the_one_given_off_or_under_xdg_state_home_else_home() {
        let state = |extra: &[(&'static str, &'static str)]| push(&parse(&with(extra)).unwrap()).state_dir.clone();
        let dir = |p: &str| Some(std::path::PathBuf::from(p));
        assert_eq!(state(&[]), None, "no XDG_STATE_HOME, no HOME: nowhere");
        assert_eq!(state(&[("HOME", "/home/ci")]), dir("/home/ci/.local/state/ecr-step"));
        assert_eq!(
            state(&[("HOME", "/home/ci"), ("XDG_STATE_HOME", "/var/state")]),
            dir("/var/state/ecr-step")
        );
        // A relative XDG_STATE_HOME is ignored, as the XDG spec says.
        assert_eq!(
            state(&[("HOME", "/home/ci"), ("XDG_STATE_HOME", "state")]),
            dir("/home/ci/.local/state/ecr-step")
        );
        assert_eq!(
            state(&[("HOME", "/home/ci"), ("PLUGIN_STATE_DIR", "/cache/ecr")]),
            dir("/cache/ecr")
        );
        assert_eq!(state(&[("HOME", "/home/ci"), ("PLUGIN_STATE_DIR", "OFF")]), None);
        let file = tempfile::NamedTempFile::new().unwrap();
        let path: &'static str = Box::leak(file.path().display().to_string().into_boxed_str());
        let e = parse(&with(&[("PLUGIN_STATE_DIR", path)])).unwrap_err();
        assert!(e.contains("PLUGIN_STATE_DIR") && e.contains("is not one"), "{e}");
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
        assert_eq!(s.common.credentials.level, crate::domain::credentials::Level::Runtime);
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
        assert_eq!(s.common.credentials.level, crate::domain::credentials::Level::Account);
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
        assert_eq!(p.via, PromoteVia::Engine);
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
}
