//! What one stream may make the server hold, and the checks that refuse a request past it. The state
//! machines check a request before handling it ([`check_sotw`], [`check_delta`]), so a refused request
//! changes nothing; the request size is the gRPC decoder's to enforce (the server sets it from
//! [`MAX_REQUEST_BYTES`]).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::load_stats::v3::LoadStatsRequest;
use envoy_types::pb::google::protobuf::value::Kind;

use crate::model::shown;
use crate::protocol::delta::DeltaConnection;
use crate::protocol::error::{NameList, ProtocolError};
use crate::protocol::node::{
    META_IDENTITY, META_LABELS, META_LISTENER_ADDRESS, META_NAMESPACE, META_POD_IP, META_POD_NAME,
};
use crate::protocol::sotw::{AdsConnection, SotwRequest};
use crate::snapshot::ResourceType;

/// Largest request accepted, in bytes (gRPC's customary default, stated so it is a decision). Envoy's
/// biggest request is an EDS subscription naming every cluster it knows: about 100,000 names of 40
/// bytes fit. Bigger requests are refused by the decoder from their length prefix, before any buffer of
/// that size is allocated, with `OUT_OF_RANGE` ("decoded message length too large").
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Most resource names one stream may subscribe to per type. Envoy names every cluster it knows in its
/// EDS subscription, so this must exceed the largest mesh served; past it the stream is refused with
/// `INVALID_ARGUMENT` instead of holding (and answering) an unbounded set. Names that do not exist are
/// simply not answered.
pub const MAX_NAMES_PER_TYPE: usize = 50_000;

/// Longest `node.id` / `node.cluster` accepted, in bytes. Both are kept for the stream's life and
/// written to the logs on connect and disconnect; real ones are a few hundred bytes at most.
pub const MAX_NODE_ID_BYTES: usize = 4096;

/// Longest `node.locality` region, zone or sub-zone, in bytes. Each is a key of the shared cache (the
/// locality class) and part of a metric label; in Kubernetes they are label values (at most 63 bytes),
/// elsewhere short names such as `us-east-1`.
pub const MAX_LOCALITY_BYTES: usize = 253;

/// Longest node metadata `namespace`, `pod_name`, `pod_ip` or `listener_address`, in bytes: Kubernetes
/// names are at most 253 bytes (a namespace 63), an IP address at most 45. The namespace keys the
/// route cache, the listener address the listener cache.
pub const MAX_METADATA_VALUE_BYTES: usize = 253;

/// Longest node metadata `identity`, in bytes: the SPIFFE specification caps a SPIFFE ID at 2048.
pub const MAX_IDENTITY_BYTES: usize = 2048;

/// Most node metadata `labels` accepted. They are kept for the stream's life; a pod carries a few
/// dozen at most.
pub const MAX_NODE_LABELS: usize = 128;

/// Longest label key, in bytes: a Kubernetes key is at most 317 (a 253-byte prefix, `/`, 63 bytes).
pub const MAX_LABEL_KEY_BYTES: usize = 317;

/// Longest label value, in bytes (Kubernetes: 63). Values of the keys a `failoverPriority` names are
/// part of the locality class, so bounded like [`MAX_LOCALITY_BYTES`].
pub const MAX_LABEL_VALUE_BYTES: usize = 253;

/// Longest resource name a stream may subscribe to, in bytes. Ours are `NAME.NAMESPACE:PORT` (at most
/// about 330 bytes) or fixed names.
pub const MAX_RESOURCE_NAME_BYTES: usize = 1024;

/// Most bytes of resource names one stream may hold per type: what one maximal request carries. State
/// of the world never gets near it (a request replaces the subscription); Delta subscriptions
/// accumulate over requests, so without it a stream could grow without end in 4 MiB steps.
pub const MAX_NAME_BYTES_PER_TYPE: usize = MAX_REQUEST_BYTES;

/// The most responses one request or snapshot produces on a stream: one per resource type. As a stream
/// takes its next input only once its client has taken room for the last response, this bounds what
/// a stream ever holds for its client.
pub const MAX_RESPONSES_PER_EVENT: usize = ResourceType::PUSH_ORDER.len();

/// Most clusters one LRS report may name: no client holds more clusters than it may subscribe to.
pub const MAX_LRS_CLUSTERS_PER_REPORT: usize = MAX_NAMES_PER_TYPE;

/// Most localities one cluster of an LRS report may name. A cluster's answer names each locality its
/// endpoints are in once; a thousand localities is far past any mesh.
pub const MAX_LRS_LOCALITIES_PER_CLUSTER: usize = 1024;

/// Most LRS reports a stream may send within one report interval. Clients report once per interval
/// (plus the first request that opens the stream); a client sending many more is refused rather than
/// given a CPU to spend.
pub const MAX_LRS_REPORTS_PER_INTERVAL: usize = 4;

/// One limit as a refusal names it: the constant's name (so the operator of a refused client can look
/// it up), its value, and what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub max: usize,
    /// `bytes`, `labels`, ...
    pub unit: &'static str,
}

