//! Repository: the target repository through the ECR API: prepares it before anything is pushed, and
//! describes it (the one `describe`, used for mutability and by check mode).
//!
//! Creates it when missing and `PLUGIN_CREATE_REPOSITORY=true`; on an existing repository applies only
//! the settings the user set (an unset setting never resets scanning or mutability to a default). Runs
//! only when at least one repository setting is given, so a push-only policy needs no extra permission.

use super::Identity;
use super::error as aws_error;
use crate::domain::login::RegistryLogin;
use crate::domain::repository::{Encryption, Mutability, RepositoryAt, RepositorySettings, TagRule, summary};
use anyhow::{Result, anyhow, bail};
use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType, Repository, Tag,
};

/// Prepare the repository in every destination that is an ECR registry of the run's account or another
/// (a registry that is not an ECR host is prepared through the run's own ECR API), when any repository
/// setting is given. Prints what was done.
pub async fn prepare_all(
    identity: &Identity,
    repo: &str,
    settings: &RepositorySettings,
    logins: &[RegistryLogin],
) -> Result<()> {
    if !settings.any() {
        return Ok(());
    }
    for target in RepositoryAt::each(repo, logins) {
        crate::report::repository(&prepare(identity, &target, settings).await?);
    }
    Ok(())
}

/// Make the repository match the settings; returns one line per thing done, for the report.
pub async fn prepare(
    identity: &Identity,
    target: &RepositoryAt<'_>,
    settings: &RepositorySettings,
) -> Result<Vec<String>> {
    let ecr = identity.ecr(target.region);
    let repo = target.repo;
    let mut done = Vec::new();
    let existing = describe(&ecr, target)
        .await
        .map_err(|e| failed("DescribeRepositories", repo, &e, identity))?;
    let existing = match existing {
        Some(r) => r,
        None if !settings.create => bail!(
            "the repository {repo} does not exist in {}: set PLUGIN_CREATE_REPOSITORY=true to create it, or create it \
             (aws ecr create-repository --repository-name {repo})",
            target.registry_id.unwrap_or("the caller's account")
        ),
        None => {
            let created = create(&ecr, target, settings).await;
            match created {
                Ok(()) => done.push(format!("repository {repo}: created ({})", summary(settings))),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_repository_already_exists_exception()) =>
                {
                    done.push(format!("repository {repo}: created meanwhile by another run"));
                }
                Err(e) => return Err(failed("CreateRepository", repo, &e, identity)),
            }
            // Everything else was set at creation; policies are applied below.
            return apply_policies(&ecr, target, settings, identity, done).await;
        }
    };

    if let Some(want) = &settings.tag_mutability {
        let have = rule_of(&existing);
        if have != *want {
            ecr.put_image_tag_mutability()
                .repository_name(repo)
                .set_registry_id(target.registry_id.map(String::from))
                .image_tag_mutability(api(want.mutability))
                .set_image_tag_mutability_exclusion_filters(filters(want))
                .send()
                .await
                .map_err(|e| failed("PutImageTagMutability", repo, &e, identity))?;
            done.push(format!(
                "repository {repo}: tag mutability {} → {}",
                describe_rule(&have),
                describe_rule(want)
            ));
        }
    }
    if let Some(want) = settings.scan_on_push {
        let have = existing
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push());
        if have != want {
            ecr.put_image_scanning_configuration()
                .repository_name(repo)
                .set_registry_id(target.registry_id.map(String::from))
                .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(want).build())
                .send()
                .await
                .map_err(|e| failed("PutImageScanningConfiguration", repo, &e, identity))?;
            done.push(format!("repository {repo}: scan on push {have} → {want}"));
        }
    }
    if let Some(want) = &settings.encryption {
        let have = existing.encryption_configuration();
        let have_type = have.map(|c| c.encryption_type().as_str()).unwrap_or("AES256");
        let same = match want {
            Encryption::Aes256 => have_type == "AES256",
            Encryption::Kms(key) => {
                have_type.starts_with("KMS")
                    && key
                        .as_deref()
                        .is_none_or(|k| have.and_then(|c| c.kms_key()).is_some_and(|h| h.contains(k)))
            }
        };
        if !same {
            bail!(
                "the repository {repo} exists with {have_type} encryption, which PLUGIN_ENCRYPTION/PLUGIN_KMS_KEY ask to \
                 change: ECR sets encryption only at creation. Remove the settings, or recreate the repository"
            );
        }
    }
    if !settings.tags.is_empty() {
        let arn = existing
            .repository_arn()
            .ok_or_else(|| anyhow!("ECR described {repo} without an ARN"))?;
        ecr.tag_resource()
            .resource_arn(arn)
            .set_tags(Some(api_tags(&settings.tags)?))
            .send()
            .await
            .map_err(|e| failed("TagResource", repo, &e, identity))?;
        done.push(format!(
            "repository {repo}: {} resource tag(s) set",
            settings.tags.len()
        ));
    }
    if done.is_empty() && settings.lifecycle_policy.is_none() && settings.repository_policy.is_none() {
        done.push(format!("repository {repo}: exists, nothing to change"));
    }
    apply_policies(&ecr, target, settings, identity, done).await
}

