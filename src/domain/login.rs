//! A destination registry with its login: what it takes to talk to one registry, and the one way a login
//! is renewed after the registry refused it ([`Relogin`]).

use crate::domain::registry::Registry;
use crate::domain::secret::Secret;
use anyhow::Result;
use futures_util::future::BoxFuture;

/// One registry images go to (or come from), signed in: the registry, the region its token came from, and
/// the token as a user name and password.
#[derive(Debug, Clone)]
pub struct RegistryLogin {
    pub registry: Registry,
    /// The region of the token (and of the registry's ECR API calls).
    pub region: String,
    pub username: String,
    pub password: Secret,
    /// The account the token was issued for (from its proxy endpoint).
    pub token_account: Option<String>,
}

/// Fetches a fresh login for the same registry after it refused the current one (an expired token).
/// The one way a token is renewed: the registry client (on HTTP 401) and the engine path (on a refused
/// push) both hold one. An implementation answers once; later calls fail, so a refusal never loops.
pub trait Relogin: Send + Sync {
    fn relogin(&self) -> BoxFuture<'_, Result<RegistryLogin>>;
}

/// Credentials for a registry outside ECR (a promote source): a user name and a password or token from the
/// docker config, and where they came from, for the log. `Debug` shows neither secret nor user.
#[derive(Clone)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: Secret,
    /// `docker config entry for <host>`, `credential helper docker-credential-<name>`.
    pub origin: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Finds the credentials the user keeps for a host (the docker config): how the registry client asks for
/// a token realm's credentials when the realm is on a host of its own.
pub type CredentialLookup = std::sync::Arc<dyn Fn(&str) -> Option<RegistryCredentials> + Send + Sync>;

/// Whether two hosts (`host[:port]`) share a domain, so that credentials for one may go to the other: the
/// same host, or names that end in the same two labels (`auth.docker.io` and `registry-1.docker.io`).
pub fn same_domain(a: &str, b: &str) -> bool {
    let name = |h: &str| h.rsplit_once(':').map_or(h, |(n, _)| n).to_ascii_lowercase();
    let (a, b) = (name(a), name(b));
    if a == b {
        return true;
    }
    let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
    fn tail(h: &str) -> Vec<&str> {
        h.rsplit('.').take(2).collect()
    }
    !is_ip(&a) && !is_ip(&b) && a.contains('.') && b.contains('.') && tail(&a) == tail(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_shared_by_the_same_host_or_the_same_two_last_labels() {
        assert!(same_domain("auth.docker.io", "registry-1.docker.io"));
        assert!(same_domain("127.0.0.1:5000", "127.0.0.1:6000"));
        assert!(same_domain("ghcr.io", "ghcr.io:443"));
        assert!(!same_domain("127.0.0.1:5000", "127.0.0.2:5000"));
        assert!(!same_domain("quay.io", "evil.io"));
        assert!(!same_domain("localhost", "otherhost"));
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let c = RegistryCredentials {
            username: "robot".into(),
            password: Secret::new("hunter2"),
            origin: "docker config entry for x".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("robot") && shown.contains("docker config"));
    }
}
