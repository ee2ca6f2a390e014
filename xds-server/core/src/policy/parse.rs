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
//! ```
//!
//! Every field of `spec` is optional and defaults to [`FailoverPolicy::default`]; `policies/README.md`
//! describes each one with its rules. Durations are written
//! like `500ms`, `2s`, `1.5s`, `1m`, `1h` or `1m30s`. At most one policy may exist per scope (service
//! port, service, namespace, mesh), across all files.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::{
    default_failover_priority, BackupService, DistributeRule, FailoverPolicy, HealthCheck,
    HealthCheckProtocol, LocalityPattern, MtlsMode, OutlierDetection, PolicyEntry, PolicyOrigin,
    PolicyScope, PriorityKey, RegionFailover, Spillover, ALL_OR_NOTHING_FACTOR,
};
use crate::config::yaml::{self, FieldPath};
use crate::model::ServiceId;

mod validate;

pub use super::files::describe_scope;
use super::files::find_conflict;
use validate::{build, check_kind, spec_backups};

/// The only `kind` accepted.
pub const KIND: &str = "FailoverPolicy";

/// Why a policy file was rejected. `Display` is `FILE[:LINE[:COLUMN]]: document N: [FIELD: ]REASON`,
/// e.g. `policies/shop.yaml:9:5: document 2: spec.panicThreshold: must be between 0 and 100 (percent), got 150`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file or directory could not be read (missing, permissions, not UTF-8).
    #[error("{}", yaml::located(file, None, None, None, "", &format!("cannot read policies: {reason}")))]
    Read { file: String, reason: String },
    /// No YAML document with content.
    #[error(
        "{}",
        yaml::located(
            file,
            None,
            None,
            None,
            "",
            "file is empty; a policy file needs at least one `kind: FailoverPolicy` document"
        )
    )]
    Empty { file: String },
    /// The YAML itself is malformed. `document` is 1-based.
    #[error("{}", yaml::located(file, *line, *column, Some(&format!("document {document}")), "", &format!("invalid YAML: {reason}")))]
    Syntax {
        file: String,
        document: usize,
        line: Option<usize>,
        column: Option<usize>,
        reason: String,
    },
    /// Well-formed YAML with a wrong, missing, unknown, meaningless or conflicting setting.
    #[error("{}", yaml::located(file, *line, *column, Some(&format!("document {document}")), field, reason))]
    Invalid {
        file: String,
        document: usize,
        line: Option<usize>,
        column: Option<usize>,
        /// Like `spec.outlierDetection.maxEjectionPercent`; empty for the document as a whole.
        field: String,
        reason: String,
    },
}

impl PolicyError {
    pub fn file(&self) -> &str {
        match self {
            Self::Read { file, .. }
            | Self::Empty { file }
            | Self::Syntax { file, .. }
            | Self::Invalid { file, .. } => file,
        }
    }

    /// 1-based document index within the file, where it applies.
    pub fn document(&self) -> Option<usize> {
        match self {
            Self::Syntax { document, .. } | Self::Invalid { document, .. } => Some(*document),
            Self::Read { .. } | Self::Empty { .. } => None,
        }
    }

    /// 1-based line, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::Empty { .. } => None,
        }
    }

    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
            _ => "",
        }
    }

    /// The reason alone, without file, document, line or field.
    pub fn reason(&self) -> String {
        match self {
            Self::Read { reason, .. } => format!("cannot read policies: {reason}"),
            Self::Empty { .. } => "file is empty".to_string(),
            Self::Syntax { reason, .. } => format!("invalid YAML: {reason}"),
            Self::Invalid { reason, .. } => reason.clone(),
        }
    }
}

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
    port: Option<RawPort>,
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
    interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
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
    interval: Option<RawDuration>,
    base_ejection_time: Option<RawDuration>,
    max_ejection_percent: Option<i64>,
}

/// `spec.port`: a number or a name, kept as text (validated in `build_port`).
#[derive(Debug)]
struct RawPort(String);

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a service port name like `http` or a port number like `8080`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any scalar, kept as text so that `interval: 2` gets a "needs a unit" message rather than a type error.
#[derive(Debug)]
struct RawDuration(String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like `500ms`, `2s` or `1m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`, `1m30s` (units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`).
/// Zero, negative and unit-less values are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const FORMS: &str = "write a duration like `500ms`, `2s`, `1.5s` or `1m`";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {FORMS}"));
    }
    if s.starts_with('-') {
        return Err(format!("negative duration `{s}`; {FORMS}"));
    }
    if s.parse::<f64>().is_ok() {
        return Err(format!("duration `{s}` has no unit; {FORMS}"));
    }
    let garbage = || format!("`{s}` is not a duration; {FORMS}");
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(garbage)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(garbage()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(garbage());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| garbage())?
        };
        let fraction = &fraction[..fraction.len().min(18)];
        let mut part = whole.checked_mul(unit_nanos).ok_or_else(garbage)?;
        if !fraction.is_empty() {
            let digits: u128 = fraction.parse().map_err(|_| garbage())?;
            part += digits * unit_nanos / 10u128.pow(fraction.len() as u32);
        }
        nanos = nanos.checked_add(part).ok_or_else(garbage)?;
        rest = tail;
    }
    if nanos == 0 {
        return Err(format!("duration `{s}` must be greater than zero"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| garbage())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
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
pub fn parse_policies(source_name: &str, text: &str) -> Result<Vec<PolicyEntry>, PolicyError> {
    Ok(parse_file(source_name, text)?
        .into_iter()
        .map(|p| p.entry)
        .collect())
}

pub(crate) fn parse_file(file: &str, text: &str) -> Result<Vec<Parsed>, PolicyError> {
    // Pass 1: well-formed YAML without duplicate keys; find the non-empty documents.
    let mut empty = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let is_null = yaml::probe(document).map_err(|err| {
            if yaml::is_duplicate_key(&err) {
                let p = yaml::schema_problem(&err);
                return PolicyError::Invalid {
                    file: file.to_string(),
                    document: i + 1,
                    line: p.line,
                    column: p.column,
                    field: p.field,
                    reason: p.reason,
                };
            }
            let p = yaml::syntax_problem(&err);
            PolicyError::Syntax {
                file: file.to_string(),
                document: i + 1,
                line: p.line,
                column: p.column,
                reason: p.reason,
            }
        })?;
        empty.push(is_null);
    }
    if empty.iter().all(|e| *e) {
        return Err(PolicyError::Empty {
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

        let invalid = |path: &FieldPath, reason: String| {
            let pos = yaml::locate_nearest(text, i, path);
            PolicyError::Invalid {
                file: file.to_string(),
                document: i + 1,
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                field: path.to_string(),
                reason,
            }
        };
        if let Some(value) = &values[i] {
            check_kind(value).map_err(|(path, reason)| invalid(&path, reason))?;
        }
        let raw = RawPolicy::deserialize(document).map_err(|err| {
            let p = yaml::schema_problem(&err);
            PolicyError::Invalid {
                file: file.to_string(),
                document: i + 1,
                line: p.line,
                column: p.column,
                field: p.field,
                reason: p.reason,
            }
        })?;
        let (scope, namespace, name, policy) =
            build(raw).map_err(|(path, reason)| invalid(&path, reason))?;
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

pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Vec<Parsed>, PolicyError> {
    let text = std::str::from_utf8(bytes).map_err(|err| PolicyError::Read {
        file: file.to_string(),
        reason: format!("not valid UTF-8: {err}"),
    })?;
    parse_file(file, text)
}

#[cfg(test)]
mod tests;
