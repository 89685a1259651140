//! The docker config that login mode writes for later steps: `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`.
//!
//! Merged with what is there (other registries, helpers and settings are kept) under an exclusive lock on
//! its directory (concurrent logins into one config lose nothing), written through a 0600 temporary file
//! renamed into place (the password is never on a command line nor readable by others), and through a
//! symbolic link when config.json is one. A `credsStore` or `credHelpers` entry that would make docker
//! ignore what is written is an error with the change to make, never a silent success.
//!
//! It is also the one reader of the credentials the user keeps there for registries outside ECR
//! ([`credentials_for`]: a promote source such as Docker Hub or GHCR): the `auths` entry for the host,
//! else the credential helper named for it, run as docker runs it (the host on its standard input, its
//! answer bounded, within a timeout).

use crate::domain::login::{RegistryCredentials, RegistryLogin};
use crate::domain::secret::Secret;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest docker config the step reads.
const CONFIG_LIMIT: usize = 4 << 20;

/// Where the docker CLI reads its config.
pub fn path(ambient: &HashMap<String, String>) -> Result<PathBuf> {
    if let Some(dir) = ambient.get("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.exists() && !dir.is_dir() {
            bail!(
                "DOCKER_CONFIG={} is a file, but docker reads DOCKER_CONFIG as a directory holding config.json\n  \
                 fix: set DOCKER_CONFIG to that file's directory",
                dir.display()
            );
        }
        return Ok(dir.join("config.json"));
    }
    let home = ambient.get("HOME").filter(|h| !h.is_empty()).ok_or_else(|| {
        anyhow!("login mode needs DOCKER_CONFIG or HOME to know where the docker config is: set DOCKER_CONFIG")
    })?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

use crate::domain::ci::SHARED_WORKSPACES;

/// A problem when login would write a docker config that is thrown away with the step's container: the
/// step runs in a container (`/.dockerenv`, `/run/.containerenv`, Kubernetes) and `DOCKER_CONFIG` does not
/// say where the config should live. The fix names the CI's shared workspace when there is one.
pub fn dies_with_the_container(ambient: &HashMap<String, String>) -> Option<String> {
    let set = |k: &str| ambient.get(k).is_some_and(|v| !v.trim().is_empty());
    if set("DOCKER_CONFIG") {
        return None;
    }
    let in_container =
        Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists() || set("KUBERNETES_SERVICE_HOST");
    if !in_container {
        return None;
    }
    let suggestion = SHARED_WORKSPACES
        .iter()
        .find(|k| set(k))
        .map(|k| format!("DOCKER_CONFIG=${k}/.docker (the CI's shared workspace), and the same DOCKER_CONFIG in the steps that use the login"))
        .unwrap_or_else(|| "DOCKER_CONFIG to a directory mounted from outside the container (a volume the later steps also mount)".to_string());
    Some(format!(
        "login mode: the step runs in a container and DOCKER_CONFIG is not set, so the docker config would be \
         written inside the container and thrown away when the step ends: later steps would get no login\n    \
         fix: set {suggestion}"
    ))
}

