//! Free TCP ports for parallel tests.
//!
//! Ports come from 20000–31999, below Linux's ephemeral range (32768–60999), so an outgoing connection's
//! source port never takes a port a test is about to bind. Each process starts at a different offset and
//! never hands out the same port twice; each candidate is checked by binding it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20000;
const COUNT: u32 = 12000;

/// A port on 127.0.0.1 that nothing listens on right now and that this process has not handed out before.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id().wrapping_mul(2654435761) >> 4) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % COUNT) as u16;
        // Binding the wildcard address fails if anything holds the port on any local address.
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {FIRST}..{}", FIRST + COUNT);
}

/// True if something accepts TCP connections on 127.0.0.1:`port`.
pub fn is_listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        std::time::Duration::from_millis(200),
    )
    .is_ok()
}
