//! `--secrets-namespace`: SDS secrets from Kubernetes Secrets, read through the real kube client from
//! the test API server. `kubernetes.io/tls` Secrets become identities named after the Secret, the
//! `xds-trust-bundle` Secret's `ca.crt` is the trust bundle, other Secrets are ignored, and a bad or
//! half-rotated Secret keeps its last good version.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::kube_client::client;
use e2e::apiserver::ApiServer;
use e2e::pki::{Ca, Leaf};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use tokio::sync::watch;
use xds_server::sources::secrets::SecretSet;

const NS: &str = "mesh-certs";
const WAIT: Duration = Duration::from_secs(5);

fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        type_: Some(type_.to_string()),
        ..Secret::default()
    };
    s.metadata.name = Some(name.to_string());
    s.metadata.namespace = Some(NS.to_string());
    s
}

fn tls(name: &str, leaf: &Leaf, key_of: &Leaf) -> Secret {
    secret(
        name,
        "kubernetes.io/tls",
        &[("tls.crt", &leaf.cert_pem), ("tls.key", &key_of.key_pem)],
    )
}

/// A workload certificate for `name` (its SPIFFE ID `spiffe://cluster.local/ns/mesh/sa/NAME`).
fn workload(ca: &Ca, name: &str) -> Leaf {
    ca.workload(name, &format!("spiffe://cluster.local/ns/mesh/sa/{name}"))
}

async fn wait_for(
    rx: &mut watch::Receiver<Option<Arc<SecretSet>>>,
    what: &str,
    mut f: impl FnMut(&Arc<SecretSet>) -> bool,
) -> Arc<SecretSet> {
    let found = tokio::time::timeout(WAIT, rx.wait_for(|s| s.as_ref().is_some_and(&mut f)))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|set| set.clone());
    found.unwrap_or_else(|| {
        panic!(
            "{what}: not published within {WAIT:?}; have {:?}",
            rx.borrow()
        )
    })
}

#[tokio::test]
async fn tls_secrets_become_identities_rotate_and_bad_ones_keep_their_last_good_version() {
    let server = ApiServer::start();
    let client = client(&server).await;
    let api = Api::<Secret>::namespaced(client.clone(), NS);
    let ca = Ca::new("mesh-ca");
    let (web1, db1) = (workload(&ca, "web"), workload(&ca, "db"));
    let pp = PostParams::default();
    api.create(
        &pp,
        &secret("xds-trust-bundle", "Opaque", &[("ca.crt", &ca.pem())]),
    )
    .await
    .unwrap();
    api.create(&pp, &tls("web", &web1, &web1)).await.unwrap();
    api.create(&pp, &tls("db", &db1, &db1)).await.unwrap();
    // Not an identity: another type.
    api.create(&pp, &secret("config", "Opaque", &[("tls.crt", "x")]))
        .await
        .unwrap();
    // A certificate with someone else's key: refused, and it has no last good version.
    api.create(&pp, &tls("broken", &web1, &db1)).await.unwrap();

    let (tx, mut rx) = watch::channel(None);
    let task = tokio::spawn(xds_server::sources::secrets::kube::run(
        client,
        NS.to_string(),
        tx,
    ));
    let set = wait_for(&mut rx, "first list", |s| !s.identities.is_empty()).await;
    assert_eq!(
        set.identities.keys().collect::<Vec<_>>(),
        vec!["db", "web"],
        "tls Secrets only, the broken one refused"
    );
    assert_eq!(set.trust_bundle.as_deref(), Some(ca.pem().as_bytes()));
    assert_eq!(set.identities["web"].cert_chain, web1.cert_pem.as_bytes());

    // Rotation of web.
    let web2 = workload(&ca, "web");
    let mut current = api.get("web").await.unwrap();
    current.data = tls("web", &web2, &web2).data;
    api.replace("web", &pp, &current).await.unwrap();
    wait_for(&mut rx, "web rotated", |s| {
        s.identities["web"].cert_chain == web2.cert_pem.as_bytes()
    })
    .await;

    // Half a rotation (new certificate, old key): db keeps its certificate; web's later change
    // still flows.
    let db2 = workload(&ca, "db");
    let mut current = api.get("db").await.unwrap();
    current.data = tls("db", &db2, &db1).data;
    api.replace("db", &pp, &current).await.unwrap();
    let web3 = workload(&ca, "web");
    let mut current = api.get("web").await.unwrap();
    current.data = tls("web", &web3, &web3).data;
    api.replace("web", &pp, &current).await.unwrap();
    let set = wait_for(&mut rx, "web rotated again", |s| {
        s.identities["web"].cert_chain == web3.cert_pem.as_bytes()
    })
    .await;
    assert_eq!(set.identities["db"].cert_chain, db1.cert_pem.as_bytes());

    // A deleted Secret removes its identity.
    api.delete("db", &DeleteParams::default()).await.unwrap();
    wait_for(&mut rx, "db removed", |s| !s.identities.contains_key("db")).await;
    task.abort();
}

