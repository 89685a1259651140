//! Outputs for later steps: the image reference, digest, registry and tags, under the same names
//! everywhere: appended to `$CF_VOLUME_PATH/env_vars_to_export` (Codefresh) and `/meta/env_vars_to_export`
//! (inside a typed step), to `$GITHUB_OUTPUT`, and written as JSON to `PLUGIN_OUTPUT_FILE`.
//! Written only when the run succeeded. The docker config that login mode writes is in [`docker_config`].

pub mod docker_config;

use crate::domain::ci;
use crate::domain::login::RegistryLogin;
use crate::domain::scan::{ScanReport, Severity};
use crate::domain::tag::TagOutcome;
use crate::domain::target::Target;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every output later steps read, with what it means: the one list `step.yaml`, the GitHub Action and the
/// README are generated from or checked against.
pub const OUTPUTS: &[(&str, &str)] = &[
    (IMAGE, "The first destination's reference with the first tag."),
    (DIGEST, "The digest of the image written (what the tags point at)."),
    (
        IMAGE_DIGEST,
        "The image manifest's digest: ECR_STEP_DIGEST, unless the tags hold an index the step made of the image (PLUGIN_SOCI).",
    ),
    (
        REGISTRY,
        "The first destination's registry host (login: every host, comma separated).",
    ),
    (REGISTRIES, "Every destination's registry host, comma separated."),
    (TAGS, "The tags, comma separated."),
    (
        IMAGES,
        "Every reference written (planned, in a dry run), comma separated.",
    ),
    (DRY_RUN, "true when the run was a dry run: nothing was written."),
    (
        SKIPPED,
        "true when the branch filter skipped the run: nothing was written.",
    ),
    (
        SCAN_CRITICAL,
        "The scan's CRITICAL findings (with PLUGIN_SCAN_SEVERITY_THRESHOLD; the most of any destination).",
    ),
    (SCAN_HIGH, "The scan's HIGH findings."),
    (SCAN_MEDIUM, "The scan's MEDIUM findings."),
    (SCAN_LOW, "The scan's LOW findings."),
    (SCAN_INFORMATIONAL, "The scan's INFORMATIONAL findings."),
    (SCAN_UNDEFINED, "The scan's findings of no or unknown severity."),
];

pub const SCAN_CRITICAL: &str = "ECR_STEP_SCAN_CRITICAL";
pub const SCAN_HIGH: &str = "ECR_STEP_SCAN_HIGH";
pub const SCAN_MEDIUM: &str = "ECR_STEP_SCAN_MEDIUM";
pub const SCAN_LOW: &str = "ECR_STEP_SCAN_LOW";
pub const SCAN_INFORMATIONAL: &str = "ECR_STEP_SCAN_INFORMATIONAL";
pub const SCAN_UNDEFINED: &str = "ECR_STEP_SCAN_UNDEFINED";

/// The output name of a severity's count.
fn scan_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => SCAN_CRITICAL,
        Severity::High => SCAN_HIGH,
        Severity::Medium => SCAN_MEDIUM,
        Severity::Low => SCAN_LOW,
        Severity::Informational => SCAN_INFORMATIONAL,
        Severity::Undefined => SCAN_UNDEFINED,
    }
}

pub const IMAGE: &str = "ECR_STEP_IMAGE";
pub const DIGEST: &str = "ECR_STEP_DIGEST";
pub const IMAGE_DIGEST: &str = "ECR_STEP_IMAGE_DIGEST";
pub const REGISTRY: &str = "ECR_STEP_REGISTRY";
pub const REGISTRIES: &str = "ECR_STEP_REGISTRIES";
pub const TAGS: &str = "ECR_STEP_TAGS";
pub const IMAGES: &str = "ECR_STEP_IMAGES";
pub const DRY_RUN: &str = "ECR_STEP_DRY_RUN";
pub const SKIPPED: &str = "ECR_STEP_SKIPPED";