async fn apply_policies(
    ecr: &Client,
    target: &RepositoryAt<'_>,
    settings: &RepositorySettings,
    identity: &Identity,
    mut done: Vec<String>,
) -> Result<Vec<String>> {
    let repo = target.repo;
    if let Some(policy) = &settings.lifecycle_policy {
        ecr.put_lifecycle_policy()
            .repository_name(repo)
            .set_registry_id(target.registry_id.map(String::from))
            .lifecycle_policy_text(policy)
            .send()
            .await
            .map_err(|e| failed("PutLifecyclePolicy", repo, &e, identity))?;
        done.push(format!("repository {repo}: lifecycle policy applied"));
    }
    if let Some(policy) = &settings.repository_policy {
        ecr.set_repository_policy()
            .repository_name(repo)
            .set_registry_id(target.registry_id.map(String::from))
            .policy_text(policy)
            .send()
            .await
            .map_err(|e| failed("SetRepositoryPolicy", repo, &e, identity))?;
        done.push(format!("repository {repo}: repository policy applied"));
    }
    Ok(done)
}

/// What check mode shows of an existing repository.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub mutability: String,
    pub scan_on_push: bool,
}

/// The repository's state, `None` when it does not exist; an error says what failed and what to fix.
pub async fn state(identity: &Identity, target: &RepositoryAt<'_>) -> Result<Option<State>> {
    let ecr = identity.ecr(target.region);
    let described = describe(&ecr, target)
        .await
        .map_err(|e| failed("DescribeRepositories", target.repo, &e, identity))?;
    Ok(described.map(|r| State {
        mutability: r.image_tag_mutability().map_or("MUTABLE", |m| m.as_str()).to_string(),
        scan_on_push: r.image_scanning_configuration().is_some_and(|c| c.scan_on_push()),
    }))
}

/// Whether `repo` exists in every destination's registry already (read only); `false` where one cannot be
/// read.
pub async fn exists_everywhere(identity: &Identity, repo: &str, logins: &[RegistryLogin]) -> bool {
    let asked = RepositoryAt::each(repo, logins)
        .into_iter()
        .map(|target| async move { matches!(state(identity, &target).await, Ok(Some(_))) });
    futures_util::future::join_all(asked)
        .await
        .into_iter()
        .all(|there| there)
}

/// The repository's tag mutability with its exclusions, `None` when it cannot be read (no permission, no
/// repository).
pub async fn mutability(identity: &Identity, target: &RepositoryAt<'_>) -> Option<TagRule> {
    let ecr = identity.ecr(target.region);
    let repository = describe(&ecr, target).await.ok()??;
    Some(rule_of(&repository))
}

fn rule_of(repository: &Repository) -> TagRule {
    let mutability = repository
        .image_tag_mutability()
        .and_then(|m| Mutability::parse(m.as_str()).ok())
        .unwrap_or(Mutability::Mutable);
    TagRule {
        mutability,
        exclusions: repository
            .image_tag_mutability_exclusion_filters()
            .iter()
            .map(|f| f.filter().to_string())
            .collect(),
    }
}

fn describe_rule(rule: &TagRule) -> String {
    if rule.exclusions.is_empty() {
        rule.mutability.api_str().to_string()
    } else {
        format!("{} (except {})", rule.mutability.api_str(), rule.exclusions.join(", "))
    }
}

