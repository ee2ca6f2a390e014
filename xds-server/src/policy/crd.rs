//! The `FailoverPolicy` custom resource: the policy YAML as a namespaced Kubernetes object.
//!
//! The CRD manifest in `deploy/` is generated from these types (`xds-server --print-crd`), and a test fails when the
//! committed file is out of date.

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<Vec<String>>,
    /// Region → region rules: clients in `from` prefer `to` right after their own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<FailoverRule>>,
    /// Services to fail over to after every locality of this one, in order (only with `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<Vec<BackupSpec>>,
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
        "# Generated by `xds-server --print-crd` from xds-server/src/policy/crd.rs; do not edit by hand.\n{}",
        serde_yaml_ng::to_string(&crd).expect("a CRD always serialises")
    )
}
