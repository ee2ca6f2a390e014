//! One state-of-the-world ADS stream as a sans-IO state machine: requests and snapshots in, responses out.
//!
//! Every protocol case (ACK, NACK, stale nonce, warming re-request, wildcard) is a plain unit test here;
//! the tonic task around it only moves messages.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ClientInfo;
use crate::protocol::error::ProtocolError;
use crate::protocol::inspect::{SyncStatus, TypeReport};
use crate::protocol::limits;
use crate::protocol::machine::{Machine, TypeConversation};
use crate::protocol::shared::{entry_digest, SharedHeld, SharedNames};
use crate::protocol::wire::SotwResponse;
use crate::snapshot::{Resource, ResourceType, Scope, Snapshot};
use std::sync::Arc;

mod request;
pub use request::{ResourceNames, SotwRequest};

/// What one type URL's conversation looks like so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeState {
    /// `None` = wildcard (all resources of the type). Shared with clients subscribed to the same.
    pub names: Option<SharedNames>,
    /// Hash of the last request's name list, in its order.
    names_digest: u64,
    /// The snapshot generation this type was last fully checked against; the next snapshot re-checks
    /// only what changed since (see [`Snapshot::scope`]). `None` = check everything.
    synced_at: Option<u64>,
    pub subscribed: bool,
    pub sent: Option<Sent>,
    pub acked_version: Option<String>,
    pub nack: Option<Nack>,
    /// What the client was sent, name → content hash. EDS and RDS answers carry only what changed
    /// (the protocol lets SotW send a subset for these types; Envoy keeps the rest), CDS and LDS all.
    /// Shared with clients holding the same.
    held: SharedHeld,
    /// XOR of [`digest`]s over `held`: the type's version, updated in O(changes).
    version: u64,
    /// EDS/RDS resources the client refused, with the refused content; not sent again.
    rejected: BTreeMap<String, u64>,
    /// Names to send on the next answer even if the client holds them: endpoints of clusters (routes of
    /// listeners) just re-created, which Envoy waits on.
    force: BTreeSet<String>,
    /// Answer the next request even if it looks like a plain ACK: Envoy re-requests EDS (RDS) with the
    /// same version and nonce after a cluster (listener) was re-created, and waits for an answer.
    resend_on_request: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub version: String,
    pub nonce: String,
    pub resources: usize,
    /// The resources in the response (shared with the cache, not copies of their names), so a NACK
    /// knows what was refused. Kept only until the client answers: its ACK releases them, since a
    /// client's first EDS and CDS answers name every cluster and 5,000 clients would each keep them.
    contents: Vec<Arc<Resource>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version Envoy refused; it is not sent to this client again.
    pub version: String,
    pub message: String,
}

/// What happened on a request, for logging and (later) the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Initial,
    Ack,
    Nack(Nack),
    StaleNonce,
    UnknownType(String),
}

impl RequestKind {
    /// A type URL is client input of any size: keep enough of it to recognise.
    pub fn unknown_type(url: &str) -> Self {
        const MAX: usize = 200;
        match url.char_indices().nth(MAX) {
            Some((cut, _)) => RequestKind::UnknownType(format!("{}…", &url[..cut])),
            None => RequestKind::UnknownType(url.to_string()),
        }
    }
}

/// One state-of-the-world stream: the shared [`Machine`] core with a [`TypeState`] per type.
pub type AdsConnection = Machine<TypeState>;

