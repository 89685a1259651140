//! The grammar of every value a user can write: regions, repository names, tags, access keys, role ARNs,
//! booleans and durations.
//!
//! Pure functions, no I/O. Each returns `Err(what is allowed)`; the caller adds the setting's name.

use regex_lite::Regex;
use std::sync::LazyLock;
use std::time::Duration;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid built-in pattern")
}

static REGION: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}$"));
static REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"));
static TAG: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"));
static ACCESS_KEY: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Z0-9]{20}$"));
static ROLE_ARN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[a-zA-Z0-9+=,.@_/-]+$"));
static EXTERNAL_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9+=,.@:/_-]{2,1224}$"));
static SESSION_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9+=,.@_-]{2,64}$"));

pub fn region(value: &str) -> Result<(), String> {
    if REGION.is_match(value) {
        Ok(())
    } else {
        Err("an AWS region such as us-east-1 or eu-west-2".into())
    }
}

pub fn repository(value: &str) -> Result<(), String> {
    if (2..=256).contains(&value.len()) && REPOSITORY.is_match(value) {
        Ok(())
    } else {
        Err(
            "a repository name of 2 to 256 characters: lowercase letters and digits, \
             separated by '.', '_', '-' or '/' (e.g. team/app)"
                .into(),
        )
    }
}

pub fn tag(value: &str) -> Result<(), String> {
    if TAG.is_match(value) {
        Ok(())
    } else {
        Err("tags of 1 to 128 characters: letters, digits, '_', '.', '-', not starting with '.' or '-'".into())
    }
}

pub fn access_key(value: &str) -> Result<(), String> {
    if ACCESS_KEY.is_match(value) {
        Ok(())
    } else {
        Err("an access key id of 20 uppercase letters and digits (e.g. AKIAIOSFODNN7EXAMPLE)".into())
    }
}

pub fn secret_key(value: &str) -> Result<(), String> {
    if (16..=128).contains(&value.len()) && !value.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err("a secret access key: 16 to 128 characters without spaces".into())
    }
}

pub fn role_arn(value: &str) -> Result<(), String> {
    if ROLE_ARN.is_match(value) && value.len() <= 2048 {
        Ok(())
    } else {
        Err("an IAM role ARN such as arn:aws:iam::123456789012:role/ci-push".into())
    }
}

pub fn external_id(value: &str) -> Result<(), String> {
    if EXTERNAL_ID.is_match(value) {
        Ok(())
    } else {
        Err("an external ID of 2 to 1224 characters: letters, digits and +=,.@:/_-".into())
    }
}

pub fn session_name(value: &str) -> Result<(), String> {
    if SESSION_NAME.is_match(value) {
        Ok(())
    } else {
        Err("a session name of 2 to 64 characters: letters, digits and +=,.@_-".into())
    }
}

/// A role session length in seconds, 900 to 3600.
pub fn duration_seconds(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (900..=3600).contains(&n) => Ok(n),
        _ => Err("a whole number of seconds from 900 to 3600".into()),
    }
}

/// The most a web identity token file may hold (STS takes tokens of up to 20,000 characters).
pub const TOKEN_FILE_LIMIT: u64 = 64 * 1024;

/// A tag mutability exclusion filter: 1 to 128 characters of a tag's alphabet and `*`, at most 2 wildcards.
pub fn exclusion_filter(value: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
        && value.matches('*').count() <= 2;
    if ok {
        Ok(())
    } else {
        Err("wildcard filters of 1 to 128 characters (letters, digits, '.', '_', '-', and at most 2 '*')".into())
    }
}

/// A KMS key id, key ARN, alias name or alias ARN.
pub fn kms_key(value: &str) -> Result<(), String> {
    let ok =
        (1..=2048).contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphanumeric() || ":/_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err("a KMS key id, key ARN or alias (alias/name)".into())
    }
}

/// `key=value` pairs, comma separated: keys 1 to 128 characters, values up to 256.
pub fn resource_tags(value: &str) -> Result<Vec<(String, String)>, String> {
    let allowed = || "key=value pairs separated by commas (keys 1 to 128 characters, values up to 256)".to_string();
    let mut tags = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(allowed)?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            return Err(allowed());
        }
        tags.push((k.to_string(), v.to_string()));
    }
    if tags.is_empty() || tags.len() > 50 {
        Err(allowed())
    } else {
        Ok(tags)
    }
}

/// Whether a policy setting's value is the JSON itself rather than a path: it starts like JSON (`{`, `[`),
/// spans lines, or is longer than any path.
pub fn is_inline_json(value: &str) -> bool {
    value.starts_with(['{', '[']) || value.contains('\n') || value.len() > 4096
}

/// A JSON policy's text: a JSON object of at most `max_len` characters.
pub fn json_policy(text: &str, max_len: usize) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) if text.len() <= max_len => Ok(text.to_string()),
        Ok(serde_json::Value::Object(_)) => Err(format!(
            "a JSON policy of at most {max_len} characters (this one has {})",
            text.len()
        )),
        Ok(_) => Err("a JSON object".into()),
        Err(e) => Err(format!("valid JSON ({e})")),
    }
}

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("true or false".into()),
    }
}

/// `90`, `90s`, `5m`, `1h`: a whole number of seconds, minutes or hours, from 1 s to 24 h.
pub fn duration(value: &str) -> Result<Duration, String> {
    let allowed = || "a duration such as 90s, 5m or 1h (from 1s to 24h)".to_string();
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| allowed())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(allowed()),
    };
    if (1..=86_400).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(allowed())
    }
}

static PATH_COMPONENT: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$"));
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9.-]+(?::[0-9]{1,5})?$"));
static DIGEST: LazyLock<Regex> = LazyLock::new(|| re(r"^sha256:[0-9a-f]{1,64}$"));

