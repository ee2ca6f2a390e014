//! Every connected Envoy, what each was sent and acknowledged, and a stream of xDS events.
//!
//! Each ADS stream registers its protocol machine here (behind a mutex the stream's loop takes for
//! every request or snapshot, never across an await), so the admin API reads the same state the
//! protocol works from instead of a copy kept in sync by hand. Events go to a bounded broadcast
//! channel: a slow reader loses old events (and is told how many), never slows a stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::sync::broadcast;

use xds_core::model::{ClientInfo, ClientKind, Locality, PeerIdentity};
use xds_core::policy::FailoverPolicy;
pub use xds_core::protocol::inspect::{Inspect, Protocol, SyncStatus, TypeReport};
use xds_core::snapshot::ResourceType;
use xds_core::translate::LocalityClass;

/// Events kept for readers that fall behind.
const EVENT_BUFFER: usize = 4096;
/// One type's row in a client summary, with the time of the last NACK (the machine has no clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSummary {
    pub report: TypeReport,
    pub nack_at: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    pub stream_id: u64,
    pub node_id: String,
    pub cluster: String,
    pub locality: Locality,
    /// The locality class it shares EDS answers with, under the mesh's default key order.
    pub class: String,
    pub protocol: Protocol,
    pub connected_at: SystemTime,
    pub types: Vec<TypeSummary>,
    /// The identity its connection proved (client certificate or token); `None`: none.
    pub peer: Option<PeerIdentity>,
    /// Envoy or a proxyless gRPC client.
    pub kind: ClientKind,
}

/// What happened on the xDS port, for tailing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum XdsEvent {
    Connected {
        at: SystemTime,
        stream_id: u64,
        node: String,
        protocol: Protocol,
        locality: String,
    },
    Disconnected {
        at: SystemTime,
        stream_id: u64,
        node: String,
    },
    Pushed {
        at: SystemTime,
        stream_id: u64,
        node: String,
        type_url: String,
        version: String,
        resources: usize,
        bytes: usize,
    },
    Acked {
        at: SystemTime,
        stream_id: u64,
        node: String,
        type_url: String,
        version: String,
    },
    Nacked {
        at: SystemTime,
        stream_id: u64,
        node: String,
        type_url: String,
        version: String,
        error: String,
    },
    /// The priority observed serving a service port's clients of one class moved (from LRS reports).
    Failover {
        at: SystemTime,
        /// The cluster: `NAME.NAMESPACE:PORT`.
        service: String,
        /// The reporting clients' locality, `region/zone/sub_zone`.
        class: String,
        from_priority: i32,
        to_priority: i32,
        /// The error ratio of `from_priority` within the window before the change.
        error_ratio: f64,
    },
    /// The fleet verdict on a locality changed (`fleetFailover`).
    Fleet {
        at: SystemTime,
        /// `fleet_ejected`, `fleet_restored` or `fleet_observed`.
        kind: &'static str,
        /// `NAME.NAMESPACE:PORT`.
        service: String,
        /// `region/zone/sub_zone`.
        locality: String,
        reporters: u32,
        requests: u64,
        errors: u64,
        reason: String,
    },
}

struct Entry {
    stream_id: u64,
    protocol: Protocol,
    connected_at: SystemTime,
    machine: Arc<dyn InspectLock>,
    nack_at: Mutex<BTreeMap<ResourceType, SystemTime>>,
}

/// A locked machine, type-erased.
trait InspectLock: Send + Sync {
    fn with(&self, f: &mut dyn FnMut(&dyn Inspect));
}

impl<M: Inspect> InspectLock for Mutex<M> {
    fn with(&self, f: &mut dyn FnMut(&dyn Inspect)) {
        f(&*lock(self))
    }
}

