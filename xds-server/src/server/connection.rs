//! One state-of-the-world ADS stream as a sans-IO state machine: requests and snapshots in, responses out.
//!
//! Every protocol case (ACK, NACK, stale nonce, warming re-request, wildcard) is a plain unit test here;
//! the tonic task around it only moves messages.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::cache::{version_of, ResourceType, Snapshot};
use crate::model::ClientInfo;
use crate::server::node::{ClientIdentity, LocalityLookup, NodeError};
use std::sync::Arc;

/// What one type URL's conversation looks like so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeState {
    /// `None` = wildcard (all resources of the type).
    pub names: Option<BTreeSet<String>>,
    pub subscribed: bool,
    pub sent: Option<Sent>,
    pub acked_version: Option<String>,
    pub nack: Option<Nack>,
    /// Answer the next request even if it looks like a plain ACK: Envoy re-requests EDS (RDS) with the
    /// same version and nonce after a cluster (listener) was re-created, and waits for an answer.
    resend_on_request: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub version: String,
    pub nonce: String,
    pub resources: usize,
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

#[derive(Default)]
pub struct AdsConnection {
    client: ClientIdentity,
    types: BTreeMap<ResourceType, TypeState>,
    nonce: u64,
}

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

impl AdsConnection {
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

    pub fn client(&self) -> Option<&ClientInfo> {
        self.client.get()
    }

    /// The client's locality awaits its pod (see [`ClientIdentity`]).
    pub fn locality_pending(&self) -> bool {
        self.client.is_pending()
    }

    pub fn type_state(&self, kind: ResourceType) -> Option<&TypeState> {
        self.types.get(&kind)
    }

