//! Reading failover policy YAML files into a validated [`super::PolicySet`].
//!
//! A file holds one or more YAML documents (separated by `---`; empty documents are skipped, a file
//! with no document at all is an error):
//!
//! ```yaml
//! apiVersion: anything/v1          # optional, not checked yet
//! kind: FailoverPolicy
//! metadata: {name: checkout, namespace: shop}   # namespace "*": the mesh-wide default
//! spec:
//!   service: checkout              # absent: every service of the namespace
//!   port: http                     # only with `service`: one service port (name or number)
//!   failoverPriority: [topology.kubernetes.io/region, topology.istio.io/network=n1]  # KEY=VALUE: a pin
//!   failover: [{from: us-east1, to: us-west1}]
//!   distribute: [{from: us-east1/*, to: {us-east1/us-east1-b/*: 80, us-west1/*: 20}}]
//!   backups: [{service: checkout-dr, namespace: shop, cluster: west}]   # only with `service`
//!   outlierDetection: {consecutive5xx: 3, consecutiveGatewayFailure: 2, interval: 2s,
//!                      baseEjectionTime: 30s, maxEjectionPercent: 100}   # or {enabled: false}
//!   healthCheck: {http: {path: /healthz}, interval: 5s, timeout: 1s, unhealthyThreshold: 3,
//!                 healthyThreshold: 2}                  # or tcp: {} / grpc: {service: NAME}
//!   spillover: gradual             # gradual | allOrNothing (then no overprovisioningFactor)
//!   overprovisioningFactor: 140    # 100..=100000
//!   panicThreshold: 0              # percent
//!   mtls: STRICT                   # STRICT | DISABLE (default): sidecar-to-sidecar mTLS via SDS
//!   fleetFailover: {mode: enforce, minReporters: 2, minRequests: 20, errorRatio: 0.5, window: 10s,
//!                   ejectFor: 30s, maxEjectedPercent: 50}   # mode: off (default) | observe | enforce
//! ```
//!
//! Every field of `spec` is optional and defaults to [`FailoverPolicy::default`]; `policies/README.md`
//! describes each one with its rules. Durations are written
//! like `500ms`, `2s`, `1.5s`, `1m`, `1h` or `1m30s`. At most one policy may exist per scope (service
//! port, service, namespace, mesh), across all files.

use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use super::{
    default_failover_priority, BackupService, DistributeRule, FailoverPolicy, FleetFailover,
    FleetMode, HealthCheck, HealthCheckProtocol, LocalityPattern, MtlsMode, OutlierDetection,
    PolicyEntry, PolicyOrigin, PolicyScope, PriorityKey, Ratio, RegionFailover, Spillover,
    ALL_OR_NOTHING_FACTOR,
};
use crate::config::error::Document;
use crate::config::scalar::{DurationText, PortText};
use crate::config::yaml::{self, FieldPath};
use crate::config::{FileError, FileKind};
use crate::model::ServiceId;

mod validate;

use super::files::find_conflict;
use validate::{build, check_kind, spec_backups};

/// The only `kind` accepted.
pub const KIND: &str = "FailoverPolicy";

/// The words of a policy file's `Read` and `Empty` errors.
pub const POLICY_FILE: FileKind = FileKind {
    what: "policies",
    needs: "a policy file needs at least one `kind: FailoverPolicy` document",
};

