//! Check mode: the "Test connection" of an integration. Confirms each thing a push needs, in order, and
//! prints a fix for each failure; changes nothing.
//!
//! Credentials and tokens are confirmed before this module runs (a failure there already says what to fix);
//! here, per destination: the registry accepts the token, the repository exists and can be read (through
//! the one `describe` of `aws::repository`), and the identity may write to it (a blob upload started and
//! cancelled at once).

use super::context::{Context, Done};
use crate::aws::{self, error::managed_policy, repository::Failed};
use crate::domain::login::RegistryLogin;
use crate::domain::repository::RepositoryAt;
use crate::registry::RegistryClient;
use crate::report::Check;
use crate::settings::CheckSettings;
use anyhow::Result;

pub async fn run(settings: &CheckSettings, ctx: &Context) -> Result<Done> {
    let (identity, repo) = (&ctx.identity, settings.repo.as_str());
    let mut checks = vec![Check {
        what: "credentials".into(),
        result: Ok(format!("{}", identity.principal)),
    }];
    for login in &ctx.logins {
        let host = &login.registry.host;
        checks.push(Check {
            what: format!("token for {host}"),
            result: Ok(format!(
                "issued for account {}",
                login.token_account.as_deref().unwrap_or(&identity.account)
            )),
        });
        let client = RegistryClient::new(login, ctx.common.timeout)?;
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
        let (repository, exists) = repository(ctx, login, repo, settings.create_repository).await;
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
                            managed_policy("PutImage")
                        ),
                    )
                }),
            });
        }
    }
    crate::report::checks(&checks)?;
    Ok(Done::Check)
}

/// The repository's check, and whether it exists (a write can only be probed in one that does).
async fn repository(ctx: &Context, login: &RegistryLogin, repo: &str, create: bool) -> (Check, bool) {
    let what = format!("repository {repo} in {}", login.registry.host);
    let at = RepositoryAt::of(repo, login);
    let (result, exists) = match aws::repository::state(&ctx.identity, &at).await {
        Ok(Some(state)) => (
            Ok(format!(
                "exists ({}, scan on push {})",
                state.mutability, state.scan_on_push
            )),
            true,
        ),
        Ok(None) if create => (
            Ok(
                "does not exist yet: a push with PLUGIN_CREATE_REPOSITORY=true (set) creates it, which needs \
                ecr:CreateRepository; the write check waits until it exists"
                    .to_string(),
            ),
            false,
        ),
        Ok(None) => (
            Err((
                "does not exist".to_string(),
                format!(
                    "create it (aws ecr create-repository --repository-name {repo}) or set PLUGIN_CREATE_REPOSITORY=true"
                ),
            )),
            false,
        ),
        Err(e) => {
            let (cause, fix) = match e.downcast_ref::<Failed>() {
                Some(f) => (f.cause.clone(), f.fix.clone()),
                None => (format!("{e:#}"), "check that ECR is reachable".to_string()),
            };
            (Err((cause, fix)), false)
        }
    };
    (Check { what, result }, exists)
}
