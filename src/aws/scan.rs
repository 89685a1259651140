//! Image scanning through the ECR API: start a scan where the repository does not scan on push, wait for
//! the findings, and read them in both of ECR's forms (basic scanning's `findings`, enhanced scanning's
//! `enhancedFindings`), every page.

use super::Identity;
use super::error as aws_error;
use crate::domain::repository::RepositoryAt;
use crate::domain::scan::{Finding, ScanReport, Severity, count};
use anyhow::{Result, anyhow, bail};
use aws_sdk_ecr::types::{ImageIdentifier, ScanStatus};
use std::time::{Duration, Instant};

/// How a scan ended, when it did not give findings.
#[derive(Debug)]
pub enum Unfinished {
    /// ECR cannot scan this image (or the scan failed): the reason.
    Unsupported(String),
}

/// Scan `digest` in the repository `at` and wait up to `timeout` for the findings.
pub async fn findings(
    identity: &Identity,
    at: &RepositoryAt<'_>,
    digest: &str,
    label: &str,
    timeout: Duration,
) -> Result<Result<ScanReport, Unfinished>> {
    let ecr = identity.ecr(at.region);
    let image = ImageIdentifier::builder().image_digest(digest).build();
    let registry = at.registry_id.map(String::from);
    let started = ecr
        .start_image_scan()
        .repository_name(at.repo)
        .set_registry_id(registry.clone())
        .image_id(image.clone())
        .send()
        .await;
    if let Err(e) = started {
        match aws_error::code(&e).unwrap_or_default().as_str() {
            // Scanned already today (basic scanning scans an image once a day), or scanned continuously
            // (enhanced scanning refuses manual scans): the findings are there to read.
            "LimitExceededException" | "ValidationException" => {}
            "UnsupportedImageTypeException" => {
                return Ok(Err(Unfinished::Unsupported(aws_error::describe(&e))));
            }
            _ => bail!(
                "ecr:StartImageScan of {label} failed: {}\n  fix: allow ecr:StartImageScan for {} ({}), or unset \
                 PLUGIN_SCAN_SEVERITY_THRESHOLD",
                aws_error::describe(&e),
                identity.arn,
                aws_error::managed_policy("StartImageScan")
            ),
        }
    }
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(500);
    loop {
        let mut findings = Vec::new();
        let mut counts = None;
        let mut token = None;
        let status = loop {
            let answer = ecr
                .describe_image_scan_findings()
                .repository_name(at.repo)
                .set_registry_id(registry.clone())
                .image_id(image.clone())
                .set_next_token(token.clone())
                .send()
                .await;
            let page = match answer {
                Ok(page) => page,
                Err(e) if aws_error::code(&e).as_deref() == Some("ScanNotFoundException") => break None,
                Err(e) => bail!(
                    "ecr:DescribeImageScanFindings of {label} failed: {}\n  fix: allow ecr:DescribeImageScanFindings \
                     for {} ({})",
                    aws_error::describe(&e),
                    identity.arn,
                    aws_error::managed_policy("DescribeImageScanFindings")
                ),
            };
            let status = page.image_scan_status().and_then(|s| s.status().cloned());
            let description = page
                .image_scan_status()
                .and_then(|s| s.description())
                .unwrap_or_default()
                .to_string();
            if let Some(scan) = page.image_scan_findings() {
                if counts.is_none() {
                    counts = scan.finding_severity_counts().map(|c| {
                        c.iter()
                            .map(|(s, n)| (Severity::of(s.as_str()), (*n).max(0) as u64))
                            .fold(std::collections::BTreeMap::new(), |mut m, (s, n)| {
                                *m.entry(s).or_insert(0) += n;
                                m
                            })
                    });
                }
                findings.extend(scan.findings().iter().map(|f| {
                    Finding {
                        id: f.name().unwrap_or("unnamed").to_string(),
                        severity: Severity::of(f.severity().map_or("", |s| s.as_str())),
                        package: f
                            .attributes()
                            .iter()
                            .find(|a| a.key() == "package_name")
                            .and_then(|a| a.value())
                            .map(String::from),
                    }
                }));
                findings.extend(scan.enhanced_findings().iter().map(|f| {
                    let details = f.package_vulnerability_details();
                    Finding {
                        id: details
                            .and_then(|d| d.vulnerability_id())
                            .or(f.title())
                            .unwrap_or("unnamed")
                            .to_string(),
                        severity: Severity::of(f.severity().unwrap_or("")),
                        package: details
                            .and_then(|d| d.vulnerable_packages().first())
                            .and_then(|p| p.name())
                            .map(String::from),
                    }
                }));
            }
            token = page.next_token().map(String::from);
            if token.is_none() {
                break Some((status, description));
            }
        };
        match status {
            Some((Some(ScanStatus::Complete | ScanStatus::Active), _)) => {
                let counts = counts.unwrap_or_else(|| count(&findings));
                return Ok(Ok(ScanReport {
                    image: label.to_string(),
                    counts,
                    findings,
                }));
            }
            Some((
                Some(s @ (ScanStatus::UnsupportedImage | ScanStatus::Failed | ScanStatus::FindingsUnavailable)),
                why,
            )) => {
                return Ok(Err(Unfinished::Unsupported(format!("{}: {why}", s.as_str()))));
            }
            _ => {}
        }
        if Instant::now() + wait > deadline {
            return Err(anyhow!(
                "the scan of {label} did not complete within PLUGIN_SCAN_TIMEOUT={}s\n  fix: raise \
                 PLUGIN_SCAN_TIMEOUT, or check the scan in the ECR console",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
