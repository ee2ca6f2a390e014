//! Transport security for the server's own ports (xDS and admin): TLS with an optional client
//! certificate requirement, from PEM files that are reloaded when they change.
//!
//! tonic's `ServerTlsConfig` is fixed for the server's life, so the ports are served from our own accept
//! loop instead ([`incoming`]): each TCP connection is handshaken with the [`rustls::ServerConfig`] current
//! at that moment, and a file change builds a new one. A file change that does not load (half-written,
//! garbage, a key that does not match the certificate) keeps the last good configuration and logs why;
//! at startup the same error is fatal. Connections already established keep their session.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;
use tracing::{debug, error, info, warn};

use crate::auth::workload::{ConnInfo, PeerCertificate};
use crate::auth::{AdminAdmission, AdminAuthLayer, AdminToken};
use crate::watch::{watch_paths, WatchHandle};

/// A client that connects and then sends nothing must not hold a handshake task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files a TLS port is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle client certificates must chain to; `None`: no client certificate asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }
}

/// Why a TLS configuration did not load. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read the {what}: {source}", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{}: no {what} in it (expected a PEM block `-----BEGIN {label}-----`)", path.display())]
    Missing {
        path: PathBuf,
        what: &'static str,
        label: &'static str,
    },
    #[error("{}: the {what} is not valid PEM: {reason}", path.display())]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{}: the private key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: the {what} is unusable: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        what,
        source,
    })
}

fn pem_reason(e: pem::Error) -> String {
    match e {
        // A file caught mid-write ends inside a block.
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "truncated: no `{}` line",
            String::from_utf8_lossy(&end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "bad `-----BEGIN` line `{}`",
            String::from_utf8_lossy(&line).trim()
        ),
        other => other.to_string(),
    }
}

fn parse_certs(
    path: &Path,
    bytes: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what,
            reason: pem_reason(e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_path_buf(),
            what,
            label: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Missing {
            path: path.to_path_buf(),
            what: "private key",
            label: "PRIVATE KEY",
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            what: "private key",
            reason: pem_reason(other),
        },
    })
}

/// The files' bytes as last loaded, to tell a real change from a touch or the watch's first report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read_contents(files: &TlsFiles) -> Result<Contents, TlsError> {
    Ok(Contents {
        cert: read(&files.cert, "certificate chain")?,
        key: read(&files.key, "private key")?,
        client_ca: match &files.client_ca {
            Some(path) => Some(read(path, "client CA bundle")?),
            None => None,
        },
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &TlsFiles, contents: &Contents) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = parse_certs(&files.cert, &contents.cert, "certificate chain")?;
    let key = parse_key(&files.key, &contents.key)?;
    let provider = provider();
    // Checked here rather than left to `with_single_cert`, so the error can say which file is wrong.
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Invalid {
            path: files.key.clone(),
            what: "private key",
            reason: e.to_string(),
        })?;
    match rustls::sign::CertifiedKey::new(certs.clone(), signing_key).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::Invalid {
                path: files.cert.clone(),
                what: "certificate chain",
                reason: e.to_string(),
            })
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(bytes)) => {
            let invalid = |reason: String| TlsError::Invalid {
                path: path.clone(),
                what: "client CA bundle",
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(path, bytes, "client CA bundle")? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("a certificate in it: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            path: files.cert.clone(),
            what: "certificate chain",
            reason: e.to_string(),
        })?;
    // gRPC is HTTP/2 only; a client offering ALPN must get h2 (and one offering only http/1.1 is refused).
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Loads a server configuration from `files` once (what the startup and the tests use).
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    build(files, &read_contents(files)?)
}

