//! Reaching the server: the channel (plain or TLS, with our client certificate), the bearer token on
//! every call, what a TLS failure means for the user, and a probe that recovers the TLS alert tonic
//! loses.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use xds_admin_api::admin_client::AdminClient;

use crate::cli::Cli;
use crate::failure::{root_cause, Failure};

/// What a TLS failure means for the user, from rustls' error text (the handshake's alert or the
/// certificate check). TLS 1.3 reports a refused client certificate only on the first call, as an alert.
pub fn tls_problem(cause: &str) -> Option<&'static str> {
    let c = cause.to_ascii_lowercase();
    if c.contains("certificaterequired") || c.contains("certificate required") {
        Some("the server requires a client certificate (pass --cert and --key)")
    } else if c.contains("unknownca") || c.contains("badcertificate") || c.contains("decrypterror")
    {
        Some("the server refused our client certificate (not signed by a CA it trusts, see its --tls-client-ca)")
    } else if c.contains("unknownissuer") || c.contains("invalid peer certificate") {
        Some("the server's certificate is not trusted (is --ca the CA that signed it?)")
    } else if c.contains("corrupt message") || c.contains("invalidcontenttype") {
        Some("the server does not speak TLS on this port (drop https:// and --ca)")
    } else {
        None
    }
}

/// The CA, and our certificate and key if given.
struct Pems {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// How to reach the server: TLS material and the token, from the command line.
pub struct Transport {
    addr: String,
    tls: Option<ClientTlsConfig>,
    /// The PEMs behind `tls`, for [`Transport::probe`].
    pems: Option<Pems>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("cannot read the {what} {}: {e}", path.display())))
}

impl Transport {
    pub fn from_cli(cli: &Cli) -> Result<Transport, Failure> {
        let https = cli.admin_addr.starts_with("https://");
        let mut pems = None;
        let tls = if https || cli.ca.is_some() {
            let ca = cli.ca.as_ref().ok_or_else(|| {
                Failure::Usage(
                    "an https:// address needs --ca FILE (the CA that signed the server's certificate)"
                        .into(),
                )
            })?;
            let ca = read_file(ca, "CA certificate")?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
            let mut identity = None;
            if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
                let (cert, key) = (
                    read_file(cert, "client certificate")?,
                    read_file(key, "client key")?,
                );
                tls = tls.identity(Identity::from_pem(&cert, &key));
                identity = Some((cert, key));
            }
            pems = Some(Pems { ca, identity });
            Some(tls)
        } else {
            if cli.cert.is_some() {
                return Err(Failure::Usage(
                    "--cert needs TLS: pass --ca (and an https:// --admin-addr)".into(),
                ));
            }
            None
        };
        let token = match (&cli.token, &cli.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => Some(
                String::from_utf8_lossy(&read_file(path, "token file")?)
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let token = token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    Failure::Usage("the token must be visible ASCII without spaces".into())
                })
            })
            .transpose()?;
        let addr = cli.admin_addr.clone();
        Ok(Transport {
            addr,
            tls,
            pems,
            token,
        })
    }

    pub fn uri(&self) -> String {
        let bare = self
            .addr
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        match self.tls {
            Some(_) => format!("https://{bare}"),
            None => format!("http://{bare}"),
        }
    }

    pub fn unreachable(&self, cause: String) -> Failure {
        Failure::Unreachable {
            addr: self.addr.clone(),
            cause,
            tls: self.tls.is_some(),
        }
    }

    pub async fn connect(&self) -> Result<Client, Failure> {
        let addr = &self.addr;
        let mut endpoint = Endpoint::from_shared(self.uri())
            .map_err(|e| Failure::Usage(format!("bad --admin-addr `{addr}`: {e}")))?
            .connect_timeout(Duration::from_secs(3));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Failure::Usage(format!("TLS settings: {}", root_cause(&e))))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| self.unreachable(root_cause(&e)))?;
        Ok(AdminClient::with_interceptor(
            channel,
            AddToken(self.token.clone()),
        ))
    }

    /// A server answer, with transport failures (the server went away mid-call, or refused our TLS)
    /// reported as unreachable.
    pub fn server_error(&self, status: tonic::Status) -> Failure {
        use std::error::Error as _;
        // A status the client made from a transport failure carries its cause (a TLS alert on the
        // first call comes as `Unknown`, a TLS answer to plain HTTP/2 as `Internal`); one the server
        // sent never does.
        if status.source().is_some() {
            let cause = status
                .source()
                .map(root_cause)
                .unwrap_or_else(|| status.message().to_string());
            return self.unreachable(cause);
        }
        Failure::Server(status)
    }
}

impl Transport {
    /// After a failure over TLS, one more handshake of our own to learn what the server objected to:
    /// tonic's HTTP/2 client loses the TLS alert (a refused client certificate surfaces as a broken
    /// pipe), a direct read after the handshake gets it. `None` if the server took us.
    pub async fn probe(&self) -> Option<String> {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
        use tokio::io::AsyncReadExt;
        let Pems { ca, identity } = self.pems.as_ref()?;
        let uri: tonic::codegen::http::Uri = self.uri().parse().ok()?;
        let host = uri.host()?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots.add(cert.ok()?).ok()?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert)
                        .collect::<Result<_, _>>()
                        .ok()?,
                    PrivateKeyDer::from_pem_slice(key).ok()?,
                )
                .ok()?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(host.clone()).ok()?;
        let wait = Duration::from_secs(3);
        let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .ok()?
            .ok()?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let mut stream = match tokio::time::timeout(wait, connector.connect(name, tcp))
            .await
            .ok()?
        {
            Ok(stream) => stream,
            Err(e) => return Some(e.to_string()),
        };
        // TLS 1.3: the server checks our certificate after the handshake and answers with an alert.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// Adds `authorization: Bearer TOKEN` to every call when a token was given.
#[derive(Clone)]
pub struct AddToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            r.metadata_mut().insert("authorization", token.clone());
        }
        Ok(r)
    }
}

pub type Client = AdminClient<InterceptedService<Channel, AddToken>>;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn addresses_pick_the_scheme_and_https_needs_a_ca() {
        let cli =
            |args: &[&str]| Cli::try_parse_from([&["xdsctl"], args, &["status"]].concat()).unwrap();
        let uri = |args: &[&str]| Transport::from_cli(&cli(args)).unwrap().uri();
        assert_eq!(uri(&["--admin-addr", "127.0.0.1:1"]), "http://127.0.0.1:1");
        let text = Transport::from_cli(&cli(&["--admin-addr", "https://127.0.0.1:1"]))
            .err()
            .unwrap()
            .to_string();
        assert!(text.contains("needs --ca"), "{text}");
    }
}
