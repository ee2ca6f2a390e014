//! The `FailoverPolicy` custom resource: the policy YAML as a namespaced Kubernetes object.
//!
//! The CRD manifest in `deploy/` is generated from these types (`xds-server --print-crd`), and a test fails when the
//! committed file is out of date.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "failover.xds.dev";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "failover.xds.dev",
    version = "v1alpha1",
    kind = "FailoverPolicy",
    plural = "failoverpolicies",
    shortname = "fp",
    namespaced,
    status = "FailoverPolicyStatus",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverPolicySpec {
    /// The service this policy applies to; absent: every service in the namespace (or, for a policy in
    /// the server's mesh namespace, `--mesh-namespace`, every service in the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// One port of `service` (its name or number): this policy then applies to that port only and
    /// wins over the service's own policy there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Ordered label keys; endpoints are ranked by how many leading keys match the client's values.
    /// `key=value` pins a key: endpoints are compared with that value instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<Vec<String>>,
    /// Region → region rules: clients in `from` prefer `to` right after their own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<FailoverRule>>,
    /// Services to fail over to after every locality of this one, in order (only with `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<Vec<BackupSpec>>,
    /// Passive health checking: Envoy ejects hosts whose requests fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// Percent; a level keeps all traffic until fewer than 100/factor of its hosts are healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overprovisioning_factor: Option<u32>,
    /// Percent; 0 disables Envoy's panic mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold: Option<u32>,
    /// `STRICT`: sidecars connect to this service over mTLS with certificates from SDS; `DISABLE`
    /// (default): plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<String>,
    /// Weighted first priority level for clients in given localities; the first rule whose `from`
    /// matches the client applies. Every other endpoint keeps its usual ranking below, so failover
    /// still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute: Option<Vec<DistributeSpec>>,
    /// Active health checks: every client Envoy probes every endpoint of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// `gradual` (default): a level hands traffic to the next one as its hosts fail, by
    /// `overprovisioningFactor`; `allOrNothing`: a level keeps all traffic while any host is healthy
    /// (cannot be combined with `overprovisioningFactor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spillover: Option<String>,
    /// The server's own verdict from the clients' load reports: a locality failing for at least
    /// `minReporters` clients is sent UNHEALTHY to every client (`enforce`) or only reported
    /// (`observe`). Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_failover: Option<FleetFailoverSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetFailoverSpec {
    /// `off` (default), `observe` (log, event and metric only) or `enforce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Clients that must report the locality failing (default 2; at least 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reporters: Option<u32>,
    /// Requests to the locality within `window`, all reporters together (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Failed / all requests at or above which the locality is failing, in (0, 1] (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// The span of reports judged (default `10s`, at least `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// How long an ejected locality stays out before it is tried again (default `30s`, at least
    /// `window`); doubled for each ejection in a row, up to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eject_for: Option<String>,
    /// Never more than this percent of the service port's endpoints ejected (default 50; 1..100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistributeSpec {
    /// Client localities: `region/zone/subzone`, `*` allowed only as the whole last segment
    /// (`eu-west4/*`, `eu-west4/eu-west4-b/*`, `*` for every client).
    pub from: String,
    /// Locality pattern → weight (1..=100, summing to 100; the patterns must not overlap).
    pub to: BTreeMap<String, u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// `GET path`, healthy on a 200 answer. Exactly one of `http`, `tcp`, `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheckSpec>,
    /// A TCP connect (`tcp: {}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheckSpec>,
    /// `grpc.health.v1.Health/Check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckSpec>,
    /// Time between probes of one endpoint by one client (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long to wait for an answer (default `1s`); must be shorter than `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Failed probes in a row before an endpoint is unhealthy (default 3; 1..=1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Passed probes in a row before it is healthy again (default 2; 1..=1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheckSpec {
    /// The path to GET, starting with `/` (required).
    pub path: String,
    /// The `Host` header; default: the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// No settings. Not `deny_unknown_fields`: on a struct without fields that would put
/// `additionalProperties: false` into the CRD, which the API server refuses (the policy parser still
/// rejects unknown keys here).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct TcpHealthCheckSpec {}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheckSpec {
    /// The service name to ask about; absent: the server as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverRule {
    pub from: String,
    pub to: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    pub service: String,
    /// Default: the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only the backup's endpoints in this cluster (`topology.istio.io/cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// `false` switches outlier detection off (then no other key may be set); default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        default,
        rename = "consecutive5xx",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_failure: Option<u32>,
    /// A duration such as `1s`, `500ms`, `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicyStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

/// The CRD manifest, as committed in `deploy/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = FailoverPolicy::crd();
    format!(
        "# Generated by `xds-server --print-crd` from xds-server/src/sources/policy/crd.rs; do not edit by hand.\n{}",
        serde_yaml_ng::to_string(&crd).expect("a CRD always serialises")
    )
}
