//! Why a connection failed, named by cause, for the AWS calls and the registries alike: a certificate the
//! runner does not trust (unknown issuer, expired, wrong name), a proxy that is down, asks for
//! authentication or refuses the tunnel, a name that does not resolve, a refused connection, a timeout.
//! Each cause has its fix (`AWS_CA_BUNDLE`, `SSL_CERT_FILE`, the proxy variable, `NO_PROXY`), and says
//! whether another attempt could help: a certificate, a proxy's 407 or a missing name never heals by
//! itself. Pure: the caller gives the error's text and the environment.

/// What went wrong on the way to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    UnknownIssuer,
    Expired,
    WrongName,
    Certificate,
    ProxyAuth,
    ProxyRefusedTunnel,
    ProxyUnreachable,
    NoSuchName,
    Refused,
}

/// The cause named in an error's text (its whole chain), if it is one of these.
pub fn cause_of(chain: &str, proxied: bool) -> Option<Cause> {
    let t = chain.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    let cause = if has(&["unknownissuer", "unknown issuer", "self signed", "self-signed"]) {
        Cause::UnknownIssuer
    } else if t.contains("certificate") && has(&["expired", "notvalidyet", "not valid yet"]) {
        Cause::Expired
    } else if has(&["notvalidforname", "not valid for name", "certificate not valid for"]) {
        Cause::WrongName
    } else if has(&[
        "invalid peer certificate",
        "invalidcertificate",
        "certificate verify failed",
    ]) {
        Cause::Certificate
    } else if has(&["proxy authorization required", "proxy authentication required", "407"]) && proxied {
        Cause::ProxyAuth
    } else if has(&[
        "unsuccessful tunnel",
        "tunnel error: unsuccessful",
        "tunnel unsuccessful",
    ]) {
        Cause::ProxyRefusedTunnel
    } else if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no address associated",
    ]) {
        Cause::NoSuchName
    } else if has(&["connection refused", "error connecting to proxy"]) {
        if proxied {
            Cause::ProxyUnreachable
        } else {
            Cause::Refused
        }
    } else {
        return None;
    };
    Some(cause)
}

impl Cause {
    /// Whether another attempt may meet another answer.
    pub fn retryable(self) -> bool {
        self == Cause::Refused
    }

    /// The cause and its fix, for `host` reached through `proxy` (`(variable, value)`, credentials hidden)
    /// when one was used.
    pub fn explain(self, host: &str, proxy: Option<&(String, String)>) -> String {
        let via = proxy.map_or(String::new(), |(k, v)| format!(" through the proxy {k}={v}"));
        let certificate_fix = "give the step your company's CA: AWS_CA_BUNDLE=<PEM file> (added to the system's \
                               roots, for the AWS calls and the registries alike) or SSL_CERT_FILE=<bundle> \
                               (replaces them)";
        let (cause, fix) = match self {
            Cause::UnknownIssuer => (
                format!(
                    "the certificate of {host}{via} is signed by an authority this runner does not trust (unknown issuer)"
                ),
                certificate_fix.to_string(),
            ),
            Cause::Expired => (
                format!("the certificate of {host}{via} has expired (or is not valid yet)"),
                format!(
                    "{host} (or a proxy that inspects TLS) serves an expired certificate: renew it, and check the runner's clock"
                ),
            ),
            Cause::WrongName => (
                format!("the certificate {host}{via} presented is not valid for that name"),
                format!(
                    "check the host name (PLUGIN_REGISTRY, AWS_ENDPOINT_URL); a proxy that inspects TLS must issue certificates for {host}"
                ),
            ),
            Cause::Certificate => (
                format!("the certificate of {host}{via} was refused"),
                certificate_fix.to_string(),
            ),
            Cause::ProxyAuth => (
                format!("the proxy asks for authentication (HTTP 407) on the way to {host}"),
                match proxy {
                    Some((k, _)) => {
                        format!("put the proxy's user and password in {k} (http://user:password@proxy:port)")
                    }
                    None => {
                        "give the proxy's user and password in HTTPS_PROXY (http://user:password@proxy:port)".into()
                    }
                },
            ),
            Cause::ProxyRefusedTunnel => (
                format!("the proxy refused to open a connection to {host}{via}"),
                format!("allow {host} on the proxy, or add it to NO_PROXY to reach it directly"),
            ),
            Cause::ProxyUnreachable => (
                format!("the proxy{via} could not be reached on the way to {host} (connection refused)"),
                match proxy {
                    Some((k, _)) => {
                        format!("check that the proxy in {k} is up, or add {host} to NO_PROXY to reach it directly")
                    }
                    None => "check the proxy settings (HTTPS_PROXY, ALL_PROXY, NO_PROXY)".into(),
                },
            ),
            Cause::NoSuchName => (
                format!("the name of {host} does not resolve here"),
                "check the host name (PLUGIN_REGISTRY, PLUGIN_REGION, AWS_ENDPOINT_URL) and the runner's DNS".into(),
            ),
            Cause::Refused => (
                format!("nothing accepts connections at {host}{via} (connection refused)"),
                format!("check the host and port of {host}, and that it is up"),
            ),
        };
        format!("{cause}\n  fix: {fix}")
    }
}

