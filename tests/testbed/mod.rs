//! The testbed: real programs the step is tested against, started on free loopback ports and stopped by
//! process id when dropped. Shared by every end-to-end test and by the demo (`examples/demo.rs`).
//!
//! - [`Moto`]: moto server, the ECR and STS APIs.
//! - [`Registry`]: a CNCF distribution registry whose htpasswd accepts one account's ECR token.
//! - [`Image`]: a local image in the machine's Docker Engine, made from random files (no pulls).
//! - [`Step`]: the built `ecr-step` binary, run as a user would (environment in, exit code and output out).
//! - [`Link`]: a forwarder to a registry whose uploads share one rate (a network path, for benchmarks).
//! - [`Tripwire`]: an endpoint that records whether the step connected ("no network call" as an assertion).
//!
//! Nothing here talks to anything but 127.0.0.1: IMDS is disabled in every step run.
#![allow(dead_code)]

mod image;
mod link;
mod moto;
pub mod proxy;
mod registry;
mod step;
pub mod tls;
pub mod token_registry;
mod tripwire;
pub mod untrusted;

// Each test file uses some of these.
#[allow(unused_imports)]
pub use image::{Image, build_step_image, build_step_image_stage, chain_id, diff_ids, docker, docker_with, in_engine};
#[allow(unused_imports)]
pub use link::Link;
#[allow(unused_imports)]
pub use moto::Moto;
#[allow(unused_imports)]
pub use registry::{Registry, store_under};
#[allow(unused_imports)]
pub use step::{READ_ROLE, Run, Step};
#[allow(unused_imports)]
pub use tripwire::Tripwire;

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The account moto gives static keys.
pub const DEFAULT_ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// Credentials for moto; any key works there. Tests scan output for the secret.
pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Ports this process handed out or listens on: [`free_port`] never gives one twice, and [`listen`] never
/// takes one given to a server still starting.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free port on 127.0.0.1: the kernel's choice, released just before the server binds it, and never
/// handed out twice by this process. (Without that, two tests starting servers at once could both be given
/// the port the kernel just released: the slow starter fails to bind, and its readiness check is answered by
/// the other test's server. CI saw it: a moto "ready" on a registry's port.)
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A listener on a port of loopback address `ip` the kernel chose, never one [`free_port`] gave a server
/// that has not bound it yet (a test's proxy would otherwise answer in that server's place).
pub fn listen(ip: &str) -> TcpListener {
    let mut passed = Vec::new();
    loop {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        if GIVEN.lock().unwrap().insert(listener.local_addr().unwrap().port()) {
            return listener;
        }
        // Held until one is found, so the kernel does not choose it again.
        passed.push(listener);
    }
}

/// A loopback port nothing answers on, for as long as this is held: bound by a socket that never
/// listens, so a connection is refused at once and no other server (a test starting beside this one) can
/// be given the port. (A port from [`free_port`] is released at once: CI saw a "dead" registry's port
/// taken by another test's proxy while the step retried, and the step's sign-in answered.)
pub struct ClosedPort {
    socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        ClosedPort { socket, port }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port opened: the same socket listens from now on (so no other server took it meanwhile).
    pub fn listen(self) -> TcpListener {
        self.socket.listen(128).unwrap();
        self.socket.into()
    }
}

/// Wait until `server` accepts connections on `port`; fail with its log if it exits first.
pub(crate) fn wait_for_port(server: &mut Server, port: u16, what: &str, log: &Path) {
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

pub(crate) fn find_program(env_var: &str, candidates: &[PathBuf], install_hint: &str) -> PathBuf {
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
pub(crate) struct Server {
    pub(crate) child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The CPU time (user + system) the server has used so far.
    pub(crate) fn cpu(&self) -> Duration {
        cpu_of(self.child.id())
    }
}

/// The CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat` (zero when gone).
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime are the
    // 12th and 13th of them, in clock ticks.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    let ticks = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The CPU time the Docker Engine's processes (dockerd, containerd, fuse-overlayfs) have used so far.
pub fn engine_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            matches!(comm.trim(), "dockerd" | "containerd" | "fuse-overlayfs")
        })
        .map(cpu_of)
        .sum()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn(program: &Path, args: &[&str], envs: &[(&str, &str)], dir: tempfile::TempDir) -> (Server, PathBuf) {
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

/// Assert the step left nothing in `tmpdir` (the `TMPDIR` it ran with): no scratch directory stayed.
/// A rebuild of a three-layer image with one new layer on top, pushed into `app` as `build-2` after the
/// first build went as `build-1`: the run said it sent only the new layer (and the config), and the image
/// pulls back with its id and diff ids, the three held layers under the first build's digests.
pub fn assert_only_the_new_layer_went(run: &Run, registry: &Registry, rebuilt: &Image) {
    run.success();
    run.says("3 of the 4 layer(s) are sent as that registry holds them")
        .says("1 layer(s) compressed here")
        .says(&format!(
            "to {}/app: 2 uploaded, 0 mounted, 3 already there",
            registry.host
        ));
    let (id, layers) = registry.pull(&format!("{}/app:build-2", registry.host));
    assert_eq!(id, rebuilt.id, "the image id changed");
    assert_eq!(layers, diff_ids(&rebuilt.name));
    let shared = registry.layer_digests("app", "build-1");
    assert_eq!(
        registry.layer_digests("app", "build-2")[..3],
        shared[..],
        "the known layers were not reused"
    );
}

pub fn assert_no_scratch_in(tmpdir: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(tmpdir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "scratch directories stayed: {left:?}");
}
