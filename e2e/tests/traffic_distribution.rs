//! Kubernetes `Service.spec.trafficDistribution` end to end: the in-repo test API server is watched by
//! a real `xds-server --source kubernetes` through the real kube client, one real Envoy reports the
//! priorities it was given, and the real `xdsctl` says where the policy came from.
//!
//! The scene: Service `echo.demo` with `trafficDistribution: PreferSameZone`, one backend per zone
//! (us-east1-b, us-east1-c, us-west1-a; each its own EndpointSlice on a Node labelled with region and
//! zone), and a namespace default FailoverPolicy ranking by region only. The client Envoy is in
//! us-east1-b.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::apiserver::{ApiServer, KindInfo};
use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions, XdsProtocol};
use e2e::k8s::{self, endpoint, endpoint_slice, failover_policy, node_name, service, POLICY_API};
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::topology::{CLUSTER, EAST_B, EAST_C, HOST, NAMESPACE, SERVICE, WEST_A};
use serde_json::{json, Value};

const PROPAGATION: Duration = Duration::from_secs(10);

/// (port, priority) of every host of the cluster, sorted by port.
fn levels(envoy: &Envoy) -> Vec<(u16, u32)> {
    let mut v: Vec<(u16, u32)> = envoy
        .hosts(CLUSTER)
        .into_iter()
        .map(|h| (h.port, h.priority))
        .collect();
    v.sort();
    v
}

fn wait_levels(envoy: &Envoy, want: &[(u16, u32)], what: &str) {
    let t0 = Instant::now();
    let mut want = want.to_vec();
    want.sort();
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(20), || {
        (levels(envoy) == want).then(|| t0.elapsed())
    });
    match seen {
        Some(d) => println!("{what}: in Envoy after {} ms", d.as_millis()),
        None => panic!(
            "{what}: Envoy's levels did not become {want:?} within {PROPAGATION:?}; they are {:?}",
            levels(envoy)
        ),
    }
}

