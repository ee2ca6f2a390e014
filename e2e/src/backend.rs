//! A tiny HTTP/1.1 backend on 127.0.0.1 answering every request with `200` and a fixed body (its zone,
//! by convention), plus an `x-backend` header carrying its name.
//!
//! Every response closes the connection, so Envoy opens a new upstream connection per request: once the
//! backend is stopped, the very next request to it is refused, like a dead pod.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Backend {
    name: String,
    body: String,
    port: u16,
    requests: Arc<AtomicU64>,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on a free port.
    pub fn start(name: &str, body: &str) -> Backend {
        Self::start_on(crate::ports::free_port(), name, body)
    }

    /// Starts a backend on `port`.
    pub fn start_on(port: u16, name: &str, body: &str) -> Backend {
        let mut b = Backend {
            name: name.to_string(),
            body: body.to_string(),
            port,
            requests: Arc::new(AtomicU64::new(0)),
            running: None,
        };
        b.restart();
        b
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Requests answered so far (over all runs).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Closes the listening socket: new connections are refused from now on.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the loop sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500));
        let _ = running.thread.join();
    }

    /// Listens again on the same port (no-op if running).
    pub fn restart(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = crate::poll(Duration::from_secs(5), Duration::from_millis(20), || {
            TcpListener::bind(("127.0.0.1", self.port)).ok()
        })
        .unwrap_or_else(|| panic!("backend {}: cannot bind 127.0.0.1:{}", self.name, self.port));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let requests = self.requests.clone();
            let name = self.name.clone();
            let body = self.body.clone();
            std::thread::Builder::new()
                .name(format!("backend-{}", self.name))
                .spawn(move || serve(listener, stop, requests, name, body))
                .expect("spawn backend thread")
        };
        self.running = Some(Running { stop, thread });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    name: String,
    body: String,
) {
    let response = Arc::new(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: {name}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    ));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let response = response.clone();
        let requests = requests.clone();
        std::thread::spawn(move || answer(conn, &response, &requests));
    }
    // The listener drops here: the port stops accepting.
}

/// Reads one request head and answers it (counting it in `requests` first).
fn answer(mut conn: TcpStream, response: &str, requests: &AtomicU64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    requests.fetch_add(1, Ordering::Relaxed);
    if conn.write_all(response.as_bytes()).is_err() {
        return;
    }
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Drain until the peer closes so the close is clean (FIN, not RST).
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
}