/// A TLS configuration that follows its files: [`ReloadingTls::config`] is what the next handshake uses.
pub struct ReloadingTls {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, Contents)>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ReloadingTls {
    /// Loads the files; any error is returned (at startup there is no last good configuration).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = read_contents(&files)?;
        let config = build(&files, &contents)?;
        Ok(Arc::new(ReloadingTls {
            files,
            current: RwLock::new((config, contents)),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Re-reads the files. `Ok(true)`: they changed and the new configuration is in use; `Ok(false)`:
    /// same bytes as loaded; `Err`: the last good configuration stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = read_contents(&self.files)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == contents {
            return Ok(false);
        }
        let config = build(&self.files, &contents)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (config, contents);
        Ok(true)
    }

    /// Reloads whenever one of the files changes (debounced, complete files only, see
    /// [`crate::watch`]); logs the outcome. Watching stops when the handles are dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Vec<WatchHandle>> {
        let this = self.clone();
        watch_paths(&self.files.paths(), move || {
            let m = crate::metrics::metrics();
            match this.reload() {
                Ok(true) => {
                    m.tls_reloads.get_or_create(&result("success")).inc();
                    info!(cert = %this.files.cert.display(), "TLS certificate files reloaded; new connections use them");
                }
                Ok(false) => {}
                Err(error) => {
                    m.tls_reloads.get_or_create(&result("failure")).inc();
                    error!(%error, "TLS files changed but do not load; new connections keep the last good certificate");
                }
            }
        })
    }
}

fn result(r: &str) -> crate::metrics::ResultLabel {
    crate::metrics::ResultLabel {
        result: r.to_string(),
    }
}

/// A connection accepted on a server port: plain TCP, or TLS over TCP with what its client
/// certificate proves (read once, at the handshake).
pub enum Conn {
    Plain(TcpStream),
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        Option<Arc<PeerCertificate>>,
    ),
}

