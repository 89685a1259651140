//! [`TokenRegistry`]: a CNCF distribution registry that authenticates as Docker Hub, GHCR and Quay do, with
//! the token flow (`auth: token`), and the small token server it trusts: JWTs signed RS256 by a key made
//! for the test (its certificate in the JWT's `x5c` header and in the registry's `rootcertbundle`), signed
//! with `openssl`. Public repositories (`public/…`) are pulled by anyone; the rest need the user's
//! credentials. The token server is a [`Rogue`], so a test sees every token request and whether it carried
//! credentials.

use super::untrusted::{Answer, Request, Rogue, Store};
use super::{Server, free_port};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

pub const USER: &str = "mirror-robot";
/// The user's password; tests check it never reaches the output.
pub const PASSWORD: &str = "s3cret-mirror-pass";
const SERVICE: &str = "test-registry";
const ISSUER: &str = "test-token-issuer";

/// Signs tokens: the key and its certificate, made with openssl.
struct Signer {
    key: PathBuf,
    x5c: String,
}

impl Signer {
    fn new(dir: &Path) -> (Signer, PathBuf) {
        let (key, cert) = (dir.join("token.key"), dir.join("token.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=test token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(made.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(der.status.success());
        (
            Signer {
                key,
                x5c: STANDARD.encode(der.stdout),
            },
            cert,
        )
    }

    /// A token for `actions` on repository `name` (none: a token that grants nothing, as Docker Hub gives
    /// an anonymous user for a private repository).
    fn token(&self, name: &str, actions: &[&str]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]});
        let claims = json!({
            "iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600, "nbf": now - 60, "iat": now - 60,
            "jti": format!("{now}-{}", rand_u64()),
            "access": if actions.is_empty() { json!([]) } else { json!([{"type": "repository", "name": name, "actions": actions}]) },
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst failed");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// A token-auth registry on 127.0.0.1 and its token server (on `realm_ip`, 127.0.0.1 or another loopback
/// address: a realm on another host).
pub struct TokenRegistry {
    _server: Server,
    pub host: String,
    pub tokens: Rogue,
    signer: Arc<Signer>,
    agent: ureq::Agent,
}

impl TokenRegistry {
    pub fn start(realm_ip: &str) -> TokenRegistry {
        let dir = tempfile::tempdir().unwrap();
        let (signer, cert) = Signer::new(dir.path());
        let signer = Arc::new(signer);
        let issuing = signer.clone();
        let tokens = Rogue::start_on(realm_ip, move |r: &Request| token_answer(&issuing, r));
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {data}}}}}\n\
             http: {{addr: 127.0.0.1:{port}}}\nauth: {{token: {{realm: http://{realm}/token, service: {SERVICE}, \
             issuer: {ISSUER}, rootcertbundle: {cert}}}}}\n",
            data = dir.path().join("data").display(),
            realm = tokens.host,
            cert = cert.display(),
        );
        let (server, agent) = super::registry::serve(&config, port, dir, "docker-registry (token auth)");
        TokenRegistry {
            _server: server,
            host: format!("127.0.0.1:{port}"),
            tokens,
            signer,
            agent,
        }
    }

    /// Store `store`'s blobs and manifests in `repo` (with a token that may push there).
    pub fn seed(&self, repo: &str, store: &Store) {
        let auth = format!("Bearer {}", self.signer.token(repo, &["pull", "push"]));
        for (digest, bytes) in &store.blobs {
            super::registry::upload_blob(&self.agent, &self.host, repo, &auth, digest, bytes);
        }
        for (reference, (media_type, bytes)) in &store.manifests {
            let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.host);
            let response = self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", media_type)
                .send(bytes)
                .unwrap();
            assert_eq!(response.status().as_u16(), 201, "PUT {url}");
        }
    }

    /// A docker config directory holding `auths` entries with the user's credentials for `hosts`.
    pub fn docker_config(hosts: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let auth = STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let auths: serde_json::Map<String, serde_json::Value> =
            hosts.iter().map(|h| (h.to_string(), json!({"auth": auth}))).collect();
        std::fs::write(dir.path().join("config.json"), json!({"auths": auths}).to_string()).unwrap();
        dir
    }
}

/// The token server's answer: a token for the scope asked, with pull (and push) for the user's
/// credentials, pull for anyone on `public/…`, nothing otherwise; 401 for wrong credentials.
fn token_answer(signer: &Signer, request: &Request) -> Answer {
    let Some(query) = request.path.strip_prefix("/token?") else {
        return Answer::status(404);
    };
    let scope = query
        .split('&')
        .find_map(|p| p.strip_prefix("scope="))
        .map(|s| s.replace("%3A", ":").replace("%2F", "/"))
        .unwrap_or_default();
    let name = scope
        .strip_prefix("repository:")
        .and_then(|s| s.rsplit_once(':'))
        .map(|(n, _)| n.to_string())
        .unwrap_or_default();
    let user = request.authorization.map(|a| {
        let decoded = a
            .strip_prefix("Basic ")
            .and_then(|b| STANDARD.decode(b).ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&decoded) == format!("{USER}:{PASSWORD}")
    });
    let actions: &[&str] = match (user, name.starts_with("public/")) {
        (Some(false), _) => return Answer::status(401),
        (Some(true), _) => &["pull", "push"],
        (None, true) => &["pull"],
        (None, false) => &[],
    };
    let token = signer.token(&name, actions);
    Answer::ok(
        "application/json",
        json!({"token": token, "expires_in": 600}).to_string().into_bytes(),
    )
}