/// A local image reference for the engine, in the Docker reference grammar: `[host[:port]/]name[:tag]`,
/// `name@sha256:…` or an image id (`sha256:…`). Repository names are lowercase, so `Team/App:1` is refused
/// here, before any network call, rather than by the engine after the token was fetched.
pub fn local_image(value: &str) -> Result<(), String> {
    let allowed = || {
        "a local image such as app:1.2, registry:5000/team/app:1 or sha256:<id> (repository names are \
         lowercase: letters, digits and . _ -)"
            .to_string()
    };
    if value.is_empty() || value.len() > 512 || DIGEST.is_match(value) {
        return if value.is_empty() || value.len() > 512 {
            Err(allowed())
        } else {
            Ok(())
        };
    }
    let (name, digest) = match value.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (value, None),
    };
    if digest.is_some_and(|d| !DIGEST.is_match(d)) {
        return Err(allowed());
    }
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    if tag.is_some_and(|t| self::tag(t).is_err()) {
        return Err(allowed());
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        if !DOMAIN.is_match(first) || first.starts_with(['.', '-']) {
            return Err(allowed());
        }
        parts.remove(0);
    }
    if parts.iter().all(|p| PATH_COMPONENT.is_match(p)) {
        Ok(())
    } else {
        Err(allowed())
    }
}

/// A value as it can be shown in one log line: control characters escaped, long values cut, and a value
/// that looks like a secret access key or session token (in the wrong setting, say) never shown.
pub fn printable(value: &str) -> String {
    if looks_like_secret(value) {
        return format!(
            "<{} characters hidden: they look like a secret key>",
            value.chars().count()
        );
    }
    let escaped: String = value.chars().flat_map(char::escape_default).collect();
    if escaped.chars().count() > 80 {
        format!("{}…", escaped.chars().take(80).collect::<String>())
    } else {
        escaped
    }
}

/// 40 or more characters of the base64 alphabet with both cases and a digit or `/`/`+`: the shape of an AWS
/// secret access key (40) or session token. A git commit id (lowercase hex) is not.
pub fn looks_like_secret(value: &str) -> bool {
    value.len() >= 40
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"/+=".contains(&b))
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && value.bytes().any(|b| b.is_ascii_uppercase())
        && value.bytes().any(|b| b.is_ascii_digit() || b"/+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_shaped_values_are_never_printable() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert!(looks_like_secret(secret));
        assert!(!printable(secret).contains("wJalr"), "{}", printable(secret));
        let commit = "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901";
        assert!(!looks_like_secret(commit));
        assert_eq!(printable(commit), commit);
        assert_eq!(printable("a\u{1b}[31m\r\n"), "a\\u{1b}[31m\\r\\n");
    }

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "eu-west-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-4",
            "il-central-1",
        ] {
            assert!(region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us_east_1",
            "useast1",
            "us-east-1 ",
            "eu-west-2a",
        ] {
            assert!(region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repositories() {
        for ok in ["ab", "team/app", "a.b_c-d/e", "a/b/c", &"a".repeat(256)] {
            assert!(repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "App",
            "team//app",
            "/app",
            "app/",
            "a..b",
            "-app",
            "app-",
            "a b",
            &"a".repeat(257),
        ] {
            assert!(repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", "a b", &"t".repeat(129)] {
            assert!(tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_arns_and_sessions() {
        assert!(role_arn("arn:aws:iam::123456789012:role/ci-push").is_ok());
        assert!(role_arn("arn:aws:iam::123456789012:role/path/ci").is_ok());
        assert!(role_arn("arn:aws:iam::12345678901:role/x").is_err());
        assert!(role_arn("arn:aws:iam::123456789012:user/x").is_err());
        assert!(role_arn("arn:aws:iam::123456789012:role/").is_err());
        assert!(external_id("tenant-42").is_ok());
        assert!(external_id("x").is_err());
        assert!(external_id("has space").is_err());
        assert!(session_name("ecr-step-1234").is_ok());
        assert!(session_name("a b").is_err());
        assert!(session_name(&"s".repeat(65)).is_err());
        assert_eq!(duration_seconds("900"), Ok(900));
        assert!(duration_seconds("899").is_err());
        assert!(duration_seconds("3601").is_err());
        assert!(access_key("AKIAIOSFODNN7EXAMPLE").is_ok());
        assert!(access_key("akiaiosfodnn7example").is_err());
        assert!(access_key("AKIAIOSFODNN7EXAMPL").is_err());
        assert!(secret_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY").is_ok());
        assert!(secret_key("short").is_err());
        assert!(secret_key("has a space in it somewhere").is_err());
    }

    #[test]
    fn booleans_and_durations() {
        assert_eq!(boolean("TRUE"), Ok(true));
        assert_eq!(boolean("no"), Ok(false));
        assert!(boolean("maybe").is_err());
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "0", "5x", "m", "25h", "-1", "1.5m"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_images() {
        for ok in [
            "app",
            "app:1.2",
            "localhost:5000/app:1",
            "sha256:abcd",
            "app@sha256:abcd",
        ] {
            assert!(local_image(ok).is_ok(), "{ok}");
        }
        for ok in [
            "team/app:1",
            "127.0.0.1:5000/team/app",
            "my_app-2:Tag_1",
            &format!("sha256:{}", "a".repeat(64)),
        ] {
            assert!(local_image(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "app 1",
            "-app",
            "app;rm",
            "app\n",
            "Team/App:1",
            "APP",
            "app:-x",
            "app@sha256:XYZ",
        ] {
            assert!(local_image(bad).is_err(), "{bad}");
        }
    }
}
