//! Check mode: the "Test connection" of an integration. Confirms each thing a push needs, in order, and
//! prints a fix for each failure; changes nothing.
//!
//! Credentials and tokens are confirmed before this module runs (a failure there already says what to fix);
//! here, per destination: the registry accepts the token, the repository exists and can be read, and the
//! identity may write to it (a blob upload started and cancelled at once).

use crate::aws_error;
use crate::credentials::Identity;
use crate::registry_client::RegistryClient;
use crate::token::RegistryLogin;
use anyhow::{Result, bail};
use std::time::Duration;

/// One line of the report.
struct Check {
    what: String,
    result: Result<String, (String, String)>,
}

/// `create`: `PLUGIN_CREATE_REPOSITORY=true`, under which a missing repository is what a push will create.
pub async fn run(
    identity: &Identity,
    repo: &str,
    create: bool,
    logins: &[RegistryLogin],
    timeout: Duration,
) -> Result<()> {
    let mut checks = vec![Check {
        what: "credentials".into(),
        result: Ok(format!("{identity}")),
    }];
    for login in logins {
        let host = &login.registry.host;
        checks.push(Check {
            what: format!("token for {host}"),
            result: Ok(format!(
                "issued for account {}",
                login.token_account.as_deref().unwrap_or(&identity.account)
            )),
        });
        let client = RegistryClient::new(login, timeout)?;
        let signed_in = client.ping().await;
        let ok = signed_in.is_ok();
        checks.push(Check {
            what: format!("sign in to {host}"),
            result: signed_in
                .map(|_| "the registry accepts the token".to_string())
                .map_err(|e| {
                    (
                        format!("{e:#}"),
                        "use credentials of the registry's account, or a repository policy that allows them".into(),
                    )
                }),
        });
        let (repository, exists) = repository(identity, login, repo, create).await;
        checks.push(repository);
        if ok && exists {
            checks.push(Check {
                what: format!("write to {host}/{repo}"),
                result: client.probe_upload(repo).await.map(|_| "an upload can start (cancelled at once)".into()).map_err(|e| {
                    (
                        format!("{e:#}"),
                        format!(
                            "allow ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload, ecr:PutImage \
                             and ecr:BatchCheckLayerAvailability on {repo} ({} grants them)",
                            aws_error::managed_policy("PutImage")
                        ),
                    )
                }),
            });
        }
    }
    let failed = checks.iter().filter(|c| c.result.is_err()).count();
    for check in &checks {
        match &check.result {
            Ok(detail) => println!("check: ok    {}: {detail}", check.what),
            Err((cause, fix)) => println!("check: FAIL  {}: {cause}\n  fix: {fix}", check.what),
        }
    }
    println!(
        "check: {} of {} checks passed; nothing was changed",
        checks.len() - failed,
        checks.len()
    );
    if failed > 0 {
        bail!("{failed} check(s) failed: see the fixes above");
    }
    Ok(())
}

/// The repository's check, and whether it exists (a write can only be probed in one that does).
async fn repository(identity: &Identity, login: &RegistryLogin, repo: &str, create: bool) -> (Check, bool) {
    let target = crate::repository::Target::of(repo, login);
    let ecr = identity.ecr(target.region);
    let what = format!("repository {repo} in {}", login.registry.host);
    let answer = ecr
        .describe_repositories()
        .repository_names(repo)
        .set_registry_id(target.registry_id.map(String::from))
        .send()
        .await;
    let mut exists = false;
    let result = match answer {
        Ok(a) => {
            exists = true;
            let r = a.repositories().first();
            let mutability = r
                .and_then(|r| r.image_tag_mutability())
                .map_or("MUTABLE", |m| m.as_str());
            let scan = r
                .and_then(|r| r.image_scanning_configuration())
                .is_some_and(|c| c.scan_on_push());
            Ok(format!("exists ({mutability}, scan on push {scan})"))
        }
        Err(e)
            if create
                && e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            Ok(
                "does not exist yet: a push with PLUGIN_CREATE_REPOSITORY=true (set) creates it, which needs \
                 ecr:CreateRepository; the write check waits until it exists"
                    .to_string(),
            )
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            Err((
                "does not exist".to_string(),
                format!(
                    "create it (aws ecr create-repository --repository-name {repo}) or set PLUGIN_CREATE_REPOSITORY=true"
                ),
            ))
        }
        Err(e) => {
            let code = aws_error::code(&e).unwrap_or_default();
            let fix = if code.contains("AccessDenied") {
                format!(
                    "allow ecr:DescribeRepositories on {repo} for {} ({} grants it)",
                    identity.arn,
                    aws_error::managed_policy("DescribeRepositories")
                )
            } else {
                "check that ECR is reachable".to_string()
            };
            Err((
                format!("ecr:DescribeRepositories failed: {}", aws_error::describe(&e)),
                fix,
            ))
        }
    };
    (Check { what, result }, exists)
}
