//! Authentication with a registry outside ECR (a promote source: Docker Hub, GHCR, Quay, a vendor's
//! registry), which never sees the run's ECR token: the OCI/Docker token flow, with the credentials the
//! user keeps for that registry, or none.
//!
//! A 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` gets a token from the realm for the scope
//! it names (else `repository:<name>:pull`), asked with the credentials if any; a `Basic` challenge gets the
//! credentials themselves. A token is used until the registry refuses it, then fetched again once. A realm
//! on another host must be HTTPS (plain HTTP only on loopback), and the credentials go there only when it
//! shares the registry's domain or the user keeps credentials for the realm's own host. Tokens are secrets:
//! sensitive headers, never printed.

use super::RegistryClient;
use super::http::{ERROR_LIMIT, HttpFailure, is_loopback, read_limited, registry_error};
use crate::domain::login::{CredentialLookup, RegistryCredentials, same_domain};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Response;
use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};

/// How a registry outside ECR is read: the credentials the user keeps for it (none: anonymously), and how
/// to find those of a token realm on a host of its own.
#[derive(Clone)]
pub struct Foreign {
    pub credentials: Option<RegistryCredentials>,
    pub lookup: CredentialLookup,
}

/// What a 401 asked for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// The challenge of a 401 answer, when it has one the step can meet.
pub(super) fn challenge(response: &Response) -> Option<Challenge> {
    let header = response.headers().get(WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_challenge(header)
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let pattern = regex_lite::Regex::new(r#"([A-Za-z]+)="([^"]*)""#).expect("a valid pattern");
    let mut realm = None;
    let (mut service, mut scope) = (None, None);
    for found in pattern.captures_iter(params) {
        let value = found[2].to_string();
        match found[1].to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// The repository a `/v2/<name>/…` URL is about.
fn repository_of(url: &reqwest::Url) -> Option<String> {
    let path = url.path().strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|m| path.rfind(m))
        .max()
        .map(|at| path[..at].to_string())
}

impl RegistryClient {
    /// After a 401 carrying `challenge` for `url`: new credentials for the next request, a token from the
    /// realm or the user's own. `Ok(false)` when there is nothing new to try.
    pub(super) async fn authorize(
        &self,
        what: &str,
        challenge: Challenge,
        url: &reqwest::Url,
    ) -> Result<bool, HttpFailure> {
        let Some(foreign) = &self.foreign else {
            return Ok(false);
        };
        let auth = match challenge {
            Challenge::Basic => match &foreign.credentials {
                Some(c) => basic(c),
                None => return Ok(false),
            },
            Challenge::Bearer { realm, service, scope } => {
                let scope = scope.or_else(|| repository_of(url).map(|r| format!("repository:{r}:pull")));
                self.token(what, foreign, &realm, service.as_deref(), scope.as_deref())
                    .await?
            }
        };
        *self.auth.lock().expect("not poisoned") = Some(auth);
        Ok(true)
    }

    /// A token from `realm` for `scope`, as `Authorization: Bearer …`.
    async fn token(
        &self,
        what: &str,
        foreign: &Foreign,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<HeaderValue, HttpFailure> {
        let fail = |message: String| HttpFailure {
            message: format!("{what}: {message}"),
            retryable: false,
            at: self.host.clone(),
        };
        let mut url = reqwest::Url::parse(realm).map_err(|_| {
            fail(format!(
                "the registry {} names a token service that is not a URL",
                self.host
            ))
        })?;
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(fail(format!(
                    "the registry {} names a token service with no host",
                    self.host
                )));
            }
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&realm_host)) {
            return Err(fail(format!(
                "the registry {} sends its token requests to {}://{realm_host}, which is not HTTPS: refused, \
                 since credentials would cross the network in clear",
                self.host,
                url.scheme()
            )));
        }
        let credentials = if same_domain(&realm_host, &self.host) {
            foreign.credentials.clone()
        } else {
            let lookup = foreign.lookup.clone();
            let host = realm_host.clone();
            tokio::task::spawn_blocking(move || lookup(&host)).await.ok().flatten()
        };
        *self.token_note.lock().expect("not poisoned") = match (&foreign.credentials, &credentials) {
            (Some(c), None) => Some(format!(
                "its token service {realm_host} is on another host, and the credentials of the {} were not sent \
                 there (the docker config holds none for {realm_host})\n  fix: if {realm_host} is the registry's \
                 own token service, add a docker config entry for {realm_host} too",
                c.origin
            )),
            _ => None,
        };
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.http.get(url);
        if let Some(c) = &credentials {
            request = request.basic_auth(&c.username, Some(c.password.expose()));
        }
        let sent = match &credentials {
            Some(c) => format!("with the credentials of the {}", c.origin),
            None => "anonymously (no credentials for it were found)".to_string(),
        };
        let response = request.send().await.map_err(|e| HttpFailure {
            message: format!(
                "{what}: asking the token service {realm_host} of {}: {}",
                self.host,
                crate::report::chain(&e)
            ),
            retryable: true,
            at: realm_host.clone(),
        })?;
        let code = response.status().as_u16();
        let body = read_limited(response, ERROR_LIMIT)
            .await
            .map_err(|e| fail(format!("the token service {realm_host} sent {e}")))?;
        if code != 200 {
            return Err(fail(format!(
                "the token service {realm_host} of the registry {} refused a token for {}, asked {sent} (HTTP \
                 {code}{})\n  fix: give the step credentials for {}: a docker config entry (DOCKER_CONFIG, or `docker \
                 login {}` in an earlier step)",
                self.host,
                scope.unwrap_or("the registry"),
                registry_error(&body),
                self.host,
                self.host
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = json["token"]
            .as_str()
            .or(json["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail(format!("the token service {realm_host} answered without a token")))?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            fail(format!(
                "the token service {realm_host} answered a token that is not a header"
            ))
        })?;
        header.set_sensitive(true);
        Ok(header)
    }
}

/// `Authorization: Basic …` for credentials, marked sensitive.
fn basic(credentials: &RegistryCredentials) -> HeaderValue {
    let encoded = STANDARD.encode(format!("{}:{}", credentials.username, credentials.password.expose()));
    let mut header = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap_or(HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_registries_write_them() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="test""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge(r#"Bearer service="x""#),
            None,
            "a bearer challenge needs a realm"
        );
        let url = reqwest::Url::parse("https://r.example/v2/org/app/blobs/sha256:abc").unwrap();
        assert_eq!(repository_of(&url).as_deref(), Some("org/app"));
        let url = reqwest::Url::parse("https://r.example/v2/a/manifests/b/manifests/v1").unwrap();
        assert_eq!(repository_of(&url).as_deref(), Some("a/manifests/b"));
    }
}
