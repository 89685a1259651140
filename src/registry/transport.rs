//! Transport: the client of one registry (over the run's one connection pool, [`shared_http`]) and how
//! every request goes. Authentication (the run's ECR
//! token as Basic auth, renewed once after a 401 through a [`Relogin`], or none at all for an anonymous
//! source), [`classify`] (the one place that decides retry, renew or fail), [`RegistryClient::retried`]
//! (the one retry policy, `crate::retry`), bounded bodies, the redirect policy, and error messages that name
//! the registry. HTTPS, except for loopback hosts, which the Docker Engine also treats as plain-HTTP
//! registries.

use super::auth::Foreign;
use super::http::{ERROR_LIMIT, HttpFailure, is_loopback, read_limited, registry_error};
use crate::domain::login::{RegistryLogin, Relogin};
use crate::domain::network;
use anyhow::{Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// The largest manifest, index or referrers list read from a registry (ECR's own limit for a manifest).
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// What a registry's HTTP status means for the request that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Done,
    /// 404: the manifest, blob or repository is not there (the caller decides what that means).
    Absent,
    /// 401: the token was refused; renewed once, then a failure.
    Refused,
    /// 429 or 5xx: another attempt may succeed.
    Retry,
    /// Anything else: a failure another attempt would repeat.
    Fail,
}

/// Classify a status: the one place that decides retry, renew or fail.
pub fn classify(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Done,
        404 => Answer::Absent,
        401 => Answer::Refused,
        429 | 500..=599 => Answer::Retry,
        _ => Answer::Fail,
    }
}

pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    /// What requests carry: the ECR token (Basic), or for a registry outside ECR a token or the user's
    /// credentials once it asked for them (`None` until then).
    pub(super) auth: std::sync::Mutex<Option<HeaderValue>>,
    /// `Some` for a registry outside ECR (a promote source), which never gets the ECR token.
    pub(super) foreign: Option<Foreign>,
    /// Why the last token was asked without the user's credentials, for a refusal's message.
    pub(super) token_note: std::sync::Mutex<Option<String>>,
    /// Renews the token after a 401 (once per destination: the renewal itself refuses a second time).
    pub(super) relogin: Option<Arc<dyn Relogin>>,
    pub host: String,
    /// The account the token was issued for, for messages.
    pub(super) token_account: Option<String>,
    /// `PLUGIN_TIMEOUT`: no request waits longer for an answer, and no retry starts after it has passed
    /// since the first attempt, so an operation takes about this long at most, not this long per attempt.
    pub(super) timeout: Duration,
}

impl RegistryClient {
    pub fn new(login: &RegistryLogin, timeout: Duration) -> Result<RegistryClient> {
        let auth = basic_auth(login)?;
        RegistryClient::build(&login.registry.host, Some(auth), login.token_account.clone(), timeout)
    }

    /// A client of a registry that is neither ECR nor a destination: it never gets the ECR token, only the
    /// credentials `foreign` holds for it (or none), through the token flow when the registry asks for it.
    pub fn foreign(host: &str, foreign: Foreign, timeout: Duration) -> Result<RegistryClient> {
        let mut client = RegistryClient::build(host, None, None, timeout)?;
        client.foreign = Some(foreign);
        Ok(client)
    }

    pub(super) fn build(
        host: &str,
        auth: Option<HeaderValue>,
        token_account: Option<String>,
        timeout: Duration,
    ) -> Result<RegistryClient> {
        let scheme = if is_loopback(host) { "http" } else { "https" };
        let http = shared_http(timeout)?;
        Ok(RegistryClient {
            http,
            base: format!("{scheme}://{host}/v2"),
            auth: std::sync::Mutex::new(auth),
            foreign: None,
            token_note: std::sync::Mutex::new(None),
            relogin: None,
            host: host.to_string(),
            token_account,
            timeout,
        })
    }

    /// Renew the token through `relogin` when the registry answers 401, as it does to an expired token.
    pub fn with_relogin(mut self, relogin: Arc<dyn Relogin>) -> RegistryClient {
        self.relogin = Some(relogin);
        self
    }

