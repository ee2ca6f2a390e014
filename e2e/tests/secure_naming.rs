//! Secure naming with real Envoys: a client reaching an `mtls: STRICT` service accepts only a server
//! whose certificate carries one of that service's identities, not any certificate of the trust
//! bundle; a service with no identity known still accepts any (and `xdsctl services` says so).
//!
//! One CA signs every workload certificate (`Ca::workload`: one SPIFFE URI SAN). The secrets
//! directory holds the trust bundle and the certificates of `teller` (the client), `ledger` (the
//! real ledger backend) and `web` (an impostor: a valid certificate, of another service). Each Envoy
//! proves its identity to the xDS port with its own workload certificate (`--tls-client-ca`), so
//! SDS serves it the key of that identity. Endpoints file: `bank/ledger` (identity
//! `spiffe://cluster.local/ns/bank/sa/ledger`) and `bank/audit` (no identity), both under
//! `mtls: STRICT`, both first pointing at the impostor's inbound port.

use std::path::Path;
use std::time::Duration;

use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions, XdsTls};
use e2e::modes::XdsProtocol;
use e2e::pki::{write_atomic, Ca, LeafFiles};
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::traffic;

e2e::both_protocols!(a_backend_with_another_services_certificate_is_refused);

const LEDGER_ID: &str = "spiffe://cluster.local/ns/bank/sa/ledger";
const IMPOSTOR_ID: &str = "spiffe://cluster.local/ns/bank/sa/web";
const TELLER_ID: &str = "spiffe://cluster.local/ns/bank/sa/teller";
const LEDGER: &str = "ledger.bank";
const AUDIT: &str = "audit.bank";
const LEDGER_CLUSTER: &str = "ledger.bank:8080";
const WAIT: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(50);

/// `ledger` (with its identity) and `audit` (without), each with one endpoint on 127.0.0.1.
fn endpoints_file(ledger_port: u16, audit_port: u16) -> String {
    format!(
        "services:\n\
         - name: ledger\n  namespace: bank\n  identity: {LEDGER_ID}\n  \
           ports: [{{name: http, port: 8080}}]\n  \
           endpoints: [{{address: 127.0.0.1, port: {ledger_port}}}]\n\
         - name: audit\n  namespace: bank\n  ports: [{{name: http, port: 8080}}]\n  \
           endpoints: [{{address: 127.0.0.1, port: {audit_port}}}]\n"
    )
}

/// Writes `name`'s workload certificate (SPIFFE ID `id`) into `secrets/NAME/`, and returns the same
/// certificate as the one its Envoy presents to the xDS port.
fn workload(ca: &Ca, secrets: &Path, server_ca: &Path, name: &str, id: &str) -> XdsTls {
    let leaf = ca.workload(name, id);
    let dir = secrets.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_atomic(&dir.join("tls.key"), &leaf.key_pem);
    write_atomic(&dir.join("tls.crt"), &leaf.cert_pem);
    let xds = leaf.write(secrets.parent().unwrap(), &format!("xds-{name}"));
    XdsTls {
        cert: xds.cert,
        key: xds.key,
        ca: server_ca.to_path_buf(),
        server_name: "localhost".into(),
    }
}

/// `xdsctl ARGS` over mutual TLS to the admin port, as an operator (a client certificate of the
/// `--admin-client-ca`: workload certificates are refused there). Its standard output.
fn xdsctl(server: &XdsServer, ca: &Path, operator: &LeafFiles, args: &[&str]) -> String {
    server
        .xdsctl_over_tls(ca, operator, args)
        .unwrap_or_else(|error| panic!("xdsctl {args:?} failed: {error}"))
}

