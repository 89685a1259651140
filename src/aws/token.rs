//! Token: gets ECR authorization tokens and turns them into registry logins.
//!
//! One token per region: it serves every registry the principal can reach there, so several destinations
//! in one region share one `GetAuthorizationToken`, and regions are asked concurrently. The call names no
//! registry ids: the token then belongs to the caller's own account, which is what the registry checks. A
//! token is used as it came; an `expiresAt` in the past (moto answers 2015) is never refreshed in a loop.

use super::Identity;
use super::error;
use crate::domain::login::{RegistryLogin, Relogin};
use crate::domain::registry::Registry;
use crate::domain::secret::Secret;
use crate::domain::target::TargetRegistry;
use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

/// A decoded token and the registry it was issued for.
#[derive(Debug, Clone)]
struct Token {
    username: String,
    password: Secret,
    proxy: Option<Registry>,
}

/// The tokens of the destinations' regions, one request per region, asked with credentials that need
/// not be confirmed yet: [`logins`] turns them into logins once they are.
pub struct Tokens(BTreeMap<String, Result<Token, Failure>>);

/// One token request per region of `destinations`, concurrently.
pub async fn fetch(sdk: &SdkConfig, destinations: &[TargetRegistry]) -> Tokens {
    let regions: BTreeSet<&str> = destinations.iter().map(|d| d.region.as_str()).collect();
    let fetched = futures_util::future::join_all(regions.iter().map(|r| token(sdk, r))).await;
    Tokens(regions.iter().map(|r| r.to_string()).zip(fetched).collect())
}

/// One login per destination, from `tokens`; a failed request names `identity`, which asked it.
pub fn logins(tokens: Tokens, identity: &Identity, destinations: &[TargetRegistry]) -> Result<Vec<RegistryLogin>> {
    let mut had = BTreeMap::new();
    for (region, token) in tokens.0 {
        let token = token.map_err(|e| e.explain(&region, &identity.arn))?;
        had.insert(region, token);
    }
    destinations
        .iter()
        .map(|d| pair(&had[&d.region], d.registry.as_ref(), &d.region))
        .collect()
}

/// A login for one registry in `region`.
pub async fn login(identity: &Identity, region: &str, registry: Option<&Registry>) -> Result<RegistryLogin> {
    let token = token(&identity.sdk, region)
        .await
        .map_err(|e| e.explain(region, &identity.arn))?;
    pair(&token, registry, region)
}

/// Why a token request gave no token: ECR refused or failed the call (said with the principal that asked,
/// once known), or its answer held no usable token.
enum Failure {
    Call(String),
    Answer(anyhow::Error),
}

impl Failure {
    fn explain(self, region: &str, principal: &str) -> anyhow::Error {
        match self {
            Failure::Call(cause) => anyhow!("ecr:GetAuthorizationToken in {region} failed for {principal}: {cause}"),
            Failure::Answer(e) => e,
        }
    }
}

/// The one token renewal of a destination: a fresh token for the same registry, fetched once (a registry
/// that refuses the fresh one too has a real reason, which the caller reports).
pub struct Renewal {
    identity: Identity,
    registry: Registry,
    region: String,
    used: AtomicBool,
}

impl Renewal {
    pub fn of(identity: &Identity, login: &RegistryLogin) -> Renewal {
        Renewal {
            identity: identity.clone(),
            registry: login.registry.clone(),
            region: login.region.clone(),
            used: AtomicBool::new(false),
        }
    }
}

impl Relogin for Renewal {
    fn relogin(&self) -> BoxFuture<'_, Result<RegistryLogin>> {
        Box::pin(async move {
            if self.used.swap(true, Ordering::SeqCst) {
                bail!("the registry {} refused a token fetched again", self.registry);
            }
            login(&self.identity, &self.region, Some(&self.registry)).await
        })
    }
}

fn pair(token: &Token, registry: Option<&Registry>, region: &str) -> Result<RegistryLogin> {
    let registry = match (registry, &token.proxy) {
        (Some(r), _) => r.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => bail!("ECR answered no proxy endpoint and PLUGIN_REGISTRY is not set: set PLUGIN_REGISTRY"),
    };
    Ok(RegistryLogin {
        registry,
        region: region.to_string(),
        username: token.username.clone(),
        password: token.password.clone(),
        token_account: token
            .proxy
            .as_ref()
            .and_then(|p| p.ecr.as_ref())
            .map(|e| e.account.clone()),
    })
}

async fn token(sdk: &SdkConfig, region: &str) -> Result<Token, Failure> {
    let ecr = super::identity::ecr_client(sdk, Some(region));
    let answer = ecr.get_authorization_token().send().await.map_err(|e| {
        let fix = match error::code(&e).as_deref() {
            Some(c) if c.contains("AccessDenied") => {
                " Fix: allow ecr:GetAuthorizationToken on resource \"*\" for this identity \
                 (AmazonEC2ContainerRegistryReadOnly grants it)."
            }
            Some(c) if c.contains("Throttl") => " ECR kept throttling after the retries; run again later.",
            _ => "",
        };
        Failure::Call(format!("{}.{fix}", error::describe(&e)))
    })?;
    decoded(answer).map_err(Failure::Answer)
}

/// The token of ECR's answer.
fn decoded(answer: aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenOutput) -> Result<Token> {
    let data = answer
        .authorization_data()
        .first()
        .context("ECR answered GetAuthorizationToken with no authorization data")?;
    let encoded = data
        .authorization_token()
        .context("ECR answered with an empty authorization token")?;
    let (username, password) = decode(encoded)?;
    let proxy = match data.proxy_endpoint() {
        Some(p) => Some(Registry::parse(p).map_err(|e| anyhow!("ECR answered a proxy endpoint that is not {e}"))?),
        None => None,
    };
    Ok(Token {
        username,
        password,
        proxy,
    })
}

/// `base64("AWS:<password>")` → (`AWS`, password).
fn decode(token: &str) -> Result<(String, Secret)> {
    let bytes = STANDARD
        .decode(token.trim())
        .map_err(|_| anyhow!("the ECR token is not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("the ECR token is not text"))?;
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok((user.to_string(), Secret::new(password)))
        }
        _ => bail!("the ECR token is not of the form user:password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_to_user_and_password() {
        let (user, password) = decode(&STANDARD.encode("AWS:123456789012-auth-token")).unwrap();
        assert_eq!(user, "AWS");
        assert_eq!(password.expose(), "123456789012-auth-token");
        let (_, password) = decode(&STANDARD.encode("AWS:a:b")).unwrap();
        assert_eq!(password.expose(), "a:b");
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in ["not base64!", &STANDARD.encode("nocolon"), &STANDARD.encode("AWS:")] {
            let e = decode(bad).unwrap_err().to_string();
            assert!(!e.contains("nocolon"), "{e}");
        }
    }

    #[test]
    fn a_login_pairs_the_token_with_the_named_registry_else_its_own() {
        let token = Token {
            username: "AWS".into(),
            password: Secret::new("pw"),
            proxy: Some(Registry::parse("https://123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap()),
        };
        let own = pair(&token, None, "us-east-1").unwrap();
        assert_eq!(own.registry.host, "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(own.token_account.as_deref(), Some("123456789012"));
        let other = Registry::parse("127.0.0.1:5000").unwrap();
        assert_eq!(pair(&token, Some(&other), "us-east-1").unwrap().registry, other);
    }
}
