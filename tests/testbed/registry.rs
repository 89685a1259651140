//! [`Registry`]: a CNCF distribution registry on a free loopback port, and reading back what it holds.

use super::{Server, find_program, free_port, spawn, wait_for_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A distribution registry on loopback, plain HTTP, htpasswd user `AWS` with the password moto's ECR token
/// carries for `account`: it accepts a push only with a token issued for that account.
pub struct Registry {
    server: Server,
    pub host: String,
    pub account: String,
    agent: ureq::Agent,
}

/// Where [`Registry::start`] keeps a registry's files, when not in the system's temporary directory
/// ([`store_under`]).
static STORAGE_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Every registry this process starts with [`Registry::start`] from now on keeps its files under `root`
/// (the benchmark: a tmpfs, since ECR's storage is not on the runner's disk).
pub fn store_under(root: &Path) {
    STORAGE_ROOT
        .set(root.to_path_buf())
        .expect("the storage root is set once");
}

impl Registry {
    /// A registry that stores in files (the filesystem driver), in the system's temporary directory or
    /// where [`store_under`] said.
    pub fn start(account: &str) -> Registry {
        let root = STORAGE_ROOT.get().cloned().unwrap_or_else(std::env::temp_dir);
        Registry::start_with(account, Some(&root))
    }

    /// A registry that stores in files under `root`.
    pub fn start_under(account: &str, root: &Path) -> Registry {
        Registry::start_with(account, Some(root))
    }

    /// A registry that stores in memory, each object written atomically, as ECR writes it: for tests where
    /// several runs write the same blobs at once. The filesystem driver rewrites a file in place (truncate,
    /// then write), so a manifest PUT that reads a layer's link while another run's upload of the same
    /// layer rewrites it reads an empty digest and answers 400 DIGEST_INVALID (3 of 8 runs of the
    /// twenty-concurrent-runs test on disk), and a GET during a concurrent write of the same manifest
    /// answers 500: faults of the stand-in that ECR does not have. Only for small images: the in-memory
    /// driver copies a blob on every write (seen here: 20 MB took 0.8 s, 50 MB 5.6 s, 200 MB 144 s).
    pub fn atomic(account: &str) -> Registry {
        Registry::start_with(account, None)
    }

    /// Files under `root`, or in memory when `None`.
    fn start_with(account: &str, root: Option<&Path>) -> Registry {
        let dir = tempfile::tempdir_in(root.map_or_else(std::env::temp_dir, Path::to_path_buf)).unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", "AWS", &format!("{account}-auth-token")])
            .output()
            .expect("htpasswd (Debian package apache2-utils): run scripts/install-testbed");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
        let port = free_port();
        let storage = if root.is_some() {
            format!("filesystem: {{rootdirectory: {}}}", dir.path().join("data").display())
        } else {
            "inmemory: {}".to_string()
        };
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{{storage}, delete: {{enabled: true}}}}\n\
             http: {{addr: 127.0.0.1:{port}}}\nauth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}\n",
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let (server, agent) = serve(&config, port, dir, "docker-registry");
        Registry {
            server,
            host: format!("127.0.0.1:{port}"),
            account: account.to_string(),
            agent,
        }
    }

    /// The CPU time the registry has used so far (hashing and storing what it is sent).
    pub fn cpu(&self) -> Duration {
        self.server.cpu()
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

    /// The layer digests of the image manifest `repo:reference`, bottom first.
    pub fn layer_digests(&self, repo: &str, reference: &str) -> Vec<String> {
        let (bytes, _, _) = self.manifest(repo, reference).expect("the manifest is there");
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }

    /// GET `path` (under `/v2/`) with this registry's account.
    fn get(&self, path: &str) -> ureq::http::Response<ureq::Body> {
        let url = format!("http://{}/v2/{path}", self.host);
        self.agent
            .get(&url)
            .header("Authorization", &self.auth())
            .call()
            .expect("the registry answers")
    }

    /// The blob `digest` of `repo`, as stored.
    pub fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let mut response = self.get(&format!("{repo}/blobs/{digest}"));
        assert_eq!(response.status().as_u16(), 200, "GET {repo}/blobs/{digest}");
        response.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap()
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

    /// Upload a blob (one POST, one PUT); its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        use sha2::Digest as _;
        let digest = format!(
            "sha256:{}",
            sha2::Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        upload_blob(&self.agent, &self.host, repo, &self.auth(), &digest, bytes);
        digest
    }

    /// A docker config directory holding this registry's login, for the docker CLI (`docker --config`).
    pub fn docker_config(&self) -> tempfile::TempDir {
        let config = tempfile::tempdir().unwrap();
        let auths = serde_json::json!({"auths": {self.host.clone(): {"auth": base64_encode(&format!("AWS:{}", self.password()))}}});
        std::fs::write(config.path().join("config.json"), auths.to_string()).unwrap();
        config
    }

    /// Run the docker CLI logged in to this registry; panics with its output when it fails. Returns stdout,
    /// trimmed.
    pub fn docker(&self, args: &[&str]) -> String {
        let config = self.docker_config();
        super::docker_with(Some(config.path()), args).trim().to_string()
    }

    /// Pull `reference` with the docker CLI: its image id and layer diff ids; the pulled image is removed.
    pub fn pull(&self, reference: &str) -> (String, String) {
        self.docker(&["pull", "-q", reference]);
        let id = self.docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
        let layers = super::diff_ids(reference);
        self.docker(&["rmi", "-f", reference]);
        (id, layers)
    }

    /// Pull `reference` with containerd's `ctr` (the engine's own containerd, in a namespace of this
    /// process), unpacked as a runtime unpacks it: containerd checks every layer against the diff id the
    /// config names, zstd layers and OCI indexes included (which the docker CLI of Docker 20.10 cannot
    /// read). The image's chain id; the image, its content and its namespace are removed after.
    pub fn pull_with_containerd(&self, reference: &str) -> String {
        let namespace = format!("ecr-step-test-{}", std::process::id());
        let ctr = |args: &[&str]| {
            let out = Command::new("ctr")
                .args(["--address", "/var/run/docker/containerd/containerd.sock"])
                .args(args)
                .output()
                .expect("ctr (Debian package containerd)");
            assert!(
                out.status.success(),
                "ctr {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let user = format!("AWS:{}", self.password());
        let pulled = ctr(&[
            "-n",
            &namespace,
            "images",
            "pull",
            "--plain-http",
            "--print-chainid",
            "--user",
            &user,
            reference,
        ]);
        let listed = ctr(&["-n", &namespace, "images", "ls", "-q"]);
        assert!(listed.lines().any(|l| l == reference), "{listed}");
        ctr(&["-n", &namespace, "images", "rm", "--sync", reference]);
        // Other tests of this process may still use the namespace: it goes when it is empty.
        let _ = Command::new("ctr")
            .args([
                "--address",
                "/var/run/docker/containerd/containerd.sock",
                "namespaces",
                "rm",
                &namespace,
            ])
            .output();
        pulled
            .lines()
            .find_map(|l| l.strip_prefix("image chain ID: "))
            .unwrap_or_else(|| panic!("no chain id from ctr:\n{pulled}"))
            .trim()
            .to_string()
    }

    /// Delete the blob `digest` from `repo` (the registry has deletes enabled): a layer gone since a push.
    pub fn delete_blob(&self, repo: &str, digest: &str) {
        let url = format!("http://{}/v2/{repo}/blobs/{digest}", self.host);
        let response = self
            .agent
            .delete(&url)
            .header("Authorization", &self.auth())
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "DELETE {url}");
    }

    /// The repositories the registry holds anything in (`/v2/_catalog`): a repository appears with the
    /// first blob or manifest written to it, so an empty list means nothing was written.
    pub fn repositories(&self) -> Vec<String> {
        let mut response = self.get("_catalog");
        let body: serde_json::Value = response.body_mut().read_json().expect("catalog JSON");
        body["repositories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(String::from))
            .collect()
    }

    /// The tags the registry lists for `repo` (empty when the repository does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let mut response = self.get(&format!("{repo}/tags/list"));
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

/// The distribution registry (`docker-registry serve`) with `config` (its YAML, listening on `port`),
/// written into `dir`, which it keeps; returned once it listens, with an HTTP client for the tests' own
/// requests (statuses as answers, not errors). `what` names it in a failure to start.
pub(crate) fn serve(config: &str, port: u16, dir: tempfile::TempDir, what: &str) -> (Server, ureq::Agent) {
    let program = find_program(
        "DOCKER_REGISTRY",
        &[PathBuf::from("/usr/bin/docker-registry")],
        "run scripts/install-testbed (Debian package docker-registry)",
    );
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let config_arg = config_path.display().to_string();
    let (mut server, log) = spawn(&program, &["serve", &config_arg], &[], dir);
    wait_for_port(&mut server, port, what, &log);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    (server, agent)
}

/// Upload `bytes` as blob `digest` into `repo` of the registry at `host` (one POST, one PUT) with the
/// `Authorization` header `auth`; panics unless the registry takes it.
pub(crate) fn upload_blob(agent: &ureq::Agent, host: &str, repo: &str, auth: &str, digest: &str, bytes: &[u8]) {
    let start = format!("http://{host}/v2/{repo}/blobs/uploads/");
    let response = agent
        .post(&start)
        .header("Authorization", auth)
        .header("Content-Length", "0")
        .send_empty()
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "POST {start}");
    let location = response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let location = match location.starts_with("http") {
        true => location,
        false => format!("http://{host}{location}"),
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let done = format!("{location}{separator}digest={digest}");
    let response = agent
        .put(&done)
        .header("Authorization", auth)
        .header("Content-Type", "application/octet-stream")
        .send(bytes)
        .unwrap();
    assert_eq!(response.status().as_u16(), 201, "PUT {done}");
}
