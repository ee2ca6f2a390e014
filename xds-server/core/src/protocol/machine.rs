//! What the state-of-the-world and Delta machines share: one stream's client (who it is and where it
//! is, [`ClientIdentity`]), its conversation per resource type, and its nonces. [`Machine`] is that core,
//! generic over the per-type state; [`AdsConnection`](super::sotw::AdsConnection) and
//! [`DeltaConnection`](super::delta::DeltaConnection) are its two instances, each adding its protocol's
//! `on_request` and `on_snapshot`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::model::shown;
use crate::model::{ClientInfo, LocalityLookup, PeerIdentity};
use crate::protocol::error::ProtocolError;
use crate::protocol::inspect::{Inspect, TypeReport};
use crate::protocol::node::{claim_agrees, ClientIdentity};
use crate::snapshot::{ResourceType, Snapshot};

/// One resource type's conversation with a client, as a protocol keeps it.
pub trait TypeConversation: Default + Send {
    /// The client's locality just became known: every answer of the type may change.
    fn relocated(&mut self);
    /// Where the conversation stands, for the admin API.
    fn report(&self, kind: ResourceType) -> TypeReport;
}

/// Per resource type, its conversation: a client asks about four or five types, so a vector
/// searched in order. (A `BTreeMap` allocates a node of eleven entries: ~3 KiB per client.)
pub struct TypeMap<S>(Vec<(ResourceType, S)>);

impl<S> Default for TypeMap<S> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<S> TypeMap<S> {
    pub fn get(&self, kind: &ResourceType) -> Option<&S> {
        self.0.iter().find(|(k, _)| k == kind).map(|(_, s)| s)
    }

    pub fn get_mut(&mut self, kind: &ResourceType) -> Option<&mut S> {
        self.0.iter_mut().find(|(k, _)| k == kind).map(|(_, s)| s)
    }

    /// The type's conversation, started if the client had not asked about the type before.
    pub fn get_or_default(&mut self, kind: ResourceType) -> &mut S
    where
        S: Default,
    {
        // Kept in the order of [`ResourceType`], as the admin API lists them.
        let at = match self.0.binary_search_by_key(&kind, |(k, _)| *k) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (kind, S::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    pub fn values(&self) -> impl Iterator<Item = &S> {
        self.0.iter().map(|(_, s)| s)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.0.iter_mut().map(|(_, s)| s)
    }

    /// In the order of [`ResourceType`].
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceType, &S)> {
        self.0.iter().map(|(k, s)| (k, s))
    }
}

/// One stream's protocol machine: the client, and `S` per resource type it asked about.
pub struct Machine<S> {
    pub(super) client: ClientIdentity,
    pub(super) types: TypeMap<S>,
    nonce: u64,
}

impl<S> Default for Machine<S> {
    fn default() -> Self {
        Self {
            client: ClientIdentity::default(),
            types: TypeMap::default(),
            nonce: 0,
        }
    }
}

impl<S: TypeConversation> Machine<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Clients without `node.locality` are located through their pod.
    pub fn with_lookup(lookup: Option<Arc<dyn LocalityLookup>>) -> Self {
        Self {
            client: ClientIdentity::new(lookup),
            ..Self::default()
        }
    }

    /// The identity the stream's connection proved (client certificate or token); `None`: the
    /// client gets no private key. Set before the first request.
    pub fn with_peer(mut self, peer: Option<PeerIdentity>) -> Self {
        self.client.set_peer(peer);
        self
    }

    pub fn client(&self) -> Option<&ClientInfo> {
        self.client.get()
    }

    /// The client's locality awaits its pod (see [`ClientIdentity`]).
    pub fn locality_pending(&self) -> bool {
        self.client.is_pending()
    }

    pub fn type_state(&self, kind: ResourceType) -> Option<&S> {
        self.types.get(&kind)
    }

    /// A request's `node`: read on the first request, where a claimed identity (node metadata
    /// `identity`) must agree with the proven one ([`claim_agrees`]); on every request, a pending pod
    /// is looked up again (see [`Machine::relocate`]).
    pub(super) fn observe(
        &mut self,
        node: Option<&Node>,
        snapshot: &Snapshot,
    ) -> Result<(), ProtocolError> {
        let first = self.client.is_unknown();
        let relocated = self.client.observe(node)?;
        if first {
            let claimed = self.client.get().and_then(|c| c.claimed_identity.clone());
            let proven = self.client.peer().map(|p| &p.id);
            // The identity names are searched only to check a claim.
            let name = claimed
                .as_ref()
                .and(proven)
                .and_then(|id| snapshot.secret_set().name_of(id));
            if !claim_agrees(claimed.as_deref(), proven, name) {
                let refused = ProtocolError::IdentityMismatch {
                    claimed: shown(claimed.as_deref().unwrap_or_default(), CLAIM_SHOWN_BYTES),
                    proven: self.client.peer().cloned(),
                };
                // Forget the client: a refused stream must not show up as this node.
                self.client = ClientIdentity::new(None);
                return Err(refused);
            }
        }
        if relocated {
            self.relocated();
        }
        Ok(())
    }

    /// A new snapshot: a pending pod is looked up again (the pod watch may know it by now).
    pub(super) fn relocate(&mut self) {
        if self.client.refresh() {
            self.relocated();
        }
    }

    fn relocated(&mut self) {
        for st in self.types.values_mut() {
            st.relocated();
        }
    }

    /// The nonce of the next response on the stream.
    pub(super) fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }
}

/// A claim is echoed in the refusal and the log: at most this much of it.
const CLAIM_SHOWN_BYTES: usize = 256;

impl<S: TypeConversation> Inspect for Machine<S> {
    fn client(&self) -> Option<&ClientInfo> {
        self.client.get()
    }

    fn type_reports(&self) -> Vec<TypeReport> {
        self.types
            .iter()
            .map(|(kind, st)| st.report(*kind))
            .collect()
    }
}
