//! `xdsctl`: the command-line client of the xds-server admin API (`proto/xds_admin.proto`).
//!
//! ```text
//! xdsctl status                       every connected Envoy, SYNCED / STALE / NACKED / NOT SENT per type
//! xdsctl config NODE [--type T] [--name N]   what one Envoy was sent, readable
//! xdsctl services                     services, endpoints, locality, health, source
//! xdsctl explain SERVICE --node NODE | --locality R/Z/S [--label k=v]...
//! xdsctl policies                     active and rejected failover policies
//! xdsctl events [--node NODE]         tail connects, pushes, ACKs, NACKs, disconnects
//! ```
//!
//! Tables by default, `-o json` for scripts. Exit status 1 on any error, with one line on stderr.
//! TLS with `https://` in `--admin-addr` or `--ca`, a client certificate with `--cert`/`--key`, a
//! bearer token with `--token`/`--token-file`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use xds_server::admin::api::DEFAULT_ADDR;
use xds_server::admin::proto::{self as pb, admin_client::AdminClient, SyncStatus};

/// Client of the xds-server admin API: sync status, per-Envoy config, services, priority explanations,
/// policies, and a live event stream.
#[derive(Debug, Parser)]
#[command(name = "xdsctl", version, about)]
struct Cli {
    /// The server's admin address (`--admin-addr` of xds-server).
    #[arg(long, global = true, env = "XDS_ADMIN_ADDR", default_value = DEFAULT_ADDR)]
    admin_addr: String,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Output,

    /// CA certificate (PEM) that signed the server's certificate; connects with TLS (as does an
    /// `https://` address).
    #[arg(long, global = true, env = "XDSCTL_CA")]
    ca: Option<PathBuf>,

    /// Client certificate (PEM) for a server that requires one (`--tls-client-ca`); needs --key.
    #[arg(long, global = true, env = "XDSCTL_CERT", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "XDSCTL_KEY", requires = "cert")]
    key: Option<PathBuf>,

    /// Bearer token for a server with `--admin-token-file`.
    #[arg(
        long,
        global = true,
        env = "XDSCTL_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,

