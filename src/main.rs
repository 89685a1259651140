//! ecr-step: push or promote container images into Amazon ECR from a CI pipeline.
//!
//! The run is one straight line: settings → credentials → token → engine or registry → report.
//! See ARCHITECTURE.md for the map of the modules and the invariants they keep.

use anyhow::Result;
use ecr_step::branch::Verdict;
use ecr_step::settings::{self, Mode, Settings};
use ecr_step::{check, credentials, login, outputs, promote, push, report, token};
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
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(step(settings))
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
            print!("{}", settings::help());
            Some(ExitCode::SUCCESS)
        }
        Some("--version" | "-V") => {
            println!("ecr-step {}", env!("CARGO_PKG_VERSION"));
            Some(ExitCode::SUCCESS)
        }
        Some(other) => {
            eprintln!(
                "error: ecr-step takes no arguments (got `{other}`): configure it with PLUGIN_* variables, see --help"
            );
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
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        signal = terminated() => {
            eprintln!("error: stopped by {signal}: whatever was not reported as pushed above did not land");
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
    if let Verdict::Skip(why) = &settings.branch {
        println!("skipped: {why}; nothing was pushed");
        return Ok(());
    }
    let identity = credentials::resolve(&settings.credentials, &settings.region, settings.timeout).await?;
    report::identity(&identity, &settings.credentials);
    let logins = token::logins(&identity, &settings.target.destinations).await?;
    report::logins(&logins, &identity);
    let outcomes = match settings.mode {
        Mode::Push => push::run(&settings, &identity, &logins).await?,
        Mode::Promote => promote::run(&settings, &identity, &logins).await?,
        Mode::Login => return login::run(&settings, &logins).await,
        Mode::Check => {
            let (repo, create) = (&settings.target.repo, settings.repository.create);
            return check::run(&identity, repo, create, &logins, settings.timeout).await;
        }
    };
    let Some(outcomes) = outcomes else { return Ok(()) };
    report::summary(&outcomes, logins.len())?;
    report::outputs(&outputs::write(
        &outputs::of(&settings.target, &logins, &outcomes),
        settings.output_file.as_deref(),
        &settings.ambient,
    )?);
    Ok(())
}
