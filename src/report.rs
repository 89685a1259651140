//! Report: everything the step prints for the user, one line per fact, and the run's verdict.
//!
//! Lines go to stdout; the verdict is an `Err` when anything did not land, which `main` turns into exit 1.

use crate::credentials::{CredentialPlan, Identity};
use crate::promote::PromotePlan;
use crate::push::{PushPlan, TagOutcome};
use crate::registry_client::Manifest;
use crate::repository::RepositorySettings;
use crate::token::RegistryLogin;
use anyhow::{Result, bail};

pub fn identity(identity: &Identity, plan: &CredentialPlan) {
    println!("credentials: {identity}");
    if !plan.ignored.is_empty() {
        let names: Vec<String> = plan.ignored.iter().map(|l| format!("{l}")).collect();
        println!(
            "credentials: also configured and not used: {} level (the {} level wins)",
            names.join(", "),
            plan.level
        );
    }
}

pub fn logins(logins: &[RegistryLogin], identity: &Identity) {
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
        let account = login.token_account.as_deref().unwrap_or(&identity.account);
        println!("registry: {} (token for account {account}){cross}", login.registry);
    }
}

pub fn push_plan(plan: &PushPlan, logins: &[RegistryLogin]) {
    let mib = plan.source.size as f64 / (1024.0 * 1024.0);
    println!(
        "source: {} ({}, {mib:.1} MiB)",
        plan.source.reference,
        short_id(&plan.source.id)
    );
    for login in logins {
        for tag in &plan.tags {
            println!("plan: push {}/{}:{tag}", login.registry.host, plan.repo);
        }
    }
}

pub fn promote_plan(plan: &PromotePlan, manifest: &Manifest, logins: &[RegistryLogin]) {
    let kind = if manifest.is_index() { "index" } else { "image" };
    let source = match plan.source.host {
        Some(_) => plan.source.to_string(),
        None => format!("{}/{}", plan.source_login.registry.host, plan.source),
    };
    println!("source: {source} ({kind} {})", manifest.digest);
    for login in logins {
        for tag in &plan.tags {
            println!("plan: promote to {}/{}:{tag}", login.registry.host, plan.repo);
        }
    }
}

pub fn dry_run(repo: &str, tags: usize, logins: &[RegistryLogin], repository: &RepositorySettings) {
    if repository.any() {
        println!("dry run: the repository settings would be applied to {repo}");
    }
    println!(
        "dry run: {tags} tag(s) in {} destination(s) would be written to {repo}; nothing was changed",
        logins.len()
    );
}

/// One tag's line. `held` is what the registry had under the tag before (skip-existing runs only).
pub fn tag(outcome: &TagOutcome, held: Option<&str>, verb: &str) {
    match (&outcome.result, held) {
        (Ok(l), _) if l.skipped => println!("skipped: {} {} (already at this digest)", outcome.reference, l.digest),
        (Ok(l), Some(before)) => println!("{verb}: {} {} (replaced {before})", outcome.reference, l.digest),
        (Ok(l), None) => println!("{verb}: {} {}", outcome.reference, l.digest),
        (Err(e), _) => println!("failed: {}: {e:#}", outcome.reference),
    }
}

pub fn repository(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

/// The final line, and the verdict: `Err` unless every tag landed in every destination.
pub fn summary(outcomes: &[TagOutcome], destinations: usize) -> Result<()> {
    let landed: Vec<_> = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).collect();
    let failed = outcomes.len() - landed.len();
    if failed == 0 {
        let skipped = landed.iter().filter(|l| l.skipped).count();
        let digest = landed.first().map_or("-", |l| l.digest.as_str());
        let skipped = if skipped > 0 {
            format!(", {skipped} already there")
        } else {
            String::new()
        };
        println!(
            "summary: {} of {} tag(s) written in {destinations} destination(s){skipped} ({digest})",
            landed.len() - landed.iter().filter(|l| l.skipped).count(),
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
        println!("outputs: written to {}", path.display());
    }
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}
