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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use tracing::{error, info, warn};

use super::{
    default_failover_priority, publish_rejected, BackupService, DistributeRule, FailoverPolicy,
    HealthCheck, HealthCheckProtocol, LocalityPattern, MtlsMode, OutlierDetection, PolicyEntry,
    PolicyOrigin, PolicyScope, PolicySet, PolicyStatus, PriorityKey, RegionFailover,
    RejectedPolicy, Spillover, ALL_OR_NOTHING_FACTOR,
};
use crate::model::ServiceId;
use crate::sources::watch::{self, FileChange};
use crate::sources::yaml::{self, FieldPath};

pub use crate::sources::watch::WatchHandle;

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
struct Parsed {
    entry: PolicyEntry,
    /// 1-based; 0 when unknown (entries seeded from an already published set).
    document: usize,
    /// Where the field deciding the scope is (`spec.service` or `metadata.namespace`).
    scope_field: String,
    line: Option<usize>,
    column: Option<usize>,
    /// Where each `spec.backups[i]` is, for cycle errors (empty when unknown).
    backup_positions: Vec<Option<yaml::Pos>>,
}

impl Parsed {
    fn describe(&self) -> String {
        self.entry.origin.describe()
    }

    fn source(&self) -> &str {
        match &self.entry.origin {
            PolicyOrigin::Named { source, .. } => source,
            _ => "",
        }
    }

    /// ` (FILE, document N, line L)` as far as known.
    fn whereabouts(&self) -> String {
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

/// `namespace shop`, `service shop/web port http`, ...
pub fn describe_scope(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Mesh => "the mesh default (namespace \"*\")".to_string(),
        PolicyScope::Namespace(ns) => format!("namespace {ns}"),
        PolicyScope::Service(id) => format!("service {id}"),
        PolicyScope::ServicePort(id, port) => format!("service {id} port {port}"),
    }
}

/// The error for `new` having the same scope as the already accepted `other`.
fn conflict(new: &Parsed, other: &Parsed) -> PolicyError {
    PolicyError::Invalid {
        file: new.source().to_string(),
        document: new.document,
        line: new.line,
        column: new.column,
        field: new.scope_field.clone(),
        reason: format!(
            "policy {} has the same scope ({}) as policy {}{}; only one policy may apply per scope: \
             merge them or delete one",
            new.describe(),
            describe_scope(&new.entry.scope),
            other.describe(),
            other.whereabouts(),
        ),
    }
}

/// A scope already taken by an accepted policy, or backups that would close a cycle with them.
fn find_conflict<'a>(
    new: &Parsed,
    accepted: impl IntoIterator<Item = &'a Parsed>,
) -> Option<PolicyError> {
    let accepted: Vec<&Parsed> = accepted.into_iter().collect();
    if let Some(other) = accepted.iter().find(|p| p.entry.scope == new.entry.scope) {
        return Some(conflict(new, other));
    }
    let cycle = super::backup_cycle(&new.entry, accepted.iter().map(|p| &p.entry))?;
    // The backup of `new` the cycle leaves through, and the policy that leads back.
    let index = new
        .entry
        .policy
        .backups
        .iter()
        .position(|b| b.service == cycle[1])
        .unwrap_or(0);
    let hops: Vec<String> = cycle.iter().map(ToString::to_string).collect();
    let back = accepted.iter().find(|p| {
        p.entry.scope.service() == Some(&cycle[cycle.len() - 2])
            && p.entry
                .policy
                .backups
                .iter()
                .any(|b| b.service == cycle[cycle.len() - 1])
    });
    let closing = back.map_or_else(String::new, |p| {
        format!(
            "; policy {}{} backs up to {}",
            p.describe(),
            p.whereabouts(),
            cycle[cycle.len() - 1]
        )
    });
    let pos = new.backup_positions.get(index).copied().flatten();
    Some(PolicyError::Invalid {
        file: new.source().to_string(),
        document: new.document,
        line: pos.map(|p| p.line).or(new.line),
        column: pos.map(|p| p.column).or(new.column),
        field: format!("spec.backups[{index}]"),
        reason: format!(
            "policy {} makes backups form a cycle: {}{closing}; a service cannot be a backup of its \
             own backup: remove one of these backups",
            new.describe(),
            hops.join(" → "),
        ),
    })
}

/// Parses and validates the policy documents of one file. `source_name` (usually the path) names the
/// file in errors and becomes each entry's [`PolicyOrigin::Named`] `source`.
pub fn parse_policies(source_name: &str, text: &str) -> Result<Vec<PolicyEntry>, PolicyError> {
    Ok(parse_file(source_name, text)?
        .into_iter()
        .map(|p| p.entry)
        .collect())
}