    /// Same registry (and so a candidate for a cross-repository mount).
    pub fn same_registry(&self, other: &RegistryClient) -> bool {
        self.host == other.host
    }

    pub(super) fn request(&self, method: Method, url: &str) -> RequestBuilder {
        // Only our own registry gets the token; an upload location on another host (a redirect to
        // storage) does not.
        let builder = self.http.request(method, url);
        match self.auth.lock().expect("not poisoned").clone() {
            Some(auth) if url.starts_with(&self.base) => builder.header(AUTHORIZATION, auth),
            _ => builder,
        }
    }

    pub(super) async fn send(&self, what: &str, request: RequestBuilder) -> Result<Response, HttpFailure> {
        let request = request.build().map_err(|e| HttpFailure {
            message: format!("{what}: {}", crate::report::chain(&e)),
            retryable: false,
            at: self.host.clone(),
        })?;
        let again = request.try_clone();
        let mut response = self.execute(what, request).await?;
        // A registry outside ECR that asks for credentials (or a fresh token): met once, the request sent
        // again with them.
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(mut again) = again
            && let Some(challenge) = super::auth::challenge(&response)
            && self.authorize(what, challenge, response.url()).await?
        {
            if let Some(auth) = self.auth.lock().expect("not poisoned").clone()
                && again.url().as_str().starts_with(&self.base)
            {
                again.headers_mut().insert(AUTHORIZATION, auth);
            }
            response = self.execute(what, again).await?;
        }
        self.answer(what, response).await
    }

    /// Send one request; a failure to get an answer says why (no answer in time, a refused redirect).
    async fn execute(&self, what: &str, request: reqwest::Request) -> Result<Response, HttpFailure> {
        let https = request.url().scheme() == "https";
        self.http.execute(request).await.map_err(|e| {
            // A cause no retry heals (a certificate, a proxy's refusal, a name that does not resolve) is
            // named with its fix at once.
            let proxy = network::proxy_for(&self.host, https, |k| std::env::var(k).ok());
            let cause = network::cause_of(&crate::report::chain(&e), proxy.is_some()).filter(|c| !c.retryable());
            match cause {
                Some(cause) => HttpFailure {
                    message: format!("{what}: {}", cause.explain(&self.host, proxy.as_ref())),
                    retryable: false,
                    at: self.host.clone(),
                },
                None => self.transport_failure(what, &e),
            }
        })
    }

    /// A request that got no answer, for a cause the step does not name.
    fn transport_failure(&self, what: &str, e: &reqwest::Error) -> HttpFailure {
        HttpFailure {
            message: if e.is_timeout() {
                format!(
                    "{what}: the registry {} did not answer within {}s (PLUGIN_TIMEOUT)",
                    self.host,
                    self.timeout.as_secs()
                )
            } else if e.is_redirect() {
                format!(
                    "{what}: the registry {} redirected the request, and the redirect was refused ({}): the step \
                     follows at most {MAX_REDIRECTS} redirects, only to HTTPS\n  fix: check the registry {} (or \
                     the proxy in front of it)",
                    self.host,
                    crate::report::chain(e),
                    self.host
                )
            } else {
                format!("{what}: {}", crate::report::chain(e))
            },
            retryable: !e.is_redirect(),
            at: self.host.clone(),
        }
    }