#[tokio::test]
async fn an_empty_namespace_counts_as_listed_and_two_secrets_for_one_workload_are_both_refused() {
    let server = ApiServer::start();
    let client = client(&server).await;
    let (tx, mut rx) = watch::channel(None);
    let task = tokio::spawn(xds_server::sources::secrets::kube::run(
        client.clone(),
        NS.to_string(),
        tx,
    ));
    // Listed, nothing there: published (so serving can start), empty.
    let set = wait_for(&mut rx, "first list", |_| true).await;
    assert!(set.identities.is_empty() && set.trust_bundle.is_none());

    let api = Api::<Secret>::namespaced(client, NS);
    let pp = PostParams::default();
    let ca = Ca::new("mesh-ca");
    let web = workload(&ca, "web");
    api.create(&pp, &tls("web", &web, &web)).await.unwrap();
    wait_for(&mut rx, "web", |s| s.identities.contains_key("web")).await;
    // Another Secret whose certificate names web too: which is web's cannot be told, so neither.
    let copy = workload(&ca, "web");
    api.create(&pp, &tls("web-copy", &copy, &copy))
        .await
        .unwrap();
    wait_for(&mut rx, "both refused", |s| s.identities.is_empty()).await;
    // Deleting the copy gives web back.
    api.delete("web-copy", &DeleteParams::default())
        .await
        .unwrap();
    let set = wait_for(&mut rx, "web again", |s| s.identities.contains_key("web")).await;
    assert_eq!(set.identities["web"].cert_chain, web.cert_pem.as_bytes());
    task.abort();
}

/// Secrets gate serving: with `--secrets-namespace`, the real server publishes nothing (readiness stays
/// 503, an Envoy gets no cluster) while the Secrets cannot be listed (the API server refuses them, as
/// without RBAC), and serves as soon as they can.
#[test]
fn nothing_is_served_before_the_secrets_are_listed() {
    use e2e::envoy::{Envoy, EnvoyOptions, XdsTls};
    use e2e::server::{ServerArgs, XdsServer};
    let server = ApiServer::start();
    let dir = e2e::tmp::TempDir::new("secrets-gate");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    server.fail_requests("secrets", 403);

    let ca = Ca::new("mesh-ca");
    let ca_path = dir.join("ca.crt");
    ca.write(&ca_path);
    let tls = ca.server("xds-server", &[]).write(dir.path(), "server");
    let mut args = ServerArgs::kubernetes(&kubeconfig);
    args.extra = [
        "--secrets-namespace",
        NS,
        "--tls-cert",
        &tls.cert.display().to_string(),
        "--tls-key",
        &tls.key.display().to_string(),
        "--tls-client-ca",
        &ca_path.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let xds = XdsServer::start(args);
    let readyz = || {
        e2e::http::get(xds.metrics_addr(), "localhost", "/readyz", WAIT)
            .map(|r| r.status)
            .unwrap_or(0)
    };
    let client = workload(&ca, "web").write(dir.path(), "web");
    let envoy = Envoy::spawn(
        EnvoyOptions::new("gated-sidecar", "us-east1", "us-east1-b", xds.addr()).xds_tls(XdsTls {
            cert: client.cert,
            key: client.key,
            ca: ca_path.clone(),
            server_name: "localhost".into(),
        }),
    );
    // Everything else is listed at once; the Secrets are not.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(readyz(), 503, "ready before the Secrets were listed");
    assert_eq!(envoy.cluster_names(), vec!["xds_cluster".to_string()]);
    assert!(
        !xds.log().contains("publishing new snapshot"),
        "a snapshot was published before the Secrets were listed"
    );

    server.clear_failures();
    let t0 = std::time::Instant::now();
    let ready = e2e::poll(Duration::from_secs(30), Duration::from_millis(100), || {
        (readyz() == 200).then_some(())
    });
    assert!(
        ready.is_some(),
        "never ready after the Secrets could be listed"
    );
    println!("ready {:?} after the Secrets could be listed", t0.elapsed());
    assert!(xds.log().contains("publishing new snapshot"));
}
