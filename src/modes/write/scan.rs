//! The scan gate that push and promote share, run after every tag landed: in each destination the image
//! is scanned (`aws::scan`), the counts and the findings at or above the threshold are reported, and the
//! verdict (`report::scan_verdict`) fails the run when one is not ignored. A scan ECR cannot do for the
//! image is an error unless `PLUGIN_SCAN_ALLOW_UNSUPPORTED=true`.

use crate::aws::{self, scan::Unfinished};
use crate::domain::repository::RepositoryAt;
use crate::domain::scan::{ScanGate, ScanReport};
use crate::domain::tag::TagOutcome;
use crate::domain::target::Target;
use crate::modes::{Context, Done};
use anyhow::{Result, bail};

/// How push and promote end: their outcomes, and the scan gate's reports when it is set and every tag landed.
pub async fn done(gate: Option<&ScanGate>, target: &Target, outcomes: Vec<TagOutcome>, ctx: &Context) -> Result<Done> {
    done_with_image(gate, target, outcomes, None, ctx).await
}

/// [`done`] where the tags hold an index the step made of the image `image` (a manifest digest): that
/// image is what is scanned, and exported as the image's digest.
pub async fn done_with_image(
    gate: Option<&ScanGate>,
    target: &Target,
    outcomes: Vec<TagOutcome>,
    image: Option<String>,
    ctx: &Context,
) -> Result<Done> {
    let scans = match gate {
        Some(gate) if outcomes.iter().all(|o| o.result.is_ok()) => Some((
            gate.clone(),
            self::gate(gate, &target.repo, &outcomes, image.as_deref(), ctx).await?,
        )),
        _ => None,
    };
    Ok(Done::Tags {
        outcomes,
        target: target.clone(),
        scans,
        image,
    })
}

/// Scan the image written to `repo` in every destination whose tags all landed (`image`, when the tags
/// hold an index the step made of it).
pub async fn gate(
    gate: &ScanGate,
    repo: &str,
    outcomes: &[TagOutcome],
    image: Option<&str>,
    ctx: &Context,
) -> Result<Vec<ScanReport>> {
    let mut reports = Vec::new();
    for login in &ctx.logins {
        let target = format!("{}/{repo}", login.registry.host);
        let prefix = format!("{target}:");
        let mine: Vec<&TagOutcome> = outcomes.iter().filter(|o| o.reference.starts_with(&prefix)).collect();
        let Some(digest) = mine
            .first()
            .and_then(|o| o.result.as_ref().ok())
            .map(|l| l.digest.clone())
        else {
            continue;
        };
        if mine.iter().any(|o| o.result.is_err()) {
            continue;
        }
        let digest = image.map_or(digest, String::from);
        let label = format!("{target}@{digest}");
        let at = RepositoryAt::of(repo, login);
        match aws::scan::findings(&ctx.identity, &at, &digest, &label, gate.timeout).await? {
            Ok(report) => {
                crate::report::scan(&report, gate);
                reports.push(report);
            }
            Err(Unfinished::Unsupported(why)) if gate.allow_unsupported => {
                crate::report::scan_unsupported(&label, &why);
            }
            Err(Unfinished::Unsupported(why)) => bail!(
                "ECR could not scan {label}: {why}\n  fix: scan it another way and set \
                 PLUGIN_SCAN_ALLOW_UNSUPPORTED=true, or unset PLUGIN_SCAN_SEVERITY_THRESHOLD"
            ),
        }
    }
    Ok(reports)
}
