//! One incremental (Delta) ADS stream as a sans-IO state machine, beside the state-of-the-world one in
//! [`super::sotw`]; both are the shared [`Machine`] core (client identity and locality, nonces) with
//! their own per-type state. Same inputs (requests, snapshots), same snapshot API; the bookkeeping differs:
//! Delta tracks, per resource, the version the client holds, and sends only what changed plus the names
//! that went away.

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::error::ProtocolError;
use crate::protocol::inspect::{SyncStatus, TypeReport};
use crate::protocol::limits;
use crate::protocol::machine::{Machine, TypeConversation};
use crate::protocol::shared::{SharedHeld, SharedNames};
use crate::protocol::sotw::{shorten_error, Nack, RequestKind};
use crate::protocol::wire::{DeltaEntry, DeltaResponse};
use crate::snapshot::{Resource, ResourceType, Scope, Snapshot};
use std::sync::Arc;

/// What one type's conversation looks like so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaTypeState {
    /// Subscribed to everything of the type (CDS/LDS with no names, or `*`).
    pub wildcard: bool,
    /// Explicitly subscribed names; shared with clients subscribed to the same.
    pub names: SharedNames,
    /// What the client holds: name → content hash (the resource version is its hex form); shared with
    /// clients holding the same.
    pub held: SharedHeld,
    /// The last response's nonce and the resources it carried (shared with the cache, not copies of
    /// their names), until ACKed or NACKed.
    pub pending: Option<(String, Vec<Arc<Resource>>)>,
    /// Versions the client refused; never sent again.
    pub rejected: BTreeMap<String, u64>,
    pub last_nack: Option<Nack>,
    pub subscribed: bool,
    /// `system_version_info` of the last response, and of the last one acknowledged.
    pub version_sent: Option<String>,
    pub version_acked: Option<String>,
    /// Names to send even if the client holds their current version: endpoints (routes) of clusters
    /// (listeners) that were just re-sent, which Envoy re-creates and waits on.
    force: BTreeSet<String>,
    /// What may have changed since the last answer while one was in flight; answered on the ACK.
    stale: Stale,
    /// The snapshot generation `stale` accounts for: changes after it are not in `stale` yet.
    synced_at: Option<u64>,
}

/// Names whose answer may differ from what the client holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Stale {
    #[default]
    Clean,
    Names(BTreeSet<String>),
    All,
}

impl Stale {
    fn add(&mut self, scope: Scope<'_>) {
        match (scope, &mut *self) {
            (Scope::Nothing, _) | (_, Stale::All) => {}
            (Scope::Everything, _) => *self = Stale::All,
            (Scope::Names(n), Stale::Names(mine)) => mine.extend(n.iter().cloned()),
            (Scope::Names(n), Stale::Clean) => *self = Stale::Names(n.clone()),
        }
    }

    fn scope(&self) -> Scope<'_> {
        match self {
            Stale::Clean => Scope::Nothing,
            Stale::Names(n) => Scope::Names(n),
            Stale::All => Scope::Everything,
        }
    }
}

/// One Delta stream: the shared [`Machine`] core with a [`DeltaTypeState`] per type.
pub type DeltaConnection = Machine<DeltaTypeState>;

/// The version string of a resource: its content hash in hex.
fn version(hash: u64) -> String {
    format!("{hash:016x}")
}

/// The hash behind a version string we sent; anything else (another server's version) matches nothing.
fn parse_version(v: &str) -> Option<u64> {
    (v.len() == 16)
        .then(|| u64::from_str_radix(v, 16).ok())
        .flatten()
}

