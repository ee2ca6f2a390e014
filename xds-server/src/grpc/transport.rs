//! The xDS port's HTTP/2 transport: how many connections and streams a client may open, how dead peers
//! are noticed, and how long one connection may live.
//!
//! We serve connections ourselves (hyper's HTTP/2 server around tonic's router) instead of through
//! `tonic::transport::Server` for one reason: a connection's maximum age. tonic's own
//! `max_connection_age` is the same for every connection (replicas restarted together would send all
//! their clients away at the same moment) and, with a grace period set, closes connections without a
//! GOAWAY. Here each connection gets its own age (± [`AGE_JITTER`]); when it is reached the connection
//! says GOAWAY, its xDS streams end with `UNAVAILABLE` (so the client reopens them on a new
//! connection, which a Kubernetes Service may send to another replica), and after the grace period
//! whatever is left is closed.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

use crate::auth::workload::LogLimiter;

/// How far a connection's maximum age is spread around `--max-connection-age`, as a fraction
/// (±10%, as gRPC's servers do), so connections opened together do not all close together.
pub const AGE_JITTER: f64 = 0.1;

/// Limits of the xDS port's connections (flags of `xds-server`; the tests serve with the defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct TransportSettings {
    /// Most client connections open at once on the xDS port. Past it a new connection is closed at
    /// once (counted in xds_connections_refused_total): a replica at its limit sheds clients instead of
    /// running out of memory, and Envoy reconnects (to another replica, behind a Service).
    #[arg(long, env = "XDS_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most concurrent gRPC streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). An Envoy
    /// needs one for ADS, plus one per separately configured SDS or LRS source; a client past it waits
    /// for a stream to end (Envoy opens another connection instead).
    #[arg(long, env = "XDS_MAX_STREAMS_PER_CONNECTION", default_value_t = DEFAULT_MAX_STREAMS)]
    pub max_streams_per_connection: u32,

    /// How long a stream may stay open without its first request (Envoy sends it at once). Counted
    /// from when the server has a configuration to answer with.
    #[arg(long, env = "XDS_FIRST_REQUEST_TIMEOUT", value_parser = duration,
          default_value = "30s")]
    pub first_request_timeout: Duration,

    /// HTTP/2 PING interval on idle and busy connections alike: a peer that vanished without closing
    /// its connection (a node that died, a partition) is noticed within this plus --keepalive-timeout.
    #[arg(long, env = "XDS_KEEPALIVE_INTERVAL", value_parser = duration, default_value = "30s")]
    pub keepalive_interval: Duration,

    /// How long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "XDS_KEEPALIVE_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub keepalive_timeout: Duration,

    /// Each connection is closed after about this long (±10%, per connection), so clients reconnect
    /// over time and replicas even out after a rolling restart. `off`: never.
    #[arg(long, env = "XDS_MAX_CONNECTION_AGE", value_parser = optional_duration,
          default_value = "30m")]
    pub max_connection_age: MaxConnectionAge,

    /// After its maximum age, how long a connection's streams may take to move before the connection
    /// is closed anyway.
    #[arg(long, env = "XDS_MAX_CONNECTION_AGE_GRACE", value_parser = duration,
          default_value = "30s")]
    pub max_connection_age_grace: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
pub const DEFAULT_MAX_STREAMS: u32 = 100;

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS,
            first_request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: MaxConnectionAge(Some(Duration::from_secs(30 * 60))),
            max_connection_age_grace: Duration::from_secs(30),
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    xds_core::config::scalar::parse_duration(text)
}

/// `--max-connection-age`: `None` is never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxConnectionAge(pub Option<Duration>);

fn optional_duration(text: &str) -> Result<MaxConnectionAge, String> {
    match text.trim() {
        "off" | "never" => Ok(MaxConnectionAge(None)),
        other => duration(other).map(|d| MaxConnectionAge(Some(d))),
    }
}

/// Bytes of response data h2 queues per stream (see `serve_connection`).
const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Set on a connection when it must go (its maximum age, or the server shutting down): the streams on
/// it end so their clients reopen them elsewhere. Every request carries its connection's
/// (`Request::extensions`).
#[derive(Debug, Clone)]
pub struct ConnectionDrain(watch::Receiver<Option<DrainReason>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    MaxAge,
    Shutdown,
}

impl DrainReason {
    /// The status a stream ends with, telling the client why and that it should reconnect.
    pub fn status(self) -> tonic::Status {
        tonic::Status::unavailable(match self {
            DrainReason::MaxAge => {
                "the connection reached its maximum age (--max-connection-age); reconnect"
            }
            DrainReason::Shutdown => "the server is shutting down; reconnect",
        })
    }
}

impl ConnectionDrain {
    /// Resolves once the connection must go; never, for a request that came without one.
    pub async fn wait(drain: Option<&ConnectionDrain>) -> DrainReason {
        let Some(ConnectionDrain(rx)) = drain else {
            return std::future::pending().await;
        };
        let mut rx = rx.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.expect("waited for Some"),
            // The connection's task is gone: so is the connection.
            Err(_) => DrainReason::Shutdown,
        };
        reason
    }
}