/// Why a policy file was rejected: a [`FileError`] whose `Syntax` and `Invalid` carry the document
/// number. `Display` is `FILE[:LINE[:COLUMN]]: document N: [FIELD: ]REASON`, e.g.
/// `policies/shop.yaml:9:5: document 2: spec.panicThreshold: must be between 0 and 100 (percent), got 150`.
pub type PolicyError = FileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    #[allow(dead_code)]
    api_version: Option<String>,
    /// Checked before deserializing (so a foreign kind is reported as such, not as unknown fields).
    #[allow(dead_code)]
    kind: Option<String>,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    service: Option<String>,
    port: Option<PortText>,
    failover_priority: Option<Vec<String>>,
    failover: Option<Vec<RawRule>>,
    backups: Option<Vec<RawBackup>>,
    outlier_detection: Option<RawOutlier>,
    overprovisioning_factor: Option<i64>,
    panic_threshold: Option<i64>,
    mtls: Option<String>,
    distribute: Option<Vec<RawDistribute>>,
    health_check: Option<RawHealthCheck>,
    spillover: Option<String>,
    fleet_failover: Option<RawFleetFailover>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFleetFailover {
    mode: Option<String>,
    min_reporters: Option<i64>,
    min_requests: Option<i64>,
    error_ratio: Option<f64>,
    window: Option<DurationText>,
    eject_for: Option<DurationText>,
    max_ejected_percent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistribute {
    from: String,
    /// A mapping kept in the order written (pattern → weight); checked in `build_distribute`.
    to: serde_yaml_ng::Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHealthCheck {
    /// `http:` with no value counts as present (and then lacks its `path`).
    #[serde(default, deserialize_with = "present")]
    http: Option<RawHttpCheck>,
    /// `tcp: {}` (or just `tcp:`).
    #[serde(default, deserialize_with = "present")]
    tcp: Option<RawTcpCheck>,
    #[serde(default, deserialize_with = "present")]
    grpc: Option<RawGrpcCheck>,
    interval: Option<DurationText>,
    timeout: Option<DurationText>,
    unhealthy_threshold: Option<i64>,
    healthy_threshold: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpCheck {
    path: Option<String>,
    host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcpCheck {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpcCheck {
    service: Option<String>,
}

/// For `#[serde(default)]` fields: a key written with an empty value (`tcp:`) is present, with the
/// type's defaults, rather than absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    service: String,
    namespace: Option<String>,
    cluster: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOutlier {
    /// `false` switches outlier detection off (then no other key may be set).
    enabled: Option<bool>,
    #[serde(rename = "consecutive5xx")]
    consecutive_5xx: Option<i64>,
    consecutive_gateway_failure: Option<i64>,
    interval: Option<DurationText>,
    base_ejection_time: Option<DurationText>,
    max_ejection_percent: Option<i64>,
}

/// One validated document, with what a conflict message needs.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub entry: PolicyEntry,
    /// 1-based; 0 when unknown (entries seeded from an already published set).
    pub(crate) document: usize,
    /// Where the field deciding the scope is (`spec.service` or `metadata.namespace`).
    pub(crate) scope_field: String,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
    /// Where each `spec.backups[i]` is, for cycle errors (empty when unknown).
    pub(crate) backup_positions: Vec<Option<yaml::Pos>>,
}

impl Parsed {
    pub(crate) fn describe(&self) -> String {
        self.entry.origin.describe()
    }

    pub(crate) fn source(&self) -> &str {
        match &self.entry.origin {
            PolicyOrigin::Named { source, .. } => source,
            _ => "",
        }
    }

    /// ` (FILE, document N, line L)` as far as known.
    pub(crate) fn whereabouts(&self) -> String {
        let mut parts = vec![self.source().to_string()];
        if self.document > 0 {
            parts.push(format!("document {}", self.document));
        }
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        format!(" ({})", parts.join(", "))
    }
}

/// Parses and validates the policy documents of one file. `source_name` (usually the path) names the
/// file in errors and becomes each entry's [`PolicyOrigin::Named`] `source`.
pub fn parse_policies(source_name: &str, text: &str) -> Result<Vec<PolicyEntry>, FileError> {
    Ok(parse_file(source_name, text)?
        .into_iter()
        .map(|p| p.entry)
        .collect())
}

pub(crate) fn parse_file(file: &str, text: &str) -> Result<Vec<Parsed>, FileError> {
    let doc = |i: usize| Document {
        file,
        text,
        number: Some(i + 1),
    };
    // Pass 1: well-formed YAML without duplicate keys; find the non-empty documents.
    let mut empty = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let is_null = yaml::probe(document).map_err(|err| doc(i).probe_error(&err))?;
        empty.push(is_null);
    }
    if empty.iter().all(|e| *e) {
        return Err(FileError::Empty {
            kind: POLICY_FILE,
            file: file.to_string(),
        });
    }
    // The documents as plain values, for the `kind` check (`None` if not representable, e.g. a huge
    // integer somewhere: the typed pass reports that).
    let values: Vec<Option<serde_yaml_ng::Value>> = serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| serde_yaml_ng::Value::deserialize(document).ok())
        .collect();

    let mut parsed: Vec<Parsed> = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        if empty[i] {
            continue;
        }
        let doc = doc(i);
        if let Some(value) = &values[i] {
            check_kind(value).map_err(|e| doc.invalid(e))?;
        }
        let raw = RawPolicy::deserialize(document).map_err(|err| doc.schema_error(&err))?;
        let (scope, namespace, name, policy) = build(raw).map_err(|e| doc.invalid(e))?;
        let scope_path = match scope {
            PolicyScope::Service(_) => FieldPath::root().key("spec").key("service"),
            PolicyScope::ServicePort(..) => FieldPath::root().key("spec").key("port"),
            _ => FieldPath::root().key("metadata").key("namespace"),
        };
        let pos = yaml::locate_nearest(text, i, &scope_path);
        let backup_positions = (0..policy.backups.len())
            .map(|b| yaml::locate_nearest(text, i, &spec_backups().index(b)))
            .collect();
        let new = Parsed {
            entry: PolicyEntry {
                scope,
                origin: PolicyOrigin::Named {
                    namespace,
                    name,
                    source: file.to_string(),
                },
                policy: Arc::new(policy),
            },
            document: i + 1,
            scope_field: scope_path.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            backup_positions,
        };
        if let Some(err) = find_conflict(&new, &parsed) {
            return Err(err);
        }
        parsed.push(new);
    }
    Ok(parsed)
}

pub fn is_policy_file_name(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.starts_with('.')
}

pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Vec<Parsed>, FileError> {
    parse_file(file, FileError::text(POLICY_FILE, file, bytes)?)
}

#[cfg(test)]
mod tests;
