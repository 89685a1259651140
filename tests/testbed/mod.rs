//! The testbed: real programs the step is tested against, started on free loopback ports and stopped by
//! process id when dropped. Shared by every end-to-end test and by the demo (`examples/demo.rs`).
//!
//! - [`Moto`]: moto server, the ECR and STS APIs.
//! - [`Registry`]: a CNCF distribution registry whose htpasswd accepts one account's ECR token.
//! - [`Image`]: a local image in the machine's Docker Engine, made from random files (no pulls).
//! - [`Step`]: the built `ecr-step` binary, run as a user would (environment in, exit code and output out).
//! - [`Tripwire`]: an endpoint that records whether the step connected ("no network call" as an assertion).
//!
//! Nothing here talks to anything but 127.0.0.1: IMDS is disabled in every step run.
#![allow(dead_code)]

pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The account moto gives static keys.
pub const DEFAULT_ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// Credentials for moto; any key works there. Tests scan output for the secret.
pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free port on 127.0.0.1: the kernel's choice, released just before the server binds it, and never
/// handed out twice by this process. (Without that, two tests starting servers at once could both be given
/// the port the kernel just released: the slow starter fails to bind, and its readiness check is answered by
/// the other test's server. CI saw it: a moto "ready" on a registry's port.)
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A listening loopback port that nothing answers on: point an endpoint at it, run the step, and
/// [`Tripwire::touched`] says whether the step connected (the kernel completes the handshake into the backlog).
/// How a test proves "no network call" instead of timing one.
pub struct Tripwire {
    listener: TcpListener,
    pub url: String,
}

impl Tripwire {
    pub fn new() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let tripwire = Tripwire {
            listener,
            url: format!("http://{address}"),
        };
        // The wire must trip: one probe connection is seen, then it is reset.
        drop(TcpStream::connect(address).unwrap());
        let seen = Instant::now();
        while !tripwire.touched() {
            assert!(
                seen.elapsed() < Duration::from_secs(5),
                "the tripwire did not see a connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!tripwire.touched(), "the tripwire saw a connection nobody made");
        tripwire
    }

    /// True when anything connected since it was made.
    pub fn touched(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

/// Wait until `server` accepts connections on `port`; fail with its log if it exits first.
fn wait_for_port(server: &mut Server, port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let failure = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            break format!("{what} exited ({status}) before listening on 127.0.0.1:{port}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if Instant::now() > deadline {
            break format!("{what} did not listen on 127.0.0.1:{port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{failure}; its log:\n{text}");
}

fn find_program(env_var: &str, candidates: &[PathBuf], install_hint: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{} not found (looked at ${env_var} and {candidates:?}): {install_hint}",
            candidates[0].display()
        )
    })
}

/// A child process that is killed (by pid) and reaped when dropped.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &Path, args: &[&str], envs: &[(&str, &str)], dir: tempfile::TempDir) -> (Server, PathBuf) {
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    (Server { child, _dir: dir }, log)
}

/// moto server: ECR and STS on one loopback port.
pub struct Moto {
    _server: Server,
    pub url: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// Start with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to enforce IAM.
    pub fn start_with(envs: &[(&str, &str)]) -> Moto {
        let program = find_program(
            "MOTO_SERVER",
            &[repo_root().join(".testbed/venv/bin/moto_server")],
            "run scripts/install-testbed",
        );
        let port = free_port();
        let port_text = port.to_string();
        let (mut server, log) = spawn(
            &program,
            &["-H", "127.0.0.1", "-p", &port_text],
            envs,
            tempfile::tempdir().unwrap(),
        );
        wait_for_port(&mut server, port, "moto server", &log);
        Moto {
            _server: server,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Moto {
    /// Run the AWS CLI against this moto (`aws <args> --output json`) and return its JSON answer, or the
    /// CLI's error text. Uses the default static keys unless `keys` are given.
    pub fn aws_as(&self, keys: (&str, &str), args: &[&str]) -> Result<serde_json::Value, String> {
        let out = Command::new(repo_root().join(".testbed/venv/bin/aws"))
            .args(args)
            .args(["--endpoint-url", &self.url, "--region", REGION, "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", keys.0)
            .env("AWS_SECRET_ACCESS_KEY", keys.1)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("the AWS CLI in .testbed/venv: run scripts/install-testbed");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        })
    }

    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        self.aws_as((ACCESS_KEY, SECRET_KEY), args)
            .unwrap_or_else(|e| panic!("aws {args:?} failed: {e}"))
    }

    /// An IAM user allowed exactly `actions`, and its access key pair. Needs a moto started with
    /// `INITIAL_NO_AUTH_ACTION_COUNT=3` (these three calls are the unauthenticated ones).
    pub fn user_allowed(&self, actions: &[&str]) -> (String, String) {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
        });
        self.aws(&["iam", "create-user", "--user-name", "ci"]);
        self.aws(&[
            "iam",
            "put-user-policy",
            "--user-name",
            "ci",
            "--policy-name",
            "ci",
            "--policy-document",
            &policy.to_string(),
        ]);
        let key = self.aws(&["iam", "create-access-key", "--user-name", "ci"]);
        let id = key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string();
        let secret = key["AccessKey"]["SecretAccessKey"].as_str().unwrap().to_string();
        (id, secret)
    }
}