macro_rules! limit {
    ($name:ident, $unit:literal) => {
        Limit {
            name: stringify!($name),
            max: $name,
            unit: $unit,
        }
    };
}

pub const NODE_ID: Limit = limit!(MAX_NODE_ID_BYTES, "bytes");
pub const LOCALITY: Limit = limit!(MAX_LOCALITY_BYTES, "bytes");
pub const METADATA_VALUE: Limit = limit!(MAX_METADATA_VALUE_BYTES, "bytes");
pub const IDENTITY: Limit = limit!(MAX_IDENTITY_BYTES, "bytes");
pub const NODE_LABELS: Limit = limit!(MAX_NODE_LABELS, "labels");
pub const LABEL_KEY: Limit = limit!(MAX_LABEL_KEY_BYTES, "bytes");
pub const LABEL_VALUE: Limit = limit!(MAX_LABEL_VALUE_BYTES, "bytes");
pub const RESOURCE_NAME: Limit = limit!(MAX_RESOURCE_NAME_BYTES, "bytes");
pub const NAME_BYTES_PER_TYPE: Limit = limit!(MAX_NAME_BYTES_PER_TYPE, "bytes of resource names");
pub const LRS_CLUSTERS: Limit = limit!(MAX_LRS_CLUSTERS_PER_REPORT, "clusters");
pub const LRS_LOCALITIES: Limit = limit!(MAX_LRS_LOCALITIES_PER_CLUSTER, "localities");
pub const LRS_REPORTS: Limit = limit!(MAX_LRS_REPORTS_PER_INTERVAL, "reports in one interval");

/// The node metadata strings we read, each with the field a refusal names and its limit. Other keys are
/// never read, so never kept.
const METADATA_STRINGS: [(&str, &str, Limit); 5] = [
    (META_NAMESPACE, "node.metadata.namespace", METADATA_VALUE),
    (META_POD_NAME, "node.metadata.pod_name", METADATA_VALUE),
    (META_POD_IP, "node.metadata.pod_ip", METADATA_VALUE),
    (
        META_LISTENER_ADDRESS,
        "node.metadata.listener_address",
        METADATA_VALUE,
    ),
    (META_IDENTITY, "node.metadata.identity", IDENTITY),
];

/// A label key as a refusal names it: enough to recognise, never the whole of a huge one.
const KEY_SHOWN_BYTES: usize = 64;

fn over(field: impl Into<String>, amount: usize, limit: Limit) -> Result<(), ProtocolError> {
    if amount > limit.max {
        return Err(ProtocolError::OverLimit {
            field: field.into(),
            amount,
            limit,
        });
    }
    Ok(())
}

/// The first request's node: what the server keeps of it (id, cluster, locality, the metadata it reads,
/// labels) is capped, because it is kept for the stream's life, logged, and partly used as cache keys
/// and metric labels. Checked before the node is read, so a refused node is never parsed or stored.
pub fn check_node(first: bool, node: Option<&Node>) -> Result<(), ProtocolError> {
    let Some(node) = node.filter(|_| first) else {
        return Ok(()); // a missing node is node.rs's to refuse; later requests' nodes are not read
    };
    let mut fields: Vec<(&str, &str, Limit)> = vec![
        ("node.id", &node.id, NODE_ID),
        ("node.cluster", &node.cluster, NODE_ID),
    ];
    if let Some(l) = &node.locality {
        fields.extend([
            ("node.locality.region", l.region.as_str(), LOCALITY),
            ("node.locality.zone", &l.zone, LOCALITY),
            ("node.locality.sub_zone", &l.sub_zone, LOCALITY),
        ]);
    }
    let meta = node.metadata.as_ref().map(|m| &m.fields);
    let string = |key: &str| match meta?.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.as_str()),
        _ => None, // not a string: node.rs refuses it
    };
    for (key, field, limit) in METADATA_STRINGS {
        if let Some(value) = string(key) {
            fields.push((field, value, limit));
        }
    }
    for (field, value, limit) in fields {
        over(field, value.len(), limit)?;
    }
    if let Some(Kind::StructValue(labels)) = meta
        .and_then(|m| m.get(META_LABELS))
        .and_then(|v| v.kind.as_ref())
    {
        over("node.metadata.labels", labels.fields.len(), NODE_LABELS)?;
        for (key, value) in &labels.fields {
            let field = || format!("node.metadata.labels[{:?}]", shown(key, KEY_SHOWN_BYTES));
            if key.len() > LABEL_KEY.max {
                return over(format!("{} key", field()), key.len(), LABEL_KEY);
            }
            if let Some(Kind::StringValue(v)) = &value.kind {
                if v.len() > LABEL_VALUE.max {
                    return over(field(), v.len(), LABEL_VALUE);
                }
            }
        }
    }
    Ok(())
}

