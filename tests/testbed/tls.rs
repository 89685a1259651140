//! TLS as users on real networks meet it: a CA made for the test ([`Ca`]), server certificates it issues
//! for host names, those names mapped to loopback in `/etc/hosts` ([`HostName`], undone when dropped), so
//! the step takes its HTTPS path as it does for `<account>.dkr.ecr.<region>.amazonaws.com`; and a registry
//! and moto served over TLS under such names.

use super::{Server, find_program, free_port, repo_root, spawn, wait_for_port};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A certificate authority of the test's own.
pub struct Ca {
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what a user gives the step as their company's CA.
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    pub fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=ecr-step test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir.path(),
        );
        Ca {
            cert: dir.path().join("ca.pem"),
            key: dir.path().join("ca.key"),
            dir,
        }
    }

    /// A server certificate and key for `name`, signed by this CA.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            d.join(&ext),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
            d,
        );
        let ca = self.cert.display().to_string();
        let ca_key = self.key.display().to_string();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
            d,
        );
        (d.join(cert), d.join(key))
    }
}

/// A host name that resolves to 127.0.0.1 while this lives (a line of `/etc/hosts`, as root). While any
/// name of this test process lives, lines are only appended: a step, curl or tinyproxy resolving another
/// test's name never reads the file half rewritten (rewritten in place, it is empty for a moment: a
/// concurrent test's read-back once failed to resolve its registry so). The file is rewritten only when
/// none lives: the process's lines go when its last name is dropped, and the lines of a test process that
/// ended without that go when the next one maps its first name.
pub struct HostName {
    pub name: String,
    /// When its line was written.
    mapped: std::time::Instant,
}

/// Names of this process alive, changed only under the lock of [`edit_hosts`].
static LIVE_NAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The comment that marks the lines of this test process.
fn hosts_mark() -> String {
    format!("# ecr-step test {}", std::process::id())
}

/// Whether `line` of `/etc/hosts` is a test process's that has ended (or of a test run that marked no
/// process).
fn stale_hosts_line(line: &str) -> bool {
    let Some((_, mark)) = line.split_once("# ecr-step test") else {
        return false;
    };
    match mark.trim().parse::<i32>() {
        Ok(pid) => {
            // SAFETY: signal 0 only asks whether the process exists.
            let refused = unsafe { libc::kill(pid, 0) } != 0;
            refused && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        }
        Err(_) => true,
    }
}

/// What to do to `/etc/hosts`.
enum HostsChange {
    Keep,
    /// A line appended in one write: a reader sees the file without it or with it whole.
    Append(String),
    /// The whole file written again, in place (/etc/hosts may be a mount, which a rename would not
    /// replace): empty for a moment to every reader.
    Replace(String),
}

/// Change `/etc/hosts`, one test (of any process) at a time: `edit` gets its text and the names of this
/// process alive (which it updates), and says what to do.
fn edit_hosts(edit: impl FnOnce(&str, &mut usize) -> HostsChange) {
    let lock = std::fs::File::create(std::env::temp_dir().join("ecr-step-tests-etc-hosts.lock")).unwrap();
    // SAFETY: a valid descriptor; released when the file is closed.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut live = LIVE_NAMES.load(std::sync::atomic::Ordering::SeqCst);
    let change = edit(&text, &mut live);
    LIVE_NAMES.store(live, std::sync::atomic::Ordering::SeqCst);
    let open = |append: bool| {
        std::fs::OpenOptions::new()
            .write(true)
            .append(append)
            .truncate(!append)
            .open("/etc/hosts")
            .expect("/etc/hosts writable (the TLS tests map their host names there; CI runs as root)")
    };
    match change {
        HostsChange::Replace(whole) if whole != text => open(false).write_all(whole.as_bytes()).unwrap(),
        HostsChange::Replace(_) | HostsChange::Keep => {}
        HostsChange::Append(line) => {
            let newline = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            open(true).write_all(format!("{newline}{line}").as_bytes()).unwrap();
        }
    }
}