/// Locks a stream's machine. A panic while it was held leaves the state as the panicking request left
/// it; the stream is gone by then, so reading it is still fine.
pub fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct ClientRegistry {
    entries: DashMap<u64, Entry>,
    events: broadcast::Sender<XdsEvent>,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        Self {
            entries: DashMap::new(),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

/// Removes a stream's entry when its task ends, however it ends.
pub struct Registration {
    registry: Arc<ClientRegistry>,
    stream_id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((_, entry)) = self.registry.entries.remove(&self.stream_id) {
            let mut node = None;
            entry
                .machine
                .with(&mut |m| node = m.client().map(|c| c.node_id.clone()));
            if let Some(node) = node {
                self.registry.emit(XdsEvent::Disconnected {
                    at: SystemTime::now(),
                    stream_id: self.stream_id,
                    node,
                });
            }
        }
    }
}

impl ClientRegistry {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers a stream's machine until the returned guard is dropped.
    pub fn register<M: Inspect + 'static>(
        self: &Arc<Self>,
        stream_id: u64,
        protocol: Protocol,
        machine: Arc<Mutex<M>>,
    ) -> Registration {
        self.entries.insert(
            stream_id,
            Entry {
                stream_id,
                protocol,
                connected_at: SystemTime::now(),
                machine,
                nack_at: Mutex::default(),
            },
        );
        Registration {
            registry: self.clone(),
            stream_id,
        }
    }

    pub fn emit(&self, event: XdsEvent) {
        // No receivers is fine: nobody is tailing.
        let _ = self.events.send(event);
    }

    /// Someone is reading events: only then are push and ACK events built.
    pub fn tailing(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<XdsEvent> {
        self.events.subscribe()
    }

    /// Records when a type was last refused (the machine keeps what and why).
    pub fn nacked(&self, stream_id: u64, kind: ResourceType) {
        if let Some(e) = self.entries.get(&stream_id) {
            lock(&e.nack_at).insert(kind, SystemTime::now());
        }
    }

    /// Streams that have identified themselves (sent a first request), ordered by node id.
    pub fn list(&self) -> Vec<ClientSummary> {
        let mut out: Vec<ClientSummary> = self
            .entries
            .iter()
            .filter_map(|e| summarize(e.value()))
            .collect();
        out.sort_by(|a, b| (&a.node_id, a.stream_id).cmp(&(&b.node_id, b.stream_id)));
        out
    }

    /// Every stream of one node id (normally one; two while Envoy reconnects).
    pub fn find(&self, node_id: &str) -> Vec<ClientSummary> {
        self.list()
            .into_iter()
            .filter(|c| c.node_id == node_id)
            .collect()
    }

    /// The client info of one node's newest stream, e.g. to explain what it gets.
    pub fn client_info(&self, node_id: &str) -> Option<ClientInfo> {
        let mut best: Option<(u64, ClientInfo)> = None;
        for e in self.entries.iter() {
            e.machine.with(&mut |m| {
                if let Some(c) = m.client().filter(|c| c.node_id == node_id) {
                    if best.as_ref().is_none_or(|(id, _)| e.stream_id > *id) {
                        best = Some((e.stream_id, c.clone()));
                    }
                }
            });
        }
        best.map(|(_, c)| c)
    }

    /// Calls `f` with every identified client (one whose first request was read), under its stream's
    /// lock: nothing is copied, so it is cheap enough to run after every burst of disconnects.
    pub fn for_each_client(&self, mut f: impl FnMut(&ClientInfo)) {
        for e in self.entries.iter() {
            e.machine.with(&mut |m| {
                if let Some(c) = m.client() {
                    f(c)
                }
            });
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn summarize(e: &Entry) -> Option<ClientSummary> {
    let mut out = None;
    let nack_at = lock(&e.nack_at).clone();
    e.machine.with(&mut |m| {
        let Some(c) = m.client() else { return };
        let types = m
            .type_reports()
            .into_iter()
            .map(|report| TypeSummary {
                nack_at: report
                    .nack
                    .as_ref()
                    .and_then(|_| nack_at.get(&report.kind).copied()),
                report,
            })
            .collect();
        out = Some(ClientSummary {
            stream_id: e.stream_id,
            node_id: c.node_id.clone(),
            cluster: c.cluster.clone(),
            locality: c.locality.clone(),
            class: LocalityClass::of(c, &FailoverPolicy::default()).to_string(),
            protocol: e.protocol,
            connected_at: e.connected_at,
            types,
            peer: c.peer.clone(),
            kind: c.kind,
        });
    });
    out
}

#[cfg(test)]
mod tests;
