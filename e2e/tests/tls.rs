//! Transport security of the server's own ports, against the real `xds-server` binary, real Envoys
//! (from the shipped mTLS sample bootstrap), the real `xdsctl`, and tonic/rustls clients: mutual TLS on
//! the xDS and admin ports, refused clients (no certificate, another CA, plain text), the admin port's
//! loopback rule and bearer token, and certificate rotation without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use e2e::envoy::{Envoy, XdsTls};
use e2e::modes::XdsProtocol;
use e2e::pki::{write_atomic, Ca, Leaf, LeafFiles};
use e2e::server::XdsServer;
use e2e::tmp::TempDir;
use e2e::topology::{Mesh, EAST_B, HOST};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;

e2e::both_protocols!(envoy_gets_its_config_over_mtls);

const WAIT: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);

/// Certificates for one test: CA1 signs the server and a client; CA2 (unrelated) signs a rogue client.
struct Pki {
    dir: TempDir,
    ca: Ca,
    other_ca: Ca,
    ca_path: PathBuf,
    other_ca_path: PathBuf,
    server: LeafFiles,
    server_leaf: Leaf,
    client: LeafFiles,
    client_leaf: Leaf,
    rogue: LeafFiles,
    rogue_leaf: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("tls-pki");
        let ca = Ca::new("test CA one");
        let other_ca = Ca::new("unrelated CA two");
        let ca_path = dir.join("ca.crt");
        let other_ca_path = dir.join("other-ca.crt");
        ca.write(&ca_path);
        other_ca.write(&other_ca_path);
        let server_leaf = ca.server("xds-server", &[]);
        let client_leaf = ca.client("envoy-client");
        let rogue_leaf = other_ca.client("rogue-client");
        Pki {
            server: server_leaf.write(dir.path(), "server"),
            client: client_leaf.write(dir.path(), "client"),
            rogue: rogue_leaf.write(dir.path(), "rogue"),
            dir,
            ca,
            other_ca,
            ca_path,
            other_ca_path,
            server_leaf,
            client_leaf,
            rogue_leaf,
        }
    }

    /// `--tls-cert`, `--tls-key`, and `--tls-client-ca` when `mtls`.
    fn server_args(&self, mtls: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            self.server.cert.display().to_string(),
            "--tls-key".to_string(),
            self.server.key.display().to_string(),
        ];
        if mtls {
            args.push("--tls-client-ca".into());
            args.push(self.ca_path.display().to_string());
        }
        args
    }

    fn envoy_tls(&self, client: &LeafFiles) -> XdsTls {
        XdsTls {
            cert: client.cert.clone(),
            key: client.key.clone(),
            ca: self.ca_path.clone(),
            server_name: "localhost".into(),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How a test client connects: plain text, or TLS trusting `ca` with an optional client certificate.
#[derive(Clone)]
enum Client<'a> {
    Plain,
    Tls {
        ca: &'a str,
        identity: Option<&'a Leaf>,
    },
}

async fn channel(addr: SocketAddr, client: &Client<'_>) -> Result<Channel, String> {
    let endpoint = match client {
        Client::Plain => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        Client::Tls { ca, identity } => {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost");
            if let Some(leaf) = identity {
                tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
            }
            Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .map_err(|e| format!("{e:?}"))?
        }
    };
    endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

async fn health_on(channel: Channel) -> Result<ServingStatus, String> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| format!("{s:?}"))?;
    Ok(answer.into_inner().status())
}

/// gRPC health of the port at `addr` (served on both the xDS and the admin port), or why it failed.
fn health(addr: SocketAddr, client: Client<'_>) -> Result<ServingStatus, String> {
    runtime().block_on(async move { health_on(channel(addr, &client).await?).await })
}

/// The certificate the server at `addr` presents to a rustls client trusting `cas` and presenting
/// `identity` (DER), or the handshake error.
fn presented_certificate(
    addr: SocketAddr,
    cas: &[&Ca],
    identity: &Leaf,
) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        assert_eq!(
            session.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN must pick h2"
        );
        Ok(session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default())
    })
}

