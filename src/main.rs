//! ecr-step: push or promote container images into Amazon ECR from a CI pipeline.
//!
//! The run is one straight line, and `run` below reads like it:
//! settings → credentials → token → source → destinations → report.
//! See ARCHITECTURE.md for the layers, the rule between them and the invariants.

use anyhow::Result;
use ecr_step::domain::branch::Verdict;
use ecr_step::modes::{self, Context, Done};
use ecr_step::outputs::{self, Outputs};
use ecr_step::settings::{self, Settings};
use ecr_step::{aws, report};
use std::process::ExitCode;

fn main() -> ExitCode {
    use_the_ca_bundle_alone();
    if let Some(code) = arguments() {
        return code;
    }
    exempt_the_metadata_endpoints_from_proxies();
    // Kept for the whole run: the bundle the HTTPS clients read.
    let _trusted = match add_the_aws_ca_bundle() {
        Ok(dir) => dir,
        Err(e) => {
            report::error(&e);
            return ExitCode::FAILURE;
        }
    };
    // Settings are read (files included) before the runtime starts: no blocking read ever sits on the
    // thread that waits for signals, and until the runtime starts SIGTERM ends the process at once.
    let settings = match Settings::from_env(std::env::vars_os()) {
        Ok(settings) => settings,
        Err(e) => {
            report::error(&e);
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(step(settings));
    // Threads still reading or compressing files (after a signal or a failure elsewhere) are not waited for;
    // their scratch directories go now.
    runtime.shutdown_background();
    ecr_step::files::scratch::remove_all();
    code
}

/// The HTTPS clients load the system's CA certificates when they are built, before the first request.
/// Without `SSL_CERT_FILE`/`SSL_CERT_DIR`, that means the bundle *and* every file of `/etc/ssl/certs`
/// (about 150 files, most of the step's start-up time). On Debian-like systems the bundle already holds
/// every certificate of that directory, so the bundle alone is read. A user's own setting is kept.
fn use_the_ca_bundle_alone() {
    const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
    let unset = |k: &str| std::env::var_os(k).is_none();
    if unset("SSL_CERT_FILE") && unset("SSL_CERT_DIR") && std::path::Path::new(BUNDLE).is_file() {
        // SAFETY: no other thread exists yet; the runtime is built after this.
        unsafe { std::env::set_var("SSL_CERT_FILE", BUNDLE) };
    }
}

/// `AWS_CA_BUNDLE`, read as the AWS CLI and every other AWS SDK read it: its certificates are added to the
/// roots the step trusts (the bundle of `SSL_CERT_FILE`, else the system's), for the AWS calls and the
/// registries alike, through a combined bundle in a private scratch directory that `SSL_CERT_FILE` then
/// names. With `SSL_CERT_DIR` alone, the directory's roots stay too.
fn add_the_aws_ca_bundle() -> Result<Option<ecr_step::files::ScratchDir>> {
    use anyhow::anyhow;
    let Some(extra) = std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let shown = std::path::Path::new(&extra).display().to_string();
    let read = |path: &std::path::Path, what: &str| {
        ecr_step::files::read_bounded(path, 4 << 20).map_err(|e| anyhow!("{what}: {e}"))
    };
    let added = read(std::path::Path::new(&extra), "AWS_CA_BUNDLE")?;
    if !added.contains("-----BEGIN CERTIFICATE-----") {
        return Err(anyhow!(
            "AWS_CA_BUNDLE={shown} holds no PEM certificate
  fix: point it at your CA's certificate in PEM form              (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let base = match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        Some(file) => read(std::path::Path::new(&file), "SSL_CERT_FILE")?,
        None => String::new(),
    };
    let dir = ecr_step::files::ScratchDir::new("ca").map_err(|e| anyhow!("AWS_CA_BUNDLE: a scratch directory: {e}"))?;
    let combined = dir.path.join("ca-bundle.pem");
    std::fs::write(&combined, format!("{base}\n{added}\n")).map_err(|e| anyhow!("AWS_CA_BUNDLE: {e}"))?;
    // SAFETY: no other thread exists yet; the runtime is built after this.
    unsafe { std::env::set_var("SSL_CERT_FILE", &combined) };
    Ok(Some(dir))
}

/// The instance and container credential endpoints (IMDS, ECS, EKS Pod Identity) are link-local: a proxy
/// must never carry their requests (the SDK does not exempt them). They are added to `NO_PROXY` when a
/// proxy is set.
fn exempt_the_metadata_endpoints_from_proxies() {
    const METADATA: &str = "169.254.169.254,169.254.170.2,169.254.170.23,fd00:ec2::254,fd00:ec2::23";
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|k| set(k).is_some());
    if !proxied {
        return;
    }
    for key in ["NO_PROXY", "no_proxy"] {
        let value = match set(key) {
            Some(list) => format!("{list},{METADATA}"),
            None => METADATA.to_string(),
        };
        // SAFETY: no other thread exists yet; the runtime is built after this.
        unsafe { std::env::set_var(key, value) };
    }
}

/// `--help`, `--version`, or a refusal of any other argument; `None` to run.
fn arguments() -> Option<ExitCode> {
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            report::text(&settings::help());
            Some(ExitCode::SUCCESS)
        }
        Some("--version" | "-V") => {
            report::text(&format!("ecr-step {}\n", env!("CARGO_PKG_VERSION")));
            Some(ExitCode::SUCCESS)
        }
        Some(other) => {
            report::error(&anyhow::anyhow!(
                "ecr-step takes no arguments (got `{other}`): configure it with PLUGIN_* variables, see --help"
            ));
            Some(ExitCode::from(2))
        }
        None => None,
    }
}

async fn step(settings: Settings) -> ExitCode {
    tokio::select! {
        result = run(settings) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report::error(&e);
                ExitCode::FAILURE
            }
        },
        signal = terminated() => {
            report::error(&anyhow::anyhow!(
                "stopped by {signal}: whatever was not reported as pushed above did not land"
            ));
            ExitCode::from(130)
        }
    }
}