/// The proxy a request to `url_host` (`host[:port]`) goes through, as `(variable, value)` with any
/// credentials in the value hidden; `None` when no proxy variable is set or `NO_PROXY` exempts the host.
/// `var` reads the environment.
pub fn proxy_for(url_host: &str, https: bool, var: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let set = |k: &str| var(k).filter(|v| !v.trim().is_empty()).map(|v| (k.to_string(), v));
    let name = url_host
        .rsplit_once(':')
        .map_or(url_host, |(h, _)| h)
        .to_ascii_lowercase();
    let exempt = set("NO_PROXY").or_else(|| set("no_proxy")).is_some_and(|(_, list)| {
        list.split(',').map(|e| e.trim().to_ascii_lowercase()).any(|e| {
            let e = e.trim_start_matches('.');
            e == "*" || (!e.is_empty() && (name == e || name.ends_with(&format!(".{e}"))))
        })
    });
    if exempt {
        return None;
    }
    let candidates: &[&str] = if https {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    let (key, value) = candidates.iter().find_map(|k| set(k))?;
    Some((key, without_credentials(&value)))
}

/// A proxy URL with its user and password replaced by `…`.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let shown = match rest.split_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => rest.to_string(),
    };
    if scheme.is_empty() {
        shown
    } else {
        format!("{scheme}://{shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named_from_what_the_tls_and_http_stacks_say() {
        let cases = [
            ("invalid peer certificate: UnknownIssuer", false, Cause::UnknownIssuer),
            (
                "invalid peer certificate: certificate expired: verification time",
                false,
                Cause::Expired,
            ),
            (
                "invalid peer certificate: certificate not valid for name \"x\"",
                false,
                Cause::WrongName,
            ),
            ("tunnel error: proxy authorization required", true, Cause::ProxyAuth),
            ("tunnel error: unsuccessful tunnel", true, Cause::ProxyRefusedTunnel),
            (
                "dns error: failed to lookup address information: Name or service not known",
                false,
                Cause::NoSuchName,
            ),
            (
                "tcp connect error: Connection refused (os error 111)",
                true,
                Cause::ProxyUnreachable,
            ),
            (
                "tcp connect error: Connection refused (os error 111)",
                false,
                Cause::Refused,
            ),
        ];
        for (text, proxied, want) in cases {
            assert_eq!(cause_of(text, proxied), Some(want), "{text}");
        }
        assert_eq!(cause_of("HTTP 500", false), None);
        assert!(!Cause::UnknownIssuer.retryable() && !Cause::NoSuchName.retryable() && Cause::Refused.retryable());
        let text = Cause::UnknownIssuer.explain("r.example:443", None);
        assert!(
            text.contains("AWS_CA_BUNDLE") && text.contains("SSL_CERT_FILE"),
            "{text}"
        );
    }

    #[test]
    fn the_proxy_is_found_exempted_and_shown_without_its_password() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let proxy = proxy_for("r.example:443", true, env(&[("HTTPS_PROXY", "http://u:secret@p:3128")]));
        assert_eq!(proxy, Some(("HTTPS_PROXY".into(), "http://…@p:3128".into())));
        let exempt = env(&[("https_proxy", "http://p:3128"), ("NO_PROXY", "localhost,.example")]);
        assert_eq!(proxy_for("r.example:443", true, exempt), None);
        assert_eq!(
            proxy_for("r.other:443", true, exempt).map(|p| p.0),
            Some("https_proxy".into())
        );
        assert_eq!(proxy_for("r.example", true, env(&[])), None);
    }
}