/// The policy `xdsctl explain` names for the service's port, for the client `node`.
fn explained_policy(server: &XdsServer, node: &str) -> String {
    let text = server.xdsctl(&["explain", HOST, "--node", node, "-o", "json"]);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    json["explanations"][0]["policy"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_explained(server: &XdsServer, node: &str, want: &str) {
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(50), || {
        (explained_policy(server, node) == want).then_some(())
    });
    assert!(
        seen.is_some(),
        "xdsctl explain names policy {:?}, not {want:?}",
        explained_policy(server, node)
    );
}

#[test]
fn prefer_same_zone_ranks_zone_first_over_a_namespace_default_until_a_service_policy_names_it() {
    e2e::modes::run(XdsProtocol::Sotw, scenario);
}

fn scenario(protocol: XdsProtocol) {
    let api = ApiServer::start();
    api.register_kind(KindInfo::failover_policy());
    let mut backends = Vec::new();
    for zone in [EAST_B, EAST_C, WEST_A] {
        let node = node_name(zone);
        api.apply(k8s::node(&node, zone.region, zone.zone));
        let backend = Backend::start(zone.zone, zone.zone);
        api.apply(endpoint_slice(
            &format!("{SERVICE}-{}", zone.zone),
            backend.port(),
            vec![endpoint(&node, true)],
        ));
        backends.push(backend);
    }
    let (pb, pc, pw) = (backends[0].port(), backends[1].port(), backends[2].port());
    api.apply(service(Some("PreferSameZone")));
    // The namespace default ranks by region only: both us-east1 zones would share P0.
    api.apply(failover_policy(
        "defaults",
        json!({"failoverPriority": ["topology.kubernetes.io/region"]}),
    ));
    let dir = TempDir::new("traffic-distribution");
    let kubeconfig: PathBuf = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let server = XdsServer::start(ServerArgs::kubernetes(&kubeconfig));
    let node = "client-east-b";
    let envoy = Envoy::start(
        EnvoyOptions::new(node, EAST_B.region, EAST_B.zone, server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol),
    );
    assert!(envoy.wait_serving(HOST, Duration::from_secs(20)));

    // The Service's own wish wins over the namespace default: same zone, then same region, then
    // the rest.
    wait_levels(
        &envoy,
        &[(pb, 0), (pc, 1), (pw, 2)],
        "trafficDistribution PreferSameZone",
    );
    let by_distribution = "Service demo/echo spec.trafficDistribution=PreferSameZone \
                           (over namespace default demo/defaults)";
    wait_explained(&server, node, by_distribution);
    let policies = server.xdsctl(&["policies"]);
    println!("{policies}");
    assert!(
        policies.contains("demo/echo:8080 (http)   Service demo/echo spec.trafficDistribution"),
        "{policies}"
    );
    assert!(
        policies.contains("demo/echo:8080 (trafficDistribution=PreferSameZone)"),
        "{policies}"
    );
    let services = server.xdsctl(&["services"]);
    assert!(services.contains(by_distribution), "{services}");

    // A policy naming the service wins over the Service's trafficDistribution.
    api.apply(failover_policy(
        "echo",
        json!({"service": SERVICE, "failoverPriority": ["topology.kubernetes.io/region"]}),
    ));
    wait_levels(
        &envoy,
        &[(pb, 0), (pc, 0), (pw, 1)],
        "service policy over trafficDistribution",
    );
    wait_explained(&server, node, "kubernetes:demo/echo");

    // Without it, the distribution applies again; without the distribution, the namespace default.
    api.delete(POLICY_API, "FailoverPolicy", Some(NAMESPACE), "echo");
    wait_levels(
        &envoy,
        &[(pb, 0), (pc, 1), (pw, 2)],
        "service policy deleted",
    );
    api.apply(service(None));
    wait_levels(
        &envoy,
        &[(pb, 0), (pc, 0), (pw, 1)],
        "trafficDistribution removed",
    );
    wait_explained(&server, node, "kubernetes:demo/defaults");

    // An unknown value is ignored with a warning naming the service and the value.
    api.apply(service(Some("PreferSomewhereNew")));
    assert!(
        server.wait_for_log("PreferSomewhereNew", PROPAGATION),
        "no warning about the unknown value"
    );
    let warned = server.log_lines_with("PreferSomewhereNew");
    assert!(
        warned.iter().any(|l| l.contains("Service demo/echo")),
        "{warned:?}"
    );
    assert_eq!(levels(&envoy), [(pb, 0), (pc, 0), (pw, 1)]);
}

#[test]
fn prefer_same_node_ranks_a_pod_located_clients_node_first() {
    e2e::modes::run(XdsProtocol::Sotw, same_node);
}

/// Two Nodes in us-east1-b and one in us-east1-c, a backend on each; the Service prefers the same
/// node. A client located through its Pod (on the second us-east1-b Node) knows its node; a client
/// with `node.locality` only does not, and gets the zone order.
fn same_node(protocol: XdsProtocol) {
    let api = ApiServer::start();
    api.register_kind(KindInfo::failover_policy());
    let mut ports = Vec::new();
    let mut backends = Vec::new();
    for (node, zone) in [("node-b1", EAST_B), ("node-b2", EAST_B), ("node-c", EAST_C)] {
        api.apply(k8s::node(node, zone.region, zone.zone));
        let backend = Backend::start(node, node);
        api.apply(endpoint_slice(
            &format!("{SERVICE}-{node}"),
            backend.port(),
            vec![endpoint(node, true)],
        ));
        ports.push(backend.port());
        backends.push(backend);
    }
    let (b1, b2, c) = (ports[0], ports[1], ports[2]);
    api.apply(service(Some("PreferSameNode")));
    api.apply(k8s::pod("client-0", "node-b2", "10.244.1.7"));
    let dir = TempDir::new("traffic-distribution-node");
    let kubeconfig: PathBuf = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let server = XdsServer::start(ServerArgs::kubernetes(&kubeconfig));

    let by_pod = Envoy::start(
        EnvoyOptions::without_locality("client-by-pod", server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol)
            .metadata("pod_name", "client-0"),
    );
    assert!(by_pod.wait_serving(HOST, Duration::from_secs(20)));
    wait_levels(
        &by_pod,
        &[(b2, 0), (b1, 1), (c, 2)],
        "PreferSameNode, client on node-b2",
    );
    wait_explained(
        &server,
        "client-by-pod",
        "Service demo/echo spec.trafficDistribution=PreferSameNode (over built-in default)",
    );

    let by_locality = Envoy::start(
        EnvoyOptions::new("client-b", EAST_B.region, EAST_B.zone, server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol),
    );
    assert!(by_locality.wait_serving(HOST, Duration::from_secs(20)));
    wait_levels(
        &by_locality,
        &[(b1, 0), (b2, 0), (c, 1)],
        "PreferSameNode, client without a node",
    );
}
