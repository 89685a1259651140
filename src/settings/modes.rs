//! Each mode's own settings, and their parsing: push (its source, checked before any call, and how an
//! engine image moves), promote (the source reference, the read role, referrers), login, check; and what
//! push and promote share (the repository and its tags, the scan gate).

use super::{Key, Parser, dedup};
use crate::domain::credentials::Hop;
use crate::domain::grammar;
use crate::domain::reference::ImageRef;
use crate::domain::referrers::ReferrerFilter;
use crate::domain::repository::RepositorySettings;
use crate::domain::scan::{ScanGate, Severity};
use crate::domain::secret::Secret;
use crate::domain::source::{Algorithm, Compressing, Compression, Source};
use crate::domain::target::Target;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Where the image is: the engine, an OCI layout, an archive.
    pub source: Source,
    /// How an engine image is pushed.
    pub via: PushVia,
    /// How the step writes the layers it compresses: the gzip level, and a zTOC for a SOCI index.
    pub compression: Compressing,
    /// Where the record of the engine's pushes is kept between runs (`PLUGIN_STATE_DIR`); `None`: nowhere.
    pub state_dir: Option<PathBuf>,
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
pub enum PromoteVia {
    Registry,
    Engine,
}

#[derive(Debug, Clone)]
pub struct PromoteSettings {
    pub source: ImageRef,
    /// A role that reads the source registry, assumed from the run's identity.
    pub read_role: Option<Hop>,
    pub read_region: Option<String>,
    pub via: PromoteVia,
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

impl Parser {
    pub(super) fn push(&mut self) -> Option<PushSettings> {
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
        let via = self.parse_or_default(Key::PushVia, |v| match v.to_ascii_lowercase().as_str() {
            "auto" => Ok(PushVia::Auto),
            "engine" => Ok(PushVia::Engine),
            "registry" => Ok(PushVia::Registry),
            _ => Err("auto, engine or registry".to_string()),
        });
        let algorithm = self.parse_or_default(Key::Compression, Algorithm::parse);
        let level = self.parse_or_default(Key::CompressionLevel, Compression::parse);
        let soci = self.parse_or_default(Key::Soci, grammar::boolean);
        if algorithm == Algorithm::Zstd && soci {
            self.problems.push(
                "PLUGIN_SOCI=true needs gzip layers (a zTOC indexes a gzip stream): remove PLUGIN_COMPRESSION=zstd or \
                 PLUGIN_SOCI"
                    .to_string(),
            );
        }
        if algorithm == Algorithm::Zstd && via == PushVia::Engine && matches!(source, Some(Source::Engine(_))) {
            self.problems.push(
                "PLUGIN_COMPRESSION=zstd is written by the step's own transfer, and docker push sends gzip: set \
                 PLUGIN_PUSH_VIA=registry (or auto), or remove PLUGIN_COMPRESSION"
                    .to_string(),
            );
        }
        if soci && via == PushVia::Engine && matches!(source, Some(Source::Engine(_))) {
            self.problems.push(
                "PLUGIN_SOCI=true builds the SOCI index as the step compresses the layers, which docker push does not \
                 let it do: set PLUGIN_PUSH_VIA=registry (or auto), or remove PLUGIN_SOCI"
                    .to_string(),
            );
        }
        let compression = Compressing { algorithm, level, soci };
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
        let state_dir = self.state_dir();
        let target = self.target();
        let repository = self.repository();
        let scan = self.scan();
        let skip_existing = self.parse_or_default(Key::SkipExisting, grammar::boolean);
        let dry_run = self.parse_or_default(Key::DryRun, grammar::boolean);
        Some(PushSettings {
            source: source?,
            via,
            compression,
            state_dir,
            target: target?,
            repository,
            scan,
            skip_existing,
            dry_run,
        })
    }

