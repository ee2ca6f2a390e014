//! Workload identity with the real server binary, real Envoys and real mutual TLS: SDS hands a private
//! key only to the workload whose connection proves it (its client certificate's SPIFFE ID), a claim
//! in node metadata that disagrees is refused, a client that proves nothing gets no key, the server
//! refuses to start with secrets and no authentication, and workload certificates cannot use the
//! admin API. (The same rules per protocol — SDS and ADS, SotW and Delta, asking for another's name —
//! are in `xds-server/tests/sds.rs`, over real TLS too.)

use std::path::Path;
use std::time::Duration;

use e2e::envoy::{Envoy, EnvoyOptions, XdsTls};
use e2e::modes::XdsProtocol;
use e2e::pki::{Ca, Leaf, LeafFiles};
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;

e2e::both_protocols!(envoys_get_the_key_their_certificate_proves_and_nothing_else);

fn spiffe_id(name: &str) -> String {
    format!("spiffe://cluster.local/ns/bank/sa/{name}")
}

/// One mesh CA signing the xDS server's certificate, the workloads' and an operator's; secrets for
/// alpha and beta.
struct Scene {
    dir: TempDir,
    ca: Ca,
    ca_path: std::path::PathBuf,
    server: LeafFiles,
    secrets: std::path::PathBuf,
    alpha: Leaf,
    beta: Leaf,
}

impl Scene {
    fn new() -> Scene {
        let dir = TempDir::new("workload-identity");
        let ca = Ca::new("mesh-ca");
        let ca_path = dir.join("ca.crt");
        ca.write(&ca_path);
        let server = ca.server("xds-server", &[]).write(dir.path(), "server");
        let secrets = dir.join("secrets");
        let (alpha, beta) = (
            ca.workload("alpha", &spiffe_id("alpha")),
            ca.workload("beta", &spiffe_id("beta")),
        );
        for (name, leaf) in [("alpha", &alpha), ("beta", &beta)] {
            let id_dir = secrets.join(name);
            std::fs::create_dir_all(&id_dir).unwrap();
            leaf.write_to(&LeafFiles {
                cert: id_dir.join("tls.crt"),
                key: id_dir.join("tls.key"),
            });
        }
        ca.write(&secrets.join("ca.crt"));
        Scene {
            dir,
            ca,
            ca_path,
            server,
            secrets,
            alpha,
            beta,
        }
    }

