//! mTLS between sidecars with certificates served by us over SDS: two Envoys talk mTLS, a rotated
//! certificate is picked up without a restart, and a peer whose certificate comes from another CA is
//! refused.
//!
//! CA1 signs the identities `client` and `server`, CA2 signs `rogue`; the trust bundle is CA1. Envoy B
//! (identity `server`) terminates mTLS on its inbound port and forwards to a backend; Envoy A
//! (identity `client`) and Envoy C (identity `rogue`) reach the service `api.mtls` (policy
//! `mtls: STRICT`) whose only endpoint is B's inbound port. Each Envoy proves its identity to the xDS
//! server with a certificate of its own SPIFFE ID (the xDS port trusts both CAs), and is served the
//! workload certificate that names that ID.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions, XdsTls};
use e2e::modes::XdsProtocol;
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::traffic;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SerialNumber,
};

e2e::both_protocols!(sidecars_talk_mtls_rotate_and_refuse_a_foreign_ca);

const HOST: &str = "api.mtls";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate, key) PEM: `identity`'s workload certificate (URI SAN [`spiffe_id`]) with `serial`.
    fn leaf(&self, identity: &str, serial: &[u8]) -> (String, String) {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(spiffe_id(identity).try_into().unwrap())];
        params.distinguished_name.push(DnType::CommonName, identity);
        params.serial_number = Some(SerialNumber::from_slice(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `dir/identity/tls.crt` and `tls.key` (each atomically) for a certificate with `serial`.
    fn issue(&self, dir: &Path, identity: &str, serial: &[u8]) {
        let (cert, key) = self.leaf(identity, serial);
        let id_dir = dir.join(identity);
        std::fs::create_dir_all(&id_dir).unwrap();
        write_atomic(&id_dir.join("tls.key"), &key);
        write_atomic(&id_dir.join("tls.crt"), &cert);
    }

    /// The certificate `identity`'s Envoy shows the xDS server (serial 99…, so [`own_serials`] can
    /// tell it from the SDS ones), written to `dir/xds-IDENTITY.{crt,key}`.
    fn xds_client(&self, dir: &Path, identity: &str, ca: &Path) -> XdsTls {
        let (cert, key) = self.leaf(identity, &[0x99, identity.len() as u8]);
        let (cert_path, key_path) = (
            dir.join(format!("xds-{identity}.crt")),
            dir.join(format!("xds-{identity}.key")),
        );
        write_atomic(&cert_path, &cert);
        write_atomic(&key_path, &key);
        XdsTls {
            cert: cert_path,
            key: key_path,
            ca: ca.to_path_buf(),
            server_name: "localhost".into(),
        }
    }
}

fn spiffe_id(identity: &str) -> String {
    format!("spiffe://cluster.local/ns/mtls/sa/{identity}")
}

fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The serial numbers of the certificates Envoy's admin `/certs` shows (its own, not CAs), lowercase,
/// once each (every TLS context lists the certificate it uses).
fn own_serials(envoy: &Envoy) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&envoy.admin_get("/certs").unwrap()).unwrap();
    json["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_ascii_lowercase))
        // The xDS connection's own client certificate: not one SDS served.
        .filter(|serial| !serial.starts_with("99"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The sum of B's inbound listener stats whose name ends with one of `suffixes`.
fn inbound_stat(envoy: &Envoy, port: u16, suffixes: &[&str]) -> u64 {
    envoy
        .stats(&format!("listener\\..*_{port}\\.ssl\\."))
        .iter()
        .filter(|(k, _)| suffixes.iter().any(|s| k.ends_with(s)))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

fn sidecars_talk_mtls_rotate_and_refuse_a_foreign_ca(protocol: XdsProtocol) {
    let dir = TempDir::new("mtls");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let (ca1, ca2) = (Ca::new("ca1"), Ca::new("ca2"));
    write_atomic(&secrets.join("ca.crt"), &ca1.pem);
    ca1.issue(&secrets, "client", &[0x11, 0x01]);
    ca1.issue(&secrets, "server", &[0x22, 0x01]);
    ca2.issue(&secrets, "rogue", &[0x33, 0x01]);

    let app = Backend::start("app", "hello from the server's app");
    let inbound_port = e2e::ports::free_port();
    let endpoints = dir.join("endpoints.yaml");
    std::fs::write(
        &endpoints,
        format!(
            "services:\n- name: api\n  namespace: mtls\n  ports: [{{name: http, port: 8080}}]\n  \
             endpoints:\n  - address: 127.0.0.1\n    port: {inbound_port}\n    \
             locality: {{region: us-east1, zone: us-east1-b}}\n"
        ),
    )
    .unwrap();
    let policies = dir.join("policy.yaml");
    std::fs::write(
        &policies,
        "kind: FailoverPolicy\nmetadata: {name: api, namespace: mtls}\nspec:\n  service: api\n  mtls: STRICT\n",
    )
    .unwrap();
    // The xDS port: TLS with a server certificate of CA1, client certificates of CA1 or CA2.
    let pki = e2e::pki::Ca::new("xds-server-ca");
    let server_files = pki.server("xds-server", &[]).write(dir.path(), "server");
    let server_ca = dir.join("server-ca.crt");
    pki.write(&server_ca);
    let client_cas = dir.join("client-cas.crt");
    write_atomic(&client_cas, &format!("{}{}", ca1.pem, ca2.pem));
    let mut args = ServerArgs::new(&endpoints).policies(&policies);
    args.extra = vec![
        "--secrets-dir".into(),
        secrets.display().to_string(),
        "--tls-cert".into(),
        server_files.cert.display().to_string(),
        "--tls-key".into(),
        server_files.key.display().to_string(),
        "--tls-client-ca".into(),
        client_cas.display().to_string(),
    ];
    let server = XdsServer::start(args);

    let envoy = |node: &str, identity: &str| {
        let ca = if identity == "rogue" { &ca2 } else { &ca1 };
        EnvoyOptions::new(node, "us-east1", "us-east1-b", server.addr())
            .metadata("identity", identity)
            .protocol(protocol)
            .xds_tls(ca.xds_client(dir.path(), identity, &server_ca))
    };
    let b = Envoy::start(
        envoy("sidecar-b", "server")
            .metadata("inbound_port", &inbound_port.to_string())
            .metadata("app_port", &app.port().to_string()),
    );
    // The inbound listener warms until its secrets arrive over SDS.
    assert!(
        e2e::poll(Duration::from_secs(20), Duration::from_millis(50), || {
            e2e::ports::is_listening(inbound_port).then_some(())
        })
        .is_some(),
        "B's inbound mTLS listener never opened; B's log:\n{}",
        e2e::tail(&b.log(), 40)
    );
    let a = Envoy::start(envoy("sidecar-a", "client"));

    // (a) A → B over mTLS reaches B's app.
    assert!(
        a.wait_serving(HOST, Duration::from_secs(20)),
        "A never got an answer through B; A's log:\n{}",
        e2e::tail(&a.log(), 40)
    );
    let before = app.requests();
    let t = traffic::send(a.listener_addr(), HOST, 10, Duration::from_millis(10));
    assert!(t.all("hello from the server's app"), "{t}");
    assert!(
        app.requests() >= before + 10,
        "B's app did not see A's requests"
    );
    assert!(
        inbound_stat(&b, inbound_port, &["ssl.handshake"]) >= 10,
        "B's inbound listener completed no TLS handshakes: {:?}",
        b.stats("ssl")
    );
    assert!(
        a.stat_u64("cluster.api.mtls:8080.ssl.handshake")
            .unwrap_or(0)
            >= 10,
        "A's cluster did no TLS handshakes"
    );
    // Plaintext to B's inbound port is refused.
    let plain = traffic::request(([127, 0, 0, 1], inbound_port).into(), HOST);
    assert!(
        plain.is_err(),
        "plaintext to the mTLS port answered: {plain:?}"
    );
    assert_eq!(own_serials(&a), vec!["1101".to_string()]);

    // (b) Rotation: a new certificate for `client` reaches A without a restart, traffic keeps working.
    let t0 = Instant::now();
    ca1.issue(&secrets, "client", &[0x11, 0x02]);
    let rotated = e2e::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (own_serials(&a) == vec!["1102".to_string()]).then(|| t0.elapsed())
    });
    println!("{protocol}: rotated certificate in A's /certs after {rotated:?}");
    assert!(
        rotated.is_some(),
        "A still shows {:?} after rotation",
        own_serials(&a)
    );
    let t = traffic::send(a.listener_addr(), HOST, 10, Duration::from_millis(10));
    assert!(t.all("hello from the server's app"), "after rotation: {t}");
    // Only A's identity rotated: B still has its own certificate.
    assert_eq!(own_serials(&b), vec!["2201".to_string()]);

    // (c) A peer with a certificate from CA2 is refused by B; A keeps working.
    let refused_before = inbound_stat(
        &b,
        inbound_port,
        &[
            "ssl.fail_verify_error",
            "ssl.connection_error",
            "ssl.fail_verify_no_cert",
        ],
    );
    let c = Envoy::start(envoy("sidecar-c", "rogue"));
    assert!(
        e2e::poll(Duration::from_secs(10), Duration::from_millis(50), || {
            (own_serials(&c) == vec!["3301".to_string()]).then_some(())
        })
        .is_some(),
        "C never got its (rogue) certificate"
    );
    let t = traffic::send(c.listener_addr(), HOST, 5, Duration::from_millis(20));
    assert_eq!(t.failures, 5, "C's requests must all fail: {t}");
    let refused = inbound_stat(
        &b,
        inbound_port,
        &[
            "ssl.fail_verify_error",
            "ssl.connection_error",
            "ssl.fail_verify_no_cert",
        ],
    );
    assert!(
        refused > refused_before,
        "B did not count refused handshakes: {:?}",
        b.stats("ssl")
    );
    let t = traffic::send(a.listener_addr(), HOST, 5, Duration::from_millis(10));
    assert!(t.all("hello from the server's app"), "A after C: {t}");
    assert!(
        !server.log().contains("PRIVATE KEY"),
        "key material in the server's log"
    );
}