    /// `PLUGIN_STATE_DIR`: the path given (not a file or another non-directory), `off`, else under
    /// `XDG_STATE_HOME` (absolute) or `HOME`.
    fn state_dir(&mut self) -> Option<PathBuf> {
        let given = self.parse(Key::StateDir, |v| match v.trim() {
            off if off.eq_ignore_ascii_case("off") => Ok(None),
            path => match std::fs::metadata(path) {
                Ok(meta) if !meta.is_dir() => Err(format!("a directory ({path} exists and is not one), or off")),
                _ => Ok(Some(PathBuf::from(path))),
            },
        });
        if let Some(given) = given {
            return given;
        }
        let ambient = |k: &str| self.ambient.get(k).filter(|v| v.starts_with('/')).map(PathBuf::from);
        ambient("XDG_STATE_HOME")
            .or_else(|| ambient("HOME").map(|h| h.join(".local/state")))
            .map(|d| d.join("ecr-step"))
    }

    pub(super) fn promote(&mut self) -> Option<PromoteSettings> {
        let source = self.parse(Key::Source, ImageRef::parse);
        let role_arn = self.parse(Key::ReadRoleArn, |v| grammar::role_arn(v).map(|_| v.to_string()));
        let external_id = self.parse(Key::ReadExternalId, |v| grammar::external_id(v).map(|_| Secret::new(v)));
        let read_region = self.parse(Key::ReadRegion, |v| grammar::region(v).map(|_| v.to_string()));
        let via = self.parse_or_default(Key::PromoteVia, |v| match v.to_ascii_lowercase().as_str() {
            "registry" => Ok(PromoteVia::Registry),
            "engine" => Ok(PromoteVia::Engine),
            _ => Err("registry or engine".to_string()),
        });
        let referrers = self.parse_or_default(Key::Referrers, ReferrerFilter::parse);
        let target = self.target();
        let repository = self.repository();
        let scan = self.scan();
        // Promote always leaves a tag that already holds the source's digest alone.
        let _ = self.parse(Key::SkipExisting, grammar::boolean);
        let dry_run = self.parse_or_default(Key::DryRun, grammar::boolean);
        Some(PromoteSettings {
            source: source?,
            read_role: role_arn.map(|role_arn| Hop { role_arn, external_id }),
            read_region,
            via,
            referrers,
            target: target?,
            repository,
            scan,
            dry_run,
        })
    }

    pub(super) fn login(&mut self) -> Option<LoginSettings> {
        if let Some(problem) = crate::outputs::docker_config::dies_with_the_container(&self.ambient) {
            return self.problem(problem);
        }
        match crate::outputs::docker_config::path(&self.ambient) {
            Ok(docker_config) => Some(LoginSettings { docker_config }),
            Err(e) => self.problem(format!("{e:#}")),
        }
    }

    pub(super) fn check(&mut self) -> Option<CheckSettings> {
        let repo = self.parse(Key::Repo, |v| grammar::repository(v).map(|_| v.to_string()));
        let create_repository = self.parse_or_default(Key::CreateRepository, grammar::boolean);
        Some(CheckSettings {
            repo: repo?,
            create_repository,
        })
    }

    /// The scan gate (push and promote): its other settings need the threshold (the table says so).
    pub(super) fn scan(&mut self) -> Option<ScanGate> {
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
        let timeout = self.parse_or_default(Key::ScanTimeout, grammar::duration);
        let allow_unsupported = self.parse_or_default(Key::ScanAllowUnsupported, grammar::boolean);
        Some(ScanGate {
            threshold: threshold?,
            ignore,
            timeout,
            allow_unsupported,
        })
    }

    /// The repository and its tags (push and promote).
    pub(super) fn target(&mut self) -> Option<Target> {
        let repo = self.parse(Key::Repo, |v| grammar::repository(v).map(|_| v.to_string()));
        let tags = self
            .list(Key::Tags, grammar::tag)
            .unwrap_or_else(|| vec![Key::Tags.setting().default.to_string()]);
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
}