fn a_backend_with_another_services_certificate_is_refused(protocol: XdsProtocol) {
    let dir = TempDir::new("secure-naming");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let ca = Ca::new("mesh CA");
    ca.write(&secrets.join("ca.crt"));
    let server_ca = dir.join("xds-ca.crt");
    ca.write(&server_ca);
    let server_tls = ca.server("xds-server", &[]).write(dir.path(), "xds-server");
    let operators = Ca::new("operators");
    let operators_ca = dir.join("operators-ca.crt");
    operators.write(&operators_ca);
    let operator = operators.client("operator").write(dir.path(), "operator");
    let teller_tls = workload(&ca, &secrets, &server_ca, "teller", TELLER_ID);
    let ledger_tls = workload(&ca, &secrets, &server_ca, "ledger", LEDGER_ID);
    let impostor_tls = workload(&ca, &secrets, &server_ca, "web", IMPOSTOR_ID);

    let ledger_app = Backend::start("ledger", "ledger");
    let impostor_app = Backend::start("impostor", "impostor");
    let (ledger_port, impostor_port) = (e2e::ports::free_port(), e2e::ports::free_port());
    let endpoints = dir.join("endpoints.yaml");
    write_atomic(&endpoints, &endpoints_file(impostor_port, impostor_port));
    let policies = dir.join("policy.yaml");
    std::fs::write(
        &policies,
        "kind: FailoverPolicy\nmetadata: {name: bank, namespace: bank}\nspec: {mtls: STRICT}\n",
    )
    .unwrap();
    let mut args = ServerArgs::new(&endpoints).policies(&policies);
    args.extra = [
        "--secrets-dir",
        &secrets.display().to_string(),
        "--tls-cert",
        &server_tls.cert.display().to_string(),
        "--tls-key",
        &server_tls.key.display().to_string(),
        "--tls-client-ca",
        &server_ca.display().to_string(),
        "--admin-client-ca",
        &operators_ca.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    let server = XdsServer::start(args);

    let envoy = |node: &str, tls: &XdsTls| {
        EnvoyOptions::new(node, "us-east1", "us-east1-b", server.addr())
            .namespace("bank")
            .protocol(protocol)
            .xds_tls(tls.clone())
    };
    let sidecar = |node: &str, tls: &XdsTls, inbound: u16, app: &Backend| {
        let e = Envoy::start(
            envoy(node, tls)
                .metadata("inbound_port", &inbound.to_string())
                .metadata("app_port", &app.port().to_string()),
        );
        assert!(
            e2e::poll(WAIT, EVERY, || e2e::ports::is_listening(inbound)
                .then_some(()))
            .is_some(),
            "{node}'s inbound mTLS listener never opened; its log:\n{}",
            e2e::tail(&e.log(), 40)
        );
        e
    };
    let _impostor = sidecar("impostor", &impostor_tls, impostor_port, &impostor_app);
    let _ledger = sidecar("ledger", &ledger_tls, ledger_port, &ledger_app);
    let teller = Envoy::start(envoy("teller", &teller_tls));

    // A service without an identity: any certificate of the trust bundle, today's behaviour.
    assert!(
        teller.wait_serving(AUDIT, WAIT),
        "audit (no identity) was never served; teller's log:\n{}",
        e2e::tail(&teller.log(), 40)
    );
    let t = traffic::send(teller.listener_addr(), AUDIT, 5, Duration::from_millis(10));
    assert!(t.all("impostor"), "audit accepts the web certificate: {t}");

    // ledger's endpoint presents web's certificate: valid, same CA, wrong name. Refused.
    let impostor_seen = impostor_app.requests();
    let t = traffic::send(teller.listener_addr(), LEDGER, 5, Duration::from_millis(20));
    assert_eq!(t.failures, 5, "requests to the impostor must all fail: {t}");
    let san_failures = || {
        teller
            .stat_u64(&format!("cluster.{LEDGER_CLUSTER}.ssl.fail_verify_san"))
            .unwrap_or(0)
    };
    assert!(
        san_failures() > 0,
        "the refusal must be the SAN check: {:?}",
        teller.stats(&format!("cluster\\.{LEDGER_CLUSTER}\\.ssl"))
    );
    assert_eq!(
        impostor_app.requests(),
        impostor_seen,
        "a ledger request reached the impostor's app"
    );

    // What an operator sees: ledger pinned, audit not.
    let json = xdsctl(&server, &server_ca, &operator, &["services", "-o", "json"]);
    let services: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mtls_of = |name: &str| {
        let s = services["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {services}"));
        (
            s["identities"].clone(),
            s["ports"][0]["peer_identities"].clone(),
        )
    };
    assert_eq!(
        mtls_of("ledger"),
        (
            serde_json::json!([LEDGER_ID]),
            serde_json::json!([LEDGER_ID])
        )
    );
    assert_eq!(
        mtls_of("audit"),
        (serde_json::json!([]), serde_json::json!([]))
    );
    let table = xdsctl(&server, &server_ca, &operator, &["services"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bank/audit") && l.ends_with("any (trust bundle)")),
        "{table}"
    );

    // The real ledger behind the same service: accepted. Only the endpoint moved, so the cluster
    // (with its identities) is not re-created.
    let modified = || {
        teller
            .stat_u64("cluster_manager.cluster_modified")
            .unwrap_or(0)
    };
    let modified_before = modified();
    write_atomic(&endpoints, &endpoints_file(ledger_port, impostor_port));
    let switched = traffic::until_served_by(
        teller.listener_addr(),
        LEDGER,
        "ledger",
        std::time::Instant::now(),
        Duration::from_millis(50),
        WAIT,
        10,
    );
    assert!(
        switched.switched(),
        "ledger never served: {}",
        switched.tally
    );
    assert!(
        switched.after.all("ledger"),
        "after the switch: {}",
        switched.after
    );
    assert_eq!(
        modified(),
        modified_before,
        "an endpoint change re-created the cluster"
    );
    assert!(
        !server.log().contains("PRIVATE KEY"),
        "key material in the server's log"
    );
}
