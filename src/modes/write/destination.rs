//! One destination of a push or promote: a repository in one registry, with the one way its client is
//! made (the run's token for that registry, renewed once after a refusal) and the one way it is named.

use crate::aws::Identity;
use crate::aws::token::Renewal;
use crate::domain::login::{RegistryLogin, Relogin};
use crate::modes::Context;
use crate::registry::RegistryClient;
use anyhow::Result;
use std::sync::Arc;

/// One destination: its login, the repository, a client of its registry, and the renewal that client
/// (and an engine push) uses after the registry refused the token.
pub struct Destination<'a> {
    pub login: &'a RegistryLogin,
    pub repo: &'a str,
    pub client: RegistryClient,
    pub renewal: Arc<dyn Relogin>,
    pub identity: &'a Identity,
}

impl<'a> Destination<'a> {
    /// `repo` in the registry of `login`.
    pub fn open(login: &'a RegistryLogin, repo: &'a str, ctx: &'a Context) -> Result<Destination<'a>> {
        let (client, renewal) = signed_client(login, ctx)?;
        Ok(Destination {
            login,
            repo,
            client,
            renewal,
            identity: &ctx.identity,
        })
    }

    /// `<registry>/<repo>`.
    pub fn label(&self) -> String {
        crate::domain::target::label(&self.login.registry.host, self.repo)
    }
}

/// A client of `login`'s registry that fetches the token again once after a 401, and that renewal.
pub fn signed_client(login: &RegistryLogin, ctx: &Context) -> Result<(RegistryClient, Arc<dyn Relogin>)> {
    let renewal: Arc<dyn Relogin> = Arc::new(Renewal::of(&ctx.identity, login));
    let client = RegistryClient::new(login, ctx.common.timeout)?.with_relogin(renewal.clone());
    Ok((client, renewal))
}