impl DeltaConnection {
    /// Handles one request. Returns what happened and the responses to send; a request past the
    /// [`limits`] is refused before it changes anything.
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<DeltaResponse>), ProtocolError> {
        limits::check_delta(self, req)?;
        self.observe(req.node.as_ref(), snapshot)?;
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return Ok((RequestKind::unknown_type(&req.type_url), Vec::new()));
        };
        let st = self.types.get_or_default(kind);
        let first = !st.subscribed;
        if first {
            st.subscribed = true;
            // Wildcard by default for CDS/LDS, unless the first request names resources.
            st.wildcard = kind.is_wildcard_type() && req.resource_names_subscribe.is_empty();
            // After a reconnect Envoy says what it still holds, so unchanged resources are not re-sent.
            st.held = req
                .initial_resource_versions
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), parse_version(v)?)))
                .collect();
            st.stale = Stale::All;
        }
        let mut subscribe = Vec::new();
        for name in &req.resource_names_subscribe {
            if name == "*" {
                if !st.wildcard {
                    st.wildcard = true;
                    st.stale = Stale::All;
                }
            } else {
                subscribe.push(name);
            }
        }
        let mut unsubscribe = Vec::new();
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
                st.stale = Stale::All;
            } else {
                unsubscribe.push(name);
            }
        }
        let new_names = st.names.update(subscribe, unsubscribe.iter().copied());
        // The client drops them; forget them so a re-subscribe sends them again.
        st.held
            .apply(unsubscribe.iter().map(|name| (name.as_str(), None)));
        if !new_names.is_empty() {
            st.stale.add(Scope::Names(&new_names));
        }
        let mut what = if first {
            RequestKind::Initial
        } else {
            RequestKind::Ack
        };
        if !req.response_nonce.is_empty() {
            match st.pending.take() {
                Some((nonce, sent)) if nonce == req.response_nonce => {
                    if let Some(status) = &req.error_detail {
                        let nack = Nack {
                            version: sent
                                .iter()
                                .map(|r| version(r.hash))
                                .collect::<Vec<_>>()
                                .join(","),
                            message: shorten_error(&status.message),
                        };
                        for r in &sent {
                            st.rejected.insert(r.name.clone(), r.hash);
                        }
                        // Envoy kept its previous versions, which we no longer know exactly:
                        // forget them, so the next good version is always sent.
                        st.held.apply(sent.iter().map(|r| (r.name.as_str(), None)));
                        st.last_nack = Some(nack.clone());
                        what = RequestKind::Nack(nack);
                    } else {
                        st.last_nack = None;
                        st.version_acked = st.version_sent.clone();
                    }
                }
                other => {
                    st.pending = other;
                    what = RequestKind::StaleNonce;
                }
            }
        }
        let st = self.types.get_mut(&kind).expect("inserted above");
        st.stale.add(snapshot.scope(kind, st.synced_at));
        st.synced_at = Some(snapshot.generation);
        Ok((what, self.respond(kind, snapshot).into_iter().collect()))
    }

    /// A new snapshot: send each subscribed type's changes in make-before-break order. Re-sent clusters
    /// (listeners) are followed by their endpoints (routes) even if unchanged, so nothing stays warming.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaResponse> {
        self.relocate();
        let mut out = Vec::new();
        for kind in ResourceType::PUSH_ORDER {
            let Some(st) = self.types.get_mut(&kind).filter(|s| s.subscribed) else {
                continue;
            };
            st.stale.add(snapshot.scope(kind, st.synced_at));
            st.synced_at = Some(snapshot.generation);
            if let Some(resp) = self.respond(kind, snapshot) {
                if let Some(dep) = kind.dependent().and_then(|d| self.types.get_mut(&d)) {
                    dep.force
                        .extend(resp.resources.iter().map(|r| r.name().to_owned()));
                }
                out.push(resp);
            }
        }
        out
    }

    /// Sends what is stale or forced for one type, unless a response of that type is in flight (then
    /// the ACK sends it: one response in flight per type keeps what we hold for a slow client bounded).
    fn respond(&mut self, kind: ResourceType, snapshot: &Snapshot) -> Option<DeltaResponse> {
        let client = self.client.get()?;
        let st = self.types.get(&kind)?;
        if st.pending.is_some() {
            return None;
        }
        let wanted = |name: &str| st.wildcard || st.names.contains(name);
        // What to look at: resources found, and names looked at that have none (or are not wanted).
        // Borrowed, not cloned: a full answer looks at every subscribed name for every client.
        let mut found: Vec<Arc<Resource>> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        let mut look_up: Vec<&str> = Vec::new();
        match st.stale.scope() {
            Scope::Everything => {
                let filter = (!st.wildcard).then_some(&*st.names);
                found = snapshot.resources_for(kind, client, filter);
                let present: BTreeSet<&str> = found.iter().map(|r| r.name.as_str()).collect();
                let gone = |name: &&str| !present.contains(name);
                missing.extend(st.held.keys().map(String::as_str).filter(gone));
                look_up.extend(
                    st.force
                        .iter()
                        .map(String::as_str)
                        .filter(|n| gone(n) && !st.held.contains_key(*n)),
                );
            }
            Scope::Names(names) => {
                look_up.extend(names.iter().map(String::as_str));
                look_up.extend(
                    st.force
                        .iter()
                        .filter(|n| !names.contains(*n))
                        .map(String::as_str),
                );
            }
            Scope::Nothing => look_up.extend(st.force.iter().map(String::as_str)),
        }
        let mut lookup = snapshot.lookup(kind, client);
        for name in look_up {
            match lookup.get(name).filter(|_| wanted(name)) {
                Some(r) => found.push(r),
                None => missing.push(name),
            }
        }
        // In name order, as Envoy logs them.
        found.sort_by(|a, b| a.name.cmp(&b.name));
        let mut resources = Vec::new();
        for r in found {
            let unchanged = st.held.get(&r.name) == Some(&r.hash);
            let refused = st.rejected.get(&r.name) == Some(&r.hash);
            if refused || (unchanged && !st.force.contains(&r.name)) {
                continue;
            }
            resources.push(DeltaEntry { resource: r });
        }
        // Envoy refuses an SDS update that removes a secret it uses ("Missing SDS resources"): a
        // secret that went away stays with the client as it was.
        let mut removed: Vec<String> = missing
            .into_iter()
            .filter(|name| st.held.contains_key(*name) && kind != ResourceType::Secret)
            .map(str::to_owned)
            .collect();
        removed.sort();
        removed.dedup();
        let st = self.types.get_mut(&kind)?;
        st.stale = Stale::Clean;
        st.force.clear();
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        let nonce = self.next_nonce();
        let st = self.types.get_mut(&kind)?;
        let sent: Vec<Arc<Resource>> = resources.iter().map(|e| e.resource.clone()).collect();
        st.held.apply(
            removed
                .iter()
                .map(|name| (name.as_str(), None))
                .chain(sent.iter().map(|r| (r.name.as_str(), Some(r.hash)))),
        );
        for r in &sent {
            // Superseded: a refused resource stays refused only in the content that was refused.
            st.rejected.remove(&r.name);
        }
        st.pending = Some((nonce.clone(), sent));
        let system_version = format!("{}", snapshot.generation);
        st.version_sent = Some(system_version.clone());
        Some(DeltaResponse {
            system_version_info: system_version,
            resources,
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce,
        })
    }
}

impl TypeConversation for DeltaTypeState {
    /// Every answer of the type is looked at again.
    fn relocated(&mut self) {
        self.stale = Stale::All;
    }

    fn report(&self, kind: ResourceType) -> TypeReport {
        TypeReport {
            kind,
            subscribed: self.subscribed,
            wildcard: self.wildcard,
            names: self.names.len(),
            version_sent: self.version_sent.clone(),
            version_acked: self.version_acked.clone(),
            nack: self
                .last_nack
                .as_ref()
                .map(|n| (n.version.clone(), n.message.clone())),
            status: if self.last_nack.is_some() {
                SyncStatus::Nacked
            } else if self.pending.is_some() {
                SyncStatus::Stale
            } else if self.version_sent.is_none() {
                SyncStatus::NotSent
            } else {
                SyncStatus::Synced
            },
            held: self.held.iter().map(|(n, h)| (n.clone(), *h)).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