/// A distribution registry on loopback, plain HTTP, htpasswd user `AWS` with the password moto's ECR token
/// carries for `account`: it accepts a push only with a token issued for that account.
pub struct Registry {
    _server: Server,
    pub host: String,
    pub account: String,
    agent: ureq::Agent,
}

impl Registry {
    pub fn start(account: &str) -> Registry {
        let program = find_program(
            "DOCKER_REGISTRY",
            &[PathBuf::from("/usr/bin/docker-registry")],
            "run scripts/install-testbed (Debian package docker-registry)",
        );
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", "AWS", &format!("{account}-auth-token")])
            .output()
            .expect("htpasswd (Debian package apache2-utils): run scripts/install-testbed");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {root}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: 127.0.0.1:{port}}}\nauth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let config_arg = config_path.display().to_string();
        let (mut server, log) = spawn(&program, &["serve", &config_arg], &[], dir);
        wait_for_port(&mut server, port, "docker-registry", &log);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Registry {
            _server: server,
            host: format!("127.0.0.1:{port}"),
            account: account.to_string(),
            agent,
        }
    }

    fn password(&self) -> String {
        format!("{}-auth-token", self.account)
    }

    /// `Authorization` for this registry's account.
    fn auth(&self) -> String {
        format!("Basic {}", base64_encode(&format!("AWS:{}", self.password())))
    }

    /// GET or HEAD a manifest with every manifest type accepted; `None` on 404.
    fn fetch_manifest(&self, head: bool, repo: &str, reference: &str) -> Option<ureq::http::Response<ureq::Body>> {
        let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.host);
        let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json";
        let request = if head {
            self.agent.head(&url)
        } else {
            self.agent.get(&url)
        };
        let response = request
            .header("Authorization", &self.auth())
            .header("Accept", accept)
            .call()
            .expect("the registry answers");
        match response.status().as_u16() {
            200 => Some(response),
            404 => None,
            other => panic!("registry answered {other} for {url}"),
        }
    }

    /// The digest the registry itself holds for `repo:tag` (`Docker-Content-Digest`), `None` when absent.
    pub fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let response = self.fetch_manifest(true, repo, tag)?;
        Some(
            response
                .headers()
                .get("docker-content-digest")?
                .to_str()
                .ok()?
                .to_string(),
        )
    }

    /// The manifest `repo:reference` as stored: bytes, media type, digest.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(Vec<u8>, String, String)> {
        let mut response = self.fetch_manifest(false, repo, reference)?;
        let header = |n: &str| response.headers().get(n).unwrap().to_str().unwrap().to_string();
        let (media_type, digest) = (header("content-type"), header("docker-content-digest"));
        Some((response.body_mut().read_to_vec().unwrap(), media_type, digest))
    }

    /// Store a manifest (the test builds multi-arch indexes this way).
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.host);
        let mut response = self
            .agent
            .put(&url)
            .header("Authorization", &self.auth())
            .header("Content-Type", media_type)
            .send(bytes)
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            status,
            201,
            "PUT {url}: {}",
            response.body_mut().read_to_string().unwrap_or_default()
        );
    }

    /// The tags the registry lists for `repo` (empty when the repository does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let url = format!("http://{}/v2/{repo}/tags/list", self.host);
        let auth = format!("Basic {}", base64_encode(&format!("AWS:{}", self.password())));
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .expect("the registry answers");
        if response.status().as_u16() == 404 {
            return Vec::new();
        }
        let body: serde_json::Value = response.body_mut().read_json().expect("tags/list JSON");
        let mut tags: Vec<String> = body["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        tags.sort();
        tags
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

static IMAGES: AtomicUsize = AtomicUsize::new(0);

/// A local image made from random bytes with `docker import`; removed (with every tag the test gave it)
/// when dropped.
pub struct Image {
    pub name: String,
    pub id: String,
}

impl Image {
    /// An image of one layer holding `bytes` random bytes.
    pub fn random(bytes: usize) -> Image {
        let n = IMAGES.fetch_add(1, Ordering::SeqCst);
        let name = format!("ecr-step-test-{}-{n}:src", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        // Streamed: images of a gigabyte are never held in memory.
        let mut payload = std::fs::File::create(dir.path().join("payload.bin")).unwrap();
        let mut random = std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), bytes as u64);
        std::io::copy(&mut random, &mut payload).unwrap();
        std::fs::write(dir.path().join("name.txt"), &name).unwrap();
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = Command::new("docker")
            .args(["import", "-", &name])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the docker CLI");
        let out = import.wait_with_output().unwrap();
        assert!(tar.wait().unwrap().success());
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Image { name, id }
    }
}

