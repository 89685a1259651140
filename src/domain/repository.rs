//! The target repository's settings as the user gave them (each `None` means "leave it as it is") and where
//! a repository lives. Plain values.

use crate::domain::login::RegistryLogin;

/// The repository settings the user gave; `None` means "leave it as it is".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepositorySettings {
    pub create: bool,
    /// The mutability and, for the `*_WITH_EXCLUSION` kinds, the wildcard filters of the tags excluded.
    pub tag_mutability: Option<TagRule>,
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
    /// Mutable, except the tags the filters match, which are immutable.
    MutableWithExclusion,
    /// Immutable, except the tags the filters match, which can be overwritten.
    ImmutableWithExclusion,
}

impl Mutability {
    pub fn parse(value: &str) -> Result<Mutability, String> {
        match value.to_ascii_uppercase().as_str() {
            "MUTABLE" => Ok(Mutability::Mutable),
            "IMMUTABLE" => Ok(Mutability::Immutable),
            "MUTABLE_WITH_EXCLUSION" => Ok(Mutability::MutableWithExclusion),
            "IMMUTABLE_WITH_EXCLUSION" => Ok(Mutability::ImmutableWithExclusion),
            _ => Err("MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION".to_string()),
        }
    }

    pub fn with_exclusions(self) -> bool {
        matches!(
            self,
            Mutability::MutableWithExclusion | Mutability::ImmutableWithExclusion
        )
    }
}

/// A repository's tag mutability as ECR applies it to each tag: the kind and its exclusion filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRule {
    pub mutability: Mutability,
    /// Wildcard filters (`*` matches any run of characters), ECR's `WILDCARD` filter type.
    pub exclusions: Vec<String>,
}

impl TagRule {
    pub fn plain(mutability: Mutability) -> TagRule {
        TagRule {
            mutability,
            exclusions: Vec::new(),
        }
    }

    /// Whether ECR refuses to overwrite `tag`: ECR's own matching of the exclusion filters.
    pub fn immutable(&self, tag: &str) -> bool {
        let excluded = self.exclusions.iter().any(|f| wildcard_match(f, tag));
        match self.mutability {
            Mutability::Mutable => false,
            Mutability::Immutable => true,
            Mutability::MutableWithExclusion => excluded,
            Mutability::ImmutableWithExclusion => !excluded,
        }
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn wildcard_match(filter: &str, text: &str) -> bool {
    let parts: Vec<&str> = filter.split('*').collect();
    if parts.len() == 1 {
        return filter == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
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

    /// `repo` in each registry `logins` talk to, once each (two destinations in one account and region
    /// share one repository).
    pub fn each(repo: &'a str, logins: &'a [RegistryLogin]) -> Vec<RepositoryAt<'a>> {
        let mut seen = std::collections::BTreeSet::new();
        logins
            .iter()
            .map(|login| RepositoryAt::of(repo, login))
            .filter(|at| seen.insert((at.registry_id, at.region)))
            .collect()
    }
}

/// A one-line summary of the settings a created repository gets.
pub fn summary(s: &RepositorySettings) -> String {
    let mutability = s.tag_mutability.as_ref().map_or("MUTABLE".to_string(), |r| {
        if r.exclusions.is_empty() {
            r.mutability.api_str().to_string()
        } else {
            format!("{} ({})", r.mutability.api_str(), r.exclusions.join(", "))
        }
    });
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
            Mutability::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
            Mutability::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_ecr_matches_them() {
        assert!(wildcard_match("latest", "latest"));
        assert!(!wildcard_match("latest", "latest2"));
        assert!(wildcard_match("sha256-*", "sha256-abc.sig"));
        assert!(wildcard_match("*-dev", "feature-dev"));
        assert!(wildcard_match("v*-rc*", "v1.2-rc3"));
        assert!(!wildcard_match("v*-rc*", "v1.2"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a*a", "a"));
    }

    #[test]
    fn each_tag_gets_ecrs_own_answer() {
        let rule = |m, f: &[&str]| TagRule {
            mutability: m,
            exclusions: f.iter().map(|s| s.to_string()).collect(),
        };
        let imm = rule(Mutability::ImmutableWithExclusion, &["latest", "sha256-*"]);
        assert!(!imm.immutable("latest") && !imm.immutable("sha256-ab.sig") && imm.immutable("v1"));
        let mutable = rule(Mutability::MutableWithExclusion, &["release-*"]);
        assert!(mutable.immutable("release-1") && !mutable.immutable("latest"));
        assert!(TagRule::plain(Mutability::Immutable).immutable("x"));
        assert!(!TagRule::plain(Mutability::Mutable).immutable("x"));
    }

    #[test]
    fn a_repository_is_named_once_per_account_and_region() {
        use crate::domain::registry::Registry;
        use crate::domain::secret::Secret;
        let login = |host: &str| RegistryLogin {
            registry: Registry::parse(host).unwrap(),
            region: "us-east-1".into(),
            username: "AWS".into(),
            password: Secret::new("pw"),
            token_account: None,
        };
        let logins = [
            login("111111111111.dkr.ecr.us-east-1.amazonaws.com"),
            login("111111111111.dkr.ecr.us-east-1.amazonaws.com"),
            login("111111111111.dkr.ecr.eu-west-1.amazonaws.com"),
            login("222222222222.dkr.ecr.us-east-1.amazonaws.com"),
        ];
        let each: Vec<_> = RepositoryAt::each("app", &logins)
            .iter()
            .map(|at| (at.repo, at.registry_id, at.region))
            .collect();
        assert_eq!(
            each,
            [
                ("app", Some("111111111111"), Some("us-east-1")),
                ("app", Some("111111111111"), Some("eu-west-1")),
                ("app", Some("222222222222"), Some("us-east-1")),
            ]
        );
    }
}