fn parse_file(file: &str, text: &str) -> Result<Vec<Parsed>, PolicyError> {
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

type Invalid = (FieldPath, String);

fn spec_backups() -> FieldPath {
    FieldPath::root().key("spec").key("backups")
}

fn check_kind(value: &serde_yaml_ng::Value) -> Result<(), Invalid> {
    let root = FieldPath::root();
    let Some(map) = value.as_mapping() else {
        return Err((
            root,
            format!(
                "a policy document must be a mapping with `kind: {KIND}`, `metadata` and `spec`"
            ),
        ));
    };
    match map.get("kind") {
        None => Err((
            root.key("kind"),
            format!("missing field `kind` (expected `kind: {KIND}`)"),
        )),
        Some(serde_yaml_ng::Value::String(kind)) if kind == KIND => Ok(()),
        Some(other) => {
            let shown = match other {
                serde_yaml_ng::Value::String(s) => s.clone(),
                v => serde_yaml_ng::to_string(v)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            let hint = yaml::did_you_mean(&shown, &[KIND])
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            Err((
                root.key("kind"),
                format!("unsupported kind `{shown}`, expected `{KIND}`{hint}"),
            ))
        }
    }
}

/// Range-checks an integer setting.
fn in_range(
    path: &FieldPath,
    value: i64,
    min: i64,
    max: i64,
    explain: &str,
) -> Result<u32, Invalid> {
    if value < min || value > max {
        return Err((
            path.clone(),
            format!("must be between {min} and {max}{explain}, got {value}"),
        ));
    }
    Ok(value as u32)
}

fn build(raw: RawPolicy) -> Result<(PolicyScope, String, String, FailoverPolicy), Invalid> {
    let meta = FieldPath::root().key("metadata");
    let name = raw.metadata.name.ok_or_else(|| {
        (
            meta.key("name"),
            "missing field `name` (every policy needs a name)".to_string(),
        )
    })?;
    yaml::check_dns_subdomain(&name, "policy name").map_err(|r| (meta.key("name"), r))?;
    let namespace = raw.metadata.namespace.ok_or_else(|| {
        (
            meta.key("namespace"),
            "missing field `namespace` (use \"*\" for the mesh-wide default)".to_string(),
        )
    })?;
    if namespace != "*" {
        yaml::check_dns_label(&namespace, "namespace").map_err(|r| {
            (
                meta.key("namespace"),
                format!("{r}, or \"*\" for the mesh default"),
            )
        })?;
    }

    let spec_path = FieldPath::root().key("spec");
    let spec = raw.spec;
    if spec.port.is_some() && spec.service.is_none() {
        return Err((
            spec_path.key("port"),
            "`port` selects one port of one service: set spec.service too".to_string(),
        ));
    }
    let scope =
        match (namespace.as_str(), spec.service) {
            ("*", Some(_)) => return Err((
                spec_path.key("service"),
                "a mesh default (namespace \"*\") applies to every service; remove `service`, or \
                 set metadata.namespace to the service's namespace"
                    .to_string(),
            )),
            ("*", None) => PolicyScope::Mesh,
            (ns, None) => PolicyScope::Namespace(ns.to_string()),
            (ns, Some(service)) => {
                yaml::check_dns_label(&service, "service name")
                    .map_err(|r| (spec_path.key("service"), r))?;
                let id = ServiceId::new(ns, service);
                match &spec.port {
                    Some(port) => PolicyScope::ServicePort(id, build_port(&spec_path, port)?),
                    None => PolicyScope::Service(id),
                }
            }
        };

    let mut policy = FailoverPolicy::default();

    if let Some(keys) = spec.failover_priority {
        let path = spec_path.key("failoverPriority");
        if keys.is_empty() {
            return Err((
                path,
                format!(
                    "must list at least one label key; omit it for the default order ({})",
                    default_failover_priority()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut parsed: Vec<PriorityKey> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let key = parse_priority_key(key).map_err(|r| (path.index(i), r))?;
            if let Some(first) = parsed.iter().position(|k| k.label == key.label) {
                let label = &key.label;
                return Err((
                    path.index(i),
                    format!(
                        "duplicate label key `{label}` (also failoverPriority[{first}]); a key may \
                         appear once, pinned (`{label}=VALUE`) or not"
                    ),
                ));
            }
            parsed.push(key);
        }
        policy.failover_priority = parsed;
        policy.prefer_own_cluster = false;
    }

    if let Some(rules) = spec.failover {
        let path = spec_path.key("failover");
        let mut seen: Vec<RegionFailover> = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            for (field, value) in [("from", &rule.from), ("to", &rule.to)] {
                if value.trim().is_empty() {
                    return Err((path.index(i).key(field), "must name a region".to_string()));
                }
            }
            if rule.from == rule.to {
                return Err((
                    path.index(i),
                    format!(
                        "`from` and `to` are both `{}`: a region cannot fail over to itself",
                        rule.from
                    ),
                ));
            }
            let rule = RegionFailover {
                from: rule.from,
                to: rule.to,
            };
            if let Some(first) = seen.iter().position(|r| *r == rule) {
                return Err((
                    path.index(i),
                    format!(
                        "duplicate rule {} → {} (also failover[{first}])",
                        rule.from, rule.to
                    ),
                ));
            }
            seen.push(rule);
        }
        policy.failover = seen;
    }

    if let Some(backups) = spec.backups {
        policy.backups = build_backups(&scope, &namespace, backups)?;
    }

    if let Some(raw) = spec
        .outlier_detection
        .as_ref()
        .filter(|raw| raw.enabled == Some(false))
    {
        let path = spec_path.key("outlierDetection");
        let others = [
            ("consecutive5xx", raw.consecutive_5xx.is_some()),
            (
                "consecutiveGatewayFailure",
                raw.consecutive_gateway_failure.is_some(),
            ),
            ("interval", raw.interval.is_some()),
            ("baseEjectionTime", raw.base_ejection_time.is_some()),
            ("maxEjectionPercent", raw.max_ejection_percent.is_some()),
        ];
        if let Some((key, _)) = others.iter().find(|(_, set)| *set) {
            return Err((
                path.key(key),
                format!(
                    "`enabled: false` switches outlier detection off, so `{key}` would have no \
                     effect: remove `{key}`, or remove `enabled: false`"
                ),
            ));
        }
        policy.outlier_detection = None;
    } else if let Some(raw) = spec.outlier_detection {
        let path = spec_path.key("outlierDetection");
        let mut od = OutlierDetection::default();
        let count = |key: &str, v: i64| in_range(&path.key(key), v, 0, u32::MAX as i64, "");
        if let Some(v) = raw.consecutive_5xx {
            od.consecutive_5xx = count("consecutive5xx", v)?;
        }
        if let Some(v) = raw.consecutive_gateway_failure {
            od.consecutive_gateway_failure = count("consecutiveGatewayFailure", v)?;
        }
        let duration = |key: &str, v: &RawDuration| {
            parse_duration(&v.0).map_err(|reason| (path.key(key), reason))
        };
        if let Some(v) = &raw.interval {
            od.interval = duration("interval", v)?;
        }
        if let Some(v) = &raw.base_ejection_time {
            od.base_ejection_time = duration("baseEjectionTime", v)?;
        }
        if let Some(v) = raw.max_ejection_percent {
            let key = path.key("maxEjectionPercent");
            od.max_ejection_percent = in_range(&key, v, 0, 100, " (percent)")?;
            if od.max_ejection_percent == 0 {
                return Err((
                    key,
                    "0 means no host can ever be ejected, so traffic could never fail over to \
                     another locality; use 100 to let a whole dead zone be ejected"
                        .to_string(),
                ));
            }
        }
        if od.consecutive_5xx == 0 && od.consecutive_gateway_failure == 0 {
            return Err((
                path,
                "consecutive5xx and consecutiveGatewayFailure are both 0: outlier detection would \
                 never eject a host, so traffic could never fail over to another locality; set at \
                 least one of them above 0"
                    .to_string(),
            ));
        }
        policy.outlier_detection = Some(od);
    }

    if let Some(v) = spec.overprovisioning_factor {
        policy.overprovisioning_factor = in_range(
            &spec_path.key("overprovisioningFactor"),
            v,
            100,
            100_000,
            " (below 100 even a fully healthy level would spill traffic to the next one)",
        )?;
    }
    if let Some(v) = spec.panic_threshold {
        policy.panic_threshold = in_range(
            &spec_path.key("panicThreshold"),
            v,
            0,
            100,
            " (percent; 0 disables panic mode)",
        )?;
    }
    if let Some(v) = spec.mtls {
        policy.mtls = match v.to_ascii_uppercase().as_str() {
            "STRICT" => MtlsMode::Strict,
            "DISABLE" => MtlsMode::Disable,
            _ => {
                let hint = yaml::did_you_mean(&v, &["STRICT", "DISABLE"])
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                return Err((
                    spec_path.key("mtls"),
                    format!("must be STRICT or DISABLE, got {v:?}{hint}"),
                ));
            }
        };
    }

    if let Some(rules) = spec.distribute {
        policy.distribute = build_distribute(rules)?;
    }
    if let Some(raw) = spec.health_check {
        policy.health_check = Some(build_health_check(raw)?);
    }
    if let Some(v) = spec.spillover {
        let path = spec_path.key("spillover");
        policy.spillover = match v.to_ascii_lowercase().as_str() {
            "gradual" => Spillover::Gradual,
            "allornothing" => Spillover::AllOrNothing,
            _ => {
                let hint = yaml::did_you_mean(&v, &["gradual", "allOrNothing"])
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                return Err((
                    path,
                    format!("must be `gradual` (the default) or `allOrNothing`, got {v:?}{hint}"),
                ));
            }
        };
        if policy.spillover == Spillover::AllOrNothing {
            if spec.overprovisioning_factor.is_some() {
                return Err((
                    path,
                    format!(
                        "`spillover: allOrNothing` sets the overprovisioning factor itself (to \
                         {ALL_OR_NOTHING_FACTOR}), so spec.overprovisioningFactor must not be set \
                         too: remove spec.overprovisioningFactor, or use `spillover: gradual` with it"
                    ),
                ));
            }
            policy.overprovisioning_factor = ALL_OR_NOTHING_FACTOR;
        }
    }

    Ok((scope, namespace, name, policy))
}

/// One `failoverPriority` entry: `label` (compared with the client's value) or `label=value` (a pin).
fn parse_priority_key(text: &str) -> Result<PriorityKey, String> {
    if text.trim().is_empty() {
        return Err("label keys must not be empty".to_string());
    }
    if text.contains(char::is_whitespace) {
        return Err(format!("label key {text:?} contains whitespace"));
    }
    let Some((label, value)) = text.split_once('=') else {
        return Ok(PriorityKey::label(text));
    };
    if label.is_empty() {
        return Err(format!(
            "`{text}` pins no label: write `LABEL=VALUE`, like `topology.istio.io/network={value}`"
        ));
    }
    if value.is_empty() {
        return Err(format!(
            "`{text}` pins `{label}` to an empty value: write `{label}=VALUE`, or just `{label}` to \
             compare endpoints with the client's own value"
        ));
    }
    if value.contains('=') {
        return Err(format!(
            "`{text}` has more than one `=`: write `LABEL=VALUE` (label values cannot contain `=`)"
        ));
    }
    Ok(PriorityKey::pinned(label, value))
}

/// A `distribute` locality pattern: `region/zone/subzone`, `*` allowed only as the whole last segment.
fn parse_pattern(text: &str) -> Result<LocalityPattern, String> {
    const FORM: &str = "write `REGION/ZONE/SUBZONE`, `REGION/ZONE/*`, `REGION/*` or `*`";
    if text.is_empty() {
        return Err(format!("empty locality pattern; {FORM}"));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "locality pattern {text:?} contains whitespace; {FORM}"
        ));
    }
    let parts: Vec<&str> = text.split('/').collect();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            let hint = if i == last && parts[..last].iter().all(|p| !p.is_empty()) {
                format!("; did you mean `{text}*`?")
            } else {
                String::new()
            };
            return Err(format!("`{text}` has an empty segment; {FORM}{hint}"));
        }
        if part.contains('*') && (*part != "*" || i != last) {
            return Err(format!(
                "`{text}`: `*` is allowed only as the whole last segment (no partial names like \
                 `eu-*`, nothing after `*`); {FORM}"
            ));
        }
    }
    let wildcard = parts[last] == "*";
    if parts.len() > 3 {
        let hint = if wildcard && parts.len() == 4 {
            format!("; did you mean `{}`?", parts[..3].join("/"))
        } else {
            String::new()
        };
        return Err(format!(
            "`{text}` has more than 3 segments; a locality is region/zone/subzone{hint}"
        ));
    }
    let segments: Vec<String> = parts[..parts.len() - usize::from(wildcard)]
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !wildcard && segments.len() < 3 {
        return Err(format!(
            "`{text}` names {} only, not a locality: write all three segments \
             (region/zone/subzone), or end with `*` for everything below it; did you mean `{text}/*`?",
            if segments.len() == 1 { "a region" } else { "a zone" }
        ));
    }
    Ok(LocalityPattern { segments, wildcard })
}

fn build_distribute(raw: Vec<RawDistribute>) -> Result<Vec<DistributeRule>, Invalid> {
    let path = FieldPath::root().key("spec").key("distribute");
    let mut rules: Vec<DistributeRule> = Vec::with_capacity(raw.len());
    for (i, rule) in raw.into_iter().enumerate() {
        let at = path.index(i);
        let from = parse_pattern(&rule.from).map_err(|r| (at.key("from"), r))?;
        if let Some(first) = rules.iter().position(|r| r.from == from) {
            return Err((
                at.key("from"),
                format!(
                    "distribute[{first}] has the same `from` ({from}); only the first rule matching \
                     a client applies: merge the two rules"
                ),
            ));
        }
        if let Some(first) = rules.iter().position(|r| r.from.covers(&from)) {
            return Err((
                at.key("from"),
                format!(
                    "this rule can never apply: every client in `{from}` already matches \
                     distribute[{first}] (from `{}`), and only the first matching rule applies; put \
                     the more specific rule first",
                    rules[first].from
                ),
            ));
        }
        let to_path = at.key("to");
        if rule.to.is_empty() {
            return Err((
                to_path,
                "must list at least one locality pattern with a weight, like \
                 `{eu-west4/eu-west4-b/*: 80, eu-west4/eu-west4-c/*: 20}`"
                    .to_string(),
            ));
        }
        let mut to: Vec<(LocalityPattern, u32)> = Vec::with_capacity(rule.to.len());
        for (key, value) in &rule.to {
            let Some(text) = key.as_str() else {
                let shown = serde_yaml_ng::to_string(key).unwrap_or_default();
                return Err((
                    to_path.clone(),
                    format!(
                        "`{}` is not a locality pattern; quote it or {}",
                        shown.trim(),
                        "write `REGION/ZONE/SUBZONE`, `REGION/ZONE/*`, `REGION/*` or `*`"
                    ),
                ));
            };
            let key_path = to_path.key(text);
            let pattern = parse_pattern(text).map_err(|r| (key_path.clone(), r))?;
            let weight = match value.as_i64() {
                Some(w) if (1..=100).contains(&w) => w as u32,
                _ => {
                    let shown = serde_yaml_ng::to_string(value).unwrap_or_default();
                    return Err((
                        key_path,
                        format!(
                            "weight must be a whole number from 1 to 100 (percent of the traffic), \
                             got `{}`",
                            shown.trim()
                        ),
                    ));
                }
            };
            if let Some((other, _)) = to.iter().find(|(p, _)| p.overlaps(&pattern)) {
                return Err((
                    key_path,
                    format!(
                        "`{pattern}` overlaps `{other}` (some locality matches both); each \
                         locality may get one weight: make the patterns disjoint"
                    ),
                ));
            }
            to.push((pattern, weight));
        }
        let sum: u32 = to.iter().map(|(_, w)| w).sum();
        if sum != 100 {
            let listed: Vec<String> = to.iter().map(|(p, w)| format!("{p}: {w}")).collect();
            return Err((
                to_path,
                format!(
                    "weights must add up to 100 (percent), they add up to {sum} ({})",
                    listed.join(", ")
                ),
            ));
        }
        rules.push(DistributeRule { from, to });
    }
    Ok(rules)
}

