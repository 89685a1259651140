//! The scan gate: severities, findings, the gate the user set, and its verdict. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A finding's severity, most severe first (the order of the derive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Informational,
    Undefined,
}

impl Severity {
    pub const ALL: &'static [Severity] = &[
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Informational,
        Severity::Undefined,
    ];

    /// ECR's names (`CRITICAL`, …); anything unknown (`UNTRIAGED`) is undefined.
    pub fn of(name: &str) -> Severity {
        match name.to_ascii_uppercase().as_str() {
            "CRITICAL" => Severity::Critical,
            "HIGH" => Severity::High,
            "MEDIUM" => Severity::Medium,
            "LOW" => Severity::Low,
            "INFORMATIONAL" => Severity::Informational,
            _ => Severity::Undefined,
        }
    }

    /// A threshold a user may set.
    pub fn threshold(value: &str) -> Result<Severity, String> {
        match Severity::of(value) {
            Severity::Informational | Severity::Undefined => Err("CRITICAL, HIGH, MEDIUM or LOW".into()),
            s => Ok(s),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
            Severity::Informational => "INFORMATIONAL",
            Severity::Undefined => "UNDEFINED",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One vulnerability found in the image (basic scanning's `name`, enhanced scanning's vulnerability id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    /// The package, when the scan says.
    pub package: Option<String>,
}

/// What the user asked of the scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanGate {
    /// Findings at or above this fail the run (unless ignored).
    pub threshold: Severity,
    /// Vulnerability ids that never fail the run.
    pub ignore: Vec<String>,
    /// The longest wait for the scan to complete.
    pub timeout: Duration,
    /// A scan that is unsupported for the image (or failed) passes instead of failing the run.
    pub allow_unsupported: bool,
}

/// One destination's scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanReport {
    /// `<registry>/<repo>@<digest>`.
    pub image: String,
    pub counts: BTreeMap<Severity, u64>,
    pub findings: Vec<Finding>,
}

impl ScanGate {
    /// The findings that fail the run: at or above the threshold and not ignored.
    pub fn blocking<'a>(&self, findings: &'a [Finding]) -> Vec<&'a Finding> {
        findings
            .iter()
            .filter(|f| f.severity <= self.threshold && !self.ignore.iter().any(|i| i.eq_ignore_ascii_case(&f.id)))
            .collect()
    }
}

/// Counts by severity from the findings themselves, for a scan that gives none.
pub fn count(findings: &[Finding]) -> BTreeMap<Severity, u64> {
    let mut counts = BTreeMap::new();
    for f in findings {
        *counts.entry(f.severity).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: Severity) -> Finding {
        Finding {
            id: id.into(),
            severity,
            package: None,
        }
    }

    #[test]
    fn findings_at_or_above_the_threshold_block_unless_ignored() {
        let gate = ScanGate {
            threshold: Severity::High,
            ignore: vec!["CVE-2026-0002".into()],
            timeout: Duration::from_secs(1),
            allow_unsupported: false,
        };
        let findings = [
            finding("CVE-2026-0001", Severity::Critical),
            finding("cve-2026-0002", Severity::High),
            finding("CVE-2026-0003", Severity::Medium),
            finding("CVE-2026-0004", Severity::Undefined),
        ];
        let blocking: Vec<&str> = gate.blocking(&findings).iter().map(|f| f.id.as_str()).collect();
        assert_eq!(blocking, vec!["CVE-2026-0001"]);
        assert_eq!(Severity::threshold("medium"), Ok(Severity::Medium));
        assert!(Severity::threshold("INFORMATIONAL").is_err());
        assert_eq!(Severity::of("UNTRIAGED"), Severity::Undefined);
        assert_eq!(count(&findings)[&Severity::High], 1);
    }
}