    /// File holding the bearer token.
    #[arg(long, global = true, env = "XDSCTL_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every connected Envoy and whether it is in sync, per resource type (like `istioctl proxy-status`).
    Status,
    /// The resources one Envoy was sent, decoded.
    Config {
        /// The Envoy's node id.
        node: String,
        /// Only one resource type.
        #[arg(long = "type", value_enum)]
        kind: Option<Kind>,
        /// Only the resource with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Services with their endpoints, locality, health and source.
    Services,
    /// The priority levels a client gets for a service, the rule behind each, and the expected load.
    Explain(ExplainArgs),
    /// Active failover policies, the services each decides, and rejected policies with their errors.
    Policies,
    /// Tail xDS events: connects, disconnects, pushes, ACKs and NACKs. `-o json`: one object per line.
    Events {
        /// Only events of this node.
        #[arg(long)]
        node: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Cds,
    Eds,
    Lds,
    Rds,
}

#[derive(Debug, ClapArgs)]
struct ExplainArgs {
    /// `NAMESPACE/NAME`, `NAME.NAMESPACE`, a cluster `NAME.NAMESPACE:PORT`, or a unique `NAME`.
    service: String,
    /// A connected Envoy's node id.
    #[arg(long, conflicts_with_all = ["locality", "label"], required_unless_present = "locality")]
    node: Option<String>,
    /// A client locality given by hand: `REGION[/ZONE[/SUBZONE]]` (`-` for unknown).
    #[arg(long)]
    locality: Option<String>,
    /// A client label `KEY=VALUE` (repeatable), for policies that prioritise on other labels.
    #[arg(long, requires = "locality")]
    label: Vec<String>,
    /// Only this service port.
    #[arg(long)]
    port: Option<u16>,
}

/// An error for the user: one line.
#[derive(Debug)]
enum Failure {
    Unreachable {
        addr: String,
        cause: String,
        tls: bool,
    },
    Server(tonic::Status),
    Usage(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable { addr, cause, tls } => match tls_problem(cause) {
                Some(problem) => write!(
                    f,
                    "cannot talk to the xds-server admin API at {addr}: {problem} ({cause})"
                ),
                None if *tls => write!(
                    f,
                    "cannot reach the xds-server admin API at {addr}: {cause} (is xds-server running \
                     with --admin-addr {addr} and TLS? set --admin-addr or XDS_ADMIN_ADDR)"
                ),
                None => write!(
                    f,
                    "cannot reach the xds-server admin API at {addr}: {cause} (is xds-server running \
                     with --admin-addr {addr}? set --admin-addr or XDS_ADMIN_ADDR; if its admin port \
                     uses TLS, pass --ca)"
                ),
            },
            Failure::Server(status) if status.code() == tonic::Code::Unauthenticated => {
                write!(f, "UNAUTHENTICATED: {}", one_line(status.message()))
            }
            Failure::Server(status) => {
                let code = format!("{:?}", status.code());
                write!(f, "{}: {}", code, one_line(status.message()))
            }
            Failure::Usage(m) => f.write_str(m),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The innermost cause of an error ("Connection refused (os error 111)"), not tonic's "transport error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

/// What a TLS failure means for the user, from rustls' error text (the handshake's alert or the
/// certificate check). TLS 1.3 reports a refused client certificate only on the first call, as an alert.
fn tls_problem(cause: &str) -> Option<&'static str> {
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
struct Transport {
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
    fn from_cli(cli: &Cli) -> Result<Transport, Failure> {
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

    fn uri(&self) -> String {
        let bare = self
            .addr
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        match self.tls {
            Some(_) => format!("https://{bare}"),
            None => format!("http://{bare}"),
        }
    }

    fn unreachable(&self, cause: String) -> Failure {
        Failure::Unreachable {
            addr: self.addr.clone(),
            cause,
            tls: self.tls.is_some(),
        }
    }

    async fn connect(&self) -> Result<Client, Failure> {
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
    fn server_error(&self, status: tonic::Status) -> Failure {
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
    async fn probe(&self) -> Option<String> {
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
struct AddToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            r.metadata_mut().insert("authorization", token.clone());
        }
        Ok(r)
    }
}

type Client = AdminClient<InterceptedService<Channel, AddToken>>;

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(Duration::from_secs(10));
    r
}

/// Writes to stdout; a closed pipe (`xdsctl ... | head`) ends the program quietly.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("xdsctl: writing the output: {e}");
        std::process::exit(1);
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("admin messages serialize")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xdsctl: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // Check arguments before connecting, so usage errors are not reported as connection errors.
    let explain_client = match &cli.command {
        Command::Explain(a) => Some(explain_client(a)?),
        _ => None,
    };
    let transport = Transport::from_cli(&cli)?;
    match call(cli, explain_client, &transport).await {
        Err(Failure::Unreachable {
            cause, tls: true, ..
        }) if tls_problem(&cause).is_none() => {
            Err(transport.unreachable(transport.probe().await.unwrap_or(cause)))
        }
        other => other,
    }
}

async fn call(
    cli: Cli,
    explain_client: Option<pb::explain_priorities_request::Client>,
    transport: &Transport,
) -> Result<(), Failure> {
    let mut client = transport.connect().await?;
    let err = |s| transport.server_error(s);
    let out = cli.output;
    match cli.command {
        Command::Status => {
            let r = client
                .list_clients(request(pb::ListClientsRequest {}))
                .await
                .map_err(err)?
                .into_inner();
            print_out(out, &r, status_table)
        }
        Command::Config { node, kind, name } => {
            let r = client
                .get_client_config(request(pb::GetClientConfigRequest {
                    node_id: node,
                    r#type: kind
                        .map(|k| format!("{k:?}").to_lowercase())
                        .unwrap_or_default(),
                    name: name.unwrap_or_default(),
                }))
                .await
                .map_err(err)?
                .into_inner();
            print_out(out, &r, config_text)
        }
        Command::Services => {
            let r = client
                .list_services(request(pb::ListServicesRequest {}))
                .await
                .map_err(err)?
                .into_inner();
            print_out(out, &r, services_table)
        }
        Command::Explain(a) => {
            let r = client
                .explain_priorities(request(pb::ExplainPrioritiesRequest {
                    service: a.service,
                    port: a.port.map_or(0, u32::from),
                    client: explain_client,
                }))
                .await
                .map_err(err)?
                .into_inner();
            print_out(out, &r, explain_text)
        }
        Command::Policies => {
            let r = client
                .list_policies(request(pb::ListPoliciesRequest {}))
                .await
                .map_err(err)?
                .into_inner();
            print_out(out, &r, policies_text)
        }
        Command::Events { node, count } => {
            let mut stream = client
                .watch_events(pb::WatchEventsRequest {
                    node_id: node.unwrap_or_default(),
                })
                .await
                .map_err(err)?
                .into_inner();
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                match stream.next().await {
                    Some(Ok(e)) => {
                        match out {
                            Output::Json => emit(&format!(
                                "{}\n",
                                serde_json::to_string(&e).expect("serialize")
                            )),
                            Output::Table => emit(&format!("{}\n", event_line(&e))),
                        }
                        seen += 1;
                    }
                    Some(Err(status)) => return Err(transport.server_error(status)),
                    None => {
                        return Err(
                            transport.unreachable("the server closed the event stream".into())
                        )
                    }
                }
            }
            Ok(())
        }
    }
}

fn print_out<T: serde::Serialize>(
    out: Output,
    value: &T,
    table: fn(&T) -> String,
) -> Result<(), Failure> {
    match out {
        Output::Json => emit(&format!("{}\n", json(value))),
        Output::Table => emit(&table(value)),
    }
    Ok(())
}

fn explain_client(a: &ExplainArgs) -> Result<pb::explain_priorities_request::Client, Failure> {
    use pb::explain_priorities_request::Client;
    if let Some(node) = &a.node {
        return Ok(Client::NodeId(node.clone()));
    }
    let text = a.locality.as_deref().unwrap_or_default();
    let locality = parse_locality(text).map_err(Failure::Usage)?;
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::Usage(format!("--label `{l}`: expected KEY=VALUE")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(Client::Manual(pb::ManualClient {
        locality: Some(locality),
        labels,
    }))
}

/// `REGION[/ZONE[/SUBZONE]]`, `-` or empty for an unknown level.
fn parse_locality(text: &str) -> Result<pb::Locality, String> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 3 || text.trim().is_empty() {
        return Err(format!(
            "--locality `{text}`: expected REGION[/ZONE[/SUBZONE]]"
        ));
    }
    let part = |i: usize| {
        parts
            .get(i)
            .map(|s| s.trim())
            .filter(|s| *s != "-")
            .unwrap_or("")
            .to_string()
    };
    Ok(pb::Locality {
        region: part(0),
        zone: part(1),
        sub_zone: part(2),
    })
}

/// Left-aligned columns separated by three spaces; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - width(cell) + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// [`table`] without the header line.
fn table_body(rows: &[Vec<String>]) -> String {
    let headers = vec![""; rows.first().map_or(0, Vec::len)];
    let text = table(&headers, rows);
    text.split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

fn locality_text(l: Option<&pb::Locality>) -> String {
    let l = l.cloned().unwrap_or_default();
    let part = |s: &str| if s.is_empty() { "-" } else { s }.to_string();
    format!(
        "{}/{}/{}",
        part(&l.region),
        part(&l.zone),
        part(&l.sub_zone)
    )
}

fn protocol_text(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Sotw) => "SotW",
        Ok(pb::Protocol::Delta) => "Delta",
        _ => "-",
    }
}

fn status_label(s: i32) -> &'static str {
    SyncStatus::try_from(s).map_or("NOT SENT", SyncStatus::label)
}

fn status_table(r: &pb::ListClientsResponse) -> String {
    if r.clients.is_empty() {
        return "no Envoy connected\n".to_string();
    }
    // SDS only when some client uses it, so meshes without mTLS keep the proxy-status layout.
    let mut types = vec!["CDS", "EDS", "LDS", "RDS"];
    if r.clients
        .iter()
        .any(|c| c.types.iter().any(|t| t.short_name == "SDS"))
    {
        types.push("SDS");
    }
    let rows: Vec<Vec<String>> = r
        .clients
        .iter()
        .map(|c| {
            let mut row = vec![
                c.node_id.clone(),
                c.cluster.clone(),
                locality_text(c.locality.as_ref()),
                protocol_text(c.protocol).to_string(),
            ];
            for short in &types {
                let status = c
                    .types
                    .iter()
                    .find(|t| t.short_name == *short)
                    .map_or("NOT SENT", |t| status_label(t.status));
                row.push(status.to_string());
            }
            row
        })
        .collect();
    let mut header = vec!["NODE", "CLUSTER", "LOCALITY", "PROTOCOL"];
    header.extend(&types);
    let mut out = table(&header, &rows);
    // Why something is NACKED, right under the table.
    for c in &r.clients {
        for t in &c.types {
            if let Some(n) = t
                .last_nack
                .as_ref()
                .filter(|_| t.status == SyncStatus::Nacked as i32)
            {
                out.push_str(&format!(
                    "\n{} {} NACKED version {}: {}\n",
                    c.node_id, t.short_name, n.version, n.error
                ));
            }
        }
    }
    out
}

fn config_text(r: &pb::GetClientConfigResponse) -> String {
    if r.resources.is_empty() {
        return format!("{}: no resources (matching the filter) held\n", r.node_id);
    }
    let mut out = String::new();
    for res in &r.resources {
        out.push_str(&format!(
            "--- {} {} ({}, content hash {}",
            res.short_name,
            res.name,
            status_label(res.status),
            res.held_version
        ));
        if res.client_holds_older_version {
            if res.current_version.is_empty() {
                out.push_str("; client holds an older version, the server no longer has it");
            } else {
                out.push_str(&format!(
                    "; client holds an older version, shown below is the current one, {}",
                    res.current_version
                ));
            }
        }
        out.push_str(")\n");
        out.push_str(&res.text);
        out.push_str("\n\n");
    }
    out
}

fn endpoint_text(ep: &pb::Endpoint, ports: &[pb::ServicePort]) -> String {
    match ports {
        [one] => {
            let port = ep
                .port_overrides
                .get(&one.name)
                .copied()
                .unwrap_or(one.port);
            format!("{}:{port}", ep.address)
        }
        _ if ep.port_overrides.is_empty() => ep.address.clone(),
        _ => {
            let o: Vec<String> = ep
                .port_overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{} ({})", ep.address, o.join(","))
        }
    }
}

fn services_table(r: &pb::ListServicesResponse) -> String {
    if r.services.is_empty() {
        return "no services\n".to_string();
    }
    let mut rows = Vec::new();
    for s in &r.services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| format!("{}:{}", p.name, p.port))
            .collect();
        let first = vec![format!("{}/{}", s.namespace, s.name), ports.join(",")];
        let tail = vec![s.source.clone(), ports_policy_text(s)];
        if s.endpoints.is_empty() {
            rows.push([first, vec!["-".into(), "-".into(), "-".into()], tail].concat());
            continue;
        }
        for (i, ep) in s.endpoints.iter().enumerate() {
            let lead = if i == 0 {
                first.clone()
            } else {
                vec![String::new(), String::new()]
            };
            let rest = if i == 0 {
                tail.clone()
            } else {
                vec![String::new(), String::new()]
            };
            rows.push(
                [
                    lead,
                    vec![
                        endpoint_text(ep, &s.ports),
                        locality_text(ep.locality.as_ref()),
                        ep.health.clone(),
                    ],
                    rest,
                ]
                .concat(),
            );
        }
    }
    table(
        &[
            "SERVICE", "PORTS", "ENDPOINT", "LOCALITY", "HEALTH", "SOURCE", "POLICY",
        ],
        &rows,
    )
}

