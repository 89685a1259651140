//! Login mode: signs in to every destination and writes the tokens into the docker config for later steps.
//!
//! Each token is first tried against its registry (`GET /v2/`, as `docker login` does), so a token the
//! registry refuses is never reported as a login; then `outputs::docker_config` writes them.

use super::context::{Context, Done};
use crate::outputs::docker_config;
use crate::registry::RegistryClient;
use crate::settings::LoginSettings;
use anyhow::{Result, anyhow};

pub async fn run(settings: &LoginSettings, ctx: &Context) -> Result<Done> {
    for login in &ctx.logins {
        let client = RegistryClient::new(login, ctx.common.timeout)?;
        client.ping().await.map_err(|e| {
            anyhow!(
                "{e:#}\n  fix: nothing was written to the docker config; the token is for account {} — check that \
                 PLUGIN_REGISTRY names a registry of that account and region",
                login.token_account.as_deref().unwrap_or("unknown")
            )
        })?;
    }
    docker_config::write(&settings.docker_config, &ctx.logins)?;
    crate::report::login(&ctx.logins, &settings.docker_config);
    Ok(Done::Login)
}