fn build_health_check(raw: RawHealthCheck) -> Result<HealthCheck, Invalid> {
    let path = FieldPath::root().key("spec").key("healthCheck");
    let set: Vec<&str> = [
        ("http", raw.http.is_some()),
        ("tcp", raw.tcp.is_some()),
        ("grpc", raw.grpc.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if set.len() != 1 {
        let reason = if set.is_empty() {
            "a health check needs exactly one protocol: `http: {path: /healthz}`, `tcp: {}` or \
             `grpc: {}`"
                .to_string()
        } else {
            format!(
                "`{}` are all set; a health check uses exactly one protocol: keep one",
                set.join("` and `")
            )
        };
        return Err((path, reason));
    }
    let protocol = if let Some(http) = raw.http {
        let at = path.key("http");
        let Some(p) = http.path else {
            return Err((
                at.key("path"),
                "missing field `path`: an HTTP health check needs the path to GET, like `/healthz`"
                    .to_string(),
            ));
        };
        if !p.starts_with('/') || p.contains(char::is_whitespace) {
            let hint = if p.contains(char::is_whitespace) || p.is_empty() {
                String::new()
            } else {
                format!("; did you mean `/{p}`?")
            };
            return Err((
                at.key("path"),
                format!("must be a URL path starting with `/` without whitespace, got {p:?}{hint}"),
            ));
        }
        if let Some(host) = &http.host {
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err((
                    at.key("host"),
                    format!(
                        "must be a host name without whitespace, got {host:?}; omit it to send \
                         the cluster's name"
                    ),
                ));
            }
        }
        HealthCheckProtocol::Http {
            path: p,
            host: http.host,
        }
    } else if raw.tcp.is_some() {
        HealthCheckProtocol::Tcp
    } else {
        let grpc = raw.grpc.unwrap_or_default();
        if let Some(service) = &grpc.service {
            if service.trim().is_empty() || service.contains(char::is_whitespace) {
                return Err((
                    path.key("grpc").key("service"),
                    format!(
                        "must be a gRPC service name without whitespace, got {service:?}; omit it \
                         to ask about the server as a whole"
                    ),
                ));
            }
        }
        HealthCheckProtocol::Grpc {
            service: grpc.service,
        }
    };
    let mut hc = HealthCheck::new(protocol);
    let duration =
        |key: &str, v: &RawDuration| parse_duration(&v.0).map_err(|reason| (path.key(key), reason));
    if let Some(v) = &raw.interval {
        hc.interval = duration("interval", v)?;
    }
    if let Some(v) = &raw.timeout {
        hc.timeout = duration("timeout", v)?;
    }
    if hc.timeout >= hc.interval {
        let key = if raw.timeout.is_some() {
            "timeout"
        } else {
            "interval"
        };
        return Err((
            path.key(key),
            format!(
                "timeout ({:?}) must be shorter than interval ({:?}): Envoy waits for a probe's \
                 answer before the next one, so a hung endpoint would be probed less often than \
                 asked and take longer to be marked unhealthy",
                hc.timeout, hc.interval
            ),
        ));
    }
    let threshold = |key: &str, v: i64| {
        in_range(
            &path.key(key),
            v,
            1,
            1000,
            " (consecutive probes; more than 1000 would keep a dead endpoint in traffic for over \
             1000 intervals)",
        )
    };
    if let Some(v) = raw.unhealthy_threshold {
        hc.unhealthy_threshold = threshold("unhealthyThreshold", v)?;
    }
    if let Some(v) = raw.healthy_threshold {
        hc.healthy_threshold = threshold("healthyThreshold", v)?;
    }
    Ok(hc)
}

/// `spec.port`: a port number (1..=65535) as text, or a port name as Kubernetes allows them (an
/// IANA service name: at most 15 lowercase letters, digits and `-`, with a letter).
fn build_port(spec_path: &FieldPath, raw: &RawPort) -> Result<String, Invalid> {
    let path = spec_path.key("port");
    let text = raw.0.trim();
    if text.chars().all(|c| c.is_ascii_digit() || c == '-') && !text.is_empty() {
        return match text.parse::<i64>() {
            Ok(n @ 1..=65535) => Ok(n.to_string()),
            _ => Err((
                path,
                format!("port number must be between 1 and 65535, got {text}"),
            )),
        };
    }
    yaml::check_dns_label(text, "port name").map_err(|r| (path.clone(), r))?;
    if text.len() > 15 {
        return Err((
            path,
            format!("port name `{text}` is longer than 15 characters (Kubernetes port names are at most 15)"),
        ));
    }
    Ok(text.to_string())
}

fn build_backups(
    scope: &PolicyScope,
    namespace: &str,
    raw: Vec<RawBackup>,
) -> Result<Vec<BackupService>, Invalid> {
    let path = spec_backups();
    let Some(primary) = scope.service() else {
        return Err((
            path,
            "backups replace one service: set spec.service, or move `backups` to that service's \
             own policy"
                .to_string(),
        ));
    };
    let mut backups: Vec<BackupService> = Vec::with_capacity(raw.len());
    for (i, b) in raw.into_iter().enumerate() {
        let at = path.index(i);
        yaml::check_dns_label(&b.service, "service name").map_err(|r| (at.key("service"), r))?;
        let ns = b.namespace.unwrap_or_else(|| namespace.to_string());
        yaml::check_dns_label(&ns, "namespace").map_err(|r| (at.key("namespace"), r))?;
        if let Some(cluster) = &b.cluster {
            if cluster.trim().is_empty() {
                return Err((
                    at.key("cluster"),
                    "must name a cluster (a topology.istio.io/cluster value); omit it to use the \
                     backup's endpoints in every cluster"
                        .to_string(),
                ));
            }
        }
        let backup = BackupService {
            service: ServiceId::new(ns, b.service),
            cluster: b.cluster,
        };
        if backup.service == *primary {
            return Err((
                at.key("service"),
                format!(
                    "{primary} cannot back itself up; name another service (for another cluster \
                     of the same service, use failoverPriority or the default order instead)"
                ),
            ));
        }
        if let Some(first) = backups.iter().position(|other| *other == backup) {
            return Err((at, format!("duplicate backup (also backups[{first}])")));
        }
        backups.push(backup);
    }
    Ok(backups)
}

fn is_policy_file_name(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.starts_with('.')
}

fn read_error(path: &Path, err: impl fmt::Display) -> PolicyError {
    PolicyError::Read {
        file: path.display().to_string(),
        reason: err.to_string(),
    }
}

fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Vec<Parsed>, PolicyError> {
    let text = std::str::from_utf8(bytes).map_err(|err| PolicyError::Read {
        file: file.to_string(),
        reason: format!("not valid UTF-8: {err}"),
    })?;
    parse_file(file, text)
}

/// The policy files of a directory: `*.yaml` / `*.yml`, not hidden, sorted by name, non-recursive.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = dir.join(name);
        if is_policy_file_name(name) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A file, or a directory of *.yaml / *.yml files (sorted by name, non-recursive). Entries come in file
/// order, then document order; a scope defined twice (even in different files) is an error.
pub fn load_policies(path: &Path) -> Result<PolicySet, PolicyError> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    let files = if meta.is_dir() {
        policy_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut accepted: Vec<Parsed> = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| read_error(&file, e))?;
        for new in parse_bytes(&file.display().to_string(), &bytes)? {
            if let Some(err) = find_conflict(&new, &accepted) {
                return Err(err);
            }
            accepted.push(new);
        }
    }
    Ok(PolicySet {
        entries: accepted.into_iter().map(|p| p.entry).collect(),
    })
}

