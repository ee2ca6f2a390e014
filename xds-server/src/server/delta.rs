//! One incremental (Delta) ADS stream as a sans-IO state machine, beside the state-of-the-world one in
//! [`super::connection`]. Same inputs (requests, snapshots), same snapshot API; the bookkeeping differs:
//! Delta tracks, per resource, the version the client holds, and sends only what changed plus the names
//! that went away.

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use std::collections::{BTreeMap, BTreeSet};

use crate::cache::{ResourceType, Snapshot};
use crate::model::ClientInfo;
use crate::server::connection::{shorten_error, Nack, RequestKind};
use crate::server::node::{ClientIdentity, LocalityLookup, NodeError};
use std::sync::Arc;

/// What one type's conversation looks like so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaTypeState {
    /// Subscribed to everything of the type (CDS/LDS with no names, or `*`).
    pub wildcard: bool,
    /// Explicitly subscribed names.
    pub names: BTreeSet<String>,
    /// What the client holds: name → version.
    pub held: BTreeMap<String, String>,
    /// The last response's nonce and the versions it carried, until ACKed or NACKed.
    pub pending: Option<(String, BTreeMap<String, String>)>,
    /// Versions the client refused; never sent again.
    pub rejected: BTreeMap<String, String>,
    pub last_nack: Option<Nack>,
    pub subscribed: bool,
    /// Names to send even if the client holds their current version: endpoints (routes) of clusters
    /// (listeners) that were just re-sent, which Envoy re-creates and waits on.
    force: BTreeSet<String>,
}

#[derive(Default)]
pub struct DeltaConnection {
    client: ClientIdentity,
    types: BTreeMap<ResourceType, DeltaTypeState>,
    nonce: u64,
}

fn version(hash: u64) -> String {
    format!("{hash:016x}")
}

impl DeltaConnection {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_lookup(lookup: Option<Arc<dyn LocalityLookup>>) -> Self {
        Self {
            client: ClientIdentity::new(lookup),
            ..Self::default()
        }
    }

    pub fn client(&self) -> Option<&ClientInfo> {
        self.client.get()
    }

    /// The client's locality awaits its pod (see [`ClientIdentity`]).
    pub fn locality_pending(&self) -> bool {
        self.client.is_pending()
    }