/// `age` spread by ±[`AGE_JITTER`] with `random` in `0..=u64::MAX`.
pub fn jittered(age: Duration, random: u64) -> Duration {
    let unit = random as f64 / u64::MAX as f64; // 0..=1
    age.mul_f64(1.0 - AGE_JITTER + 2.0 * AGE_JITTER * unit)
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The gRPC server of the xDS port: services added like `tonic::transport::Server`'s, served with
/// [`TransportSettings`].
pub struct Transport {
    settings: TransportSettings,
    routes: Routes,
}

impl Transport {
    pub fn new(settings: TransportSettings) -> Self {
        Self {
            settings,
            routes: Routes::default(),
        }
    }

    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(svc);
        self
    }

    pub async fn serve_with_incoming<I, IO>(self, incoming: I) -> std::io::Result<()>
    where
        I: Stream<Item = std::io::Result<IO>> + Send,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
    {
        self.serve_with_incoming_shutdown(incoming, std::future::pending())
            .await
    }

    /// Serves until `shutdown` resolves; then every connection drains (GOAWAY, streams told to
    /// reconnect) and is closed after at most the grace period.
    pub async fn serve_with_incoming_shutdown<I, IO>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        I: Stream<Item = std::io::Result<IO>> + Send,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
    {
        let settings = Arc::new(self.settings);
        let routes = self.routes.prepare();
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let io = tokio::select! {
                _ = &mut shutdown => break,
                // Reap finished connection tasks as we go.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                io = incoming.next() => match io {
                    Some(Ok(io)) => io,
                    Some(Err(error)) => {
                        debug!(%error, "connection not accepted");
                        continue;
                    }
                    None => break,
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refuse(&settings);
                continue; // dropping `io` closes it
            };
            connections.spawn(serve_connection(
                io,
                routes.clone(),
                settings.clone(),
                slot,
                shutdown_rx.clone(),
            ));
        }
        let _ = shutdown_tx.send(true);
        // Each connection closes itself within the grace period.
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

static REFUSED_LOG: LogLimiter = LogLimiter::new();

fn refuse(settings: &TransportSettings) {
    crate::metrics::metrics().connections_refused.inc();
    if let Some(left_out) = REFUSED_LOG.allow() {
        warn!(
            max_connections = settings.max_connections,
            left_out, "connection refused: the xDS port is at --max-connections"
        );
    }
}

/// Open connections, for the gauge: counted while a connection's task runs.
struct OpenConnection(#[allow(dead_code)] OwnedSemaphorePermit);

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit) -> Self {
        crate::metrics::metrics().connections.inc();
        Self(slot)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::metrics::metrics().connections.dec();
    }
}

async fn serve_connection<IO>(
    io: IO,
    routes: Routes,
    settings: Arc<TransportSettings>,
    slot: OwnedSemaphorePermit,
    mut server_shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let _open = OpenConnection::new(slot);
    let info = io.connect_info();
    let (drain_tx, drain_rx) = watch::channel(None);
    let drain = ConnectionDrain(drain_rx);
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            // What tonic's own server records, so handlers read the connection the same way.
            req.extensions_mut().insert(info.clone());
            req.extensions_mut().insert(drain.clone());
            let mut routes = routes.clone();
            async move { tower::Service::call(&mut routes, req.map(Body::new)).await }
        });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_streams_per_connection)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        // Clients that open and reset streams in a loop (CVE-2023-44487, "rapid reset").
        .max_pending_accept_reset_streams(Some(64))
        // What h2 queues per stream ahead of the socket (hyper's default is 400 KiB). Responses are
        // chunks of shared bytes and small copied ones (`wire::GrpcChunks`): this bounds the copies
        // a stream holds while sending, and the frames h2 keeps in a per-connection slab that never
        // shrinks. Throughput is not the queue's size but the socket's.
        .max_send_buf_size(SEND_BUFFER_BYTES)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = pin!(conn);
    let age = settings
        .max_connection_age
        .0
        .map(|age| jittered(age, random_u64()));
    let aged = async {
        match age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    let mut aged = pin!(aged);
    let reason = tokio::select! {
        done = conn.as_mut() => {
            if let Err(error) = done {
                debug!(%error, "connection ended");
            }
            return;
        }
        _ = &mut aged => DrainReason::MaxAge,
        _ = server_shutdown.wait_for(|down| *down) => DrainReason::Shutdown,
    };
    // GOAWAY first, so streams reopened after ours end go to a new connection.
    conn.as_mut().graceful_shutdown();
    let _ = drain_tx.send(Some(reason));
    if reason == DrainReason::MaxAge {
        crate::metrics::metrics().connections_aged.inc();
        info!(
            age_s = age.map_or(0, |a| a.as_secs()),
            "connection reached its maximum age; asked its client to reconnect"
        );
    }
    if tokio::time::timeout(settings.max_connection_age_grace, conn)
        .await
        .is_err()
    {
        debug!("connection still open after the grace period; closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_spread_within_the_jitter() {
        let age = Duration::from_secs(1800);
        assert_eq!(jittered(age, 0), age.mul_f64(0.9));
        assert_eq!(jittered(age, u64::MAX), age.mul_f64(1.1));
        let ages: std::collections::BTreeSet<_> =
            (0..20).map(|_| jittered(age, random_u64())).collect();
        assert!(ages.len() > 10, "ages are not spread: {ages:?}");
        assert!(ages
            .iter()
            .all(|a| *a >= age.mul_f64(0.9) && *a <= age.mul_f64(1.1)));
    }

    #[test]
    fn the_flags_default_to_the_documented_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            t: TransportSettings,
        }
        let parsed = Cli::parse_from(["x"]).t;
        let default = TransportSettings::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        let off = Cli::parse_from(["x", "--max-connection-age", "off"]).t;
        assert_eq!(off.max_connection_age, MaxConnectionAge(None));
    }
}