/// Every problem [`load_policies`] would stop at, not just the first: each file on its own, then (when
/// every file is valid) the conflicts between files. For `xds-server --check-policies`, which validates
/// policies offline, e.g. in a CI pipeline before they are applied.
pub fn check_policies(path: &Path) -> Result<PolicySet, Vec<PolicyError>> {
    let meta = std::fs::metadata(path).map_err(|e| vec![read_error(path, e)])?;
    let files = if meta.is_dir() {
        policy_files(path).map_err(|e| vec![e])?
    } else {
        vec![path.to_path_buf()]
    };
    let errors: Vec<PolicyError> = files
        .iter()
        .filter_map(|file| match std::fs::read(file) {
            Err(e) => Some(read_error(file, e)),
            Ok(bytes) => parse_bytes(&file.display().to_string(), &bytes).err(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    load_policies(path).map_err(|e| vec![e])
}

/// Logs a rejected file with structured fields `file`, `document`, `line` (when known), `field`, `reason`.
fn log_rejected(err: &PolicyError) {
    crate::admin::metrics::metrics()
        .policy_reloads
        .get_or_create(&crate::admin::metrics::result_label(false))
        .inc();
    let (file, field, reason) = (err.file(), err.field(), err.reason());
    let document = err.document().unwrap_or(0);
    match err.line() {
        Some(line) => error!(
            file,
            document,
            line,
            field,
            %reason,
            "policy file rejected; keeping its last good policies"
        ),
        None => error!(
            file,
            document,
            field,
            %reason,
            "policy file rejected; keeping its last good policies"
        ),
    }
}

/// The watcher's state: the last good policies of every file, keyed by file (as written in `source`),
/// and the valid files held back because they define a scope another file already defines.
struct PolicyFiles {
    files: BTreeMap<String, Vec<Parsed>>,
    blocked: BTreeMap<String, Vec<Parsed>>,
    /// Why each file's current content is not in force (invalid, or blocked by a conflict).
    errors: BTreeMap<String, PolicyError>,
}

/// What happened to one file in a batch.
enum FileUpdate {
    Parsed(Result<Vec<Parsed>, PolicyError>),
    /// Deleted; `drop_policies` in directory mode.
    Deleted {
        drop_policies: bool,
    },
}

impl PolicyFiles {
    fn new() -> Self {
        Self {
            files: BTreeMap::new(),
            blocked: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Starts from what was already published (normally `load_policies` of the same path).
    fn seeded(current: &PolicySet) -> Self {
        let mut state = Self::new();
        for entry in &current.entries {
            if let PolicyOrigin::Named { source, .. } = &entry.origin {
                state.files.entry(source.clone()).or_default().push(Parsed {
                    entry: entry.clone(),
                    document: 0,
                    scope_field: String::new(),
                    line: None,
                    column: None,
                    backup_positions: Vec::new(),
                });
            }
        }
        state
    }

    /// Applies a batch and returns the errors to log (only for files of this batch).
    fn update(&mut self, batch: Vec<(String, FileUpdate)>) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        let mut pending = Vec::new();
        let mut in_batch = Vec::new();
        for (file, update) in batch {
            self.blocked.remove(&file);
            self.errors.remove(&file);
            match update {
                FileUpdate::Deleted { drop_policies } => {
                    if drop_policies && self.files.remove(&file).is_some() {
                        info!(file = %file, "policy file removed; its policies no longer apply");
                    } else if !drop_policies {
                        warn!(
                            file = %file,
                            "policy file is gone; keeping its last good policies until it reappears"
                        );
                    }
                }
                FileUpdate::Parsed(Err(err)) => {
                    self.errors.insert(file, err.clone());
                    errors.push(err);
                }
                FileUpdate::Parsed(Ok(parsed)) => {
                    in_batch.push(file.clone());
                    pending.push((file, parsed));
                }
            }
        }
        // Files held back earlier may fit now.
        pending.extend(std::mem::take(&mut self.blocked));
        for (file, _) in &pending {
            self.errors.remove(file);
        }
        for (file, parsed, err) in self.accept(pending) {
            if in_batch.contains(&file) {
                errors.push(err.clone());
            }
            self.errors.insert(file.clone(), err);
            self.blocked.insert(file, parsed);
        }
        errors
    }

    /// Files not (fully) in force and why, for the admin API.
    fn rejected(&self) -> Vec<RejectedPolicy> {
        self.errors
            .iter()
            .map(|(file, err)| RejectedPolicy {
                source: format!("file:{file}"),
                error: err.to_string(),
            })
            .collect()
    }

    /// Accepts each new file content that does not conflict with the other files' current policies,
    /// retrying until nothing more can be accepted (so a policy can move from one file to another in
    /// one batch, in either order). Returns the files that stay rejected.
    fn accept(
        &mut self,
        mut pending: Vec<(String, Vec<Parsed>)>,
    ) -> Vec<(String, Vec<Parsed>, PolicyError)> {
        loop {
            let mut progressed = false;
            let mut rejected = Vec::new();
            for (file, parsed) in pending {
                let others = self
                    .files
                    .iter()
                    .filter(|(f, _)| **f != file)
                    .flat_map(|(_, p)| p);
                let found = parsed
                    .iter()
                    .find_map(|new| find_conflict(new, others.clone()));
                match found {
                    None => {
                        self.files.insert(file, parsed);
                        progressed = true;
                    }
                    Some(err) => rejected.push((file, parsed, err)),
                }
            }
            if rejected.is_empty() || !progressed {
                return rejected;
            }
            pending = rejected.into_iter().map(|(f, p, _)| (f, p)).collect();
        }
    }

    fn merged(&self) -> PolicySet {
        PolicySet {
            entries: self
                .files
                .values()
                .flatten()
                .map(|p| p.entry.clone())
                .collect(),
        }
    }
}

/// Like [`crate::sources::file::watch_endpoints_file`], for a policy file or directory (needs a tokio
/// runtime): each file is loaded independently; a file that becomes invalid (or would define a scope
/// another file already defines) keeps its last good entries and is logged (`tracing::error!` with
/// fields `file`, `document`, `line`, `field`, `reason`); the others update. In directory mode a
/// deleted file's policies are removed; a watched single file that disappears keeps its policies. The
/// merged [`PolicySet`] is sent whenever it changes. Dropping the handle stops watching.
pub fn watch_policies(
    path: PathBuf,
    tx: tokio::sync::watch::Sender<Arc<PolicySet>>,
) -> anyhow::Result<WatchHandle> {
    watch_policies_with_status(path, tx, None)
}

/// [`watch_policies`], also publishing the files currently rejected (and why) to `status`.
pub fn watch_policies_with_status(
    path: PathBuf,
    tx: tokio::sync::watch::Sender<Arc<PolicySet>>,
    status: Option<tokio::sync::watch::Sender<PolicyStatus>>,
) -> anyhow::Result<WatchHandle> {
    let dir_mode = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
    let (dir, file_name) = if dir_mode {
        (path.clone(), None)
    } else {
        let (dir, name) = watch::split_file_path(&path)?;
        (dir, Some(name))
    };
    let mut state = PolicyFiles::seeded(&tx.borrow());
    let on_change = move |changes: Vec<FileChange>| {
        let batch = changes
            .into_iter()
            .map(|change| {
                let file = if dir_mode {
                    change.path.display().to_string()
                } else {
                    path.display().to_string()
                };
                let update = match change.content {
                    None => FileUpdate::Deleted {
                        drop_policies: dir_mode,
                    },
                    Some(bytes) => FileUpdate::Parsed(parse_bytes(&file, &bytes)),
                };
                (file, update)
            })
            .collect();
        for err in state.update(batch) {
            log_rejected(&err);
        }
        if let Some(status) = &status {
            publish_rejected(status, |s| &mut s.files, state.rejected());
        }
        let merged = state.merged();
        let policies = merged.entries.len();
        let sent = tx.send_if_modified(|current| {
            if **current == merged {
                return false;
            }
            *current = Arc::new(merged);
            true
        });
        if sent {
            crate::admin::metrics::metrics()
                .policy_reloads
                .get_or_create(&crate::admin::metrics::result_label(true))
                .inc();
            info!(policies, "failover policies reloaded");
        }
    };
    match file_name {
        None => watch::watch_stable_files(dir, is_policy_file_name, on_change),
        Some(name) => watch::watch_stable_files(dir, move |n| n == name, on_change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::labels;
    use crate::sources::watch::testutil::TempDir;

    const FULL: &str = "\
apiVersion: failover.example.com/v1alpha1
kind: FailoverPolicy
metadata: {name: checkout, namespace: shop}
spec:
  service: checkout
  failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]
  failover: [{from: us-east1, to: us-west1}]
  backups: [{service: checkout-dr, cluster: west}, {service: checkout, namespace: shop-dr}]
  outlierDetection: {consecutive5xx: 3, consecutiveGatewayFailure: 4, interval: 2s, baseEjectionTime: 1m, maxEjectionPercent: 50}
  overprovisioningFactor: 200
  panicThreshold: 10
  mtls: STRICT
";

    fn parse(text: &str) -> Result<Vec<PolicyEntry>, PolicyError> {
        parse_policies("p.yaml", text)
    }

    fn doc(namespace: &str, name: &str, spec: &str) -> String {
        format!(
            "kind: FailoverPolicy\nmetadata:\n  name: {name}\n  namespace: \"{namespace}\"\nspec:\n{spec}"
        )
    }

    /// (document, line, field, reason, display) of an Invalid error.
    fn invalid(text: &str) -> (usize, Option<usize>, String, String, String) {
        match parse(text) {
            Err(err @ PolicyError::Invalid { .. }) => (
                err.document().unwrap(),
                err.line(),
                err.field().to_string(),
                err.reason(),
                err.to_string(),
            ),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    fn spec_error(spec: &str) -> (Option<usize>, String, String) {
        let (_, line, field, reason, _) = invalid(&doc("shop", "p", spec));
        (line, field, reason)
    }

    #[test]
    fn parses_every_field() {
        let entries = parse(FULL).unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(
            e.scope,
            PolicyScope::Service(ServiceId::new("shop", "checkout"))
        );
        assert_eq!(
            e.origin,
            PolicyOrigin::Named {
                namespace: "shop".into(),
                name: "checkout".into(),
                source: "p.yaml".into()
            }
        );
        let expected = FailoverPolicy {
            failover_priority: vec![labels::REGION.into(), labels::ZONE.into()],
            prefer_own_cluster: false,
            failover: vec![RegionFailover {
                from: "us-east1".into(),
                to: "us-west1".into(),
            }],
            backups: vec![
                BackupService {
                    service: ServiceId::new("shop", "checkout-dr"),
                    cluster: Some("west".into()),
                },
                BackupService {
                    service: ServiceId::new("shop-dr", "checkout"),
                    cluster: None,
                },
            ],
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 3,
                consecutive_gateway_failure: 4,
                interval: Duration::from_secs(2),
                base_ejection_time: Duration::from_secs(60),
                max_ejection_percent: 50,
            }),
            overprovisioning_factor: 200,
            panic_threshold: 10,
            mtls: MtlsMode::Strict,
            ..FailoverPolicy::default()
        };
        assert_eq!(*e.policy, expected);
    }

    #[test]
    fn absent_fields_take_the_defaults_and_scopes_follow_metadata() {
        let text = format!(
            "{}---\n{}",
            doc(
                "shop",
                "ns-default",
                "  outlierDetection: {consecutive5xx: 7}\n"
            ),
            doc("*", "mesh", "  {}\n")
        );
        let entries = parse(&text).unwrap();
        assert_eq!(entries[0].scope, PolicyScope::Namespace("shop".into()));
        assert_eq!(
            *entries[0].policy,
            FailoverPolicy {
                outlier_detection: Some(OutlierDetection {
                    consecutive_5xx: 7,
                    ..OutlierDetection::default()
                }),
                ..FailoverPolicy::default()
            }
        );
        assert_eq!(entries[1].scope, PolicyScope::Mesh);
        assert_eq!(*entries[1].policy, FailoverPolicy::default());
    }

    #[test]
    fn the_shipped_example_policies_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        if dir.exists() {
            let set = load_policies(&dir).unwrap();
            assert!(!set.entries.is_empty());
        }
    }

    #[test]
    fn empty_documents_are_skipped_but_an_empty_file_is_an_error() {
        let text = format!(
            "---\n{}---\n---\n",
            doc("shop", "a", "  panicThreshold: 1\n")
        );
        assert_eq!(parse(&text).unwrap().len(), 1);
        for empty in ["", "# nothing\n", "---\n", "---\n---\n", "~\n"] {
            let err = parse(empty).unwrap_err();
            assert!(
                matches!(err, PolicyError::Empty { .. }),
                "{empty:?}: {err:?}"
            );
            assert!(err.to_string().contains("file is empty"), "{err}");
        }
    }

    #[test]
    fn syntax_errors_name_document_and_line() {
        let text = format!("{}---\nkind: [\n", doc("shop", "a", "  {}\n"));
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, PolicyError::Syntax { .. }), "{err:?}");
        assert_eq!(err.document(), Some(2));
        assert!(err.line().unwrap() >= 7, "{err}");
        assert!(err.to_string().starts_with("p.yaml:"), "{err}");
        assert!(
            err.to_string().contains("document 2: invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let (document, line, field, reason, _) = invalid(&format!(
            "{}---\n{}",
            doc("a", "x", "  {}\n"),
            doc("b", "y", "  panicThreshold: 1\n  panicThreshold: 2\n")
        ));
        assert_eq!((document, line), (2, Some(14)));
        assert_eq!(field, "spec.panicThreshold");
        assert!(reason.starts_with("duplicate key"), "{reason}");
    }

    #[test]
    fn kind_is_checked_first() {
        let (document, line, field, reason, display) =
            invalid("kind: Deployment\nmetadata: {name: x}\nspec: {replicas: 3}\n");
        assert_eq!((document, line, field.as_str()), (1, Some(1), "kind"));
        assert!(reason.contains("unsupported kind `Deployment`"), "{reason}");
        assert_eq!(display, format!("p.yaml:1:1: document 1: kind: {reason}"));
        let (_, _, _, reason, _) = invalid("kind: failoverpolicy\nmetadata: {}\nspec: {}\n");
        assert!(
            reason.contains("did you mean `FailoverPolicy`?"),
            "{reason}"
        );
        let (_, _, field, reason, _) = invalid("metadata: {name: a, namespace: b}\nspec: {}\n");
        assert_eq!(field, "kind");
        assert!(reason.contains("missing field `kind`"), "{reason}");
        let (_, _, field, _, _) = invalid("- kind: FailoverPolicy\n");
        assert_eq!(field, "");
    }

    #[test]
    fn metadata_is_required_and_checked() {
        let (_, line, field, reason, _) =
            invalid("kind: FailoverPolicy\nmetadata: {name: a}\nspec: {}\n");
        assert_eq!((line, field.as_str()), (Some(2), "metadata.namespace"));
        assert!(reason.contains("\"*\""), "{reason}");
        let (_, _, field, _, _) =
            invalid("kind: FailoverPolicy\nmetadata: {namespace: a}\nspec: {}\n");
        assert_eq!(field, "metadata.name");
        let (_, _, field, reason, _) = invalid("kind: FailoverPolicy\nspec: {}\n");
        assert_eq!(field, "metadata");
        assert!(reason.contains("missing field `metadata`"), "{reason}");
        let (_, _, field, _, _) =
            invalid("kind: FailoverPolicy\nmetadata: {name: a, namespace: Shop}\nspec: {}\n");
        assert_eq!(field, "metadata.namespace");
        let (_, _, field, _, _) =
            invalid("kind: FailoverPolicy\nmetadata: {name: a, namespace: shop}\n");
        assert_eq!(field, "spec");
    }

    #[test]
    fn unknown_fields_suggest_the_known_one() {
        let (document, line, field, reason, display) = invalid(&format!(
            "{}---\n{}",
            doc("a", "x", "  {}\n"),
            doc("b", "y", "  failoverPriorty: [a]\n")
        ));
        assert_eq!((document, line), (2, Some(13)));
        assert_eq!(field, "spec.failoverPriorty");
        assert!(
            reason.contains("did you mean `failoverPriority`?"),
            "{reason}"
        );
        assert!(
            display.starts_with("p.yaml:13:3: document 2: spec.failoverPriorty: unknown field"),
            "{display}"
        );
        let (_, field, reason) = spec_error("  outlierDetection: {consecutive_5xx: 1}\n");
        assert_eq!(field, "spec.outlierDetection.consecutive_5xx");
        assert!(
            reason.contains("did you mean `consecutive5xx`?"),
            "{reason}"
        );
        let (_, _, field, _, _) = invalid(&format!("extra: 1\n{}", doc("a", "x", "  {}\n")));
        assert_eq!(field, "extra");
    }

    #[test]
    fn mesh_default_cannot_name_a_service() {
        let (_, line, field, reason, _) = invalid(&doc("*", "m", "  service: checkout\n"));
        assert_eq!((line, field.as_str()), (Some(6), "spec.service"));
        assert!(reason.contains("mesh default"), "{reason}");
    }

    #[test]
    fn failover_rules_are_checked() {
        let (line, field, reason) =
            spec_error("  failover:\n  - {from: a, to: b}\n  - {from: c, to: c}\n");
        assert_eq!((line, field.as_str()), (Some(8), "spec.failover[1]"));
        assert!(reason.contains("cannot fail over to itself"), "{reason}");
        let (_, field, reason) =
            spec_error("  failover:\n  - {from: a, to: b}\n  - {from: a, to: b}\n");
        assert_eq!(field, "spec.failover[1]");
        assert!(
            reason.contains("duplicate rule a → b (also failover[0])"),
            "{reason}"
        );
        let (_, field, _) = spec_error("  failover: [{from: '', to: b}]\n");
        assert_eq!(field, "spec.failover[0].from");
        let (_, field, reason) = spec_error("  failover: [{from: a}]\n");
        assert_eq!(field, "spec.failover[0].to");
        assert!(reason.contains("missing field"), "{reason}");
        // Several targets for one region are fine (preference order).
        parse(&doc(
            "shop",
            "p",
            "  failover: [{from: a, to: b}, {from: a, to: c}]\n",
        ))
        .unwrap();
    }

    #[test]
    fn failover_priority_is_checked() {
        let (line, field, reason) = spec_error("  failoverPriority:\n  - a\n  - b\n  - a\n");
        assert_eq!(
            (line, field.as_str()),
            (Some(9), "spec.failoverPriority[2]")
        );
        assert!(reason.contains("duplicate label key `a`"), "{reason}");
        let (_, field, reason) = spec_error("  failoverPriority: [a, '']\n");
        assert_eq!(field, "spec.failoverPriority[1]");
        assert!(reason.contains("empty"), "{reason}");
        let (_, field, reason) = spec_error("  failoverPriority: []\n");
        assert_eq!(field, "spec.failoverPriority");
        assert!(reason.contains("omit it"), "{reason}");
    }

    #[test]
    fn mtls_is_strict_or_disable() {
        let (_, field, reason) = spec_error("  mtls: permissive\n");
        assert_eq!(field, "spec.mtls");
        assert_eq!(reason, "must be STRICT or DISABLE, got \"permissive\"");
        let entries = parse(&doc("shop", "a", "  mtls: disable\n")).unwrap();
        assert_eq!(entries[0].policy.mtls, MtlsMode::Disable);
    }

    #[test]
    fn numbers_are_range_checked() {
        let cases = [
            ("  panicThreshold: 101\n", "spec.panicThreshold"),
            ("  panicThreshold: -1\n", "spec.panicThreshold"),
            (
                "  overprovisioningFactor: 99\n",
                "spec.overprovisioningFactor",
            ),
            (
                "  overprovisioningFactor: 100001\n",
                "spec.overprovisioningFactor",
            ),
            (
                "  outlierDetection: {maxEjectionPercent: 101}\n",
                "spec.outlierDetection.maxEjectionPercent",
            ),
            (
                "  outlierDetection: {maxEjectionPercent: 0}\n",
                "spec.outlierDetection.maxEjectionPercent",
            ),
            (
                "  outlierDetection: {consecutive5xx: -2}\n",
                "spec.outlierDetection.consecutive5xx",
            ),
        ];
        for (spec, expected) in cases {
            let (line, field, _) = spec_error(spec);
            assert_eq!(field, expected, "{spec}");
            assert_eq!(line, Some(6), "{spec}");
        }
        let (_, _, reason) = spec_error("  overprovisioningFactor: 50\n");
        assert!(reason.contains("spill traffic"), "{reason}");
        for ok in [
            "  overprovisioningFactor: 100\n",
            "  overprovisioningFactor: 100000\n",
            "  panicThreshold: 100\n",
            "  outlierDetection: {maxEjectionPercent: 1}\n",
        ] {
            parse(&doc("shop", "p", ok)).unwrap();
        }
    }

    #[test]
    fn outlier_detection_that_cannot_eject_is_rejected() {
        let (line, field, reason) = spec_error(
            "  outlierDetection:\n    consecutive5xx: 0\n    consecutiveGatewayFailure: 0\n",
        );
        assert_eq!((line, field.as_str()), (Some(6), "spec.outlierDetection"));
        assert!(reason.contains("could never fail over"), "{reason}");
        // One of them is enough (the other keeps its default or is set).
        parse(&doc(
            "shop",
            "p",
            "  outlierDetection: {consecutive5xx: 0}\n",
        ))
        .unwrap();
        parse(&doc(
            "shop",
            "p",
            "  outlierDetection: {consecutiveGatewayFailure: 0}\n",
        ))
        .unwrap();
    }

    #[test]
    fn durations() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("0.25ms", Duration::from_micros(250)),
            (".5s", Duration::from_millis(500)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for (text, needle) in [
            ("", "empty"),
            ("-1s", "negative"),
            ("0s", "greater than zero"),
            ("0ms", "greater than zero"),
            ("2", "no unit"),
            ("1.5", "no unit"),
            ("abc", "not a duration"),
            ("2 s", "not a duration"),
            ("2sec", "not a duration"),
            ("1..2s", "not a duration"),
            ("s", "not a duration"),
            ("99999999999999999999999h", "not a duration"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let (line, field, reason) = spec_error("  outlierDetection:\n    interval: 5\n");
        assert_eq!(
            (line, field.as_str()),
            (Some(7), "spec.outlierDetection.interval")
        );
        assert!(reason.contains("no unit"), "{reason}");
        let (_, field, reason) = spec_error("  outlierDetection: {baseEjectionTime: -3s}\n");
        assert_eq!(field, "spec.outlierDetection.baseEjectionTime");
        assert!(reason.contains("negative"), "{reason}");
    }

    #[test]
    fn the_same_scope_twice_in_a_file_is_an_error_naming_both() {
        let text = format!(
            "{}---\n{}",
            doc("shop", "first", "  service: checkout\n"),
            doc("shop", "second", "  service: checkout\n")
        );
        let (document, line, field, reason, _) = invalid(&text);
        assert_eq!((document, line), (2, Some(13)));
        assert_eq!(field, "spec.service");
        assert!(reason.contains("shop/second"), "{reason}");
        assert!(
            reason.contains("shop/first (p.yaml, document 1, line 6)"),
            "{reason}"
        );
        assert!(reason.contains("service shop/checkout"), "{reason}");

        let text = format!(
            "{}---\n{}",
            doc("*", "a", "  {}\n"),
            doc("*", "b", "  {}\n")
        );
        let (_, _, field, reason, _) = invalid(&text);
        assert_eq!(field, "metadata.namespace");
        assert!(reason.contains("mesh default"), "{reason}");
        // A namespace default and a service policy in it are different scopes.
        parse(&format!(
            "{}---\n{}",
            doc("shop", "a", "  {}\n"),
            doc("shop", "b", "  service: cart\n")
        ))
        .unwrap();
    }

    #[test]
    fn load_reads_a_file_or_a_sorted_directory() {
        let dir = TempDir::new("policy-load");
        std::fs::write(dir.join("b.yml"), doc("shop", "b", "  panicThreshold: 2\n")).unwrap();
        std::fs::write(dir.join("a.yaml"), doc("*", "a", "  panicThreshold: 1\n")).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a policy").unwrap();
        std::fs::write(dir.join(".hidden.yaml"), "garbage: [").unwrap();
        std::fs::create_dir(dir.join("sub.yaml")).unwrap();
        let set = load_policies(dir.path()).unwrap();
        let names: Vec<String> = set
            .entries
            .iter()
            .map(|e| match &e.origin {
                PolicyOrigin::Named { name, source, .. } => {
                    assert!(source.starts_with(&dir.path().display().to_string()));
                    name.clone()
                }
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, vec!["a", "b"]);

        let single = load_policies(&dir.join("b.yml")).unwrap();
        assert_eq!(single.entries.len(), 1);

        let empty = TempDir::new("policy-load-empty");
        assert_eq!(load_policies(empty.path()).unwrap(), PolicySet::default());
        let err = load_policies(&dir.join("missing.yaml")).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }), "{err:?}");
    }

    #[test]
    fn load_rejects_the_same_scope_in_two_files() {
        let dir = TempDir::new("policy-load-dup");
        std::fs::write(dir.join("a.yaml"), doc("shop", "a", "  {}\n")).unwrap();
        std::fs::write(dir.join("b.yaml"), doc("shop", "b", "  {}\n")).unwrap();
        let err = load_policies(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("b.yaml:4:"), "{text}");
        assert!(text.contains("shop/b"), "{text}");
        assert!(text.contains("shop/a ("), "{text}");
        assert!(text.contains("a.yaml, document 1, line 4)"), "{text}");
        assert!(text.contains("namespace shop"), "{text}");
    }

    #[test]
    fn load_rejects_an_invalid_file_in_a_directory() {
        let dir = TempDir::new("policy-load-bad");
        std::fs::write(
            dir.join("a.yaml"),
            doc("shop", "a", "  panicThreshold: 200\n"),
        )
        .unwrap();
        let err = load_policies(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("a.yaml:6:3: document 1: spec.panicThreshold: "),
            "{err}"
        );
    }

    fn factor_of(set: &PolicySet, ns: &str) -> u32 {
        let port = crate::model::ServicePort {
            name: "http".into(),
            port: 80,
        };
        set.resolve_port(&ServiceId::new(ns, "svc"), &port, None)
            .policy
            .overprovisioning_factor
    }

    fn with_factor(ns: &str, name: &str, factor: u32) -> String {
        doc(ns, name, &format!("  overprovisioningFactor: {factor}\n"))
    }

    async fn changed(
        rx: &mut tokio::sync::watch::Receiver<Arc<PolicySet>>,
        within: Duration,
    ) -> Arc<PolicySet> {
        tokio::time::timeout(within, rx.changed())
            .await
            .expect("no policy set sent in time")
            .expect("sender dropped");
        rx.borrow_and_update().clone()
    }

    async fn unchanged(rx: &mut tokio::sync::watch::Receiver<Arc<PolicySet>>, for_: Duration) {
        tokio::time::sleep(for_).await;
        assert!(!rx.has_changed().unwrap(), "a policy set was sent");
    }

    #[tokio::test]
    async fn watching_a_directory_updates_files_independently() {
        let dir = TempDir::new("policy-watch-dir");
        std::fs::write(dir.join("a.yaml"), with_factor("a", "pa", 110)).unwrap();
        std::fs::write(dir.join("b.yaml"), with_factor("b", "pb", 120)).unwrap();
        let initial = load_policies(dir.path()).unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(initial));
        let (status_tx, status) = tokio::sync::watch::channel(PolicyStatus::default());
        let _handle =
            watch_policies_with_status(dir.path().to_path_buf(), tx, Some(status_tx)).unwrap();
        unchanged(&mut rx, Duration::from_millis(300)).await;

        // A valid edit of one file.
        let t0 = std::time::Instant::now();
        std::fs::write(dir.join("a.yaml"), with_factor("a", "pa", 111)).unwrap();
        let set = changed(&mut rx, Duration::from_secs(1)).await;
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!((factor_of(&set, "a"), factor_of(&set, "b")), (111, 120));

        // a.yaml turns invalid: it keeps its last good policy while b.yaml updates.
        std::fs::write(dir.join("a.yaml"), with_factor("a", "pa", 1)).unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        let rejected = status.borrow().files.clone();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert!(rejected[0].source.ends_with("a.yaml"), "{rejected:?}");
        assert!(
            rejected[0].error.contains("overprovisioningFactor"),
            "{rejected:?}"
        );
        dir.replace("b.yaml", &with_factor("b", "pb", 121));
        let set = changed(&mut rx, Duration::from_secs(1)).await;
        assert_eq!((factor_of(&set, "a"), factor_of(&set, "b")), (111, 121));

        // A new file claiming a's scope is rejected; a's policy stays.
        std::fs::write(dir.join("c.yaml"), with_factor("a", "pc", 130)).unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;

        // a.yaml moves to another namespace: the held-back c.yaml now fits and is accepted too.
        std::fs::write(dir.join("a.yaml"), with_factor("z", "pa", 140)).unwrap();
        let set = changed(&mut rx, Duration::from_secs(1)).await;
        assert_eq!((factor_of(&set, "a"), factor_of(&set, "z")), (130, 140));
        assert!(status.borrow().files.is_empty(), "{:?}", status.borrow());

        // A deleted file's policies go away.
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        let set = changed(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(factor_of(&set, "b"), 140 /* the built-in default */);
        assert_eq!(set.entries.len(), 2);
        assert_eq!(factor_of(&set, "a"), 130);
    }

    #[tokio::test]
    async fn watching_a_single_file_keeps_it_when_deleted() {
        let dir = TempDir::new("policy-watch-file");
        let path = dir.join("policy.yaml");
        std::fs::write(&path, with_factor("a", "p", 110)).unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(load_policies(&path).unwrap()));
        let _handle = watch_policies(path.clone(), tx).unwrap();
        unchanged(&mut rx, Duration::from_millis(300)).await;

        dir.replace("policy.yaml", &with_factor("a", "p", 115));
        let set = changed(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(factor_of(&set, "a"), 115);
        assert_eq!(set.entries.len(), 1);

        std::fs::remove_file(&path).unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(&path, "").unwrap();
        unchanged(&mut rx, Duration::from_millis(400)).await;
        std::fs::write(&path, with_factor("a", "p", 116)).unwrap();
        let set = changed(&mut rx, Duration::from_secs(1)).await;
        assert_eq!(factor_of(&set, "a"), 116);
    }

    fn parsed(file: &str, ns: &str, name: &str) -> FileUpdate {
        FileUpdate::Parsed(parse_file(file, &with_factor(ns, name, 150)))
    }

    #[test]
    fn a_policy_can_move_between_files_in_one_batch_in_either_order() {
        for (from, to) in [("a.yaml", "b.yaml"), ("b.yaml", "a.yaml")] {
            let mut state = PolicyFiles::new();
            assert!(state
                .update(vec![(from.into(), parsed(from, "shop", "p"))])
                .is_empty());
            // `to` now defines the scope, `from` defines another one; in sorted order.
            let mut batch = vec![
                (from.to_string(), parsed(from, "other", "q")),
                (to.to_string(), parsed(to, "shop", "p")),
            ];
            batch.sort_by(|a, b| a.0.cmp(&b.0));
            assert!(state.update(batch).is_empty(), "{from} → {to}");
            assert_eq!(state.merged().entries.len(), 2);
            assert!(state.blocked.is_empty());
        }
    }

    fn backing_up(name: &str, to: &str) -> String {
        doc(
            "shop",
            name,
            &format!("  service: {name}\n  backups: [{{service: {to}}}]\n"),
        )
    }

    #[test]
    fn backups_are_checked() {
        let cases: &[(&str, &str, &str)] = &[
            // (spec, field, part of the reason)
            (
                "  service: checkout\n  backups: [{namespace: shop}]\n",
                "spec.backups[0].service",
                "missing field `service`",
            ),
            (
                "  service: checkout\n  backups: [{service: dr, clustr: west}]\n",
                "spec.backups[0].clustr",
                "did you mean `cluster`?",
            ),
            (
                "  service: checkout\n  backups: [{service: checkout}]\n",
                "spec.backups[0].service",
                "shop/checkout cannot back itself up",
            ),
            (
                "  service: checkout\n  backups: [{service: dr}, {service: dr, namespace: shop}]\n",
                "spec.backups[1]",
                "duplicate backup (also backups[0])",
            ),
            (
                "  service: checkout\n  backups: [{service: Dr}]\n",
                "spec.backups[0].service",
                "service name",
            ),
            (
                "  service: checkout\n  backups: [{service: dr, cluster: \"\"}]\n",
                "spec.backups[0].cluster",
                "must name a cluster",
            ),
            // a namespace default would make every service (the backup too) back itself up
            (
                "  backups: [{service: dr}]\n",
                "spec.backups",
                "set spec.service",
            ),
        ];
        for (spec, field, reason_part) in cases {
            let (line, got_field, reason) = spec_error(spec);
            assert_eq!(got_field, *field, "{spec}");
            assert!(reason.contains(reason_part), "{spec}: {reason}");
            assert!(line.is_some(), "{spec}: no line");
        }
    }

    #[test]
    fn backup_cycles_are_refused_naming_both_policies() {
        // In one file: the second document closes the cycle.
        let text = format!("{}---\n{}", backing_up("a", "b"), backing_up("b", "a"));
        let (document, line, field, reason, _) = invalid(&text);
        assert_eq!((document, field.as_str()), (2, "spec.backups[0]"));
        assert_eq!(line, Some(15));
        assert!(reason.contains("shop/b → shop/a → shop/b"), "{reason}");
        assert!(
            reason.contains("policy shop/a (p.yaml, document 1, line 6) backs up to shop/b"),
            "{reason}"
        );

        // Across files, a longer cycle: the file that closes it is rejected.
        let dir = TempDir::new("policy-backup-cycle");
        std::fs::write(dir.join("a.yaml"), backing_up("a", "b")).unwrap();
        std::fs::write(dir.join("b.yaml"), backing_up("b", "c")).unwrap();
        std::fs::write(dir.join("c.yaml"), backing_up("c", "a")).unwrap();
        let err = load_policies(dir.path()).unwrap_err();
        assert!(err.file().ends_with("c.yaml"), "{err}");
        assert!(
            err.reason().contains("shop/c → shop/a → shop/b → shop/c"),
            "{err}"
        );
        assert!(err.reason().contains("policy shop/b ("), "{err}");

        // Not a cycle: a backs up to b, b to c.
        std::fs::write(dir.join("c.yaml"), doc("shop", "c", "  service: c\n")).unwrap();
        assert_eq!(load_policies(dir.path()).unwrap().entries.len(), 3);
    }

    #[test]
    fn a_port_policy_is_its_own_scope_and_its_port_is_checked() {
        let text = format!(
            "{}---\n{}---\n{}---\n{}",
            doc("shop", "web", "  service: web\n"),
            doc("shop", "web-http", "  service: web\n  port: http\n"),
            doc("shop", "web-9090", "  service: web\n  port: 9090\n"),
            doc(
                "shop",
                "web-quoted",
                "  service: web\n  port: \"8443\"\n  backups: [{service: dr}]\n"
            ),
        );
        let entries = parse(&text).unwrap();
        let web = ServiceId::new("shop", "web");
        let scopes: Vec<&PolicyScope> = entries.iter().map(|e| &e.scope).collect();
        assert_eq!(
            scopes,
            [
                &PolicyScope::Service(web.clone()),
                &PolicyScope::ServicePort(web.clone(), "http".into()),
                &PolicyScope::ServicePort(web.clone(), "9090".into()),
                &PolicyScope::ServicePort(web.clone(), "8443".into()),
            ]
        );
        assert_eq!(
            entries[3].policy.backups[0].service,
            ServiceId::new("shop", "dr"),
            "a port policy may have backups"
        );

        // The same port twice is a conflict, reported at spec.port.
        let text = format!(
            "{}---\n{}",
            doc("shop", "a", "  service: web\n  port: http\n"),
            doc("shop", "b", "  service: web\n  port: http\n"),
        );
        let (document, _, field, reason, _) = invalid(&text);
        assert_eq!((document, field.as_str()), (2, "spec.port"));
        assert!(reason.contains("service shop/web port http"), "{reason}");

        for (spec, reason_part) in [
            ("  port: http\n", "set spec.service too"),
            ("  service: web\n  port: 0\n", "between 1 and 65535"),
            ("  service: web\n  port: 70000\n", "between 1 and 65535"),
            ("  service: web\n  port: -1\n", "between 1 and 65535"),
            ("  service: web\n  port: HTTP\n", "port name"),
            ("  service: web\n  port: a-very-long-port-name\n", "15"),
            ("  service: web\n  port: [80]\n", "port"),
        ] {
            let (line, field, reason) = spec_error(spec);
            assert_eq!(field, "spec.port", "{spec}: {reason}");
            assert!(reason.contains(reason_part), "{spec}: {reason}");
            assert!(line.is_some(), "{spec}");
        }
    }

    #[test]
    fn a_port_policy_closing_a_backup_cycle_is_refused() {
        let text = format!(
            "{}---\n{}",
            doc(
                "shop",
                "a-http",
                "  service: a\n  port: http\n  backups: [{service: b}]\n"
            ),
            backing_up("b", "a"),
        );
        let (document, _, field, reason, _) = invalid(&text);
        assert_eq!((document, field.as_str()), (2, "spec.backups[0]"));
        assert!(reason.contains("shop/b → shop/a → shop/b"), "{reason}");
        assert!(reason.contains("policy shop/a-http ("), "{reason}");
    }

    #[test]
    fn a_file_closing_a_backup_cycle_keeps_its_last_good_policies() {
        let mut state = PolicyFiles::new();
        let p = |file: &str, text: String| {
            (
                file.to_string(),
                FileUpdate::Parsed(parse_file(file, &text)),
            )
        };
        assert!(state
            .update(vec![
                p("a.yaml", backing_up("a", "b")),
                p("b.yaml", doc("shop", "b", "  service: b\n")),
            ])
            .is_empty());
        let good = state.merged();
        let errors = state.update(vec![p("b.yaml", backing_up("b", "a"))]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file(), "b.yaml");
        assert!(errors[0].reason().contains("cycle"), "{}", errors[0]);
        assert_eq!(state.merged(), good, "the last good set stays in force");
        assert_eq!(state.rejected()[0].source, "file:b.yaml");
    }

    #[test]
    fn a_conflicting_file_is_held_back_until_it_fits() {
        let mut state = PolicyFiles::new();
        let errors = state.update(vec![
            ("a.yaml".into(), parsed("a.yaml", "shop", "p")),
            ("b.yaml".into(), parsed("b.yaml", "shop", "q")),
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file(), "b.yaml");
        let rejected = state.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].source, "file:b.yaml");
        assert_eq!(rejected[0].error, errors[0].to_string());
        assert!(
            errors[0]
                .reason()
                .contains("shop/p (a.yaml, document 1, line 4)"),
            "{}",
            errors[0]
        );
        assert_eq!(state.merged().entries.len(), 1);

        // An unrelated change: b.yaml still does not fit, and is not reported again.
        let errors = state.update(vec![("c.yaml".into(), parsed("c.yaml", "x", "r"))]);
        assert!(errors.is_empty());
        assert_eq!(state.merged().entries.len(), 2);

        // a.yaml goes away (directory mode): b.yaml takes over.
        let errors = state.update(vec![(
            "a.yaml".into(),
            FileUpdate::Deleted {
                drop_policies: true,
            },
        )]);
        assert!(errors.is_empty());
        assert!(state.rejected().is_empty(), "b.yaml is in force now");
        let set = state.merged();
        assert_eq!(set.entries.len(), 2);
        assert!(set.entries.iter().any(|e| matches!(
            &e.origin,
            PolicyOrigin::Named { name, .. } if name == "q"
        )));

        // An invalid new content keeps the last good policies.
        let errors = state.update(vec![(
            "c.yaml".into(),
            FileUpdate::Parsed(parse_file(
                "c.yaml",
                "kind: FailoverPolicy
",
            )),
        )]);
        assert_eq!(errors.len(), 1);
        assert_eq!(state.merged(), set);
        assert_eq!(
            state
                .rejected()
                .iter()
                .map(|r| r.source.as_str())
                .collect::<Vec<_>>(),
            ["file:c.yaml"]
        );
        // Fixed: no longer rejected.
        let errors = state.update(vec![("c.yaml".into(), parsed("c.yaml", "x", "r"))]);
        assert!(errors.is_empty());
        assert!(state.rejected().is_empty());
    }

    #[test]
    fn seeding_from_a_published_set_groups_by_source() {
        let text = format!(
            "{}---\n{}",
            with_factor("a", "x", 101),
            with_factor("b", "y", 102)
        );
        let set = PolicySet {
            entries: parse_policies("one.yaml", &text).unwrap(),
        };
        let state = PolicyFiles::seeded(&set);
        assert_eq!(state.files.len(), 1);
        assert_eq!(state.merged(), set);
    }

    const LANGUAGE: &str = "\
kind: FailoverPolicy
metadata: {name: web, namespace: shop}
spec:
  failoverPriority:
  - topology.kubernetes.io/region
  - topology.istio.io/network=net-a
  - topology.kubernetes.io/zone
  distribute:
  - from: eu-west4/eu-west4-a/*
    to:
      eu-west4/eu-west4-a/*: 50
      eu-west4/eu-west4-b/sz-1: 50
  - from: eu-west4/*
    to:
      eu-west4/eu-west4-c/*: 20
      eu-west4/eu-west4-b/*: 80
  - from: \"*\"
    to: {\"*\": 100}
  healthCheck:
    http: {path: /healthz, host: web.shop}
    interval: 10s
    timeout: 2s
    unhealthyThreshold: 4
    healthyThreshold: 1
  outlierDetection:
    enabled: false
  spillover: allOrNothing
  panicThreshold: 0
";

    fn pattern(text: &str) -> LocalityPattern {
        parse_pattern(text).unwrap()
    }

    #[test]
    fn parses_the_policy_language_fields() {
        let entries = parse(LANGUAGE).unwrap();
        let p = &entries[0].policy;
        assert_eq!(
            p.failover_priority,
            vec![
                PriorityKey::label(labels::REGION),
                PriorityKey::pinned("topology.istio.io/network", "net-a"),
                PriorityKey::label(labels::ZONE),
            ]
        );
        assert_eq!(
            p.distribute,
            vec![
                DistributeRule {
                    from: pattern("eu-west4/eu-west4-a/*"),
                    to: vec![
                        (pattern("eu-west4/eu-west4-a/*"), 50),
                        (pattern("eu-west4/eu-west4-b/sz-1"), 50),
                    ],
                },
                DistributeRule {
                    from: pattern("eu-west4/*"),
                    // The order written, not sorted.
                    to: vec![
                        (pattern("eu-west4/eu-west4-c/*"), 20),
                        (pattern("eu-west4/eu-west4-b/*"), 80),
                    ],
                },
                DistributeRule {
                    from: pattern("*"),
                    to: vec![(pattern("*"), 100)],
                },
            ]
        );
        assert_eq!(
            p.health_check,
            Some(HealthCheck {
                protocol: HealthCheckProtocol::Http {
                    path: "/healthz".into(),
                    host: Some("web.shop".into()),
                },
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                unhealthy_threshold: 4,
                healthy_threshold: 1,
            })
        );
        assert_eq!(p.outlier_detection, None);
        assert_eq!(p.spillover, Spillover::AllOrNothing);
        assert_eq!(p.overprovisioning_factor, ALL_OR_NOTHING_FACTOR);
        assert_eq!(p.panic_threshold, 0);
    }

    #[test]
    fn locality_patterns() {
        assert_eq!(
            pattern("eu/b/*"),
            LocalityPattern {
                segments: vec!["eu".into(), "b".into()],
                wildcard: true
            }
        );
        assert_eq!(
            pattern("eu/b/s"),
            LocalityPattern {
                segments: vec!["eu".into(), "b".into(), "s".into()],
                wildcard: false
            }
        );
        assert_eq!(pattern("*").segments, Vec::<String>::new());
        let cases = [
            ("eu-*", "only as the whole last segment"),
            ("*/b", "only as the whole last segment"),
            ("eu/*/s", "only as the whole last segment"),
            ("eu/b*", "only as the whole last segment"),
            ("eu-west4", "did you mean `eu-west4/*`?"),
            ("eu/b", "names a zone only"),
            ("eu/b", "did you mean `eu/b/*`?"),
            ("eu-west4/", "did you mean `eu-west4/*`?"),
            ("eu//s", "empty segment"),
            ("/eu/b/s", "empty segment"),
            ("", "empty locality pattern"),
            ("eu /b/*", "whitespace"),
            ("a/b/c/d", "more than 3 segments"),
            ("a/b/c/*", "did you mean `a/b/c`?"),
        ];
        for (text, expected) in cases {
            let reason = parse_pattern(text).unwrap_err();
            assert!(reason.contains(expected), "{text:?}: {reason}");
        }
    }

    #[test]
    fn distribute_patterns_and_weights_are_checked_where_written() {
        let (line, field, reason) =
            spec_error("  distribute:\n  - from: eu-*\n    to: {\"*\": 100}\n");
        assert_eq!((line, field.as_str()), (Some(7), "spec.distribute[0].from"));
        assert!(reason.contains("whole last segment"), "{reason}");
        let (line, field, reason) = spec_error(
            "  distribute:\n  - from: eu/*\n    to:\n      eu/b/*: 60\n      eu-west4: 40\n",
        );
        assert_eq!(
            (line, field.as_str()),
            (Some(10), "spec.distribute[0].to.eu-west4")
        );
        assert!(reason.contains("did you mean `eu-west4/*`?"), "{reason}");
        for (weight, shown) in [
            ("0", "`0`"),
            ("101", "`101`"),
            ("1.5", "`1.5`"),
            ("lots", "`lots`"),
        ] {
            let (_, field, reason) = spec_error(&format!(
                "  distribute:\n  - from: eu/*\n    to: {{eu/b/*: {weight}}}\n"
            ));
            assert_eq!(field, "spec.distribute[0].to[\"eu/b/*\"]", "{weight}");
            assert!(reason.contains("from 1 to 100"), "{reason}");
            assert!(reason.contains(shown), "{reason}");
        }
        let (_, field, reason) = spec_error("  distribute:\n  - from: eu/*\n    to: {}\n");
        assert_eq!(field, "spec.distribute[0].to");
        assert!(reason.contains("at least one"), "{reason}");
        let (_, field, reason) = spec_error("  distribute:\n  - from: eu/*\n");
        assert_eq!(field, "spec.distribute[0].to");
        assert!(reason.contains("missing field `to`"), "{reason}");
        let (line, field, reason) = spec_error(
            "  distribute:\n  - from: eu/*\n    to:\n      eu/b/*: 60\n      eu/c/*: 30\n",
        );
        assert_eq!((line, field.as_str()), (Some(8), "spec.distribute[0].to"));
        assert_eq!(
            reason,
            "weights must add up to 100 (percent), they add up to 90 (eu/b/*: 60, eu/c/*: 30)"
        );
        let (line, field, reason) = spec_error(
            "  distribute:\n  - from: eu/*\n    to:\n      eu/*: 50\n      eu/c/s: 50\n",
        );
        assert_eq!(
            (line, field.as_str()),
            (Some(10), "spec.distribute[0].to[\"eu/c/s\"]")
        );
        assert!(reason.contains("`eu/c/s` overlaps `eu/*`"), "{reason}");
        // Disjoint siblings are fine, and `to` may name localities outside `from`.
        parse(&doc(
            "shop",
            "p",
            "  distribute:\n  - from: eu/b/*\n    to: {eu/b/*: 50, eu/c/s: 25, us/*: 25}\n",
        ))
        .unwrap();
    }

    #[test]
    fn distribute_rules_that_can_never_apply_are_refused() {
        let (line, field, reason) = spec_error(
            "  distribute:\n  - from: eu/*\n    to: {eu/b/*: 100}\n  - from: eu/*\n    to: {eu/c/*: 100}\n",
        );
        assert_eq!((line, field.as_str()), (Some(9), "spec.distribute[1].from"));
        assert!(
            reason.contains("distribute[0] has the same `from` (eu/*)"),
            "{reason}"
        );
        let (_, field, reason) = spec_error(
            "  distribute:\n  - from: eu/*\n    to: {eu/b/*: 100}\n  - from: eu/c/*\n    to: {eu/c/*: 100}\n",
        );
        assert_eq!(field, "spec.distribute[1].from");
        assert!(reason.contains("can never apply"), "{reason}");
        assert!(reason.contains("distribute[0] (from `eu/*`)"), "{reason}");
        assert!(
            reason.contains("put the more specific rule first"),
            "{reason}"
        );
        let (_, field, _) = spec_error(
            "  distribute:\n  - from: \"*\"\n    to: {eu/b/*: 100}\n  - from: eu/c/s\n    to: {eu/c/*: 100}\n",
        );
        assert_eq!(field, "spec.distribute[1].from");
        // Specific first is the right order.
        let entries = parse(&doc(
            "shop",
            "p",
            "  distribute:\n  - from: eu/c/*\n    to: {eu/c/*: 100}\n  - from: eu/*\n    to: {eu/b/*: 100}\n",
        ))
        .unwrap();
        assert_eq!(entries[0].policy.distribute.len(), 2);
    }

    #[test]
    fn failover_priority_pins() {
        let entries = parse(&doc(
            "shop",
            "p",
            "  failoverPriority: [topology.istio.io/network=n1, topology.kubernetes.io/region]\n",
        ))
        .unwrap();
        assert_eq!(
            entries[0].policy.failover_priority,
            vec![
                PriorityKey::pinned("topology.istio.io/network", "n1"),
                PriorityKey::label(labels::REGION)
            ]
        );
        let cases = [
            ("[=n1]", "pins no label"),
            ("[net=]", "pins `net` to an empty value"),
            ("[net=a=b]", "more than one `=`"),
            ("['net= a']", "whitespace"),
        ];
        for (keys, expected) in cases {
            let (line, field, reason) = spec_error(&format!("  failoverPriority: {keys}\n"));
            assert_eq!(
                (line, field.as_str()),
                (Some(6), "spec.failoverPriority[0]")
            );
            assert!(reason.contains(expected), "{keys}: {reason}");
        }
        let (line, field, reason) =
            spec_error("  failoverPriority:\n  - region\n  - net=a\n  - net=b\n");
        assert_eq!(
            (line, field.as_str()),
            (Some(9), "spec.failoverPriority[2]")
        );
        assert!(
            reason.contains("duplicate label key `net` (also failoverPriority[1])"),
            "{reason}"
        );
        let (_, field, reason) = spec_error("  failoverPriority: [net, net=a]\n");
        assert_eq!(field, "spec.failoverPriority[1]");
        assert!(reason.contains("pinned (`net=VALUE`) or not"), "{reason}");
    }

    #[test]
    fn health_checks() {
        let check = |spec: &str| {
            parse(&doc("shop", "p", spec)).unwrap()[0]
                .policy
                .health_check
                .clone()
                .unwrap()
        };
        assert_eq!(
            check("  healthCheck: {tcp: {}}\n"),
            HealthCheck::new(HealthCheckProtocol::Tcp)
        );
        assert_eq!(
            check("  healthCheck:\n    tcp:\n").protocol,
            HealthCheckProtocol::Tcp
        );
        assert_eq!(
            check("  healthCheck: {grpc: {}}\n").protocol,
            HealthCheckProtocol::Grpc { service: None }
        );
        assert_eq!(
            check("  healthCheck: {grpc: {service: shop.Cart}}\n").protocol,
            HealthCheckProtocol::Grpc {
                service: Some("shop.Cart".into())
            }
        );
        assert_eq!(
            check("  healthCheck: {http: {path: /}, interval: 500ms, timeout: 100ms}\n"),
            HealthCheck {
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(100),
                ..HealthCheck::new(HealthCheckProtocol::Http {
                    path: "/".into(),
                    host: None
                })
            }
        );
        let cases = [
            ("{interval: 5s}", "spec.healthCheck", "exactly one protocol"),
            (
                "{tcp: {}, http: {path: /}}",
                "spec.healthCheck",
                "`http` and `tcp` are all set",
            ),
            (
                "{http: {}}",
                "spec.healthCheck.http.path",
                "missing field `path`",
            ),
            (
                "{http: }",
                "spec.healthCheck.http.path",
                "missing field `path`",
            ),
            (
                "{http: {path: healthz}}",
                "spec.healthCheck.http.path",
                "did you mean `/healthz`?",
            ),
            (
                "{http: {path: '/a b'}}",
                "spec.healthCheck.http.path",
                "starting with `/` without whitespace",
            ),
            (
                "{http: {path: /, host: ''}}",
                "spec.healthCheck.http.host",
                "host name",
            ),
            (
                "{grpc: {service: ''}}",
                "spec.healthCheck.grpc.service",
                "omit it",
            ),
            (
                "{tcp: {}, timeout: 5s}",
                "spec.healthCheck.timeout",
                "timeout (5s) must be shorter than interval (5s)",
            ),
            (
                "{tcp: {}, interval: 1s}",
                "spec.healthCheck.interval",
                "timeout (1s) must be shorter than interval (1s)",
            ),
            (
                "{tcp: {}, interval: 5}",
                "spec.healthCheck.interval",
                "has no unit",
            ),
            (
                "{tcp: {}, unhealthyThreshold: 0}",
                "spec.healthCheck.unhealthyThreshold",
                "must be between 1 and 1000",
            ),
            (
                "{tcp: {}, healthyThreshold: 1001}",
                "spec.healthCheck.healthyThreshold",
                "must be between 1 and 1000",
            ),
            (
                "{htpp: {path: /}}",
                "spec.healthCheck.htpp",
                "did you mean `http`?",
            ),
            (
                "{tcp: {}, unhealthyTreshold: 2}",
                "spec.healthCheck.unhealthyTreshold",
                "did you mean `unhealthyThreshold`?",
            ),
            (
                "{http: {pth: /}}",
                "spec.healthCheck.http.pth",
                "did you mean `path`?",
            ),
            (
                "{tcp: {port: 80}}",
                "spec.healthCheck.tcp.port",
                "unknown field",
            ),
            (
                "{grpc: {servce: a}}",
                "spec.healthCheck.grpc.servce",
                "did you mean `service`?",
            ),
        ];
        for (hc, expected_field, expected) in cases {
            let (line, field, reason) = spec_error(&format!("  healthCheck: {hc}\n"));
            assert_eq!(field, expected_field, "{hc}");
            assert_eq!(line, Some(6), "{hc}");
            assert!(reason.contains(expected), "{hc}: {reason}");
        }
    }

    #[test]
    fn outlier_detection_can_be_switched_off() {
        let policy = |spec: &str| parse(&doc("shop", "p", spec)).unwrap()[0].policy.clone();
        // Health checks alone, or nothing but Kubernetes readiness: both allowed.
        let p = policy("  outlierDetection: {enabled: false}\n  healthCheck: {tcp: {}}\n");
        assert_eq!(p.outlier_detection, None);
        assert!(p.health_check.is_some());
        assert_eq!(
            policy("  outlierDetection: {enabled: false}\n").outlier_detection,
            None
        );
        assert_eq!(
            policy("  outlierDetection: {enabled: true, consecutive5xx: 9}\n").outlier_detection,
            Some(OutlierDetection {
                consecutive_5xx: 9,
                ..OutlierDetection::default()
            })
        );
        let (line, field, reason) =
            spec_error("  outlierDetection:\n    enabled: false\n    interval: 2s\n");
        assert_eq!(
            (line, field.as_str()),
            (Some(8), "spec.outlierDetection.interval")
        );
        assert!(
            reason.contains("`enabled: false` switches outlier detection off"),
            "{reason}"
        );
        let (_, field, reason) = spec_error("  outlierDetection: {enabled: no}\n");
        assert_eq!(field, "spec.outlierDetection.enabled");
        assert!(reason.contains("invalid type"), "{reason}");
        let (_, field, reason) = spec_error("  outlierDetection: {enable: false}\n");
        assert_eq!(field, "spec.outlierDetection.enable");
        assert!(reason.contains("did you mean `enabled`?"), "{reason}");
    }

    #[test]
    fn spillover_values() {
        let policy = |spec: &str| parse(&doc("shop", "p", spec)).unwrap()[0].policy.clone();
        let p = policy("  spillover: Gradual\n  overprovisioningFactor: 100\n");
        assert_eq!(
            (p.spillover, p.overprovisioning_factor),
            (Spillover::Gradual, 100)
        );
        for v in ["allOrNothing", "allornothing", "ALLORNOTHING"] {
            let p = policy(&format!("  spillover: {v}\n"));
            assert_eq!(p.spillover, Spillover::AllOrNothing, "{v}");
            assert_eq!(p.overprovisioning_factor, ALL_OR_NOTHING_FACTOR);
        }
        for (v, hint) in [
            ("all-or-nothing", "did you mean `allOrNothing`?"),
            ("all_or_nothing", "did you mean `allOrNothing`?"),
            ("gradul", "did you mean `gradual`?"),
        ] {
            let (line, field, reason) = spec_error(&format!("  spillover: {v}\n"));
            assert_eq!((line, field.as_str()), (Some(6), "spec.spillover"));
            assert!(
                reason.contains("must be `gradual` (the default) or `allOrNothing`"),
                "{reason}"
            );
            assert!(reason.contains(hint), "{v}: {reason}");
        }
        let (_, _, reason) = spec_error("  spillover: sometimes\n");
        assert!(!reason.contains("did you mean"), "{reason}");
        let (_, field, reason) =
            spec_error("  overprovisioningFactor: 140\n  spillover: allOrNothing\n");
        assert_eq!(field, "spec.spillover");
        assert!(reason.contains("spec.overprovisioningFactor"), "{reason}");
        assert!(reason.contains("allOrNothing"), "{reason}");
    }

    #[test]
    fn typos_of_the_new_keys_suggest_them() {
        for (spec, field, hint) in [
            (
                "  healthcheck: {tcp: {}}\n",
                "spec.healthcheck",
                "healthCheck",
            ),
            ("  distrbute: []\n", "spec.distrbute", "distribute"),
            ("  spilover: gradual\n", "spec.spilover", "spillover"),
            (
                "  distribute: [{from: '*', too: {}}]\n",
                "spec.distribute[0].too",
                "to",
            ),
        ] {
            let (_, f, reason) = spec_error(spec);
            assert_eq!(f, field, "{spec}");
            assert!(
                reason.contains(&format!("did you mean `{hint}`?")),
                "{spec}: {reason}"
            );
        }
        let (_, _, reason) = spec_error("  mtls: strickt\n");
        assert!(reason.contains("did you mean `STRICT`?"), "{reason}");
    }
}