    pub fn type_state(&self, kind: ResourceType) -> Option<&DeltaTypeState> {
        self.types.get(&kind)
    }

    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<DeltaDiscoveryResponse>), NodeError> {
        self.client.observe(req.node.as_ref())?;
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return Ok((RequestKind::UnknownType(req.type_url.clone()), Vec::new()));
        };
        let st = self.types.entry(kind).or_default();
        let first = !st.subscribed;
        if first {
            st.subscribed = true;
            // Wildcard by default for CDS/LDS, unless the first request names resources.
            st.wildcard = kind.is_wildcard_type() && req.resource_names_subscribe.is_empty();
            // After a reconnect Envoy says what it still holds, so unchanged resources are not re-sent.
            st.held = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(name);
                // The client drops it; forget it so a re-subscribe sends it again.
                st.held.remove(name);
            }
        }
        let mut what = if first {
            RequestKind::Initial
        } else {
            RequestKind::Ack
        };
        if !req.response_nonce.is_empty() {
            match st.pending.take() {
                Some((nonce, versions)) if nonce == req.response_nonce => {
                    if let Some(status) = &req.error_detail {
                        let nack = Nack {
                            version: versions.keys().cloned().collect::<Vec<_>>().join(","),
                            message: shorten_error(&status.message),
                        };
                        for (name, v) in &versions {
                            st.rejected.insert(name.clone(), v.clone());
                            // Envoy kept its previous version, which we no longer know exactly:
                            // forget it, so the next good version is always sent.
                            st.held.remove(name);
                        }
                        st.last_nack = Some(nack.clone());
                        what = RequestKind::Nack(nack);
                    } else {
                        st.rejected.clear();
                        st.last_nack = None;
                    }
                }
                other => {
                    st.pending = other;
                    what = RequestKind::StaleNonce;
                }
            }
        }
        Ok((what, self.respond(kind, snapshot).into_iter().collect()))
    }

    /// A new snapshot: send each subscribed type's changes in make-before-break order. Re-sent clusters
    /// (listeners) are followed by their endpoints (routes) even if unchanged, so nothing stays warming.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        self.client.refresh();
        let mut out = Vec::new();
        for kind in ResourceType::PUSH_ORDER {
            if !self.types.get(&kind).is_some_and(|s| s.subscribed) {
                continue;
            }
            if let Some(resp) = self.respond(kind, snapshot) {
                if let Some(dep) = kind.dependent().and_then(|d| self.types.get_mut(&d)) {
                    dep.force
                        .extend(resp.resources.iter().map(|r| r.name.clone()));
                }
                out.push(resp);
            }
        }
        out
    }

    fn respond(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
    ) -> Option<DeltaDiscoveryResponse> {
        let client = self.client.get()?;
        let st = self.types.get(&kind)?;
        if st.pending.is_some() {
            // One response in flight per type: the ACK (or the next snapshot) sends what changed since.
            return None;
        }
        let filter = (!st.wildcard).then_some(&st.names);
        let desired = snapshot.resources_for(kind, client, filter);
        let mut resources = Vec::new();
        let mut sent = BTreeMap::new();
        for r in &desired {
            let v = version(r.hash);
            let unchanged = st.held.get(&r.name) == Some(&v);
            let refused = st.rejected.get(&r.name) == Some(&v);
            if refused || (unchanged && !st.force.contains(&r.name)) {
                continue;
            }
            sent.insert(r.name.clone(), v.clone());
            resources.push(DeltaResource {
                name: r.name.clone(),
                version: v,
                resource: Some(r.any.clone()),
                ..DeltaResource::default()
            });
        }
        let desired_names: BTreeSet<&str> = desired.iter().map(|r| r.name.as_str()).collect();
        let removed: Vec<String> = st
            .held
            .keys()
            .filter(|n| !desired_names.contains(n.as_str()))
            .cloned()
            .collect();
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let st = self.types.get_mut(&kind)?;
        for name in &removed {
            st.held.remove(name);
        }
        for (name, v) in &sent {
            st.held.insert(name.clone(), v.clone());
        }
        st.force.clear();
        st.pending = Some((nonce.clone(), sent));
        Some(DeltaDiscoveryResponse {
            system_version_info: format!("{}", snapshot.generation),
            resources,
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..DeltaDiscoveryResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{TranslateSettings, CLUSTER_TYPE, ENDPOINT_TYPE};
    use crate::model::{Endpoint, Health, Locality, Registry, Service, ServiceId, ServicePort};
    use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
    use envoy_types::pb::google::rpc::Status;
    use std::collections::BTreeMap as Map;

    fn snapshot(prev: Option<&Snapshot>, services: &[(&str, &str)]) -> Snapshot {
        let reg = Registry::from_services(services.iter().map(|(name, ip)| Service {
            id: ServiceId::new("shop", *name),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
            }],
            endpoints: vec![Endpoint {
                address: ip.parse().unwrap(),
                port_overrides: Map::new(),
                locality: Locality::new("r", "z", ""),
                labels: Map::new(),
                health: Health::Healthy,
            }],
        }));
        Snapshot::build(
            prev,
            Arc::new(reg),
            Arc::default(),
            TranslateSettings::default(),
        )
    }

    fn req(type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: "n".into(),
                locality: Some(EnvoyLocality {
                    region: "r".into(),
                    zone: "z".into(),
                    sub_zone: String::new(),
                }),
                ..Node::default()
            }),
            type_url: type_url.into(),
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..DeltaDiscoveryRequest::default()
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn wildcard_cds_sends_all_then_only_changes_and_removals() {
        let s1 = snapshot(None, &[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
        let mut c = DeltaConnection::new();
        let (_, out) = c.on_request(&req(CLUSTER_TYPE, &[], &[], ""), &s1).unwrap();
        assert_eq!(names(&out[0]), vec!["a.shop:8080", "b.shop:8080"]);
        let (what, out2) = c
            .on_request(&req(CLUSTER_TYPE, &[], &[], &out[0].nonce), &s1)
            .unwrap();
        assert_eq!(what, RequestKind::Ack);
        assert!(out2.is_empty());
        // b removed, c added; a unchanged (endpoint changes do not touch CDS)
        let s2 = snapshot(Some(&s1), &[("a", "10.0.0.9"), ("c", "10.0.0.3")]);
        let pushed = c.on_snapshot(&s2);
        assert_eq!(pushed.len(), 1);
        assert_eq!(names(&pushed[0]), vec!["c.shop:8080"]);
        assert_eq!(pushed[0].removed_resources, vec!["b.shop:8080"]);
    }

    #[test]
    fn eds_follows_subscribe_and_unsubscribe_and_reconnect_skips_held_versions() {
        let s1 = snapshot(None, &[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
        let mut c = DeltaConnection::new();
        let (_, out) = c
            .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
            .unwrap();
        assert_eq!(names(&out[0]), vec!["a.shop:8080"]);
        let held_a = out[0].resources[0].version.clone();
        let (_, out) = c
            .on_request(
                &req(ENDPOINT_TYPE, &["b.shop:8080"], &[], &out[0].nonce),
                &s1,
            )
            .unwrap();
        assert_eq!(names(&out[0]), vec!["b.shop:8080"], "only the new name");
        let (_, out) = c
            .on_request(
                &req(ENDPOINT_TYPE, &[], &["b.shop:8080"], &out[0].nonce),
                &s1,
            )
            .unwrap();
        assert!(out.is_empty(), "unsubscribing needs no answer");

        // A new stream where Envoy already holds a's current version: nothing to send.
        let mut again = DeltaConnection::new();
        let mut r = req(ENDPOINT_TYPE, &["a.shop:8080"], &[], "");
        r.initial_resource_versions
            .insert("a.shop:8080".into(), held_a);
        let (_, out) = again.on_request(&r, &s1).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn nacked_versions_are_not_resent_and_stale_nonces_do_not_ack() {
        let s1 = snapshot(None, &[("a", "10.0.0.1")]);
        let mut c = DeltaConnection::new();
        let (_, out) = c
            .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
            .unwrap();
        let (what, _) = c
            .on_request(&req(ENDPOINT_TYPE, &[], &[], "999"), &s1)
            .unwrap();
        assert_eq!(what, RequestKind::StaleNonce);
        let mut nack = req(ENDPOINT_TYPE, &[], &[], &out[0].nonce);
        nack.error_detail = Some(Status {
            code: 13,
            message: "dump\nreal reason".into(),
            details: vec![],
        });
        let (what, resend) = c.on_request(&nack, &s1).unwrap();
        assert!(matches!(what, RequestKind::Nack(ref n) if n.message == "real reason"));
        assert!(resend.is_empty(), "the refused version is not sent again");
        assert!(c
            .on_snapshot(&snapshot(Some(&s1), &[("a", "10.0.0.1")]))
            .is_empty());
        let fixed = snapshot(Some(&s1), &[("a", "10.0.0.2")]);
        assert_eq!(c.on_snapshot(&fixed).len(), 1);
    }

    #[test]
    fn recreated_cluster_gets_its_endpoints_again() {
        use crate::policy::{FailoverPolicy, PolicyEntry, PolicyOrigin, PolicyScope, PolicySet};
        let s1 = snapshot(None, &[("a", "10.0.0.1")]);
        let mut c = DeltaConnection::new();
        let (_, cds) = c.on_request(&req(CLUSTER_TYPE, &[], &[], ""), &s1).unwrap();
        c.on_request(&req(CLUSTER_TYPE, &[], &[], &cds[0].nonce), &s1)
            .unwrap();
        let (_, eds) = c
            .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
            .unwrap();
        c.on_request(&req(ENDPOINT_TYPE, &[], &[], &eds[0].nonce), &s1)
            .unwrap();
        let policies = Arc::new(PolicySet {
            entries: vec![PolicyEntry {
                scope: PolicyScope::Mesh,
                origin: PolicyOrigin::BuiltIn,
                policy: Arc::new(FailoverPolicy {
                    panic_threshold: 7,
                    ..FailoverPolicy::default()
                }),
            }],
        });
        let s2 = Snapshot::build(
            Some(&s1),
            s1.registry.clone(),
            policies,
            TranslateSettings::default(),
        );
        let pushed = c.on_snapshot(&s2);
        let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, vec![CLUSTER_TYPE, ENDPOINT_TYPE]);
        assert_eq!(names(&pushed[1]), vec!["a.shop:8080"]);
    }

    #[test]
    fn one_response_in_flight_per_type() {
        let s1 = snapshot(None, &[("a", "10.0.0.1")]);
        let mut c = DeltaConnection::new();
        let (_, out) = c
            .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
            .unwrap();
        let s2 = snapshot(Some(&s1), &[("a", "10.0.0.2")]);
        assert!(c.on_snapshot(&s2).is_empty(), "waits for the ACK");
        let (_, out) = c
            .on_request(&req(ENDPOINT_TYPE, &[], &[], &out[0].nonce), &s2)
            .unwrap();
        assert_eq!(out.len(), 1, "the ACK releases the newer version");
    }
}