/// The API's exclusion filters of a rule (`None` for the kinds without exclusions).
fn filters(rule: &TagRule) -> Option<Vec<ImageTagMutabilityExclusionFilter>> {
    if !rule.mutability.with_exclusions() {
        return None;
    }
    Some(
        rule.exclusions
            .iter()
            .map(|f| {
                ImageTagMutabilityExclusionFilter::builder()
                    .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                    .filter(f)
                    .build()
                    .expect("type and filter are set")
            })
            .collect(),
    )
}

async fn describe(
    ecr: &Client,
    target: &RepositoryAt<'_>,
) -> Result<Option<Repository>, SdkError<aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesError>> {
    let answer = ecr
        .describe_repositories()
        .repository_names(target.repo)
        .set_registry_id(target.registry_id.map(String::from))
        .send()
        .await;
    match answer {
        Ok(a) => Ok(a.repositories().first().cloned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn create(
    ecr: &Client,
    target: &RepositoryAt<'_>,
    s: &RepositorySettings,
) -> Result<(), SdkError<aws_sdk_ecr::operation::create_repository::CreateRepositoryError>> {
    let mut call = ecr
        .create_repository()
        .repository_name(target.repo)
        .set_registry_id(target.registry_id.map(String::from));
    if let Some(rule) = &s.tag_mutability {
        call = call
            .image_tag_mutability(api(rule.mutability))
            .set_image_tag_mutability_exclusion_filters(filters(rule));
    }
    if let Some(scan) = s.scan_on_push {
        call = call.image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(scan).build());
    }
    if let Some(e) = &s.encryption {
        let (kind, key) = match e {
            Encryption::Aes256 => (EncryptionType::Aes256, None),
            Encryption::Kms(key) => (EncryptionType::Kms, key.clone()),
        };
        let config = EncryptionConfiguration::builder()
            .encryption_type(kind)
            .set_kms_key(key)
            .build();
        call = call.encryption_configuration(config.expect("the encryption type is set"));
    }
    if !s.tags.is_empty() {
        call = call.set_tags(Some(api_tags(&s.tags).expect("tags were validated")));
    }
    call.send().await.map(|_| ())
}

fn api_tags(tags: &[(String, String)]) -> Result<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| Ok(Tag::builder().key(k).value(v).build()?))
        .collect()
}

/// The API's value of a mutability.
fn api(m: Mutability) -> ImageTagMutability {
    ImageTagMutability::from(m.api_str())
}

/// An ECR call that failed, with the fix: the permission and a managed policy that grants it, or the setting.
fn failed<E>(action: &str, repo: &str, err: &SdkError<E, HttpResponse>, identity: &Identity) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = aws_error::code(err).unwrap_or_default();
    let fix = match code.as_str() {
        c if c.contains("AccessDenied") => format!(
            "allow ecr:{action} on {repo} for {} ({} grants it)",
            identity.arn,
            aws_error::managed_policy(action)
        ),
        "LimitExceededException" => "the account's repository quota is reached: delete unused repositories or \
                                     request a quota increase"
            .to_string(),
        "InvalidParameterException" => match action {
            "PutLifecyclePolicy" => "PLUGIN_LIFECYCLE_POLICY is not a valid ECR lifecycle policy".to_string(),
            "SetRepositoryPolicy" => "PLUGIN_REPOSITORY_POLICY is not a valid repository policy".to_string(),
            _ => "check PLUGIN_REPO and the repository settings".to_string(),
        },
        "KmsException" => {
            "KMS refused the key: check PLUGIN_KMS_KEY exists in this region and the identity may use it \
                           (kms:CreateGrant, kms:DescribeKey)"
                .to_string()
        }
        c if c.contains("Throttl") => "ECR kept throttling after the retries: run again later".to_string(),
        _ => "check the repository settings and that ECR is reachable".to_string(),
    };
    anyhow::Error::new(Failed {
        cause: format!("ecr:{action} on {repo} failed: {}", aws_error::describe(err)),
        fix,
    })
}

/// An ECR call that failed: the cause (remote code and message) and what to fix.
#[derive(Debug)]
pub struct Failed {
    pub cause: String,
    pub fix: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n  fix: {}", self.cause, self.fix)
    }
}

impl std::error::Error for Failed {}