/// What a run exports. Empty values are left out of the env files; the JSON has every field.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `<registry>/<repo>:<first tag>` of the first destination.
    pub image: String,
    pub digest: String,
    /// The image manifest's digest (the same as `digest` unless the tags hold an index made of it).
    pub image_digest: String,
    /// Every destination's registry host, the first one first.
    pub registries: Vec<String>,
    /// Login mode: `ECR_STEP_REGISTRY` lists every host (as it always has), not the first.
    pub login: bool,
    pub tags: Vec<String>,
    /// Every reference written (or planned, in a dry run), in every destination.
    pub images: Vec<String>,
    pub dry_run: bool,
    pub skipped: bool,
    /// The scan's counts by severity (the most of any destination), when a scan gate ran.
    pub scan: Option<BTreeMap<Severity, u64>>,
}

impl Outputs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let first = self.registries.first().cloned().unwrap_or_default();
        let flag = |b: bool| if b { "true".to_string() } else { String::new() };
        [
            (IMAGE, self.image.clone()),
            (DIGEST, self.digest.clone()),
            (IMAGE_DIGEST, self.image_digest.clone()),
            (REGISTRY, if self.login { self.registries.join(",") } else { first }),
            (REGISTRIES, self.registries.join(",")),
            (TAGS, self.tags.join(",")),
            (IMAGES, self.images.join(",")),
            (DRY_RUN, flag(self.dry_run)),
            (SKIPPED, flag(self.skipped)),
        ]
        .into_iter()
        .chain(self.scan.iter().flat_map(|counts| {
            Severity::ALL
                .iter()
                .map(|s| (scan_name(*s), counts.get(s).copied().unwrap_or(0).to_string()))
        }))
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// Lists as arrays, flags as booleans.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": self.image,
            "digest": self.digest,
            "image_digest": self.image_digest,
            "registry": self.registries.first().cloned().unwrap_or_default(),
            "registries": self.registries,
            "tags": self.tags,
            "images": self.images,
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "scan": self.scan.as_ref().map(|counts| {
                Severity::ALL
                    .iter()
                    .map(|s| (s.name().to_string(), serde_json::json!(counts.get(s).copied().unwrap_or(0))))
                    .collect::<serde_json::Map<_, _>>()
            }),
        })
    }
}

/// The outputs of a push or promote run whose tags all landed; `image`, the image manifest's digest when
/// the tags hold an index the step made of it.
pub fn of(target: &Target, logins: &[RegistryLogin], outcomes: &[TagOutcome], image: Option<String>) -> Outputs {
    let digest = outcomes
        .iter()
        .find_map(|o| o.result.as_ref().ok())
        .map(|l| l.digest.clone())
        .unwrap_or_default();
    Outputs {
        image_digest: image.unwrap_or_else(|| digest.clone()),
        digest,
        images: outcomes.iter().map(|o| o.reference.clone()).collect(),
        ..planned(target, logins)
    }
}

/// The counts of every scan: per severity, the most of any destination.
pub fn scan_counts(reports: &[ScanReport]) -> BTreeMap<Severity, u64> {
    let mut most = BTreeMap::new();
    for report in reports {
        for (s, n) in &report.counts {
            let entry = most.entry(*s).or_insert(0);
            *entry = (*entry).max(*n);
        }
    }
    most
}

/// What a dry run would have written: every reference, no digest.
pub fn planned(target: &Target, logins: &[RegistryLogin]) -> Outputs {
    let registries: Vec<String> = logins.iter().map(|l| l.registry.host.clone()).collect();
    let first = registries.first().cloned().unwrap_or_default();
    Outputs {
        image: format!("{first}/{}:{}", target.repo, target.tags[0]),
        images: registries
            .iter()
            .flat_map(|r| target.tags.iter().map(move |t| format!("{r}/{}:{t}", target.repo)))
            .collect(),
        registries,
        tags: target.tags.clone(),
        ..Default::default()
    }
}

/// One place outputs go: which setting or variable named it, the file, and whether it is appended to
/// (the CI's env files) or replaced (`PLUGIN_OUTPUT_FILE`).
struct Place {
    origin: &'static str,
    path: PathBuf,
    replace: bool,
}