    fn tls_args(&self) -> Vec<String> {
        [
            "--tls-cert",
            &self.server.cert.display().to_string(),
            "--tls-key",
            &self.server.key.display().to_string(),
            "--tls-client-ca",
            &self.ca_path.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    fn start(&self, extra: &[&str]) -> XdsServer {
        let endpoints = self.dir.join("endpoints.yaml");
        std::fs::write(&endpoints, "services: []\n").unwrap();
        let mut args = ServerArgs::new(&endpoints);
        args.extra = self.tls_args();
        args.extra
            .extend(["--secrets-dir".into(), self.secrets.display().to_string()]);
        args.extra.extend(extra.iter().map(|s| s.to_string()));
        XdsServer::start(args)
    }

    /// How an Envoy presenting `leaf` (written as `name`) connects to the xDS port.
    fn xds_tls(&self, leaf: &Leaf, name: &str) -> XdsTls {
        let files = leaf.write(self.dir.path(), name);
        XdsTls {
            cert: files.cert,
            key: files.key,
            ca: self.ca_path.clone(),
            server_name: "localhost".into(),
        }
    }
}

/// The URI SANs of the certificates SDS delivered to `envoy` (inline in `/certs`; the xDS
/// connection's own certificate is a file).
fn sds_certificate_ids(envoy: &Envoy) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&envoy.admin_get("/certs").unwrap()).unwrap();
    let mut ids: Vec<String> = json["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["path"].as_str() == Some("<inline>"))
        .flat_map(|c| {
            c["subject_alt_names"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|san| san["uri"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A sidecar with an inbound mTLS listener (so it asks SDS for `default` and `ROOTCA`).
fn sidecar(server: &XdsServer, node: &str, protocol: XdsProtocol) -> EnvoyOptions {
    EnvoyOptions::new(node, "us-east1", "us-east1-b", server.addr())
        .protocol(protocol)
        .metadata("inbound_port", &e2e::ports::free_port().to_string())
        .metadata("app_port", &e2e::ports::free_port().to_string())
}

fn envoys_get_the_key_their_certificate_proves_and_nothing_else(protocol: XdsProtocol) {
    let scene = Scene::new();
    let server = scene.start(&[]);

    // alpha proves alpha: gets alpha's workload certificate, never beta's.
    let alpha = Envoy::start(
        sidecar(&server, "alpha-sidecar", protocol)
            .xds_tls(scene.xds_tls(&scene.alpha, "xds-alpha")),
    );
    let got = e2e::poll(Duration::from_secs(20), Duration::from_millis(100), || {
        let ids = sds_certificate_ids(&alpha);
        (!ids.is_empty()).then_some(ids)
    });
    assert_eq!(
        got,
        Some(vec![spiffe_id("alpha")]),
        "alpha's SDS certificates; its log:\n{}",
        e2e::tail(&alpha.log(), 30)
    );

    // A certificate of the client CA with no SPIFFE ID (an operator's): connects, proves nothing,
    // gets the trust bundle but no key (its inbound listener keeps waiting for `default`).
    let operator = scene.ca.client("ops");
    let anonymous = Envoy::spawn(
        sidecar(&server, "anonymous-sidecar", protocol)
            .xds_tls(scene.xds_tls(&operator, "xds-ops")),
    );
    anonymous.verify_protocol();
    assert!(server.wait_for_log(
        "client certificate names no workload",
        Duration::from_secs(10)
    ));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sds_certificate_ids(&anonymous).is_empty(),
        "a client that proves nothing got a key"
    );
    assert!(
        !server.log().contains("PRIVATE KEY"),
        "key material in the server's log"
    );
    // `xdsctl status` says who proved what.
    let ops = scene.ca.client("ops").write(scene.dir.path(), "status-ops");
    let status = xdsctl_as(&server, &scene.ca_path, &ops).unwrap();
    let line = |node: &str| {
        status
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} not in:\n{status}"))
            .to_string()
    };
    assert!(
        line("alpha-sidecar").contains(&format!("{} (certificate)", spiffe_id("alpha"))),
        "{status}"
    );
    assert!(
        line("anonymous-sidecar").contains("none (no key)"),
        "{status}"
    );
    drop((alpha, anonymous));
}

/// An Envoy whose certificate proves alpha but whose node metadata claims beta is refused (the same
/// machine core serves SotW and Delta; both are covered per protocol in `xds-server/tests/sds.rs`).
#[test]
fn an_envoy_claiming_another_identity_is_refused() {
    let scene = Scene::new();
    let server = scene.start(&[]);
    let protocol = XdsProtocol::Sotw;
    // alpha's certificate, claiming beta in node metadata: refused, named in the log, gets nothing.
    let impostor = Envoy::spawn(
        sidecar(&server, "impostor-sidecar", protocol)
            .metadata("identity", "beta")
            .xds_tls(scene.xds_tls(&scene.alpha, "xds-impostor")),
    );
    assert!(
        server.wait_for_log(
            "claims \"beta\", but the connection proved",
            Duration::from_secs(20)
        ),
        "no refusal logged:\n{}",
        e2e::tail(&server.log(), 30)
    );
    assert!(
        server.log().contains(&spiffe_id("alpha")),
        "the refusal names the proven identity"
    );
    assert_eq!(impostor.cluster_names(), vec!["xds_cluster".to_string()]);
    assert!(sds_certificate_ids(&impostor).is_empty());

    assert!(
        !server
            .log()
            .contains(&format!("spiffe_id={}", spiffe_id("beta"))),
        "beta's identity was looked up for the impostor"
    );
    let _ = &scene.beta;
}

#[test]
fn secrets_without_client_authentication_refuse_to_start() {
    let scene = Scene::new();
    let endpoints = scene.dir.join("endpoints.yaml");
    std::fs::write(&endpoints, "services: []\n").unwrap();
    let secrets = scene.secrets.display().to_string();
    let endpoints = endpoints.display().to_string();
    // Plain text, and TLS without client certificates: both refused, in one line.
    let tls_only = [
        "--tls-cert",
        &scene.server.cert.display().to_string(),
        "--tls-key",
        &scene.server.key.display().to_string(),
    ]
    .map(String::from);
    for extra in [Vec::new(), tls_only.to_vec()] {
        let mut args = vec!["--endpoints", &endpoints, "--secrets-dir", &secrets];
        args.extend(extra.iter().map(String::as_str));
        let (status, log) = XdsServer::run_expecting_exit(&args, Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| !s.success()),
            "started anyway: {log}"
        );
        let line = log
            .lines()
            .find(|l| l.contains("serves workload private keys"))
            .unwrap_or_else(|| panic!("no refusal in: {log}"));
        assert!(
            line.contains("--tls-client-ca") && line.contains("--token-auth"),
            "{line}"
        );
    }
}

/// xdsctl `status` against `server`'s admin port presenting `client`; its output or error.
fn xdsctl_as(server: &XdsServer, ca: &Path, client: &LeafFiles) -> Result<String, String> {
    server.xdsctl_over_tls(ca, client, &["status"])
}

#[test]
fn workload_certificates_cannot_read_the_admin_api_unless_allowed() {
    let scene = Scene::new();
    let alpha = scene.alpha.write(scene.dir.path(), "admin-alpha");
    let operator = scene.ca.client("ops").write(scene.dir.path(), "ops");

    // Default: the client CA's certificates, except those naming a workload.
    let server = scene.start(&[]);
    let refused = xdsctl_as(&server, &scene.ca_path, &alpha).unwrap_err();
    assert!(
        refused.contains("PERMISSION_DENIED") || refused.contains("PermissionDenied"),
        "{refused}"
    );
    assert!(refused.contains(&spiffe_id("alpha")), "{refused}");
    xdsctl_as(&server, &scene.ca_path, &operator).expect("an operator certificate works");
    drop(server);

    // An allow-list: only the listed SPIFFE IDs.
    let allow = spiffe_id("alpha");
    let server = scene.start(&["--admin-allow-id", &allow]);
    xdsctl_as(&server, &scene.ca_path, &alpha).expect("the allowed workload works");
    let refused = xdsctl_as(&server, &scene.ca_path, &operator).unwrap_err();
    assert!(refused.contains("--admin-allow-id"), "{refused}");
    drop(server);

    // The admin port's own CA: workload certificates from the mesh CA fail the handshake.
    let admin_ca = Ca::new("admin-ca");
    let admin_ca_path = scene.dir.join("admin-ca.crt");
    admin_ca.write(&admin_ca_path);
    let admin_operator = admin_ca.client("ops").write(scene.dir.path(), "admin-ops");
    let server = scene.start(&["--admin-client-ca", &admin_ca_path.display().to_string()]);
    xdsctl_as(&server, &scene.ca_path, &admin_operator).expect("the admin CA's operator works");
    let refused = xdsctl_as(&server, &scene.ca_path, &alpha).unwrap_err();
    assert!(
        refused.contains("refused our client certificate"),
        "{refused}"
    );
}
