//! The credential settings: each value on its own (role ARNs, external IDs, key pairs, web identity tokens
//! from a file or a variable), then the level model's precedence and contradictions
//! (`domain::credentials::plan`).

use super::{Key, Parser};
use crate::domain::credentials::{self, CredentialPlan, CredentialSettings, RoleSettings};
use crate::domain::grammar;
use crate::domain::secret::Secret;
use std::path::{Path, PathBuf};

impl Parser {
    /// Each credential value on its own, then the level model's precedence and contradictions.
    pub(super) fn credentials(&mut self) -> Option<CredentialPlan> {
        let arn = |v: &str| grammar::role_arn(v).map(|_| v.to_string());
        let external_id = |v: &str| grammar::external_id(v).map(|_| Secret::new(v));
        let settings = CredentialSettings {
            trigger: RoleSettings {
                role_arn: self.parse(Key::TriggerRoleArn, arn),
                external_id: self.parse(Key::TriggerExternalId, external_id),
                web_identity_token_file: self.parse(Key::TriggerWebIdentityTokenFile, token_file),
                web_identity_token_variable: self.token_variable(Key::TriggerWebIdentityTokenEnv),
            },
            pipeline: RoleSettings {
                role_arn: self.parse(Key::PipelineRoleArn, arn),
                external_id: self.parse(Key::PipelineExternalId, external_id),
                web_identity_token_file: self.parse(Key::PipelineWebIdentityTokenFile, token_file),
                web_identity_token_variable: self.token_variable(Key::PipelineWebIdentityTokenEnv),
            },
            access_key: self.parse(Key::AccessKey, |v| {
                if grammar::looks_like_secret(v) {
                    return Err(
                        "an access key id (AKIA…); this value looks like a secret access key: are \
                                PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?"
                            .into(),
                    );
                }
                grammar::access_key(v).map(|_| v.to_string())
            }),
            secret_key: self.parse(Key::SecretKey, |v| {
                if grammar::access_key(v).is_ok() {
                    return Err("a secret access key; this value looks like an access key id: are \
                                PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY swapped?"
                        .into());
                }
                grammar::secret_key(v).map(|_| Secret::new(v))
            }),
            role_arn: self.parse(Key::RoleArn, arn),
            external_id: self.parse(Key::ExternalId, external_id),
            intermediate_role: self.parse(Key::IntermediateRole, arn),
            intermediate_external_id: self.parse(Key::IntermediateExternalId, external_id),
            use_service_account: self.parse_or_default(Key::UseServiceAccount, grammar::boolean),
            session_name: self.parse(Key::SessionName, |v| grammar::session_name(v).map(|_| v.to_string())),
            duration_seconds: self.parse(Key::DurationSeconds, grammar::duration_seconds),
        };
        // A web identity token file from the container (IRSA projects one) is read by the SDK: bounded here.
        if let Some(file) = self
            .ambient
            .get("AWS_WEB_IDENTITY_TOKEN_FILE")
            .filter(|f| !f.trim().is_empty())
            && let Err(e) = crate::files::check_bounded(Path::new(file), grammar::TOKEN_FILE_LIMIT)
        {
            self.problems.push(format!(
                "AWS_WEB_IDENTITY_TOKEN_FILE: expected a readable token file ({e})"
            ));
        }
        match credentials::plan(settings, &self.ambient) {
            Ok(plan) => Some(plan),
            Err(problems) => {
                self.problems.extend(problems);
                None
            }
        }
    }

    /// A web identity token handed in an environment variable: `key` names the variable, which must be set
    /// (the token is never shown).
    pub(super) fn token_variable(&mut self, key: Key) -> Option<(String, Secret)> {
        let name = self.parse(key, |v| {
            let ok = v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !v.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Ok(v.to_string())
            } else {
                Err("the name of an environment variable".to_string())
            }
        })?;
        let token = self
            .ambient
            .get(&name)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if token.is_empty() {
            return self.problem(format!(
                "{}={name} names a variable that is not set (or is empty) in the step's environment: pass the \
                 token in it (GitLab: id_tokens), or name the variable that holds it",
                key.env()
            ));
        }
        if token.len() as u64 > grammar::TOKEN_FILE_LIMIT {
            return self.problem(format!(
                "{}={name}: the token is longer than {} bytes",
                key.env(),
                grammar::TOKEN_FILE_LIMIT
            ));
        }
        Some((name, Secret::new(&token)))
    }
}

/// A web identity token file: a regular file of at most [`grammar::TOKEN_FILE_LIMIT`] bytes, read later by
/// the SDK.
pub(super) fn token_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    crate::files::check_bounded(&path, grammar::TOKEN_FILE_LIMIT)
        .map_err(|e| format!("a readable token file ({e})"))?;
    Ok(path)
}