fn xdsctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(e2e::paths::xdsctl_bin());
    cmd.args(args)
        .env_remove("XDS_ADMIN_ADDR")
        .env_remove("XDSCTL_TOKEN")
        .env_remove("XDSCTL_TOKEN_FILE")
        .env_remove("XDSCTL_CA")
        .env_remove("XDSCTL_CERT")
        .env_remove("XDSCTL_KEY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run xdsctl")
}

/// `xdsctl` must fail with one stderr line containing `needle`.
fn xdsctl_fails_with(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let out = xdsctl(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xdsctl {args:?} succeeded: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(needle),
        "xdsctl {args:?}: expected `{needle}` in: {stderr}"
    );
}

fn xdsctl_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = xdsctl(args, env);
    assert!(
        out.status.success(),
        "xdsctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn handshake_failures(server: &XdsServer, port: &str) -> u64 {
    let text = e2e::http::get(server.metrics_addr(), "localhost", "/metrics", WAIT)
        .expect("scrape /metrics")
        .text();
    let needle = format!("xds_tls_handshake_failures_total{{port=\"{port}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// (a) A real Envoy from `deploy/envoy/sidecar-bootstrap-mtls.yaml` gets its whole config over mutual
/// TLS and serves traffic, in both ADS flavours.
fn envoy_gets_its_config_over_mtls(protocol: XdsProtocol) {
    let pki = Pki::new();
    let mesh = Mesh::start_with_server_args(1, None, &pki.server_args(true)).protocol(protocol);
    let envoy = Envoy::start(
        mesh.envoy_options("mtls-sidecar", EAST_B)
            .xds_tls(pki.envoy_tls(&pki.client)),
    );
    assert!(
        envoy.wait_serving(HOST, Duration::from_secs(20)),
        "Envoy over mTLS did not serve {HOST}; clusters: {:?}",
        envoy.cluster_names()
    );
    let answer = e2e::traffic::request(envoy.listener_addr(), HOST).unwrap();
    assert_eq!(answer, EAST_B.zone, "served by the own zone's backend");
    // The connection to the control plane really is TLS: Envoy counts the handshake.
    let handshakes = envoy
        .stat_u64("cluster.xds_cluster.ssl.handshake")
        .unwrap_or(0);
    assert!(
        handshakes >= 1,
        "Envoy made no TLS handshake to xds_cluster"
    );
    assert_eq!(handshake_failures(&mesh.server, "xds"), 0);
}

/// The mTLS sample is the plain sample plus the transport socket (and its header comment), so the
/// two cannot drift apart.
#[test]
fn the_mtls_sample_is_the_plain_sample_plus_tls() {
    let load = |p: PathBuf| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let plain = load(e2e::paths::sample_bootstrap());
    let mut mtls = load(e2e::paths::sample_mtls_bootstrap());
    let cluster = mtls["static_resources"]["clusters"][0]
        .as_mapping_mut()
        .unwrap();
    let socket = cluster
        .remove("transport_socket")
        .expect("transport_socket");
    assert_eq!(socket["name"], "envoy.transport_sockets.tls");
    assert_eq!(mtls, plain);
}

/// (a, negative) Envoys that cannot prove who they are get nothing: one without TLS (the plain
/// sample), one with a client certificate from another CA. A correct Envoy next to them works.
#[test]
fn envoys_without_a_trusted_client_certificate_get_no_config() {
    let pki = Pki::new();
    let mesh = Mesh::start_with_server_args(1, None, &pki.server_args(true));
    let plain = Envoy::spawn(mesh.envoy_options("plaintext-sidecar", EAST_B));
    let rogue = Envoy::spawn(
        mesh.envoy_options("rogue-sidecar", EAST_B)
            .xds_tls(pki.envoy_tls(&pki.rogue)),
    );
    let good = mesh
        .envoy_options("good-sidecar", EAST_B)
        .xds_tls(pki.envoy_tls(&pki.client));
    let good = Envoy::start(good);
    assert!(good.wait_serving(HOST, Duration::from_secs(20)));
    // The good one got everything in the meantime; the others had as long and more.
    std::thread::sleep(Duration::from_secs(2));
    for envoy in [&plain, &rogue] {
        assert!(
            !envoy.wait_listener(Duration::from_millis(200)),
            "{} opened the listener pushed by the server",
            envoy.node_id()
        );
        assert_eq!(
            envoy.cluster_names(),
            vec!["xds_cluster".to_string()],
            "{}",
            envoy.node_id()
        );
        assert!(
            mesh.server
                .log_lines_with("Envoy connected")
                .iter()
                .all(|l| !l.contains(envoy.node_id())),
            "the server saw {} connect",
            envoy.node_id()
        );
    }
    assert!(handshake_failures(&mesh.server, "xds") >= 2);
    assert!(!mesh
        .server
        .log_lines_with("TLS handshake failed")
        .is_empty());
}

/// (b, c, d) With `--tls-client-ca`, both ports refuse a client without a certificate, with a
/// certificate from another CA, and a plain-text client; the same client with a good certificate
/// is served. xdsctl says what is wrong.
#[test]
fn clients_without_a_trusted_certificate_are_refused_on_both_ports() {
    let pki = Pki::new();
    let mesh = Mesh::start_with_server_args(1, None, &pki.server_args(true));
    let ca = pki.ca.pem();
    let other_ca = pki.other_ca.pem();
    for (port, addr) in [
        ("xds", mesh.server.addr()),
        ("admin", mesh.server.admin_addr()),
    ] {
        let good = Client::Tls {
            ca: &ca,
            identity: Some(&pki.client_leaf),
        };
        // The xDS port's health is NOT_SERVING until the first snapshot; the answer is what counts.
        let status = e2e::poll(WAIT, EVERY, || health(addr, good.clone()).ok());
        assert!(
            status.is_some(),
            "{port}: a client with a good certificate is not served"
        );
        for (what, client) in [
            (
                "no client certificate",
                Client::Tls {
                    ca: &ca,
                    identity: None,
                },
            ),
            (
                "a certificate from another CA",
                Client::Tls {
                    ca: &ca,
                    identity: Some(&pki.rogue_leaf),
                },
            ),
            ("plain text", Client::Plain),
        ] {
            let result = health(addr, client);
            assert!(
                result.is_err(),
                "{port}: a client with {what} was served: {result:?}"
            );
        }
        // A client that does not trust the server's CA refuses the server.
        let err = health(
            addr,
            Client::Tls {
                ca: &other_ca,
                identity: Some(&pki.client_leaf),
            },
        )
        .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{port}: {err}");
    }

    let admin = format!("https://{}", mesh.server.admin_addr());
    let ca = path_str(&pki.ca_path);
    let (cert, key) = (path_str(&pki.client.cert), path_str(&pki.client.key));
    let out = xdsctl_ok(
        &[
            "--admin-addr",
            &admin,
            "--ca",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "services",
        ],
        &[],
    );
    assert!(out.contains("demo/echo"), "{out}");
    // The same through the environment, and `--ca` alone switches a bare address to TLS.
    let bare = mesh.server.admin_addr().to_string();
    xdsctl_ok(
        &["--admin-addr", &bare, "status"],
        &[
            ("XDSCTL_CA", ca),
            ("XDSCTL_CERT", cert),
            ("XDSCTL_KEY", key),
        ],
    );
    xdsctl_fails_with(
        &["--admin-addr", &admin, "--ca", ca, "status"],
        &[],
        "the server requires a client certificate",
    );
    let (rcert, rkey) = (path_str(&pki.rogue.cert), path_str(&pki.rogue.key));
    xdsctl_fails_with(
        &[
            "--admin-addr",
            &admin,
            "--ca",
            ca,
            "--cert",
            rcert,
            "--key",
            rkey,
            "status",
        ],
        &[],
        "the server refused our client certificate",
    );
    xdsctl_fails_with(
        &[
            "--admin-addr",
            &admin,
            "--ca",
            path_str(&pki.other_ca_path),
            "--cert",
            cert,
            "--key",
            key,
            "status",
        ],
        &[],
        "the server's certificate is not trusted",
    );
    xdsctl_fails_with(&["--admin-addr", &bare, "status"], &[], "pass --ca");
    xdsctl_fails_with(&["--admin-addr", &admin, "status"], &[], "needs --ca");
    assert!(handshake_failures(&mesh.server, "admin") >= 3);
}

/// (e) An admin API off loopback without mutual TLS or a token: the server refuses to start, and says
/// why. With a token it starts.
#[test]
fn admin_off_loopback_needs_mtls_or_a_token() {
    let pki = Pki::new();
    let endpoints = pki.dir.join("endpoints.yaml");
    std::fs::write(&endpoints, "services: []\n").unwrap();
    let endpoints = path_str(&endpoints);
    let (status, log) = XdsServer::run_expecting_exit(
        &["--endpoints", endpoints, "--admin-addr", "0.0.0.0:0"],
        Duration::from_secs(20),
    );
    let status = status.expect("the server kept running with an open admin API");
    assert!(!status.success());
    assert!(
        log.contains("--admin-addr 0.0.0.0:0 is not a loopback address")
            && log.contains("--tls-client-ca")
            && log.contains("--admin-token-file"),
        "{log}"
    );
    // TLS alone authenticates nobody: still refused.
    let mut args = vec!["--endpoints", endpoints, "--admin-addr", "0.0.0.0:0"];
    let tls = pki.server_args(false);
    args.extend(tls.iter().map(String::as_str));
    let (status, log) = XdsServer::run_expecting_exit(&args, Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    // With mutual TLS, and with a token, it runs (killed after 5 s).
    let mtls = pki.server_args(true);
    let token = pki.dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let with_token = ["--admin-token-file", path_str(&token)];
    for extra in [
        mtls.iter().map(String::as_str).collect::<Vec<_>>(),
        with_token.to_vec(),
    ] {
        let mut args = vec!["--endpoints", endpoints, "--admin-addr", "0.0.0.0:0"];
        args.extend(extra);
        let (status, log) = XdsServer::run_expecting_exit(&args, Duration::from_secs(5));
        assert!(status.is_none(), "exited with {status:?}: {log}");
        assert!(log.contains("admin API listening"), "{log}");
    }
    // Bad files at startup: the error names the file.
    std::fs::write(&pki.server.key, "garbage").unwrap();
    let mut args = vec!["--endpoints", endpoints];
    args.extend(tls.iter().map(String::as_str));
    let (status, log) = XdsServer::run_expecting_exit(&args, Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains(&format!(
            "{}: no private key in it",
            pki.server.key.display()
        )),
        "{log}"
    );
}

/// (f) With `--admin-token-file`, every admin call but health needs the token: xdsctl, CSDS and
/// reflection are refused without it or with a wrong one; the token file is reloaded on change.
#[test]
fn admin_token_is_required_except_for_health() {
    let dir = TempDir::new("admin-token");
    let token = dir.join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let mesh = Mesh::start_with_server_args(
        1,
        None,
        &["--admin-token-file".into(), token.display().to_string()],
    );
    let admin = mesh.server.admin_addr();
    let addr = admin.to_string();
    xdsctl_fails_with(
        &["--admin-addr", &addr, "status"],
        &[],
        "UNAUTHENTICATED: missing bearer token",
    );
    xdsctl_fails_with(
        &["--admin-addr", &addr, "--token", "guess", "status"],
        &[],
        "UNAUTHENTICATED: wrong bearer token",
    );
    let out = xdsctl_ok(
        &[
            "--admin-addr",
            &addr,
            "--token-file",
            path_str(&token),
            "services",
        ],
        &[],
    );
    assert!(out.contains("demo/echo"), "{out}");
    xdsctl_ok(
        &["--admin-addr", &addr, "status"],
        &[("XDSCTL_TOKEN", "first-token")],
    );

    // Health stays open (probes); CSDS and reflection do not.
    assert_eq!(health(admin, Client::Plain), Ok(ServingStatus::Serving));
    let (csds, reflection) = runtime().block_on(async move {
        use envoy_types::pb::envoy::service::status::v3::{
            client_status_discovery_service_client::ClientStatusDiscoveryServiceClient,
            ClientStatusRequest,
        };
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, ServerReflectionRequest,
        };
        let channel = channel(admin, &Client::Plain).await.unwrap();
        let csds = ClientStatusDiscoveryServiceClient::new(channel.clone())
            .fetch_client_status(ClientStatusRequest::default())
            .await
            .map(|_| ());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let reflection = ServerReflectionClient::new(channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .map(|_| ());
        (csds, reflection)
    });
    for (what, r) in [("CSDS", csds), ("reflection", reflection)] {
        let status = r.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
    }

    // Rotation: the new token is taken within seconds, the old one is then refused.
    write_atomic(&token, "second-token\n");
    let rotated = e2e::poll(WAIT, EVERY, || {
        xdsctl(
            &["--admin-addr", &addr, "--token", "second-token", "status"],
            &[],
        )
        .status
        .success()
        .then_some(())
    });
    assert!(rotated.is_some(), "the new token was never accepted");
    xdsctl_fails_with(
        &["--admin-addr", &addr, "--token", "first-token", "status"],
        &[],
        "UNAUTHENTICATED: wrong bearer token",
    );
}

/// (g) Rotation: the server's certificate files are replaced (first with garbage, which is refused
/// and changes nothing, then with a certificate from another CA); new connections get the new
/// certificate within seconds, an established connection keeps working, and the server never
/// restarted.
#[test]
fn rotated_server_certificates_reach_new_connections_without_restart() {
    let pki = Pki::new();
    let mut mesh = Mesh::start_with_server_args(1, None, &pki.server_args(true));
    let addr = mesh.server.addr();
    let both = [&pki.ca, &pki.other_ca];
    let first = e2e::poll(WAIT, EVERY, || {
        presented_certificate(addr, &both, &pki.client_leaf).ok()
    })
    .expect("TLS handshake with the server");
    assert_eq!(first, pki.server_leaf.der, "the server presents --tls-cert");

    let rt = runtime();
    let ca = pki.ca.pem();
    let established = rt
        .block_on(channel(
            addr,
            &Client::Tls {
                ca: &ca,
                identity: Some(&pki.client_leaf),
            },
        ))
        .unwrap();
    rt.block_on(health_on(established.clone())).unwrap();

    // A half-written certificate: logged with the file's name, the old certificate stays.
    let pem = pki.server_leaf.cert_pem.clone();
    write_atomic(&pki.server.cert, &pem[..pem.len() / 2]);
    let needle = format!(
        "{}: the certificate chain is not valid PEM: truncated",
        pki.server.cert.display()
    );
    assert!(
        mesh.server.wait_for_log(&needle, WAIT),
        "no error naming the file"
    );
    assert_eq!(
        presented_certificate(addr, &both, &pki.client_leaf),
        Ok(first.clone())
    );

    // The new certificate, from the other CA.
    let next = pki.other_ca.server("xds-server-2", &[]);
    let written = std::time::Instant::now();
    next.write_to(&pki.server);
    let rotated = e2e::poll(WAIT, Duration::from_millis(20), || {
        presented_certificate(addr, &both, &pki.client_leaf)
            .ok()
            .filter(|der| *der == next.der)
    });
    println!(
        "rotation: files renamed → a new connection gets the new certificate in {} ms",
        written.elapsed().as_millis()
    );
    assert!(
        rotated.is_some(),
        "new connections never got the new certificate"
    );
    // A client trusting only the old CA now refuses the server; the established connection lives on.
    let err = presented_certificate(addr, &[&pki.ca], &pki.client_leaf).unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    rt.block_on(health_on(established))
        .expect("the established connection was dropped");
    assert!(mesh.server.is_running());
    assert_eq!(
        mesh.server
            .log_lines_with("started by the e2e harness")
            .len(),
        1
    );
    assert!(!mesh
        .server
        .log_lines_with("TLS certificate files reloaded")
        .is_empty());
}