/// `text` without the lines `drop` picks.
fn hosts_without(text: &str, drop: impl Fn(&str) -> bool) -> String {
    text.lines().filter(|l| !drop(l)).map(|l| format!("{l}\n")).collect()
}

impl HostName {
    /// `<what>-<random>.ecr-step.test` (a reserved top-level domain: it can never be a real host).
    pub fn map(what: &str) -> HostName {
        HostName::map_to(what, "127.0.0.1")
    }

    /// The same, resolving to `address` on this host (the engine's view), where a test's step may see
    /// another ([`super::Step::run_with_own_hosts`]).
    pub fn map_to(what: &str, address: &str) -> HostName {
        let name = format!("{what}-{}.ecr-step.test", super::free_port());
        let line = format!("{address} {name} {}\n", hosts_mark());
        edit_hosts(|text, live| {
            *live += 1;
            match *live == 1 && text.lines().any(stale_hosts_line) {
                true => HostsChange::Replace(format!("{}{line}", hosts_without(text, stale_hosts_line))),
                false => HostsChange::Append(line),
            }
        });
        HostName {
            name,
            mapped: std::time::Instant::now(),
        }
    }

    /// Wait until the Docker Engine resolves this name by its line: dockerd's resolver (Go's) keeps
    /// `/etc/hosts` for 5 s after reading it, so a name mapped within 5 s of its last lookup of any name is
    /// unknown to it until then (and asked of the machine's DNS server, off loopback).
    pub fn wait_for_the_engine(&self) {
        let known = self.mapped + std::time::Duration::from_millis(5_500);
        std::thread::sleep(known.saturating_duration_since(std::time::Instant::now()));
    }
}

impl Drop for HostName {
    fn drop(&mut self) {
        edit_hosts(|text, live| {
            *live -= 1;
            match *live {
                0 => HostsChange::Replace(hosts_without(text, |l| l.ends_with(&hosts_mark()))),
                _ => HostsChange::Keep,
            }
        });
    }
}

/// A distribution registry over TLS under a mapped host name (htpasswd as [`super::Registry`]: the
/// account's ECR token is its password).
pub struct TlsRegistry {
    _server: Server,
    name: HostName,
    /// `<name>:<port>`: the step takes its HTTPS path for it.
    pub host: String,
    /// `127.0.0.1:<port>`, where it listens.
    pub address: String,
    account: String,
    ca: PathBuf,
}

impl TlsRegistry {
    pub fn start(account: &str, ca: &Ca) -> TlsRegistry {
        TlsRegistry::start_seen_at(account, ca, "127.0.0.1")
    }