/// SIGTERM (a CI cancelling the job) or SIGINT: the run stops at once, unfinished work is dropped.
async fn terminated() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn run(settings: Settings) -> Result<()> {
    let Settings { common, mode } = settings;
    let export = |outputs: &Outputs, common: &settings::Common| -> Result<()> {
        let written = outputs::write(outputs, common.output_file.as_deref(), &common.ambient)?;
        report::outputs(&written);
        Ok(())
    };
    if let Verdict::Skip(why) = &common.branch {
        report::skipped(why);
        if mode.writes_outputs() {
            export(
                &Outputs {
                    skipped: true,
                    ..Default::default()
                },
                &common,
            )?;
        }
        return Ok(());
    }
    report::origins(&common.origins);
    // credentials and token (asked at once), and the source looked at meanwhile (it needs neither; its
    // failure is said by the mode, and a failed sign-in does not wait for it)
    let signed_in = aws::sign_in(
        &common.credentials,
        &common.region,
        common.timeout,
        &common.destinations,
    );
    let looked = async { Ok(modes::look(&mode, common.timeout).await) };
    let ((identity, logins), looked) = tokio::try_join!(signed_in, looked)?;
    report::identity(&identity.principal, &common.credentials);
    report::logins(&logins, &identity.principal);
    // source → destinations
    let ctx = Context {
        identity,
        logins,
        common,
        looked,
    };
    let outputs = match modes::run(&mode, &ctx).await? {
        // report
        Done::Tags {
            outcomes,
            target,
            scans,
            image,
        } => {
            report::summary(&outcomes, ctx.logins.len())?;
            let written = outputs::of(&target, &ctx.logins, &outcomes, image);
            let Some((gate, reports)) = scans else {
                return export(&written, &ctx.common);
            };
            // The counts are exported whether or not the gate passes; then its verdict.
            let outputs = Outputs {
                scan: Some(outputs::scan_counts(&reports)),
                ..written
            };
            export(&outputs, &ctx.common)?;
            return report::scan_verdict(&gate, &reports);
        }
        Done::DryRun { target } => Outputs {
            dry_run: true,
            ..outputs::planned(&target, &ctx.logins)
        },
        Done::Login => Outputs {
            registries: ctx.logins.iter().map(|l| l.registry.host.clone()).collect(),
            login: true,
            ..Default::default()
        },
        Done::Check => return Ok(()),
    };
    export(&outputs, &ctx.common)
}
