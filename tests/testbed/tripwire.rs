//! [`Tripwire`]: "no network call" as an assertion, not a clock.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A listening loopback port that nothing answers on: point an endpoint at it, run the step, and
/// [`Tripwire::touched`] says whether the step connected (the kernel completes the handshake into the backlog).
/// How a test proves "no network call" instead of timing one.
pub struct Tripwire {
    listener: TcpListener,
    pub url: String,
}

impl Tripwire {
    pub fn new() -> Tripwire {
        let listener = super::listen("127.0.0.1");
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