/// Merge `logins` into the docker config at `path`, under an exclusive lock on its directory.
pub fn write(path: &Path, logins: &[RegistryLogin]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // config.json is replaced by rename, so its own inode cannot carry the lock: its directory does.
    let lock = std::fs::File::open(dir).with_context(|| format!("opening {} to lock it", dir.display()))?;
    lock.lock()
        .with_context(|| format!("locking {} for the docker config", dir.display()))?;
    // A symbolic link stays one: the file it points at is what gets replaced.
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("{} is a symbolic link that leads nowhere", path.display()))?,
        _ => path.to_path_buf(),
    };
    let mut config: serde_json::Value = match crate::files::read_bounded(&target, CONFIG_LIMIT) {
        Ok(text) if !text.trim().is_empty() => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON: fix or remove it", path.display()))?,
        Ok(_) => serde_json::json!({}),
        Err(_) if !target.exists() => serde_json::json!({}),
        Err(e) => bail!("reading the docker config: {e}"),
    };
    let root = config
        .as_object_mut()
        .ok_or_else(|| anyhow!("{} is not a JSON object", path.display()))?;
    for login in logins {
        shadowed(root, &login.registry.host, path)?;
        let auth = STANDARD.encode(format!("{}:{}", login.username, login.password.expose()));
        let auths = root.entry("auths").or_insert_with(|| serde_json::json!({}));
        let auths = auths
            .as_object_mut()
            .ok_or_else(|| anyhow!("{}: `auths` is not an object", path.display()))?;
        auths.insert(login.registry.host.clone(), serde_json::json!({ "auth": auth }));
    }
    let target_dir = target.parent().unwrap_or(dir);
    let temporary = target_dir.join(format!(".config.json.ecr-step-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(serde_json::to_string_pretty(&config)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &target).with_context(|| format!("replacing {}", target.display()))?;
    Ok(())
}

/// An error when docker would not read the `auths` entry for `host`: a `credHelpers` entry for it, or a
/// `credsStore`, sends docker to a helper instead (the docker CLI's own order).
fn shadowed(root: &serde_json::Map<String, serde_json::Value>, host: &str, path: &Path) -> Result<()> {
    if let Some(helper) = root
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .and_then(|h| h.as_str())
    {
        bail!(
            "{}: credHelpers sends docker to the helper docker-credential-{helper} for {host}, so docker would \
             ignore this login\n  fix: remove \"{host}\" from credHelpers in that file, or set DOCKER_CONFIG to a \
             directory of this pipeline's own",
            path.display()
        );
    }
    if let Some(store) = root
        .get("credsStore")
        .and_then(|h| h.as_str())
        .filter(|s| !s.is_empty())
    {
        bail!(
            "{}: credsStore sends docker to docker-credential-{store} for every registry, so docker would ignore \
             this login\n  fix: remove \"credsStore\" from that file, or set DOCKER_CONFIG to a directory of this \
             pipeline's own",
            path.display()
        );
    }
    Ok(())
}

/// The most a credential helper may print, and how long it may take.
const HELPER_LIMIT: u64 = 64 << 10;
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The credentials the docker config holds for `host`: its `auths` entry (`auth`, or `username` and
/// `password`), else the helper of `credHelpers` for the host, else the `credsStore`. `Ok(None)` when there
/// is no config or it holds nothing for the host; `Err` when what it holds cannot be used (the message
/// names the file or helper, never a value).
pub fn credentials_for(host: &str, ambient: &HashMap<String, String>) -> Result<Option<RegistryCredentials>> {
    let file = path(ambient)?;
    if !file.exists() {
        return Ok(None);
    }
    let text = crate::files::read_bounded(&file, CONFIG_LIMIT).map_err(|e| anyhow!("the docker config: {e}"))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("the docker config {} is not JSON ({e})", file.display()))?;
    let keys = keys_of(host);
    if let Some(entry) = keys.iter().find_map(|k| config["auths"].get(k.as_str())) {
        let origin = format!("docker config entry for {host}");
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = STANDARD
                .decode(auth)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| anyhow!("{}: the auth of {host} is not base64 of user:password", file.display()))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| anyhow!("{}: the auth of {host} is not base64 of user:password", file.display()))?;
            return Ok(Some(RegistryCredentials {
                username: user.to_string(),
                password: Secret::new(password),
                origin,
            }));
        }
        if let (Some(user), Some(password)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some(RegistryCredentials {
                username: user.to_string(),
                password: Secret::new(password),
                origin,
            }));
        }
    }
    let helper = keys
        .iter()
        .find_map(|k| config["credHelpers"][k.as_str()].as_str())
        .or(config["credsStore"].as_str())
        .filter(|h| !h.is_empty());
    match helper {
        Some(helper) => run_helper(helper, &keys[0]),
        None => Ok(None),
    }
}

/// The keys docker files a host's credentials under (Docker Hub's is its old index URL).
fn keys_of(host: &str) -> Vec<String> {
    if host == crate::domain::reference::DOCKER_HUB {
        return ["https://index.docker.io/v1/", "index.docker.io", "docker.io", host]
            .iter()
            .map(|k| k.to_string())
            .collect();
    }
    vec![host.to_string(), format!("https://{host}"), format!("http://{host}")]
}

