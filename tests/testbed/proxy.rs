//! A fault-injecting HTTP proxy on loopback, in front of a registry or moto. Each connection carries one
//! request (`Connection: close` is forced upstream); a request that matches a rule with faults left gets
//! the fault instead of the upstream's answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status (and an empty body) without forwarding.
    Status(u16),
    /// Forward the request head and part of the body, then drop both connections.
    Reset,
    /// Accept the request and never answer.
    Stall,
    /// Read the body and answer 201 with its digest, as a registry that stored it would, storing nothing:
    /// a registry that lies about a write.
    Swallow,
    /// Forward, passing the request body on at this many bytes a second: a slow network.
    Slow(usize),
    /// Forward a cross-repository mount as a plain upload start, as ECR does when it does not mount (the
    /// answer is 202 and a new upload session).
    RefuseMount,
    /// Forward, and answer `201 Created` where the registry said `202 Accepted` (ECR starts uploads so).
    Created,
    /// To a request whose `User-Agent` holds `agent`, answer `status` after `after`, without forwarding
    /// (other clients' requests pass and do not use the rule up): a registry that answers one client late
    /// and refuses it.
    LateTo {
        agent: &'static str,
        after: Duration,
        status: u16,
    },
}

impl Fault {
    /// Whether the fault is for the request whose head is `head`.
    fn meets(&self, head: &str) -> bool {
        match self {
            Fault::LateTo { agent, .. } => head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .any(|(name, value)| name.eq_ignore_ascii_case("user-agent") && value.contains(agent)),
            _ => true,
        }
    }
}

/// Inject `fault` into the next `times` requests whose method is `method` and whose path contains `path`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub fault: Fault,
    pub times: usize,
}