    /// Handles one request. Returns what happened and the responses to send, in order.
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<DiscoveryResponse>), NodeError> {
        self.client.observe(req.node.as_ref())?;
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return Ok((RequestKind::UnknownType(req.type_url.clone()), Vec::new()));
        };
        let st = self.types.entry(kind).or_default();
        if !req.response_nonce.is_empty()
            && st.sent.as_ref().map(|s| s.nonce.as_str()) != Some(req.response_nonce.as_str())
        {
            // An answer to a response we have since superseded; the newer one is on its way.
            return Ok((RequestKind::StaleNonce, Vec::new()));
        }
        let names: Option<BTreeSet<String>> = if kind.is_wildcard_type()
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"))
        {
            None
        } else {
            Some(req.resource_names.iter().cloned().collect())
        };
        let names_changed = !st.subscribed || st.names != names;
        st.names = names;
        st.subscribed = true;

        let (what, force) = if let Some(status) = &req.error_detail {
            let nack = Nack {
                version: st
                    .sent
                    .as_ref()
                    .map(|s| s.version.clone())
                    .unwrap_or_default(),
                message: shorten_error(&status.message),
            };
            st.nack = Some(nack.clone());
            (RequestKind::Nack(nack), false)
        } else if req.response_nonce.is_empty() {
            // First request of this type on this stream (also after a reconnect, when Envoy sends its
            // last accepted version with no nonce): always answer.
            (RequestKind::Initial, true)
        } else {
            st.acked_version = Some(req.version_info.clone());
            st.nack = None;
            (RequestKind::Ack, std::mem::take(&mut st.resend_on_request))
        };
        let responses = if names_changed || force {
            self.respond(kind, snapshot, true).into_iter().collect()
        } else {
            Vec::new()
        };
        Ok((what, responses))
    }

    /// A new snapshot: push every subscribed type whose answer changed, in make-before-break order
    /// (CDS, EDS, LDS, RDS). A re-sent cluster (listener) is followed by its endpoints (routes) even if
    /// those are unchanged, so Envoy never waits on a warming resource.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        self.client.refresh();
        let mut forced = BTreeSet::new();
        let mut out = Vec::new();
        for kind in ResourceType::PUSH_ORDER {
            let Some(st) = self.types.get(&kind) else {
                continue;
            };
            if !st.subscribed || st.sent.is_none() {
                continue;
            }
            if let Some(resp) = self.respond(kind, snapshot, forced.contains(&kind)) {
                if let Some(dep) = kind.dependent() {
                    forced.insert(dep);
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
        force: bool,
    ) -> Option<DiscoveryResponse> {
        let client = self.client.get()?;
        let st = self.types.get(&kind)?;
        let resources = snapshot.resources_for(kind, client, st.names.as_ref());
        let version = version_of(&resources);
        if st.nack.as_ref().is_some_and(|n| n.version == version) {
            // Envoy refused exactly this; sending it again would only loop.
            return None;
        }
        if !force && st.sent.as_ref().is_some_and(|s| s.version == version) {
            return None;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let st = self.types.get_mut(&kind)?;
        st.sent = Some(Sent {
            version: version.clone(),
            nonce: nonce.clone(),
            resources: resources.len(),
        });
        st.resend_on_request = false;
        if let Some(dep) = kind.dependent() {
            self.types.entry(dep).or_default().resend_on_request = true;
        }
        Some(DiscoveryResponse {
            version_info: version,
            resources: resources.iter().map(|r| r.any.clone()).collect(),
            type_url: kind.type_url().to_string(),
            nonce,
            ..DiscoveryResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{TranslateSettings, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
    use crate::model::{Endpoint, Health, Locality, Registry, Service, ServiceId, ServicePort};
    use crate::policy::{FailoverPolicy, PolicyEntry, PolicyOrigin, PolicyScope, PolicySet};
    use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::google::rpc::Status;
    use prost::Message;
    use std::collections::BTreeMap as Map;
    use std::sync::Arc;

    fn registry(services: &[(&str, &[&str])]) -> Arc<Registry> {
        Arc::new(Registry::from_services(services.iter().map(
            |(name, ips)| {
                Service {
                    id: ServiceId::new("shop", *name),
                    ports: vec![ServicePort {
                        name: "http".into(),
                        port: 8080,
                    }],
                    endpoints: ips
                        .iter()
                        .map(|ip| Endpoint {
                            address: ip.parse().unwrap(),
                            port_overrides: Map::new(),
                            locality: Locality::new("r", "z", ""),
                            labels: Map::new(),
                            health: Health::Healthy,
                        })
                        .collect(),
                }
            },
        )))
    }

    fn snapshot(prev: Option<&Snapshot>, services: &[(&str, &[&str])]) -> Snapshot {
        Snapshot::build(
            prev,
            registry(services),
            Arc::default(),
            TranslateSettings::default(),
        )
    }

    fn node() -> Node {
        Node {
            id: "envoy-1".into(),
            locality: Some(EnvoyLocality {
                region: "r".into(),
                zone: "z".into(),
                sub_zone: String::new(),
            }),
            ..Node::default()
        }
    }

    fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(node()),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..DiscoveryRequest::default()
        }
    }

    fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
        request(&resp.type_url, names, &resp.version_info, &resp.nonce)
    }

    fn one(
        conn: &mut AdsConnection,
        req: &DiscoveryRequest,
        snap: &Snapshot,
    ) -> Option<DiscoveryResponse> {
        let (_, mut out) = conn.on_request(req, snap).unwrap();
        assert!(out.len() <= 1);
        out.pop()
    }

    const EDS_A: &str = "a.shop:8080";

    #[test]
    fn initial_cds_is_wildcard_and_ack_gets_no_answer() {
        let snap = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
        let mut conn = AdsConnection::new();
        let cds = one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &snap).unwrap();
        assert_eq!(cds.resources.len(), 2);
        assert_eq!(cds.type_url, CLUSTER_TYPE);
        assert!(one(&mut conn, &ack(&cds, &[]), &snap).is_none());
        let st = conn.type_state(ResourceType::Cluster).unwrap();
        assert_eq!(st.acked_version.as_deref(), Some(cds.version_info.as_str()));
    }

    #[test]
    fn eds_answers_only_subscribed_names_and_follows_subscription_changes() {
        let snap = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
        let mut conn = AdsConnection::new();
        let eds = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &snap).unwrap();
        assert_eq!(eds.resources.len(), 1);
        let cla = ClusterLoadAssignment::decode(eds.resources[0].value.as_slice()).unwrap();
        assert_eq!(cla.cluster_name, EDS_A);
        // ACK that also adds a name: answered with both
        let both = one(&mut conn, &ack(&eds, &[EDS_A, "b.shop:8080"]), &snap).unwrap();
        assert_eq!(both.resources.len(), 2);
        // plain ACK: silence
        assert!(one(&mut conn, &ack(&both, &[EDS_A, "b.shop:8080"]), &snap).is_none());
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let first = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let eds1 = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &first).unwrap();
        let second = snapshot(Some(&first), &[("a", &["10.0.0.2"])]);
        let pushed = conn.on_snapshot(&second);
        assert_eq!(pushed.len(), 1);
        // Envoy's ACK of the first response arrives after we pushed the second: stale, ignored, even
        // though it carries a subscription change.
        let (what, out) = conn
            .on_request(&ack(&eds1, &[EDS_A, "b.shop:8080"]), &second)
            .unwrap();
        assert_eq!(what, RequestKind::StaleNonce);
        assert!(out.is_empty());
        let (what, _) = conn
            .on_request(&ack(&pushed[0], &[EDS_A]), &second)
            .unwrap();
        assert_eq!(what, RequestKind::Ack);
    }

    #[test]
    fn nacked_version_is_not_resent_but_a_new_one_is() {
        let first = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let eds = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &first).unwrap();
        let mut nack = request(ENDPOINT_TYPE, &[EDS_A], "", &eds.nonce);
        nack.error_detail = Some(Status {
            code: 13,
            message:
                "cluster_name: \"a\"\nendpoints {\n}\n\nProto constraint validation failed: bad"
                    .into(),
            details: vec![],
        });
        let (what, out) = conn.on_request(&nack, &first).unwrap();
        assert!(out.is_empty(), "no answer to a NACK with the same content");
        let RequestKind::Nack(n) = what else {
            panic!("expected NACK")
        };
        assert_eq!(n.version, eds.version_info);
        assert_eq!(n.message, "Proto constraint validation failed: bad");
        // The same content again (e.g. an unrelated snapshot) is not pushed.
        let same = snapshot(Some(&first), &[("a", &["10.0.0.1"]), ("b", &["10.0.0.9"])]);
        assert!(conn.on_snapshot(&same).is_empty());
        // New content is.
        let fixed = snapshot(Some(&same), &[("a", &["10.0.0.2"])]);
        let pushed = conn.on_snapshot(&fixed);
        assert_eq!(pushed.len(), 1);
        let (what, _) = conn.on_request(&ack(&pushed[0], &[EDS_A]), &fixed).unwrap();
        assert_eq!(what, RequestKind::Ack);
        assert!(conn
            .type_state(ResourceType::Endpoint)
            .unwrap()
            .nack
            .is_none());
    }

    #[test]
    fn unchanged_snapshot_pushes_nothing_and_endpoint_change_pushes_only_eds() {
        let first = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let cds = one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &first).unwrap();
        let eds = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &first).unwrap();
        one(&mut conn, &ack(&cds, &[]), &first);
        assert!(one(&mut conn, &ack(&eds, &[EDS_A]), &first).is_none());
        let same = snapshot(Some(&first), &[("a", &["10.0.0.1"])]);
        assert!(conn.on_snapshot(&same).is_empty());
        let changed = snapshot(Some(&same), &[("a", &["10.0.0.2"])]);
        let pushed = conn.on_snapshot(&changed);
        assert_eq!(
            pushed
                .iter()
                .map(|r| r.type_url.as_str())
                .collect::<Vec<_>>(),
            vec![ENDPOINT_TYPE],
            "CDS must stay untouched so Envoy keeps its outlier-detection state"
        );
    }

    #[test]
    fn cluster_change_pushes_cds_then_eds_and_answers_the_warming_rerequest() {
        let first = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let cds = one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &first).unwrap();
        let eds = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &first).unwrap();
        one(&mut conn, &ack(&cds, &[]), &first);
        assert!(one(&mut conn, &ack(&eds, &[EDS_A]), &first).is_none());

        // A policy change re-creates the cluster in Envoy; endpoints are unchanged.
        let policies = Arc::new(PolicySet {
            entries: vec![PolicyEntry {
                scope: PolicyScope::Mesh,
                origin: PolicyOrigin::BuiltIn,
                policy: Arc::new(FailoverPolicy {
                    panic_threshold: 5,
                    ..FailoverPolicy::default()
                }),
            }],
        });
        let second = Snapshot::build(
            Some(&first),
            first.registry.clone(),
            policies,
            TranslateSettings::default(),
        );
        let pushed = conn.on_snapshot(&second);
        let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, vec![CLUSTER_TYPE, ENDPOINT_TYPE]);
        // Envoy's re-request for the re-created cluster still carries the previous EDS nonce: stale, and
        // the pushed EDS already answers it.
        one(&mut conn, &ack(&pushed[0], &[]), &second);
        assert!(one(&mut conn, &ack(&eds, &[EDS_A]), &second).is_none());
        assert!(one(&mut conn, &ack(&pushed[1], &[EDS_A]), &second).is_none());
    }

    #[test]
    fn eds_rerequest_that_looks_like_an_ack_is_answered_after_a_cds_answer() {
        let snap = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let eds = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &snap).unwrap();
        assert!(one(&mut conn, &ack(&eds, &[EDS_A]), &snap).is_none());
        // CDS answered on request (no EDS push follows): Envoy re-creates the cluster and asks for its
        // endpoints with the same version and nonce as before. Without an answer it would wait 15 s.
        one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &snap).unwrap();
        assert!(one(&mut conn, &ack(&eds, &[EDS_A]), &snap).is_some());
        let eds2 = conn
            .type_state(ResourceType::Endpoint)
            .unwrap()
            .sent
            .clone()
            .unwrap();
        assert!(one(
            &mut conn,
            &request(ENDPOINT_TYPE, &[EDS_A], &eds2.version, &eds2.nonce),
            &snap
        )
        .is_none());
    }

    #[test]
    fn listener_and_routes_flow() {
        let snap = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let lds = one(&mut conn, &request(LISTENER_TYPE, &[], "", ""), &snap).unwrap();
        assert_eq!(lds.resources.len(), 1);
        let rds = one(
            &mut conn,
            &request(ROUTE_TYPE, &["outbound"], "", ""),
            &snap,
        )
        .unwrap();
        assert_eq!(rds.resources.len(), 1);
        // A new service changes routes but not the listener.
        let next = snapshot(Some(&snap), &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
        let pushed = conn.on_snapshot(&next);
        assert_eq!(
            pushed
                .iter()
                .map(|r| r.type_url.as_str())
                .collect::<Vec<_>>(),
            vec![ROUTE_TYPE]
        );
    }

    #[test]
    fn reconnect_with_last_version_and_no_nonce_is_answered() {
        let snap = snapshot(None, &[("a", &["10.0.0.1"])]);
        let mut conn = AdsConnection::new();
        let req = request(CLUSTER_TYPE, &[], "0123456789abcdef", "");
        assert!(one(&mut conn, &req, &snap).is_some());
    }

    #[test]
    fn missing_node_and_unknown_types_are_reported() {
        let snap = snapshot(None, &[]);
        let mut conn = AdsConnection::new();
        let mut req = request(CLUSTER_TYPE, &[], "", "");
        req.node = None;
        assert_eq!(
            conn.on_request(&req, &snap).unwrap_err(),
            NodeError::Missing
        );
        let req = request("type.googleapis.com/envoy.Unknown", &[], "", "");
        let (what, out) = conn.on_request(&req, &snap).unwrap();
        assert!(matches!(what, RequestKind::UnknownType(_)));
        assert!(out.is_empty());
        // Empty CDS is still a complete answer: Envoy needs it to finish initialising.
        let cds = one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &snap).unwrap();
        assert!(cds.resources.is_empty());
    }

    struct Pods(std::sync::Mutex<Option<Locality>>);
    impl LocalityLookup for Pods {
        fn locality_of(&self, pod: &crate::server::node::PodHint) -> Option<Locality> {
            assert_eq!(pod.name.as_deref(), Some("web-1"));
            assert_eq!(pod.namespace.as_deref(), Some("shop"));
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn client_without_locality_is_located_through_its_pod_even_when_the_pod_shows_up_late() {
        use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
        let snap = snapshot(None, &[("a", &["10.0.0.1"])]);
        let pods = Arc::new(Pods(std::sync::Mutex::new(None)));
        let mut conn = AdsConnection::with_lookup(Some(pods.clone()));
        let mut req = request(CLUSTER_TYPE, &[], "", "");
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        req.node = Some(Node {
            id: "web-1".into(),
            metadata: Some(Struct {
                fields: [
                    ("pod_name".to_string(), s("web-1")),
                    ("namespace".to_string(), s("shop")),
                ]
                .into_iter()
                .collect(),
            }),
            ..Node::default()
        });
        conn.on_request(&req, &snap).unwrap();
        assert_eq!(conn.client().unwrap().locality, Locality::default());
        *pods.0.lock().unwrap() = Some(Locality::new("r", "z", ""));
        conn.on_snapshot(&snap);
        assert_eq!(conn.client().unwrap().locality, Locality::new("r", "z", ""));
    }

    #[test]
    fn shorten_error_keeps_last_line_and_bounds_length() {
        assert_eq!(shorten_error("a\nb\n\n  real error  \n"), "real error");
        let long = "x".repeat(1000);
        let s = shorten_error(&long);
        assert_eq!(s.chars().count(), 301);
        assert!(s.starts_with('…'));
    }
}