/// The service's policy when all its ports share one, else `PORT=POLICY` per port.
fn ports_policy_text(s: &pb::Service) -> String {
    let policy = |p: &pb::ServicePort| {
        if p.policy.is_empty() {
            s.policy.clone() // a server that reports one policy per service
        } else {
            p.policy.clone()
        }
    };
    match s.ports.first() {
        Some(first) if s.ports.iter().any(|p| policy(p) != policy(first)) => s
            .ports
            .iter()
            .map(|p| format!("{}={}", p.port, policy(p)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(first) => policy(first),
        None => s.policy.clone(),
    }
}

fn explain_text(r: &pb::ExplainPrioritiesResponse) -> String {
    let mut out = String::new();
    for (n, e) in r.explanations.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "service {}  port {}  cluster {}\nclient  {}  class {}\npolicy  {}  overprovisioning factor {}, panic threshold {}%\n\n",
            e.service, e.port, e.cluster, r.client, e.locality_class,
            if e.policy.is_empty() { &r.policy } else { &e.policy },
            e.overprovisioning_factor, e.panic_threshold
        ));
        let mut rows = Vec::new();
        for l in &e.levels {
            for (i, ep) in l.endpoints.iter().enumerate() {
                let level = if i == 0 {
                    vec![
                        format!("P{}", l.priority),
                        format!("{}%", l.load_percent),
                        format!(
                            "{}/{}{}",
                            l.healthy,
                            l.total,
                            if l.panic { " (panic)" } else { "" }
                        ),
                    ]
                } else {
                    vec![String::new(), String::new(), String::new()]
                };
                rows.push(
                    [
                        level,
                        vec![
                            if ep.gateway_for.is_empty() {
                                format!("{}:{}", ep.address, ep.port)
                            } else {
                                format!(
                                    "{}:{} (gateway of {}, weight {})",
                                    ep.address, ep.port, ep.gateway_for, ep.weight
                                )
                            },
                            locality_text(ep.locality.as_ref()),
                            ep.health.clone(),
                            if i == 0 {
                                l.reason.clone()
                            } else {
                                String::new()
                            },
                        ],
                    ]
                    .concat(),
                );
            }
        }
        if rows.is_empty() {
            out.push_str("no endpoints\n");
        } else {
            out.push_str(&table(
                &[
                    "PRIORITY", "LOAD", "HEALTHY", "ENDPOINT", "LOCALITY", "HEALTH", "REASON",
                ],
                &rows,
            ));
        }
        out.push_str(&locality_weights_text(&e.levels));
        let split: Vec<String> = e
            .load
            .iter()
            .enumerate()
            .map(|(i, l)| format!("P{i} {l}%"))
            .collect();
        out.push_str(&format!(
            "\nexpected load: {}",
            if split.is_empty() {
                "-".to_string()
            } else {
                split.join(", ")
            }
        ));
        if e.no_healthy_upstream {
            out.push_str("  (no healthy upstream: requests fail with 503)");
        } else if e.panic {
            out.push_str("  (every level in panic: split by host count)");
        }
        out.push('\n');
        for note in &e.notes {
            out.push_str(&format!("note: {note}\n"));
        }
    }
    out
}

