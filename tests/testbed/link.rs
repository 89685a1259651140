//! [`Link`]: a TCP forwarder on loopback whose uploads (client to server, every connection together) share
//! one rate: the network path from a CI runner to one registry, as to an ECR region. On loopback alone a
//! registry's ingest is bound by the CPU it shares with the step and the other registries; behind links,
//! what several destinations cost is what it costs over a network.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
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
        Link::start_with_delay(upstream, rate, Duration::ZERO)
    }

    /// The same, each byte arriving `delay` after it was sent, both ways, and a new connection's first byte
    /// a round trip later still (TCP's handshake): a round trip of twice `delay`, as to a region away.
    pub fn start_with_delay(upstream: &str, rate: usize, delay: Duration) -> Link {
        let listener = super::listen("127.0.0.1");
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
                // A network path passes each piece on as it comes: with Nagle's algorithm on its sockets, the
                // forwarder itself would hold a request's last piece until the far end's delayed ACK (40 ms).
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut up_from, up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (free_at, counted) = (free_at.clone(), counted.clone());
                std::thread::spawn(move || {
                    let mut up_to = Delayed::new(up_to, delay);
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut first = true;
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
                        if std::mem::take(&mut first) {
                            std::thread::sleep(2 * delay);
                        }
                        counted.fetch_add(n as u64, Ordering::SeqCst);
                        if !up_to.send(&buf[..n]) {
                            break;
                        }
                    }
                    up_to.close(Shutdown::Write);
                });
                let (mut down_from, down_to) = (server, client);
                std::thread::spawn(move || {
                    let mut down_to = Delayed::new(down_to, delay);
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = down_from.read(&mut buf) {
                        if !down_to.send(&buf[..n]) {
                            break;
                        }
                    }
                    down_to.close(Shutdown::Both);
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

/// One direction of a connection, each piece written `delay` after it was sent (by a thread of its own,
/// so pieces in flight do not hold back the next); without a delay, written at once.
enum Delayed {
    Now(TcpStream),
    Later {
        pieces: std::sync::mpsc::Sender<(Instant, Vec<u8>)>,
        writer: std::thread::JoinHandle<TcpStream>,
        delay: Duration,
    },
}

impl Delayed {
    fn new(to: TcpStream, delay: Duration) -> Delayed {
        if delay.is_zero() {
            return Delayed::Now(to);
        }
        let (send, received) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        let writer = std::thread::spawn(move || {
            let mut to = to;
            for (due, piece) in received {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if to.write_all(&piece).is_err() {
                    break;
                }
            }
            to
        });
        Delayed::Later {
            pieces: send,
            writer,
            delay,
        }
    }

    /// Send `piece`; false once the other end is gone.
    fn send(&mut self, piece: &[u8]) -> bool {
        match self {
            Delayed::Now(to) => to.write_all(piece).is_ok(),
            Delayed::Later { pieces, delay, .. } => pieces.send((Instant::now() + *delay, piece.to_vec())).is_ok(),
        }
    }

    /// Everything sent is written, then the stream is shut down as `how` says.
    fn close(self, how: Shutdown) {
        let to = match self {
            Delayed::Now(to) => to,
            Delayed::Later { pieces, writer, .. } => {
                drop(pieces);
                match writer.join() {
                    Ok(to) => to,
                    Err(_) => return,
                }
            }
        };
        let _ = to.shutdown(how);
    }
}