fn places(output_file: Option<&Path>, ambient: &HashMap<String, String>) -> Vec<Place> {
    let mut places = Vec::new();
    let append = |origin, path| Place {
        origin,
        path,
        replace: false,
    };
    if let Some(dir) = ambient.get(ci::CODEFRESH_VOLUME).filter(|d| !d.is_empty()) {
        places.push(append(ci::CODEFRESH_VOLUME, Path::new(dir).join(ci::CODEFRESH_EXPORTS)));
    }
    if Path::new(ci::CODEFRESH_META).is_dir() {
        places.push(append(
            "/meta (a Codefresh typed step)",
            Path::new(ci::CODEFRESH_META).join(ci::CODEFRESH_EXPORTS),
        ));
    }
    if let Some(file) = ambient.get(ci::GITHUB_OUTPUT).filter(|d| !d.is_empty()) {
        places.push(append(ci::GITHUB_OUTPUT, PathBuf::from(file)));
    }
    if let Some(path) = output_file {
        places.push(Place {
            origin: "PLUGIN_OUTPUT_FILE",
            path: path.to_path_buf(),
            replace: true,
        });
    }
    places
}

/// Whether every place the outputs will go can be written, checked before any network call so that a
/// run never pushes and then fails on its outputs. One problem per place, naming the variable and the fix.
pub fn check(output_file: Option<&Path>, ambient: &HashMap<String, String>) -> Vec<String> {
    places(output_file, ambient)
        .into_iter()
        .filter_map(|place| check_place(&place).err())
        .collect()
}

fn check_place(place: &Place) -> Result<(), String> {
    let (origin, path) = (place.origin, place.path.display());
    match std::fs::symlink_metadata(&place.path) {
        Ok(meta) if meta.file_type().is_symlink() && place.replace => Err(format!(
            "{origin}={path} is a symbolic link, and writing the outputs would overwrite its target\n    fix: give \
             the path of a regular file (or of one that does not exist yet)"
        )),
        Ok(_) => match std::fs::metadata(&place.path) {
            Ok(meta) if !meta.is_file() => Err(format!(
                "{origin}={path} is not a regular file (it is a {})\n    fix: point {origin} at a file",
                if meta.is_dir() {
                    "directory"
                } else {
                    "device or other special file"
                }
            )),
            Ok(_) => writable(&place.path).map_err(|e| format!("{origin}={path} cannot be written: {e}")),
            Err(e) => Err(format!("{origin}={path}: {e}\n    fix: point {origin} at a file")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match place.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                return Err(format!(
                    "{origin}={path}: the directory {} does not exist\n    fix: create it in an earlier step, or \
                     point {origin} at an existing directory",
                    parent.display()
                ));
            }
            writable(parent).map_err(|e| format!("{origin}={path}: the directory cannot be written: {e}"))
        }
        Err(e) => Err(format!("{origin}={path}: {e}")),
    }
}

/// `access(2)` with `W_OK`: whether this process may write the file or create files in the directory.
fn writable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "a NUL in the path".to_string())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Write the outputs wherever the environment asks for them; returns the files written.
pub fn write(outputs: &Outputs, output_file: Option<&Path>, ambient: &HashMap<String, String>) -> Result<Vec<PathBuf>> {
    let pairs = outputs.pairs();
    let mut written = Vec::new();
    for place in places(output_file, ambient) {
        let github = place.origin == ci::GITHUB_OUTPUT;
        let lines: String = pairs.iter().map(|(k, v)| line(k, v, github)).collect();
        if place.replace {
            let text = serde_json::to_string_pretty(&outputs.json())? + "\n";
            replace(&place.path, &text)
                .with_context(|| format!("writing {}={}", place.origin, place.path.display()))?;
        } else {
            append(&place.path, &lines)
                .with_context(|| format!("appending outputs to {}={}", place.origin, place.path.display()))?;
        }
        written.push(place.path);
    }
    Ok(written)
}