/// `docker-credential-<helper> get` for `server`, as docker runs it: the server on its standard input, its
/// JSON answer (`Username`, `Secret`) on its output. A helper that has nothing for the server says so and
/// exits non-zero: no credentials, not an error.
fn run_helper(helper: &str, server: &str) -> Result<Option<RegistryCredentials>> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    if !helper.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("the docker config names the credential helper `{helper}`, which is not a helper name");
    }
    let program = format!("docker-credential-{helper}");
    let child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        // Not installed where the step runs: no credentials from it (docker config files often name a
        // desktop helper that a CI container does not have).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("the docker config names the credential helper {program}, which cannot be run ({e})"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(HELPER_LIMIT + 1).read_to_end(&mut out);
        out
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > HELPER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the credential helper {program} did not answer within {}s",
                HELPER_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Ok(None);
    }
    if out.len() as u64 > HELPER_LIMIT {
        bail!("the credential helper {program} answered with more than {HELPER_LIMIT} bytes");
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&out).map_err(|_| anyhow!("the credential helper {program} did not answer JSON"))?;
    match (answer["Username"].as_str(), answer["Secret"].as_str()) {
        (Some(user), Some(secret)) if !secret.is_empty() => Ok(Some(RegistryCredentials {
            username: user.to_string(),
            password: Secret::new(secret),
            origin: format!("credential helper {program}"),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::registry::Registry;
    use crate::domain::secret::Secret;
    use std::os::unix::fs::PermissionsExt;

    fn login(host: &str) -> RegistryLogin {
        RegistryLogin {
            registry: Registry::parse(host).unwrap(),
            region: "us-east-1".into(),
            username: "AWS".into(),
            password: Secret::new("pw"),
            token_account: None,
        }
    }

    #[test]
    fn logins_merge_into_the_config_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"b3RoZXI="}},"credHelpers":{"other.io":"ecr-login"},"psFormat":"x"}"#,
        )
        .unwrap();
        write(&path, &[login("127.0.0.1:5000")]).unwrap();
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config["auths"]["other.io"]["auth"], "b3RoZXI=");
        assert_eq!(config["auths"]["127.0.0.1:5000"]["auth"], STANDARD.encode("AWS:pw"));
        assert_eq!(config["credHelpers"]["other.io"], "ecr-login");
        assert_eq!(config["psFormat"], "x");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_helper_that_would_shadow_the_login_is_an_error_and_nothing_is_written() {
        for (config, want) in [
            (r#"{"credHelpers":{"127.0.0.1:5000":"ecr-login"}}"#, "credHelpers"),
            (r#"{"credsStore":"desktop"}"#, "credsStore"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.json");
            std::fs::write(&path, config).unwrap();
            let e = format!("{:#}", write(&path, &[login("127.0.0.1:5000")]).unwrap_err());
            assert!(e.contains(want) && e.contains("fix:"), "{e}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                config,
                "the config was changed"
            );
        }
    }

    #[test]
    fn a_symlinked_config_stays_a_link_and_its_target_gets_the_login() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        std::fs::write(&real, r#"{"auths":{}}"#).unwrap();
        let config = dir.path().join("docker");
        std::fs::create_dir(&config).unwrap();
        let link = config.join("config.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, &[login("127.0.0.1:5000")]).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&real).unwrap().contains("127.0.0.1:5000"));
    }

    #[test]
    fn concurrent_logins_into_one_config_keep_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let threads: Vec<_> = (0..10)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || write(&path, &[login(&format!("127.0.0.1:{}", 5000 + i))]).unwrap())
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config["auths"].as_object().unwrap().len(), 10, "{config}");
    }

    #[test]
    fn the_config_path_follows_docker_config_then_home() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            path(&env(&[("DOCKER_CONFIG", "/c"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/c/config.json")
        );
        assert_eq!(
            path(&env(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.docker/config.json")
        );
        assert!(path(&env(&[])).is_err());
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = path(&env(&[("DOCKER_CONFIG", &file.path().display().to_string())])).unwrap_err();
        assert!(
            e.to_string().contains("is a file") && e.to_string().contains("fix:"),
            "{e}"
        );
    }
}
