//! Kubernetes objects, as the JSON the test API server ([`crate::apiserver::ApiServer::apply`]) takes,
//! for the Kubernetes scene of the standard topology: the Service `echo.demo` ([`SERVICE`] in
//! [`NAMESPACE`], port `http` 8080), one Node per zone labelled with its region and zone, backends as
//! EndpointSlices whose endpoints name their Node (so their locality comes from the Node's labels),
//! client Pods, and FailoverPolicy custom resources.
//!
//! Each builder makes one kind in one way; a test that needs a variant (a missing field, a malformed
//! value) edits the returned JSON.

use serde_json::{json, Value};

use crate::topology::{Zone, NAMESPACE, SERVICE};

/// The Node label holding the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The Node label holding the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The EndpointSlice label naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `apiVersion` of the FailoverPolicy custom resource.
pub const POLICY_API: &str = "failover.xds.dev/v1alpha1";

/// `node-<zone>`: the name of the Node the tests give each zone.
pub fn node_name(zone: Zone) -> String {
    format!("node-{}", zone.zone)
}

/// A Node as a kubelet registers it: labelled with its `region`, `zone` and hostname (its name), a
/// pod CIDR, and Ready.
pub fn node(name: &str, region: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            REGION_LABEL: region,
            ZONE_LABEL: zone,
            "kubernetes.io/hostname": name,
        }},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// The Service `echo.demo`: ClusterIP, port `http` 8080 (target port 8080, TCP), with
/// `spec.trafficDistribution` set to `traffic_distribution` if given.
pub fn service(traffic_distribution: Option<&str>) -> Value {
    let mut spec = json!({"type": "ClusterIP", "ports": [
        {"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}
    ]});
    if let Some(value) = traffic_distribution {
        spec["trafficDistribution"] = json!(value);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": spec,
    })
}

/// One endpoint of an EndpointSlice: 127.0.0.1 on the Node `node` (no `zone` of its own: its locality
/// comes from the Node), ready and serving or neither, not terminating.
pub fn endpoint(node: &str, ready: bool) -> Value {
    json!({
        "addresses": ["127.0.0.1"],
        "nodeName": node,
        "conditions": {"ready": ready, "serving": ready, "terminating": false},
    })
}

/// An EndpointSlice `name` of the Service `echo.demo` whose port `http` is `port` (the backends'
/// port), with `endpoints` (see [`endpoint`]).
pub fn endpoint_slice(name: &str, port: u16, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {SERVICE_NAME_LABEL: SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// A running client Pod `name` in `demo` on the Node `node`, with the IP `ip`: how the server locates
/// an Envoy that names its pod (or comes from its IP) instead of giving a locality.
pub fn pod(name: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "client"}},
        "spec": {"nodeName": node, "containers": [{"name": "envoy", "image": "envoyproxy/envoy"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// A FailoverPolicy custom resource `name` in `demo` with `spec` (register the kind first:
/// [`crate::apiserver::KindInfo::failover_policy`]).
pub fn failover_policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": POLICY_API,
        "kind": "FailoverPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    })
}
