//! A tiny HTTP/1.1 backend on 127.0.0.1 answering every request with `200` and a fixed body (its zone,
//! by convention), plus an `x-backend` header carrying its name.
//!
//! Every response closes the connection, so Envoy opens a new upstream connection per request: once the
//! backend is stopped, the very next request to it is refused, like a dead pod.
//!
//! `GET /healthz` is its health endpoint for Envoy's active HTTP health checks: `200` normally, `503`
//! after [`Backend::set_healthy`]`(false)`, while every other path keeps answering `200` — a sick pod
//! that still serves, which only an active health check can notice. Health checks are counted apart
//! ([`Backend::health_checks`]), not in [`Backend::requests`].
//!
//! [`Backend::start_grpc`] starts the same backend speaking HTTP/2 without TLS (what an Envoy cluster
//! with gRPC health checks sends): every request answers `200` with the body, and
//! `grpc.health.v1.Health/Check` answers `SERVING`, or `NOT_SERVING` after `set_healthy(false)`,
//! and `/e2e.Echo/Who` answers the body as a proper gRPC response, for proxyless gRPC clients (see
//! [`crate::grpc_backend`]).

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
    protocol: BackendProtocol,
    requests: Arc<AtomicU64>,
    health_checks: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    running: Option<Running>,
}

/// What a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendProtocol {
    /// HTTP/1.1, one request per connection, health at `GET /healthz`.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), health as the gRPC health service.
    Grpc,
}

enum Running {
    Http1 {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
    },
    Grpc(crate::grpc_backend::GrpcServing),
}

impl Backend {
    /// Starts a backend on a free port.
    pub fn start(name: &str, body: &str) -> Backend {
        Self::start_on(crate::ports::free_port(), name, body)
    }

    /// Starts a backend speaking `protocol` on a free port.
    pub fn start_speaking(protocol: BackendProtocol, name: &str, body: &str) -> Backend {
        Self::start_with(protocol, crate::ports::free_port(), name, body)
    }

    /// Starts a gRPC (HTTP/2) backend on a free port.
    pub fn start_grpc(name: &str, body: &str) -> Backend {
        Self::start_speaking(BackendProtocol::Grpc, name, body)
    }

    /// Starts a backend on `port`.
    pub fn start_on(port: u16, name: &str, body: &str) -> Backend {
        Self::start_with(BackendProtocol::Http1, port, name, body)
    }

    fn start_with(protocol: BackendProtocol, port: u16, name: &str, body: &str) -> Backend {
        let mut b = Backend {
            name: name.to_string(),
            body: body.to_string(),
            port,
            protocol,
            requests: Arc::new(AtomicU64::new(0)),
            health_checks: Arc::new(AtomicU64::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
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

    pub fn protocol(&self) -> BackendProtocol {
        self.protocol
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Requests answered so far (over all runs), health checks not included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Health checks answered so far (over all runs): `GET /healthz`, or gRPC `Health/Check`.
    pub fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::Relaxed)
    }

    /// What the health check answers from now on: `/healthz` `200` if `healthy`, else `503` (gRPC:
    /// `SERVING` or `NOT_SERVING`). Other requests answer `200` either way. Kept across
    /// [`Backend::stop`] and [`Backend::restart`].
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Closes the listening socket: new connections are refused from now on. A gRPC backend also
    /// drops its open connections (a dead pod's HTTP/2 connections end with it).
    pub fn stop(&mut self) {
        match self.running.take() {
            None => {}
            Some(Running::Http1 { stop, thread }) => {
                stop.store(true, Ordering::SeqCst);
                // Wake the blocking accept(); the loop sees the flag and drops the listener.
                let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500));
                let _ = thread.join();
            }
            Some(Running::Grpc(serving)) => serving.stop(),
        }
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
        let counters = Counters {
            requests: self.requests.clone(),
            health_checks: self.health_checks.clone(),
            healthy: self.healthy.clone(),
        };
        if self.protocol == BackendProtocol::Grpc {
            self.running = Some(Running::Grpc(crate::grpc_backend::GrpcServing::start(
                listener, counters, &self.name, &self.body,
            )));
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let name = self.name.clone();
            let body = self.body.clone();
            std::thread::Builder::new()
                .name(format!("backend-{}", self.name))
                .spawn(move || serve(listener, stop, counters, name, body))
                .expect("spawn backend thread")
        };
        self.running = Some(Running::Http1 { stop, thread });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a serving thread shares with its [`Backend`].
#[derive(Clone)]
pub(crate) struct Counters {
    pub(crate) requests: Arc<AtomicU64>,
    pub(crate) health_checks: Arc<AtomicU64>,
    pub(crate) healthy: Arc<AtomicBool>,
}

/// The answers a backend gives: to any request, and to `/healthz` while unhealthy.
struct Answers {
    ok: String,
    unhealthy: String,
}

fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    counters: Counters,
    name: String,
    body: String,
) {
    let sick = "unhealthy";
    let answers = Arc::new(Answers {
        ok: format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: {name}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        ),
        unhealthy: format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nx-backend: {name}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{sick}",
            sick.len()
        ),
    });
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let answers = answers.clone();
        let counters = counters.clone();
        std::thread::spawn(move || answer(conn, &answers, &counters));
    }
    // The listener drops here: the port stops accepting.
}

/// Reads one request head and answers it (counting it first, as a request or a health check).
fn answer(mut conn: TcpStream, answers: &Answers, counters: &Counters) {
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
    // The request line: `GET /healthz HTTP/1.1`.
    let path = buf
        .split(|&b| b == b' ')
        .nth(1)
        .map(|p| p.split(|&b| b == b'?').next().unwrap_or(p));
    let response = if path == Some(b"/healthz".as_slice()) {
        counters.health_checks.fetch_add(1, Ordering::Relaxed);
        if counters.healthy.load(Ordering::SeqCst) {
            &answers.ok
        } else {
            &answers.unhealthy
        }
    } else {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        &answers.ok
    };
    if conn.write_all(response.as_bytes()).is_err() {
        return;
    }
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Drain until the peer closes so the close is clean (FIN, not RST).
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
}