/// Names a stream would hold of one type: `held` (already checked, with their total bytes) plus
/// `added` (new to the stream). Each name and their count and total size are capped.
fn check_names<'a>(
    kind: ResourceType,
    list: NameList,
    held: (usize, usize),
    added: impl Iterator<Item = &'a str>,
) -> Result<(), ProtocolError> {
    let (mut count, mut bytes) = held;
    for name in added {
        if name.len() > RESOURCE_NAME.max {
            let field = format!("{} {list} name {:?}", kind.short_name(), shown(name, 64));
            return over(field, name.len(), RESOURCE_NAME);
        }
        count += 1;
        bytes += name.len();
    }
    if count > MAX_NAMES_PER_TYPE {
        return Err(ProtocolError::TooManyNames { kind, list, count });
    }
    over(
        format!("{} {list}", kind.short_name()),
        bytes,
        NAME_BYTES_PER_TYPE,
    )
}

/// Refuses a state-of-the-world request that would grow the stream's state past the limits.
pub fn check_sotw(conn: &AdsConnection, req: &SotwRequest) -> Result<(), ProtocolError> {
    check_node(conn.client().is_none(), req.node.as_ref())?;
    // A state-of-the-world request replaces the subscription: its own names are the whole set.
    let names = &req.resource_names;
    match ResourceType::from_type_url(&req.type_url) {
        // Every ACK repeats the subscription: what decoding noted settles the usual case without
        // looking at each name again.
        Some(_)
            if names.longest() <= RESOURCE_NAME.max
                && names.len() <= MAX_NAMES_PER_TYPE
                && names.total_bytes() <= NAME_BYTES_PER_TYPE.max =>
        {
            Ok(())
        }
        Some(kind) => check_names(kind, NameList::Subscription, (0, 0), names.iter()),
        None => Ok(()), // ignored, holds nothing
    }
}

/// Refuses a Delta request that would grow the stream's state past the limits.
pub fn check_delta(
    conn: &DeltaConnection,
    req: &DeltaDiscoveryRequest,
) -> Result<(), ProtocolError> {
    check_node(conn.client().is_none(), req.node.as_ref())?;
    let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
        return Ok(()); // ignored, holds nothing
    };
    // Delta subscriptions accumulate over requests: count what the stream holds plus the new names.
    let st = conn.type_state(kind);
    let mut added = req
        .resource_names_subscribe
        .iter()
        .filter(|n| *n != "*" && !st.is_some_and(|s| s.names.contains(*n)))
        .map(String::as_str)
        .peekable();
    if added.peek().is_some() {
        // What is held passed these checks when it was added; summed only when something is added
        // (an ACK adds nothing).
        let held = st.map_or((0, 0), |s| {
            (s.names.len(), s.names.iter().map(String::len).sum())
        });
        check_names(kind, NameList::Subscription, held, added)?;
    }
    check_names(
        kind,
        NameList::InitialResourceVersions,
        (0, 0),
        req.initial_resource_versions.keys().map(String::as_str),
    )
}

/// Refuses an LRS report (`LoadStatsRequest`) whose strings or lists are past the limits: the node on
/// a stream's first report (as ADS checks it), each cluster name (as a resource name), the number of
/// clusters and of localities per cluster, and each locality's strings.
pub fn check_load_report(first: bool, report: &LoadStatsRequest) -> Result<(), ProtocolError> {
    check_node(first, report.node.as_ref())?;
    over("cluster_stats", report.cluster_stats.len(), LRS_CLUSTERS)?;
    for cluster in &report.cluster_stats {
        let name = || shown(&cluster.cluster_name, KEY_SHOWN_BYTES);
        over(
            "cluster_stats.cluster_name",
            cluster.cluster_name.len(),
            RESOURCE_NAME,
        )?;
        over(
            format!("cluster_stats[{:?}].upstream_locality_stats", name()),
            cluster.upstream_locality_stats.len(),
            LRS_LOCALITIES,
        )?;
        for stats in &cluster.upstream_locality_stats {
            let Some(l) = &stats.locality else { continue };
            for (part, value) in [
                ("region", &l.region),
                ("zone", &l.zone),
                ("sub_zone", &l.sub_zone),
            ] {
                over(
                    format!(
                        "cluster_stats[{:?}].upstream_locality_stats.locality.{part}",
                        name()
                    ),
                    value.len(),
                    LOCALITY,
                )?;
            }
        }
    }
    Ok(())
}

/// Counts one LRS stream's reports per report interval (sans-IO: the caller passes the time).
#[derive(Debug, Clone)]
pub struct ReportRate {
    interval: std::time::Duration,
    started: Option<std::time::Instant>,
    count: usize,
}

impl ReportRate {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            started: None,
            count: 0,
        }
    }

    /// Counts a report arriving at `now`; refuses the one past [`MAX_LRS_REPORTS_PER_INTERVAL`]
    /// within one interval.
    pub fn admit(&mut self, now: std::time::Instant) -> Result<(), ProtocolError> {
        match self.started {
            Some(start) if now.saturating_duration_since(start) < self.interval => self.count += 1,
            _ => {
                self.started = Some(now);
                self.count = 1;
            }
        }
        over("LoadStatsRequest rate", self.count, LRS_REPORTS)
    }
}

#[cfg(test)]
mod tests;
