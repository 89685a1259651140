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
