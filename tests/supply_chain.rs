//! Supply chain: the scan gate against moto's scan findings (the image mirrored into moto with PutImage,
//! the bytes living in the distribution registry), and referrers (signatures, SBOMs, a signature on the
//! SBOM) travelling with a promote through the referrers tag schema and cosign's tags.

mod testbed;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testbed::{DEFAULT_ACCOUNT, Image, Moto, REGION, Registry, Step};

/// Mirror `repo:tag` of the registry into moto (PutImage with the real digest), so ECR's scan API knows it.
fn mirror(moto: &Moto, registry: &Registry, repo: &str, tag: &str) -> String {
    let (bytes, media_type, digest) = registry.manifest(repo, tag).expect("the image is in the registry");
    let manifest = String::from_utf8(bytes).unwrap();
    let _ = moto.aws_as(
        (testbed::ACCESS_KEY, testbed::SECRET_KEY),
        &["ecr", "create-repository", "--repository-name", repo],
    );
    moto.aws(&[
        "ecr",
        "put-image",
        "--repository-name",
        repo,
        "--image-manifest",
        &manifest,
        "--image-manifest-media-type",
        media_type.split(';').next().unwrap(),
        "--image-tag",
        tag,
        "--image-digest",
        &digest,
    ]);
    digest
}

/// Script what moto answers to DescribeImageScanFindings for `digest`.
fn script_findings(moto: &Moto, repo: &str, digest: &str, status: &str, findings: Value) {
    let result = json!({
        "registryId": DEFAULT_ACCOUNT,
        "repositoryName": repo,
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": status, "description": "scripted"},
        "imageScanFindings": findings,
    });
    let body = json!({"account_id": DEFAULT_ACCOUNT, "region": REGION, "results": [result]});
    let response = ureq::post(&format!("{}/moto-api/static/ecr/scan-finding-results", moto.url))
        .send_json(body)
        .unwrap();
    assert_eq!(response.status().as_u16(), 201, "moto refused the scripted findings");
}

fn basic(findings: &[(&str, &str)]) -> Value {
    let mut counts = serde_json::Map::new();
    for (_, severity) in findings {
        let n = counts.get(*severity).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(severity.to_string(), json!(n + 1));
    }
    json!({
        "findings": findings.iter().map(|(id, severity)| json!({
            "name": id, "severity": severity,
            "attributes": [{"key": "package_name", "value": "openssl"}]
        })).collect::<Vec<_>>(),
        "findingSeverityCounts": counts,
    })
}

#[test]
fn the_scan_gate_fails_on_a_critical_finding_passes_when_it_is_ignored_and_exports_the_counts() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(20_000));
    Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run()
        .success();
    let digest = mirror(&moto, &registry, "app", "v1");
    script_findings(
        &moto,
        "app",
        &digest,
        "COMPLETE",
        basic(&[
            ("CVE-2026-0001", "CRITICAL"),
            ("CVE-2026-0002", "LOW"),
            ("CVE-2026-0003", "HIGH"),
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let github = dir.path().join("github_output");
    std::fs::write(&github, "").unwrap();
    let gated = |ignore: &str| {
        let mut step = Step::push(&moto, &registry, &image, "app")
            .env("PLUGIN_TAGS", "v1")
            .env("PLUGIN_SKIP_EXISTING", "true")
            .env("PLUGIN_SCAN_SEVERITY_THRESHOLD", "HIGH")
            .env("GITHUB_OUTPUT", &github.display().to_string());
        if !ignore.is_empty() {
            step = step.env("PLUGIN_SCAN_IGNORE", ignore);
        }
        step.run()
    };
    let run = gated("");
    run.failure(&[
        "the scan gate failed: 2 finding(s) at or above HIGH: CVE-2026-0001 (CRITICAL), CVE-2026-0003 (HIGH)",
        "fix:",
    ]);
    run.says(&format!(
        "scan: {}/app@{digest} CRITICAL 1, HIGH 1, MEDIUM 0, LOW 1",
        registry.host
    ))
    .says("scan: CRITICAL CVE-2026-0001 in openssl: fails the gate");
    let outputs = std::fs::read_to_string(&github).unwrap();
    assert!(
        outputs.contains("ECR_STEP_SCAN_CRITICAL=1\n") && outputs.contains("ECR_STEP_SCAN_LOW=1\n"),
        "{outputs}"
    );

    let run = gated("CVE-2026-0001,CVE-2026-0003");
    run.success();
    run.says("scan: CRITICAL CVE-2026-0001 in openssl: ignored (PLUGIN_SCAN_IGNORE)")
        .says("scan: no finding at or above HIGH");
}

#[test]
fn enhanced_findings_count_and_a_scan_that_never_completes_fails_after_the_timeout() {
    let (moto, registry) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT));
    let (enhanced, stuck) = (Image::random(10_000), Image::random(10_000));
    Step::push(&moto, &registry, &enhanced, "app")
        .env("PLUGIN_TAGS", "e1")
        .run()
        .success();
    Step::push(&moto, &registry, &stuck, "app")
        .env("PLUGIN_TAGS", "s1")
        .run()
        .success();
    let enhanced_digest = mirror(&moto, &registry, "app", "e1");
    let stuck_digest = mirror(&moto, &registry, "app", "s1");
    script_findings(
        &moto,
        "app",
        &enhanced_digest,
        "ACTIVE",
        json!({
            "enhancedFindings": [{
                "severity": "MEDIUM",
                "title": "CVE-2026-1000 - zlib",
                "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2026-1000", "vulnerablePackages": [{"name": "zlib"}]}
            }],
            "findingSeverityCounts": {"MEDIUM": 1}
        }),
    );
    script_findings(&moto, "app", &stuck_digest, "IN_PROGRESS", json!({}));
    let run = Step::push(&moto, &registry, &enhanced, "app")
        .env("PLUGIN_TAGS", "e1")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .env("PLUGIN_SCAN_SEVERITY_THRESHOLD", "MEDIUM")
        .run();
    run.failure(&["CVE-2026-1000 (MEDIUM)"]);
    run.says("scan: MEDIUM CVE-2026-1000 in zlib: fails the gate");

    let started = Instant::now();
    let run = Step::push(&moto, &registry, &stuck, "app")
        .env("PLUGIN_TAGS", "s1")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .env("PLUGIN_SCAN_SEVERITY_THRESHOLD", "CRITICAL")
        .env("PLUGIN_SCAN_TIMEOUT", "3s")
        .run();
    run.failure(&["did not complete within PLUGIN_SCAN_TIMEOUT=3s", "fix:"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn an_image_ecr_cannot_scan_fails_the_gate_unless_the_user_opts_out() {
    let (moto, registry, image) = (Moto::start(), Registry::start(DEFAULT_ACCOUNT), Image::random(10_000));
    Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "u1")
        .run()
        .success();
    let digest = mirror(&moto, &registry, "app", "u1");
    script_findings(&moto, "app", &digest, "UNSUPPORTED_IMAGE", json!({}));
    let gated = Step::push(&moto, &registry, &image, "app")
        .env("PLUGIN_TAGS", "u1")
        .env("PLUGIN_SKIP_EXISTING", "true")
        .env("PLUGIN_SCAN_SEVERITY_THRESHOLD", "HIGH");
    gated.run().failure(&[
        "ECR could not scan",
        "UNSUPPORTED_IMAGE",
        "PLUGIN_SCAN_ALLOW_UNSUPPORTED=true",
    ]);
    let run = gated.env("PLUGIN_SCAN_ALLOW_UNSUPPORTED", "true").run();
    run.success();
    run.says("could not be scanned (UNSUPPORTED_IMAGE");
}