impl Conn {
    fn tls(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        let certificate =
            PeerCertificate::from_chain(stream.get_ref().1.peer_certificates()).map(Arc::new);
        Conn::Tls(Box::new(stream), certificate)
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let (tcp, certificate) = match self {
            Conn::Plain(s) => (s, None),
            Conn::Tls(s, certificate) => (s.get_ref().0, certificate.clone()),
        };
        ConnInfo {
            remote_addr: tcp.peer_addr().ok(),
            certificate,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener` for `serve_with_incoming`: TLS-handshaken with the current
/// configuration of `tls` if given, plain TCP otherwise. `port` names the port in logs and metrics.
///
/// Handshakes run on their own tasks, so a slow or silent client delays only itself; a failed
/// handshake is logged and counted (`xds_tls_handshake_failures_total{port}`; a connection closed
/// before any handshake, as by a TCP probe, only at debug) and the loop goes on.
/// Accept errors (out of file descriptors) are logged and retried. The loop ends when the server
/// drops the stream.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    port: &'static str,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    // A few accepted connections may wait for the server to take them; the accept loop then waits.
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        warn!(port, %error, "cannot accept a connection; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // xDS messages are small and latency matters more than packet count.
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::tls(stream))).await;
                            }
                            Ok(Err(error)) => handshake_failed(port, peer, &error),
                            Err(_) => handshake_failed(
                                port,
                                peer,
                                &io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "no handshake within 10 s",
                                ),
                            ),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn handshake_failed(port: &'static str, peer: SocketAddr, error: &io::Error) {
    // TCP probes (port checks, load balancers) connect and close without a word: neither a warning
    // nor a failure worth counting.
    if matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    ) {
        debug!(port, %peer, %error, "connection closed before the TLS handshake");
        return;
    }
    crate::metrics::metrics()
        .tls_handshake_failures
        .get_or_create(&crate::metrics::PortLabel {
            port: port.to_string(),
        })
        .inc();
    warn!(port, %peer, %error, "TLS handshake failed; connection refused");
}

/// Transport security flags of `xds-server` (flattened into its arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// Server certificate chain (PEM) for TLS on the xDS and admin ports; needs --tls-key. Reloaded
    /// when the file changes.
    #[arg(long, env = "XDS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "XDS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM): clients of the xDS and admin ports must present a certificate that chains to
    /// it (mutual TLS). Needs --tls-cert.
    #[arg(long, env = "XDS_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// CA bundle (PEM) for the admin port's client certificates, instead of --tls-client-ca: operators
    /// get certificates from a CA that never signs workloads. Needs --tls-cert.
    #[arg(long, env = "XDS_ADMIN_CLIENT_CA", requires = "tls_cert")]
    pub admin_client_ca: Option<PathBuf>,

    /// SPIFFE IDs whose certificates may call the admin API (repeat the flag, or comma-separate in the
    /// env). When set, only these may; when not, a certificate carrying any SPIFFE ID (a workload's) is
    /// refused on the admin port unless it comes from --admin-client-ca.
    #[arg(
        long = "admin-allow-id",
        env = "XDS_ADMIN_ALLOW_IDS",
        value_delimiter = ','
    )]
    pub admin_allow_ids: Vec<xds_core::model::SpiffeId>,

    /// File holding a bearer token every admin API call must carry (`authorization: Bearer TOKEN`;
    /// gRPC health stays open). Reloaded when the file changes.
    #[arg(long, env = "XDS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// The loaded transport security of both ports, its file watches running.
#[derive(Debug)]
pub struct Security {
    tls: Option<Arc<ReloadingTls>>,
    /// The admin port's: the same as `tls`, or with `--admin-client-ca` in place of the client CA.
    admin_tls: Option<Arc<ReloadingTls>>,
    admin_auth: AdminAuthLayer,
    _watches: Vec<WatchHandle>,
}

/// Startup failures of [`Security::start`].
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Token(#[from] crate::auth::TokenError),
    #[error(
        "--admin-addr {0} is not a loopback address, so the admin API must authenticate its clients: \
         set --tls-cert, --tls-key and --tls-client-ca (mutual TLS) or --admin-token-file (bearer token), \
         or bind it to 127.0.0.1"
    )]
    OpenAdmin(SocketAddr),
    #[error("watching the TLS or token files: {0:#}")]
    Watch(anyhow::Error),
}

impl Security {
    /// Loads the certificate files and the admin token, refuses an unauthenticated admin API on a
    /// non-loopback address, and starts watching the files. Needs a tokio runtime.
    pub fn start(args: &SecurityArgs, admin_addr: SocketAddr) -> Result<Security, SecurityError> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(ReloadingTls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            })?),
            _ => None,
        };
        let admin_tls = match (&tls, &args.admin_client_ca) {
            (Some(tls), Some(ca)) => Some(ReloadingTls::load(TlsFiles {
                client_ca: Some(ca.clone()),
                ..tls.files.clone()
            })?),
            (tls, _) => tls.clone(),
        };
        let token = match &args.admin_token_file {
            Some(path) => Some(AdminToken::load(path.clone())?),
            None => None,
        };
        let mtls = admin_tls.as_ref().is_some_and(|t| t.requires_client_cert());
        if !admin_addr.ip().is_loopback() && !mtls && token.is_none() {
            return Err(SecurityError::OpenAdmin(admin_addr));
        }
        if !admin_addr.ip().is_loopback() && tls.is_none() {
            warn!(%admin_addr, "the admin bearer token travels in clear text: set --tls-cert and --tls-key");
        }
        let mut watches = Vec::new();
        if let Some(tls) = &tls {
            watches.extend(tls.watch().map_err(SecurityError::Watch)?);
            info!(
                cert = %tls.files.cert.display(),
                client_certificates = if mtls { "required" } else { "not asked for" },
                "TLS on the xDS and admin ports"
            );
        }
        if let (Some(admin), Some(ca)) = (&admin_tls, &args.admin_client_ca) {
            watches.extend(admin.watch().map_err(SecurityError::Watch)?);
            info!(admin_client_ca = %ca.display(), "the admin port takes client certificates of its own CA");
        }
        if let Some(token) = &token {
            watches.extend(token.watch().map_err(SecurityError::Watch)?);
            info!(token_file = %token.path().display(), "admin API requires a bearer token (gRPC health excepted)");
        }
        let admission = AdminAdmission {
            allowed: args.admin_allow_ids.iter().cloned().collect(),
            own_ca: args.admin_client_ca.is_some(),
        };
        Ok(Security {
            tls,
            admin_tls,
            admin_auth: AdminAuthLayer::new(token, admission),
            _watches: watches,
        })
    }

    /// The connections of the xDS port (named `xds` in logs and metrics).
    pub fn xds_incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        incoming(listener, self.tls.clone(), "xds")
    }

    /// The connections of the admin port (`admin` in logs and metrics): its own client CA if
    /// `--admin-client-ca` is set.
    pub fn admin_incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        incoming(listener, self.admin_tls.clone(), "admin")
    }

    /// The token check for the admin router (passes everything without `--admin-token-file`).
    pub fn admin_auth(&self) -> AdminAuthLayer {
        self.admin_auth.clone()
    }
}

#[cfg(test)]
mod tests;
