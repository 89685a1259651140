//! [`Link`]: a TCP forwarder on loopback whose uploads (client to server, every connection together) share
//! one rate: the network path from a CI runner to one registry, as to an ECR region. On loopback alone a
//! registry's ingest is bound by the CPU it shares with the step and the other registries; behind links,
//! what several destinations cost is what it costs over a network.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Link {
    /// `127.0.0.1:<port>`: the registry, as reached through the link.
    pub host: String,
    stop: Arc<AtomicBool>,
    /// Bytes sent up the link so far (requests and their bodies).
    sent: Arc<AtomicU64>,
    /// Connections opened through the link so far.
    connections: Arc<AtomicU64>,
}

impl Link {
    /// Forward to `upstream`, uploads at `rate` bytes a second in all.
    pub fn start(upstream: &str, rate: usize) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let opened = connections.clone();
        // When the link is next free to send: every connection's bytes queue behind one another.
        let free_at = Arc::new(Mutex::new(Instant::now()));
        let (upstream, stopped) = (upstream.to_string(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                opened.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (free_at, counted) = (free_at.clone(), counted.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match up_from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let wait = {
                            let mut free = free_at.lock().unwrap();
                            let now = Instant::now();
                            *free = (*free).max(now) + Duration::from_secs_f64(n as f64 / rate as f64);
                            *free - now
                        };
                        std::thread::sleep(wait);
                        counted.fetch_add(n as u64, Ordering::SeqCst);
                        if up_to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = up_to.shutdown(Shutdown::Write);
                });
                let (mut down_from, mut down_to) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut down_from, &mut down_to);
                    let _ = down_to.shutdown(Shutdown::Both);
                });
            }
        });
        Link {
            host,
            stop,
            sent,
            connections,
        }
    }

    /// Connections opened through the link so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Bytes sent up the link so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