/// A policy with `distribute` rules: each distribute level's rule, then one line per locality with
/// its weight, share of its level and expected share of all requests. Empty otherwise.
fn locality_weights_text(levels: &[pb::Level]) -> String {
    let mut out = String::new();
    for l in levels {
        if let Some(d) = &l.distribute {
            let to: Vec<String> =
                d.to.iter()
                    .map(|t| format!("{} {}%", t.locality, t.weight))
                    .collect();
            out.push_str(&format!(
                "P{} distribute from {}: {}\n",
                l.priority,
                d.from,
                to.join(", ")
            ));
        }
    }
    let rows: Vec<Vec<String>> = levels
        .iter()
        .flat_map(|l| {
            l.localities.iter().enumerate().map(move |(i, s)| {
                vec![
                    if i == 0 {
                        format!("P{}", l.priority)
                    } else {
                        String::new()
                    },
                    locality_text(s.locality.as_ref()),
                    s.weight.to_string(),
                    if s.pattern.is_empty() {
                        "-".to_string()
                    } else {
                        s.pattern.clone()
                    },
                    format!("{:.1}%", s.share_of_level),
                    format!("{:.1}%", s.expected_percent),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return out;
    }
    format!(
        "\nlocality weights:\n{out}{}",
        table(
            &[
                "PRIORITY",
                "LOCALITY",
                "WEIGHT",
                "PATTERN",
                "SHARE OF LEVEL",
                "EXPECTED",
            ],
            &rows,
        )
    )
}

/// `500ms`, `2s`, `1.5s`.
fn millis_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// One policy's settings, one `  key  value` line each (optional settings only when set).
fn policy_settings_text(p: &pb::Policy) -> Vec<(&'static str, String)> {
    let mut lines = vec![("failoverPriority", p.failover_priority.join(", "))];
    if !p.failover.is_empty() {
        let rules: Vec<String> = p
            .failover
            .iter()
            .map(|r| format!("{} → {}", r.from, r.to))
            .collect();
        lines.push(("failover", rules.join(", ")));
    }
    if !p.backups.is_empty() {
        lines.push(("backups", p.backups.join(", ")));
    }
    for rule in &p.distribute {
        let to: Vec<String> = rule
            .to
            .iter()
            .map(|t| format!("{} {}%", t.locality, t.weight))
            .collect();
        lines.push(("distribute", format!("{} → {}", rule.from, to.join(", "))));
    }
    if let Some(hc) = &p.health_check {
        let what = match hc.protocol.as_str() {
            "http" if hc.host.is_empty() => format!("http GET {}", hc.path),
            "http" => format!("http GET {} (Host {})", hc.path, hc.host),
            "grpc" if !hc.grpc_service.is_empty() => format!("grpc {}", hc.grpc_service),
            other => other.to_string(),
        };
        lines.push((
            "healthCheck",
            format!(
                "{what} every {}, timeout {}, unhealthy after {}, healthy after {}",
                millis_text(hc.interval_ms),
                millis_text(hc.timeout_ms),
                hc.unhealthy_threshold,
                hc.healthy_threshold
            ),
        ));
    }
    let outlier = match (&p.outlier_detection, p.outlier_detection_enabled) {
        (Some(od), _) => format!(
            "{} × 5xx or {} × gateway failure, every {}, ejected {}, at most {}%",
            od.consecutive_5xx,
            od.consecutive_gateway_failure,
            millis_text(od.interval_ms),
            millis_text(od.base_ejection_time_ms),
            od.max_ejection_percent
        ),
        (None, _) => "off".to_string(),
    };
    lines.push(("outlierDetection", outlier));
    lines.push((
        "spillover",
        format!(
            "{}, overprovisioning factor {}, panic threshold {}%",
            if p.spillover.is_empty() {
                "gradual"
            } else {
                &p.spillover
            },
            p.overprovisioning_factor,
            p.panic_threshold
        ),
    ));
    if p.mtls == "STRICT" {
        lines.push(("mtls", p.mtls.clone()));
    }
    lines
}

fn policies_text(r: &pb::ListPoliciesResponse) -> String {
    let mut out = String::new();
    if r.active.is_empty() {
        out.push_str("no policies: every service uses the built-in default\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .active
            .iter()
            .map(|p| {
                vec![
                    format!("{}/{}", p.namespace, p.name),
                    p.scope.clone(),
                    p.origin.clone(),
                    if p.services.is_empty() {
                        "-".to_string()
                    } else {
                        p.services.join(", ")
                    },
                ]
            })
            .collect();
        out.push_str(&table(
            &["POLICY", "SCOPE", "ORIGIN", "SERVICE PORTS"],
            &rows,
        ));
        for p in &r.active {
            out.push_str(&format!("\n{}/{}  ({})\n", p.namespace, p.name, p.scope));
            let rows: Vec<Vec<String>> = policy_settings_text(p)
                .into_iter()
                .map(|(k, v)| vec![format!("  {k}"), v])
                .collect();
            out.push_str(&table_body(&rows));
        }
    }
    if !r.effective.is_empty() {
        out.push_str("\nEFFECTIVE POLICY PER SERVICE PORT\n");
        let rows: Vec<Vec<String>> = r
            .effective
            .iter()
            .map(|e| {
                vec![
                    if e.port_name.is_empty() {
                        e.service_port.clone()
                    } else {
                        format!("{} ({})", e.service_port, e.port_name)
                    },
                    e.policy.clone(),
                    e.failover_priority.join(", "),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SERVICE PORT", "POLICY", "FAILOVER PRIORITY"],
            &rows,
        ));
    }
    if !r.rejected.is_empty() {
        out.push_str("\nREJECTED\n");
        let rows: Vec<Vec<String>> = r
            .rejected
            .iter()
            .map(|p| vec![p.source.clone(), one_line(&p.error)])
            .collect();
        out.push_str(&table(&["SOURCE", "ERROR"], &rows));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix milliseconds (UTC), without a date library.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn short_type(url: &str) -> &str {
    match xds_server::cache::ResourceType::from_type_url(url) {
        Some(t) => t.short_name(),
        None => url,
    }
}

fn event_line(e: &pb::Event) -> String {
    let at = utc(e.at_unix_ms);
    match e.kind.as_str() {
        "connected" => format!(
            "{at}  connected     {}  {}  {}  stream {}",
            e.node_id,
            protocol_text(e.protocol),
            e.locality,
            e.stream_id
        ),
        "disconnected" => format!("{at}  disconnected  {}  stream {}", e.node_id, e.stream_id),
        "pushed" => format!(
            "{at}  pushed        {}  {}  version {}  {} resources, {} bytes",
            e.node_id,
            short_type(&e.type_url),
            e.version,
            e.resources,
            e.bytes
        ),
        "acked" => format!(
            "{at}  acked         {}  {}  version {}",
            e.node_id,
            short_type(&e.type_url),
            e.version
        ),
        "nacked" => format!(
            "{at}  NACKED        {}  {}  version {}: {}",
            e.node_id,
            short_type(&e.type_url),
            e.version,
            one_line(&e.error)
        ),
        "lagged" => format!("{at}  (fell behind: {} events not shown)", e.resources),
        other => format!("{at}  {other}  {}", e.node_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_status(short: &str, status: SyncStatus) -> pb::TypeStatus {
        pb::TypeStatus {
            short_name: short.into(),
            status: status as i32,
            ..pb::TypeStatus::default()
        }
    }

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[
                vec!["xxxxx".into(), "y".into(), "z".into()],
                vec!["é".into(), "".into(), "last".into()],
            ],
        );
        assert_eq!(
            t,
            "A       LONG HEADER   C\nxxxxx   y             z\né                     last\n"
        );
    }

    #[test]
    fn status_shows_every_type_like_proxy_status_and_explains_nacks() {
        let mut lds = type_status("LDS", SyncStatus::Nacked);
        lds.last_nack = Some(pb::Nack {
            version: "v7".into(),
            error: "cannot bind 127.0.0.1:15001".into(),
            at_unix_ms: 0,
        });
        let r = pb::ListClientsResponse {
            clients: vec![pb::Client {
                node_id: "envoy-1".into(),
                cluster: "web".into(),
                locality: Some(pb::Locality {
                    region: "us-east1".into(),
                    zone: "us-east1-b".into(),
                    sub_zone: String::new(),
                }),
                protocol: pb::Protocol::Delta as i32,
                types: vec![
                    type_status("CDS", SyncStatus::Synced),
                    type_status("EDS", SyncStatus::Stale),
                    lds,
                ],
                ..pb::Client::default()
            }],
        };
        let text = status_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NODE      CLUSTER   LOCALITY                PROTOCOL   CDS      EDS     LDS      RDS"
        );
        assert_eq!(
            lines[1],
            "envoy-1   web       us-east1/us-east1-b/-   Delta      SYNCED   STALE   NACKED   NOT SENT"
        );
        assert!(
            text.contains("envoy-1 LDS NACKED version v7: cannot bind 127.0.0.1:15001"),
            "{text}"
        );
        assert_eq!(
            status_table(&pb::ListClientsResponse::default()),
            "no Envoy connected\n"
        );
        // A client that uses SDS adds the column.
        let mut with_sds = r.clone();
        with_sds.clients[0]
            .types
            .push(type_status("SDS", SyncStatus::Synced));
        let text = status_table(&with_sds);
        assert!(
            text.lines().next().unwrap().ends_with("RDS        SDS"),
            "{text}"
        );
        assert!(
            text.lines().nth(1).unwrap().ends_with("NOT SENT   SYNCED"),
            "{text}"
        );
    }

    #[test]
    fn localities_parse_with_unknown_levels() {
        let l = parse_locality("us-east1/-/rack-1").unwrap();
        assert_eq!(
            (l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()),
            ("us-east1", "", "rack-1")
        );
        assert_eq!(parse_locality("us-east1").unwrap().zone, "");
        assert!(parse_locality("a/b/c/d").is_err());
        assert!(parse_locality("").is_err());
        assert_eq!(locality_text(Some(&l)), "us-east1/-/rack-1");
    }

    #[test]
    fn explain_lists_levels_with_reasons_and_the_load_split() {
        let ep = |addr: &str, zone: &str| pb::LevelEndpoint {
            address: addr.into(),
            port: 8080,
            locality: Some(pb::Locality {
                region: "r".into(),
                zone: zone.into(),
                sub_zone: String::new(),
            }),
            health: "HEALTHY".into(),
            ..pb::LevelEndpoint::default()
        };
        let r = pb::ExplainPrioritiesResponse {
            client: "locality r/a/-".into(),
            policy: "built-in".into(),
            explanations: vec![pb::Explanation {
                cluster: "echo.demo:8080".into(),
                service: "demo/echo".into(),
                port: 8080,
                locality_class: "region=r,zone=a,subzone=-".into(),
                overprovisioning_factor: 140,
                levels: vec![
                    pb::Level {
                        priority: 0,
                        reason: "same zone".into(),
                        endpoints: vec![ep("10.0.0.1", "a"), ep("10.0.0.2", "a")],
                        healthy: 2,
                        total: 2,
                        load_percent: 100,
                        ..pb::Level::default()
                    },
                    pb::Level {
                        priority: 1,
                        reason: "same region".into(),
                        endpoints: vec![ep("10.0.1.1", "b")],
                        healthy: 1,
                        total: 1,
                        ..pb::Level::default()
                    },
                ],
                load: vec![100, 0],
                ..pb::Explanation::default()
            }],
        };
        let text = explain_text(&r);
        println!("{text}");
        assert!(
            text.contains("PRIORITY   LOAD   HEALTHY   ENDPOINT"),
            "{text}"
        );
        assert!(
            text.contains(
                "P0         100%   2/2       10.0.0.1:8080   r/a/-      HEALTHY   same zone"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n                            10.0.0.2:8080   r/a/-      HEALTHY\n"),
            "{text}"
        );
        assert!(text.contains("expected load: P0 100%, P1 0%"), "{text}");

        // A gateway host names its network and weight; notes follow the load line.
        let mut r = r;
        let e = &mut r.explanations[0];
        e.levels[1].endpoints[0].gateway_for = "n2".into();
        e.levels[1].endpoints[0].weight = 3;
        e.notes = vec!["backup 1: shop/dr is not used: no such service in the registry".into()];
        let text = explain_text(&r);
        assert!(
            text.contains("10.0.1.1:8080 (gateway of n2, weight 3)"),
            "{text}"
        );
        assert!(
            text.contains(
                "expected load: P0 100%, P1 0%\nnote: backup 1: shop/dr is not used: no such \
                 service in the registry\n"
            ),
            "{text}"
        );
        assert!(!text.contains("locality weights"), "{text}");

        // A distribute level: its rule, then each locality's weight and shares.
        let share = |zone: &str, weight, pattern: &str, of_level, expected| pb::LocalityShare {
            locality: ep("", zone).locality,
            weight,
            pattern: pattern.into(),
            share_of_level: of_level,
            expected_percent: expected,
        };
        let e = &mut r.explanations[0];
        e.levels[0].distribute = Some(pb::DistributeRule {
            from: "r/*".into(),
            to: vec![
                pb::DistributeTarget {
                    locality: "r/a/*".into(),
                    weight: 80,
                },
                pb::DistributeTarget {
                    locality: "r/c/*".into(),
                    weight: 20,
                },
            ],
        });
        e.levels[0].localities = vec![
            share("a", 80, "r/a/*", 80.0, 80.0),
            share("c", 20, "r/c/*", 20.0, 20.0),
        ];
        e.levels[1].localities = vec![share("b", 1, "", 100.0, 0.0)];
        let text = explain_text(&r);
        println!("{text}");
        assert!(
            text.contains(
                "\nlocality weights:\n\
                 P0 distribute from r/*: r/a/* 80%, r/c/* 20%\n\
                 PRIORITY   LOCALITY   WEIGHT   PATTERN   SHARE OF LEVEL   EXPECTED\n\
                 P0         r/a/-      80       r/a/*     80.0%            80.0%\n\
                 \x20          r/c/-      20       r/c/*     20.0%            20.0%\n\
                 P1         r/b/-      1        -         100.0%           0.0%\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn times_events_and_errors_read_well() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
        let e = pb::Event {
            kind: "nacked".into(),
            at_unix_ms: 0,
            node_id: "envoy-1".into(),
            type_url: xds_server::cache::LISTENER_TYPE.into(),
            version: "v2".into(),
            error: "bad\n  bind".into(),
            ..pb::Event::default()
        };
        assert_eq!(
            event_line(&e),
            "1970-01-01T00:00:00.000Z  NACKED        envoy-1  LDS  version v2: bad bind"
        );
        let f = Failure::Unreachable {
            addr: "127.0.0.1:1".into(),
            cause: "Connection refused (os error 111)".into(),
            tls: false,
        };
        let text = f.to_string();
        assert!(!text.contains('\n'));
        assert!(text.starts_with(
            "cannot reach the xds-server admin API at 127.0.0.1:1: Connection refused"
        ));
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

    #[test]
    fn config_heads_each_resource_and_flags_older_versions() {
        let res = |name: &str, older: bool, current: &str| pb::ClientResource {
            short_name: "EDS".into(),
            name: name.into(),
            status: SyncStatus::Synced as i32,
            held_version: "aa".into(),
            current_version: current.into(),
            client_holds_older_version: older,
            text: "ClusterLoadAssignment {}".into(),
            ..pb::ClientResource::default()
        };
        let r = pb::GetClientConfigResponse {
            node_id: "envoy-1".into(),
            resources: vec![
                res("a", false, "aa"),
                res("b", true, "bb"),
                res("c", true, ""),
            ],
            ..pb::GetClientConfigResponse::default()
        };
        assert_eq!(
            config_text(&r),
            "--- EDS a (SYNCED, content hash aa)\nClusterLoadAssignment {}\n\n\
             --- EDS b (SYNCED, content hash aa; client holds an older version, shown below is the \
             current one, bb)\nClusterLoadAssignment {}\n\n\
             --- EDS c (SYNCED, content hash aa; client holds an older version, the server no longer \
             has it)\nClusterLoadAssignment {}\n\n"
        );
        assert_eq!(
            config_text(&pb::GetClientConfigResponse {
                node_id: "envoy-1".into(),
                ..Default::default()
            }),
            "envoy-1: no resources (matching the filter) held\n"
        );
    }

    #[test]
    fn services_show_one_row_per_endpoint() {
        let r = pb::ListServicesResponse {
            snapshot_generation: 1,
            services: vec![pb::Service {
                namespace: "demo".into(),
                name: "echo".into(),
                ports: vec![pb::ServicePort {
                    name: "http".into(),
                    port: 8080,
                    cluster: "echo.demo:8080".into(),
                    policy: "built-in".into(),
                }],
                endpoints: vec![
                    pb::Endpoint {
                        address: "127.0.0.1".into(),
                        port_overrides: BTreeMap::from([("http".to_string(), 9001)]),
                        locality: None,
                        health: "HEALTHY".into(),
                        labels: BTreeMap::new(),
                    },
                    pb::Endpoint {
                        address: "127.0.0.2".into(),
                        health: "UNHEALTHY".into(),
                        ..pb::Endpoint::default()
                    },
                ],
                source: "file:e.yaml".into(),
                policy: "built-in".into(),
                traffic_distribution: String::new(),
            }],
        };
        let text = services_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("demo/echo   http:8080   127.0.0.1:9001"),
            "{text}"
        );
        assert!(lines[1].ends_with("file:e.yaml   built-in"), "{text}");
        assert!(
            lines[2].contains("127.0.0.2:8080") && lines[2].ends_with("UNHEALTHY"),
            "{text}"
        );
    }

    #[test]
    fn services_show_the_policy_per_port_when_ports_differ() {
        let port = |name: &str, number: u32, policy: &str| pb::ServicePort {
            name: name.into(),
            port: number,
            cluster: format!("web.shop:{number}"),
            policy: policy.into(),
        };
        let mut s = pb::Service {
            namespace: "shop".into(),
            name: "web".into(),
            ports: vec![
                port("http", 8080, "file:p/web-http.yaml"),
                port("grpc", 9090, "file:p/web.yaml"),
            ],
            source: "kubernetes".into(),
            policy: "file:p/web-http.yaml".into(),
            ..pb::Service::default()
        };
        let r = pb::ListServicesResponse {
            snapshot_generation: 1,
            services: vec![s.clone()],
        };
        let text = services_table(&r);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("kubernetes   8080=file:p/web-http.yaml, 9090=file:p/web.yaml"),
            "{text}"
        );
        s.ports[0].policy = "file:p/web.yaml".into();
        let text = services_table(&pb::ListServicesResponse {
            snapshot_generation: 1,
            services: vec![s],
        });
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("kubernetes   file:p/web.yaml"),
            "{text}"
        );
    }

    #[test]
    fn policies_show_scope_settings_and_the_effective_policy_per_port() {
        let base = pb::Policy {
            failover_priority: vec![
                "topology.kubernetes.io/region".into(),
                "topology.kubernetes.io/zone".into(),
            ],
            overprovisioning_factor: 140,
            outlier_detection: Some(pb::OutlierDetection {
                consecutive_5xx: 5,
                consecutive_gateway_failure: 2,
                interval_ms: 1000,
                base_ejection_time_ms: 30_000,
                max_ejection_percent: 100,
            }),
            outlier_detection_enabled: true,
            spillover: "gradual".into(),
            mtls: "DISABLE".into(),
            ..pb::Policy::default()
        };
        let r = pb::ListPoliciesResponse {
            active: vec![
                pb::Policy {
                    namespace: "shop".into(),
                    name: "defaults".into(),
                    scope: "namespace shop".into(),
                    origin: "file:p/shop.yaml".into(),
                    services: vec![
                        "shop/cart:80".into(),
                        "shop/web:9090 (trafficDistribution=PreferSameZone)".into(),
                    ],
                    failover_priority: vec!["topology.istio.io/cluster".into()],
                    ..base.clone()
                },
                pb::Policy {
                    namespace: "shop".into(),
                    name: "web-http".into(),
                    scope: "service shop/web port http".into(),
                    origin: "file:p/web.yaml".into(),
                    port: "http".into(),
                    services: vec!["shop/web:8080".into()],
                    failover_priority: vec![
                        "topology.istio.io/network=n1".into(),
                        "topology.kubernetes.io/region".into(),
                    ],
                    distribute: vec![pb::DistributeRule {
                        from: "us-east1/*".into(),
                        to: vec![
                            pb::DistributeTarget {
                                locality: "us-east1/us-east1-b/*".into(),
                                weight: 80,
                            },
                            pb::DistributeTarget {
                                locality: "us-east1/us-east1-c/*".into(),
                                weight: 20,
                            },
                        ],
                    }],
                    health_check: Some(pb::HealthCheck {
                        protocol: "http".into(),
                        path: "/healthz".into(),
                        interval_ms: 5000,
                        timeout_ms: 500,
                        unhealthy_threshold: 3,
                        healthy_threshold: 2,
                        ..pb::HealthCheck::default()
                    }),
                    outlier_detection: None,
                    outlier_detection_enabled: false,
                    spillover: "allOrNothing".into(),
                    overprovisioning_factor: 100_000,
                    ..base.clone()
                },
            ],
            effective: vec![
                pb::EffectivePolicy {
                    service_port: "shop/cart:80".into(),
                    port_name: String::new(),
                    policy: "file:p/shop.yaml".into(),
                    failover_priority: vec!["topology.istio.io/cluster".into()],
                },
                pb::EffectivePolicy {
                    service_port: "shop/web:8080".into(),
                    port_name: "http".into(),
                    policy: "file:p/web.yaml".into(),
                    failover_priority: vec![
                        "topology.istio.io/network=n1".into(),
                        "topology.kubernetes.io/region".into(),
                    ],
                },
                pb::EffectivePolicy {
                    service_port: "shop/web:9090".into(),
                    port_name: "grpc".into(),
                    policy: "Service shop/web spec.trafficDistribution=PreferSameZone (over \
                             namespace default shop/defaults)"
                        .into(),
                    failover_priority: base.failover_priority.clone(),
                },
            ],
            rejected: vec![],
        };
        let text = policies_text(&r);
        println!("{text}");
        let expected = "\
POLICY          SCOPE                        ORIGIN             SERVICE PORTS
shop/defaults   namespace shop               file:p/shop.yaml   shop/cart:80, shop/web:9090 (trafficDistribution=PreferSameZone)
shop/web-http   service shop/web port http   file:p/web.yaml    shop/web:8080

shop/defaults  (namespace shop)
  failoverPriority   topology.istio.io/cluster
  outlierDetection   5 × 5xx or 2 × gateway failure, every 1s, ejected 30s, at most 100%
  spillover          gradual, overprovisioning factor 140, panic threshold 0%

shop/web-http  (service shop/web port http)
  failoverPriority   topology.istio.io/network=n1, topology.kubernetes.io/region
  distribute         us-east1/* → us-east1/us-east1-b/* 80%, us-east1/us-east1-c/* 20%
  healthCheck        http GET /healthz every 5s, timeout 500ms, unhealthy after 3, healthy after 2
  outlierDetection   off
  spillover          allOrNothing, overprovisioning factor 100000, panic threshold 0%

EFFECTIVE POLICY PER SERVICE PORT
SERVICE PORT           POLICY                                                                                            FAILOVER PRIORITY
shop/cart:80           file:p/shop.yaml                                                                                  topology.istio.io/cluster
shop/web:8080 (http)   file:p/web.yaml                                                                                   topology.istio.io/network=n1, topology.kubernetes.io/region
shop/web:9090 (grpc)   Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default shop/defaults)   topology.kubernetes.io/region, topology.kubernetes.io/zone
";
        assert_eq!(text, expected);
    }
}