/// One `NAME=value` line; in `$GITHUB_OUTPUT` a value with a newline takes GitHub's delimiter form
/// (`NAME<<DELIMITER`, the value, `DELIMITER`), with a delimiter that does not occur in the value.
fn line(name: &str, value: &str, github: bool) -> String {
    if !(github && value.contains('\n')) {
        return format!("{name}={value}\n");
    }
    let mut delimiter = "ECR_STEP_EOF".to_string();
    while value.contains(&delimiter) {
        delimiter.push('_');
    }
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

/// Replace the file's content; never through a symbolic link.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Append `text` on lines of its own: a file whose last line has no newline gets one first, so neither
/// that line nor ours is corrupted.
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut text = text.to_string();
    if file.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.insert(0, '\n');
        }
    }
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_go_to_every_place_the_environment_names_under_the_same_names() {
        let dir = tempfile::tempdir().unwrap();
        let github = dir.path().join("github_output");
        std::fs::write(&github, "earlier=1\n").unwrap();
        let ambient: HashMap<String, String> = [
            ("CF_VOLUME_PATH".to_string(), dir.path().display().to_string()),
            ("GITHUB_OUTPUT".to_string(), github.display().to_string()),
        ]
        .into();
        let outputs = Outputs {
            image: "r/app:v1".into(),
            digest: "sha256:d".into(),
            registries: vec!["r".into()],
            tags: vec!["v1".into(), "latest".into()],
            images: vec!["r/app:v1".into(), "r/app:latest".into()],
            ..Default::default()
        };
        let json = dir.path().join("out.json");
        assert!(check(Some(&json), &ambient).is_empty());
        write(&outputs, Some(&json), &ambient).unwrap();
        let cf = std::fs::read_to_string(dir.path().join("env_vars_to_export")).unwrap();
        assert!(
            cf.contains("ECR_STEP_IMAGE=r/app:v1\n") && cf.contains("ECR_STEP_TAGS=v1,latest\n"),
            "{cf}"
        );
        let gh = std::fs::read_to_string(&github).unwrap();
        assert!(
            gh.starts_with("earlier=1\n") && gh.contains("ECR_STEP_DIGEST=sha256:d\n"),
            "{gh}"
        );
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(value["tags"], serde_json::json!(["v1", "latest"]));
        assert_eq!(value["digest"], "sha256:d");
        assert_eq!(value["registries"], serde_json::json!(["r"]));
        assert_eq!(value["dry_run"], false);
    }

    #[test]
    fn github_gets_the_delimiter_form_for_a_value_with_a_newline() {
        assert_eq!(line("A", "x", true), "A=x\n");
        let text = line("A", "one\nECR_STEP_EOF\ntwo", true);
        assert_eq!(text, "A<<ECR_STEP_EOF_\none\nECR_STEP_EOF\ntwo\nECR_STEP_EOF_\n");
    }

    #[test]
    fn a_file_without_a_final_newline_keeps_its_last_line_and_ours() {
        let dir = tempfile::tempdir().unwrap();
        let github = dir.path().join("github_output");
        std::fs::write(&github, "earlier=1").unwrap();
        let ambient: HashMap<String, String> = [("GITHUB_OUTPUT".to_string(), github.display().to_string())].into();
        let outputs = Outputs {
            digest: "sha256:d".into(),
            ..Default::default()
        };
        write(&outputs, None, &ambient).unwrap();
        let text = std::fs::read_to_string(&github).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, vec!["earlier=1", "ECR_STEP_DIGEST=sha256:d"], "{text:?}");
    }

    #[test]
    fn places_that_cannot_take_the_outputs_are_named_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(dir.path().join("target.json"), &link).unwrap();
        type Case<'a> = (Option<PathBuf>, Vec<(&'a str, String)>, &'a str);
        let cases: Vec<Case> = vec![
            (Some(dir.path().join("missing/out.json")), vec![], "the directory"),
            (Some(dir.path().to_path_buf()), vec![], "is not a regular file"),
            (Some(PathBuf::from("/dev/full")), vec![], "device or other special file"),
            (Some(link), vec![], "is a symbolic link"),
            (
                None,
                vec![("GITHUB_OUTPUT", dir.path().display().to_string())],
                "GITHUB_OUTPUT=",
            ),
            (
                None,
                vec![("CF_VOLUME_PATH", "/nonexistent/volume".into())],
                "CF_VOLUME_PATH=",
            ),
        ];
        for (file, env, want) in cases {
            let ambient: HashMap<String, String> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let problems = check(file.as_deref(), &ambient);
            assert_eq!(problems.len(), 1, "{file:?} {ambient:?}: {problems:?}");
            assert!(
                problems[0].contains(want) && problems[0].contains("fix:"),
                "{}",
                problems[0]
            );
        }
    }
}
