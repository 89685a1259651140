//! Report: every line the step prints for the user, one line per fact, and the run's verdict.
//!
//! Nothing else in the crate prints. Facts go to stdout; errors to stderr through [`error`]. The verdict
//! is an `Err` when anything did not land, which `main` turns into exit 1. Depends on `domain` alone, so
//! every stage can report without knowing another stage.

use crate::domain::credentials::{CredentialPlan, Principal};
use crate::domain::login::RegistryLogin;
use crate::domain::manifest::Manifest;
use crate::domain::repository::RepositorySettings;
use crate::domain::scan::{ScanGate, ScanReport, Severity};
use crate::domain::source::{BaseLayers, FileImage, LocalImage, Source};
use crate::domain::tag::TagOutcome;
use anyhow::{Result, bail};
use std::path::Path;
use std::time::Duration;

/// `println!` for report lines: through [`emit`], so a live progress display is never torn.
macro_rules! say {
    ($($arg:tt)*) => {
        emit(format!($($arg)*))
    };
}

/// A text printed as it is (`--help`, `--version`).
pub fn text(text: &str) {
    print!("{text}");
}

/// A failure, on stderr: the last line of a red run.
pub fn error(e: &anyhow::Error) {
    let line = format!("error: {e:#}");
    match display() {
        Some(display) => display.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

pub fn skipped(why: &str) {
    say!("skipped: {why}; nothing was written");
}

/// Where the values of an integration document went (never a value).
pub fn origins(lines: &[String]) {
    for line in lines {
        say!("settings: {line}");
    }
}

pub fn identity(principal: &Principal, plan: &CredentialPlan) {
    say!("credentials: {principal}");
    if !plan.ignored.is_empty() {
        let names: Vec<String> = plan.ignored.iter().map(|l| format!("{l}")).collect();
        say!(
            "credentials: also configured and not used: {} level (the {} level wins)",
            names.join(", "),
            plan.level
        );
    }
}

pub fn logins(logins: &[RegistryLogin], principal: &Principal) {
    for login in logins {
        let cross = match (login.registry.ecr.as_ref(), &login.token_account) {
            (Some(e), Some(t)) if &e.account != t => {
                format!(
                    " (cross-account: the repository policy in {} must allow account {t})",
                    e.account
                )
            }
            _ => String::new(),
        };
        let account = login.token_account.as_deref().unwrap_or(&principal.account);
        say!("registry: {} (token for account {account}){cross}", login.registry);
    }
}

pub fn push_plan(source: &LocalImage, repo: &str, tags: &[String], logins: &[RegistryLogin]) {
    let mib = source.size as f64 / (1024.0 * 1024.0);
    say!("source: {} ({}, {mib:.1} MiB)", source.reference, short_id(&source.id));
    plan("push", repo, tags, logins);
}

/// The plan of a push from files: what was read, and what the step compressed.
pub fn files_plan(source: &Source, image: &FileImage, repo: &str, tags: &[String], logins: &[RegistryLogin]) {
    let what = match source {
        Source::Engine(reference) => format!("{reference} (exported from the Docker Engine)"),
        Source::Oci { path, reference } => format!(
            "oci:{}{}",
            path.display(),
            reference.as_deref().map(|r| format!(":{r}")).unwrap_or_default()
        ),
        Source::OciArchive { path, reference } => format!(
            "oci-archive:{}{}",
            path.display(),
            reference.as_deref().map(|r| format!(":{r}")).unwrap_or_default()
        ),
        Source::DockerArchive { path, reference } => format!(
            "docker-archive:{}{}",
            path.display(),
            reference.as_deref().map(|r| format!(":{r}")).unwrap_or_default()
        ),
    };
    let mib = image.blobs.iter().map(|b| b.size).sum::<u64>() as f64 / (1024.0 * 1024.0);
    let kind = match &image.image_id {
        Some(id) => format!("image {}", short_id(id)),
        None => format!("index of {} image(s)", image.children.len()),
    };
    say!(
        "source: {what} ({kind}, {} blob(s), {mib:.1} MiB, {} layer(s) compressed here) {}",
        image.blobs.len(),
        image.compressed,
        image.manifest.digest
    );
    if let Some(soci) = &image.soci {
        match soci {
            Ok(s) if s.images == 1 => say!(
                "soci: index {} with a zTOC for {} of {} layer(s); the tags hold an OCI index {} of the image, now \
                 the OCI manifest {} (layers and image id unchanged, manifest digest not)",
                s.index,
                s.indexed,
                s.layers,
                image.manifest.digest,
                s.image
            ),
            Ok(s) => say!(
                "soci: a SOCI index for each of {} image(s), with a zTOC for {} of their {} layer(s); the tags hold \
                 the OCI index {} (each image now an OCI manifest: layers unchanged, manifest digests not)",
                s.images,
                s.indexed,
                s.layers,
                image.manifest.digest
            ),
            Err(why) => say!("soci: no index pushed: {why}"),
        }
    }
    plan("push", repo, tags, logins);
}

/// How the `via:` line begins where `PLUGIN_PUSH_VIA=auto` chose the engine (the bench reads it to tell
/// which path a run took).
pub const VIA_ENGINE: &str = "via: docker push through the engine";

/// `PLUGIN_PUSH_VIA=auto` chose `docker push` through the engine, and why.
pub fn via_engine(why: &str) {
    say!("{VIA_ENGINE}: {why}");
}

/// Why `PLUGIN_PUSH_VIA=auto` kept the step's own transfer, where it weighed the engine.
pub fn via_own_transfer(why: &str) {
    say!("via: the step's own transfer: {why}");
}

/// `PLUGIN_PUSH_VIA=auto` took the engine, and the engine could not reach or trust the registry `host`
/// (`cause`, as it said): the step's own transfer pushes the image instead; `remedy` gives the engine a
/// route for next time.
pub fn via_own_transfer_instead(host: &str, cause: &str, remedy: &str) {
    say!(
        "via: the step's own transfer instead: the Docker Engine could not reach {host} ({cause}). The step \
         reaches it through its own network, proxy and CAs, so it sends the image itself. For docker push's way \
         next time: {remedy}"
    );
}

/// `PLUGIN_PUSH_VIA=auto` did not ask the engine: the record in `PLUGIN_STATE_DIR` notes that it could not
/// reach the registry `host` `seconds` ago (`cause`); `remedy` gives it a route.
pub fn via_own_transfer_unreached(host: &str, seconds: u64, cause: &str, remedy: &str) {
    let ago = match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        _ => format!("{} h", seconds / 3600),
    };
    say!(
        "via: the step's own transfer: this runner's Docker Engine could not reach {host} {ago} ago ({cause}), as \
         PLUGIN_STATE_DIR notes, so for a day after that it is not asked. For docker push's way: {remedy}"
    );
}

/// The image the source was built on, found in a registry this run writes to.
pub fn base(base: &BaseLayers, layers: usize) {
    say!(
        "base: {} (image {}): {} of the {layers} layer(s) are sent as that registry holds them, not compressed here",
        base.base.reference(),
        short_id(&base.base.image_id),
        base.by_diff_id.len(),
    );
}

/// The gzip level `PLUGIN_COMPRESSION_LEVEL=auto` took for the layers compressed here, by the link.
pub fn level_for_the_link(level: u32, uplink: &crate::domain::link::Uplink) {
    let why = match level {
        1 => "the CPU, not the link, is the bottleneck there, so the fastest level",
        2 => {
            "neither the CPU nor the link is far the bottleneck there, so nearly level 6's bytes for about half \
              its CPU"
        }
        _ => {
            "the link, not the CPU, is the bottleneck there, so docker's level, which sends about a fifth less \
              than level 1"
        }
    };
    say!(
        "compression: level {level} for the layers compressed here: the upload to {} ran at {:.0} MB/s and {why} \
         (PLUGIN_COMPRESSION_LEVEL sets one)",
        uplink.host,
        uplink.bytes_per_second / 1e6
    );
}

/// The record of the engine's pushes could not be written: the push stands, the next run's `auto` does
/// not know of it.
pub fn state_unwritten(dir: &std::path::Path, e: &anyhow::Error) {
    say!(
        "state: this push through the engine is not noted in {} ({e:#}); the push stands. Set PLUGIN_STATE_DIR \
         to a writable directory kept between runs, or to off",
        dir.display()
    );
}

/// The destination check failed after the engine's push had landed every tag (read back): the push
/// stands.
pub fn check_failed_after_the_push(e: &anyhow::Error) {
    say!(
        "check: the destinations answered the step's own check only after the engine's push had landed and been \
         read back, and it failed ({e:#}); the push stands"
    );
}

/// The image is in the repository already, under another tag: only the tags are written.
pub fn image_there(repo: &str, digest: &str) {
    say!("known: the image is in {repo} already ({digest}): only its tags are written, nothing is exported or sent");
}

/// The image the source was built on is not used (unreadable there, or nothing to borrow): every layer is
/// compressed here instead.
pub fn base_unused(reference: &str, e: &anyhow::Error) {
    say!("base: {reference} is not used ({e:#}); every layer is compressed here");
}

/// `source` as the user should read it: `host/repo:tag`.
pub fn promote_plan(source: &str, manifest: &Manifest, repo: &str, tags: &[String], logins: &[RegistryLogin]) {
    let kind = if manifest.is_index() { "index" } else { "image" };
    say!("source: {source} ({kind} {})", manifest.digest);
    plan("promote to", repo, tags, logins);
}

fn plan(verb: &str, repo: &str, tags: &[String], logins: &[RegistryLogin]) {
    for login in logins {
        for tag in tags {
            say!("plan: {verb} {}/{repo}:{tag}", login.registry.host);
        }
    }
}

/// Promote reads its source with its own role.
/// How a promote source outside ECR is read: with the credentials of `origin`, or anonymously (never its
/// values).
pub fn source_foreign(host: &str, origin: Option<&str>) {
    match origin {
        Some(origin) => say!("source: {host} read with the {origin} (the ECR token is not sent there)"),
        None => say!(
            "source: {host} read anonymously (it is neither an ECR registry nor a destination, so the ECR token is \
             not sent there, and the docker config holds no credentials for it)"
        ),
    }
}

pub fn read_role(how: &str, arn: &str) {
    say!("source: read with {how} (confirmed: {arn})");
}

pub fn dry_run(repo: &str, tags: usize, destinations: usize, repository: &RepositorySettings) {
    if repository.any() {
        say!("dry run: the repository settings would be applied to {repo}");
    }
    say!("dry run: {tags} tag(s) in {destinations} destination(s) would be written to {repo}; nothing was changed");
}

/// What the repository preparation did, one line per change.
pub fn repository(lines: &[String]) {
    for line in lines {
        say!("{line}");
    }
}

/// How the blobs of one manifest reached a destination.
pub fn copied(manifest: &str, target: &str, uploaded: usize, mounted: usize, there: usize) {
    say!(
        "copied: {} blob(s) of {manifest} to {target}: {uploaded} uploaded, {mounted} mounted, {there} already there",
        uploaded + mounted + there
    );
}

/// One referrer at a destination: copied (or made discoverable) by this run, or found there already.
pub fn referrer(artifact_type: &str, digest: &str, target: &str, copied: bool) {
    let what = if copied { "copied to" } else { "already in" };
    say!("referrer: {artifact_type} {digest} {what} {target}");
}

/// The referrers a promote found at the source.
pub fn referrers_found(count: usize, subject: &str) {
    say!("referrers: {count} found for {subject} (and what refers to them)");
}

pub fn referrers_summary(target: &str, copied: usize, there: usize) {
    say!("referrers: {copied} copied to {target}, {there} already there");
}

/// One tag's line. `held` is what the registry had under the tag before (when it was read).
pub fn tag(outcome: &TagOutcome, held: Option<&str>, verb: &str) {
    match (&outcome.result, held) {
        (Ok(l), _) if l.skipped => say!("skipped: {} {} (already at this digest)", outcome.reference, l.digest),
        (Ok(l), Some(before)) if before != l.digest => {
            say!("{verb}: {} {} (replaced {before})", outcome.reference, l.digest)
        }
        (Ok(l), _) => say!("{verb}: {} {}", outcome.reference, l.digest),
        (Err(e), _) => say!("failed: {}: {e:#}", outcome.reference),
    }
}

/// The live display on a terminal: one bar per destination that lasts (indicatif), above which every
/// other line is printed; `None` in a CI log (no terminal), where progress is plain lines.
fn display() -> Option<&'static indicatif::MultiProgress> {
    use std::io::IsTerminal;
    static DISPLAY: std::sync::OnceLock<Option<indicatif::MultiProgress>> = std::sync::OnceLock::new();
    DISPLAY
        .get_or_init(|| {
            std::io::stdout()
                .is_terminal()
                .then(|| indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stdout()))
        })
        .as_ref()
}