/// Envoy's NACK text is a dump of the whole resource followed by the actual validation error; keep the
/// part a human needs.
pub fn shorten_error(message: &str) -> String {
    const MAX: usize = 300;
    let last = message
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    if last.chars().count() <= MAX {
        last.to_string()
    } else {
        let tail: String = last
            .chars()
            .rev()
            .take(MAX)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

/// One resource's share of a type version. XOR-combined, so a version follows single-resource changes
/// without re-hashing the rest.
fn digest(name: &str, hash: u64) -> u64 {
    // The held map's own digest (`SharedHeld::digest`) is the same sum.
    entry_digest(name, hash)
}

/// A name's new content hash, or `None` when the client no longer holds it.
type HeldChange = (String, Option<u64>);

fn apply(held: &mut SharedHeld, changes: Vec<HeldChange>) {
    held.apply(changes);
}

fn version_string(v: u64) -> String {
    format!("{v:016x}")
}

/// How much of a type to answer.
#[derive(Debug, Clone, Copy)]
enum Answer<'a> {
    /// Everything subscribed, whatever the client holds (first request, reconnect).
    Full,
    /// What may have changed, plus forced names.
    Changes(Scope<'a>),
}

impl AdsConnection {
    /// Handles one request. Returns what happened and the responses to send, in order; a request
    /// past the [`limits`] is refused before it changes anything.
    pub fn on_request(
        &mut self,
        req: &SotwRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<SotwResponse>), ProtocolError> {
        limits::check_sotw(self, req)?;
        self.observe(req.node.as_ref(), snapshot)?;
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return Ok((RequestKind::unknown_type(&req.type_url), Vec::new()));
        };
        if kind == ResourceType::Listener && self.types.values().all(|t| t.sent.is_none()) {
            self.client
                .recognise_listener_names(req.resource_names.iter());
        }
        let st = self.types.get_or_default(kind);
        if !req.response_nonce.is_empty()
            && st.sent.as_ref().map(|s| s.nonce.as_str()) != Some(req.response_nonce.as_str())
        {
            // An answer to a response we have since superseded; the newer one is on its way.
            return Ok((RequestKind::StaleNonce, Vec::new()));
        }
        let wildcard = kind.is_wildcard_type()
            && (req.resource_names.is_empty() || req.resource_names.has_wildcard());
        // Every ACK repeats the whole subscription (hundreds of names, in the same order): a hash of
        // the list as sent recognises it without building or searching a set.
        let listed = req.resource_names.digest();
        let same_names = match &st.names {
            None => wildcard,
            Some(_) if st.subscribed && listed == st.names_digest => !wildcard,
            Some(held) => {
                !wildcard
                    && req.resource_names.iter().all(|n| held.contains(n))
                    && req.resource_names.iter().collect::<BTreeSet<_>>().len() == held.len()
            }
        };
        st.names_digest = listed;
        let names_changed = !st.subscribed || !same_names;
        if !same_names {
            st.names = (!wildcard).then(|| req.resource_names.iter().map(str::to_owned).collect());
        }
        st.subscribed = true;

        let (what, answer) = if let Some(status) = &req.error_detail {
            let sent = st.sent.clone();
            let nack = Nack {
                version: sent.as_ref().map(|s| s.version.clone()).unwrap_or_default(),
                message: shorten_error(&status.message),
            };
            if !kind.is_wildcard_type() {
                // Envoy kept what it had before, which we no longer know exactly: forget the refused
                // resources so the next good content of each is sent, and remember the bad content.
                let mut dropped = Vec::new();
                for r in sent.iter().flat_map(|s| &s.contents) {
                    st.rejected.insert(r.name.clone(), r.hash);
                    if let Some(h) = st.held.get(&r.name) {
                        st.version ^= digest(&r.name, *h);
                        dropped.push((r.name.as_str(), None));
                    }
                }
                st.held.apply(dropped);
            }
            st.nack = Some(nack.clone());
            (RequestKind::Nack(nack), None)
        } else if req.response_nonce.is_empty() {
            // First request of this type on this stream (also after a reconnect, when Envoy sends its
            // last accepted version with no nonce): always answer, in full.
            (RequestKind::Initial, Some(Answer::Full))
        } else {
            st.acked_version = Some(req.version_info.clone());
            st.nack = None;
            if let Some(sent) = &mut st.sent {
                sent.contents = Vec::new();
            }
            let rerequest = std::mem::take(&mut st.resend_on_request);
            let answer = if names_changed && kind.is_wildcard_type() && !wildcard {
                // A client that names its listeners or clusters (a gRPC client) learns from this
                // answer that new names do not exist, even when it is the same as the last one;
                // without it, it would wait out its 15 s does-not-exist timer.
                Some(Answer::Full)
            } else if names_changed {
                Some(Answer::Changes(Scope::Everything))
            } else if rerequest {
                Some(Answer::Changes(Scope::Nothing)) // the forced names only
            } else {
                None
            };
            (RequestKind::Ack, answer)
        };
        let answer = match answer {
            // A NACK that also changes the subscription still needs the new names answered.
            None if names_changed => Some(Answer::Changes(Scope::Everything)),
            other => other,
        };
        let responses = match answer {
            Some(answer) => {
                let out = self.respond(kind, snapshot, answer).into_iter().collect();
                if matches!(answer, Answer::Full | Answer::Changes(Scope::Everything)) {
                    // Every subscribed name was just looked at: later snapshots need only their
                    // changes (the first change after a client connects is then as cheap as any).
                    if let Some(st) = self.types.get_mut(&kind) {
                        st.synced_at = Some(snapshot.generation);
                    }
                }
                out
            }
            None => Vec::new(),
        };
        Ok((what, responses))
    }

    /// A new snapshot: push every subscribed type whose answer changed, in make-before-break order
    /// (CDS, EDS, LDS, RDS). A re-sent cluster (listener) is followed by its endpoints (routes) even if
    /// those are unchanged, so Envoy never waits on a warming resource.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<SotwResponse> {
        self.relocate();
        let mut out = Vec::new();
        for kind in ResourceType::PUSH_ORDER {
            let Some(st) = self.types.get(&kind) else {
                continue;
            };
            if !st.subscribed || st.sent.is_none() {
                continue;
            }
            let scope = snapshot.scope(kind, st.synced_at);
            if let Some(resp) = self.respond(kind, snapshot, Answer::Changes(scope)) {
                out.push(resp);
            }
            if self.client.get().is_some() {
                if let Some(st) = self.types.get_mut(&kind) {
                    st.synced_at = Some(snapshot.generation);
                }
            }
        }
        out
    }

    fn respond(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        answer: Answer<'_>,
    ) -> Option<SotwResponse> {
        let client = self.client.get()?;
        let st = self.types.get(&kind)?;
        let full = matches!(answer, Answer::Full);
        let mut updates = None;
        let (resources, version) = if kind.is_wildcard_type() {
            // CDS and LDS: the complete set every time.
            if matches!(answer, Answer::Changes(Scope::Nothing)) {
                return None;
            }
            let resources = snapshot.resources_for(kind, client, st.names.as_deref());
            let version = resources.iter().fold(0, |v, r| v ^ digest(&r.name, r.hash));
            (resources, version)
        } else {
            let (resources, changes, version) =
                changed_resources(kind, st, snapshot, client, answer);
            updates = Some(changes);
            (resources, version)
        };
        let version_str = version_string(version);
        if st.nack.as_ref().is_some_and(|n| n.version == version_str) {
            // Envoy refused exactly this; sending it again would only loop.
            return None;
        }
        let unchanged = st.sent.as_ref().is_some_and(|s| s.version == version_str);
        let forced = !st.force.is_empty();
        if kind.is_wildcard_type() {
            if unchanged && !full && !forced {
                return None;
            }
        } else if resources.is_empty() && !full {
            // Nothing to send; removals (names gone from the snapshot) only move the version.
            let st = self.types.get_mut(&kind)?;
            if let Some(changes) = updates {
                apply(&mut st.held, changes);
                st.version = version;
            }
            return None;
        }
        // Which names a dependent type must re-send: endpoints of every cluster whose CDS resource
        // is new or different (Envoy re-creates it), routes of a re-sent listener.
        let dependent_force: Option<(ResourceType, BTreeSet<String>)> =
            kind.dependent().map(|dep| {
                let names = match kind {
                    ResourceType::Cluster => resources
                        .iter()
                        .filter(|r| st.held.get(&r.name) != Some(&r.hash))
                        .map(|r| r.name.clone())
                        .collect(),
                    _ => self
                        .types
                        .get(&dep)
                        .and_then(|d| d.names.as_deref().cloned())
                        .unwrap_or_default(),
                };
                (dep, names)
            });

        let nonce = self.next_nonce();
        let st = self.types.get_mut(&kind)?;
        match updates {
            Some(changes) => apply(&mut st.held, changes),
            None => {
                st.held = SharedHeld::of(version, resources.len(), || {
                    resources.iter().map(|r| (r.name.clone(), r.hash)).collect()
                })
            }
        }
        st.version = version;
        st.sent = Some(Sent {
            version: version_str.clone(),
            nonce: nonce.clone(),
            resources: resources.len(),
            contents: resources.clone(),
        });
        st.force.clear();
        st.resend_on_request = false;
        for r in &resources {
            // Superseded: a refused resource stays refused only in the content that was refused.
            st.rejected.remove(&r.name);
        }
        if let Some((dep, names)) = dependent_force {
            if !names.is_empty() {
                let d = self.types.get_or_default(dep);
                d.force.extend(names);
                d.resend_on_request = true;
            }
        }
        Some(SotwResponse {
            version_info: version_str,
            resources,
            type_url: kind.type_url().to_string(),
            nonce,
        })
    }
}