impl Image {
    /// A base image made from files of this host, with the shared libraries `ldd` lists for them and for
    /// `libraries_of`, for building the step's Dockerfile where no base image can be pulled.
    pub fn from_host_files(files: &[&str], libraries_of: &[&str]) -> Image {
        let n = IMAGES.fetch_add(1, Ordering::SeqCst);
        let name = format!("ecr-step-test-base-{}-{n}:local", std::process::id());
        let root = tempfile::tempdir().unwrap();
        let mut all: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        for file in files.iter().chain(libraries_of) {
            let ldd = Command::new("ldd").arg(file).output().unwrap();
            for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
                if path.starts_with('/') {
                    all.push(path.to_string());
                }
            }
        }
        for file in &all {
            let target = root.path().join(file.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copying {file}: {e}"));
        }
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .output()
            .unwrap();
        let mut import = Command::new("docker")
            .args(["import", "-", &name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        let out = import.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Image {
            name,
            id: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.id]).output();
    }
}

/// Run the docker CLI; panics with its output when it fails. Returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "docker {args:?}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The step's container image, built through the repository's Dockerfile from base images assembled from
/// this host (no pulls), with `binary` put in the context as `prebuilt/ecr-step` (stripped when asked).
pub fn build_step_image(binary: &Path, strip: bool) -> Image {
    let root = repo_root();
    let context = tempfile::tempdir().unwrap();
    for file in ["Dockerfile", ".dockerignore", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), context.path().join(file)).unwrap();
    }
    copy_tree(&root.join("src"), &context.path().join("src"));
    std::fs::create_dir_all(context.path().join("prebuilt")).unwrap();
    let prebuilt = context.path().join("prebuilt/ecr-step");
    std::fs::copy(binary, &prebuilt).unwrap();
    if strip {
        assert!(Command::new("strip").arg(&prebuilt).status().unwrap().success());
    }
    let builder = Image::from_host_files(&["/bin/sh", "/bin/cp"], &[]);
    let runtime = Image::from_host_files(&["/etc/ssl/certs/ca-certificates.crt"], &[binary.to_str().unwrap()]);
    let n = IMAGES.fetch_add(1, Ordering::SeqCst);
    let tag = format!("ecr-step-test-image-{}-{n}:latest", std::process::id());
    docker(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BUILDER_IMAGE={}", builder.name),
        "--build-arg",
        &format!("RUNTIME_IMAGE={}", runtime.name),
        "-t",
        &tag,
        context.path().to_str().unwrap(),
    ]);
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", &tag]).trim().to_string();
    Image { name: tag, id }
}

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
    /// A clean environment: PATH, the engine's address, IMDS off (loopback only), nothing else.
    pub fn new() -> Step {
        let mut env = BTreeMap::new();
        for key in ["PATH", "HOME", "DOCKER_HOST"] {
            if let Ok(value) = std::env::var(key) {
                env.insert(key.to_string(), value);
            }
        }
        env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
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
    pub fn promote(moto: &Moto, target: &str, source: &str, repo: &str, tags: &str) -> Step {
        Step::aws(moto)
            .env("PLUGIN_MODE", "promote")
            .env("PLUGIN_SOURCE", source)
            .env("PLUGIN_REPO", repo)
            .env("PLUGIN_TAGS", tags)
            .env("PLUGIN_REGISTRY", target)
            .env("PLUGIN_REGION", REGION)
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
            .filter(|(k, _)| *k != "PATH" && *k != "HOME")
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
        let started = Instant::now();
        let out = Command::new(Step::binary())
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .output()
            .expect("running ecr-step");
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
