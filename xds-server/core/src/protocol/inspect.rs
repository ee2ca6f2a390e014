//! What the admin API may read of a protocol machine ([`Inspect`]): per resource type, what was
//! sent, acknowledged or refused. The server's client registry holds the machines; admin reads them.

use crate::model::ClientInfo;
use crate::snapshot::ResourceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Sotw,
    Delta,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// Where one type's conversation with a client stands, as `istioctl proxy-status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncStatus {
    /// The client acknowledged the last response of this type.
    Synced,
    /// A response is out and not acknowledged yet.
    Stale,
    /// The client refused the last response of this type.
    Nacked,
    /// Nothing of this type sent (not subscribed, or nothing to send yet).
    NotSent,
}

/// A protocol machine's view of one resource type, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeReport {
    pub kind: ResourceType,
    pub subscribed: bool,
    /// Wildcard subscription (all resources of the type).
    pub wildcard: bool,
    /// Explicitly subscribed names.
    pub names: usize,
    /// Version of the last response sent (SotW: the type version; Delta: the snapshot generation).
    pub version_sent: Option<String>,
    pub version_acked: Option<String>,
    /// The last refused version and Envoy's (shortened) error, while it is the latest word.
    pub nack: Option<(String, String)>,
    pub status: SyncStatus,
    /// What the client was sent, name → content hash; read with the snapshot to show the content.
    pub held: Vec<(String, u64)>,
}

/// What the admin API needs of a protocol machine.
pub trait Inspect: Send {
    fn client(&self) -> Option<&ClientInfo>;
    fn type_reports(&self) -> Vec<TypeReport>;
}
