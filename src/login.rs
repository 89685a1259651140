//! Login mode: writes the run's registry tokens into the docker config for later steps.
//!
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; merged with what is there (other registries,
//! helpers and settings are kept), written through a 0600 temporary file renamed into place, so the
//! password is never on a command line and never readable by others, even for a moment.

use crate::token::RegistryLogin;
use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// Run login mode: write every destination's token, export the registry hosts.
pub fn run(settings: &crate::settings::Settings, logins: &[RegistryLogin]) -> Result<()> {
    let path = config_path(&settings.ambient)?;
    for warning in write(&path, logins)? {
        println!("warning: {warning}");
    }
    let hosts: Vec<&str> = logins.iter().map(|l| l.registry.host.as_str()).collect();
    println!(
        "login: {} registr{} written to {} (mode 0600)",
        hosts.len(),
        if hosts.len() == 1 { "y" } else { "ies" },
        path.display()
    );
    let outputs = crate::outputs::Outputs {
        registry: hosts.join(","),
        ..Default::default()
    };
    crate::report::outputs(&crate::outputs::write(
        &outputs,
        settings.output_file.as_deref(),
        &settings.ambient,
    )?);
    Ok(())
}

/// Where the docker CLI reads its config.
pub fn config_path(ambient: &HashMap<String, String>) -> Result<PathBuf> {
    if let Some(dir) = ambient.get("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = ambient.get("HOME").filter(|h| !h.is_empty()).ok_or_else(|| {
        anyhow!("login mode needs DOCKER_CONFIG or HOME to know where the docker config is: set DOCKER_CONFIG")
    })?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// Merge `logins` into the docker config at `path`. Returns warnings (a credential helper that would
/// shadow the login).
pub fn write(path: &std::path::Path, logins: &[RegistryLogin]) -> Result<Vec<String>> {
    let mut config: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON: fix or remove it", path.display()))?,
        Ok(_) => serde_json::json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let root = config
        .as_object_mut()
        .ok_or_else(|| anyhow!("{} is not a JSON object", path.display()))?;
    let mut warnings = Vec::new();
    for login in logins {
        let host = &login.registry.host;
        if root.get("credHelpers").and_then(|h| h.get(host)).is_some() {
            warnings.push(format!(
                "{}: credHelpers names a helper for {host}, which the docker CLI prefers over this login",
                path.display()
            ));
        }
        let auth = STANDARD.encode(format!("{}:{}", login.username, login.password.expose()));
        let auths = root.entry("auths").or_insert_with(|| serde_json::json!({}));
        let auths = auths
            .as_object_mut()
            .ok_or_else(|| anyhow!("{}: `auths` is not an object", path.display()))?;
        auths.insert(host.clone(), serde_json::json!({ "auth": auth }));
    }
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let temporary = dir.join(format!(".config.json.ecr-step-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(serde_json::to_string_pretty(&config)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use crate::secret::Secret;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn logins_merge_into_the_config_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"b3RoZXI="}},"credHelpers":{"127.0.0.1:5000":"ecr-login"},"psFormat":"x"}"#,
        )
        .unwrap();
        let login = RegistryLogin {
            registry: Registry::parse("127.0.0.1:5000").unwrap(),
            username: "AWS".into(),
            password: Secret::new("pw"),
            token_account: None,
        };
        let warnings = write(&path, &[login]).unwrap();
        assert_eq!(warnings.len(), 1);
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config["auths"]["other.io"]["auth"], "b3RoZXI=");
        assert_eq!(config["auths"]["127.0.0.1:5000"]["auth"], STANDARD.encode("AWS:pw"));
        assert_eq!(config["psFormat"], "x");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_config_path_follows_docker_config_then_home() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            config_path(&env(&[("DOCKER_CONFIG", "/c"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/c/config.json")
        );
        assert_eq!(
            config_path(&env(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.docker/config.json")
        );
        assert!(config_path(&env(&[])).is_err());
    }
}