impl TypeConversation for TypeState {
    /// Forget what was checked: the next snapshot re-checks everything.
    fn relocated(&mut self) {
        self.synced_at = None;
    }

    fn report(&self, kind: ResourceType) -> TypeReport {
        let sent = self.sent.as_ref().map(|s| s.version.clone());
        let status = match (&sent, &self.nack) {
            (None, _) => SyncStatus::NotSent,
            (Some(v), Some(n)) if n.version == *v => SyncStatus::Nacked,
            (Some(v), _) if self.acked_version.as_ref() == Some(v) => SyncStatus::Synced,
            _ => SyncStatus::Stale,
        };
        // CDS and LDS hold exactly the last answer; EDS and RDS what every answer added up to.
        let held = self.held.iter().map(|(n, h)| (n.clone(), *h)).collect();
        TypeReport {
            kind,
            subscribed: self.subscribed,
            wildcard: self.names.is_none(),
            names: self.names.as_ref().map_or(0, |n| n.len()),
            version_sent: sent,
            version_acked: self.acked_version.clone(),
            nack: self
                .nack
                .as_ref()
                .map(|n| (n.version.clone(), n.message.clone())),
            status,
            held,
        }
    }
}

/// For EDS/RDS: the resources to send under `answer`, the changes to what the client holds
/// (name → new hash, `None` = dropped) and the resulting version.
fn changed_resources(
    kind: ResourceType,
    st: &TypeState,
    snapshot: &Snapshot,
    client: &ClientInfo,
    answer: Answer<'_>,
) -> (Vec<Arc<Resource>>, Vec<HeldChange>, u64) {
    let subscribed = |name: &str| st.names.as_ref().is_some_and(|s| s.contains(name));
    let mut candidates: BTreeSet<&str> = st.force.iter().map(String::as_str).collect();
    match answer {
        Answer::Full | Answer::Changes(Scope::Everything) => {
            // Every subscribed name, and what the client holds but no longer subscribes to.
            candidates.extend(st.names.iter().flat_map(|n| n.iter()).map(String::as_str));
            candidates.extend(st.held.keys().map(String::as_str));
        }
        Answer::Changes(Scope::Names(names)) => candidates.extend(names.iter().map(String::as_str)),
        Answer::Changes(Scope::Nothing) => {}
    }
    let mut updates = Vec::new();
    let mut version = st.version;
    let mut out = Vec::new();
    let mut lookup = snapshot.lookup(kind, client);
    for name in candidates {
        let held = st.held.get(name).copied();
        let current = if subscribed(name) {
            lookup.get(name)
        } else {
            None
        };
        match current {
            Some(r) => {
                let forced = matches!(answer, Answer::Full) || st.force.contains(name);
                let refused = st.rejected.get(name) == Some(&r.hash);
                if (forced || held != Some(r.hash)) && !refused {
                    if let Some(old) = held {
                        version ^= digest(name, old);
                    }
                    version ^= digest(name, r.hash);
                    updates.push((name.to_string(), Some(r.hash)));
                    out.push(r);
                }
            }
            None => {
                if let Some(old) = held {
                    version ^= digest(name, old);
                    updates.push((name.to_string(), None));
                }
            }
        }
    }
    (out, updates, version)
}

#[cfg(test)]
mod tests;