    /// What an answer means: `Ok` for success and 404; a 401 renews the ECR token once; anything else an
    /// error naming the registry and the fix.
    async fn answer(&self, what: &str, response: Response) -> Result<Response, HttpFailure> {
        let code = response.status().as_u16();
        let answer = classify(code);
        if matches!(answer, Answer::Done | Answer::Absent) {
            return Ok(response);
        }
        if answer == Answer::Refused
            && let Some(relogin) = &self.relogin
            && let Ok(login) = relogin.relogin().await
        {
            *self.auth.lock().expect("not poisoned") = Some(basic_auth(&login).map_err(|e| HttpFailure {
                message: format!("{what}: {e}"),
                retryable: false,
                at: self.host.clone(),
            })?);
            crate::report::token_refreshed(&self.host, "HTTP 401");
            return Err(HttpFailure {
                message: format!("{what}: HTTP 401 (token fetched again)"),
                retryable: true,
                at: self.host.clone(),
            });
        }
        let limits = rate_limits(&response);
        let body = read_limited(response, ERROR_LIMIT).await.unwrap_or_default();
        let detail = registry_error(&body);
        let message = match (code, &self.foreign) {
            (401 | 403, Some(Foreign { credentials: None, .. })) => format!(
                "{what}: the registry {} refused anonymous access (HTTP {code}{detail}); no credentials were sent: \
                 the run's ECR token goes only to ECR registries and to the destinations, and the docker config \
                 holds none for {}\n  fix: give the step credentials for {}: a docker config entry (DOCKER_CONFIG, \
                 or `docker login {}` in an earlier step); for an ECR registry, write its ECR host name \
                 (<account>.dkr.ecr.<region>.amazonaws.com), or set PLUGIN_READ_ROLE_ARN to a role of its account",
                self.host, self.host, self.host, self.host
            ),
            (
                401 | 403,
                Some(Foreign {
                    credentials: Some(c), ..
                }),
            ) => match self.token_note.lock().expect("not poisoned").clone() {
                Some(note) => format!(
                    "{what}: the registry {} refused access (HTTP {code}{detail}): {note}",
                    self.host
                ),
                None => format!(
                    "{what}: the registry {} refused the credentials of the {} (HTTP {code}{detail})\n  fix: check \
                     that they may read this repository, or log in again (`docker login {}` in an earlier step)",
                    self.host, c.origin, self.host
                ),
            },
            (429, _) if !limits.is_empty() => format!(
                "{what}: HTTP 429{detail} ({limits})\n  fix: the registry {} limits pulls; with credentials for it \
                 the limit is higher (a docker config entry, or `docker login {}` in an earlier step)",
                self.host, self.host
            ),
            (401 | 403, None) => format!(
                "{what}: the registry {} refused the ECR token, issued for account {} (HTTP {code}{detail}): check \
                 the identity may read and write this repository (AmazonEC2ContainerRegistryPowerUser grants it) \
                 and that PLUGIN_REGISTRY names a registry of that account, or one whose policy allows it",
                self.host,
                self.token_account.as_deref().unwrap_or("unknown")
            ),
            _ => format!("{what}: HTTP {code}{detail}"),
        };
        Err(HttpFailure {
            message,
            retryable: answer == Answer::Retry,
            at: self.host.clone(),
        })
    }

    /// `op` under the one retry policy; a failure that outlived it says so, with the fix.
    pub(super) async fn retried<T, F, Fut>(&self, what: &str, op: F) -> Result<T, HttpFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpFailure>>,
    {
        crate::retry::run(what, self.timeout, op, |e: &HttpFailure| e.retryable)
            .await
            .map_err(|gave_up| {
                let mut e = gave_up.error;
                if e.retryable {
                    e.message = format!(
                        "{} (still failing after {} attempts in {:.0}s; PLUGIN_TIMEOUT={}s bounds the retries)\n  \
                         fix: the registry {} is failing or unreachable: check that it is up and reachable from \
                         here, then run again (or raise PLUGIN_TIMEOUT)",
                        e.message,
                        gave_up.attempts,
                        gave_up.elapsed.as_secs_f64(),
                        self.timeout.as_secs(),
                        e.at
                    );
                }
                e
            })
    }

    /// The body of `response`, at most `limit` bytes; a larger one fails naming the registry.
    pub(super) async fn body(&self, what: &str, response: Response, limit: u64) -> Result<Vec<u8>> {
        read_limited(response, limit).await.map_err(|e| {
            anyhow!(
                "{what}: the registry {} sent {e}: refused\n  fix: check the registry {} (or a proxy in front of it)",
                self.host,
                self.host
            )
        })
    }

