//! The target repository's settings as the user gave them (each `None` means "leave it as it is") and where
//! a repository lives. Plain values.

use crate::domain::login::RegistryLogin;

/// The repository settings the user gave; `None` means "leave it as it is".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepositorySettings {
    pub create: bool,
    pub tag_mutability: Option<Mutability>,
    pub scan_on_push: Option<bool>,
    pub encryption: Option<Encryption>,
    pub tags: Vec<(String, String)>,
    pub lifecycle_policy: Option<String>,
    pub repository_policy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    Mutable,
    Immutable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    Aes256,
    /// With a key id/ARN/alias, or the AWS managed key.
    Kms(Option<String>),
}

impl RepositorySettings {
    /// True when the step has anything to do on the repository.
    pub fn any(&self) -> bool {
        *self != RepositorySettings::default()
    }
}

/// Where the repository lives: the account and region of an ECR registry host, else the caller's own.
pub struct RepositoryAt<'a> {
    pub repo: &'a str,
    pub registry_id: Option<&'a str>,
    pub region: Option<&'a str>,
}

impl<'a> RepositoryAt<'a> {
    /// `repo` in the registry `login` talks to.
    pub fn of(repo: &'a str, login: &'a RegistryLogin) -> RepositoryAt<'a> {
        let ecr = login.registry.ecr.as_ref();
        RepositoryAt {
            repo,
            registry_id: ecr.map(|e| e.account.as_str()),
            region: ecr.map(|e| e.region.as_str()),
        }
    }
}

/// A one-line summary of the settings a created repository gets.
pub fn summary(s: &RepositorySettings) -> String {
    let mutability = s.tag_mutability.map_or("MUTABLE", |m| m.api_str());
    let scan = if s.scan_on_push == Some(true) {
        "scan on push"
    } else {
        "no scan on push"
    };
    let encryption = match &s.encryption {
        None | Some(Encryption::Aes256) => "AES256".to_string(),
        Some(Encryption::Kms(None)) => "KMS (AWS managed key)".to_string(),
        Some(Encryption::Kms(Some(k))) => format!("KMS {k}"),
    };
    format!("{mutability}, {scan}, {encryption}")
}

impl Mutability {
    pub fn api_str(self) -> &'static str {
        match self {
            Mutability::Mutable => "MUTABLE",
            Mutability::Immutable => "IMMUTABLE",
        }
    }
}
