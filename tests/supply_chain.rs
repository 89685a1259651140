//! Supply chain: the scan gate against moto's scan findings (the image mirrored into moto with PutImage,
//! the bytes living in the distribution registry), and referrers (signatures, SBOMs, a signature on the
//! SBOM) travelling with a promote through the referrers tag schema and cosign's tags.

mod testbed;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testbed::proxy::{Fault, FaultProxy, Rule};
use testbed::{DEFAULT_ACCOUNT, Image, Moto, REGION, Registry, Step};

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
    let digest = moto.mirror(&registry, "app", "v1");
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
    let enhanced_digest = moto.mirror(&registry, "app", "e1");
    let stuck_digest = moto.mirror(&registry, "app", "s1");
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
    let digest = moto.mirror(&registry, "app", "u1");
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

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An artifact manifest with one layer holding `content`, referring to `subject` (when given); its digest.
fn artifact(
    registry: &Registry,
    repo: &str,
    artifact_type: &str,
    content: &str,
    subject: Option<(&str, &str, usize)>,
) -> String {
    let empty = registry.put_blob(repo, b"{}");
    let layer = registry.put_blob(repo, content.as_bytes());
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": content.len()}],
        "annotations": {"org.example.what": content},
    });
    if let Some((media_type, digest, size)) = subject {
        manifest["subject"] = json!({"mediaType": media_type, "digest": digest, "size": size});
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    registry.put_manifest(repo, &digest, OCI_MANIFEST, &bytes);
    digest
}

/// The referrers tag schema: an index at `sha256-<hex>` of `subject` listing `(digest, type)`.
fn tag_schema(registry: &Registry, repo: &str, subject: &str, listed: &[(String, &str)]) {
    let manifests: Vec<Value> = listed
        .iter()
        .map(|(digest, t)| {
            let (bytes, media_type, _) = registry.manifest(repo, digest).expect("a listed referrer exists");
            json!({"mediaType": media_type, "digest": digest, "size": bytes.len(), "artifactType": t})
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    registry.put_manifest(
        repo,
        &subject.replacen(':', "-", 1),
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
}

fn digests_listed(registry: &Registry, repo: &str, tag: &str) -> BTreeSet<String> {
    let (bytes, _, _) = registry
        .manifest(repo, tag)
        .unwrap_or_else(|| panic!("no {tag} in {repo}"));
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

use std::collections::BTreeSet;

#[test]
fn a_signature_an_sbom_and_a_signature_on_the_sbom_travel_with_a_promote_with_their_digests() {
    let moto = Moto::start();
    let (source, target, image) = (
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(20_000),
    );
    Step::push(&moto, &source, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run()
        .success();
    let (image_bytes, image_type, image_digest) = source.manifest("app", "v1").unwrap();
    let subject = (image_type.as_str(), image_digest.as_str(), image_bytes.len());
    let sig = artifact(&source, "app", SIG, "signature of the image", Some(subject));
    let sbom = artifact(&source, "app", SBOM, "sbom of the image", Some(subject));
    let (sbom_bytes, _, _) = source.manifest("app", &sbom).unwrap();
    let sbom_sig = artifact(
        &source,
        "app",
        SIG,
        "signature of the sbom",
        Some((OCI_MANIFEST, &sbom, sbom_bytes.len())),
    );
    tag_schema(
        &source,
        "app",
        &image_digest,
        &[(sig.clone(), SIG), (sbom.clone(), SBOM)],
    );
    tag_schema(&source, "app", &sbom, &[(sbom_sig.clone(), SIG)]);
    // cosign's legacy form: a signature under `sha256-<hex>.sig`.
    let legacy = artifact(
        &source,
        "app",
        "application/vnd.oci.image.config.v1+json",
        "cosign simple signing",
        None,
    );
    let (legacy_bytes, _, _) = source.manifest("app", &legacy).unwrap();
    let legacy_tag = format!("{}.sig", image_digest.replacen(':', "-", 1));
    source.put_manifest("app", &legacy_tag, OCI_MANIFEST, &legacy_bytes);

    // The source asked through a proxy that counts the referrers API calls (the registry answers 404).
    let counting = FaultProxy::start(
        &source.host,
        vec![Rule {
            method: "GET",
            path: "/referrers/sha256:",
            fault: Fault::Status(404),
            times: 1000,
        }],
    );
    let promote = || Step::promote(&moto, &target.host, &format!("{}/app:v1", counting.host), "prod", "v1").run();
    let run = promote();
    run.success();
    run.says("referrers: 4 found")
        .says(&format!("referrer: {SBOM} {sbom} copied to {}/prod", target.host))
        .says(&format!("referrers: 4 copied to {}/prod, 0 already there", target.host));
    assert!(
        counting.injected() >= 3,
        "the referrers API was not asked first: {}",
        counting.injected()
    );
    for digest in [&sig, &sbom, &sbom_sig, &legacy] {
        assert_eq!(
            target.manifest("prod", digest).map(|m| m.2),
            Some(digest.clone()),
            "{digest} did not arrive"
        );
    }
    assert_eq!(
        digests_listed(&target, "prod", &image_digest.replacen(':', "-", 1)),
        BTreeSet::from([sig.clone(), sbom.clone()])
    );
    assert_eq!(
        digests_listed(&target, "prod", &sbom.replacen(':', "-", 1)),
        BTreeSet::from([sbom_sig.clone()])
    );
    assert_eq!(target.digest("prod", &legacy_tag), Some(legacy.clone()));

    let again = promote();
    again.success();
    again.says(&format!("referrers: 0 copied to {}/prod, 4 already there", target.host));

    // Only SBOMs: the signatures stay behind.
    let run = Step::promote(
        &moto,
        &target.host,
        &format!("{}/app:v1", source.host),
        "sboms-only",
        "v1",
    )
    .env("PLUGIN_REFERRERS", SBOM)
    .run();
    run.success();
    run.says("referrers: 1 found");
    assert!(target.manifest("sboms-only", &sbom).is_some() && target.manifest("sboms-only", &sig).is_none());
    let run = Step::promote(&moto, &target.host, &format!("{}/app:v1", source.host), "none", "v1")
        .env("PLUGIN_REFERRERS", "none")
        .run();
    run.success();
    assert!(!run.stdout.contains("referrer"), "{}", run.stdout);
}

#[test]
fn a_subject_with_more_referrers_than_ecr_keeps_is_refused_before_any_write() {
    let moto = Moto::start();
    let (source, target, image) = (
        Registry::start(DEFAULT_ACCOUNT),
        Registry::start(DEFAULT_ACCOUNT),
        Image::random(5_000),
    );
    Step::push(&moto, &source, &image, "app")
        .env("PLUGIN_TAGS", "v1")
        .run()
        .success();
    let (image_bytes, image_type, image_digest) = source.manifest("app", "v1").unwrap();
    let subject = (image_type.as_str(), image_digest.as_str(), image_bytes.len());
    let signatures: Vec<(String, &str)> = (0..101)
        .map(|i| {
            (
                artifact(&source, "app", SIG, &format!("signature {i}"), Some(subject)),
                SIG,
            )
        })
        .collect();
    tag_schema(&source, "app", &image_digest, &signatures);
    let run = Step::promote(&moto, &target.host, &format!("{}/app:v1", source.host), "prod", "v1").run();
    run.failure(&[
        "has 101 referrers; ECR keeps at most 100 per subject, so nothing was written",
        "fix:",
    ]);
    assert!(
        target.tags("prod").is_empty(),
        "something was written: {:?}",
        target.tags("prod")
    );
}