/// Print one line on stdout: above the live display when there is one, so neither tears the other.
fn emit(line: String) {
    match display() {
        Some(display) => display.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
}

/// How often a transfer's progress is shown: a live display redraws often, a CI log gets a line every
/// few seconds.
pub fn progress_interval() -> Duration {
    if display().is_some() {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    }
}

/// The bytes of one destination's transfer, shared by the uploads (which count) and the ticker (which
/// shows them): nothing in the first seconds, so short transfers show none; then, on a terminal, a bar of
/// its own in the live display, and in a CI log a `progress:` line every few seconds, never ANSI codes.
#[derive(Debug)]
pub struct Progress {
    pub label: String,
    pub total: u64,
    done: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    bar: std::sync::OnceLock<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(label: String, total: u64) -> Progress {
        Progress {
            label,
            total,
            done: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            bar: std::sync::OnceLock::new(),
        }
    }

    /// A count no ticker shows: for bytes that are counted elsewhere, or by nobody.
    pub fn unshown() -> std::sync::Arc<Progress> {
        std::sync::Arc::new(Progress::new(String::new(), 0))
    }

    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Show where the transfer is (the ticker calls this every [`progress_interval`]).
    pub fn print(&self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if elapsed < 3.0 {
            return;
        }
        let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(display) = display() {
            let bar = self.bar.get_or_init(|| {
                let style = indicatif::ProgressStyle::with_template(
                    // The label last, cut to the terminal's width: a bar never wraps onto a second line.
                    "progress: [{bar:20}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {wide_msg}",
                )
                .expect("a valid template")
                .progress_chars("=> ");
                display.add(
                    indicatif::ProgressBar::new(self.total)
                        .with_style(style)
                        .with_message(self.label.clone()),
                )
            });
            // A total of 0: not known yet: the bar follows the bytes.
            bar.set_length(if self.total == 0 { done } else { self.total });
            bar.set_position(if self.total == 0 { done } else { done.min(self.total) });
            return;
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        // A total of 0: not known yet (an upload that follows a compression, an index being copied).
        let of = if self.total == 0 {
            String::new()
        } else {
            format!(" of {:.1} MiB", mib(self.total))
        };
        say!(
            "progress: {} {:.1} MiB{of}, {:.1} MiB/s",
            self.label,
            mib(if self.total == 0 { done } else { done.min(self.total) }),
            mib(done) / elapsed
        );
    }

    /// The transfer ended: its bar (if it had one) leaves the display; the lines that follow say what
    /// landed.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}

/// A transient failure about to be tried again.
pub fn retrying(what: &str, wait: Duration, cause: &str) {
    let first = cause.lines().next().unwrap_or_default();
    say!("retrying: {what} in {:.1}s after: {first}", wait.as_secs_f64());
}

/// A registry refused the token and a fresh one was fetched.
pub fn token_refreshed(registry: &str, why: &str) {
    say!("token: fetched again for {registry} after {why}; retrying");
}

/// One check of check mode: what was checked, and the detail or the cause and its fix.
pub struct Check {
    pub what: String,
    pub result: Result<String, (String, String)>,
}

/// Check mode's report, and its verdict.
pub fn checks(checks: &[Check]) -> Result<()> {
    let failed = checks.iter().filter(|c| c.result.is_err()).count();
    for check in checks {
        match &check.result {
            Ok(detail) => say!("check: ok    {}: {detail}", check.what),
            // A cause that names its own fix (a certificate, a proxy, a name) keeps that one alone.
            Err((cause, _)) if cause.contains("\n  fix: ") => say!("check: FAIL  {}: {cause}", check.what),
            Err((cause, fix)) => say!("check: FAIL  {}: {cause}\n  fix: {fix}", check.what),
        }
    }
    say!(
        "check: {} of {} checks passed; nothing was changed",
        checks.len() - failed,
        checks.len()
    );
    if failed > 0 {
        bail!("{failed} check(s) failed: see the fixes above");
    }
    Ok(())
}

/// One destination's scan: the counts by severity, then every finding at or above the threshold.
pub fn scan(report: &ScanReport, gate: &ScanGate) {
    let counts: Vec<String> = Severity::ALL
        .iter()
        .map(|s| format!("{s} {}", report.counts.get(s).copied().unwrap_or(0)))
        .collect();
    say!("scan: {} {}", report.image, counts.join(", "));
    let mut serious: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity <= gate.threshold)
        .collect();
    serious.sort_by_key(|f| f.severity);
    let blocking = gate.blocking(&report.findings);
    for f in serious {
        let package = f.package.as_deref().map(|p| format!(" in {p}")).unwrap_or_default();
        let verdict = if blocking.contains(&f) {
            "fails the gate"
        } else {
            "ignored (PLUGIN_SCAN_IGNORE)"
        };
        say!("scan: {} {}{package}: {verdict}", f.severity, f.id);
    }
}

pub fn scan_unsupported(image: &str, why: &str) {
    say!("scan: {image} could not be scanned ({why}); passed (PLUGIN_SCAN_ALLOW_UNSUPPORTED=true)");
}

/// The scan gate's verdict over every destination: `Err` naming each finding that fails it.
pub fn scan_verdict(gate: &ScanGate, reports: &[ScanReport]) -> Result<()> {
    let mut failing: Vec<String> = reports
        .iter()
        .flat_map(|r| gate.blocking(&r.findings))
        .map(|f| format!("{} ({})", f.id, f.severity))
        .collect();
    failing.sort();
    failing.dedup();
    if failing.is_empty() {
        say!(
            "scan: no finding at or above {} (PLUGIN_SCAN_SEVERITY_THRESHOLD)",
            gate.threshold
        );
        return Ok(());
    }
    bail!(
        "the scan gate failed: {} finding(s) at or above {}: {}\n  fix: update the affected packages and push \
         again, or, after review, add the ids to PLUGIN_SCAN_IGNORE",
        failing.len(),
        gate.threshold,
        failing.join(", ")
    )
}

pub fn login(logins: &[RegistryLogin], path: &Path) {
    say!(
        "login: {} registr{} written to {} (mode 0600)",
        logins.len(),
        if logins.len() == 1 { "y" } else { "ies" },
        path.display()
    );
}

/// The final line, and the verdict: `Err` unless every tag landed in every destination.
pub fn summary(outcomes: &[TagOutcome], destinations: usize) -> Result<()> {
    let landed: Vec<_> = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).collect();
    let failed = outcomes.len() - landed.len();
    if failed == 0 {
        let skipped = landed.iter().filter(|l| l.skipped).count();
        let digest = landed.first().map_or("-", |l| l.digest.as_str());
        let already = if skipped > 0 {
            format!(", {skipped} already there")
        } else {
            String::new()
        };
        say!(
            "summary: {} of {} tag(s) written in {destinations} destination(s){already} ({digest})",
            landed.len() - skipped,
            outcomes.len()
        );
        Ok(())
    } else {
        let names: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.reference.as_str())
            .collect();
        bail!("{failed} of {} tag(s) failed: {}", outcomes.len(), names.join(", "))
    }
}

pub fn outputs(written: &[std::path::PathBuf]) {
    for path in written {
        say!("outputs: written to {}", path.display());
    }
}

/// An error and its causes, `: `-joined, each said once: how every adapter words a failure it did not
/// classify.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}
