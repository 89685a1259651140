//! The run's AWS identity: builds the one credential provider the credential plan describes, and confirms
//! it with `sts:GetCallerIdentity`, which also resolves and caches it. Every AWS client of the run is made
//! from [`Identity::sdk`]. IMDS is bounded to one attempt of one second, so a runner without an identity
//! fails fast. `PLUGIN_TIMEOUT` bounds every AWS operation, retries included.

use super::error;
use crate::domain::credentials::{Base, CredentialPlan, Hop, Level, Principal, WebToken};
use crate::domain::network;
use crate::domain::secret::Secret;
use anyhow::Result;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::config::{Credentials, SharedCredentialsProvider};
use std::sync::Arc;
use std::time::Duration;

/// The run's AWS identity, confirmed with STS: who it is (a [`Principal`], which the report shows) and the
/// SDK configuration every AWS client of the run is built from.
#[derive(Clone)]
pub struct Identity {
    pub principal: Principal,
    pub sdk: SdkConfig,
    /// Token files the step wrote for this identity (a token from a variable); removed when it is dropped.
    _token_files: Arc<Vec<TokenFile>>,
}

/// A web identity token written for the SDK, which reads tokens from files: in a directory of its own
/// (0700), the file 0600; both removed when the run ends.
struct TokenFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl TokenFile {
    fn write(token: &Secret) -> Result<TokenFile> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let unique = format!(
            "ecr-step-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow::anyhow!("creating {} for the web identity token: {e}", dir.display()))?;
        let path = dir.join("web-identity-token");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("writing the web identity token to {}: {e}", path.display()))?;
        file.write_all(token.expose().as_bytes())?;
        Ok(TokenFile { dir, path })
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::ops::Deref for Identity {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl Identity {
    /// An ECR client with this identity, in `region` (the run's own region when `None`).
    pub fn ecr(&self, region: Option<&str>) -> aws_sdk_ecr::Client {
        ecr_client(&self.sdk, region)
    }
}

/// An ECR client of `sdk`'s credentials, in `region` (the run's own region when `None`).
pub(super) fn ecr_client(sdk: &SdkConfig, region: Option<&str>) -> aws_sdk_ecr::Client {
    let mut config = aws_sdk_ecr::config::Builder::from(sdk);
    if let Some(r) = region {
        config = config.region(Region::new(r.to_string()));
    }
    aws_sdk_ecr::Client::from_conf(config.build())
}

/// The run's one credential provider, built from the plan and not yet confirmed (nothing was asked of AWS):
/// what [`Unconfirmed::confirm`] confirms and what the token is asked with meanwhile.
pub struct Unconfirmed {
    pub(super) sdk: SdkConfig,
    region: Region,
    token_files: Arc<Vec<TokenFile>>,
}

/// Build the run's one credential provider from the plan (a token from a variable is written to its file).
pub async fn build(plan: &CredentialPlan, region: &str, timeout: Duration) -> Result<Unconfirmed> {
    let region = Region::new(region.to_string());
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .timeout_config(timeouts.clone())
        .no_credentials()
        .load()
        .await;
    let mut token_files = Vec::new();
    let mut provider = match &plan.base {
        Base::Runtime => SharedCredentialsProvider::new(runtime_chain(region.clone()).await),
        Base::Keys(k) => SharedCredentialsProvider::new(Credentials::new(
            &k.access_key,
            k.secret_key.expose(),
            None,
            None,
            "PLUGIN_ACCESS_KEY",
        )),
        Base::WebIdentity { token, role_arn, .. } => {
            let token_file = match token {
                WebToken::File(file) => file.clone(),
                WebToken::Variable { token, .. } => {
                    let file = TokenFile::write(token)?;
                    let path = file.path.clone();
                    token_files.push(file);
                    path
                }
            };
            let config = ProviderConfig::default()
                .with_region(Some(region.clone()))
                .with_timeout_config(timeouts);
            SharedCredentialsProvider::new(
                WebIdentityTokenCredentialsProvider::builder()
                    .static_configuration(StaticConfiguration {
                        web_identity_token_file: token_file,
                        role_arn: role_arn.clone(),
                        session_name: plan.session_name.clone(),
                    })
                    .configure(&config)
                    .build(),
            )
        }
    };
    for hop in &plan.hops {
        let mut builder = AssumeRoleProvider::builder(&hop.role_arn).session_name(&plan.session_name);
        if let Some(id) = &hop.external_id {
            builder = builder.external_id(id.expose());
        }
        if let Some(d) = plan.duration {
            builder = builder.session_length(d);
        }
        let from = sdk.clone().into_builder().credentials_provider(provider).build();
        provider = SharedCredentialsProvider::new(builder.configure(&from).build().await);
    }
    let sdk = sdk.into_builder().credentials_provider(provider).build();
    Ok(Unconfirmed {
        sdk,
        region,
        token_files: Arc::new(token_files),
    })
}

impl Unconfirmed {
    /// Confirm the provider built from `plan` with `GetCallerIdentity` (which resolves and caches it).
    pub async fn confirm(&self, plan: &CredentialPlan) -> Result<Identity> {
        let Unconfirmed {
            sdk,
            region,
            token_files,
        } = self;
        confirm(sdk.clone(), plan.level, plan.describe(), token_files.clone())
            .await
            .map_err(|e| {
                // A network cause (a certificate, a proxy, a name) is not the credentials' fault: named as such.
                let host = error::endpoint_host("sts", region.as_ref());
                let proxy = network::proxy_for(&host, true, |k| std::env::var(k).ok());
                match network::cause_of(&crate::report::chain(&e), proxy.is_some()).filter(|c| !c.retryable()) {
                    Some(cause) => anyhow::anyhow!(
                        "{}-level credentials could not be confirmed: STS at {host} was not reached: {}",
                        plan.level,
                        cause.explain(&host, proxy.as_ref())
                    ),
                    None => anyhow::anyhow!(
                        "{}",
                        explain_failure(plan, &error::describe(&e), error::is_missing_credentials(&e))
                    ),
                }
            })
    }
}

/// A role assumed from an identity the run already has (promote's read role for a source in another account).
pub async fn assume_from(identity: &Identity, hop: &Hop, session_name: &str) -> Result<Identity> {
    let mut builder = AssumeRoleProvider::builder(&hop.role_arn).session_name(session_name);
    if let Some(id) = &hop.external_id {
        builder = builder.external_id(id.expose());
    }
    let provider = SharedCredentialsProvider::new(builder.configure(&identity.sdk).build().await);
    let sdk = identity
        .sdk
        .clone()
        .into_builder()
        .credentials_provider(provider)
        .build();
    let how = format!("role {} (assumed from {})", hop.role_arn, identity.arn);
    let token_files = identity._token_files.clone();
    confirm(sdk, identity.level, how.clone(), token_files).await.map_err(|e| {
        anyhow::anyhow!(
            "assuming the read role failed ({how}): {}\n  fix: the role's trust policy must allow {} (and the external \
             ID, if it requires one)",
            error::describe(&e),
            identity.arn
        )
    })
}

type StsError = aws_sdk_sts::error::SdkError<
    aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError,
    aws_sdk_ecr::config::http::HttpResponse,
>;

/// Resolve the provider once (cached in the config) and learn who it is.
async fn confirm(
    sdk: SdkConfig,
    level: Level,
    how: String,
    token_files: Arc<Vec<TokenFile>>,
) -> Result<Identity, StsError> {
    let me = aws_sdk_sts::Client::new(&sdk).get_caller_identity().send().await?;
    Ok(Identity {
        principal: Principal {
            level,
            how,
            arn: me.arn().unwrap_or("unknown").to_string(),
            account: me.account().unwrap_or("unknown").to_string(),
        },
        sdk,
        _token_files: token_files,
    })
}

/// Why the chosen level gave no identity, and what to fix. Never suggests another level.
fn explain_failure(plan: &CredentialPlan, cause: &str, missing: bool) -> String {
    let level = plan.level;
    let how = plan.describe();
    let fix = if cause.contains("AccessDenied") && !plan.hops.is_empty() {
        "the role's trust policy must allow the principal it is assumed from (and the external ID, if the policy \
         requires one), and that principal needs sts:AssumeRole on the role"
            .to_string()
    } else if cause.contains("InvalidIdentityToken") || cause.contains("IDPRejectedClaim") {
        "the web identity token was refused: check the token file is current and the role trusts its issuer and audience"
            .to_string()
    } else if cause.contains("ExpiredToken") {
        "the credentials or web identity token have expired: refresh them (a new token file, new keys)".to_string()
    } else if cause.contains("InvalidClientTokenId") || cause.contains("SignatureDoesNotMatch") {
        "the access key or secret key is wrong or inactive: check PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY".to_string()
    } else if missing || cause.contains("no credentials") || cause.contains("credentials provider") {
        match level {
            Level::Runtime => "no AWS credentials found: set PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY, or give the \
                               container an identity (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a web identity token, an \
                               ECS task role or an instance role)"
                .to_string(),
            _ => format!(
                "no AWS credentials found for the {level} level's first step ({how}): the runner itself needs \
                 credentials to assume the role"
            ),
        }
    } else {
        "check the settings of this level and that STS is reachable".to_string()
    };
    format!(
        "{level}-level credentials failed ({how}): {cause}\n  fix: {fix}\n  (the step never falls back to a lower level)"
    )
}

/// The container's standard chain, with IMDS bounded: one attempt, one second.
async fn runtime_chain(region: Region) -> DefaultCredentialsChain {
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .max_attempts(1)
        .build();
    DefaultCredentialsChain::builder()
        .region(region)
        .imds_client(imds)
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credentials::{CredentialSettings, RoleSettings, plan};
    use crate::domain::secret::Secret;
    use std::collections::HashMap;

    fn ok(s: CredentialSettings) -> CredentialPlan {
        plan(s, &HashMap::new()).unwrap()
    }

    #[test]
    fn failures_say_what_to_fix_and_never_suggest_another_level() {
        let p = ok(CredentialSettings {
            trigger: RoleSettings {
                role_arn: Some("arn:aws:iam::111111111111:role/trigger".into()),
                ..Default::default()
            },
            access_key: Some("AKIAIOSFODNN7EXAMPLE".into()),
            secret_key: Some(Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
            ..Default::default()
        });
        let text = explain_failure(&p, "AccessDenied: not authorized to perform sts:AssumeRole", false);
        assert!(text.starts_with("trigger-level credentials failed"), "{text}");
        assert!(
            text.contains("trust policy") && text.contains("never falls back"),
            "{text}"
        );
        let text = explain_failure(&p, "dispatch failure: no credentials in chain", true);
        assert!(text.contains("the runner itself needs credentials"), "{text}");
        let text = explain_failure(&ok(CredentialSettings::default()), "no credentials", true);
        assert!(text.contains("set PLUGIN_ACCESS_KEY"), "{text}");
    }
}