pub struct FaultProxy {
    /// `127.0.0.1:<port>`.
    pub host: String,
    injected: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        FaultProxy::start_on(super::listen("127.0.0.1"), upstream, rules)
    }

    /// On `listener` (a port the test held closed until now: [`super::ClosedPort::listen`]).
    pub fn start_on(listener: TcpListener, upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let rules = Arc::new(Mutex::new(rules));
        let injected = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_string();
        let (i, s) = (injected.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (rules, i, s, upstream) = (rules.clone(), i.clone(), s.clone(), upstream.clone());
                        std::thread::spawn(move || serve(client, &upstream, &rules, &i, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            host,
            injected,
            stop,
            thread: Some(thread),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut client: TcpStream, upstream: &str, rules: &Mutex<Vec<Rule>>, injected: &AtomicUsize, stop: &AtomicBool) {
    client.set_nonblocking(false).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let Some((head, rest)) = read_head(&mut client) else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(r.path) && r.fault.meets(&text))
            .map(|r| {
                r.times -= 1;
                r.fault
            })
    };
    if fault.is_some() {
        injected.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(Fault::Status(code)) => answer(&mut client, &text, rest.len(), code),
        Some(Fault::LateTo { after, status, .. }) => {
            std::thread::sleep(after);
            answer(&mut client, &text, rest.len(), status);
        }
        Some(Fault::Swallow) => {
            let body = read_body(&mut client, &text, rest);
            let digest = {
                use sha2::Digest as _;
                let hash = sha2::Sha256::digest(&body);
                format!("sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
            };
            let _ = write!(
                client,
                "HTTP/1.1 201 Created\r\nDocker-Content-Digest: {digest}\r\nLocation: {path}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(Fault::Stall) => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(Fault::Reset | Fault::Slow(_) | Fault::RefuseMount | Fault::Created) | None => {
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let text = match fault {
                Some(Fault::RefuseMount) => {
                    // `POST /v2/<to>/blobs/uploads/?mount=…&from=…` becomes `POST /v2/<to>/blobs/uploads/`.
                    let plain = path.split('?').next().unwrap_or(path).to_string();
                    text.replacen(path, &plain, 1)
                }
                _ => text.clone(),
            };
            let head: String = text
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .collect::<Vec<_>>()
                .join("\r\n");
            let head = head.trim_end_matches("\r\n").to_string() + "\r\nConnection: close\r\n\r\n";
            let _ = server.write_all(head.as_bytes());
            let _ = server.write_all(&rest);
            if matches!(fault, Some(Fault::Reset)) {
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf).map(|n| server.write_all(&buf[..n]));
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let upload = std::thread::spawn(move || {
                match fault {
                    Some(Fault::Slow(rate)) => throttled_copy(&mut c2, &mut s2, rate),
                    _ => {
                        let _ = std::io::copy(&mut c2, &mut s2);
                    }
                }
                let _ = s2.shutdown(Shutdown::Write);
            });
            if matches!(fault, Some(Fault::Created)) {
                // The status line rewritten, the rest as it came.
                let mut first = Vec::new();
                let mut byte = [0u8; 1];
                while !first.ends_with(b"\r\n") {
                    match server.read(&mut byte) {
                        Ok(1) => first.push(byte[0]),
                        _ => break,
                    }
                }
                let line = String::from_utf8_lossy(&first).replace("202 Accepted", "201 Created");
                let _ = client.write_all(line.as_bytes());
            }
            let _ = std::io::copy(&mut server, &mut client);
            let _ = client.shutdown(Shutdown::Both);
            let _ = upload.join();
        }
    }
}

/// Copy `from` to `to` at about `rate` bytes a second (a tenth of a second's worth at a time).
fn throttled_copy(from: &mut TcpStream, to: &mut TcpStream, rate: usize) {
    let mut buf = vec![0u8; (rate / 10).max(1)];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The request head (through the blank line) and whatever body bytes came with it.
fn read_head(client: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = client.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        // A TLS handshake (the engine tries HTTPS first): closed at once, so the client falls back to HTTP
        // as it does against the registry itself.
        if data[0] == 0x16 {
            return None;
        }
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = data.split_off(end + 4);
            return Some((data, rest));
        }
        if data.len() > 65_536 {
            return None;
        }
    }
}

/// The whole request body (by its Content-Length).
fn read_body(client: &mut TcpStream, head: &str, mut body: Vec<u8>) -> Vec<u8> {
    let length = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut buf = [0u8; 65_536];
    while body.len() < length {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    body
}

/// Answer `code` with an empty body (the request's body read first).
fn answer(client: &mut TcpStream, head: &str, already: usize, code: u16) {
    drain_body(client, head, already);
    let reason = match code {
        429 => "Too Many Requests",
        403 => "Forbidden",
        _ => "Service Unavailable",
    };
    let _ = write!(
        client,
        "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nRetry-After: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = client.shutdown(Shutdown::Both);
}

/// Read and discard the request body, so the answer is not lost to a reset.
fn drain_body(client: &mut TcpStream, head: &str, already: usize) {
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut left = length
        .unwrap_or(if chunked { usize::MAX } else { 0 })
        .saturating_sub(already);
    let mut buf = [0u8; 65_536];
    while left > 0 {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if chunked && buf[..n].ends_with(b"0\r\n\r\n") {
                    break;
                }
                left = left.saturating_sub(n);
            }
        }
    }
}

/// A TCP listener on loopback that forwards to the Docker Engine's unix socket, and can cut every
/// connection at once: an engine that stops mid-run, seen from the step (`DOCKER_HOST=tcp://…`).
pub struct EngineForwarder {
    /// `tcp://127.0.0.1:<port>`.
    pub docker_host: String,
    /// Requests seen, as `METHOD PATH` first lines.
    seen: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl EngineForwarder {
    pub fn start(socket: &str) -> EngineForwarder {
        let listener = super::listen("127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let docker_host = format!("tcp://{}", listener.local_addr().unwrap());
        let (seen, connections, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (seen2, conns2, stop2, socket) = (seen.clone(), connections.clone(), stop.clone(), socket.to_string());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(engine) = std::os::unix::net::UnixStream::connect(&socket) else {
                    continue;
                };
                conns2.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
                let (mut e_in, mut e_out) = (engine.try_clone().unwrap(), engine);
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65_536];
                    loop {
                        let n = match c_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Some(line) = String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .next()
                            .filter(|l| l.contains(" HTTP/1."))
                        {
                            seen.lock().unwrap().push(line.to_string());
                        }
                        if e_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = e_out.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut e_in, &mut c_out);
                    let _ = c_out.shutdown(Shutdown::Both);
                });
            }
        });
        EngineForwarder {
            docker_host,
            seen,
            connections,
            stop,
        }
    }

    /// Whether a request whose first line contains `needle` went through.
    pub fn saw(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Drop every connection and accept no more: the engine is gone.
    pub fn cut(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for EngineForwarder {
    fn drop(&mut self) {
        self.cut();
    }
}