    /// One whose name this host (and so the engine) resolves to `address`: 127.0.0.2, where nothing
    /// listens, is a registry the engine has no route to, as from a runner's engine whose network is not
    /// its step container's. A step run with its own hosts (mapping the name to 127.0.0.1) reaches it.
    pub fn start_seen_at(account: &str, ca: &Ca, address: &str) -> TlsRegistry {
        let name = HostName::map_to("registry", address);
        let (cert, key) = ca.issue(&name.name);
        let program = find_program(
            "DOCKER_REGISTRY",
            &[PathBuf::from("/usr/bin/docker-registry")],
            "run scripts/install-testbed",
        );
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", "AWS", &format!("{account}-auth-token")])
            .output()
            .expect("htpasswd");
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {data}}}}}\n\
             http: {{addr: 127.0.0.1:{port}, tls: {{certificate: {cert}, key: {key}}}}}\n\
             auth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}\n",
            data = dir.path().join("data").display(),
            cert = cert.display(),
            key = key.display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let config_arg = dir.path().join("config.yml").display().to_string();
        let (mut server, log) = spawn(&program, &["serve", &config_arg], &[], dir);
        wait_for_port(&mut server, port, "docker-registry (TLS)", &log);
        TlsRegistry {
            host: format!("{}:{port}", name.name),
            address: format!("127.0.0.1:{port}"),
            _server: server,
            name,
            account: account.to_string(),
            ca: ca.cert.clone(),
        }
    }

    /// Wait until the Docker Engine resolves its name ([`HostName::wait_for_the_engine`]): before a push
    /// through the engine.
    pub fn wait_for_the_engine(&self) {
        self.name.wait_for_the_engine();
    }

    /// The digest the registry holds for `repo:tag`, read over TLS with the test's CA (curl), `None` when
    /// absent.
    pub fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let out = self.manifest(repo, tag, "-I");
        // A tag that is not there is an answer (404); no answer at all is the testbed's failure.
        assert!(
            out.status.success(),
            "curl could not ask {} for {repo}:{tag}: {}",
            self.host,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/2 200") {
            return None;
        }
        text.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("docker-content-digest"))
            })
            .map(|(_, v)| v.trim().to_string())
    }

    /// The image (config) digest of the manifest at `repo:tag`, read as [`TlsRegistry::digest`] reads.
    pub fn image_id(&self, repo: &str, tag: &str) -> Option<String> {
        let out = self.manifest(repo, tag, "-f");
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        manifest["config"]["digest"].as_str().map(str::to_string)
    }

    /// curl's request for the manifest at `repo:tag` (`how`: `-I` for its head, `-f` for its body), over TLS
    /// with the test's CA, at the address it listens on whatever this host resolves its name to.
    fn manifest(&self, repo: &str, tag: &str, how: &str) -> std::process::Output {
        let (name, port) = self.host.rsplit_once(':').unwrap();
        Command::new("curl")
            .args(["-sS", how, "--resolve", &format!("{name}:{port}:127.0.0.1"), "--cacert"])
            .arg(&self.ca)
            .args(["-u", &format!("AWS:{}-auth-token", self.account)])
            .args(["-H", "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"])
            .arg(format!("https://{}/v2/{repo}/manifests/{tag}", self.host))
            .output()
            .expect("curl")
    }
}

/// moto over TLS under a mapped host name.
pub struct TlsMoto {
    _server: Server,
    _name: HostName,
    pub url: String,
}

impl TlsMoto {
    pub fn start(ca: &Ca) -> TlsMoto {
        let name = HostName::map("moto");
        let (cert, key) = ca.issue(&name.name);
        let program = find_program(
            "MOTO_SERVER",
            &[repo_root().join(".testbed/venv/bin/moto_server")],
            "run scripts/install-testbed",
        );
        let port = free_port();
        let (port_text, cert, key) = (port.to_string(), cert.display().to_string(), key.display().to_string());
        let (mut server, log) = spawn(
            &program,
            &["-H", "127.0.0.1", "-p", &port_text, "-c", &cert, "-k", &key],
            &[],
            tempfile::tempdir().unwrap(),
        );
        wait_for_port(&mut server, port, "moto server (TLS)", &log);
        TlsMoto {
            url: format!("https://{}:{port}", name.name),
            _server: server,
            _name: name,
        }
    }
}

/// A real forward proxy (Debian's tinyproxy) on loopback, whose log lists every CONNECT target: where the
/// step's requests went.
pub struct Tinyproxy {
    _server: Server,
    /// `http://127.0.0.1:<port>`, for `HTTPS_PROXY`.
    pub url: String,
    log: PathBuf,
}

impl Tinyproxy {
    pub fn start() -> Tinyproxy {
        let program = find_program(
            "TINYPROXY",
            &[PathBuf::from("/usr/bin/tinyproxy")],
            "run scripts/install-testbed (Debian package tinyproxy-bin)",
        );
        // tinyproxy drops to user nobody: its files sit in a directory anyone may enter.
        let dir = tempfile::Builder::new()
            .prefix("ecr-step-tinyproxy-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let port = free_port();
        let log = dir.path().join("proxy.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nLogLevel Connect\nLogFile \"{}\"\nMaxClients 64\nTimeout 120\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let config_arg = config.display().to_string();
        let (mut server, server_log) = spawn(&program, &["-d", "-c", &config_arg], &[], dir);
        wait_for_port(&mut server, port, "tinyproxy", &server_log);
        Tinyproxy {
            _server: server,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
