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
    // credentials
    let identity = aws::resolve(&common.credentials, &common.region, common.timeout).await?;
    report::identity(&identity.principal, &common.credentials);
    // token
    let logins = aws::token::logins(&identity, &common.destinations).await?;
    report::logins(&logins, &identity.principal);
    // source → destinations
    let ctx = Context {
        identity,
        logins,
        common,
    };
    let outputs = match modes::run(&mode, &ctx).await? {
        // report
        Done::Tags {
            outcomes,
            target,
            scans,
        } => {
            report::summary(&outcomes, ctx.logins.len())?;
            let Some((gate, reports)) = scans else {
                return export(&outputs::of(&target, &ctx.logins, &outcomes), &ctx.common);
            };
            // The counts are exported whether or not the gate passes; then its verdict.
            let outputs = Outputs {
                scan: Some(outputs::scan_counts(&reports)),
                ..outputs::of(&target, &ctx.logins, &outcomes)
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
