//! [`Step`]: the built `ecr-step` binary, run as a user would (environment in, exit code and output out).

use super::{ACCESS_KEY, Image, Moto, REGION, Registry, SECRET_KEY, repo_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A read role of the default account (`DEFAULT_ACCOUNT`), for promotes from another loopback registry.
pub const READ_ROLE: &str = "arn:aws:iam::123456789012:role/ecr-step-reader";

/// One run of the step binary.
pub struct Step {
    env: BTreeMap<String, String>,
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Step {
    /// A clean environment: PATH, the engine's address, IMDS off (loopback only), a state directory of its
    /// own, nothing else.
    pub fn new() -> Step {
        let mut env = BTreeMap::new();
        for key in ["PATH", "HOME", "DOCKER_HOST"] {
            if let Ok(value) = std::env::var(key) {
                env.insert(key.to_string(), value);
            }
        }
        env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        // Each run keeps its state (the record of the engine's pushes) apart, under target/: a registry of
        // a later test may reuse a port and a repository name. A test that needs the record across runs
        // gives them one PLUGIN_STATE_DIR.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let state = repo_root().join(format!("target/test-state/{}-{n}", std::process::id()));
        env.insert("XDG_STATE_HOME".into(), state.display().to_string());
        Step { env }
    }

    /// A run against `moto` with the default static keys in the container environment, and no settings.
    pub fn aws(moto: &Moto) -> Step {
        Step::new()
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    }

    /// A push to `registry` through `moto` with the default static keys in the container environment.
    pub fn push(moto: &Moto, registry: &Registry, image: &Image, repo: &str) -> Step {
        Step::aws(moto)
            .env("PLUGIN_SOURCE", &image.name)
            .env("PLUGIN_REPO", repo)
            .env("PLUGIN_REGISTRY", &registry.host)
            .env("PLUGIN_REGION", REGION)
    }

    /// A promote of `source` to `repo:tags` in the registry at `target` (host:port), through `moto`.
    ///
    /// A source on another loopback registry stands in for an ECR registry of the default account: the
    /// step sends the ECR token to no host that is neither ECR by name nor a destination, so the source is
    /// read with a read role of that account (moto accepts any role).
    pub fn promote(moto: &Moto, target: &str, source: &str, repo: &str, tags: &str) -> Step {
        let step = Step::aws(moto)
            .env("PLUGIN_MODE", "promote")
            .env("PLUGIN_SOURCE", source)
            .env("PLUGIN_REPO", repo)
            .env("PLUGIN_TAGS", tags)
            .env("PLUGIN_REGISTRY", target)
            .env("PLUGIN_REGION", REGION);
        match source.split_once('/') {
            Some((host, _)) if host.contains(':') && !target.split(',').any(|t| t == host) => {
                step.env("PLUGIN_READ_ROLE_ARN", READ_ROLE)
            }
            _ => step,
        }
    }

    /// Login mode for `registry`, writing the docker config in `docker_config`.
    pub fn login(moto: &Moto, registry: &Registry, docker_config: &str) -> Step {
        Step::aws(moto)
            .env("PLUGIN_MODE", "login")
            .env("PLUGIN_REGISTRY", &registry.host)
            .env("PLUGIN_REGION", REGION)
            .env("DOCKER_CONFIG", docker_config)
    }

    pub fn env(mut self, key: &str, value: &str) -> Step {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    pub fn remove(mut self, key: &str) -> Step {
        self.env.remove(key);
        self
    }

    /// The binary under test: `$ECR_STEP_BIN` (the benchmark points it at the release build), else the one
    /// cargo built for the tests, else `target/debug/ecr-step`.
    pub fn binary() -> PathBuf {
        if let Ok(path) = std::env::var("ECR_STEP_BIN") {
            return PathBuf::from(path);
        }
        option_env!("CARGO_BIN_EXE_ecr-step")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/debug/ecr-step"))
    }

    /// The environment of this run, for `docker run --env-file` (a file, so no secret is on a command line).
    pub fn env_file(&self, path: &Path) {
        let text: String = self
            .env
            .iter()
            .filter(|(k, _)| !["PATH", "HOME", "XDG_STATE_HOME"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }

    /// Start the step without waiting (for signal tests); stdout and stderr are piped.
    /// The environment of this run.
    pub fn envs(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn spawn(&self) -> std::process::Child {
        Command::new(Step::binary())
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running ecr-step")
    }

    pub fn run(&self) -> Run {
        self.run_as(Command::new(Step::binary()), &[])
    }

    /// Run as in a step container with its own `/etc/hosts` (a private mount namespace, as root): `names`
    /// resolve to 127.0.0.1 for the step alone, while the engine it drives resolves them by this host's.
    /// The environment reaches the step as it is, not on a command line.
    pub fn run_with_own_hosts(&self, names: &[&str]) -> Run {
        let hosts = tempfile::NamedTempFile::new().unwrap();
        let lines: String = names.iter().map(|n| format!("127.0.0.1 {n}\n")).collect();
        std::fs::write(hosts.path(), format!("127.0.0.1 localhost\n::1 localhost\n{lines}")).unwrap();
        let mut unshare = Command::new("unshare");
        unshare
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/hosts && exec \"$2\"")
            .arg("sh")
            .arg(hosts.path())
            .arg(Step::binary());
        self.run_as(unshare, &[])
    }

    /// Run on a terminal, as a user at a shell would: in a pseudo-terminal made by `script` (util-linux),
    /// with `TERM=xterm`. The environment reaches the step as it is, not on a command line. What the
    /// terminal showed (stdout and stderr, as one) is the run's stdout.
    pub fn run_in_terminal(&self) -> Run {
        let binary = Step::binary().display().to_string();
        let mut script = Command::new("script");
        script.args(["-q", "-e", "-c", &binary, "/dev/null"]);
        self.run_as(script, &[("TERM", "xterm")])
    }

    /// `command` (the step, or what runs it) with this run's environment alone (and `extra`), no input,
    /// waited for.
    fn run_as(&self, mut command: Command, extra: &[(&str, &str)]) -> Run {
        let started = Instant::now();
        let out = command
            .env_clear()
            .envs(&self.env)
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {:?}: {e}", command.get_program()));
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }
}

impl Default for Step {
    fn default() -> Self {
        Step::new()
    }
}

impl Run {
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Exit 0, else panic with everything the step printed. Also checks that no secret leaked.
    pub fn success(&self) -> &Run {
        assert_eq!(self.code, Some(0), "the step failed:\n{}", self.output());
        self.no_secrets()
    }

    /// A non-zero exit whose output contains every one of `wanted`.
    pub fn failure(&self, wanted: &[&str]) -> &Run {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "the step should have failed:\n{}",
            self.output()
        );
        let out = self.output();
        for want in wanted {
            assert!(out.contains(want), "`{want}` missing from the output:\n{out}");
        }
        self.no_secrets()
    }

    /// The step printed `text` on stdout.
    pub fn says(&self, text: &str) -> &Run {
        assert!(
            self.stdout.contains(text),
            "`{text}` missing from stdout:\n{}",
            self.stdout
        );
        self
    }

    /// No secret key or registry password in anything the step printed.
    pub fn no_secrets(&self) -> &Run {
        let out = self.output();
        assert!(!out.contains(SECRET_KEY), "the secret key leaked:\n{out}");
        assert!(!out.contains("-auth-token"), "a registry password leaked:\n{out}");
        self
    }

    /// The digest the step reported for `reference` (`pushed: <reference> <digest>`).
    pub fn reported_digest(&self, reference: &str) -> String {
        self.reported("pushed", reference)
    }

    /// The digest of a `<verb>: <reference> <digest>` line (verbs: pushed, promoted, skipped).
    pub fn reported(&self, verb: &str, reference: &str) -> String {
        let prefix = format!("{verb}: {reference} ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.output()))
            .to_string()
    }
}