    /// The absolute upload location from a response's `Location` header.
    pub(super) fn location(&self, response: &Response, what: &str) -> Result<String, HttpFailure> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HttpFailure {
                message: format!("{what}: the registry answered without an upload location"),
                retryable: false,
                at: self.host.clone(),
            })?;
        Ok(if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            let origin = self.base.trim_end_matches("/v2");
            format!("{origin}{location}")
        })
    }
}

/// `Authorization: Basic …` for a login, marked sensitive.
pub(super) fn basic_auth(login: &RegistryLogin) -> Result<HeaderValue> {
    let basic = STANDARD.encode(format!("{}:{}", login.username, login.password.expose()));
    let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// A registry's rate-limit headers (Docker Hub's `ratelimit-limit` and `ratelimit-remaining`), for a 429's
/// message; empty when there are none.
fn rate_limits(response: &Response) -> String {
    ["ratelimit-limit", "ratelimit-remaining", "retry-after"]
        .iter()
        .filter_map(|name| {
            let value = response.headers().get(*name)?.to_str().ok()?;
            Some(format!("{name}: {}", crate::domain::excerpt(value.as_bytes(), 60)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Build the run's HTTP client ([`shared_http`]) before the first registry call needs it, on a blocking
/// thread: loading the trusted roots takes about 2.5 ms, which the step's sign-in then hides. A failure
/// is left for the first client to say, as it would without this.
pub async fn prepare(timeout: Duration) {
    let _ = tokio::task::spawn_blocking(move || shared_http(timeout)).await;
}

/// The run's one HTTP client (per `PLUGIN_TIMEOUT`, which is one per run): every registry client of the
/// run shares its connection pool, so the stages of a run (preflight, what a destination holds, uploads,
/// tags) reuse each registry's connections (and TLS sessions, and the proxy's tunnel) instead of opening
/// new ones, and the trusted roots are loaded once. Requests carry their own authorization; a pooled
/// connection belongs to one host.
fn shared_http(timeout: Duration) -> Result<reqwest::Client> {
    static SHARED: std::sync::Mutex<Vec<(Duration, reqwest::Client)>> = std::sync::Mutex::new(Vec::new());
    let mut shared = SHARED.lock().expect("not poisoned");
    if let Some((_, http)) = shared.iter().find(|(t, _)| *t == timeout) {
        return Ok(http.clone());
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(timeout)
        .user_agent(concat!("ecr-step/", env!("CARGO_PKG_VERSION")))
        .redirect(redirects())
        .build()?;
    shared.push((timeout, http.clone()));
    Ok(http)
}

/// The redirect policy: at most [`MAX_REDIRECTS`], only to HTTPS, or to plain HTTP on loopback (a test
/// registry). reqwest drops the `Authorization` header on a redirect to another host.
pub(super) fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects: a redirect loop"));
        }
        let url = attempt.url();
        let host = url.host_str().unwrap_or_default();
        let allowed = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(host));
        if allowed {
            attempt.follow()
        } else {
            let to = format!("{}://{host}", url.scheme());
            attempt.error(format!("a redirect to {to}, which is not HTTPS"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_are_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("123456789012.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(!is_loopback("127.example.com"));
    }

    #[test]
    fn every_status_is_classified_once() {
        for (status, answer) in [
            (200, Answer::Done),
            (201, Answer::Done),
            (202, Answer::Done),
            (404, Answer::Absent),
            (401, Answer::Refused),
            (429, Answer::Retry),
            (500, Answer::Retry),
            (502, Answer::Retry),
            (503, Answer::Retry),
            (400, Answer::Fail),
            (403, Answer::Fail),
            (405, Answer::Fail),
        ] {
            assert_eq!(classify(status), answer, "HTTP {status}");
        }
    }

    #[test]
    fn digests_and_registry_errors() {
        assert_eq!(
            registry_error(br#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            ": DENIED no"
        );
        assert_eq!(registry_error(b"<html>"), "");
    }
}
