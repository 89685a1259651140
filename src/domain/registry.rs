//! What a registry host means: an ECR registry (with the account and region written in its name) or any
//! other registry (a mirror, a test registry), and how a user may write it.
//!
//! Pure parsing, no I/O. Look-alikes such as `1.dkr.ecr.us-east-1.amazonaws.com.example.com` are refused,
//! so a typo never sends an ECR token to a stranger.

use regex_lite::Regex;
use std::fmt;
use std::sync::LazyLock;

static ECR_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^([0-9]{12})\.(?:dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|dkr-ecr(?:-fips)?\.([a-z0-9-]+)\.on\.aws)$",
    )
    .expect("a valid built-in pattern")
});

/// A registry, as `host[:port]`, with the ECR account and region when the host is an ECR one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port]`, without scheme or path: the first part of every image reference.
    pub host: String,
    /// `Some` for an ECR host: what its name says.
    pub ecr: Option<EcrHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

impl Registry {
    /// Parse what a user (or a token's proxy endpoint) wrote: `host[:port]`, optionally with an
    /// `https://` or `http://` scheme and a trailing `/`. Returns what is allowed on error.
    pub fn parse(value: &str) -> Result<Registry, String> {
        let allowed = "a registry host such as 123456789012.dkr.ecr.eu-west-2.amazonaws.com \
                       or host:port, without a path";
        let trimmed = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
            .unwrap_or(value)
            .trim_end_matches('/');
        if trimmed.starts_with('[') {
            return Err(format!(
                "a host name or IPv4 address: IPv6 literals such as `{trimmed}` are not supported (image references \
                 and the Docker Engine treat them inconsistently); use a name such as localhost:5000"
            ));
        }
        let bare = trimmed.split(':').next().unwrap_or("").to_ascii_lowercase();
        if bare == "public.ecr.aws" || bare.ends_with(".public.ecr.aws") || bare.starts_with("public.ecr.aws.") {
            return Err(format!(
                "a private ECR registry: `{trimmed}` is ECR Public, which needs its own token \
                 (ecr-public:GetAuthorizationToken, in us-east-1) and is not supported by this step"
            ));
        }
        let (host, port) = match trimmed.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (trimmed, None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
        if !host_ok || !port_ok {
            return Err(allowed.into());
        }
        let lower = host.to_ascii_lowercase();
        let ecr = match ECR_HOST.captures(&lower) {
            Some(c) => {
                let region = c.get(2).or_else(|| c.get(3)).map_or("", |m| m.as_str());
                crate::domain::grammar::region(region)
                    .map_err(|_| format!("an ECR host whose region part is a real region, not `{region}`"))?;
                Some(EcrHost {
                    account: c[1].to_string(),
                    region: region.to_string(),
                })
            }
            None if looks_like_ecr(&lower) => {
                return Err(format!(
                    "a real ECR host: `{host}` looks like one but is not \
                     (ECR hosts are <12-digit account>.dkr.ecr.<region>.amazonaws.com)"
                ));
            }
            None => None,
        };
        Ok(Registry {
            host: trimmed.to_ascii_lowercase(),
            ecr,
        })
    }
}

fn looks_like_ecr(host: &str) -> bool {
    host.contains(".dkr.") || host.contains("dkr-ecr") || host.contains("amazonaws.com") || host.ends_with(".on.aws")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecr(host: &str) -> Option<(String, String)> {
        Registry::parse(host).unwrap().ecr.map(|e| (e.account, e.region))
    }

    #[test]
    fn ecr_hosts_give_account_and_region() {
        let want = Some(("123456789012".to_string(), "eu-west-2".to_string()));
        assert_eq!(ecr("123456789012.dkr.ecr.eu-west-2.amazonaws.com"), want);
        assert_eq!(ecr("https://123456789012.dkr.ecr.eu-west-2.amazonaws.com/"), want);
        assert_eq!(ecr("123456789012.dkr.ecr-fips.eu-west-2.amazonaws.com"), want);
        assert_eq!(ecr("123456789012.dkr-ecr.eu-west-2.on.aws"), want);
        assert_eq!(
            ecr("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some(("123456789012".into(), "cn-north-1".into()))
        );
    }

    #[test]
    fn other_registries_are_plain_hosts() {
        let r = Registry::parse("127.0.0.1:5000").unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.ecr, None);
        assert_eq!(Registry::parse("registry.example.com").unwrap().ecr, None);
    }

    #[test]
    fn look_alikes_and_malformed_hosts_are_refused() {
        for bad in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.example.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.co",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.nowhere.amazonaws.com",
            "evil-amazonaws.com",
            "",
            "host:0",
            "host:99999",
            "host/path",
            "ho st",
            "-host",
        ] {
            assert!(Registry::parse(bad).is_err(), "{bad}");
        }
        let e = Registry::parse("[::1]:5000").unwrap_err();
        assert!(e.contains("IPv6 literals") && e.contains("not supported"), "{e}");
        for public in ["public.ecr.aws", "https://public.ecr.aws/", "PUBLIC.ECR.AWS:443"] {
            let e = Registry::parse(public).unwrap_err();
            assert!(
                e.contains("ECR Public") && e.contains("ecr-public:GetAuthorizationToken"),
                "{e}"
            );
        }
    }
}
