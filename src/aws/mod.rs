//! The AWS adapter: the run's identity (STS), ECR authorization tokens, the ECR repository API and its
//! images' push times.
//! Every AWS client of the run is built from one [`Identity`]. Uses `domain` and `report` only (the SDK retries its own calls,
//! within `PLUGIN_TIMEOUT`); never another adapter.

pub mod error;
pub mod identity;
pub mod images;
pub mod repository;
pub mod scan;
pub mod token;

pub use identity::{Identity, assume_from};

use crate::domain::credentials::CredentialPlan;
use crate::domain::login::RegistryLogin;
use crate::domain::target::TargetRegistry;
use anyhow::Result;
use std::time::Duration;

/// Sign in: the run's credentials (`plan`) confirmed with STS, and a login per destination, whose tokens are
/// asked meanwhile (a token needs the credentials, not their confirmation). When the credentials fail,
/// that failure is the one said, at once (the token requests are dropped, not waited for).
pub async fn sign_in(
    plan: &CredentialPlan,
    region: &str,
    timeout: Duration,
    destinations: &[TargetRegistry],
) -> Result<(Identity, Vec<RegistryLogin>)> {
    let credentials = identity::build(plan, region, timeout).await?;
    let tokens = async { Ok(token::fetch(&credentials.sdk, destinations).await) };
    let (identity, tokens) = tokio::try_join!(credentials.confirm(plan), tokens)?;
    let logins = token::logins(tokens, &identity, destinations)?;
    Ok((identity, logins))
}
